//! Where frames come from: an MP4 file (H.264 through Cisco's openh264, built from its bundled
//! source, demuxed by the `mp4` crate) or a folder of still frames. Every source yields decoded
//! RGB frames one at a time; nothing holds more than the frame being handed out and the decoder's
//! own reference pictures, so a source that never ends runs at flat memory.
//!
//! Hostile streams are the normal case: the container's header is bounded before it is parsed,
//! a sample's size is checked against the limits and the file before anything is allocated for
//! it, a frame's dimensions against [`VideoLimits::max_pixels`], and a corrupt sample costs that
//! sample only (counted in [`SourceStats::skipped`]) until too many in a row end the stream with
//! an error. Panics inside the demuxer or decoder (both parse untrusted bytes) become errors.

use crate::error::VideoError;
use image::RgbImage;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Budgets for one stream.
#[derive(Debug, Clone, Copy)]
pub struct VideoLimits {
    /// Largest frame accepted (pixels).
    pub max_pixels: u64,
    /// Largest compressed sample (one access unit) read.
    pub max_sample_bytes: u64,
    /// Largest MP4 header (`moov`) parsed; the sample tables of an hour of 30 fps video are ~2 MB.
    pub max_header_bytes: u64,
    /// Consecutive undecodable samples after which the stream is given up.
    pub max_consecutive_errors: u32,
}

impl Default for VideoLimits {
    fn default() -> Self {
        VideoLimits {
            // 4K UHD: every gate and CCTV camera we expect.
            max_pixels: 3840 * 2160,
            max_sample_bytes: 8 << 20,
            max_header_bytes: 64 << 20,
            max_consecutive_errors: 30,
        }
    }
}

/// One decoded frame.
pub struct Frame {
    /// 0-based, in decode order of the frames the source yields.
    pub index: u64,
    /// Presentation time from the stream's start, milliseconds.
    pub time_ms: u64,
    pub image: RgbImage,
}

/// What a source has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    pub frames: u64,
    /// Samples or files that could not be decoded and were skipped.
    pub skipped: u64,
    /// Units a live source discarded because its reader fell behind (up to the next key frame).
    pub dropped: u64,
}

/// A stream of frames. `next_frame` returns `None` at the end, an error when the stream cannot
/// go on (the error says why); skipped samples are counted, not returned.
pub trait FrameSource {
    fn next_frame(&mut self) -> Option<Result<Frame, VideoError>>;
    /// Frames per second as the stream declares it (0 when unknown).
    fn frame_rate(&self) -> f64;
    /// Frames the source expects to yield, when known (a file), for progress.
    fn expected_frames(&self) -> Option<u64>;
    fn stats(&self) -> SourceStats;
}

/// How camera sources are read (files and folders need nothing).
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// How an `rtsp://` camera is read.
    pub rtsp: crate::rtsp::RtspOptions,
    /// What an `https://` MJPEG camera's certificate must chain to.
    pub camera_roots: crate::mjpeg::CameraRoots,
}

/// Open `path` by what it is: an `http://` or `https://` MJPEG camera URL, an `rtsp://` H.264
/// camera, a directory of frames, or an MP4 file.
pub fn open(path: &Path, limits: &VideoLimits) -> Result<Box<dyn FrameSource>, VideoError> {
    open_with(path, limits, &SourceOptions::default())
}

/// [`open`], with how camera sources are read.
pub fn open_with(
    path: &Path,
    limits: &VideoLimits,
    options: &SourceOptions,
) -> Result<Box<dyn FrameSource>, VideoError> {
    let text = path.to_string_lossy();
    if text.starts_with("http://") || text.starts_with("https://") {
        return Ok(Box::new(crate::mjpeg::MjpegSource::connect(
            &text,
            limits,
            &options.camera_roots,
        )?));
    }
    if text.starts_with("rtsp://") {
        return Ok(Box::new(crate::rtsp::RtspSource::connect(
            &text,
            limits,
            options.rtsp,
        )?));
    }
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(VideoError::Unsupported(format!(
            "{scheme}:// sources (an MP4 file, a folder of frames, an http:// or https:// MJPEG camera or an rtsp:// H.264 camera are read)"
        )));
    }
    if path.is_dir() {
        Ok(Box::new(FolderSource::open(path, limits)?))
    } else {
        Ok(Box::new(Mp4Source::open(path, limits)?))
    }
}

/// How to name `source` in messages: a camera URL without its user name and password (they must
/// not reach logs or terminals), anything else as it is.
pub fn shown(source: &Path) -> String {
    let text = source.to_string_lossy();
    match url::Url::parse(&text) {
        Ok(url) if text.contains("://") => crate::rtsp::redacted(&url),
        // A URL that does not parse may still hold credentials: everything up to its last `@`
        // goes (over-eager when a path holds an `@`, never short).
        _ => match text.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, after)) => format!("{scheme}://{after}"),
                None => text.into_owned(),
            },
            None => text.into_owned(),
        },
    }
}

/// Anything an MP4 can be read from: a file, or bytes in memory.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// H.264 in an MP4 file.
pub struct Mp4Source {
    reader: mp4::Mp4Reader<BufReader<Box<dyn ReadSeek>>>,
    track: u32,
    samples: u32,
    next_sample: u32,
    file_len: u64,
    timescale: u64,
    frame_rate: f64,
    /// 4-byte start code + NAL, rebuilt for each sample (AVCC → Annex B).
    annexb: Vec<u8>,
    parameter_sets: Vec<u8>,
    length_size: usize,
    coded: CodedFrames,
    limits: VideoLimits,
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

pub(crate) fn catch<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, VideoError> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| VideoError::Malformed(format!("{what}: the parser panicked on this input")))
}

impl Mp4Source {
    pub fn open(path: &Path, limits: &VideoLimits) -> Result<Mp4Source, VideoError> {
        let io = |e: std::io::Error| VideoError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        Mp4Source::from_reader(Box::new(file), file_len, limits)
    }

    /// An MP4 held in memory (tests, fuzzing, an upload).
    pub fn from_bytes(bytes: Vec<u8>, limits: &VideoLimits) -> Result<Mp4Source, VideoError> {
        let len = bytes.len() as u64;
        Mp4Source::from_reader(Box::new(std::io::Cursor::new(bytes)), len, limits)
    }

    fn from_reader(
        mut file: Box<dyn ReadSeek>,
        file_len: u64,
        limits: &VideoLimits,
    ) -> Result<Mp4Source, VideoError> {
        check_moov_size(&mut file, file_len, limits)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| VideoError::Malformed(format!("MP4: {e}")))?;
        let reader = BufReader::new(file);
        let reader = catch("MP4 header", || {
            mp4::Mp4Reader::read_header(reader, file_len)
        })?
        .map_err(|e| VideoError::Malformed(format!("MP4 header: {e}")))?;
        if reader.is_fragmented() {
            return Err(VideoError::Unsupported(
                "fragmented MP4 (use a progressive file, or a live source)".into(),
            ));
        }
        let (track, t) = reader
            .tracks()
            .iter()
            .filter(|(_, t)| matches!(t.media_type(), Ok(mp4::MediaType::H264)))
            .min_by_key(|(id, _)| **id)
            .ok_or_else(|| VideoError::Unsupported("no H.264 video track".into()))?;
        let (w, h) = (t.width() as u64, t.height() as u64);
        if w == 0 || h == 0 || w * h > limits.max_pixels {
            return Err(VideoError::TooLarge(format!(
                "{w}x{h} frames, over the limit of {} pixels",
                limits.max_pixels
            )));
        }
        let avcc = t
            .trak
            .mdia
            .minf
            .stbl
            .stsd
            .avc1
            .as_ref()
            .map(|a| &a.avcc)
            .ok_or_else(|| VideoError::Unsupported("H.264 track without avcC".into()))?;
        let mut parameter_sets = Vec::new();
        for nal in avcc
            .sequence_parameter_sets
            .iter()
            .chain(&avcc.picture_parameter_sets)
        {
            parameter_sets.extend_from_slice(&START_CODE);
            parameter_sets.extend_from_slice(&nal.bytes);
        }
        let length_size = (avcc.length_size_minus_one & 3) as usize + 1;
        let timescale = (t.timescale() as u64).max(1);
        let samples = t.sample_count();
        // The track's own figure is rounded down to whole frames; samples over duration is not.
        // (Computed here: the demuxer's `duration()` divides by a timescale that may be 0.)
        let mdhd = &t.trak.mdia.mdhd;
        let secs = if mdhd.timescale > 0 {
            mdhd.duration as f64 / mdhd.timescale as f64
        } else {
            0.0
        };
        let frame_rate = if secs > 0.0 {
            samples as f64 / secs
        } else {
            0.0
        };
        let track = *track;
        Ok(Mp4Source {
            reader,
            track,
            samples,
            next_sample: 1,
            file_len,
            timescale,
            frame_rate: if frame_rate.is_finite() {
                frame_rate
            } else {
                0.0
            },
            annexb: Vec::new(),
            parameter_sets,
            length_size,
            coded: CodedFrames::new(limits, "samples")?,
            limits: *limits,
        })
    }

    /// The size the sample table gives for sample `id` (1-based), checked before reading it.
    fn sample_size(&self, id: u32) -> Option<u64> {
        let t = self.reader.tracks().get(&self.track)?;
        let stsz = &t.trak.mdia.minf.stbl.stsz;
        if stsz.sample_size > 0 {
            Some(stsz.sample_size as u64)
        } else {
            stsz.sample_sizes
                .get(id.checked_sub(1)? as usize)
                .map(|s| *s as u64)
        }
    }

    /// Read and convert one sample to Annex B in `self.annexb`; its presentation time.
    fn read_sample(&mut self, id: u32) -> Result<u64, VideoError> {
        let size = self
            .sample_size(id)
            .ok_or_else(|| VideoError::Malformed(format!("sample {id} has no size")))?;
        if size > self.limits.max_sample_bytes || size > self.file_len {
            return Err(VideoError::TooLarge(format!(
                "sample {id} of {size} bytes (limit {}, file {})",
                self.limits.max_sample_bytes, self.file_len
            )));
        }
        let (reader, track) = (&mut self.reader, self.track);
        let sample = catch("MP4 sample", || reader.read_sample(track, id))?
            .map_err(|e| VideoError::Malformed(format!("sample {id}: {e}")))?
            .ok_or_else(|| VideoError::Malformed(format!("sample {id} is missing")))?;
        let time = (sample.start_time as i128 + sample.rendering_offset as i128).max(0) as u128
            * 1000
            / self.timescale as u128;
        self.annexb.clear();
        if sample.is_sync || id == 1 {
            self.annexb.extend_from_slice(&self.parameter_sets);
        }
        let mut rest = &sample.bytes[..];
        while !rest.is_empty() {
            let n = self.length_size;
            if rest.len() < n {
                return Err(VideoError::Malformed(format!(
                    "sample {id}: NAL length cut short"
                )));
            }
            let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
            rest = &rest[n..];
            if len > rest.len() {
                return Err(VideoError::Malformed(format!(
                    "sample {id}: NAL of {len} bytes, {} left",
                    rest.len()
                )));
            }
            self.annexb.extend_from_slice(&START_CODE);
            self.annexb.extend_from_slice(&rest[..len]);
            rest = &rest[len..];
        }
        Ok(time.min(u64::MAX as u128) as u64)
    }
}

/// Decode one Annex B access unit; the RGB picture when the decoder gives one. The picture is
/// converted inside (openh264's buffer is only valid until the next call).
pub(crate) fn decode_unit(
    decoder: &mut openh264::decoder::Decoder,
    unit: &[u8],
    max_pixels: u64,
) -> Result<Option<RgbImage>, VideoError> {
    use openh264::formats::YUVSource;
    let yuv = match decoder.decode(unit) {
        Ok(Some(yuv)) => yuv,
        Ok(None) => return Ok(None),
        Err(e) => return Err(VideoError::Decoder(e.to_string())),
    };
    let (w, h) = yuv.dimensions();
    if w == 0 || h == 0 || (w as u64) * (h as u64) > max_pixels {
        return Err(VideoError::TooLarge(format!(
            "a {w}x{h} frame, over the limit of {max_pixels} pixels"
        )));
    }
    let mut rgb = vec![0u8; w * h * 3];
    yuv.write_rgb8(&mut rgb);
    RgbImage::from_raw(w as u32, h as u32, rgb)
        .map(Some)
        .ok_or_else(|| VideoError::Decoder("frame buffer of the wrong size".into()))
}

/// Refuse a file whose `moov` box (the header the demuxer reads whole) is over the limit, from
/// the top-level box headers alone.
fn check_moov_size(
    file: &mut dyn ReadSeek,
    file_len: u64,
    limits: &VideoLimits,
) -> Result<(), VideoError> {
    let mut at = 0u64;
    let mut head = [0u8; 16];
    while at + 8 <= file_len {
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut head[..8]))
            .map_err(|e| VideoError::Malformed(format!("MP4 box header: {e}")))?;
        let mut size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
        let kind = [head[4], head[5], head[6], head[7]];
        if size == 1 {
            file.read_exact(&mut head[8..16])
                .map_err(|e| VideoError::Malformed(format!("MP4 box header: {e}")))?;
            size = u64::from_be_bytes([
                head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
            ]);
        } else if size == 0 {
            size = file_len - at;
        }
        if size < 8 {
            return Err(VideoError::Malformed(format!(
                "MP4 box of {size} bytes at {at}"
            )));
        }
        if &kind == b"moov" {
            if size > limits.max_header_bytes {
                return Err(VideoError::TooLarge(format!(
                    "an MP4 header (moov) of {size} bytes, over the limit of {}",
                    limits.max_header_bytes
                )));
            }
            if at.saturating_add(size) > file_len {
                return Err(VideoError::Malformed(format!(
                    "the MP4 header (moov, {size} bytes at {at}) runs past the end of the file"
                )));
            }
            let mut moov = vec![0u8; size as usize];
            file.seek(SeekFrom::Start(at))
                .and_then(|_| file.read_exact(&mut moov))
                .map_err(|e| VideoError::Malformed(format!("MP4 header: {e}")))?;
            let header = if head[..4] == [0, 0, 0, 1] { 16 } else { 8 };
            return check_boxes(&moov, header, 0);
        }
        at = at.saturating_add(size);
    }
    Err(VideoError::Malformed("no moov box".into()))
}

/// Boxes inside which the `mp4` demuxer reads child boxes, and where their children start.
fn children_at(kind: &[u8]) -> Option<usize> {
    Some(match kind {
        b"moov" | b"trak" | b"edts" | b"mdia" | b"minf" | b"dinf" | b"stbl" | b"mvex" | b"udta"
        | b"ilst" => 0,
        b"meta" => 4,
        b"stsd" | b"dref" => 8,
        b"avc1" | b"avc3" | b"hev1" | b"hvc1" | b"vp09" | b"encv" => 78,
        b"mp4a" => 28,
        _ => return None,
    })
}

/// Every box of the `moov` tree has a size of at least its header and lies inside its parent.
/// The `mp4` demuxer (0.14) walks child boxes by their sizes and loops forever on a box of size 0
/// (found by fuzzing): nothing it reads may contain one.
fn check_boxes(parent: &[u8], mut at: usize, depth: u32) -> Result<(), VideoError> {
    let bad = |why: String| Err(VideoError::Malformed(format!("MP4 header: {why}")));
    if depth > 16 {
        return bad("boxes nested more than 16 deep".into());
    }
    while at < parent.len() {
        let Some(h) = parent.get(at..at + 8) else {
            return bad(format!("a box header cut short at {at}"));
        };
        let kind = [h[4], h[5], h[6], h[7]];
        let (size, header) = match u32::from_be_bytes([h[0], h[1], h[2], h[3]]) {
            1 => {
                let Some(l) = parent.get(at + 8..at + 16) else {
                    return bad(format!("a box header cut short at {at}"));
                };
                let mut b = [0u8; 8];
                b.copy_from_slice(l);
                (u64::from_be_bytes(b), 16)
            }
            s => (s as u64, 8),
        };
        if size < header as u64 || size > (parent.len() - at) as u64 {
            return bad(format!(
                "box '{}' of {size} bytes at {at} does not fit its parent",
                String::from_utf8_lossy(&kind)
            ));
        }
        let end = at + size as usize;
        if let Some(skip) = children_at(&kind) {
            let body = &parent[at + header..end];
            if skip <= body.len() {
                check_boxes(body, skip, depth + 1)?;
            }
        }
        at = end;
    }
    Ok(())
}

impl FrameSource for Mp4Source {
    fn next_frame(&mut self) -> Option<Result<Frame, VideoError>> {
        while self.next_sample <= self.samples {
            let id = self.next_sample;
            self.next_sample += 1;
            let unit = self
                .read_sample(id)
                .map(|time| (self.annexb.as_slice(), time));
            if let Some(out) = self.coded.take(unit) {
                return Some(out);
            }
        }
        None
    }

    fn frame_rate(&self) -> f64 {
        self.frame_rate
    }

    fn expected_frames(&self) -> Option<u64> {
        Some(self.samples as u64)
    }

    fn stats(&self) -> SourceStats {
        self.coded.count.stats
    }
}

/// An H.264 decoder as every source uses it: openh264 built from its bundled source. A frame
/// comes out of the unit that completes it (no frame is held back: Constrained Baseline has no
/// reordering).
pub(crate) fn h264_decoder() -> Result<openh264::decoder::Decoder, VideoError> {
    openh264::decoder::Decoder::with_api_config(
        openh264::OpenH264API::from_source(),
        openh264::decoder::DecoderConfig::new(),
    )
    .map_err(|e| VideoError::Decoder(e.to_string()))
}

/// The bookkeeping every source shares: frames numbered as they come out; a unit that gives no
/// frame (one that cannot be read or decoded, or an empty one) counted, until too many come in a
/// row — so a stream of bad or empty units cannot spin.
pub(crate) struct FrameCount {
    pub(crate) stats: SourceStats,
    consecutive_errors: u32,
    max_consecutive_errors: u32,
}

impl FrameCount {
    pub(crate) fn new(limits: &VideoLimits) -> Self {
        FrameCount {
            stats: SourceStats::default(),
            consecutive_errors: 0,
            max_consecutive_errors: limits.max_consecutive_errors,
        }
    }

    /// The next frame.
    fn frame(&mut self, time_ms: u64, image: RgbImage) -> Frame {
        self.consecutive_errors = 0;
        let index = self.stats.frames;
        self.stats.frames += 1;
        Frame {
            index,
            time_ms,
            image,
        }
    }

    /// A unit that gave no frame (`skipped`: one that could not be decoded, counted as skipped):
    /// `None` to go on; the error `message` makes from the count in a row, when that is too many.
    fn miss(
        &mut self,
        skipped: bool,
        message: impl FnOnce(u32) -> String,
    ) -> Option<Result<Frame, VideoError>> {
        if skipped {
            self.stats.skipped += 1;
        }
        self.consecutive_errors += 1;
        (self.consecutive_errors >= self.max_consecutive_errors)
            .then(|| Err(VideoError::Malformed(message(self.consecutive_errors))))
    }

    /// A source made of still images (a folder, an MJPEG stream): the frame for a decoded still;
    /// `None` when it did not decode and is skipped; an error when that made too many in a row
    /// (`what` names the last one).
    pub(crate) fn take(
        &mut self,
        decoded: Result<RgbImage, vision::VisionError>,
        time_ms: u64,
        what: impl std::fmt::Display,
    ) -> Option<Result<Frame, VideoError>> {
        match decoded {
            Ok(image) => Some(Ok(self.frame(time_ms, image))),
            Err(e) => self.miss(true, |n| {
                format!("{n} undecodable frames in a row, the last ({what}): {e}")
            }),
        }
    }
}

/// The bookkeeping of a compressed stream (MP4 samples, RTSP access units): each unit decoded
/// (panics caught) and counted as [`FrameCount`] does; a unit that gives no picture (parameter
/// sets, or damage the decoder hid) is a miss but not a skip; a unit over a limit ends the
/// stream (refused, not skipped through).
pub(crate) struct CodedFrames {
    pub(crate) count: FrameCount,
    decoder: openh264::decoder::Decoder,
    max_pixels: u64,
    /// What the stream's units are called in messages ("samples", "access units").
    units: &'static str,
}

impl CodedFrames {
    pub(crate) fn new(limits: &VideoLimits, units: &'static str) -> Result<Self, VideoError> {
        Ok(CodedFrames {
            count: FrameCount::new(limits),
            decoder: h264_decoder()?,
            max_pixels: limits.max_pixels,
            units,
        })
    }

    /// Decode `unit` (Annex B bytes and its time, or why it could not be read): the frame;
    /// `None` to go on with the next unit; an error when the stream cannot go on.
    pub(crate) fn take(
        &mut self,
        unit: Result<(&[u8], u64), VideoError>,
    ) -> Option<Result<Frame, VideoError>> {
        let decoded = unit.and_then(|(bytes, time_ms)| {
            let (decoder, max) = (&mut self.decoder, self.max_pixels);
            catch("H.264 decoder", || decode_unit(decoder, bytes, max))
                .and_then(|r| r)
                .map(|image| image.map(|i| (time_ms, i)))
        });
        let units = self.units;
        match decoded {
            Ok(Some((time_ms, image))) => Some(Ok(self.count.frame(time_ms, image))),
            Ok(None) => self
                .count
                .miss(false, |n| format!("{n} {units} in a row gave no picture")),
            Err(e @ VideoError::TooLarge(_)) => Some(Err(e)),
            Err(e) => self.count.miss(true, |n| {
                format!("{n} undecodable {units} in a row, the last: {e}")
            }),
        }
    }
}

/// A directory of still frames (JPEG, PNG, JPEG 2000), in file-name order.
pub struct FolderSource {
    files: Vec<PathBuf>,
    next: usize,
    limits: vision::decode::DecodeLimits,
    stills: FrameCount,
}

impl FolderSource {
    pub fn open(dir: &Path, limits: &VideoLimits) -> Result<FolderSource, VideoError> {
        let io = |e: std::io::Error| VideoError::Io {
            path: dir.to_path_buf(),
            source: e,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let p = entry.map_err(io)?.path();
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png" | "jp2" | "j2k")) {
                files.push(p);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(VideoError::Unsupported(format!(
                "no JPEG, PNG or JPEG 2000 frames in {}",
                dir.display()
            )));
        }
        Ok(FolderSource {
            files,
            next: 0,
            limits: vision::decode::DecodeLimits {
                max_pixels: limits.max_pixels,
                ..Default::default()
            },
            stills: FrameCount::new(limits),
        })
    }
}

impl FrameSource for FolderSource {
    fn next_frame(&mut self) -> Option<Result<Frame, VideoError>> {
        while let Some(path) = self.files.get(self.next) {
            self.next += 1;
            let decoded = vision::decode::decode_file(path, &self.limits);
            if let Some(out) = self.stills.take(decoded, 0, path.display()) {
                return Some(out);
            }
        }
        None
    }

    fn frame_rate(&self) -> f64 {
        0.0
    }

    fn expected_frames(&self) -> Option<u64> {
        Some(self.files.len() as u64)
    }

    fn stats(&self) -> SourceStats {
        self.stills.stats
    }
}
