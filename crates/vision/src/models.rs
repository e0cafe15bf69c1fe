//! Loading an installed model pack into ready-to-run stages.

use crate::dlib::shape_predictor::ShapePredictor;
use crate::embed::Embedder;
use crate::error::VisionError;
use crate::mmod::MmodDetector;
use crate::pack::{DetectorSpec, LandmarkSpec, Manifest};
use crate::yunet::YunetDetector;
use std::path::Path;

pub enum Detector {
    Mmod(MmodDetector),
    Yunet(YunetDetector),
}

pub enum Landmarker {
    Dlib(ShapePredictor),
    FromDetector,
}

pub struct Models {
    pub manifest: Manifest,
    pub detector: Detector,
    pub landmarks: Landmarker,
    pub embedder: Embedder,
}

impl Models {
    /// Loads the pack in `dir`, checking every file against the manifest's sha256.
    /// `threads` is the intra-op thread count per network (0 = ONNX Runtime's default).
    pub fn load(dir: &Path, threads: usize) -> Result<Self, VisionError> {
        let manifest = Manifest::load(dir)?;
        let detector = match &manifest.detector {
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
                Detector::Mmod(MmodDetector::from_onnx(
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
            } => Detector::Yunet(YunetDetector::from_onnx(
                &Manifest::read_verified(dir, model)?,
                *score_threshold,
                *nms_iou,
                threads,
            )?),
        };
        let landmarks = match &manifest.landmarks {
            LandmarkSpec::DlibShapePredictor { model } => Landmarker::Dlib(ShapePredictor::parse(
                &Manifest::read_verified(dir, model)?,
            )?),
            LandmarkSpec::FromDetector => Landmarker::FromDetector,
        };
        let e = &manifest.embedder;
        let embedder = Embedder::from_onnx(
            &Manifest::read_verified(dir, &e.model)?,
            e.input.clone(),
            e.embedding_size,
            threads,
        )?;
        Ok(Models {
            manifest,
            detector,
            landmarks,
            embedder,
        })
    }
}
