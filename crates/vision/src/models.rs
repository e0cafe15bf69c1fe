//! Loading an installed model pack into ready-to-run stages.

use crate::detect::Detector;
use crate::dlib::hog::HogDetector;
use crate::dlib::shape_predictor::ShapePredictor;
use crate::embed::{Embedder, OnnxEmbedder};
use crate::error::VisionError;
use crate::landmarks::Landmarker;
use crate::mmod::MmodDetector;
use crate::pack::{DetectorSpec, LandmarkSpec, Manifest};
use crate::yunet::YunetDetector;
use std::path::Path;

/// Which of a pack's detectors to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DetectorChoice {
    /// The pack's own detector (`detector` in its manifest).
    #[default]
    Pack,
    /// dlib's HOG frontal face detector, when the pack carries it (the dlib pack does).
    Hog,
}

pub struct Models {
    pub manifest: Manifest,
    pub detector: Box<dyn Detector>,
    /// The pack's landmark model; `None` when its detector gives the points (YuNet).
    pub landmarks: Option<Box<dyn Landmarker>>,
    pub embedder: Box<dyn Embedder>,
}

impl Models {
    /// Loads the pack in `dir`, checking every file against the manifest's sha256.
    /// `threads` is the intra-op thread count per network (0 = ONNX Runtime's default).
    pub fn load(dir: &Path, threads: usize) -> Result<Self, VisionError> {
        Self::load_with(dir, threads, DetectorChoice::Pack)
    }

    pub fn load_with(
        dir: &Path,
        threads: usize,
        choice: DetectorChoice,
    ) -> Result<Self, VisionError> {
        let manifest = Manifest::load(dir)?;
        let detector = match choice {
            DetectorChoice::Pack => Self::pack_detector(dir, &manifest.detector, threads)?,
            DetectorChoice::Hog => {
                let hog = manifest.hog_detector.as_ref().ok_or_else(|| {
                    VisionError::Pack(format!(
                        "pack {} has no HOG detector (the dlib pack gets it from `facegate models fetch --force`)",
                        manifest.name
                    ))
                })?;
                Box::new(HogDetector::parse(&Manifest::read_verified(
                    dir, &hog.model,
                )?)?)
            }
        };
        let landmarks = match &manifest.landmarks {
            LandmarkSpec::DlibShapePredictor { model } => Some(Box::new(ShapePredictor::parse(
                &Manifest::read_verified(dir, model)?,
            )?)
                as Box<dyn Landmarker>),
            LandmarkSpec::FromDetector => None,
        };
        let e = &manifest.embedder;
        let embedder = OnnxEmbedder::from_onnx(
            &Manifest::read_verified(dir, &e.model)?,
            e.input.clone(),
            e.embedding_size,
            threads,
        )?;
        Ok(Models {
            manifest,
            detector,
            landmarks,
            embedder: Box::new(embedder),
        })
    }

    fn pack_detector(
        dir: &Path,
        spec: &DetectorSpec,
        threads: usize,
    ) -> Result<Box<dyn Detector>, VisionError> {
        Ok(match spec {
            DetectorSpec::DlibMmod {
                model,
                mean,
                window,
                nms_iou,
                nms_covered,
                pyramid_padding,
                pyramid_outer_padding,
            } => {
                let bytes = Manifest::read_verified(dir, model)?;
                Box::new(MmodDetector::from_onnx(
                    &bytes,
                    *mean,
                    *window,
                    (*nms_iou, *nms_covered),
                    *pyramid_padding,
                    *pyramid_outer_padding,
                    threads,
                )?)
            }
            DetectorSpec::Yunet {
                model,
                score_threshold,
                nms_iou,
            } => Box::new(YunetDetector::from_onnx(
                &Manifest::read_verified(dir, model)?,
                *score_threshold,
                *nms_iou,
                threads,
            )?),
        })
    }
}
