//! `facegate eval pairs`: the standard LFW pairs protocol on a directory of images.
//!
//! For each fold the threshold is chosen on the other folds (maximising accuracy), as in the
//! reference anchor script; accuracy is reported as mean ± std over folds. TAR at a target FMR
//! uses all folds' pairs pooled, with the number of impostor comparisons stated.

use crate::engine::{load, EngineArgs};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vision::decode::{decode_file, DecodeLimits};
use vision::geometry::Rect;
use vision::mmod::Detection;
use vision::pipeline::{compare, is_match, Pipeline};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// LFW-style pairs protocol: accuracy over folds, TAR at FMR, failures to detect.
    Pairs(PairsArgs),
    /// 1:N open-set protocol on an identity/image directory: rank-1, FNIR at FPIR.
    Identify(IdentifyEvalArgs),
    /// 1:1 report: FNMR at FMR 1e-1..1e-6, EER, DET curve and score histograms (SVG), HTML + JSON.
    Report(crate::cmd_report::ReportArgs),
}

#[derive(Args)]
pub struct IdentifyEvalArgs {
    /// Directory of identity/image folders (LFW layout).
    #[arg(long)]
    pub images: PathBuf,
    /// Average each embedding with the embedding of the mirrored chip.
    #[arg(long)]
    pub flip: bool,
    /// Print the full result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Use only the first N identities (sorted by name), for quick checks.
    #[arg(long)]
    pub max_identities: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args)]
pub struct PairsArgs {
    /// Directory of identity/identity_NNNN.jpg images.
    #[arg(long)]
    pub images: PathBuf,
    /// Pairs file in LFW format (first line: folds and pairs per class per fold).
    #[arg(long)]
    pub pairs: PathBuf,
    /// Average each embedding with the embedding of the mirrored chip.
    #[arg(long)]
    pub flip: bool,
    /// Print the full result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Use only the first N folds (quick checks).
    #[arg(long)]
    pub max_folds: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
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

pub fn embedding_for(
    p: &Pipeline,
    path: &Path,
    flip: bool,
    misses: &mut usize,
) -> Result<Vec<f32>> {
    let img = decode_file(path, &DecodeLimits::default())?;
    let dets = p.detect(&img)?;
    let (w, h) = (img.width() as f64, img.height() as f64);
    let (cx, cy) = (w / 2.0, h / 2.0);
    let det = match dets.iter().min_by(|a, b| {
        let d = |r: &Rect| (r.center().x - cx).powi(2) + (r.center().y - cy).powi(2);
        d(&a.rect).total_cmp(&d(&b.rect))
    }) {
        Some(d) => *d,
        None => {
            // Same fallback as the dlib anchor: the central 40% of the image.
            *misses += 1;
            let r = Rect {
                left: (w * 0.3).floor(),
                top: (h * 0.3).floor(),
                right: (w * 0.7).floor(),
                bottom: (h * 0.7).floor(),
            };
            Detection {
                rect: r,
                score: 0.0,
                landmarks: None,
            }
        }
    };
    let face = p
        .faces_from_detections(&img, &[det])?
        .pop()
        .context("no face")?;
    if !flip {
        return Ok(face.embedding);
    }
    let chip = face.chip.context("no chip")?;
    let mirrored = image::imageops::flip_horizontal(&chip);
    let e2 = p
        .embed_aligned(&[mirrored])?
        .pop()
        .context("no embedding")?;
    Ok(face
        .embedding
        .iter()
        .zip(&e2)
        .map(|(a, b)| (a + b) / 2.0)
        .collect())
}

pub fn run(home: &Path, cmd: EvalCommand) -> Result<i32> {
    let a = match cmd {
        EvalCommand::Pairs(a) => a,
        EvalCommand::Identify(a) => return identify(home, a),
        EvalCommand::Report(a) => return crate::cmd_report::run(home, a),
    };
    let text = std::fs::read_to_string(&a.pairs)
        .with_context(|| format!("reading {}", a.pairs.display()))?;
    let mut folds = parse_pairs(&text)?;
    if let Some(m) = a.max_folds {
        folds.truncate(m);
    }
    let p = load(home, &a.engine)?;
    let metric = p.metric();
    let sign = if is_match(metric, 0.0, 1.0) {
        1.0
    } else {
        -1.0
    };
    let mut cache: HashMap<(String, u32), Vec<f32>> = HashMap::new();
    let mut misses = 0usize;
    let started = Instant::now();
    let total: usize = folds.iter().map(|f| f.len()).sum();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} pairs ({eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("embedding");
    let mut scores: Vec<Vec<(f64, bool)>> = Vec::new();
    for fold in &folds {
        let mut fs = Vec::with_capacity(fold.len());
        for pair in fold {
            for key in [&pair.a, &pair.b] {
                if !cache.contains_key(key) {
                    let path = a
                        .images
                        .join(&key.0)
                        .join(format!("{}_{:04}.jpg", key.0, key.1));
                    let e = embedding_for(&p, &path, a.flip, &mut misses)
                        .with_context(|| format!("{}", path.display()))?;
                    cache.insert(key.clone(), e);
                }
            }
            let s = compare(metric, &cache[&pair.a], &cache[&pair.b]);
            fs.push((sign * s, pair.same));
            bar.inc(1);
        }
        scores.push(fs);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let mut accs = Vec::new();
    let mut thresholds = Vec::new();
    for k in 0..scores.len() {
        let train: Vec<_> = scores
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        let train = if train.is_empty() {
            scores[k].clone()
        } else {
            train
        };
        let (acc, t) = fold_accuracy(&train, &scores[k]);
        accs.push(acc);
        thresholds.push(sign * t);
    }
    let mean = accs.iter().sum::<f64>() / accs.len() as f64;
    let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len() as f64).sqrt();
    let pooled: Vec<_> = scores.iter().flatten().copied().collect();
    let (tar2, t2, nimp) = tar_at_fmr(&pooled, 1e-2);
    let (tar3, t3, _) = tar_at_fmr(&pooled, 1e-3);
    let out = json!({
        "pack": p.models.manifest.name,
        "flip": a.flip,
        "upsample": a.engine.upsample,
        "folds": scores.len(),
        "pairs": pooled.len(),
        "images": cache.len(),
        "failures_to_detect": misses,
        "accuracy_mean": mean,
        "accuracy_std": std,
        "fold_accuracy": accs,
        "fold_thresholds": thresholds,
        "impostor_comparisons": nimp,
        "tar_at_fmr_1e-2": tar2, "threshold_at_fmr_1e-2": sign * t2,
        "tar_at_fmr_1e-3": tar3, "threshold_at_fmr_1e-3": sign * t3,
        "seconds": secs,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} folds, {} pairs, {} images ({} failures to detect), {:.1} s",
            scores.len(),
            pooled.len(),
            cache.len(),
            misses,
            secs
        );
        println!("accuracy        {:.2}% ± {:.2}", 100.0 * mean, 100.0 * std);
        println!(
            "TAR @ FMR 1e-2  {:.2}% (threshold {:.4}, {nimp} impostor pairs)",
            100.0 * tar2,
            sign * t2
        );
        println!(
            "TAR @ FMR 1e-3  {:.2}% (threshold {:.4})",
            100.0 * tar3,
            sign * t3
        );
    }
    Ok(0)
}

/// Open-set figures from each probe's best candidate: `mated` holds (rank-1 is the mate, rank-1
/// distance), `nonmated` the rank-1 distance of searches for people not enrolled. The threshold
/// for a target FPIR is the largest distance at which at most that fraction of non-mated searches
/// return a candidate; FNIR is the fraction of mated searches without their mate at rank 1 within it.
pub fn fnir_at_fpir(mated: &[(bool, f64)], nonmated: &[f64], fpir: f64) -> (f64, f64) {
    let mut nm = nonmated.to_vec();
    nm.sort_by(f64::total_cmp);
    let allowed = (fpir * nm.len() as f64).floor() as usize;
    // Distances strictly below nm[allowed] pass: exactly `allowed` non-mated searches do.
    let t = nm.get(allowed).copied().unwrap_or(f64::INFINITY);
    let misses = mated.iter().filter(|(ok, d)| !(*ok && *d < t)).count();
    (misses as f64 / mated.len().max(1) as f64, t)
}

fn identify(home: &Path, a: IdentifyEvalArgs) -> Result<i32> {
    use gallery::index::ExactIndex;
    use gallery::transform::OrthogonalTransform;
    let mut people: Vec<(String, Vec<PathBuf>)> = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&a.images)
        .with_context(|| format!("reading {}", a.images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    if let Some(m) = a.max_identities {
        dirs.truncate(m);
    }
    // The same photo filed under two names (LFW has a few) would be a "non-mated" search that
    // finds itself: such byte-identical files are left out after their first occurrence, and counted.
    let mut seen_files = std::collections::HashSet::new();
    let mut duplicates = Vec::new();
    for d in dirs {
        let mut imgs: Vec<PathBuf> = std::fs::read_dir(&d)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        imgs.sort();
        imgs.retain(|p| {
            let h = std::fs::read(p)
                .map(|b| vision::pack::sha256_hex(&b))
                .unwrap_or_default();
            let fresh = seen_files.insert(h);
            if !fresh {
                duplicates.push(p.display().to_string());
            }
            fresh
        });
        if !imgs.is_empty() {
            people.push((
                d.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                imgs,
            ));
        }
    }
    let p = load(home, &a.engine)?;
    // Cosine packs: unit-length templates make Euclidean ranking the cosine ranking; distances
    // are reported as such (cosine similarity = 1 - d^2/2).
    let cosine = !is_match(p.metric(), 0.0, 1.0);
    let total: usize = people.iter().map(|p| p.1.len()).sum();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "embedding [{bar:40}] {pos}/{len} images ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut misses = 0usize;
    let mut emb: Vec<Vec<Vec<f32>>> = Vec::with_capacity(people.len());
    for (_, imgs) in &people {
        let mut v = Vec::with_capacity(imgs.len());
        for img in imgs {
            let mut e = embedding_for(&p, img, a.flip, &mut misses)
                .with_context(|| format!("{}", img.display()))?;
            if cosine {
                let n = e.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                e.iter_mut().for_each(|x| *x /= n);
            }
            v.push(e);
            bar.inc(1);
        }
        emb.push(v);
    }
    bar.finish_and_clear();
    let embed_s = started.elapsed().as_secs_f64();
    // Protocol: people with 2+ images enrol their first and probe with the rest (mated); people
    // with one image alternate between enrolled distractor and non-mated probe.
    let mut enrolled: Vec<(usize, &Vec<f32>)> = Vec::new();
    let mut mated: Vec<(usize, &Vec<f32>)> = Vec::new();
    let mut nonmated: Vec<&Vec<f32>> = Vec::new();
    let mut singles = 0usize;
    for (i, e) in emb.iter().enumerate() {
        if e.len() >= 2 {
            enrolled.push((i, &e[0]));
            mated.extend(e[1..].iter().map(|x| (i, x)));
        } else {
            if singles.is_multiple_of(2) {
                enrolled.push((i, &e[0]));
            } else {
                nonmated.push(&e[0]);
            }
            singles += 1;
        }
    }
    let dim = enrolled.first().map(|e| e.1.len()).context("no images")?;
    // Run once on plain templates and once through a keyed transform: the figures must agree.
    let mut results = Vec::new();
    for (name, transform) in [
        ("plain", None),
        (
            "protected",
            Some(OrthogonalTransform::from_seed(&[42; 32], dim)),
        ),
    ] {
        let tf = |x: &Vec<f32>| -> Vec<f32> {
            transform.as_ref().map_or_else(|| x.clone(), |t| t.apply(x))
        };
        let mut idx = ExactIndex::new(dim);
        for (id, x) in &enrolled {
            idx.push(*id as u64, &tf(x), i64::MAX);
        }
        let search = |q: &Vec<f32>, k: usize| -> Vec<(u64, f64)> {
            let q = tf(q);
            let q2: f64 = q.iter().map(|v| (*v as f64).powi(2)).sum();
            idx.search(&[&q[..]], k, None, 0)
                .pop()
                .unwrap_or_default()
                .into_iter()
                .map(|h| (h.id, (q2 - 2.0 * h.score as f64).max(0.0).sqrt()))
                .collect()
        };
        let mut rank1 = 0usize;
        let mut rank10 = 0usize;
        let mut mated_top: Vec<(bool, f64)> = Vec::with_capacity(mated.len());
        for (id, q) in &mated {
            let hits = search(q, 10);
            let ok1 = hits.first().is_some_and(|h| h.0 == *id as u64);
            rank1 += ok1 as usize;
            rank10 += hits.iter().any(|h| h.0 == *id as u64) as usize;
            mated_top.push((ok1, hits.first().map_or(f64::INFINITY, |h| h.1)));
        }
        let nm_top: Vec<f64> = nonmated
            .iter()
            .map(|q| search(q, 1).first().map_or(f64::INFINITY, |h| h.1))
            .collect();
        let mut at = Vec::new();
        for fpir in [1e-1, 1e-2, 1e-3] {
            let (fnir, t) = fnir_at_fpir(&mated_top, &nm_top, fpir);
            let supported = (fpir * nm_top.len() as f64) >= 1.0;
            at.push(
                json!({"fpir": fpir, "fnir": fnir, "threshold": t, "supported_by_data": supported}),
            );
        }
        results.push(json!({
            "templates": name,
            "rank1": rank1 as f64 / mated.len().max(1) as f64,
            "rank10": rank10 as f64 / mated.len().max(1) as f64,
            "fnir_at_fpir": at,
        }));
    }
    let identical = results[0]["rank1"] == results[1]["rank1"]
        && results[0]["fnir_at_fpir"]
            .as_array()
            .map(|v| v.iter().map(|x| &x["fnir"]).collect::<Vec<_>>())
            == results[1]["fnir_at_fpir"]
                .as_array()
                .map(|v| v.iter().map(|x| &x["fnir"]).collect::<Vec<_>>());
    let out = json!({
        "pack": p.models.manifest.name,
        "distance": if cosine { "euclidean on unit templates (cosine = 1 - d^2/2)" } else { "euclidean" },
        "flip": a.flip,
        "identities": people.len(),
        "enrolled": enrolled.len(),
        "mated_probes": mated.len(),
        "nonmated_probes": nonmated.len(),
        "failures_to_detect": misses,
        "duplicate_images_excluded": duplicates,
        "embed_seconds": embed_s,
        "results": results,
        "protected_equals_plain": identical,
    });
    if a.json {
        println!("{out}");
    } else {
        println!("1:N on {} identities: gallery {}, mated probes {}, non-mated probes {}, failures to detect {}, byte-identical images left out {}",
            people.len(), enrolled.len(), mated.len(), nonmated.len(), misses, duplicates.len());
        for r in out["results"].as_array().into_iter().flatten() {
            let f = |i: usize| r["fnir_at_fpir"][i]["fnir"].as_f64().unwrap_or(f64::NAN) * 100.0;
            println!("  {:9}: rank-1 {:.2}%  rank-10 {:.2}%  FNIR@FPIR 1e-1 {:.2}%  1e-2 {:.2}%  1e-3 {:.2}%",
                r["templates"].as_str().unwrap_or(""), r["rank1"].as_f64().unwrap_or(0.0) * 100.0,
                r["rank10"].as_f64().unwrap_or(0.0) * 100.0, f(0), f(1), f(2));
        }
        println!("  protected templates give identical figures: {identical}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnir_at_fpir_on_known_scores() {
        // 10 non-mated searches: at FPIR 0.1 one may pass, so the threshold is the second-lowest
        // non-mated distance (0.5); mated searches need their mate at rank 1 and below 0.5.
        let nonmated = [0.45, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4];
        let mated = [
            (true, 0.3),
            (true, 0.49),
            (true, 0.5),
            (false, 0.2),
            (true, 0.6),
        ];
        let (fnir, t) = fnir_at_fpir(&mated, &nonmated, 0.1);
        assert_eq!(t, 0.5);
        assert!((fnir - 3.0 / 5.0).abs() < 1e-12);
        // FPIR 0: nothing non-mated may pass: threshold is the lowest non-mated distance.
        let (fnir, t) = fnir_at_fpir(&mated, &nonmated, 0.0);
        assert_eq!(t, 0.45);
        assert!((fnir - 4.0 / 5.0).abs() < 1e-12);
    }

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
