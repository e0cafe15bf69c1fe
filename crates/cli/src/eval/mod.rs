//! `facegate eval`: accuracy evidence from a labelled image set.
//!
//! - `pairs`: the standard LFW pairs protocol (accuracy over folds, TAR at FMR);
//! - `identify`: the 1:N open-set protocol, on plain and on protected (transformed) templates;
//! - `report`: the full report (1:1 with intervals, DET/ROC, 1:N with CMC and gallery-size
//!   growth, per-group differentials, several packs) as HTML, JSON and SVG;
//! - `calibrate`: choose the threshold for a target FMR and write it into a pack or a gallery,
//!   with the evidence in the audit log.

pub mod calibrate;
mod calibrate_cohort;
mod calibrate_fpir;
pub mod dataset;
mod groups;
mod improve;
pub mod pad;
pub mod pad_video;
pub mod report;
mod scale;
pub mod video;

// The arithmetic, the report model and its renderings are the `evaluation` library; these
// modules gather the data (images, embeddings, searches) and write the files.
pub use evaluation::metrics;

use crate::cmd_gallery::StoreArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use dataset::{embed_all, Dataset};
use report::{open_set, search_1n, split_1n, DataArgs};
use serde_json::json;
use std::path::Path;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// LFW-style pairs protocol: accuracy over folds, TAR at FMR, failures to detect.
    Pairs(PairsArgs),
    /// 1:N open-set protocol on an identity/image directory: rank-1, FNIR at FPIR.
    Identify(IdentifyEvalArgs),
    /// Full report: 1:1 (FNMR at FMR, EER, intervals, DET/ROC), 1:N (CMC, FNIR at FPIR, gallery
    /// size), per-group differentials, several packs; report.html, report.json, SVG figures.
    Report(report::ReportArgs),
    /// Pick the threshold for a target FMR and write it into a pack or a gallery (audited).
    Calibrate(calibrate::CalibrateArgs),
    /// Tracking (MOTA, IDF1) and once-per-passer-by decisions on generated scenes with exact
    /// ground truth.
    Video(video::VideoEvalArgs),
    /// Presentation attack detection (ISO/IEC 30107-3): APCER per attack type, BPCER, BPCER at
    /// APCER 1/5/10%, non-response rates, DET, subject-bootstrap intervals; on your own bona fide
    /// and attack folders, or on a labelled synthetic set (--synthetic LFW_DIR).
    Pad(Box<pad::PadEvalArgs>),
    /// Liveness on video, per passer-by: the passive score over each track's best frames, the
    /// planar-motion cue and their fusion (APCER per attack type, BPCER); on your own videos
    /// and/or synthetic print and replay attacks waved in front of the camera.
    PadVideo(Box<pad_video::PadVideoArgs>),
}

#[derive(Args)]
pub struct IdentifyEvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Print the full result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PairsArgs {
    /// Directory of identity/identity_NNNN.jpg images.
    #[arg(long)]
    pub images: std::path::PathBuf,
    /// Pairs file in LFW format (first line: folds and pairs per class per fold).
    #[arg(long)]
    pub pairs: std::path::PathBuf,
    /// Average each embedding with the embedding of the mirrored chip.
    #[arg(long)]
    pub flip: bool,
    /// Average each embedding over N dlib-style jittered copies of the chip (dlib's num_jitters).
    #[arg(long, default_value_t = 0)]
    pub jitter: usize,
    /// Print the full result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Use only the first N folds (quick checks).
    #[arg(long)]
    pub max_folds: Option<usize>,
    /// Parallel embedding workers (each with one inference thread). Default: all cores.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Do not read or write the sealed embedding cache.
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub engine: crate::engine::EngineArgs,
}

pub struct Pair {
    pub a: (String, u32),
    pub b: (String, u32),
    pub same: bool,
}

pub fn parse_pairs(text: &str) -> Result<Vec<Vec<Pair>>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let head: Vec<usize> = lines
        .next()
        .context("empty pairs file")?
        .split_whitespace()
        .map(|v| v.parse().context("pairs header"))
        .collect::<Result<_>>()?;
    let (folds, n) = match head.as_slice() {
        [f, n] => (*f, *n),
        [n] => (1, *n),
        _ => bail!("pairs header must be 'FOLDS N'"),
    };
    let mut out = Vec::with_capacity(folds);
    for f in 0..folds {
        let mut fold = Vec::with_capacity(2 * n);
        for k in 0..2 * n {
            let line = lines
                .next()
                .with_context(|| format!("pairs file ends in fold {f} at pair {k}"))?;
            let p: Vec<&str> = line.split_whitespace().collect();
            let num = |s: &str| {
                s.parse::<u32>()
                    .with_context(|| format!("bad image number in {line:?}"))
            };
            fold.push(match p.as_slice() {
                [name, i, j] => Pair {
                    a: (name.to_string(), num(i)?),
                    b: (name.to_string(), num(j)?),
                    same: true,
                },
                [n1, i, n2, j] => Pair {
                    a: (n1.to_string(), num(i)?),
                    b: (n2.to_string(), num(j)?),
                    same: false,
                },
                _ => bail!("bad pairs line {line:?}"),
            });
        }
        out.push(fold);
    }
    Ok(out)
}

/// Accuracy of the best threshold on `train` applied to `test` (distances: match if <= t;
/// similarities are negated by the caller so the same rule applies).
/// Accuracy of the best threshold on `train` applied to `test` (distances: match if <= t;
/// similarities are negated by the caller so the same rule applies).
pub fn fold_accuracy(train: &[(f64, bool)], test: &[(f64, bool)]) -> (f64, f64) {
    let mut cands: Vec<f64> = train.iter().map(|p| p.0).collect();
    cands.sort_by(f64::total_cmp);
    cands.dedup();
    let acc = |t: f64, set: &[(f64, bool)]| {
        set.iter().filter(|(d, s)| (*d <= t) == *s).count() as f64 / set.len() as f64
    };
    let mut best = (f64::NEG_INFINITY, 0.0);
    for &t in &cands {
        let a = acc(t, train);
        if a > best.0 {
            best = (a, t);
        }
    }
    (acc(best.1, test), best.1)
}

/// For each fold, (accuracy, threshold) with the threshold chosen on the other folds (on the
/// fold itself when there is only one).
pub fn cross_fold(scores: &[Vec<(f64, bool)>]) -> Vec<(f64, f64)> {
    (0..scores.len())
        .map(|k| {
            let train: Vec<(f64, bool)> = scores
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .flat_map(|(_, s)| s.iter().copied())
                .collect();
            if train.is_empty() {
                fold_accuracy(&scores[k], &scores[k])
            } else {
                fold_accuracy(&train, &scores[k])
            }
        })
        .collect()
}

/// TAR at the lowest threshold whose FMR does not exceed `fmr` (pooled scores, distances).
pub fn tar_at_fmr(scores: &[(f64, bool)], fmr: f64) -> (f64, f64, usize) {
    let mut imp: Vec<f64> = scores.iter().filter(|p| !p.1).map(|p| p.0).collect();
    imp.sort_by(f64::total_cmp);
    let allowed = (fmr * imp.len() as f64).floor() as usize;
    // Threshold just below the (allowed+1)-th smallest impostor distance.
    let t = if allowed < imp.len() {
        imp[allowed] - 1e-12
    } else {
        f64::INFINITY
    };
    let gen: Vec<f64> = scores.iter().filter(|p| p.1).map(|p| p.0).collect();
    let tar = gen.iter().filter(|&&d| d <= t).count() as f64 / gen.len().max(1) as f64;
    (tar, t, imp.len())
}

pub fn run(home: &Path, store: &StoreArgs, cmd: EvalCommand) -> Result<i32> {
    match cmd {
        EvalCommand::Pairs(a) => pairs(home, a),
        EvalCommand::Identify(a) => identify(home, a),
        EvalCommand::Report(a) => report::run(home, a),
        EvalCommand::Calibrate(a) => calibrate::run(home, store, a),
        EvalCommand::Video(a) => video::run(home, a),
        EvalCommand::Pad(a) => pad::run(home, *a),
        EvalCommand::PadVideo(a) => pad_video::run(home, *a),
    }
}

fn pairs(home: &Path, a: PairsArgs) -> Result<i32> {
    let text = std::fs::read_to_string(&a.pairs)
        .with_context(|| format!("reading {}", a.pairs.display()))?;
    let mut folds = parse_pairs(&text)?;
    if let Some(m) = a.max_folds {
        folds.truncate(m);
    }
    let spec = DataArgs {
        images: a.images.clone(),
        pairs: None,
        impostors: 0,
        all_impostors: false,
        seed: 1,
        max_identities: None,
        flip: a.flip,
        jitter: a.jitter,
        workers: a.workers,
        no_cache: a.no_cache,
        engine: a.engine.clone(),
    }
    .spec()?;
    // Each image the pairs name, once.
    let mut index: std::collections::HashMap<(String, u32), usize> = Default::default();
    let mut files = Vec::new();
    for pair in folds.iter().flatten() {
        for key in [&pair.a, &pair.b] {
            if !index.contains_key(key) {
                let path = a
                    .images
                    .join(&key.0)
                    .join(format!("{}_{:04}.jpg", key.0, key.1));
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                files.push((path, dataset::file_digest(&bytes)));
                index.insert(key.clone(), files.len() - 1);
            }
        }
    }
    let run = embed_all(home, &spec, &files)?;
    let (metric, cosine) = dataset::pack_metric(home, &a.engine.pack)?;
    let misses = run.results.iter().filter(|e| !e.detected).count();
    let mut scores: Vec<Vec<(f64, bool)>> = Vec::new();
    for fold in &folds {
        let mut fs = Vec::with_capacity(fold.len());
        for pair in fold {
            let (ea, eb) = (&run.results[index[&pair.a]], &run.results[index[&pair.b]]);
            match (&ea.embedding, &eb.embedding) {
                (Some(x), Some(y)) => {
                    fs.push((report::dissimilarity(cosine, metric, x, y), pair.same))
                }
                _ => bail!(
                    "{} or {}: {}",
                    files[index[&pair.a]].0.display(),
                    files[index[&pair.b]].0.display(),
                    ea.error.clone().or(eb.error.clone()).unwrap_or_default()
                ),
            }
        }
        scores.push(fs);
    }
    let to_score = |d: f64| if cosine { 1.0 - d } else { d };
    let (accs, thresholds): (Vec<f64>, Vec<f64>) = cross_fold(&scores)
        .into_iter()
        .map(|(acc, t)| (acc, to_score(t)))
        .unzip();
    let mean = accs.iter().sum::<f64>() / accs.len() as f64;
    let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len() as f64).sqrt();
    let pooled: Vec<_> = scores.iter().flatten().copied().collect();
    let (tar2, t2, nimp) = tar_at_fmr(&pooled, 1e-2);
    let (tar3, t3, _) = tar_at_fmr(&pooled, 1e-3);
    let out = json!({
        "pack": a.engine.pack,
        "flip": a.flip,
        "jitter": a.jitter,
        "upsample": a.engine.upsample,
        "folds": scores.len(),
        "pairs": pooled.len(),
        "images": files.len(),
        "failures_to_detect": misses,
        "accuracy_mean": mean,
        "accuracy_std": std,
        "fold_accuracy": accs,
        "fold_thresholds": thresholds,
        "impostor_comparisons": nimp,
        "tar_at_fmr_1e-2": tar2, "threshold_at_fmr_1e-2": to_score(t2),
        "tar_at_fmr_1e-3": tar3, "threshold_at_fmr_1e-3": to_score(t3),
        "embedded": run.computed, "from_cache": run.from_cache,
        "seconds": run.seconds,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} folds, {} pairs, {} images ({} failures to detect, {} from cache), {:.1} s",
            scores.len(),
            pooled.len(),
            files.len(),
            misses,
            run.from_cache,
            run.seconds
        );
        println!("accuracy        {:.2}% ± {:.2}", 100.0 * mean, 100.0 * std);
        println!(
            "TAR @ FMR 1e-2  {:.2}% (threshold {:.4}, {nimp} impostor pairs)",
            100.0 * tar2,
            to_score(t2)
        );
        println!(
            "TAR @ FMR 1e-3  {:.2}% (threshold {:.4})",
            100.0 * tar3,
            to_score(t3)
        );
    }
    Ok(0)
}

/// One 1:N run of `eval identify`: its figures and which templates they came from.
#[derive(serde::Serialize)]
struct TemplatesResult {
    templates: &'static str,
    #[serde(flatten)]
    set: evaluation::model::OpenSet,
}

fn identify(home: &Path, a: IdentifyEvalArgs) -> Result<i32> {
    use gallery::transform::OrthogonalTransform;
    let ds = Dataset::load(&a.data.images, a.data.max_identities)?;
    let files = ds.files();
    let spec = a.data.spec()?;
    let run = embed_all(home, &spec, &files)?;
    let emb = &run.results;
    let (_, cosine) = dataset::pack_metric(home, &spec.engine.pack)?;
    let to_score = |d: f64| if cosine { 1.0 - d } else { d };
    let split = split_1n(&ds, emb);
    let dim = emb
        .iter()
        .find_map(|e| e.embedding.as_ref().map(|v| v.len()))
        .context("no image could be embedded")?;
    // Run once on plain templates and once through a keyed transform: the figures must agree.
    let protected = OrthogonalTransform::from_seed(&[42; 32], dim);
    let mut results = Vec::new();
    for (name, t) in [("plain", None), ("protected", Some(&protected))] {
        let s = search_1n(
            &ds,
            emb,
            &split.enrolled,
            &split.mated,
            &split.nonmated,
            cosine,
            t,
        )?;
        results.push(TemplatesResult {
            templates: name,
            set: open_set(&s, &to_score),
        });
    }
    // Bit for bit: the transform must not move a single search's outcome.
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let fnirs =
        |r: &TemplatesResult| -> Vec<f64> { r.set.fnir_at_fpir.iter().map(|x| x.fnir).collect() };
    let identical = bits(&results[0].set.cmc) == bits(&results[1].set.cmc)
        && bits(&fnirs(&results[0])) == bits(&fnirs(&results[1]));
    let misses = emb
        .iter()
        .filter(|e| e.embedding.is_some() && !e.detected)
        .count();
    let out = json!({
        "pack": spec.engine.pack,
        "dissimilarity": if cosine { "1 - cosine" } else { "euclidean distance" },
        "flip": spec.flip,
        "identities": ds.identities.len(),
        "enrolled": split.enrolled.len(),
        "mated_probes": split.mated.len(),
        "nonmated_probes": split.nonmated.len(),
        "failures_to_detect": misses,
        "duplicate_images_excluded": ds.duplicates,
        "embed_seconds": run.seconds,
        "from_cache": run.from_cache,
        "results": results,
        "protected_equals_plain": identical,
    });
    if a.json {
        println!("{out}");
    } else {
        println!("1:N on {} identities: gallery {}, mated probes {}, non-mated probes {}, failures to detect {}, byte-identical images left out {}",
            ds.identities.len(), split.enrolled.len(), split.mated.len(), split.nonmated.len(), misses, ds.duplicates.len());
        for r in &results {
            let f = |i: usize| {
                r.set
                    .fnir_at_fpir
                    .get(i)
                    .map_or(f64::NAN, |x| x.fnir * 100.0)
            };
            println!("  {:9}: rank-1 {:.2}%  rank-10 {:.2}%  FNIR@FPIR 1e-1 {:.2}%  1e-2 {:.2}%  1e-3 {:.2}%",
                r.templates, r.set.rank1 * 100.0, r.set.rank10 * 100.0, f(0), f(1), f(2));
        }
        println!("  protected templates give identical figures: {identical}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lfw_pairs_format() {
        let f = parse_pairs("2 1\nA 1 2\nB 1 C 3\nD 4 5\nE 1 F 1\n").unwrap();
        assert_eq!(f.len(), 2);
        assert!(f[0][0].same && !f[0][1].same);
        assert_eq!(f[1][1].b, ("F".to_string(), 1));
        assert!(parse_pairs("2 1\nA 1 2\n").is_err());
    }

    #[test]
    fn threshold_selection_and_tar_on_known_scores() {
        // Genuine distances 0.1..0.4, impostors 0.5..0.9 except one impostor at 0.35.
        let s = vec![
            (0.1, true),
            (0.2, true),
            (0.3, true),
            (0.4, true),
            (0.35, false),
            (0.6, false),
            (0.7, false),
            (0.9, false),
        ];
        let (acc, t) = fold_accuracy(&s, &s);
        // Best threshold 0.3 (7/8) or 0.4 (7/8): the first maximum wins.
        assert_eq!(t, 0.3);
        assert_eq!(acc, 7.0 / 8.0);
        // FMR 0: threshold just below 0.35 accepts 3 of 4 genuine pairs.
        let (tar, thr, n) = tar_at_fmr(&s, 0.0);
        assert_eq!(n, 4);
        assert!((thr - 0.35).abs() < 1e-9);
        assert_eq!(tar, 0.75);
        // FMR 0.25 allows one false match: threshold just below 0.6 accepts all genuine.
        assert_eq!(tar_at_fmr(&s, 0.25).0, 1.0);
    }
}
