//! The whole 1:1 path: image → faces (box, score, landmarks, quality hints) → embeddings →
//! comparison. Stages are the dlib-exact ones in the default pack.

use crate::chip::{extract_chips, face_chip_details};
use crate::detect::{DetectOptions, Detection};
use crate::error::VisionError;
use crate::geometry::{Point, Rect};
use crate::liveness::{PadOutcome, PresentationAttackDetector};
use crate::models::Models;
use crate::pack::{AlignmentSpec, Metric};
pub use crate::quality::Quality;
use image::RgbImage;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Face {
    pub rect: Rect,
    pub score: f32,
    pub landmarks: Vec<Point>,
    pub quality: Quality,
    #[serde(skip)]
    pub chip: Option<RgbImage>,
    pub embedding: Vec<f32>,
    /// The PAD stage's outcome, when it ran on this face ([`Pipeline::assess_liveness`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness: Option<PadOutcome>,
}

/// Frames above this many pixels are followed by a trim of the heap (a 640x480 gate frame, or a
/// 1080p camera frame, is not: the trim costs about a millisecond).
pub const LARGE_FRAME_PIXELS: u64 = 4_000_000;

pub struct Pipeline {
    pub models: Models,
    pub detect: DetectOptions,
    /// The optional presentation attack detection stage (a PAD pack), when loaded.
    pub liveness: Option<Box<dyn PresentationAttackDetector>>,
}

impl Pipeline {
    pub fn new(models: Models) -> Self {
        Pipeline {
            models,
            detect: DetectOptions::default(),
            liveness: None,
        }
    }

    /// Adds the PAD stage.
    pub fn with_liveness(mut self, pad: Box<dyn PresentationAttackDetector>) -> Self {
        self.liveness = Some(pad);
        self
    }

    /// Runs the PAD stage on `faces` found in `img` and stores each outcome in its face. Only
    /// live captures are assessed — never a reference photo (a passport photo *is* a print), so
    /// this is a call of its own, not part of [`Pipeline::faces`]. Without a PAD stage loaded
    /// this refuses, so a caller that asked for liveness never gets an unchecked face.
    pub fn assess_liveness(&self, img: &RgbImage, faces: &mut [Face]) -> Result<(), VisionError> {
        let Some(pad) = &self.liveness else {
            return Err(VisionError::Pack(
                "liveness was asked for but no PAD pack is loaded".into(),
            ));
        };
        let rects: Vec<Rect> = faces.iter().map(|f| f.rect).collect();
        for (f, o) in faces.iter_mut().zip(pad.assess(img, &rects)?) {
            f.liveness = Some(o);
        }
        Ok(())
    }

    /// Which detector runs: "mmod", "yunet" or "hog" (for outputs and audit trails).
    pub fn detector_name(&self) -> &'static str {
        self.models.detector.name()
    }

    /// Faces in `img`, best first. A frame with more pixels (after upsampling) than the detector's
    /// memory budget (`Detector::max_working_pixels`) is first brought down to that budget by
    /// area averaging, and the boxes mapped back: a 40 MP frame never needs its native resolution
    /// to find faces of a bounded size, and its memory stays bounded whatever the input. Frames
    /// within the budget are searched as they are (the boxes on them are unchanged).
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>, VisionError> {
        let Some(scale) = self.detection_scale(img.width(), img.height()) else {
            return self.models.detector.detect(img, &self.detect);
        };
        let (w, h) = (img.width() as f64, img.height() as f64);
        let (sw, sh) = (
            ((w * scale).floor() as u32).max(1),
            ((h * scale).floor() as u32).max(1),
        );
        let small = image::imageops::thumbnail(img, sw, sh);
        // The frame's buffers (decode, detector) are freed when this call's caller is done with
        // the image; the trim below returns what detection freed, `faces` returns the rest.
        let (fx, fy) = (w / sw as f64, h / sh as f64);
        let mut opts = self.detect;
        opts.min_face = opts.min_face.map(|v| v / fx);
        opts.max_face = opts.max_face.map(|v| v / fx);
        let mut dets = self.models.detector.detect(&small, &opts)?;
        for d in &mut dets {
            d.rect = Rect {
                left: d.rect.left * fx,
                top: d.rect.top * fy,
                right: d.rect.right * fx,
                bottom: d.rect.bottom * fy,
            };
            if let Some(lm) = d.landmarks.as_mut() {
                for p in lm.iter_mut() {
                    p.x *= fx;
                    p.y *= fy;
                }
            }
        }
        Ok(dets)
    }

    /// The factor a `w`×`h` frame is brought down by before detection (`None`: searched as it
    /// is). Callers report it: faces smaller than the detector's smallest window divided by this
    /// factor are not searched.
    pub fn detection_scale(&self, w: u32, h: u32) -> Option<f64> {
        let upsampled = w as f64 * h as f64 * 4f64.powi(self.detect.upsample as i32);
        let budget = self.models.detector.max_working_pixels() as f64;
        (upsampled > budget).then(|| (budget / upsampled).sqrt())
    }

    /// A warning for the answer when a frame was brought down before detection.
    pub fn detection_warning(&self, w: u32, h: u32) -> Option<String> {
        self.detection_scale(w, h).map(|s| {
            format!(
                "the {w}x{h} frame was searched at {:.0}% of its size (memory budget of the {} detector): faces under about {:.0} px were not searched",
                s * 100.0,
                self.detector_name(),
                self.models.detector.smallest_face_px() / s / 2f64.powi(self.detect.upsample as i32)
            )
        })
    }

    pub fn landmarks(&self, img: &RgbImage, rect: &Rect) -> Result<Vec<Point>, VisionError> {
        match &self.models.landmarks {
            Some(lm) => Ok(lm.landmarks(img, rect)),
            None => Err(VisionError::Pack(
                "this pack's detector gives no landmarks".into(),
            )),
        }
    }

    /// Landmarks of a detection: the detector's own when it gives them, else the pack's
    /// landmark model; a pack with neither (a box from elsewhere, e.g. an evaluation fallback)
    /// places the alignment template inside the box.
    pub fn landmarks_for(&self, img: &RgbImage, d: &Detection) -> Result<Vec<Point>, VisionError> {
        if let Some(lm) = d.landmarks {
            return Ok(lm.to_vec());
        }
        match &self.models.landmarks {
            Some(lm) => Ok(lm.landmarks(img, &d.rect)),
            None => Ok(crate::chip::ARCFACE_TEMPLATE_112
                .iter()
                .map(|p| Point {
                    x: d.rect.left + p[0] / 112.0 * d.rect.width(),
                    y: d.rect.top + p[1] / 112.0 * d.rect.height(),
                })
                .collect()),
        }
    }

    pub fn chip(&self, img: &RgbImage, landmarks: &[Point]) -> RgbImage {
        let size = self.models.manifest.embedder.input.size;
        let padding = match self.models.manifest.embedder.alignment {
            AlignmentSpec::Dlib5 { padding } => padding,
            AlignmentSpec::Arcface => return crate::chip::arcface_chip(img, landmarks, size),
        };
        // One call per face, as face_recognition does (dlib shares a pyramid within a call).
        extract_chips(img, &[face_chip_details(landmarks, size, padding)])
            .pop()
            .unwrap_or_default()
    }

    /// Every face in the image, best detection first, each with its embedding. After a frame
    /// over [`LARGE_FRAME_PIXELS`], freed memory goes back to the operating system
    /// (`memory::release_free_memory`): a server must not keep one large request's gigabytes.
    pub fn faces(&self, img: &RgbImage) -> Result<Vec<Face>, VisionError> {
        let dets = self.detect(img);
        let faces = dets.and_then(|d| self.faces_from_detections(img, &d));
        if img.width() as u64 * img.height() as u64 > LARGE_FRAME_PIXELS {
            crate::memory::release_free_memory();
        }
        faces
    }

    pub fn faces_from_detections(
        &self,
        img: &RgbImage,
        dets: &[Detection],
    ) -> Result<Vec<Face>, VisionError> {
        let mut faces = Vec::with_capacity(dets.len());
        let mut chips = Vec::with_capacity(dets.len());
        for d in dets {
            let lm = self.landmarks_for(img, d)?;
            let chip = self.chip(img, &lm);
            let quality = Quality::measure(
                &d.rect,
                &lm,
                &chip,
                &self.models.manifest.embedder.alignment,
                (img.width(), img.height()),
            );
            chips.push(chip.clone());
            faces.push(Face {
                rect: d.rect,
                score: d.score,
                landmarks: lm,
                quality,
                chip: Some(chip),
                embedding: Vec::new(),
                liveness: None,
            });
        }
        let areas: Vec<f64> = dets
            .iter()
            .map(|d| d.rect.width() * d.rect.height())
            .collect();
        for (f, e) in faces.iter_mut().zip(self.embed_chips(&chips)?) {
            f.embedding = e;
            f.quality.set_single_face(&areas);
        }
        Ok(faces)
    }

    /// Embeddings of already aligned chips (of the pack's chip size).
    pub fn embed_aligned(&self, chips: &[RgbImage]) -> Result<Vec<Vec<f32>>, VisionError> {
        self.embed_chips(chips)
    }

    /// The pack's templates of aligned chips: with `flip_average`, each the mean of the chip's
    /// embedding and its mirror image's (one batch of both), else the chip's own.
    fn embed_chips(&self, chips: &[RgbImage]) -> Result<Vec<Vec<f32>>, VisionError> {
        if !self.models.manifest.embedder.flip_average {
            return self.models.embedder.embed(chips);
        }
        let mut both: Vec<RgbImage> = chips.to_vec();
        both.extend(chips.iter().map(image::imageops::flip_horizontal));
        let mut all = self.models.embedder.embed(&both)?;
        let mirrored = all.split_off(chips.len());
        Ok(all
            .into_iter()
            .zip(mirrored)
            .map(|(a, b)| a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect())
            .collect())
    }

    pub fn metric(&self) -> Metric {
        self.models.manifest.embedder.metric
    }
}
