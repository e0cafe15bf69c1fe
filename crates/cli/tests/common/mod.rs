//! Shared by the binary's integration tests: where ../shared is, and skip-or-fail when it (or the
//! installed default pack) is missing: skipped locally, a failure in CI.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

use std::path::{Path, PathBuf};

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// ../shared if `rel` exists under it and the default pack is installed; else None (local) or a
/// panic (CI).
pub fn shared_with(rel: &str) -> Option<PathBuf> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let home = vision::pack::default_home();
    for need in [shared.join(rel), home.join("packs/dlib/manifest.json")] {
        if !need.exists() {
            assert!(!in_ci(), "missing {} (required in CI)", need.display());
            eprintln!("SKIP: missing {}", need.display());
            return None;
        }
    }
    Some(shared)
}

// Not every test binary that includes this module runs the binary this way.
#[allow(dead_code)]
/// Runs the `facegate` binary on data directory `data` with no master key from the environment:
/// (exit code, stdout, stderr).
pub fn facegate(data: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facegate"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("FACEGATE_MASTER_KEY")
        .env_remove("FACEGATE_MASTER_KEY_FILE")
        .env_remove("FACEGATE_DATA")
        .output()
        .expect("run facegate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[allow(dead_code)]
/// A facegate home of its own under `dir` (the installed face pack and runtime linked in), so the
/// PAD pack a test installs never touches the real one.
pub fn own_home(dir: &std::path::Path) -> String {
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    let real = vision::pack::default_home();
    for d in ["packs", "runtime"] {
        std::os::unix::fs::symlink(real.join(d), home.join(d)).unwrap();
    }
    home.to_str().unwrap().to_string()
}

#[allow(dead_code)]
/// A home of its own under `dir` (see [`own_home`]) with the MiniFASNet PAD pack installed from
/// ../shared; None (local) or a panic (CI) when the weights are missing.
pub fn home_with_pad(dir: &Path) -> Option<String> {
    let models =
        shared_with("models/minifasnet/2.7_80x80_MiniFASNetV2.pth")?.join("models/minifasnet");
    let home = own_home(dir);
    let (code, _, err) = facegate(
        &dir.join("pad-install-data"),
        &[
            "--home",
            &home,
            "models",
            "install-pad",
            "--from",
            models.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    Some(home)
}
