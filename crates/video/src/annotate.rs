//! Frames for people to look at: tracked faces boxed in their track's colour, written as JPEG
//! files or as one H.264 MP4 (openh264's encoder, the `mp4` crate's writer). Only ever on request
//! (`watch --annotate`): an annotated video keeps the faces it shows, so it is the one place a
//! frame is written, and it stays on the machine that asked for it.

use crate::error::VideoError;
use image::RgbImage;
use openh264::encoder::{Encoder, EncoderConfig, RateControlMode};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// A key frame every this many frames: a viewer can seek to within a second or two.
const KEY_FRAME_EVERY: u64 = 60;

/// Box each tracked face in a colour of its track (3 px wide).
pub fn draw_tracks(img: &mut RgbImage, boxes: &[(u64, vision::geometry::Rect)]) {
    const COLOURS: [[u8; 3]; 6] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
    ];
    let (w, h) = (img.width() as i64, img.height() as i64);
    if w == 0 || h == 0 {
        return;
    }
    for (id, r) in boxes {
        let c = image::Rgb(COLOURS[(*id as usize) % COLOURS.len()]);
        let clamp = |v: f64, hi: i64| (v.round() as i64).clamp(0, hi - 1);
        let (l, t, rr, b) = (
            clamp(r.left, w),
            clamp(r.top, h),
            clamp(r.right, w),
            clamp(r.bottom, h),
        );
        for k in 0..3 {
            for x in l..=rr {
                for y in [t + k, b - k] {
                    if (0..h).contains(&y) {
                        img.put_pixel(x as u32, y as u32, c);
                    }
                }
            }
            for y in t..=b {
                for x in [l + k, rr - k] {
                    if (0..w).contains(&x) {
                        img.put_pixel(x as u32, y as u32, c);
                    }
                }
            }
        }
    }
}

/// Where annotated frames go: a directory of JPEG files, or an MP4 file (a path ending `.mp4`).
pub enum AnnotatedOutput {
    Frames(PathBuf),
    Video(Box<Mp4Out>),
}

impl AnnotatedOutput {
    pub fn create(path: &Path) -> Result<AnnotatedOutput, VideoError> {
        let is_mp4 = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("mp4"));
        if is_mp4 {
            return Ok(AnnotatedOutput::Video(Box::new(Mp4Out::create(path)?)));
        }
        std::fs::create_dir_all(path).map_err(|e| VideoError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Ok(AnnotatedOutput::Frames(path.to_path_buf()))
    }

    /// Write frame `index` (shown at `time_ms`).
    pub fn push(&mut self, image: &RgbImage, index: u64, time_ms: u64) -> Result<(), VideoError> {
        match self {
            AnnotatedOutput::Frames(dir) => {
                let path = dir.join(format!("frame{index:06}.jpg"));
                image.save(&path).map_err(|e| VideoError::Io {
                    path,
                    source: std::io::Error::other(e),
                })
            }
            AnnotatedOutput::Video(mp4) => mp4.push(image, time_ms),
        }
    }

    /// Complete the output (an MP4 is unreadable until its index is written here).
    pub fn finish(self) -> Result<(), VideoError> {
        match self {
            AnnotatedOutput::Frames(_) => Ok(()),
            AnnotatedOutput::Video(mp4) => mp4.finish(),
        }
    }
}

/// An H.264 MP4 written frame by frame. Frames are cropped to even sides (4:2:0); each sample
/// lasts until the next frame's time, so a source's own timing (dropped frames, variable rate)
/// plays back as it happened.
pub struct Mp4Out {
    path: PathBuf,
    writer: mp4::Mp4Writer<BufWriter<std::fs::File>>,
    encoder: Encoder,
    size: Option<(u32, u32)>,
    track_added: bool,
    /// The last encoded frame, written once the next one says how long it lasts.
    held: Option<(u64, Vec<u8>, bool)>,
    last_duration: u32,
    frames: u64,
    unit: Vec<u8>,
}

fn mp4_error(path: &Path, e: impl std::fmt::Display) -> VideoError {
    VideoError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Mp4Out {
    pub fn create(path: &Path) -> Result<Mp4Out, VideoError> {
        let file = std::fs::File::create(path).map_err(|e| VideoError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let brand = |b: &[u8; 4]| mp4::FourCC::from(*b);
        let config = mp4::Mp4Config {
            major_brand: brand(b"isom"),
            minor_version: 512,
            compatible_brands: vec![
                brand(b"isom"),
                brand(b"iso2"),
                brand(b"avc1"),
                brand(b"mp41"),
            ],
            timescale: 1000,
        };
        let writer = mp4::Mp4Writer::write_start(BufWriter::new(file), &config)
            .map_err(|e| mp4_error(path, e))?;
        // Constant quality (no bit-rate target): these files are for looking at boxes.
        let encoder = Encoder::with_api_config(
            openh264::OpenH264API::from_source(),
            EncoderConfig::new()
                .rate_control_mode(RateControlMode::Off)
                .skip_frames(false),
        )
        .map_err(|e| VideoError::Decoder(format!("H.264 encoder: {e}")))?;
        Ok(Mp4Out {
            path: path.to_path_buf(),
            writer,
            encoder,
            size: None,
            track_added: false,
            held: None,
            last_duration: 33,
            frames: 0,
            unit: Vec::new(),
        })
    }

    pub fn push(&mut self, image: &RgbImage, time_ms: u64) -> Result<(), VideoError> {
        let (w, h) = (image.width() & !1, image.height() & !1);
        if w == 0 || h == 0 {
            return Err(VideoError::Invalid(format!(
                "a {}x{} frame cannot be encoded",
                image.width(),
                image.height()
            )));
        }
        match self.size {
            None => self.size = Some((w, h)),
            Some(size) if size != (w, h) => {
                return Err(VideoError::Invalid(format!(
                    "a {w}x{h} frame in a {}x{} video",
                    size.0, size.1
                )))
            }
            Some(_) => {}
        }
        let even;
        let rgb = if (w, h) == image.dimensions() {
            image
        } else {
            even = image::imageops::crop_imm(image, 0, 0, w, h).to_image();
            &even
        };
        if self.frames.is_multiple_of(KEY_FRAME_EVERY) {
            self.encoder.force_intra_frame();
        }
        self.frames += 1;
        let yuv =
            YUVBuffer::from_rgb8_source(RgbSliceU8::new(rgb.as_raw(), (w as usize, h as usize)));
        self.unit.clear();
        self.encoder
            .encode(&yuv)
            .map_err(|e| VideoError::Decoder(format!("H.264 encoder: {e}")))?
            .write_vec(&mut self.unit);
        let AvccSample {
            bytes: sample,
            sync: is_sync,
            sps,
            pps,
        } = avcc_sample(&self.unit);
        if !self.track_added {
            let (Some(sps), Some(pps)) = (sps, pps) else {
                return Err(VideoError::Decoder(
                    "H.264 encoder: the first frame came without parameter sets".into(),
                ));
            };
            let track = mp4::TrackConfig {
                track_type: mp4::TrackType::Video,
                timescale: 1000,
                language: "und".into(),
                media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                    width: w.min(u16::MAX as u32) as u16,
                    height: h.min(u16::MAX as u32) as u16,
                    seq_param_set: sps,
                    pic_param_set: pps,
                }),
            };
            self.writer
                .add_track(&track)
                .map_err(|e| mp4_error(&self.path, e))?;
            self.track_added = true;
        }
        if let Some((start, _, _)) = &self.held {
            let duration = time_ms.saturating_sub(*start).clamp(1, u32::MAX as u64) as u32;
            self.write_held(duration)?;
        }
        self.held = Some((time_ms, sample, is_sync));
        Ok(())
    }

    fn write_held(&mut self, duration: u32) -> Result<(), VideoError> {
        if let Some((start_time, bytes, is_sync)) = self.held.take() {
            let sample = mp4::Mp4Sample {
                start_time,
                duration,
                rendering_offset: 0,
                is_sync,
                bytes: bytes.into(),
            };
            self.writer
                .write_sample(1, &sample)
                .map_err(|e| mp4_error(&self.path, e))?;
            self.last_duration = duration;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<(), VideoError> {
        self.write_held(self.last_duration)?;
        self.writer
            .write_end()
            .map_err(|e| mp4_error(&self.path, e))?;
        use std::io::Write;
        let mut file = self.writer.into_writer();
        file.flush().map_err(|e| mp4_error(&self.path, e))
    }
}

/// An access unit as an MP4 sample, with its parameter sets apart (they go in the track's `avcC`).
struct AvccSample {
    bytes: Vec<u8>,
    /// Holds an IDR slice.
    sync: bool,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

/// An Annex B access unit as an MP4 sample (4-byte lengths).
fn avcc_sample(annexb: &[u8]) -> AvccSample {
    let mut out = Vec::with_capacity(annexb.len());
    let (mut sps, mut pps, mut sync) = (None, None, false);
    for nal in crate::h264::nal_units(annexb) {
        match nal.first().map(|b| b & 0x1f) {
            Some(7) => sps = Some(nal.to_vec()),
            Some(8) => pps = Some(nal.to_vec()),
            Some(kind) => {
                sync |= kind == 5;
                out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                out.extend_from_slice(nal);
            }
            None => {}
        }
    }
    AvccSample {
        bytes: out,
        sync,
        sps,
        pps,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::source::{FrameSource, Mp4Source};

    const BOX: vision::geometry::Rect = vision::geometry::Rect {
        left: 20.0,
        top: 20.0,
        right: 80.0,
        bottom: 90.0,
    };

    fn picture(i: u32, w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([((x + 8 * i) % 256) as u8, (y % 256) as u8, 100])
        })
    }

    #[test]
    fn an_annotated_mp4_reads_back_frame_for_frame_with_its_timing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.mp4");
        let mut out = AnnotatedOutput::create(&path).unwrap();
        // Odd sides are cropped to even; one frame arrives late (a dropped frame's gap).
        let times: Vec<u64> = (0..70)
            .map(|i| i * 40 + if i >= 50 { 400 } else { 0 })
            .collect();
        for (i, t) in times.iter().enumerate() {
            let mut p = picture(i as u32, 161, 121);
            draw_tracks(&mut p, &[(1, BOX)]);
            out.push(&p, i as u64, *t).unwrap();
        }
        out.finish().unwrap();
        let mut back = Mp4Source::open(&path, &Default::default()).unwrap();
        let mut got = Vec::new();
        while let Some(f) = back.next_frame() {
            let f = f.unwrap();
            assert_eq!(f.image.dimensions(), (160, 120));
            got.push((f.time_ms, f.image));
        }
        assert_eq!(got.len(), 70);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), times);
        for (i, (_, image)) in got.iter().enumerate() {
            let mut want = picture(i as u32, 161, 121);
            draw_tracks(&mut want, &[(1, BOX)]);
            let want = image::imageops::crop_imm(&want, 0, 0, 160, 120).to_image();
            let diff: f64 = image
                .as_raw()
                .iter()
                .zip(want.as_raw())
                .map(|(a, b)| a.abs_diff(*b) as f64)
                .sum::<f64>()
                / want.as_raw().len() as f64;
            assert!(diff < 4.0, "frame {i}: {diff}");
            // The box's edge is there, in the track's colour.
            let edge = image.get_pixel(50, 21);
            assert!(edge[1] > 120 && edge[0] < 140, "frame {i}: {edge:?}");
        }
    }

    #[test]
    fn a_frame_of_another_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Mp4Out::create(&dir.path().join("out.mp4")).unwrap();
        out.push(&picture(0, 64, 48), 0).unwrap();
        assert!(out.push(&picture(1, 32, 48), 40).is_err());
        assert!(out.push(&RgbImage::new(1, 1), 80).is_err());
    }

    #[test]
    fn a_path_without_mp4_is_a_directory_of_jpeg_frames() {
        let dir = tempfile::tempdir().unwrap();
        let frames = dir.path().join("frames");
        let mut out = AnnotatedOutput::create(&frames).unwrap();
        out.push(&picture(0, 64, 48), 7, 0).unwrap();
        out.finish().unwrap();
        assert!(frames.join("frame000007.jpg").is_file());
    }
}
