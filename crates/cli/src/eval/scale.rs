//! FPIR and FNIR as the gallery grows (issue #19): the pack's impostor tail fitted on every
//! impostor pair of the data set, checked against the measured searches at every gallery size
//! the data allows, then carried to 10^8.
//!
//! The non-mated probes' own pairs are left out of the fit, so the check of FPIR is out of
//! sample for the probes (the enrolled side is in both — LFW has no third set of people).

use super::dataset::{Dataset, Embedded};
use super::report::{Searches, Split};
use evaluation::model::{GalleryScale, Interval, ScaleCheck, ScalePrediction, TailFitPoint};
use evaluation::plot::{Axis, Chart, Series};
use evaluation::{metrics, scale};
use std::collections::{HashMap, HashSet};
use template::tail::ImpostorTail;

/// Target FPIRs checked at every measured gallery size and predicted beyond.
const TARGETS: [f64; 3] = [1e-1, 1e-2, 1e-3];
/// Gallery sizes the prediction is carried to.
const PREDICTED_SIZES: [f64; 7] = [1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];
/// At most this many impostor pairs are scored (every k-th beyond): 60 M is ~1 GB here.
const MAX_PAIRS: u64 = 60_000_000;
/// The level at which probes' pass rates are compared (see `scale::probe_spread`).
const SPREAD_LEVEL: f64 = 1e-2;

pub struct Inputs<'a> {
    pub ds: &'a Dataset,
    pub emb: &'a [Embedded],
    pub split: &'a Split,
    /// (gallery size, the searches made on a gallery of that size).
    pub runs: &'a [(usize, &'a Searches)],
    pub dissimilarity: &'a dyn Fn(&[f32], &[f32]) -> f64,
    pub to_score: &'a dyn Fn(f64) -> f64,
    pub replicates: usize,
    pub seed: u64,
}

/// The impostor side of a pack's behaviour on a data set: the fitted tail and what it was
/// fitted on (for the bootstrap).
pub struct FittedTail {
    pub tail: ImpostorTail,
    /// Impostor dissimilarities, ascending, with both sides' identities and each pair's weight.
    pub d: Vec<f64>,
    pub ids: Vec<(u32, u32)>,
    pub weights: Vec<f64>,
}

/// Fit the impostor tail on every pair of images of different people, `left_out` images
/// excluded, each pair weighted 1/(images of one × images of the other) so that every pair of
/// people counts once (a gallery holds one template per person); the probe spread from each
/// image's pass rate at F = [`SPREAD_LEVEL`]. `None` with too few pairs for a tail.
pub fn fit_tail(
    ds: &Dataset,
    emb: &[Embedded],
    left_out: &HashSet<u32>,
    dissimilarity: &dyn Fn(&[f32], &[f32]) -> f64,
) -> Option<FittedTail> {
    let imgs: Vec<(u32, u32, &[f32])> = ds
        .images
        .iter()
        .enumerate()
        .filter(|(k, _)| !left_out.contains(&(*k as u32)))
        .filter_map(|(k, im)| Some((k as u32, im.identity, emb[k].embedding.as_deref()?)))
        .collect();
    let n = imgs.len() as u64;
    let stride = (n * n.saturating_sub(1) / 2).div_ceil(MAX_PAIRS).max(1);
    let mut imp: Vec<(f64, u32, u32)> = Vec::new();
    let mut k = 0u64;
    for (a, x) in imgs.iter().enumerate() {
        for y in &imgs[a + 1..] {
            k += 1;
            if x.1 == y.1 || !k.is_multiple_of(stride) {
                continue;
            }
            imp.push((dissimilarity(x.2, y.2), x.0, y.0));
        }
    }
    imp.sort_by(|p, q| p.0.total_cmp(&q.0));
    // Each image's passes at the spread level, over its comparisons.
    let level_t = imp.get((imp.len() as f64 * SPREAD_LEVEL) as usize)?.0;
    // Indexed by image, so the spread's sums run in one order and a rerun gives the same bits.
    let mut counts = vec![(0u64, 0u64); ds.images.len()];
    for &(d, a, b) in &imp {
        for img in [a, b] {
            let c = &mut counts[img as usize];
            c.0 += u64::from(d < level_t);
            c.1 += 1;
        }
    }
    let passed = imp.partition_point(|p| p.0 < level_t);
    counts.retain(|c| c.1 > 0);
    let spread = scale::probe_spread(&counts, passed as f64 / imp.len() as f64);
    let identity = |img: u32| ds.images[img as usize].identity;
    let d: Vec<f64> = imp.iter().map(|x| x.0).collect();
    let ids: Vec<(u32, u32)> = imp.iter().map(|x| (identity(x.1), identity(x.2))).collect();
    drop(imp);
    let mut images_of: HashMap<u32, f64> = HashMap::new();
    for im in &imgs {
        *images_of.entry(im.1).or_default() += 1.0;
    }
    let weights: Vec<f64> = ids
        .iter()
        .map(|(a, b)| 1.0 / (images_of.get(a).unwrap_or(&1.0) * images_of.get(b).unwrap_or(&1.0)))
        .collect();
    let mut tail = scale::fit(&d, &weights, &scale::TailFitOptions::default())?;
    tail.probe_spread = spread;
    Some(FittedTail {
        tail,
        d,
        ids,
        weights,
    })
}

pub fn gallery_scale(i: &Inputs) -> Option<GalleryScale> {
    let identity = |img: u32| i.ds.images[img as usize].identity;
    let embedding = |img: u32| i.emb[img as usize].embedding.as_deref();
    // The non-mated probes' pairs stay out: the check below is out of sample for them.
    let nonmated: HashSet<u32> = i.split.nonmated.iter().copied().collect();
    let FittedTail {
        tail,
        d,
        ids,
        weights,
    } = fit_tail(i.ds, i.emb, &nonmated, i.dissimilarity)?;
    let spread = tail.probe_spread.clone();
    let opts = scale::TailFitOptions::default();

    // Each mated probe's dissimilarity to its enrolled mate (the first image of its identity).
    let enrolled: HashMap<u32, u32> = i.split.enrolled.iter().map(|&g| (identity(g), g)).collect();
    let mate: HashMap<u32, f64> = i
        .split
        .mated
        .iter()
        .filter_map(|&m| {
            let g = *enrolled.get(&identity(m))?;
            Some((m, (i.dissimilarity)(embedding(m)?, embedding(g)?)))
        })
        .collect();
    let mates_of = |s: &Searches| -> Vec<(u32, f64)> {
        s.mated
            .iter()
            .map(|m| {
                (
                    identity(m.0),
                    mate.get(&m.0).copied().unwrap_or(f64::INFINITY),
                )
            })
            .collect()
    };
    let all_mates = i
        .runs
        .iter()
        .max_by_key(|r| r.0)
        .map(|r| mates_of(r.1))
        .unwrap_or_default();

    // Point estimates at each measured size, then the same quantities in every replicate.
    struct Check {
        n: usize,
        target: f64,
        t: f64,
        mates: Vec<f64>,
        nonmated: Vec<f64>,
        mated: Vec<(bool, f64)>,
    }
    let mut checks = Vec::new();
    for &(n, s) in i.runs {
        for &target in &TARGETS {
            // A target the searches cannot measure (fewer than ten expected) is not checked.
            if (s.nonmated.len() as f64) * target < 10.0 {
                continue;
            }
            checks.push(Check {
                n,
                target,
                t: tail.threshold_for_fpir(target, n as f64),
                mates: mates_of(s).into_iter().map(|m| m.1).collect(),
                nonmated: s.nonmated.iter().map(|x| x.1).collect(),
                mated: s.mated.iter().map(|m| (m.3, m.2)).collect(),
            });
        }
    }
    let grid: Vec<(f64, f64)> = PREDICTED_SIZES
        .iter()
        .flat_map(|&n| TARGETS.iter().map(move |&f| (n, f)))
        .collect();
    let all_d: Vec<f64> = all_mates.iter().map(|m| m.1).collect();
    let data = scale::ScaleData {
        impostor: &d,
        impostor_ids: &ids,
        impostor_weights: &weights,
        mates: &all_mates,
        identities: i.ds.identities.len(),
        probe_spread: &spread,
    };
    // Replicate values: shape, then per check (FPIR at its threshold, FNIR there), then per grid
    // point (threshold, FNIR). Check FNIRs use the whole mated set's replicate: the subsets'
    // mates are a sample of it.
    let ci = scale::bootstrap(&data, &opts, i.replicates, i.seed ^ 0x5CA1E, |m, mates| {
        let mut v = vec![m.shape];
        for c in &checks {
            v.push(m.fpir(c.t, c.n as f64));
            v.push(m.fnir(&c.mates, c.t, c.n as f64));
        }
        for &(n, f) in &grid {
            let t = m.threshold_for_fpir(f, n);
            v.push(t);
            v.push(m.fnir(mates, t, n));
        }
        v
    });
    let interval = |k: usize| ci.get(k).map(|&(lo, hi)| Interval(lo, hi));
    let score_interval = |k: usize| {
        ci.get(k).map(|&(lo, hi)| {
            let (a, b) = ((i.to_score)(lo), (i.to_score)(hi));
            Interval(a.min(b), a.max(b))
        })
    };
    let check_rows = checks
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let passed = c.nonmated.iter().filter(|x| **x < c.t).count();
            let (lo, hi) = scale::wilson(passed, c.nonmated.len());
            ScaleCheck {
                gallery_size: c.n,
                target_fpir: c.target,
                threshold: (i.to_score)(c.t),
                predicted_fpir_ci95: interval(1 + 2 * k),
                nonmated_searches: c.nonmated.len(),
                measured_fpir: metrics::fpir_at(&c.nonmated, c.t),
                measured_fpir_ci95: Interval(lo, hi),
                within_measured_interval: lo <= c.target && c.target <= hi,
                predicted_fnir: tail.fnir(&c.mates, c.t, c.n as f64),
                predicted_fnir_ci95: interval(2 + 2 * k),
                mated_searches: c.mated.len(),
                measured_fnir: metrics::fnir_at(&c.mated, c.t),
            }
        })
        .collect();
    let base = 1 + 2 * checks.len();
    let predictions = grid
        .iter()
        .enumerate()
        .map(|(k, &(n, f))| {
            let t = tail.threshold_for_fpir(f, n);
            ScalePrediction {
                gallery_size: n,
                fpir: f,
                threshold: (i.to_score)(t),
                threshold_ci95: score_interval(base + 2 * k),
                fnir: tail.fnir(&all_d, t, n),
                fnir_ci95: interval(base + 2 * k + 1),
            }
        })
        .collect();
    let tail_fit = scale::tail_points(&d, &weights, &tail)
        .into_iter()
        .map(|(t, measured, model)| TailFitPoint {
            threshold: (i.to_score)(t),
            measured,
            model,
        })
        .collect();
    Some(GalleryScale {
        method: format!(
            "FPIR(t, N) = mean over probes of 1 - (1 - lambda F(t))^N, with F the impostor \
             distribution: measured above the lowest {:.0e} of {} impostor pairs (every pair of \
             different people's images, non-mated probes' pairs left out), a generalised Pareto \
             tail below it fitted by probability-weighted moments; lambda, how much more or less \
             often a probe passes impostors than the average, from each image's pass rate at \
             F = 1e-2 (counting noise shrunk out); FNIR(t, N) = share of mated searches whose \
             mate passes t with none of N - 1 others closer; intervals: {} bootstrap replicates \
             by identity (impostor pairs and mated searches; lambda as measured); measured FPIR \
             intervals: Wilson 95%",
            opts.tail_fraction,
            d.len(),
            i.replicates
        ),
        shape_ci95: interval(0),
        tail,
        tail_fit,
        checks: check_rows,
        predictions,
    })
}

/// The figures of the section: FNIR at FPIR 1e-2 predicted from 10^2 to 10^8 (measured points
/// marked), and each pack's tail fit (measured against model F on a log scale).
pub fn figures(packs: &[evaluation::model::PackReport]) -> Vec<(String, Chart)> {
    let mut growth = Vec::new();
    let mut out = Vec::new();
    for p in packs {
        let Some(s) = &p.one_to_n.scale else { continue };
        growth.push(Series {
            name: format!("{} (predicted)", p.label),
            points: s
                .predictions
                .iter()
                .filter(|x| x.fpir == 1e-2)
                .map(|x| (x.gallery_size, x.fnir))
                .collect(),
            marks: s
                .checks
                .iter()
                .filter(|c| c.target_fpir == 1e-2)
                .map(|c| (c.gallery_size as f64, c.measured_fnir, String::new()))
                .collect(),
        });
        let lo = s
            .tail_fit
            .iter()
            .map(|f| f.threshold)
            .fold(f64::INFINITY, f64::min);
        let hi = s
            .tail_fit
            .iter()
            .map(|f| f.threshold)
            .fold(f64::NEG_INFINITY, f64::max);
        if !(lo.is_finite() && hi > lo) {
            continue;
        }
        let pad = 0.05 * (hi - lo);
        out.push((
            format!("tail-{}.svg", p.label),
            Chart {
                title: format!(
                    "{}: impostor tail, measured (dots) against the fitted model (line)",
                    p.label
                ),
                x: Axis {
                    label: "threshold (pack's score)".into(),
                    log: false,
                    min: lo - pad,
                    max: hi + pad,
                },
                y: Axis {
                    label: "share of impostor comparisons passing".into(),
                    log: true,
                    min: 1e-8,
                    max: 1e-2,
                },
                series: vec![Series {
                    name: "model".into(),
                    points: s.tail_fit.iter().map(|f| (f.threshold, f.model)).collect(),
                    marks: s
                        .tail_fit
                        .iter()
                        .map(|f| (f.threshold, f.measured, String::new()))
                        .collect(),
                }],
            },
        ));
    }
    if !growth.is_empty() {
        out.push((
            "gallery-scale.svg".into(),
            Chart {
                title: "FNIR at FPIR 1e-2 as the gallery grows: predicted (line), measured (dots)"
                    .into(),
                x: Axis {
                    label: "gallery size (people enrolled)".into(),
                    log: true,
                    min: 1e2,
                    max: 1e8,
                },
                y: Axis {
                    label: "FNIR".into(),
                    log: false,
                    min: 0.0,
                    max: 1.0,
                },
                series: growth,
            },
        ));
    }
    out
}
