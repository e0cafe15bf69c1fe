//! YuNet-style ONNX face detector: one pass over the image (padded to a multiple of 32), anchors
//! at strides 8, 16 and 32, each giving a class score, an objectness score, a box and 5 landmarks
//! (right eye, left eye, nose tip, right and left mouth corners, in image terms left to right).
//! Decoding follows OpenCV's `FaceDetectorYN`: score = sqrt(cls · obj), box centre
//! (col + dx, row + dy)·stride, size exp(dw, dh)·stride, landmarks (col + lx, row + ly)·stride.

use crate::detect::{DetectOptions, Detection};
use crate::error::VisionError;
use crate::geometry::{Point, Rect};
use crate::runtime::session_from_bytes;
use image::RgbImage;
use std::sync::Mutex;

pub struct YunetDetector {
    session: Mutex<ort::session::Session>,
    score_threshold: f32,
    nms_iou: f32,
}

fn iou(a: &Rect, b: &Rect) -> f64 {
    let i = a.intersect(b).area();
    if i <= 0.0 {
        return 0.0;
    }
    i / (a.area() + b.area() - i)
}

impl YunetDetector {
    pub fn from_onnx(
        bytes: &[u8],
        score_threshold: f32,
        nms_iou: f32,
        threads: usize,
    ) -> Result<Self, VisionError> {
        Ok(YunetDetector {
            session: Mutex::new(session_from_bytes(bytes, threads)?),
            score_threshold,
            nms_iou,
        })
    }

    /// Faces with landmarks, best first. `opts.threshold` is added to the pack's score threshold;
    /// `min_face`/`max_face` filter by box side; `upsample` is not used (YuNet sees small faces).
    ///
    /// With `min_face` set, the image is first scaled down so the smallest wanted face is
    /// `DETECTOR_MIN_FACE` pixels: YuNet's cost is proportional to the pixels it sees, and an
    /// e-gate that knows its faces are ≥ 120 px need not pay for finding 10 px ones.
    pub fn detect(
        &self,
        img: &RgbImage,
        opts: &DetectOptions,
    ) -> Result<Vec<Detection>, VisionError> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err(VisionError::Empty);
        }
        let scale = opts
            .min_face
            .filter(|m| *m > 0.0)
            .map_or(1.0, |m| (DETECTOR_MIN_FACE / m).min(1.0));
        let (sw, sh) = (
            ((w as f64 * scale).round() as usize).max(1),
            ((h as f64 * scale).round() as usize).max(1),
        );
        // Detector pixels to image pixels, per axis (rounding makes them differ slightly).
        let (fx, fy) = (w as f64 / sw as f64, h as f64 / sh as f64);
        let (pw, ph) = (sw.div_ceil(32) * 32, sh.div_ceil(32) * 32);
        let plane = pw * ph;
        let mut data = vec![0f32; 3 * plane];
        // BGR, 0-255, no normalisation.
        if scale == 1.0 {
            for (x, y, p) in img.enumerate_pixels() {
                let i = y as usize * pw + x as usize;
                data[i] = p[2] as f32;
                data[plane + i] = p[1] as f32;
                data[2 * plane + i] = p[0] as f32;
            }
        } else {
            fill_scaled_bgr(img, sw, sh, pw, &mut data);
        }
        let t = ort::value::Tensor::from_array(([1usize, 3, ph, pw], data))?;
        let mut s = self
            .session
            .lock()
            .map_err(|_| VisionError::Runtime("session lock poisoned".into()))?;
        let out = s.run(ort::inputs![t])?;
        let threshold = self.score_threshold + opts.threshold;
        let mut cands: Vec<Detection> = Vec::new();
        for stride in [8usize, 16, 32] {
            let get = |name: &str| -> Result<Vec<f32>, VisionError> {
                let v = out.get(name).ok_or_else(|| {
                    VisionError::Runtime(format!("detector has no output {name}"))
                })?;
                Ok(v.try_extract_tensor::<f32>()?.1.to_vec())
            };
            let cls = get(&format!("cls_{stride}"))?;
            let obj = get(&format!("obj_{stride}"))?;
            let bbox = get(&format!("bbox_{stride}"))?;
            let kps = get(&format!("kps_{stride}"))?;
            let (cols, rows) = (pw / stride, ph / stride);
            let n = cols * rows;
            if cls.len() < n || obj.len() < n || bbox.len() < 4 * n || kps.len() < 10 * n {
                return Err(VisionError::Runtime(format!(
                    "detector outputs at stride {stride} are too short"
                )));
            }
            for idx in 0..n {
                let score = (cls[idx].clamp(0.0, 1.0) * obj[idx].clamp(0.0, 1.0)).sqrt();
                if score < threshold {
                    continue;
                }
                let (c, r, st) = ((idx % cols) as f64, (idx / cols) as f64, stride as f64);
                let b = &bbox[4 * idx..4 * idx + 4];
                let (sx, sy) = (st * fx, st * fy);
                let (cx, cy) = ((c + b[0] as f64) * sx, (r + b[1] as f64) * sy);
                let (bw, bh) = ((b[2] as f64).exp() * sx, (b[3] as f64).exp() * sy);
                let side = bw.max(bh);
                if opts.min_face.is_some_and(|m| side < m)
                    || opts.max_face.is_some_and(|m| side > m)
                {
                    continue;
                }
                let k = &kps[10 * idx..10 * idx + 10];
                let lm: [Point; 5] = std::array::from_fn(|j| Point {
                    x: (c + k[2 * j] as f64) * sx,
                    y: (r + k[2 * j + 1] as f64) * sy,
                });
                cands.push(Detection {
                    rect: Rect {
                        left: cx - bw / 2.0,
                        top: cy - bh / 2.0,
                        right: cx + bw / 2.0 - 1.0,
                        bottom: cy + bh / 2.0 - 1.0,
                    },
                    score,
                    landmarks: Some(lm),
                });
            }
        }
        cands.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Detection> = Vec::new();
        for d in cands {
            if kept
                .iter()
                .all(|k| iou(&k.rect, &d.rect) <= self.nms_iou as f64)
            {
                kept.push(d);
            }
        }
        Ok(kept)
    }
}

/// The smallest wanted face is scaled to this side in the detector's input (see `detect`).
/// YuNet finds faces from about 10 px, but its landmarks drive the alignment, so the scaled face
/// keeps enough pixels for them (measured in README: LFW-dev accuracy unchanged at this size).
pub const DETECTOR_MIN_FACE: f64 = 64.0;

/// Bilinear resample of `img` to `sw`×`sh` into planar BGR rows of width `pw` (as OpenCV's
/// INTER_LINEAR, the resize YuNet is normally fed with: pixel centres aligned, no prefilter).
fn fill_scaled_bgr(img: &RgbImage, sw: usize, sh: usize, pw: usize, data: &mut [f32]) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = data.len() / 3;
    let (fx, fy) = (w as f64 / sw as f64, h as f64 / sh as f64);
    let raw = img.as_raw();
    let taps = |o: usize, f: f64, n: usize| {
        let s = ((o as f64 + 0.5) * f - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, (s - i0 as f64) as f32)
    };
    let xs: Vec<(usize, usize, f32)> = (0..sw).map(|x| taps(x, fx, w)).collect();
    for y in 0..sh {
        let (y0, y1, ay) = taps(y, fy, h);
        let (r0, r1) = (y0 * w * 3, y1 * w * 3);
        for (x, &(x0, x1, ax)) in xs.iter().enumerate() {
            let i = y * pw + x;
            for (c, dst) in [(2usize, 0usize), (1, 1), (0, 2)] {
                let p = |r: usize, xx: usize| raw[r + xx * 3 + c] as f32;
                let top = p(r0, x0) + (p(r0, x1) - p(r0, x0)) * ax;
                let bot = p(r1, x0) + (p(r1, x1) - p(r1, x0)) * ax;
                data[dst * plane + i] = top + (bot - top) * ay;
            }
        }
    }
}

impl crate::detect::Detector for YunetDetector {
    fn name(&self) -> &'static str {
        "yunet"
    }

    fn detect(
        &self,
        img: &RgbImage,
        opts: &crate::detect::DetectOptions,
    ) -> Result<Vec<crate::detect::Detection>, VisionError> {
        YunetDetector::detect(self, img, opts)
    }

    /// YuNet sees the frame once, at most at native size: 8 MP bounds its feature maps.
    fn max_working_pixels(&self) -> u64 {
        8_000_000
    }

    fn smallest_face_px(&self) -> f64 {
        DETECTOR_MIN_FACE
    }
}

#[cfg(test)]
mod scale_tests {
    use super::*;

    #[test]
    fn scaled_fill_keeps_flat_regions_and_orders_channels_bgr() {
        // Left half pure red, right half pure blue, 64x32 -> 32x16.
        let img = RgbImage::from_fn(64, 32, |x, _| {
            if x < 32 {
                image::Rgb([200, 0, 0])
            } else {
                image::Rgb([0, 0, 100])
            }
        });
        let (sw, sh, pw) = (32, 16, 32);
        let mut data = vec![0f32; 3 * pw * 16];
        fill_scaled_bgr(&img, sw, sh, pw, &mut data);
        let plane = pw * 16;
        // Far from the edge the colours are exact; channel 0 is blue, 2 is red.
        assert_eq!(data[5 * pw + 2], 0.0);
        assert_eq!(data[2 * plane + 5 * pw + 2], 200.0);
        assert_eq!(data[5 * pw + 30], 100.0);
        assert_eq!(data[2 * plane + 5 * pw + 30], 0.0);
        // At the boundary, a blend.
        let mid = data[2 * plane + 5 * pw + 15] + data[2 * plane + 5 * pw + 16];
        assert!(mid > 0.0 && mid < 400.0);
    }
}
