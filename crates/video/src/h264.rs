//! An H.264 round trip for generated scenes: every frame encoded with openh264 at a camera's bit
//! rate and decoded again, so tracking and decisions are measured on the blocking, ringing and
//! smearing a real camera's stream carries (ground truth is unchanged: compression moves no
//! face). The encoder is openh264's, the same library that decodes MP4 sources.

use crate::error::VideoError;
use crate::source::decode_unit;
use image::RgbImage;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, RateControlMode};
use openh264::formats::{RgbSliceU8, YUVBuffer};

pub struct H264RoundTrip {
    encoder: Encoder,
    decoder: openh264::decoder::Decoder,
    unit: Vec<u8>,
    /// What a viewer of the stream shows now: the last decoded picture.
    shown: Option<RgbImage>,
    bytes: u64,
    frames: u64,
    skipped: u64,
    /// What decoding the last frame took, ms (the receiving side's share of the round trip).
    decode_ms: f64,
}

impl H264RoundTrip {
    /// An encoder held to `bits_per_second` at `frames_per_second`, and a decoder. As a camera's
    /// encoder does, it skips frames when the budget runs out (openh264 controls the bit rate
    /// only with skipping on); a viewer then keeps showing the last picture.
    pub fn new(bits_per_second: u32, frames_per_second: f32) -> Result<Self, VideoError> {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bits_per_second))
            .max_frame_rate(FrameRate::from_hz(frames_per_second))
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(true);
        let encoder = Encoder::with_api_config(openh264::OpenH264API::from_source(), config)
            .map_err(|e| VideoError::Decoder(format!("H.264 encoder: {e}")))?;
        let decoder = crate::source::h264_decoder()?;
        Ok(H264RoundTrip {
            encoder,
            decoder,
            unit: Vec::new(),
            shown: None,
            bytes: 0,
            frames: 0,
            skipped: 0,
            decode_ms: 0.0,
        })
    }

    /// The frame as a viewer of the stream sees it. Even width and height (4:2:0).
    pub fn pass(&mut self, frame: &RgbImage) -> Result<RgbImage, VideoError> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        if w % 2 != 0 || h % 2 != 0 {
            return Err(VideoError::Decoder(format!(
                "a {w}x{h} frame: H.264 4:2:0 needs even sides"
            )));
        }
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(frame.as_raw(), (w, h)));
        self.unit.clear();
        self.encoder
            .encode(&yuv)
            .map_err(|e| VideoError::Decoder(format!("H.264 encoder: {e}")))?
            .write_vec(&mut self.unit);
        self.bytes += self.unit.len() as u64;
        self.frames += 1;
        let clock = std::time::Instant::now();
        let decoded = if self.unit.is_empty() {
            None
        } else {
            decode_unit(&mut self.decoder, &self.unit, (w * h) as u64)?
        };
        self.decode_ms = clock.elapsed().as_secs_f64() * 1e3;
        match decoded {
            Some(picture) => self.shown = Some(picture),
            None => self.skipped += 1,
        }
        self.shown
            .clone()
            .ok_or_else(|| VideoError::Decoder("the stream's first frame was skipped".into()))
    }

    /// What decoding the last frame passed took, ms.
    pub fn last_decode_ms(&self) -> f64 {
        self.decode_ms
    }

    /// Frames the encoder skipped to keep its bit rate (the viewer saw the previous one).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The bit rate the encoder delivered so far at `frames_per_second`.
    pub fn delivered_bits_per_second(&self, frames_per_second: f64) -> f64 {
        8.0 * self.bytes as f64 * frames_per_second / self.frames.max(1) as f64
    }
}

/// The NAL units of an Annex B stream (3- or 4-byte start codes).
pub fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let mut end = starts.get(k + 1).map_or(data.len(), |n| n - 3);
            // Trailing zeros belong to the next unit's 4-byte start code.
            while end > s && data[end - 1] == 0 {
                end -= 1;
            }
            &data[s..end]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A moving texture with a sharp square: detail for the encoder to spend bits on or lose.
    fn frame(k: u32) -> RgbImage {
        RgbImage::from_fn(160, 120, |x, y| {
            let inside = (40 + k..80 + k).contains(&x) && (30..70).contains(&y);
            if inside {
                image::Rgb([230, 40, 40])
            } else {
                // Grey stripes 3 px wide across a vertical ramp (luma detail: 4:2:0 keeps it).
                let t = (((x + k) / 3 % 2) * 120 + y) as u8;
                image::Rgb([t, t, t])
            }
        })
    }

    fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
        let mse = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum::<f64>()
            / a.as_raw().len() as f64;
        10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
    }

    #[test]
    fn frames_come_back_the_same_size_close_but_not_equal_and_fewer_bits_cost_quality() {
        let mut rich = H264RoundTrip::new(2_000_000, 30.0).unwrap();
        let mut poor = H264RoundTrip::new(30_000, 30.0).unwrap();
        let (mut q_rich, mut q_poor) = (0.0, 0.0);
        for k in 0..30 {
            let f = frame(k);
            let (a, b) = (rich.pass(&f).unwrap(), poor.pass(&f).unwrap());
            assert_eq!(a.dimensions(), f.dimensions());
            assert_ne!(a.as_raw(), f.as_raw(), "lossy");
            q_rich += psnr(&f, &a) / 30.0;
            q_poor += psnr(&f, &b) / 30.0;
        }
        // Measured: 40.9 dB at 2 Mbit/s (160 kbit/s used, nothing skipped), 25.6 dB at 30 kbit/s
        // (6 of 30 frames skipped).
        assert!(q_rich > 30.0, "{q_rich} dB");
        assert_eq!(rich.skipped(), 0);
        assert!(q_poor < q_rich - 3.0, "{q_poor} vs {q_rich} dB");
        assert!(poor.delivered_bits_per_second(30.0) < rich.delivered_bits_per_second(30.0));
    }

    #[test]
    fn odd_sides_are_refused() {
        let mut rt = H264RoundTrip::new(500_000, 30.0).unwrap();
        assert!(rt.pass(&RgbImage::new(161, 120)).is_err());
    }
}
