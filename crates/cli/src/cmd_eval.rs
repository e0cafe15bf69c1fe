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

fn embedding_for(p: &Pipeline, path: &Path, flip: bool, misses: &mut usize) -> Result<Vec<f32>> {
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
    let EvalCommand::Pairs(a) = cmd;
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
