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
    /// Run presentation attack detection (liveness) on live captures, with the PAD pack
    /// --pad-pack (install it first with `facegate models install-pad`).
    #[arg(long)]
    pub liveness: bool,
    /// The PAD pack --liveness loads.
    #[arg(long, default_value = vision::liveness::DEFAULT_PAD_PACK)]
    pub pad_pack: String,
    /// With --liveness: `block` (a face judged an attack gets no match) or `report` (the
    /// outcome is shown and audited, the decision is the comparison's).
    #[arg(long, default_value = "block")]
    pub pad_policy: app::liveness::PadPolicy,
    /// With --liveness: threshold on the fused live score (default: the PAD pack's).
    #[arg(long)]
    pub pad_threshold: Option<f32>,
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
            liveness: self.liveness.then(|| self.pad_pack.clone()),
        }
    }
}

/// Fetch the default pack on first use, then load the pipeline (`app::engine`).
pub fn load(home: &Path, args: &EngineArgs) -> Result<Pipeline> {
    ensure_installed(home, None, false)?;
    app::engine::load_pipeline(home, &args.options())
        .with_context(|| format!("loading model pack {}", args.pack))
}
