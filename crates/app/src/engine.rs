//! Loading the pipeline a command or a server slot runs: the installed runtime, the pack, the
//! detector choice and the detection options.

use crate::{AppError, Result};
use std::path::Path;
use vision::detect::DetectOptions;
use vision::models::{DetectorChoice, Models};
use vision::pipeline::Pipeline;

/// How to build a pipeline (the CLI's engine flags and the server's configuration both map here).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Installed model pack to use.
    pub pack: String,
    /// Inference threads per network (0 = ONNX Runtime's default: all cores).
    pub threads: usize,
    pub detector: DetectorChoice,
    pub detect: DetectOptions,
    /// The PAD pack to load as the liveness stage (installed under `home/pad/`), if any.
    pub liveness: Option<String>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            pack: "dlib".into(),
            threads: 0,
            detector: DetectorChoice::Pack,
            detect: DetectOptions::default(),
            liveness: None,
        }
    }
}

/// A pipeline on the pack installed under `home`. Installing is the caller's business (the CLI
/// fetches on first use); this only loads, verifying every file against the manifest.
pub fn load_pipeline(home: &Path, opts: &EngineOptions) -> Result<Pipeline> {
    let rt = vision::pack::installed_runtime(home).ok_or_else(|| {
        AppError::Refused(format!(
            "ONNX Runtime is not installed under {} (run `facegate models fetch`)",
            home.display()
        ))
    })?;
    vision::runtime::ensure_runtime(Some(&rt))?;
    let dir = home.join("packs").join(&opts.pack);
    let models = Models::load_with(&dir, opts.threads, opts.detector)?;
    let mut p = Pipeline::new(models);
    p.detect = opts.detect;
    if let Some(name) = &opts.liveness {
        let dir = vision::liveness::pad_dir(home, name);
        if !dir.join("manifest.json").is_file() {
            return Err(AppError::Refused(format!(
                "PAD pack '{name}' is not installed under {} (install it with \
                 `facegate models install-pad --from DIR`)",
                home.display()
            )));
        }
        let pad = vision::liveness::PassivePad::load(&dir, opts.threads)?;
        p = p.with_liveness(Box::new(pad));
    }
    Ok(p)
}
