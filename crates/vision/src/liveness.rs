//! Presentation attack detection (PAD, "liveness"): an optional pipeline stage that says, for a
//! face found in a frame, whether it is a live person or an artefact held to the camera (a print,
//! a screen). This module holds the stage's trait, the manifest of a PAD pack and the passive,
//! single-frame implementation: one or more small classifiers over crops around the face box
//! (MiniFASNet's design), their softmax outputs averaged, the live class's mean probability
//! compared with the pack's threshold.
//!
//! A PAD pack lives apart from the face packs (`$FACEGATE_HOME/pad/<name>/manifest.json`, its
//! `"stage"` field saying what it is): it works with any detector's box, has its own licence and
//! provenance, and is installed from the user's files (`facegate models install-pad`), so it has
//! its own life cycle. The pipeline runs it only when asked (`Pipeline::with_liveness`).

use crate::embed::{Embedder, InputSpec, OnnxEmbedder};
use crate::error::VisionError;
use crate::geometry::Rect;
use crate::pack::{FileRef, Manifest};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `stage` a PAD pack's manifest declares.
pub const STAGE: &str = "liveness";
/// The PAD pack used when none is named.
pub const DEFAULT_PAD_PACK: &str = "minifasnet";

/// Where PAD pack `name` is installed.
pub fn pad_dir(home: &Path, name: &str) -> PathBuf {
    home.join("pad").join(name)
}

/// How a model's input crop is cut from the frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CropSpec {
    /// The face box scaled by this factor about its centre, shifted (not shrunk) to stay inside
    /// the frame, and the factor lowered when the frame is too small for it — upstream's
    /// `CropImage._get_new_box`. `None`: the whole frame is resized.
    pub box_scale: Option<f64>,
}

/// One network of a PAD pack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PadModelSpec {
    pub name: String,
    pub model: FileRef,
    pub crop: CropSpec,
    /// Pixel → input value; `size` is the square crop side the network takes.
    pub input: InputSpec,
    /// Output logits per face (softmax is applied here).
    pub classes: usize,
    /// Which class means "live person".
    pub live_class: usize,
}

/// A PAD pack's manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PadManifest {
    /// Always [`STAGE`]: the optional pipeline stage this pack provides.
    pub stage: String,
    pub name: String,
    pub description: String,
    pub licence: String,
    pub source: String,
    pub models: Vec<PadModelSpec>,
    /// A face is judged live when the models' mean live-class probability is at least this.
    pub threshold: f32,
    /// Where the threshold comes from (and what it was not measured on).
    pub threshold_note: String,
}

impl PadManifest {
    pub fn load(dir: &Path) -> Result<Self, VisionError> {
        let p = dir.join("manifest.json");
        let text = std::fs::read_to_string(&p).map_err(|e| VisionError::io(&p, e))?;
        let m: PadManifest = serde_json::from_str(&text)
            .map_err(|e| VisionError::Pack(format!("{}: {e}", p.display())))?;
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<(), VisionError> {
        let bad = |msg: String| Err(VisionError::Pack(format!("PAD pack {}: {msg}", self.name)));
        if self.stage != STAGE {
            return bad(format!("stage is '{}', not '{STAGE}'", self.stage));
        }
        if self.models.is_empty() || self.models.len() > 8 {
            return bad(format!("{} models (1 to 8 allowed)", self.models.len()));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return bad(format!("threshold {} is not a probability", self.threshold));
        }
        for m in &self.models {
            if !(2..=16).contains(&m.classes) || m.live_class >= m.classes {
                return bad(format!(
                    "model {}: {} classes, live class {}",
                    m.name, m.classes, m.live_class
                ));
            }
            if !(16..=512).contains(&m.input.size) {
                return bad(format!("model {}: input side {}", m.name, m.input.size));
            }
            if let Some(s) = m.crop.box_scale {
                if !(s.is_finite() && (0.5..=10.0).contains(&s)) {
                    return bad(format!("model {}: box scale {s}", m.name));
                }
            }
        }
        Ok(())
    }
}

/// One network's view of one face.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PadModelScore {
    pub model: String,
    /// Softmax over the network's classes.
    pub probabilities: Vec<f32>,
    /// The live class's probability.
    pub live: f32,
}

/// The PAD stage's result for one face.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PadOutcome {
    pub pack: String,
    pub models: Vec<PadModelScore>,
    /// Mean live-class probability over the models: the fused score.
    pub score: f32,
    pub threshold: f32,
    /// `score >= threshold`.
    pub live: bool,
}

impl PadOutcome {
    /// The mean of several outcomes of one pack (a track's frames): each model's probabilities
    /// and live score averaged, the fused score the mean of the fused scores, judged against the
    /// same threshold. `None` for no outcomes or outcomes of different packs or model lists.
    pub fn mean(outcomes: &[PadOutcome]) -> Option<PadOutcome> {
        let first = outcomes.first()?;
        let same = outcomes.iter().all(|o| {
            o.pack == first.pack
                && o.models.len() == first.models.len()
                && o.models.iter().zip(&first.models).all(|(a, b)| {
                    a.model == b.model && a.probabilities.len() == b.probabilities.len()
                })
        });
        if !same {
            return None;
        }
        let n = outcomes.len() as f32;
        let models = first
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut probabilities = vec![0f32; m.probabilities.len()];
                let mut live = 0f32;
                for o in outcomes {
                    for (p, q) in probabilities.iter_mut().zip(&o.models[i].probabilities) {
                        *p += q / n;
                    }
                    live += o.models[i].live / n;
                }
                PadModelScore {
                    model: m.model.clone(),
                    probabilities,
                    live,
                }
            })
            .collect();
        let score = outcomes.iter().map(|o| o.score).sum::<f32>() / n;
        Some(PadOutcome {
            pack: first.pack.clone(),
            models,
            score,
            threshold: first.threshold,
            live: score >= first.threshold,
        })
    }
}

/// The multi-frame planar-motion cue's finding on a track (computed in `video::motion`; here
/// so a verdict can carry it).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MotionVerdict {
    /// The face moved out of plane and a homography explains it: a flat artefact.
    Planar,
    /// The face moved out of plane and a homography does not explain it: depth or expression.
    Relief,
    /// Too little out-of-plane motion, or evidence in between: the cue abstains.
    Inconclusive,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MotionCue {
    pub verdict: MotionVerdict,
    /// Pairs measured, and of them those that moved out of plane (`gain >= min_gain`).
    pub pairs: usize,
    pub moving_pairs: usize,
    /// Median `parallax / gain` over the moving pairs (null without any).
    pub ratio: Option<f64>,
    pub median_gain: Option<f64>,
    pub median_parallax: Option<f64>,
}

/// What a PAD stage needs of one face in one frame, cut out when the frame is at hand and
/// assessed later (a track's kept frames are assessed when the track is decided, and only the
/// frames are not kept). Zeroised when dropped.
pub struct PadCrops(pub Vec<RgbImage>);

impl Drop for PadCrops {
    fn drop(&mut self) {
        for c in self.0.drain(..) {
            zeroize::Zeroize::zeroize(&mut c.into_raw());
        }
    }
}

/// A presentation attack detector: faces (by box) in a frame in, one outcome each out.
pub trait PresentationAttackDetector: Send + Sync {
    /// The pack's name, for outputs and audit records.
    fn name(&self) -> &str;
    /// The pack's threshold on the fused live score.
    fn threshold(&self) -> f32;
    /// The inputs this detector needs for `face` in `img` (small: model-sized crops).
    fn crops(&self, img: &RgbImage, face: &Rect) -> Result<PadCrops, VisionError>;
    /// One outcome per face, from crops made by [`PresentationAttackDetector::crops`].
    fn assess_crops(&self, faces: &[PadCrops]) -> Result<Vec<PadOutcome>, VisionError>;
    fn assess(&self, img: &RgbImage, faces: &[Rect]) -> Result<Vec<PadOutcome>, VisionError> {
        let crops = faces
            .iter()
            .map(|f| self.crops(img, f))
            .collect::<Result<Vec<_>, _>>()?;
        self.assess_crops(&crops)
    }
}

/// Passive single-frame PAD: each model sees its own crop, softmax outputs are averaged.
pub struct PassivePad {
    pub manifest: PadManifest,
    nets: Vec<OnnxEmbedder>,
}

impl PassivePad {
    /// Loads the PAD pack in `dir`, checking every file against the manifest's sha256.
    pub fn load(dir: &Path, threads: usize) -> Result<Self, VisionError> {
        let manifest = PadManifest::load(dir)?;
        let mut nets = Vec::with_capacity(manifest.models.len());
        for m in &manifest.models {
            let bytes = Manifest::read_verified(dir, &m.model)?;
            nets.push(OnnxEmbedder::from_onnx(
                &bytes,
                m.input.clone(),
                m.classes,
                threads,
            )?);
        }
        Ok(PassivePad { manifest, nets })
    }
}

/// The crop `spec` asks for around `face`, resized to `size` x `size`.
pub fn model_crop(
    img: &RgbImage,
    face: &Rect,
    spec: &CropSpec,
    size: usize,
) -> Result<RgbImage, VisionError> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let region = match spec.box_scale {
        Some(scale) => scaled_box(w, h, &upstream_box(face)?, scale)?,
        None => [0, 0, w - 1, h - 1],
    };
    Ok(resize_bilinear(img, region, size as u32))
}

/// A face box as upstream's detector hands it on: integer `[x, y, w, h]` (Python's `int()`
/// truncation of the corner, and an inclusive width), which `scaled_box` takes.
pub fn upstream_box(face: &Rect) -> Result<[i64; 4], VisionError> {
    let ok = [face.left, face.top, face.right, face.bottom]
        .iter()
        .all(|v| v.is_finite() && v.abs() < 1e6);
    let (bw, bh) = (face.width() as i64, face.height() as i64);
    if !ok || bw < 1 || bh < 1 {
        return Err(VisionError::Invalid(format!(
            "face box {face:?} cannot be cropped"
        )));
    }
    Ok([face.left as i64, face.top as i64, bw, bh])
}

/// Upstream's `CropImage._get_new_box`: the box scaled about its centre (the scale lowered so the
/// result fits in the frame), moved back inside the frame, corners truncated to integers.
/// Returns inclusive `[x0, y0, x1, y1]`.
pub fn scaled_box(
    src_w: i64,
    src_h: i64,
    bbox: &[i64; 4],
    scale: f64,
) -> Result<[i64; 4], VisionError> {
    let [x, y, bw, bh] = bbox.map(|v| v as f64);
    if src_w < 2 || src_h < 2 || bw < 1.0 || bh < 1.0 {
        return Err(VisionError::Invalid(format!(
            "cannot crop box {bbox:?} from a {src_w}x{src_h} frame"
        )));
    }
    let (sw, sh) = (src_w as f64, src_h as f64);
    let scale = ((sh - 1.0) / bh).min(((sw - 1.0) / bw).min(scale));
    let (nw, nh) = (bw * scale, bh * scale);
    let (cx, cy) = (bw / 2.0 + x, bh / 2.0 + y);
    let (mut x0, mut y0) = (cx - nw / 2.0, cy - nh / 2.0);
    let (mut x1, mut y1) = (cx + nw / 2.0, cy + nh / 2.0);
    if x0 < 0.0 {
        x1 -= x0;
        x0 = 0.0;
    }
    if y0 < 0.0 {
        y1 -= y0;
        y0 = 0.0;
    }
    if x1 > sw - 1.0 {
        x0 -= x1 - sw + 1.0;
        x1 = sw - 1.0;
    }
    if y1 > sh - 1.0 {
        y0 -= y1 - sh + 1.0;
        y1 = sh - 1.0;
    }
    // Python's int() truncates towards zero; the clamps keep a box far outside the frame (which
    // upstream's slicing would wrap around) inside it.
    let t = |v: f64, hi: i64| (v.trunc() as i64).clamp(0, hi);
    Ok([
        t(x0, src_w - 1),
        t(y0, src_h - 1),
        t(x1, src_w - 1),
        t(y1, src_h - 1),
    ])
}

/// Bilinear resize of the inclusive region `[x0, y0, x1, y1]` of `img` to `size` x `size`, with
/// OpenCV's `INTER_LINEAR` sampling (pixel centres at +0.5, edge pixels repeated). OpenCV
/// computes in 11-bit fixed point; this computes in floating point and rounds, so values may
/// differ from OpenCV's by one level.
pub fn resize_bilinear(img: &RgbImage, region: [i64; 4], size: u32) -> RgbImage {
    let [x0, y0, x1, y1] = region;
    let (rw, rh) = ((x1 - x0 + 1).max(1) as f64, (y1 - y0 + 1).max(1) as f64);
    let n = size.max(1);
    let taps = |d: u32, len: f64, start: i64, limit: u32| {
        let f = ((d as f64 + 0.5) * len / n as f64 - 0.5).max(0.0);
        let i = f.floor();
        let frac = f - i;
        let a = (start + i as i64).clamp(0, limit as i64 - 1) as u32;
        let b = (start + i as i64 + 1)
            .min(start + len as i64 - 1)
            .clamp(0, limit as i64 - 1) as u32;
        (a, b, frac as f32)
    };
    let xs: Vec<_> = (0..n).map(|d| taps(d, rw, x0, img.width())).collect();
    let ys: Vec<_> = (0..n).map(|d| taps(d, rh, y0, img.height())).collect();
    RgbImage::from_fn(n, n, |dx, dy| {
        let (xa, xb, fx) = xs[dx as usize];
        let (ya, yb, fy) = ys[dy as usize];
        let p = |x, y| img.get_pixel(x, y).0;
        let (p00, p01, p10, p11) = (p(xa, ya), p(xb, ya), p(xa, yb), p(xb, yb));
        let mut out = [0u8; 3];
        for c in 0..3 {
            let top = p00[c] as f32 * (1.0 - fx) + p01[c] as f32 * fx;
            let bottom = p10[c] as f32 * (1.0 - fx) + p11[c] as f32 * fx;
            out[c] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
        }
        image::Rgb(out)
    })
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

impl PresentationAttackDetector for PassivePad {
    fn name(&self) -> &str {
        &self.manifest.name
    }

    fn threshold(&self) -> f32 {
        self.manifest.threshold
    }

    /// The crops each model sees, in manifest order.
    fn crops(&self, img: &RgbImage, face: &Rect) -> Result<PadCrops, VisionError> {
        Ok(PadCrops(
            self.manifest
                .models
                .iter()
                .map(|m| model_crop(img, face, &m.crop, m.input.size))
                .collect::<Result<_, _>>()?,
        ))
    }

    fn assess_crops(&self, faces: &[PadCrops]) -> Result<Vec<PadOutcome>, VisionError> {
        let mut per_model: Vec<Vec<PadModelScore>> = vec![Vec::new(); faces.len()];
        for (k, (spec, net)) in self.manifest.models.iter().zip(&self.nets).enumerate() {
            let crops = faces
                .iter()
                .map(|f| {
                    f.0.get(k).cloned().ok_or_else(|| {
                        VisionError::Invalid(format!("no crop for PAD model {}", spec.name))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let logits = net.embed(&crops);
            for c in crops {
                zeroize::Zeroize::zeroize(&mut c.into_raw());
            }
            for (scores, logits) in per_model.iter_mut().zip(logits?) {
                if logits.iter().any(|v| !v.is_finite()) {
                    return Err(VisionError::Runtime(format!(
                        "PAD model {} gave a non-finite output",
                        spec.name
                    )));
                }
                let probabilities = softmax(&logits);
                scores.push(PadModelScore {
                    model: spec.name.clone(),
                    live: probabilities[spec.live_class],
                    probabilities,
                });
            }
        }
        let threshold = self.threshold();
        Ok(per_model
            .into_iter()
            .map(|models| {
                let score = models.iter().map(|m| m.live).sum::<f32>() / models.len() as f32;
                PadOutcome {
                    pack: self.manifest.name.clone(),
                    models,
                    score,
                    threshold,
                    live: score >= threshold,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_box_follows_upstream() {
        // Upstream's own crop boxes for its samples (golden.json): F1's RetinaFace box
        // [178, 136, 223, 225] at scale 2.7 in a 480x640 frame gives [0, 6, 479, 490].
        assert_eq!(
            scaled_box(480, 640, &[178, 136, 223, 225], 2.7).unwrap(),
            [0, 6, 479, 490]
        );
        assert_eq!(
            scaled_box(480, 640, &[120, 252, 252, 256], 4.0).unwrap(),
            [0, 136, 479, 623]
        );
        assert_eq!(
            scaled_box(480, 640, &[106, 147, 207, 213], 2.7).unwrap(),
            [0, 7, 479, 499]
        );
        // A small face in a large frame keeps the full scale and its centre.
        assert_eq!(
            scaled_box(1000, 1000, &[450, 450, 100, 100], 2.7).unwrap(),
            [365, 365, 635, 635]
        );
        // A box at the edge is shifted inside, not shrunk.
        assert_eq!(
            scaled_box(1000, 1000, &[0, 0, 100, 100], 2.7).unwrap(),
            [0, 0, 270, 270]
        );
        assert!(scaled_box(1, 1, &[0, 0, 1, 1], 2.7).is_err());
        assert!(scaled_box(100, 100, &[0, 0, 0, 10], 2.7).is_err());
    }

    #[test]
    fn resize_keeps_flat_regions_and_edges() {
        let img = RgbImage::from_fn(100, 60, |x, _| image::Rgb([(x * 2) as u8, 7, 200]));
        let out = resize_bilinear(&img, [10, 0, 89, 59], 20);
        assert_eq!(out.dimensions(), (20, 20));
        // A linear ramp stays linear: output x samples source x0 + (dx + 0.5) * 4 - 0.5.
        for dx in 0..20 {
            let want = 2.0 * (10.0 + (dx as f64 + 0.5) * 4.0 - 0.5);
            assert!((out.get_pixel(dx, 5)[0] as f64 - want).abs() <= 0.5, "{dx}");
            assert_eq!(out.get_pixel(dx, 5)[1], 7);
        }
        // Upscaling a single pixel repeats it.
        let one = resize_bilinear(&img, [3, 3, 3, 3], 4);
        assert!(one.pixels().all(|p| p.0 == [6, 7, 200]));
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 0.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[0] > 0.999);
    }
}
