//! `facegate eval pad`: presentation attack detection measured in ISO/IEC 30107-3's vocabulary,
//! on the user's own collection (a bona fide folder and an attack folder with one sub-folder per
//! attack type) or on a generated, clearly labelled synthetic set (print and replay renderings of
//! an identity/image directory such as LFW). With `--synthetic`, the system-level figure is
//! measured too: how many attacks a gate accepts (live *and* matching the person's other photo)
//! with the comparison alone and with PAD in front of it.

use super::dataset::{people_with_two_images, sorted_entries};
use crate::engine::{load, EngineArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use evaluation::pad::{figures, PadFigures, PadSet, Presentation};
use evaluation::plot::{Axis, Chart, Series};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use video::attack::{render, AttackKind};
use vision::decode::{decode_file, DecodeLimits};
use vision::pipeline::{Face, Pipeline};

#[derive(Args)]
pub struct PadEvalArgs {
    /// Bona fide presentations: images, or one folder per subject holding them. With
    /// --synthetic, these replace the unmodified photos as the bona fide side (real captures
    /// with context around the face, which a PAD model that looks past the face needs).
    #[arg(long)]
    pub bona_fide: Option<PathBuf>,
    /// Attack presentations: one folder per attack type (print, replay, mask, ...), each
    /// holding images or one folder per subject.
    #[arg(long, requires = "bona_fide")]
    pub attacks: Option<PathBuf>,
    /// Generate a synthetic set from this identity/image directory (e.g. LFW): bona fide = the
    /// photos unmodified, attacks = print and replay renderings of them.
    #[arg(long)]
    pub synthetic: Option<PathBuf>,
    /// People taken from --synthetic (those with 2+ images, in name order).
    #[arg(long, default_value_t = 100)]
    pub people: usize,
    /// Also write the synthetic images here (bona-fide/, print/, replay/), to look at them or
    /// to rerun with --bona-fide/--attacks.
    #[arg(long)]
    pub save_synthetic: Option<PathBuf>,
    /// Decision threshold on the fused live score (default: the PAD pack's).
    #[arg(long)]
    pub threshold: Option<f64>,
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write report.json, report.html and det.svg here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the full result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

const IMAGE_EXT: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "ppm"];

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| IMAGE_EXT.contains(&x.to_ascii_lowercase().as_str()))
}

/// (subject name, image) pairs of a folder: files directly in it are each their own subject;
/// sub-folders are subjects.
fn presentations(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = sorted_entries(dir, is_image)?
        .into_iter()
        .map(|p| {
            let s = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (s, p)
        })
        .collect();
    for d in sorted_entries(dir, Path::is_dir)? {
        let s = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        out.extend(
            sorted_entries(&d, is_image)?
                .into_iter()
                .map(|p| (s.clone(), p)),
        );
    }
    Ok(out)
}

/// The largest face's PAD score, or `None` when no face is found.
fn score(p: &Pipeline, img: &image::RgbImage) -> Result<Option<(f64, Face)>> {
    let faces = p.faces(img)?;
    let Ok(c) = app::faces::choose(faces, None, "presentation") else {
        return Ok(None);
    };
    let mut face = c.face;
    p.assess_liveness(img, std::slice::from_mut(&mut face))?;
    Ok(face.liveness.clone().map(|o| (o.score as f64, face)))
}

struct Subjects(BTreeMap<String, u32>);

impl Subjects {
    fn id(&mut self, name: &str) -> u32 {
        let n = self.0.len() as u32;
        *self.0.entry(name.to_string()).or_insert(n)
    }
}

/// What the synthetic run measures beyond PAD: attacks accepted by the comparison alone and
/// with PAD in front (the impostor attack presentation accept rate, IAPAR), with the pack's FMR.
#[derive(serde::Serialize)]
struct SystemFigures {
    attacks_compared: usize,
    comparison_threshold: f64,
    calibrated_fmr: Option<f64>,
    accepted_without_pad: usize,
    accepted_with_pad: usize,
    iapar_without_pad: f64,
    iapar_with_pad: f64,
    bona_fide_compared: usize,
    bona_fide_accepted_with_pad: usize,
}

pub fn run(home: &Path, mut a: PadEvalArgs) -> Result<i32> {
    a.engine.liveness = true;
    let p = load(home, &a.engine)?;
    // The PAD pack is loaded (liveness was switched on above); its threshold is the default.
    let pad_threshold = match (a.threshold, &p.liveness) {
        (Some(t), _) => t,
        (None, Some(pad)) => pad.threshold() as f64,
        (None, None) => bail!("no PAD pack loaded"),
    };
    let limits = DecodeLimits::default();
    let mut subjects = Subjects(BTreeMap::new());
    let mut set = PadSet::default();
    let mut system = None;
    let label;
    if let Some(lfw) = &a.synthetic {
        label = format!(
            "SYNTHETIC attacks rendered from {} ({} people); bona fide: {}; no real attack data",
            lfw.display(),
            a.people,
            match &a.bona_fide {
                Some(d) => d.display().to_string(),
                None => "the same photos unmodified".into(),
            }
        );
        set.types = vec!["print".into(), "replay".into()];
        let metric = p.metric();
        let cmp_threshold = p
            .models
            .manifest
            .calibration
            .as_ref()
            .map(|c| c.threshold)
            .context("the face pack has no calibrated threshold")?;
        let mut sys = SystemFigures {
            attacks_compared: 0,
            comparison_threshold: cmp_threshold,
            calibrated_fmr: p.models.manifest.calibration.as_ref().and_then(|c| c.fmr),
            accepted_without_pad: 0,
            accepted_with_pad: 0,
            iapar_without_pad: f64::NAN,
            iapar_with_pad: f64::NAN,
            bona_fide_compared: 0,
            bona_fide_accepted_with_pad: 0,
        };
        let people = people_with_two_images(lfw, is_image)?;
        let taken = people.len().min(a.people);
        for (name, first, second) in people.into_iter().take(taken) {
            let sid = subjects.id(&name);
            let photo = decode_file(&first, &limits)?;
            let reference = decode_file(&second, &limits)?;
            let reference = app::faces::choose(p.faces(&reference)?, None, "reference")
                .ok()
                .map(|c| c.face.embedding);
            // The bona fide presentation at the attacks' frame size, so that size is no cue.
            let scale = 1.6;
            let bona = image::imageops::resize(
                &photo,
                (photo.width() as f64 * scale) as u32,
                (photo.height() as f64 * scale) as u32,
                image::imageops::FilterType::Triangle,
            );
            let mut shots = if a.bona_fide.is_some() {
                Vec::new()
            } else {
                vec![(None, bona)]
            };
            for (k, kind) in [AttackKind::Print, AttackKind::Replay].iter().enumerate() {
                let seed = a.seed ^ ((sid as u64) << 8) ^ k as u64;
                shots.push((Some(k), render(&photo, *kind, seed, scale)?));
            }
            for (attack, img) in shots {
                if let Some(dir) = &a.save_synthetic {
                    let kind = attack.map_or("bona-fide", |k| set.types[k].as_str());
                    let out = dir.join(kind);
                    std::fs::create_dir_all(&out)?;
                    img.save(out.join(format!("{name}.png")))?;
                }
                let s = score(&p, &img)?;
                if let (Some((live, face)), Some(r)) = (&s, &reference) {
                    let matched =
                        metric.is_match(metric.compare(&face.embedding, r), cmp_threshold);
                    let passes_pad = *live >= pad_threshold;
                    if attack.is_some() {
                        sys.attacks_compared += 1;
                        sys.accepted_without_pad += matched as usize;
                        sys.accepted_with_pad += (matched && passes_pad) as usize;
                    } else {
                        sys.bona_fide_compared += 1;
                        sys.bona_fide_accepted_with_pad += (matched && passes_pad) as usize;
                    }
                }
                set.items.push(Presentation {
                    subject: sid,
                    attack,
                    score: s.map(|(v, _)| v),
                });
            }
        }
        if taken < 2 {
            bail!("{} has fewer than 2 people with 2+ images", lfw.display());
        }
        if let Some(bf) = &a.bona_fide {
            for (subject, path) in presentations(bf)? {
                let img =
                    decode_file(&path, &limits).with_context(|| path.display().to_string())?;
                set.items.push(Presentation {
                    subject: subjects.id(&format!("bona fide {subject}")),
                    attack: None,
                    score: score(&p, &img)?.map(|(v, _)| v),
                });
            }
        }
        let n = sys.attacks_compared.max(1) as f64;
        sys.iapar_without_pad = sys.accepted_without_pad as f64 / n;
        sys.iapar_with_pad = sys.accepted_with_pad as f64 / n;
        system = Some(sys);
    } else {
        let (Some(bf), Some(at)) = (&a.bona_fide, &a.attacks) else {
            bail!("give --bona-fide and --attacks, or --synthetic");
        };
        label = format!("bona fide {}, attacks {}", bf.display(), at.display());
        let kinds = sorted_entries(at, Path::is_dir)?;
        if kinds.is_empty() {
            bail!(
                "{} has no attack-type folders (print/, replay/, ...)",
                at.display()
            );
        }
        set.types = kinds
            .iter()
            .map(|d| {
                d.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let mut all: Vec<(Option<usize>, String, PathBuf)> = presentations(bf)?
            .into_iter()
            .map(|(s, p)| (None, s, p))
            .collect();
        for (k, d) in kinds.iter().enumerate() {
            all.extend(presentations(d)?.into_iter().map(|(s, p)| (Some(k), s, p)));
        }
        for (attack, subject, path) in all {
            let img = decode_file(&path, &limits).with_context(|| path.display().to_string())?;
            set.items.push(Presentation {
                subject: subjects.id(&subject),
                attack,
                score: score(&p, &img)?.map(|(v, _)| v),
            });
        }
    }
    set.subjects = subjects.0.len();
    if set.items.iter().all(|p| p.attack.is_some()) || set.items.iter().all(|p| p.attack.is_none())
    {
        bail!("both bona fide and attack presentations are needed");
    }
    let f = figures(&set, pad_threshold, a.bootstrap, a.seed);
    let report = json!({
        "data": label,
        "pad_pack": a.engine.pad_pack,
        "detector": p.detector_name(),
        "figures": f,
        "system": system,
    });
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(
            out.join("report.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        let svg = det_svg(&f);
        std::fs::write(out.join("det.svg"), &svg)?;
        std::fs::write(out.join("report.html"), html(&label, &f, &report, &svg))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&label, &f, &report);
    }
    Ok(0)
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}%", 100.0 * v)
    } else {
        "n/a".into()
    }
}

fn print_summary(label: &str, f: &PadFigures, report: &serde_json::Value) {
    println!("PAD evaluation: {label}");
    println!(
        "{} subjects, {} bona fide and {} attack presentations; threshold {}",
        f.subjects, f.bona_fide_presentations, f.attack_presentations, f.threshold
    );
    for t in &f.per_type {
        println!(
            "  APCER {:<8} {} [{}, {}]  ({} presentations, {} non-responses)",
            t.attack_type,
            pct(t.apcer.value),
            pct(t.apcer.low),
            pct(t.apcer.high),
            t.presentations,
            t.non_responses
        );
    }
    println!(
        "  APCER worst    {} [{}, {}]",
        pct(f.apcer_worst.value),
        pct(f.apcer_worst.low),
        pct(f.apcer_worst.high)
    );
    println!(
        "  BPCER          {} [{}, {}]",
        pct(f.bpcer.value),
        pct(f.bpcer.low),
        pct(f.bpcer.high)
    );
    for b in &f.bpcer_at_apcer {
        println!(
            "  BPCER at APCER {:>4}: {} [{}, {}] (threshold {:.4})",
            pct(b.apcer),
            pct(b.bpcer.value),
            pct(b.bpcer.low),
            pct(b.bpcer.high),
            b.threshold
        );
    }
    println!("  ANRR {}  BNRR {}", pct(f.anrr), pct(f.bnrr));
    if let Some(s) = report.get("system").filter(|s| !s.is_null()) {
        println!(
            "  system: attacks accepted (live and matching the person's other photo) without PAD {} of {}, with PAD {}; bona fide accepted with PAD {} of {}",
            s["accepted_without_pad"], s["attacks_compared"], s["accepted_with_pad"],
            s["bona_fide_accepted_with_pad"], s["bona_fide_compared"]
        );
    }
}

fn det_svg(f: &PadFigures) -> String {
    let floor = 1e-3;
    let points: Vec<(f64, f64)> = f
        .det
        .iter()
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(a, b)| (a.max(floor), b.max(floor)))
        .collect();
    Chart {
        title: "PAD DET: worst attack type's APCER against BPCER".into(),
        x: Axis {
            label: "APCER (worst attack type)".into(),
            log: true,
            min: floor,
            max: 1.0,
        },
        y: Axis {
            label: "BPCER".into(),
            log: true,
            min: floor,
            max: 1.0,
        },
        series: vec![Series {
            name: "PAD".into(),
            points,
            marks: vec![(
                f.apcer_worst.value.max(floor),
                f.bpcer.value.max(floor),
                format!("threshold {}", f.threshold),
            )],
        }],
    }
    .svg()
}

fn html(label: &str, f: &PadFigures, report: &serde_json::Value, svg: &str) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
    let mut rows = String::new();
    for t in &f.per_type {
        rows += &format!(
            "<tr><td>APCER {}</td><td>{}</td><td>{} – {}</td></tr>",
            esc(&t.attack_type),
            pct(t.apcer.value),
            pct(t.apcer.low),
            pct(t.apcer.high)
        );
    }
    for (name, i) in [("APCER worst type", &f.apcer_worst), ("BPCER", &f.bpcer)] {
        rows += &format!(
            "<tr><td>{name}</td><td>{}</td><td>{} – {}</td></tr>",
            pct(i.value),
            pct(i.low),
            pct(i.high)
        );
    }
    for b in &f.bpcer_at_apcer {
        rows += &format!(
            "<tr><td>BPCER at APCER {}</td><td>{}</td><td>{} – {}</td></tr>",
            pct(b.apcer),
            pct(b.bpcer.value),
            pct(b.bpcer.low),
            pct(b.bpcer.high)
        );
    }
    format!(
        "<!doctype html><meta charset=utf-8><title>facegate PAD evaluation</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td{{padding:0 1em}}</style>\
         <h1>Presentation attack detection</h1><p><b>{}</b></p>\
         <p>Threshold {} on the fused live score; {} subjects; intervals: 95% bootstrap over subjects \
         ({} replicates). ANRR {}, BNRR {} (no face found; not counted in APCER/BPCER).</p>\
         <table><tr><th>figure</th><th>value</th><th>95% interval</th></tr>{rows}</table>{svg}\
         <h2>Data</h2><pre>{}</pre>",
        esc(label),
        f.threshold,
        f.subjects,
        f.bootstrap_replicates,
        pct(f.anrr),
        pct(f.bnrr),
        esc(&serde_json::to_string_pretty(&report["system"]).unwrap_or_default())
    )
}
