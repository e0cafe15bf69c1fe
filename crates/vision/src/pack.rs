//! Model packs: a manifest plus the files it names, installed under `$FACEGATE_HOME`. This is
//! what the inference layer needs to load a pack (manifest types, checksums, where things are);
//! fetching and converting packs lives in the `facegate-provision` crate.

use crate::embed::InputSpec;
use crate::error::VisionError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const ORT_VERSION: &str = "1.32.0";

/// Where facegate keeps models and its runtime: `$FACEGATE_HOME`, else
/// `$XDG_DATA_HOME/facegate`, else `~/.local/share/facegate`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("FACEGATE_HOME") {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("facegate");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/facegate")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRef {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DetectorSpec {
    /// dlib's MMOD CNN (converted to ONNX): 80x80 window over an image pyramid.
    DlibMmod {
        model: FileRef,
        mean: [f32; 3],
        window: usize,
        nms_iou: f64,
        nms_covered: f64,
        pyramid_padding: usize,
        pyramid_outer_padding: usize,
    },
    /// YuNet-style ONNX detector giving boxes and 5 landmarks.
    Yunet {
        model: FileRef,
        score_threshold: f32,
        nms_iou: f32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LandmarkSpec {
    /// dlib shape predictor `.dat` with 5 parts.
    DlibShapePredictor { model: FileRef },
    /// Landmarks come from the detector itself.
    FromDetector,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "template", rename_all = "kebab-case")]
pub enum AlignmentSpec {
    /// dlib's `get_face_chip_details` template with padding.
    Dlib5 { padding: f64 },
    /// The ArcFace 112x112 five-point template (scaled to the chip size).
    Arcface,
}

/// The pack's comparison metric: the one metric of the workspace.
pub use template::Metric;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedderSpec {
    pub model: FileRef,
    pub input: InputSpec,
    pub alignment: AlignmentSpec,
    pub embedding_size: usize,
    pub metric: Metric,
    /// Every template is the mean of the chip's embedding and its mirror image's (test-time
    /// flip averaging; twice the embedding cost). A pack derived with `models derive
    /// --flip-average`: its own name, so galleries never mix its templates with the plain
    /// pack's, and its own calibration.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flip_average: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    pub threshold: f64,
    pub fmr: Option<f64>,
    pub method: String,
    /// What `facegate eval calibrate` measured: dataset, date, figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    pub licence: String,
    pub source: String,
    pub detector: DetectorSpec,
    pub landmarks: LandmarkSpec,
    pub embedder: EmbedderSpec,
    /// The default 1:1 decision threshold and what it was calibrated for.
    pub calibration: Option<Calibration>,
    /// An alternative detector in the same pack, chosen with `--detector hog`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hog_detector: Option<HogSpec>,
}

/// dlib's HOG frontal face detector: its own licence and provenance, since they differ from
/// the rest of the dlib pack's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HogSpec {
    pub model: FileRef,
    pub licence: String,
    pub source: String,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Self, VisionError> {
        let p = dir.join("manifest.json");
        let text = std::fs::read_to_string(&p).map_err(|e| VisionError::io(&p, e))?;
        serde_json::from_str(&text).map_err(|e| VisionError::Pack(format!("{}: {e}", p.display())))
    }

    /// Reads a file named by the manifest and checks its sha256.
    pub fn read_verified(dir: &Path, f: &FileRef) -> Result<Vec<u8>, VisionError> {
        if f.file.contains('/') || f.file.contains('\\') || f.file.starts_with('.') {
            return Err(VisionError::Pack(format!(
                "manifest names a file outside the pack: {}",
                f.file
            )));
        }
        let p = dir.join(&f.file);
        let bytes = std::fs::read(&p).map_err(|e| VisionError::io(&p, e))?;
        check_sha256(&f.file, &bytes, &f.sha256)?;
        Ok(bytes)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn check_sha256(name: &str, bytes: &[u8], expected: &str) -> Result<(), VisionError> {
    let actual = sha256_hex(bytes);
    if actual != expected {
        return Err(VisionError::Checksum {
            file: name.into(),
            expected: expected.into(),
            actual,
        });
    }
    Ok(())
}

/// Where the runtime library lives once installed.
pub fn runtime_dir(home: &Path) -> PathBuf {
    home.join("runtime")
        .join(format!("onnxruntime-{ORT_VERSION}"))
}

/// The installed runtime library, if any.
pub fn installed_runtime(home: &Path) -> Option<PathBuf> {
    crate::runtime::find_library_in(&runtime_dir(home))
}
