//! YuNet-style ONNX face detector: one pass over the image (padded to a multiple of 32), anchors
//! at strides 8, 16 and 32, each giving a class score, an objectness score, a box and 5 landmarks
//! (right eye, left eye, nose tip, right and left mouth corners, in image terms left to right).
//! Decoding follows OpenCV's `FaceDetectorYN`: score = sqrt(cls · obj), box centre
//! (col + dx, row + dy)·stride, size exp(dw, dh)·stride, landmarks (col + lx, row + ly)·stride.

use crate::error::VisionError;
use crate::geometry::{Point, Rect};
use crate::mmod::{DetectOptions, Detection};
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
    pub fn detect(
        &self,
        img: &RgbImage,
        opts: &DetectOptions,
    ) -> Result<Vec<Detection>, VisionError> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err(VisionError::Empty);
        }
        let (pw, ph) = (w.div_ceil(32) * 32, h.div_ceil(32) * 32);
        let plane = pw * ph;
        let mut data = vec![0f32; 3 * plane];
        for (x, y, p) in img.enumerate_pixels() {
            let i = y as usize * pw + x as usize;
            // BGR, 0-255, no normalisation.
            data[i] = p[2] as f32;
            data[plane + i] = p[1] as f32;
            data[2 * plane + i] = p[0] as f32;
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
                let (cx, cy) = ((c + b[0] as f64) * st, (r + b[1] as f64) * st);
                let (bw, bh) = ((b[2] as f64).exp() * st, (b[3] as f64).exp() * st);
                let side = bw.max(bh);
                if opts.min_face.is_some_and(|m| side < m)
                    || opts.max_face.is_some_and(|m| side > m)
                {
                    continue;
                }
                let k = &kps[10 * idx..10 * idx + 10];
                let lm: [Point; 5] = std::array::from_fn(|j| Point {
                    x: (c + k[2 * j] as f64) * st,
                    y: (r + k[2 * j + 1] as f64) * st,
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
