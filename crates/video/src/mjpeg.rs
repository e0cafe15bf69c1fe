//! MJPEG over HTTP(S): a camera's `multipart/x-mixed-replace` stream, one JPEG per part, for as
//! long as the camera runs. [`MjpegParser`] takes the stream in whatever pieces the network
//! delivers and returns whole parts; [`MjpegSource`] turns a reader of such a stream into frames.
//!
//! `https://` cameras are verified against [`CameraRoots`]: the camera network's own CA when one
//! is given (the usual case: gate cameras carry certificates from the operator's PKI, not a public
//! one), else the public roots compiled in (Mozilla's programme, `webpki-roots`). TLS is rustls
//! with ring, as everywhere else in facegate; an `https://` stream is never redirected to plain
//! HTTP.
//!
//! The parser holds at most one part and its headers: a part larger than its limit, or headers
//! that never end, is an error before the buffer grows past the limit. A stream that never ends
//! runs in constant memory. Cameras differ: parts with or without `Content-Length`, delimiters
//! with or without the CRLF before them, a boundary parameter that already starts with `--`.

use std::collections::VecDeque;
use std::io::Read;
use std::time::Instant;

use crate::source::{Frame, FrameCount, FrameSource, SourceStats, VideoLimits};
use crate::VideoError;

/// Largest header block of one part.
pub const MAX_PART_HEADER_BYTES: usize = 8 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the next delimiter line.
    Delimiter,
    /// After a delimiter: the part's header lines.
    Headers,
    /// The part's body: `Some(n)` bytes declared, or up to the next delimiter.
    Body(Option<usize>),
    /// The closing delimiter was seen.
    Done,
}

/// An incremental `multipart/x-mixed-replace` parser.
pub struct MjpegParser {
    /// `--` + boundary.
    delimiter: Vec<u8>,
    buf: Vec<u8>,
    state: State,
    max_part_bytes: usize,
    /// Whether the current part's body is a JPEG (others are read past and dropped).
    body_is_jpeg: bool,
    /// How far `buf` was already searched for a delimiter: a stream delivered a byte at a time
    /// must not be searched from its start again for every byte.
    searched: usize,
    /// Parts that were not `image/jpeg` (skipped).
    pub skipped_parts: u64,
}

impl MjpegParser {
    /// `boundary` as the `Content-Type` header's parameter gave it.
    pub fn new(boundary: &str, max_part_bytes: usize) -> Result<Self, VideoError> {
        let b = boundary.trim().trim_matches('"');
        // RFC 2046 §5.1.1: 1 to 70 characters. Some cameras declare the delimiter itself
        // ("--frame"); the leading dashes are then part of what they send after another "--"
        // or not at all — both are accepted below by matching the bare boundary.
        if b.is_empty() || b.len() > 70 || !b.bytes().all(|c| c.is_ascii_graphic() || c == b' ') {
            return Err(VideoError::Malformed(format!(
                "multipart boundary {b:?} is not 1 to 70 printable characters"
            )));
        }
        let bare = b.trim_start_matches('-');
        if bare.is_empty() {
            return Err(VideoError::Malformed(
                "multipart boundary is only dashes".into(),
            ));
        }
        Ok(MjpegParser {
            delimiter: format!("--{bare}").into_bytes(),
            buf: Vec::new(),
            state: State::Delimiter,
            max_part_bytes,
            body_is_jpeg: true,
            searched: 0,
            skipped_parts: 0,
        })
    }

    /// The boundary of a `Content-Type: multipart/x-mixed-replace; boundary=…` header value.
    pub fn boundary_of(content_type: &str) -> Result<String, VideoError> {
        let mut parts = content_type.split(';');
        let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "multipart/x-mixed-replace" {
            return Err(VideoError::Unsupported(format!(
                "content type {mime:?} (an MJPEG stream is multipart/x-mixed-replace)"
            )));
        }
        parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .ok_or_else(|| {
                VideoError::Malformed("multipart content type without a boundary".into())
            })
    }

    /// Bytes held while waiting for the rest of a part (bounded by the part limit, the header
    /// limit and a delimiter line).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the closing delimiter was seen.
    pub fn finished(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next piece of the stream; returns the JPEG parts it completed.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, VideoError> {
        if self.state == State::Done {
            return Ok(Vec::new());
        }
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Done => {
                    self.buf.clear();
                    break;
                }
                State::Delimiter => {
                    let Some(at) = find(&self.buf, &self.delimiter) else {
                        // Keep only what may be the start of a delimiter.
                        let keep = self.delimiter.len().saturating_sub(1).min(self.buf.len());
                        self.buf.drain(..self.buf.len() - keep);
                        break;
                    };
                    self.searched = 0;
                    let after = at + self.delimiter.len();
                    // The rest of the delimiter line: "--" closes the stream; else up to CRLF.
                    let Some(eol) = find(&self.buf[after..], b"\n") else {
                        if self.buf.len() - after > 256 {
                            return Err(VideoError::Malformed(
                                "delimiter line without an end".into(),
                            ));
                        }
                        self.buf.drain(..at);
                        break;
                    };
                    let closing = self.buf[after..].starts_with(b"--");
                    self.buf.drain(..after + eol + 1);
                    self.state = if closing { State::Done } else { State::Headers };
                }
                State::Headers => {
                    let end = find(&self.buf, b"\r\n\r\n")
                        .map(|i| (i, 4))
                        .or_else(|| find(&self.buf, b"\n\n").map(|i| (i, 2)))
                        // A part without header lines starts with its blank line.
                        .or_else(|| self.buf.starts_with(b"\r\n").then_some((0, 2)));
                    let Some((end, sep)) = end else {
                        if self.buf.len() > MAX_PART_HEADER_BYTES {
                            return Err(VideoError::TooLarge(format!(
                                "part headers over {MAX_PART_HEADER_BYTES} bytes"
                            )));
                        }
                        break;
                    };
                    let headers = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    self.buf.drain(..end + sep);
                    let mut length = None;
                    let mut jpeg = true;
                    for line in headers.lines() {
                        let Some((k, v)) = line.split_once(':') else {
                            continue;
                        };
                        let (k, v) = (k.trim(), v.trim());
                        if k.eq_ignore_ascii_case("content-length") {
                            let n: usize = v.parse().map_err(|_| {
                                VideoError::Malformed(format!("part Content-Length {v:?}"))
                            })?;
                            length = Some(n);
                        } else if k.eq_ignore_ascii_case("content-type") {
                            jpeg = v.to_ascii_lowercase().starts_with("image/jpeg");
                        }
                    }
                    if let Some(n) = length {
                        if n > self.max_part_bytes {
                            return Err(VideoError::TooLarge(format!(
                                "a part of {n} bytes (limit {})",
                                self.max_part_bytes
                            )));
                        }
                    }
                    if !jpeg {
                        self.skipped_parts += 1;
                    }
                    self.body_is_jpeg = jpeg;
                    self.searched = 0;
                    self.state = State::Body(length);
                }
                State::Body(Some(n)) => {
                    if self.buf.len() < n {
                        break;
                    }
                    let body: Vec<u8> = self.buf.drain(..n).collect();
                    if self.body_is_jpeg {
                        out.push(body);
                    }
                    self.state = State::Delimiter;
                }
                State::Body(None) => {
                    let from = self.searched.saturating_sub(self.delimiter.len());
                    let Some(at) = find(&self.buf[from..], &self.delimiter).map(|i| i + from)
                    else {
                        self.searched = self.buf.len();
                        if self.buf.len() > self.max_part_bytes + self.delimiter.len() + 2 {
                            return Err(VideoError::TooLarge(format!(
                                "a part over {} bytes",
                                self.max_part_bytes
                            )));
                        }
                        break;
                    };
                    // The CRLF before the delimiter belongs to the delimiter (RFC 2046).
                    let mut end = at;
                    if self.buf[..end].ends_with(b"\r\n") {
                        end -= 2;
                    } else if self.buf[..end].ends_with(b"\n") {
                        end -= 1;
                    }
                    if end > self.max_part_bytes {
                        return Err(VideoError::TooLarge(format!(
                            "a part over {} bytes",
                            self.max_part_bytes
                        )));
                    }
                    let body: Vec<u8> = self.buf[..end].to_vec();
                    self.buf.drain(..at);
                    self.searched = 0;
                    if self.body_is_jpeg {
                        out.push(body);
                    }
                    self.state = State::Delimiter;
                }
            }
        }
        Ok(out)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 64 << 10;
/// A camera that sends nothing for this long is given up.
const STALL_SECONDS: u64 = 10;

/// A client error as it may be shown: the two kinds whose text carries a URL (a malformed one,
/// a redirect to plain HTTP), which may hold a camera's credentials, are named without it.
fn without_urls(e: &ureq::Error) -> String {
    match e {
        ureq::Error::BadUri(_) => "malformed URL".into(),
        ureq::Error::RequireHttpsOnly(_) => "redirected to plain HTTP (refused)".into(),
        e => e.to_string(),
    }
}

/// The certificates an `https://` camera's chain must end in.
#[derive(Debug, Clone, Default)]
pub enum CameraRoots {
    /// The public roots compiled in (Mozilla's programme): a camera with a public certificate.
    #[default]
    Public,
    /// These roots only (DER): the camera network's own CA.
    Only(Vec<Vec<u8>>),
}

impl CameraRoots {
    /// Largest CA file read: a bundle of a few certificates is a few KiB.
    pub const MAX_FILE_BYTES: u64 = 1 << 20;

    /// The certificates of a PEM file (other PEM sections are ignored); an error when it holds
    /// none, or is larger than [`CameraRoots::MAX_FILE_BYTES`].
    pub fn from_pem_file(path: &std::path::Path) -> Result<CameraRoots, VideoError> {
        let io = |source| VideoError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut pem = Vec::new();
        std::fs::File::open(path)
            .map_err(io)?
            .take(Self::MAX_FILE_BYTES + 1)
            .read_to_end(&mut pem)
            .map_err(io)?;
        if pem.len() as u64 > Self::MAX_FILE_BYTES {
            return Err(VideoError::TooLarge(format!(
                "{}: a CA file over {} bytes",
                path.display(),
                Self::MAX_FILE_BYTES
            )));
        }
        let mut ders = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => ders.push(c.der().to_vec()),
                Ok(_) => {}
                Err(e) => {
                    return Err(VideoError::Invalid(format!("{}: {e}", path.display())));
                }
            }
        }
        if ders.is_empty() {
            return Err(VideoError::Invalid(format!(
                "{}: no PEM certificate in it",
                path.display()
            )));
        }
        Ok(CameraRoots::Only(ders))
    }
}

/// Frames from an MJPEG stream: each JPEG part decoded within the limits; parts that do not decode
/// are counted and skipped, up to `max_consecutive_errors` in a row. Frame times are arrival
/// times since the stream was opened (an MJPEG stream carries none).
pub struct MjpegSource {
    reader: Box<dyn Read + Send>,
    parser: MjpegParser,
    parts: VecDeque<Vec<u8>>,
    chunk: Vec<u8>,
    decode_limits: vision::decode::DecodeLimits,
    stills: FrameCount,
    started: Instant,
    ended: bool,
}

impl MjpegSource {
    /// A stream already open (an HTTP body, a file, bytes in memory) with its multipart boundary.
    pub fn from_reader(
        reader: Box<dyn Read + Send>,
        boundary: &str,
        limits: &VideoLimits,
    ) -> Result<Self, VideoError> {
        let max_part = usize::try_from(limits.max_sample_bytes).unwrap_or(usize::MAX);
        Ok(MjpegSource {
            reader,
            parser: MjpegParser::new(boundary, max_part)?,
            parts: VecDeque::new(),
            chunk: vec![0; READ_CHUNK],
            decode_limits: vision::decode::DecodeLimits {
                max_bytes: limits.max_sample_bytes,
                max_pixels: limits.max_pixels,
                refuse_truncated: false,
            },
            stills: FrameCount::new(limits),
            started: Instant::now(),
            ended: false,
        })
    }

    /// `GET url` (`http://` or `https://`, verified against `roots`) and read its
    /// `multipart/x-mixed-replace` body.
    pub fn connect(
        url: &str,
        limits: &VideoLimits,
        roots: &CameraRoots,
    ) -> Result<Self, VideoError> {
        use std::time::Duration;
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        let shown = crate::source::shown(std::path::Path::new(url));
        let https = url.starts_with("https://");
        if !https && matches!(roots, CameraRoots::Only(_)) {
            return Err(VideoError::Invalid(format!(
                "{shown}: a camera CA was given for a plain http:// stream (use https://, or drop the CA)"
            )));
        }
        let secs = Some(Duration::from_secs(STALL_SECONDS));
        let root_certs = match roots {
            CameraRoots::Public => RootCerts::WebPki,
            CameraRoots::Only(ders) => RootCerts::new_with_certs(
                &ders
                    .iter()
                    .map(|d| Certificate::from_der(d).to_owned())
                    .collect::<Vec<_>>(),
            ),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(secs)
            .timeout_recv_response(secs)
            .timeout_per_read(secs)
            .https_only(https)
            .tls_config(
                TlsConfig::builder()
                    .provider(TlsProvider::Rustls)
                    .root_certs(root_certs)
                    .build(),
            )
            .build()
            .into();
        let response = agent
            .get(url)
            .call()
            .map_err(|e| VideoError::Camera(format!("{shown}: {}", without_urls(&e))))?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let boundary = MjpegParser::boundary_of(&content_type)?;
        let reader = response.into_body().into_reader();
        MjpegSource::from_reader(Box::new(reader), &boundary, limits)
    }

    /// Reads until at least one part is complete or the stream ends.
    fn fill(&mut self) -> Result<(), VideoError> {
        while self.parts.is_empty() && !self.ended {
            let n = match self.reader.read(&mut self.chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.ended = true;
                    return Err(VideoError::Malformed(format!("MJPEG stream: {e}")));
                }
            };
            if n == 0 {
                self.ended = true;
                break;
            }
            let parts = self
                .parser
                .push(&self.chunk[..n])
                .inspect_err(|_| self.ended = true)?;
            self.parts.extend(parts);
            if self.parser.finished() {
                self.ended = true;
            }
        }
        Ok(())
    }
}

impl FrameSource for MjpegSource {
    fn next_frame(&mut self) -> Option<Result<Frame, VideoError>> {
        loop {
            if let Err(e) = self.fill() {
                return Some(Err(e));
            }
            let part = self.parts.pop_front()?;
            let decoded = vision::decode::decode(&part, &self.decode_limits);
            let time_ms = self.started.elapsed().as_millis() as u64;
            let index = self.stills.stats.frames + self.stills.stats.skipped;
            if let Some(out) = self
                .stills
                .take(decoded, time_ms, format_args!("part {index}"))
            {
                if out.is_err() {
                    self.ended = true;
                    self.parts.clear();
                }
                return Some(out);
            }
        }
    }

    fn frame_rate(&self) -> f64 {
        0.0
    }

    fn expected_frames(&self) -> Option<u64> {
        None
    }

    fn stats(&self) -> SourceStats {
        self.stills.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(parts: &[&[u8]], with_length: bool, crlf_before: bool) -> Vec<u8> {
        let mut s = Vec::new();
        for p in parts {
            if crlf_before {
                s.extend_from_slice(b"\r\n");
            }
            s.extend_from_slice(b"--frame\r\nContent-Type: image/jpeg\r\n");
            if with_length {
                s.extend_from_slice(format!("Content-Length: {}\r\n", p.len()).as_bytes());
            }
            s.extend_from_slice(b"\r\n");
            s.extend_from_slice(p);
        }
        s.extend_from_slice(b"\r\n--frame--\r\n");
        s
    }

    const A: &[u8] = b"\xFF\xD8first image with --fr in it\xFF\xD9";
    const B: &[u8] = b"\xFF\xD8second\r\n\xFF\xD9";

    #[test]
    fn parts_come_out_whole_however_the_stream_is_cut() {
        for (with_length, crlf) in [(true, true), (false, true), (true, false)] {
            let s = stream(&[A, B, A], with_length, crlf);
            for piece in [1, 2, 7, 64, s.len()] {
                let mut p = MjpegParser::new("frame", 1 << 20).unwrap();
                let mut got = Vec::new();
                for c in s.chunks(piece) {
                    got.extend(p.push(c).unwrap());
                }
                assert_eq!(
                    got,
                    [A, B, A],
                    "length {with_length} crlf {crlf} piece {piece}"
                );
                assert!(p.finished());
            }
        }
    }

    #[test]
    fn boundaries_as_cameras_declare_them() {
        assert_eq!(
            MjpegParser::boundary_of("multipart/x-mixed-replace; boundary=\"--frame\"").unwrap(),
            "--frame"
        );
        assert!(MjpegParser::boundary_of("image/jpeg").is_err());
        assert!(MjpegParser::boundary_of("multipart/x-mixed-replace").is_err());
        // A declared "--frame" matches parts delimited by "--frame".
        let s = stream(&[A], true, true);
        let mut p = MjpegParser::new("--frame", 1 << 20).unwrap();
        assert_eq!(p.push(&s).unwrap(), [A]);
        assert!(MjpegParser::new("", 10).is_err() && MjpegParser::new("---", 10).is_err());
    }

    #[test]
    fn limits_hold_before_memory_grows() {
        // A declared length over the limit, a part that never ends, headers that never end.
        let mut p = MjpegParser::new("frame", 100).unwrap();
        assert!(p.push(b"--frame\r\nContent-Length: 101\r\n\r\n").is_err());
        let mut p = MjpegParser::new("frame", 100).unwrap();
        p.push(b"--frame\r\n\r\n").unwrap();
        let mut failed = false;
        for _ in 0..10 {
            if p.push(&[0x55; 50]).is_err() {
                failed = true;
                break;
            }
            assert!(p.buf.len() <= 100 + 64);
        }
        assert!(failed);
        let mut p = MjpegParser::new("frame", 100).unwrap();
        p.push(b"--frame\r\n").unwrap();
        assert!((0..20).any(|_| p.push(&[b'x'; 1000]).is_err()));
        // Non-JPEG parts are skipped, not returned.
        let mut p = MjpegParser::new("frame", 100).unwrap();
        let got = p
            .push(
                b"--frame\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi\r\n--frame--",
            )
            .unwrap();
        assert!(got.is_empty() && p.skipped_parts == 1);
    }

    #[test]
    fn garbage_between_parts_and_an_endless_preamble_cost_nothing() {
        let mut p = MjpegParser::new("frame", 1000).unwrap();
        for _ in 0..1000 {
            assert!(p.push(&[b'z'; 4096]).unwrap().is_empty());
            assert!(p.buf.len() < 16);
        }
    }
}
