//! RTSP cameras (H.264 over RTP, interleaved on the RTSP TCP connection or, asked for, over UDP:
//! [`RtspTransport`]), read by `retina` and decoded by openh264 as MP4 files are.
//!
//! retina is asynchronous; the rest of the video layer pulls frames one at a time. So a camera
//! runs on a thread of its own with a single-threaded tokio runtime, and hands access units
//! (Annex B, parameter sets in front of every key frame) through a channel of at most
//! [`QUEUED_UNITS`] and [`QUEUED_BYTES`]; decoding happens on the caller's thread, in
//! [`FrameSource::next_frame`].
//!
//! A live camera does not wait for its reader. When the reader falls behind and the queue is
//! full, units are dropped **up to the next key frame** (dropping one unit of H.264 and decoding
//! the next would give damaged pictures until then); they are counted in
//! [`SourceStats::dropped`]. Memory stays bounded by the queue's bytes and one access unit. (A recording
//! played over RTSP can ask for every unit instead: [`RtspOptions::keep_every_unit`].)
//!
//! Budgets: connecting, `DESCRIBE`, `SETUP` and `PLAY` each within [`RtspOptions::stall`]; a
//! camera that then sends no frame for that long is given up; an access unit over
//! [`VideoLimits::max_sample_bytes`] ends the stream (TooLarge), a frame over `max_pixels` too.
//! What retina does not bound: the pieces of one access unit while it is being assembled (a
//! hostile camera could keep one growing until the stall timeout ends the session); the
//! interleaved packets themselves are at most 64 KiB each.
//!
//! Credentials come from the URL (`rtsp://user:password@host/path`) and are taken out of it
//! before anything is logged or put in an error: messages name the camera without them.

use crate::error::VideoError;
use crate::source::{CodedFrames, Frame, FrameSource, SourceStats, VideoLimits};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Access units queued between the camera's thread and the reader: about a second at 30 fps.
/// A reader that detects on every n-th frame spends several frame intervals on a detection
/// frame and catches up on the frames between; the queue must hold what arrives meanwhile, or
/// each detection frame costs a drop to the next key frame (measured with 4 units, a Zen 3 host
/// detecting on every 6th frame of a 1280x720 camera: 383 of 3,294 frames read). A reader that
/// keeps up finds it nearly empty, so it adds no delay then.
pub const QUEUED_UNITS: usize = 32;

/// Bytes of access units queued at most (a unit is let in whatever its size when the queue is
/// empty): 32 units of an ordinary camera's stream are a few MiB, 32 of a hostile camera's
/// largest units (`max_sample_bytes`, 8 MiB) would be 256.
pub const QUEUED_BYTES: u64 = 16 << 20;

/// How an RTSP camera is read.
#[derive(Debug, Clone, Copy)]
pub struct RtspOptions {
    /// Longest wait for the camera: each of connect/DESCRIBE/SETUP/PLAY, then between frames.
    pub stall: Duration,
    /// Wait for the reader instead of dropping units when it falls behind: for a recording
    /// played over RTSP (an NVR's archive), where every frame matters and the server slows down
    /// with the TCP connection. A live camera should drop (the default): waiting makes its
    /// picture ever later, and a camera that cannot send for long closes the session.
    pub keep_every_unit: bool,
    /// How RTP reaches the reader.
    pub transport: RtspTransport,
}

/// How a camera sends its RTP packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RtspTransport {
    /// Interleaved on the RTSP TCP connection (the default): one connection that passes any
    /// firewall, nothing lost or reordered on the way.
    #[default]
    Tcp,
    /// RTP over UDP to a port pair of the reader's, which many cameras send by default. For a
    /// camera network only: retina's UDP keeps no reorder buffer (a packet out of order is
    /// dropped, and with it its frame) and sends no receiver reports. A lost packet damages its
    /// access unit; openh264 refuses it or conceals the damage until the next key frame.
    Udp,
}

impl Default for RtspOptions {
    fn default() -> Self {
        RtspOptions {
            stall: Duration::from_secs(10),
            keep_every_unit: false,
            transport: RtspTransport::Tcp,
        }
    }
}

/// One access unit from the camera: Annex B bytes and presentation time.
struct Unit {
    annexb: Vec<u8>,
    time_ms: u64,
}

/// Bytes of the units in the channel: added by the camera's thread before it sends one, taken
/// off by the reader when it receives one. The camera's thread is the only one that adds, so
/// what it reads is never less than what is queued.
#[derive(Clone, Default)]
struct QueuedBytes {
    bytes: Arc<AtomicU64>,
    /// The reader has gone.
    closed: Arc<AtomicBool>,
}

impl QueuedBytes {
    fn now(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Whether a unit of `len` bytes fits the budget now. Once the reader has gone, every unit
    /// "fits": a camera's thread waiting for room ([`RtspOptions::keep_every_unit`]) then sends,
    /// and learns from the send that nobody reads.
    fn fits(&self, len: u64) -> bool {
        let queued = self.now();
        queued == 0
            || queued.saturating_add(len) <= QUEUED_BYTES
            || self.closed.load(Ordering::Acquire)
    }

    fn add(&self, len: u64) {
        self.bytes.fetch_add(len, Ordering::AcqRel);
    }

    fn take(&self, len: u64) {
        self.bytes.fetch_sub(len, Ordering::AcqRel);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl Drop for RtspSource {
    fn drop(&mut self) {
        self.queued.close();
    }
}

/// Frames from an RTSP camera's first H.264 video stream.
pub struct RtspSource {
    units: Receiver<Result<Unit, VideoError>>,
    queued: QueuedBytes,
    coded: CodedFrames,
    dropped: Arc<AtomicU64>,
    frame_rate: f64,
    ended: bool,
}

/// The URL without its user name and password, for messages.
pub fn redacted(url: &url::Url) -> String {
    let mut shown = url.clone();
    // Both only fail for URLs that cannot have credentials, which have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

impl RtspSource {
    /// Connect to `url` (`rtsp://[user:password@]host[:port]/path`), set up its first H.264
    /// video stream over TCP and start playing. Returns once the camera has agreed to play.
    pub fn connect(
        url: &str,
        limits: &VideoLimits,
        options: RtspOptions,
    ) -> Result<Self, VideoError> {
        let mut url = url::Url::parse(url)
            .map_err(|e| VideoError::Invalid(format!("an RTSP URL that does not parse: {e}")))?;
        if url.scheme() != "rtsp" {
            return Err(VideoError::Unsupported(format!(
                "{}:// (only rtsp:// cameras are read here)",
                url.scheme()
            )));
        }
        let creds = (!url.username().is_empty()).then(|| retina::client::Credentials {
            username: percent_decoded(url.username()),
            password: percent_decoded(url.password().unwrap_or("")),
        });
        let shown = redacted(&url);
        url = url::Url::parse(&shown)
            .map_err(|e| VideoError::Invalid(format!("an RTSP URL that does not parse: {e}")))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUED_UNITS);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let dropped = Arc::new(AtomicU64::new(0));
        let queued = QueuedBytes::default();
        let camera = Camera {
            url,
            shown: shown.clone(),
            creds,
            options,
            max_unit_bytes: limits.max_sample_bytes,
            units: tx,
            queued: queued.clone(),
            dropped: dropped.clone(),
        };
        std::thread::Builder::new()
            .name("facegate-rtsp".into())
            .spawn(move || camera.run(ready_tx))
            .map_err(|e| {
                VideoError::Unsupported(format!("{shown}: no thread for the camera: {e}"))
            })?;
        // The thread answers once it plays (with the stream's frame rate) or has failed; every
        // step before that has its own timeout, so this wait is bounded.
        let frame_rate = match ready_rx.recv() {
            Ok(Ok(rate)) => rate,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(VideoError::Unsupported(format!(
                    "{shown}: the camera's thread ended before it played"
                )))
            }
        };
        Ok(RtspSource {
            units: rx,
            queued,
            coded: CodedFrames::new(limits, "access units")?,
            dropped,
            frame_rate,
            ended: false,
        })
    }
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// The camera's side: the RTSP session, on its own thread.
struct Camera {
    url: url::Url,
    shown: String,
    creds: Option<retina::client::Credentials>,
    options: RtspOptions,
    max_unit_bytes: u64,
    units: SyncSender<Result<Unit, VideoError>>,
    queued: QueuedBytes,
    dropped: Arc<AtomicU64>,
}

type Ready = SyncSender<Result<f64, VideoError>>;

impl Camera {
    fn run(self, ready: Ready) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                let _ = ready.send(Err(VideoError::Unsupported(format!(
                    "{}: no runtime for the camera: {e}",
                    self.shown
                ))));
                return;
            }
        };
        runtime.block_on(self.play(ready));
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> VideoError {
        VideoError::Camera(format!("{}: {what}: {e}", self.shown))
    }

    async fn within<T, E: std::fmt::Display>(
        &self,
        what: &str,
        step: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, VideoError> {
        match tokio::time::timeout(self.options.stall, step).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(what, e)),
            Err(_) => Err(self.failed(
                what,
                format_args!("no answer within {:?}", self.options.stall),
            )),
        }
    }

    /// DESCRIBE, SETUP and PLAY, then pass units on until the reader goes or the stream ends.
    async fn play(self, ready: Ready) {
        use futures_util::StreamExt;
        use retina::client::{PlayOptions, SessionOptions, SetupOptions};
        let session_options = SessionOptions::default()
            .creds(self.creds.clone())
            .user_agent(format!("facegate/{}", env!("CARGO_PKG_VERSION")));
        let started = async {
            let mut session = self
                .within(
                    "DESCRIBE",
                    retina::client::Session::describe(self.url.clone(), session_options),
                )
                .await?;
            let stream = session
                .streams()
                .iter()
                .position(|s| s.media() == "video" && s.encoding_name() == "h264")
                .ok_or_else(|| {
                    VideoError::Unsupported(format!(
                        "{}: the camera offers no H.264 video stream",
                        self.shown
                    ))
                })?;
            let frame_rate = session.streams()[stream]
                .framerate()
                .map(f64::from)
                .filter(|r| r.is_finite() && *r > 0.0)
                .unwrap_or(0.0);
            let transport = match self.options.transport {
                RtspTransport::Tcp => retina::client::Transport::Tcp(Default::default()),
                RtspTransport::Udp => retina::client::Transport::Udp(Default::default()),
            };
            let setup = SetupOptions::default()
                .frame_format(retina::codec::FrameFormat::SIMPLE)
                .transport(transport);
            self.within("SETUP", session.setup(stream, setup)).await?;
            let playing = self
                .within("PLAY", session.play(PlayOptions::default()))
                .await?;
            let demuxed = playing.demuxed().map_err(|e| self.failed("PLAY", e))?;
            Ok::<_, VideoError>((demuxed, frame_rate))
        };
        let (mut demuxed, frame_rate) = match started.await {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        if ready.send(Ok(frame_rate)).is_err() {
            return;
        }
        let mut awaiting_key_frame = false;
        loop {
            let item = match tokio::time::timeout(self.options.stall, demuxed.next()).await {
                Err(_) => Err(self.failed(
                    "stream",
                    format_args!("no frame for {:?}", self.options.stall),
                )),
                Ok(None) => return,
                Ok(Some(Err(e))) => Err(self.failed("stream", e)),
                Ok(Some(Ok(item))) => Ok(item),
            };
            let frame = match item {
                Ok(retina::codec::CodecItem::VideoFrame(f)) => f,
                Ok(_) => continue,
                Err(e) => {
                    let _ = self.units.send(Err(e));
                    return;
                }
            };
            if frame.data().len() as u64 > self.max_unit_bytes {
                let _ = self.units.send(Err(VideoError::TooLarge(format!(
                    "{}: an access unit of {} bytes (limit {})",
                    self.shown,
                    frame.data().len(),
                    self.max_unit_bytes
                ))));
                return;
            }
            if awaiting_key_frame && !frame.is_random_access_point() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let time = frame.timestamp();
            let time_ms = (time.elapsed().max(0) as u128 * 1000
                / u128::from(time.clock_rate().get()))
            .min(u64::MAX as u128) as u64;
            let unit = Unit {
                annexb: frame.into_data(),
                time_ms,
            };
            let len = unit.annexb.len() as u64;
            if self.options.keep_every_unit {
                // Blocking this thread stops reading the socket, which is how TCP slows the
                // server; the runtime has nothing else to run meanwhile.
                // The queue's bytes bound the wait too (the channel alone would let 32 units of a
                // hostile camera's largest size in).
                while !self.queued.fits(len) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                self.queued.add(len);
                if self.units.send(Ok(unit)).is_err() {
                    return;
                }
                continue;
            }
            if !self.queued.fits(len) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                awaiting_key_frame = true;
                continue;
            }
            self.queued.add(len);
            match self.units.try_send(Ok(unit)) {
                Ok(()) => awaiting_key_frame = false,
                Err(TrySendError::Full(_)) => {
                    self.queued.take(len);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    awaiting_key_frame = true;
                }
                // The reader has gone: dropping the session tears it down.
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

impl FrameSource for RtspSource {
    fn next_frame(&mut self) -> Option<Result<Frame, VideoError>> {
        while !self.ended {
            let unit = match self.units.recv() {
                Ok(Ok(unit)) => {
                    self.queued.take(unit.annexb.len() as u64);
                    unit
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Some(Err(e));
                }
                // The camera's thread ended: the stream is over.
                Err(_) => {
                    self.ended = true;
                    return None;
                }
            };
            if let Some(out) = self.coded.take(Ok((unit.annexb.as_slice(), unit.time_ms))) {
                self.ended = out.is_err();
                return Some(out);
            }
        }
        None
    }

    fn frame_rate(&self) -> f64 {
        self.frame_rate
    }

    fn expected_frames(&self) -> Option<u64> {
        None
    }

    fn stats(&self) -> SourceStats {
        SourceStats {
            dropped: self.dropped.load(Ordering::Relaxed),
            ..self.coded.count.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{QueuedBytes, QUEUED_BYTES};

    #[test]
    fn the_queue_lets_in_units_up_to_its_bytes_and_one_of_any_size_when_empty() {
        let q = QueuedBytes::default();
        assert!(q.fits(QUEUED_BYTES * 4), "an empty queue takes any unit");
        q.add(QUEUED_BYTES - 10);
        assert!(q.fits(10));
        assert!(!q.fits(11));
        q.take(QUEUED_BYTES - 20);
        assert!(q.fits(11));
        q.add(QUEUED_BYTES);
        assert!(!q.fits(1));
        q.close();
        assert!(
            q.fits(u64::MAX),
            "a reader gone lets a waiting camera send and find out"
        );
    }
}
