//! Shared helpers for tests that use `../shared` reference data and the installed model pack.
//! Outside CI a missing file skips the test with a printed reason; in CI (`CI=true`) it fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub fn shared_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FACEGATE_SHARED") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// Returns the path if it exists; otherwise panics in CI or returns None (skip) elsewhere.
pub fn require(path: &Path, why: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    let msg = format!("missing {} ({why})", path.display());
    if in_ci() {
        panic!("{msg}: required in CI");
    }
    eprintln!("SKIP: {msg}");
    None
}

pub fn shared(rel: &str) -> Option<PathBuf> {
    require(&shared_dir().join(rel), "shared reference data")
}

/// The installed default pack directory and runtime, after `facegate models fetch`.
pub fn pack_and_runtime() -> Option<(PathBuf, PathBuf)> {
    let home = vision::pack::default_home();
    let pack = require(
        &home.join("packs/dlib/manifest.json"),
        "run `facegate models fetch` first",
    )?;
    let rt = vision::pack::installed_runtime(&home);
    let rt = match rt {
        Some(r) => r,
        None => require(
            &home.join("runtime/missing"),
            "run `facegate models fetch` first",
        )?,
    };
    vision::runtime::ensure_runtime(Some(&rt)).expect("load ONNX Runtime");
    Some((pack.parent().unwrap().to_path_buf(), rt))
}

pub fn load_rgb(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

pub fn golden() -> Option<serde_json::Value> {
    let p = shared("golden/golden.json")?;
    Some(serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
}

pub fn l2(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

pub fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Largest absolute difference between two 8-bit images' raw values.
pub fn max_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> i32 {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (*x as i32 - *y as i32).abs())
        .max()
        .unwrap_or(0)
}
