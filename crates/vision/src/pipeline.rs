//! The whole 1:1 path: image → faces (box, score, landmarks, quality hints) → embeddings →
//! comparison. Stages are the dlib-exact ones in the default pack.

use crate::chip::{extract_chips, face_chip_details};
use crate::error::VisionError;
use crate::geometry::{Point, Rect};
use crate::mmod::{DetectOptions, Detection};
use crate::models::{Detector, Landmarker, Models};
use crate::pack::{AlignmentSpec, Metric};
use image::RgbImage;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    /// Face box side in pixels.
    pub face_px: f64,
    /// Distance between the eye centres in pixels (ICAO asks for >= 90 in passport photos).
    pub eye_distance_px: f64,
    /// Variance of the Laplacian of the aligned grey chip: low values mean blur.
    pub sharpness: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Face {
    pub rect: Rect,
    pub score: f32,
    pub landmarks: Vec<Point>,
    pub quality: Quality,
    #[serde(skip)]
    pub chip: Option<RgbImage>,
    pub embedding: Vec<f32>,
}

pub struct Pipeline {
    pub models: Models,
    pub detect: DetectOptions,
}

fn sharpness(chip: &RgbImage) -> f64 {
    let (w, h) = (chip.width() as usize, chip.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let g: Vec<f64> = chip
        .pixels()
        .map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0)
        .collect();
    let mut vals = Vec::with_capacity((w - 2) * (h - 2));
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let c = g[y * w + x];
            vals.push(
                g[y * w + x - 1] + g[y * w + x + 1] + g[(y - 1) * w + x] + g[(y + 1) * w + x]
                    - 4.0 * c,
            );
        }
    }
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64
}

impl Pipeline {
    pub fn new(models: Models) -> Self {
        Pipeline {
            models,
            detect: DetectOptions::default(),
        }
    }

    /// Which detector runs: "mmod", "yunet" or "hog" (for outputs and audit trails).
    pub fn detector_name(&self) -> &'static str {
        match &self.models.detector {
            Detector::Mmod(_) => "mmod",
            Detector::Yunet(_) => "yunet",
            Detector::Hog(_) => "hog",
        }
    }

    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>, VisionError> {
        match &self.models.detector {
            Detector::Mmod(d) => d.detect(img, &self.detect),
            Detector::Yunet(d) => d.detect(img, &self.detect),
            Detector::Hog(d) => d.detect(img, &self.detect),
        }
    }

    pub fn landmarks(&self, img: &RgbImage, rect: &Rect) -> Result<Vec<Point>, VisionError> {
        match &self.models.landmarks {
            Landmarker::Dlib(sp) => Ok(sp.predict(img, rect)),
            Landmarker::FromDetector => Err(VisionError::Pack(
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
            Landmarker::Dlib(sp) => Ok(sp.predict(img, &d.rect)),
            Landmarker::FromDetector => Ok(crate::chip::ARCFACE_TEMPLATE_112
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

    /// Every face in the image, best detection first, each with its embedding.
    pub fn faces(&self, img: &RgbImage) -> Result<Vec<Face>, VisionError> {
        let dets = self.detect(img)?;
        self.faces_from_detections(img, &dets)
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
            let eye = |a: usize, b: usize| Point {
                x: (lm[a].x + lm[b].x) / 2.0,
                y: (lm[a].y + lm[b].y) / 2.0,
            };
            // dlib's 5 points are eye corners (two per eye); ArcFace-style points are eye centres.
            let (r, l) = match self.models.manifest.embedder.alignment {
                AlignmentSpec::Dlib5 { .. } => (eye(0, 1), eye(2, 3)),
                AlignmentSpec::Arcface => (lm[0], lm[1]),
            };
            let quality = Quality {
                face_px: d.rect.width(),
                eye_distance_px: ((r.x - l.x).powi(2) + (r.y - l.y).powi(2)).sqrt(),
                sharpness: sharpness(&chip),
            };
            chips.push(chip.clone());
            faces.push(Face {
                rect: d.rect,
                score: d.score,
                landmarks: lm,
                quality,
                chip: Some(chip),
                embedding: Vec::new(),
            });
        }
        for (f, e) in faces.iter_mut().zip(self.models.embedder.embed(&chips)?) {
            f.embedding = e;
        }
        Ok(faces)
    }

    /// Embeddings of already aligned chips (of the pack's chip size).
    pub fn embed_aligned(&self, chips: &[RgbImage]) -> Result<Vec<Vec<f32>>, VisionError> {
        self.models.embedder.embed(chips)
    }

    pub fn metric(&self) -> Metric {
        self.models.manifest.embedder.metric
    }
}

/// Score between two embeddings under the pack's metric.
pub fn compare(metric: Metric, a: &[f32], b: &[f32]) -> f64 {
    match metric {
        Metric::Euclidean => a
            .iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt(),
        Metric::Cosine => {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            if na == 0.0 || nb == 0.0 {
                0.0
            } else {
                dot / (na * nb)
            }
        }
    }
}

/// Whether a score is a match at `threshold` under the metric's direction.
pub fn is_match(metric: Metric, score: f64, threshold: f64) -> bool {
    match metric {
        Metric::Euclidean => score <= threshold,
        Metric::Cosine => score >= threshold,
    }
}
