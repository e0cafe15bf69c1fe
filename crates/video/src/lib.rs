//! facegate's video layer: frames in, tracks out. Sits beside `vision` (which it uses for
//! detection types and still-frame decoding) and in front of the gallery: bytes → frames →
//! detections (vision) → tracks → best frames per track → one template per passer-by.
//!
//! - [`source`]: frame sources (MP4/H.264 files, folders of frames), bounded and panic-free;
//!   [`mjpeg`]: MJPEG cameras over HTTP (`multipart/x-mixed-replace`), in constant memory;
//!   [`rtsp`]: H.264 cameras over RTSP (retina), dropping to the next key frame when behind.
//! - [`track`]: multi-face tracking (Kalman + Hungarian on overlap, a second pass for weak
//!   detections, appearance gating when boxes are ambiguous).
//! - [`watch`]: per track, the best frames (ranked by [`rank`]) and one fused template, decided
//!   once.
//! - [`cadence`]: how often to detect on a live stream, fixed or as often as this machine keeps
//!   up.
//! - [`replay`]: a live camera replayed in virtual time (frames lost when the reader is behind),
//!   for measuring what a live pipeline delivers on this machine.
//! - [`annotate`]: tracked faces boxed, as JPEG frames or an H.264 MP4 (only when asked).
//! - [`synth`], [`metrics`], [`evaluate`]: generated scenes with exact ground truth, MOTA/IDF1,
//!   and the per-passer-by decision counts.

#![forbid(unsafe_code)]

pub mod annotate;
pub mod attack;
pub mod cadence;
pub mod error;
pub mod evaluate;
pub mod h264;
pub mod hota;
pub mod metrics;
pub mod mjpeg;
pub mod motion;
pub mod rank;
pub mod replay;
pub mod rtsp;
pub mod source;
pub mod synth;
pub mod track;
pub mod watch;

pub use error::VideoError;
pub use source::{Frame, FrameSource, SourceStats, VideoLimits};
