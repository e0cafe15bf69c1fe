//! `facegate embed`, `facegate detect` and `facegate verify`.

use crate::engine::{load, EngineArgs};
use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use vision::decode::{decode_file, decode_file_flagged, DecodeLimits};
use vision::pipeline::Face;

#[derive(Args)]
pub struct EmbedArgs {
    pub images: Vec<PathBuf>,
    /// One JSON object per image per line (the default output is also JSON lines).
    #[arg(long)]
    pub json: bool,
    /// Inputs are already aligned chips of the pack's size: skip detection and alignment.
    #[arg(long)]
    pub aligned: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The live image (e.g. the gate camera frame).
    pub probe: PathBuf,
    /// The reference image. Or the passport chip's face: --dg2 with --sod.
    pub reference: Option<PathBuf>,
    /// The chip's DG2: its face is the reference, used only after passive authentication
    /// passes the policy (see `facegate passport verify`).
    #[arg(long, requires = "sod")]
    pub dg2: Option<PathBuf>,
    /// The chip's EF.SOD (with --dg2).
    #[arg(long)]
    pub sod: Option<PathBuf>,
    /// The chip's DG1 (optional: its hash and check digits are verified too; never printed).
    #[arg(long)]
    pub dg1: Option<PathBuf>,
    #[command(flatten)]
    pub trust: crate::cmd_passport::TrustArgs,
    /// Which face of the probe to use (index in detection order); default: the largest.
    #[arg(long)]
    pub probe_face: Option<usize>,
    /// Which face of the reference to use; default: the largest.
    #[arg(long)]
    pub reference_face: Option<usize>,
    /// Decision threshold (default: the pack's calibrated one).
    #[arg(long)]
    pub threshold: Option<f64>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

fn face_json(f: &Face, with_embedding: bool) -> serde_json::Value {
    let mut v = json!({
        "box": [f.rect.left, f.rect.top, f.rect.right, f.rect.bottom],
        "score": f.score,
        "landmarks": f.landmarks.iter().map(|p| [p.x, p.y]).collect::<Vec<_>>(),
        "quality": f.quality,
    });
    if with_embedding {
        v["embedding"] = json!(f.embedding);
    }
    if let Some(l) = &f.liveness {
        v["liveness"] = json!(l);
    }
    v
}

pub fn embed(home: &Path, a: EmbedArgs) -> Result<i32> {
    let p = load(home, &a.engine)?;
    let limits = DecodeLimits::default();
    let mut failures = 0;
    for path in &a.images {
        let line = match decode_file(path, &limits) {
            Err(e) => {
                failures += 1;
                json!({"image": path, "error": e.to_string()})
            }
            Ok(img) if a.aligned => match p.embed_aligned(&[img]) {
                Ok(mut e) => json!({"image": path, "faces": [{"embedding": e.pop()}]}),
                Err(e) => {
                    failures += 1;
                    json!({"image": path, "error": e.to_string()})
                }
            },
            Ok(img) => match p.faces(&img) {
                Ok(faces) => json!({
                    "image": path, "width": img.width(), "height": img.height(),
                    "faces": faces.iter().map(|f| face_json(f, true)).collect::<Vec<_>>()
                }),
                Err(e) => {
                    failures += 1;
                    json!({"image": path, "error": e.to_string()})
                }
            },
        };
        println!("{line}");
    }
    Ok(if failures > 0 { 2 } else { 0 })
}

pub fn detect(home: &Path, a: EmbedArgs) -> Result<i32> {
    let p = load(home, &a.engine)?;
    let limits = DecodeLimits::default();
    let mut failures = 0;
    for path in &a.images {
        let line = match decode_file_flagged(path, &limits).and_then(|(img, cut)| {
            let mut faces = p.faces(&img)?;
            if a.engine.liveness {
                p.assess_liveness(&img, &mut faces)?;
            }
            Ok((img, faces, cut))
        }) {
            Ok((img, faces, cut)) => {
                let mut v = json!({
                    "image": path, "width": img.width(), "height": img.height(),
                    "faces": faces.iter().map(|f| face_json(f, false)).collect::<Vec<_>>()
                });
                let warnings: Vec<String> = cut
                    .map(str::to_string)
                    .into_iter()
                    .chain(p.detection_warning(img.width(), img.height()))
                    .collect();
                if !warnings.is_empty() {
                    v["warnings"] = json!(warnings);
                }
                v
            }
            Err(e) => {
                failures += 1;
                json!({"image": path, "error": e.to_string()})
            }
        };
        println!("{line}");
    }
    Ok(if failures > 0 { 2 } else { 0 })
}

/// Picks the requested face, or the largest one, and says which rule was used (the rule lives in
/// `app::faces`, shared with the server).
pub fn pick(
    faces: Vec<Face>,
    index: Option<usize>,
    what: &str,
) -> Result<(Face, usize, &'static str, usize)> {
    let c = match index {
        Some(i) => {
            app::faces::choose(faces, index, what).with_context(|| format!("--{what}-face {i}"))?
        }
        None => app::faces::choose(faces, None, what)?,
    };
    Ok((c.face, c.index, c.rule, c.found))
}

pub fn verify(home: &Path, a: VerifyArgs) -> Result<i32> {
    crate::cmd_passport::check_reference_choice(
        a.reference.as_deref(),
        a.dg2.as_deref(),
        a.sod.as_deref(),
    )?;
    // The chip first: nothing is compared, nor a model loaded, for a chip the policy refuses.
    let chip = match (&a.dg2, &a.sod) {
        (Some(dg2), Some(sod)) => {
            let bytes = crate::cmd_passport::ChipBytes::read(sod, dg2, a.dg1.as_deref())?;
            let (chip, _) = bytes.authenticate(&a.trust)?;
            if !chip.accepted() {
                let out = json!({
                    "match": false,
                    "decided_by": app::chip::DECIDED_BY_PA,
                    "chip": chip.report_json(false),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(1);
            }
            Some(chip)
        }
        _ => None,
    };
    let p = load(home, &a.engine)?;
    let limits = DecodeLimits::default();
    let (probe, probe_cut) = decode_file_flagged(&a.probe, &limits)
        .with_context(|| format!("probe {}", a.probe.display()))?;
    let (reference, reference_cut, reference_name) = match (&chip, &a.reference) {
        (Some(chip), _) => {
            let img = vision::decode::decode(&chip.face.image, &limits)
                .context("the chip's face image")?;
            (img, None, json!("DG2"))
        }
        (None, Some(path)) => {
            let (img, cut) = decode_file_flagged(path, &limits)
                .with_context(|| format!("reference {}", path.display()))?;
            (img, cut, json!(path))
        }
        (None, None) => anyhow::bail!("give a reference image, or the chip's --dg2 and --sod"),
    };
    let warnings: Vec<String> = [
        ("probe", &probe, probe_cut),
        ("reference", &reference, reference_cut),
    ]
    .into_iter()
    .flat_map(|(what, img, cut)| {
        cut.map(str::to_string)
            .into_iter()
            .chain(p.detection_warning(img.width(), img.height()))
            .map(move |w| format!("{what}: {w}"))
    })
    .collect();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let (mut pf, pi, prule, pn) = pick(p.faces(&probe)?, a.probe_face, "probe")?;
    let (rf, ri, rrule, rn) = pick(p.faces(&reference)?, a.reference_face, "reference")?;
    // Liveness is assessed on the live probe only: the reference is a photo by nature.
    let pad = liveness_verdict(&p, &probe, &mut pf, &a.engine)?;
    let metric = p.metric();
    let score = metric.compare(&pf.embedding, &rf.embedding);
    let cal = p.models.manifest.calibration.clone();
    let threshold = a
        .threshold
        .or(cal.as_ref().map(|c| c.threshold))
        .context("no threshold: pass --threshold")?;
    let blocked = pad.as_ref().is_some_and(|v| v.blocks);
    let matched = metric.is_match(score, threshold) && !blocked;
    let out = json!({
        "match": matched,
        "decided_by": if blocked { app::liveness::DECIDED_BY_PAD } else { "comparison" },
        "liveness": pad,
        "score": score,
        "score_kind": metric.describe(),
        "threshold": threshold,
        "threshold_source": if a.threshold.is_some() { "command line".to_string() } else { cal.as_ref().map(|c| c.method.clone()).unwrap_or_default() },
        "calibrated_fmr": if a.threshold.is_some() { None } else { cal.and_then(|c| c.fmr) },
        "pack": p.models.manifest.name,
        "detector": p.detector_name(),
        "probe": {"image": a.probe, "faces_found": pn, "face_used": pi, "selection": prule, "face": face_json(&pf, false)},
        "chip": chip.as_ref().map(|c| c.report_json(false)),
        "reference": {"image": reference_name, "faces_found": rn, "face_used": ri, "selection": rrule, "face": face_json(&rf, false)},
        "warnings": warnings,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if matched { 0 } else { 1 })
}

/// Runs the liveness stage on the chosen probe face when `--liveness` asked for it.
pub fn liveness_verdict(
    p: &vision::pipeline::Pipeline,
    img: &image::RgbImage,
    face: &mut Face,
    engine: &crate::engine::EngineArgs,
) -> Result<Option<app::liveness::PadVerdict>> {
    if !engine.liveness {
        return Ok(None);
    }
    p.assess_liveness(img, std::slice::from_mut(face))?;
    Ok(app::liveness::PadVerdict::of(
        face,
        engine.pad_policy,
        engine.pad_threshold,
    ))
}
