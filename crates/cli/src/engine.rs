//! Loading the pipeline for a command: fetch on first use, load the runtime and the pack.

use crate::cmd_models::ensure_installed;
use anyhow::{Context, Result};
use clap::Args;
use std::path::Path;
use vision::detect::DetectOptions;
use vision::models::DetectorChoice;
use vision::pipeline::Pipeline;

#[derive(Args, Clone, Debug)]
pub struct EngineArgs {
    /// Model pack to use.
    #[arg(long, default_value = "dlib")]
    pub pack: String,
    /// Inference threads per network (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Upsample the image this many times before detection (finds faces under 80 px).
    #[arg(long, default_value_t = 0)]
    pub upsample: u32,
    /// Smallest face side to look for, in pixels (searching fewer pyramid levels is faster).
    #[arg(long)]
    pub min_face: Option<f64>,
    /// Largest face side to look for, in pixels.
    #[arg(long)]
    pub max_face: Option<f64>,
    /// Detector score threshold (dlib's adjust_threshold).
    #[arg(long, default_value_t = 0.0)]
    pub det_threshold: f32,
    /// Detector to run: the pack's own (MMOD CNN for dlib), or dlib's HOG frontal face
    /// detector (faster, frontal faces only; carried by the dlib pack).
    #[arg(long, value_enum, default_value_t = DetectorArg::Pack)]
    pub detector: DetectorArg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DetectorArg {
    #[default]
    Pack,
    Hog,
}

impl From<DetectorArg> for DetectorChoice {
    fn from(d: DetectorArg) -> Self {
        match d {
            DetectorArg::Pack => DetectorChoice::Pack,
            DetectorArg::Hog => DetectorChoice::Hog,
        }
    }
}

impl EngineArgs {
    pub fn options(&self) -> app::engine::EngineOptions {
        app::engine::EngineOptions {
            pack: self.pack.clone(),
            threads: self.threads,
            detector: self.detector.into(),
            detect: DetectOptions {
                upsample: self.upsample,
                min_face: self.min_face,
                max_face: self.max_face,
                threshold: self.det_threshold,
            },
        }
    }
}

/// Fetch the default pack on first use, then load the pipeline (`app::engine`).
pub fn load(home: &Path, args: &EngineArgs) -> Result<Pipeline> {
    ensure_installed(home, None, false)?;
    app::engine::load_pipeline(home, &args.options())
        .with_context(|| format!("loading model pack {}", args.pack))
}
