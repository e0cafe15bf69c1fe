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
