//! Installing presentation attack detection (PAD) packs. MiniFASNet's weights are in no package
//! registry, so the product cannot fetch them: the user hands over the two `.pth` files (or a
//! directory holding them), which are checked against pinned sha256 values, read with our own
//! legacy-checkpoint reader, converted to ONNX, and installed as one pack, atomically. A PAD
//! pack of the user's own ONNX models comes with its manifest instead and is checked the same way.

use crate::torch_legacy::read_state_dict;
use crate::{commit_dir, minifasnet, temp_dir_in, Progress};
use std::path::{Path, PathBuf};
use vision::embed::{ChannelOrder, InputSpec, Layout};
use vision::liveness::{pad_dir, CropSpec, PadManifest, PadModelSpec, DEFAULT_PAD_PACK, STAGE};
use vision::pack::{sha256_hex, FileRef, Manifest};
use vision::VisionError;

/// One pinned MiniFASNet checkpoint: file name, sha256, network, box scale of its crop.
pub struct PinnedPad {
    pub file: &'static str,
    pub sha256: &'static str,
    pub network: &'static str,
    pub box_scale: f64,
}

/// Silent-Face-Anti-Spoofing at commit b6d5f04a, `resources/anti_spoof_models/` (Apache-2.0).
pub const MINIFASNET_PINS: [PinnedPad; 2] = [
    PinnedPad {
        file: "2.7_80x80_MiniFASNetV2.pth",
        sha256: "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
        network: "MiniFASNetV2",
        box_scale: 2.7,
    },
    PinnedPad {
        file: "4_0_0_80x80_MiniFASNetV1SE.pth",
        sha256: "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
        network: "MiniFASNetV1SE",
        box_scale: 4.0,
    },
];

/// The default PAD threshold: the live class at least as likely as all attack classes together.
/// No attack data this project may use was behind it; `facegate eval pad` measures one.
pub const DEFAULT_PAD_THRESHOLD: f32 = 0.5;

/// Checkpoints larger than this are not MiniFASNet's (1.9 MB each).
const MAX_PTH_BYTES: u64 = 64 << 20;

/// The files `from` names: each path is a file, or a directory whose `.pth` files (not
/// recursing) are taken.
fn candidate_files(from: &[PathBuf]) -> Result<Vec<PathBuf>, VisionError> {
    let mut out = Vec::new();
    for p in from {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| VisionError::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "pth"))
                .collect();
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(VisionError::Fetch(format!(
                "{} does not exist",
                p.display()
            )));
        }
    }
    Ok(out)
}

/// Installs the MiniFASNet PAD pack from the user's copies of the two checkpoints. Each pinned
/// file is recognised by its name or its hash; a file with a pinned name and another hash, a
/// missing model, or a checkpoint the converter cannot map onto MiniFASNet is refused and
/// nothing is installed.
pub fn install_minifasnet(
    home: &Path,
    from: &[PathBuf],
    progress: Progress,
) -> Result<PathBuf, VisionError> {
    let files = candidate_files(from)?;
    let pad_root = home.join("pad");
    let stage = temp_dir_in(&pad_root)?;
    let mut models = Vec::new();
    // Each candidate's size, and its sha256 when it is small enough to be a pinned file: read
    // once, one file at a time, whatever the number of pins.
    let mut seen = Vec::with_capacity(files.len());
    for f in &files {
        let len = std::fs::metadata(f)
            .map_err(|e| VisionError::io(f, e))?
            .len();
        let sha = if len > MAX_PTH_BYTES {
            None
        } else {
            Some(sha256_hex(
                &std::fs::read(f).map_err(|e| VisionError::io(f, e))?,
            ))
        };
        seen.push((f, len, sha));
    }
    for pin in &MINIFASNET_PINS {
        let mut chosen = None;
        for &(f, len, ref sha) in &seen {
            let named = f.file_name().is_some_and(|n| n == pin.file);
            let Some(sha) = sha else {
                if named {
                    return Err(VisionError::Fetch(format!(
                        "{} is {len} bytes; {} is 1.9 MB",
                        f.display(),
                        pin.file
                    )));
                }
                continue;
            };
            if sha == pin.sha256 {
                chosen = Some(f.clone());
                break;
            }
            if named {
                return Err(VisionError::Fetch(format!(
                    "{}: sha256 {sha} is not the pinned {} (a different, truncated or altered \
                     file; the pin is upstream's commit b6d5f04a)",
                    f.display(),
                    pin.sha256
                )));
            }
        }
        let Some(path) = chosen else {
            return Err(VisionError::Fetch(format!(
                "{} (sha256 {}) is not among the files given; it is in Silent-Face-Anti-Spoofing's \
                 resources/anti_spoof_models",
                pin.file, pin.sha256
            )));
        };
        // Read again for conversion, and checked again: the file may have changed since.
        let bytes = std::fs::read(&path).map_err(|e| VisionError::io(&path, e))?;
        vision::pack::check_sha256(pin.file, &bytes, pin.sha256)?;
        progress(&format!(
            "converting {} ({}) to ONNX",
            path.display(),
            pin.network
        ));
        let sd = read_state_dict(&bytes)
            .map_err(|e| VisionError::ModelFormat(format!("{}: {e}", path.display())))?;
        let doc = format!(
            "{} from {} (sha256 {}), Silent-Face-Anti-Spoofing b6d5f04a, Apache-2.0; converted by facegate",
            pin.network, pin.file, pin.sha256
        );
        let conv = minifasnet::to_onnx(&sd, &doc)
            .map_err(|e| VisionError::ModelFormat(format!("{}: {e}", path.display())))?;
        if conv.classes != 3 || conv.input_size != 80 {
            return Err(VisionError::ModelFormat(format!(
                "{}: {} classes at {}x{}, MiniFASNet has 3 at 80x80",
                path.display(),
                conv.classes,
                conv.input_size,
                conv.input_size
            )));
        }
        let name = format!("{}.onnx", pin.file.trim_end_matches(".pth"));
        let out = stage.path().join(&name);
        std::fs::write(&out, &conv.onnx).map_err(|e| VisionError::io(&out, e))?;
        models.push(PadModelSpec {
            name: pin.network.into(),
            model: FileRef {
                file: name,
                sha256: sha256_hex(&conv.onnx),
            },
            crop: CropSpec {
                box_scale: Some(pin.box_scale),
            },
            // Upstream feeds BGR pixel values 0-255 unnormalised (its ToTensor does not divide).
            input: InputSpec {
                size: conv.input_size,
                layout: Layout::Nchw,
                channel_order: ChannelOrder::Bgr,
                mean: [0.0; 3],
                scale: [1.0; 3],
            },
            classes: conv.classes,
            live_class: 1,
        });
    }
    let manifest = PadManifest {
        stage: STAGE.into(),
        name: DEFAULT_PAD_PACK.into(),
        description: "MiniFASNetV2 (crop 2.7x the face box) and MiniFASNetV1SE (4.0x), 80x80, \
                      3 classes (1 = live), softmax averaged: passive single-frame PAD"
            .into(),
        licence: "Apache-2.0 (Minivision's Silent-Face-Anti-Spoofing; trained on the vendor's \
                  private data)"
            .into(),
        source: "Silent-Face-Anti-Spoofing commit b6d5f04ad78778917853b25c778acef6d5626d15, \
                 resources/anti_spoof_models, files supplied by the user and pinned by sha256"
            .into(),
        models,
        threshold: DEFAULT_PAD_THRESHOLD,
        threshold_note: "0.5: the live class at least as likely as both attack classes together. \
                         Not calibrated on real attacks (none could be used); measure with \
                         `facegate eval pad` on your own attack collection and set it."
            .into(),
    };
    write_manifest_and_commit(stage, &manifest, &pad_dir(home, DEFAULT_PAD_PACK))?;
    let dest = pad_dir(home, DEFAULT_PAD_PACK);
    progress(&format!(
        "installed PAD pack '{}' in {}",
        manifest.name,
        dest.display()
    ));
    Ok(dest)
}

fn write_manifest_and_commit(
    stage: tempfile::TempDir,
    manifest: &PadManifest,
    dest: &Path,
) -> Result<(), VisionError> {
    manifest.validate()?;
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| VisionError::Pack(e.to_string()))?;
    let p = stage.path().join("manifest.json");
    std::fs::write(&p, text).map_err(|e| VisionError::io(&p, e))?;
    commit_dir(stage, dest)
}

/// Installs a PAD pack of the user's own ONNX models: `manifest` is a PAD manifest whose model
/// files sit beside it and match its sha256 values. The models are loaded once (an ONNX file
/// ONNX Runtime cannot load is refused) and copied with the manifest into `pad/<name>`.
pub fn install_onnx_pad(home: &Path, manifest: &Path) -> Result<PathBuf, VisionError> {
    let text = std::fs::read_to_string(manifest).map_err(|e| VisionError::io(manifest, e))?;
    let m: PadManifest = serde_json::from_str(&text)
        .map_err(|e| VisionError::Pack(format!("{}: {e}", manifest.display())))?;
    m.validate()?;
    let ok_name = !m.name.is_empty()
        && m.name.len() <= 64
        && m.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok_name {
        return Err(VisionError::Pack(format!(
            "PAD pack name '{}' must be 1-64 letters, digits, '-' or '_'",
            m.name
        )));
    }
    let src = manifest.parent().unwrap_or(Path::new("."));
    let stage = temp_dir_in(&home.join("pad"))?;
    for spec in &m.models {
        let bytes = Manifest::read_verified(src, &spec.model)?;
        vision::runtime::session_from_bytes(&bytes, 1)?;
        let out = stage.path().join(&spec.model.file);
        std::fs::write(&out, &bytes).map_err(|e| VisionError::io(&out, e))?;
    }
    let dest = pad_dir(home, &m.name);
    write_manifest_and_commit(stage, &m, &dest)?;
    Ok(dest)
}
