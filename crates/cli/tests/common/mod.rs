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
