//! Fitting a pack's [`ImpostorTail`] to measured impostor scores, its bootstrap by identity, and
//! the interval of a measured proportion — what the report needs to predict FPIR and FNIR at
//! gallery sizes no data set reaches, and to check the prediction where one does.
//!
//! The tail is a generalised Pareto distribution (GPD) of the exceedance `u − d` below a
//! threshold u that leaves a fixed share of the impostor comparisons in the tail (the
//! peaks-over-threshold form of extreme-value theory: for almost any score distribution the
//! exceedances over a high enough threshold are GPD). Parameters by probability-weighted
//! moments (Hosking & Wallis 1987), which need no iteration, are stable in small tails and take
//! weights, so a bootstrap replicate is just other weights, as elsewhere in this crate.

use crate::metrics::{redraw, Replicates, SplitMix};
use template::tail::ImpostorTail;

/// How much of the impostor distribution the tail is fitted to.
#[derive(Debug, Clone, Copy)]
pub struct TailFitOptions {
    /// Share of impostor comparisons below the tail's start u.
    pub tail_fraction: f64,
    /// At least this many comparisons in the tail (a PWM fit on fewer is noise).
    pub min_tail: usize,
    /// Knots of the measured body above u.
    pub body_knots: usize,
}

impl Default for TailFitOptions {
    fn default() -> Self {
        TailFitOptions {
            tail_fraction: 1e-3,
            min_tail: 200,
            body_knots: 96,
        }
    }
}

/// Fit the model to impostor dissimilarities `d` (sorted ascending) with weights `w` (unit
/// weights for the estimate, identity draws for a bootstrap replicate). `None` when there are
/// too few comparisons (fewer than ten times `min_tail`) or the tail carries no weight.
pub fn fit(d: &[f64], w: &[f64], o: &TailFitOptions) -> Option<ImpostorTail> {
    let n = d.len();
    if n != w.len() || n < 10 * o.min_tail.max(1) {
        return None;
    }
    let wanted = ((n as f64 * o.tail_fraction) as usize)
        .max(o.min_tail)
        .min(n / 10);
    let u = d[wanted];
    // Ties at u stay out of the tail: F(u) counts comparisons strictly below it.
    let m = d.partition_point(|x| *x < u);
    let total: f64 = w.iter().sum();
    let tail_w: f64 = w[..m].iter().sum();
    if !(total > 0.0 && tail_w > 0.0) {
        return None;
    }
    let (shape, scale) = pwm_gpd(d[..m].iter().rev().map(|x| u - x), w[..m].iter().rev())?;
    let tail_mass = tail_w / total;
    let body = body_knots(d, w, total, m, tail_mass, o.body_knots);
    let model = ImpostorTail {
        body,
        tail_start: u,
        tail_mass,
        shape,
        scale,
        impostor_pairs: n as u64,
        probe_spread: Vec::new(),
    };
    model.validate().ok().map(|_| model)
}

/// GPD (shape ξ, scale σ) by weighted probability-weighted moments from exceedances in
/// ascending order: α₀ = E[Y], α₁ = E[Y(1 − F(Y))], ξ = 2 − α₀/(α₀ − 2α₁),
/// σ = 2α₀α₁/(α₀ − 2α₁) (Hosking & Wallis, with their k = −ξ).
fn pwm_gpd<'a>(
    ys: impl Iterator<Item = f64> + Clone,
    ws: impl Iterator<Item = &'a f64> + Clone,
) -> Option<(f64, f64)> {
    let total: f64 = ws.clone().sum();
    let (mut a0, mut a1, mut cum) = (0.0, 0.0, 0.0);
    for (y, &w) in ys.zip(ws) {
        // Plotting position of this exceedance: the middle of its weight.
        let f = (cum + 0.5 * w) / total;
        a0 += w * y;
        a1 += w * y * (1.0 - f);
        cum += w;
    }
    a0 /= total;
    a1 /= total;
    let den = a0 - 2.0 * a1;
    if !(den > 0.0 && a0 > 0.0) {
        return None;
    }
    let shape = 2.0 - a0 / den;
    let scale = 2.0 * a0 * a1 / den;
    (scale > 0.0 && shape.is_finite()).then_some((shape, scale))
}

/// Measured body from u up: knots at log-spaced probabilities from the tail's mass to 1, each
/// (d, weight of comparisons strictly below d); the last just above the largest comparison.
fn body_knots(
    d: &[f64],
    w: &[f64],
    total: f64,
    m: usize,
    tail_mass: f64,
    knots: usize,
) -> Vec<(f64, f64)> {
    let mut body = vec![(d[m], tail_mass)];
    let ratio = (1.0 / tail_mass).powf(1.0 / knots.max(1) as f64);
    let mut target = tail_mass * ratio;
    let mut below: f64 = w[..m].iter().sum();
    let mut i = m;
    while i < d.len() {
        // Move to the next distinct value, accumulating the weight strictly below it.
        let v = d[i];
        let mut j = i;
        while j < d.len() && d[j] == v {
            below += w[j];
            j += 1;
        }
        i = j;
        let Some(&next) = d.get(i) else { break };
        let f = below / total;
        let last = body[body.len() - 1];
        if f >= target && f > last.1 && next > last.0 {
            body.push((next, f.min(1.0)));
            while target <= f {
                target *= ratio;
            }
        }
    }
    let top = d[d.len() - 1];
    let end = top + f64::EPSILON * top.abs().max(1.0);
    let last = body[body.len() - 1];
    if end > last.0 && last.1 < 1.0 {
        body.push((end, 1.0));
    }
    body
}

/// (threshold, measured F, model F) at a few depths of the tail (the k-th smallest comparison
/// for k = 1, 2, 5, 10, 20, … up to the tail's size), measured with the weights the model was
/// fitted with: the fit as people can look at it.
pub fn tail_points(d: &[f64], w: &[f64], model: &ImpostorTail) -> Vec<(f64, f64, f64)> {
    let total: f64 = w.iter().sum();
    let m = d.partition_point(|x| *x < model.tail_start);
    let mut out = Vec::new();
    let mut k = 1usize;
    let steps = [1usize, 2, 5];
    let mut decade = 1usize;
    while k <= m.max(1) && k <= d.len() {
        // Just above the k-th smallest: k comparisons fall below.
        let t = d[k - 1] + f64::EPSILON * d[k - 1].abs().max(1.0);
        let measured = w[..d.partition_point(|x| *x < t)].iter().sum::<f64>() / total;
        out.push((t, measured, model.cdf(t)));
        let idx = steps.iter().position(|s| s * decade == k).unwrap_or(2);
        if idx == 2 {
            decade *= 10;
            k = decade;
        } else {
            k = steps[idx + 1] * decade;
        }
    }
    out
}

/// Quantiles at which a probe spread is kept.
const SPREAD_QUANTILES: usize = 100;

/// How probes differ, from each calibration probe's impostor comparisons: `(passing, compared)`
/// at a level where an average comparison passes with probability `level` (~1e-2, so each probe
/// has tens of passes). A probe's multiplier is its pass rate over the level; the Poisson noise
/// of counting (variance 1/expected passes) is taken out of the spread by shrinking towards 1
/// (method of moments), so counting noise is not mistaken for probes differing. Returns
/// `SPREAD_QUANTILES` mid-quantiles scaled to mean 1; empty when nothing was counted.
pub fn probe_spread(counts: &[(u64, u64)], level: f64) -> Vec<f64> {
    let rates: Vec<(f64, f64)> = counts
        .iter()
        .filter(|c| c.1 > 0)
        .map(|&(k, n)| (k as f64 / (n as f64 * level), n as f64 * level))
        .collect();
    if rates.len() < 2 || level.is_nan() || level <= 0.0 {
        return Vec::new();
    }
    let m = rates.len() as f64;
    let mean = rates.iter().map(|r| r.0).sum::<f64>() / m;
    if mean.is_nan() || mean <= 0.0 {
        return Vec::new();
    }
    let var = rates
        .iter()
        .map(|r| (r.0 / mean - 1.0).powi(2))
        .sum::<f64>()
        / (m - 1.0);
    let noise = rates.iter().map(|r| 1.0 / r.1.max(1e-9)).sum::<f64>() / m;
    let shrink = if var > 0.0 {
        ((var - noise).max(0.0) / var).sqrt()
    } else {
        0.0
    };
    let mut lambda: Vec<f64> = rates
        .iter()
        .map(|r| (1.0 + (r.0 / mean - 1.0) * shrink).max(0.0))
        .collect();
    lambda.sort_by(f64::total_cmp);
    let q: Vec<f64> = (0..SPREAD_QUANTILES)
        .map(|k| crate::metrics::percentile(&lambda, (k as f64 + 0.5) / SPREAD_QUANTILES as f64))
        .collect();
    let qm = q.iter().sum::<f64>() / q.len() as f64;
    if qm.is_nan() || qm <= 0.0 {
        return Vec::new();
    }
    q.into_iter().map(|x| x / qm).collect()
}

/// Wilson score 95% interval of a proportion k/n (independent trials).
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let z = 1.959_963_984_540_054f64;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let den = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / den;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / den;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Impostor comparisons and mated searches as the bootstrap sees them: identities index the
/// draws (0..identities).
pub struct ScaleData<'a> {
    /// Impostor dissimilarities, ascending, with the identities of both sides.
    pub impostor: &'a [f64],
    pub impostor_ids: &'a [(u32, u32)],
    /// Each comparison's weight before resampling (e.g. 1/(images of a × images of b), so
    /// every pair of people counts once, as in a gallery of one template per person).
    pub impostor_weights: &'a [f64],
    /// Mated searches: (identity, dissimilarity to the enrolled mate).
    pub mates: &'a [(u32, f64)],
    pub identities: usize,
    /// Kept as measured in every replicate (see [`probe_spread`]).
    pub probe_spread: &'a [f64],
}

/// 95% percentile intervals of the values `f` computes from a replicate's fitted tail and its
/// mated searches (each repeated as often as its identity was drawn). People are resampled, as
/// in `metrics::bootstrap`; a replicate whose tail cannot be fitted is skipped.
pub fn bootstrap<F>(
    data: &ScaleData,
    o: &TailFitOptions,
    replicates: usize,
    seed: u64,
    f: F,
) -> Vec<(f64, f64)>
where
    F: Fn(&ImpostorTail, &[f64]) -> Vec<f64>,
{
    let mut rng = SplitMix::new(seed);
    let mut samples = Replicates::default();
    let mut draws = vec![0.0f64; data.identities];
    let mut w = vec![0.0f64; data.impostor.len()];
    for _ in 0..replicates {
        redraw(&mut rng, &mut draws);
        for ((wi, &(a, b)), base) in w
            .iter_mut()
            .zip(data.impostor_ids)
            .zip(data.impostor_weights)
        {
            *wi = base * draws[a as usize] * draws[b as usize];
        }
        let Some(mut model) = fit(data.impostor, &w, o) else {
            continue;
        };
        model.probe_spread = data.probe_spread.to_vec();
        let mut mates = Vec::with_capacity(data.mates.len());
        for &(id, d) in data.mates {
            for _ in 0..draws[id as usize] as usize {
                mates.push(d);
            }
        }
        samples.push(f(&model, &mates));
    }
    samples.intervals()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inverse-CDF samples (stratified, so the test is exact up to discretisation) of a
    /// distribution whose lower tail below u is GPD.
    fn gpd_sample(n: usize, shape: f64, scale: f64, u: f64, mass: f64) -> Vec<f64> {
        let model = ImpostorTail {
            body: vec![(u, mass), (u + 1.0, 1.0)],
            tail_start: u,
            tail_mass: mass,
            shape,
            scale,
            impostor_pairs: 0,
            probe_spread: Vec::new(),
        };
        (0..n)
            .map(|i| model.quantile((i as f64 + 0.5) / n as f64))
            .collect()
    }

    #[test]
    fn pwm_recovers_known_gpd_tails() {
        for (shape, scale) in [(-0.3, 0.05), (0.0, 0.04), (0.2, 0.03), (-0.8, 0.1)] {
            // The fitted tail is the lowest 1e-3 of the sample: inside the GPD part (mass 1e-2).
            let d = gpd_sample(400_000, shape, scale, 0.8, 1e-2);
            let w = vec![1.0; d.len()];
            let m = fit(&d, &w, &TailFitOptions::default()).unwrap();
            // Below u the exceedance of a GPD is GPD with the same shape; scale shrinks by
            // ξ·(u − u') for a deeper start u'.
            assert!(
                (m.shape - shape).abs() < 0.05,
                "ξ {shape}: fitted {}",
                m.shape
            );
            let p = 1e-7;
            let want = {
                let full = ImpostorTail {
                    body: vec![(0.8, 1e-2), (1.8, 1.0)],
                    tail_start: 0.8,
                    tail_mass: 1e-2,
                    shape,
                    scale,
                    impostor_pairs: 0,
                    probe_spread: Vec::new(),
                };
                full.quantile(p)
            };
            // Four decades beyond the fitted tail's start: within 5% of the distance below u.
            let err = (m.quantile(p) - want).abs() / (0.8 - want);
            assert!(err < 0.05, "ξ {shape}: {} vs {want}", m.quantile(p));
            assert!((m.tail_mass - 1e-3).abs() < 1e-5);
        }
    }

    #[test]
    fn the_body_follows_the_measured_distribution() {
        // Uniform on [0, 1): F(t) = t.
        let n = 100_000;
        let d: Vec<f64> = (0..n).map(|i| i as f64 / n as f64).collect();
        let w = vec![1.0; n];
        let m = fit(&d, &w, &TailFitOptions::default()).unwrap();
        for t in [0.01, 0.1, 0.5, 0.9] {
            assert!((m.cdf(t) / t - 1.0).abs() < 0.05, "{t}: {}", m.cdf(t));
        }
        // A uniform's lower tail is GPD with ξ = −1: the fit finds a bounded tail.
        assert!((m.shape + 1.0).abs() < 0.1, "{}", m.shape);
        // The deepest few comparisons sit at the bounded tail's end, where F is 0 or 1e-5.
        for &(_, measured, model) in tail_points(&d, &w, &m).iter().skip(3) {
            assert!(
                (model / measured - 1.0).abs() < 0.5,
                "{measured} vs {model}"
            );
        }
    }

    #[test]
    fn weights_move_the_fit_and_too_little_data_is_refused() {
        let d = gpd_sample(50_000, 0.0, 0.05, 0.5, 1e-2);
        let w = vec![1.0; d.len()];
        let a = fit(&d, &w, &TailFitOptions::default()).unwrap();
        // Doubling the weight of the deepest half of the tail makes it heavier.
        let mut w2 = w.clone();
        w2[..25].iter_mut().for_each(|x| *x = 2.0);
        let b = fit(&d, &w2, &TailFitOptions::default()).unwrap();
        assert!(b.cdf(0.1) > a.cdf(0.1));
        assert!(fit(&d[..1_000], &w[..1_000], &TailFitOptions::default()).is_none());
        assert!(fit(&d, &vec![0.0; d.len()], &TailFitOptions::default()).is_none());
    }

    #[test]
    fn monte_carlo_galleries_match_the_prediction() {
        // Normal impostor dissimilarities N(1, 0.1²) (Box–Muller); galleries of N drawn
        // independently; the measured FPIR at the predicted threshold agrees within its Wilson
        // interval.
        let mut rng = SplitMix::new(42);
        let mut draw = || -> f64 {
            let u1 = (rng.below(1 << 30) as f64 + 0.5) / (1u64 << 30) as f64;
            let u2 = rng.below(1 << 30) as f64 / (1u64 << 30) as f64;
            1.0 + 0.1 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        };
        let mut d: Vec<f64> = (0..200_000).map(|_| draw()).collect();
        d.sort_by(f64::total_cmp);
        let m = fit(&d, &vec![1.0; d.len()], &TailFitOptions::default()).unwrap();
        let n = 1_000usize;
        let t = m.threshold_for_fpir(0.05, n as f64);
        let searches = 2_000;
        let hits = (0..searches).filter(|_| (0..n).any(|_| draw() < t)).count();
        let (lo, hi) = wilson(hits, searches);
        assert!(lo <= 0.05 && 0.05 <= hi, "{hits}/{searches}: [{lo}, {hi}]");
    }

    #[test]
    fn bootstrap_brackets_the_estimate() {
        let d = gpd_sample(40_000, -0.2, 0.05, 0.6, 1e-2);
        let ids: Vec<(u32, u32)> = (0..d.len() as u32)
            .map(|i| (i % 200, (i / 200) % 200))
            .collect();
        let mates: Vec<(u32, f64)> = (0..200).map(|i| (i, 0.3 + 0.001 * i as f64)).collect();
        let data = ScaleData {
            impostor: &d,
            impostor_ids: &ids,
            impostor_weights: &vec![1.0; d.len()],
            mates: &mates,
            identities: 200,
            probe_spread: &[],
        };
        let o = TailFitOptions::default();
        let point = fit(&d, &vec![1.0; d.len()], &o).unwrap();
        let est = point.threshold_for_fpir(1e-2, 1e4);
        let ci = bootstrap(&data, &o, 100, 7, |m, _| {
            vec![m.threshold_for_fpir(1e-2, 1e4)]
        });
        assert!(ci[0].0 < est && est < ci[0].1, "{est} in {:?}", ci[0]);
        assert_eq!(
            ci,
            bootstrap(&data, &o, 100, 7, |m, _| vec![
                m.threshold_for_fpir(1e-2, 1e4)
            ])
        );
    }

    #[test]
    fn probe_spread_removes_counting_noise_and_keeps_real_spread() {
        let mut rng = SplitMix::new(3);
        // Poisson-ish counts by binomial draws: n comparisons at rate λ·level.
        let mut counts = |lambdas: &[f64]| -> Vec<(u64, u64)> {
            lambdas
                .iter()
                .map(|l| {
                    let n = 5_000u64;
                    let p = l * 1e-2;
                    let k = (0..n)
                        .filter(|_| (rng.below(1 << 20) as f64) < p * (1 << 20) as f64)
                        .count();
                    (k as u64, n)
                })
                .collect()
        };
        // All probes alike: the spread collapses to ~1 despite counting noise (CV 0.14).
        let alike = probe_spread(&counts(&vec![1.0; 2_000]), 1e-2);
        assert_eq!(alike.len(), SPREAD_QUANTILES);
        assert!(
            alike.iter().all(|l| (l - 1.0).abs() < 0.1),
            "{:?}",
            &alike[..3]
        );
        // Half at 0.5, half at 1.5: the spread keeps two groups near them.
        let two: Vec<f64> = (0..2_000)
            .map(|i| if i % 2 == 0 { 0.5 } else { 1.5 })
            .collect();
        let s = probe_spread(&counts(&two), 1e-2);
        let mean = s.iter().sum::<f64>() / s.len() as f64;
        assert!((mean - 1.0).abs() < 1e-9);
        assert!(
            (s[10] - 0.5).abs() < 0.15 && (s[90] - 1.5).abs() < 0.15,
            "{} {}",
            s[10],
            s[90]
        );
        assert!(probe_spread(&[], 1e-2).is_empty());
    }

    #[test]
    fn wilson_interval_known_values() {
        let (lo, hi) = wilson(10, 1000);
        assert!(
            (lo - 0.005_433).abs() < 1e-5 && (hi - 0.018_30).abs() < 1e-4,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0, 100);
        assert!(lo.abs() < 1e-12);
        assert!((hi - 0.036_99).abs() < 1e-4);
    }
}
