//! Shared helpers for tests that use `../shared` reference data and the installed model pack.
//! Outside CI a missing file skips the test with a printed reason; in CI (`CI=true`) it fails.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise
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

/// How a detector's boxes compare with dlib's golden ones over many images.
#[derive(Default, Debug)]
pub struct BoxComparison {
    pub total: usize,
    pub exact: usize,
    pub worst_px: f64,
    pub worst_score: f64,
    /// Images where the number of boxes differs.
    pub mismatched: Vec<String>,
}

impl BoxComparison {
    /// Adds one image: `got` against dlib's detections `want` (each with "rect" [l,t,r,b] and a
    /// score under `score_key`), in order.
    pub fn add(
        &mut self,
        name: &str,
        got: &[vision::detect::Detection],
        want: &[serde_json::Value],
        score_key: &str,
    ) {
        if got.len() != want.len() {
            self.mismatched.push(format!(
                "{name}: {} boxes {:?}, dlib {}",
                got.len(),
                got.iter().map(|d| (d.rect, d.score)).collect::<Vec<_>>(),
                serde_json::to_string(want).unwrap()
            ));
            return;
        }
        for (d, w) in got.iter().zip(want) {
            let r = f64s(&w["rect"]);
            let px = [
                d.rect.left - r[0],
                d.rect.top - r[1],
                d.rect.right - r[2],
                d.rect.bottom - r[3],
            ]
            .iter()
            .fold(0f64, |m, v| m.max(v.abs()));
            let ds = (d.score as f64 - w[score_key].as_f64().unwrap()).abs();
            self.worst_px = self.worst_px.max(px);
            self.worst_score = self.worst_score.max(ds);
            self.exact += (px == 0.0) as usize;
            self.total += 1;
        }
    }
}
