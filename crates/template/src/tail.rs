//! How a pack's impostor scores turn into false positives as a gallery grows.
//!
//! A search for someone who is not enrolled returns a candidate when *any* of the gallery's N
//! templates passes the threshold. If an impostor comparison passes with probability F(t), and
//! the N comparisons of one search are taken as independent, the false-positive identification
//! rate is
//!
//! ```text
//! FPIR(t, N) = 1 − (1 − F(t))^N
//! ```
//!
//! and the threshold for a target FPIR at N is F⁻¹(1 − (1 − FPIR)^(1/N)). At N = 10^8 and
//! FPIR 10^-3 that asks for F ≈ 10^-11, far below anything a calibration set measures, so F is
//! an [`ImpostorTail`]: the measured distribution where data exists (the body) and a generalised
//! Pareto tail beyond it, fitted by the evaluation layer (`evaluation::scale`).
//!
//! Independence is an assumption, and the direction of its error is known: the N scores of one
//! search share the probe, and a mixture over probes of (1 − F_probe)^N is at least (1 − F)^N
//! (Jensen, x^N is convex), so heterogeneous probes make the true FPIR *lower* than predicted —
//! the prediction errs on the side a border authority wants. The evaluation report measures how
//! far off it is where LFW-dev can measure it.
//!
//! Everything here is in dissimilarity (lower = more alike; cosine packs use 1 − cosine), and a
//! comparison passes when d < t.

use serde::{Deserialize, Serialize};

/// A pack's impostor dissimilarity distribution F(t) = P(d < t): the body as measured, the lower
/// tail below `tail_start` a generalised Pareto distribution of the exceedance `tail_start − d`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpostorTail {
    /// Measured points (dissimilarity, F) from `tail_start` up, both strictly increasing;
    /// F is interpolated log-linearly between them.
    pub body: Vec<(f64, f64)>,
    /// Where the fitted tail takes over: F(tail_start) = `tail_mass`.
    pub tail_start: f64,
    pub tail_mass: f64,
    /// GPD shape ξ: < 0 a bounded tail (scores cannot come closer than `tail_start − σ/(−ξ)`),
    /// 0 exponential, > 0 heavy.
    pub shape: f64,
    /// GPD scale σ > 0, in dissimilarity units.
    pub scale: f64,
    /// Impostor comparisons the model was fitted on (its evidence, for people reading it).
    pub impostor_pairs: u64,
    /// How probes differ: quantiles (mean 1) of a probe's pass rate relative to F. A probe with
    /// multiplier λ passes an impostor comparison with probability λ·F(t). Empty: all probes
    /// alike (independent scores). It matters once N·F(t) nears 1 (FPIR ≳ 5%): a gallery's
    /// scores for one probe are not independent draws — some faces resemble many others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_spread: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TailError {
    #[error("impostor tail model is malformed: {0}")]
    Malformed(&'static str),
}

impl ImpostorTail {
    /// Check what deserialisation cannot: finite numbers, a positive scale, a body that rises
    /// from the tail's start.
    pub fn validate(&self) -> Result<(), TailError> {
        let finite = [self.tail_start, self.tail_mass, self.shape, self.scale]
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return Err(TailError::Malformed("non-finite parameter"));
        }
        if self.scale <= 0.0 {
            return Err(TailError::Malformed("scale must be positive"));
        }
        if !(self.tail_mass > 0.0 && self.tail_mass < 1.0) {
            return Err(TailError::Malformed("tail mass must lie in (0, 1)"));
        }
        let Some(first) = self.body.first() else {
            return Err(TailError::Malformed("empty body"));
        };
        if first.0 != self.tail_start || first.1 != self.tail_mass {
            return Err(TailError::Malformed("body must start at the tail's start"));
        }
        let rising = self
            .body
            .windows(2)
            .all(|w| w[1].0 > w[0].0 && w[1].1 > w[0].1);
        let in_range = self
            .body
            .iter()
            .all(|p| p.0.is_finite() && p.1 > 0.0 && p.1 <= 1.0);
        if !rising || !in_range {
            return Err(TailError::Malformed(
                "body must rise strictly within (0, 1]",
            ));
        }
        if self.probe_spread.len() > 10_000
            || self
                .probe_spread
                .iter()
                .any(|l| !(l.is_finite() && *l >= 0.0))
        {
            return Err(TailError::Malformed(
                "probe spread must be at most 10,000 rates ≥ 0",
            ));
        }
        Ok(())
    }

    /// P(exceedance > y) for the tail's GPD.
    fn survival(&self, y: f64) -> f64 {
        if y <= 0.0 {
            return 1.0;
        }
        let z = self.shape * y / self.scale;
        if self.shape.abs() < 1e-12 {
            (-y / self.scale).exp()
        } else if 1.0 + z <= 0.0 {
            0.0 // beyond a bounded tail's end
        } else {
            (-(1.0 + z).ln() / self.shape).exp()
        }
    }

    /// F(t): the probability that an impostor comparison passes threshold t. Dissimilarities
    /// are never negative (distances, 1 − cosine), so F(t ≤ 0) = 0 whatever the tail's shape.
    pub fn cdf(&self, t: f64) -> f64 {
        if t.is_nan() {
            return f64::NAN;
        }
        if t <= 0.0 {
            return 0.0;
        }
        if t <= self.tail_start {
            return self.tail_mass * self.survival(self.tail_start - t);
        }
        let i = self.body.partition_point(|p| p.0 < t);
        match (
            i.checked_sub(1).and_then(|j| self.body.get(j)),
            self.body.get(i),
        ) {
            (Some(a), Some(b)) => {
                let f = (t - a.0) / (b.0 - a.0);
                (a.1.ln() + f * (b.1.ln() - a.1.ln())).exp()
            }
            // Above the last measured point: the last F (1 when the body reaches it).
            (Some(a), None) => a.1,
            (None, _) => self.tail_mass,
        }
    }

    /// The threshold t with F(t) = p; −∞ for p ≤ 0 (no threshold lets nothing through but
    /// −∞; a bounded tail's end has F = 0, so every p > 0 has a finite answer).
    pub fn quantile(&self, p: f64) -> f64 {
        if p.is_nan() || p <= 0.0 {
            return f64::NEG_INFINITY;
        }
        if p <= self.tail_mass {
            let s = p / self.tail_mass;
            let y = if self.shape.abs() < 1e-12 {
                -self.scale * s.ln()
            } else {
                self.scale / self.shape * (s.powf(-self.shape) - 1.0)
            };
            // A heavy tail's model reaches below 0, where no comparison lies.
            return (self.tail_start - y).max(0.0);
        }
        let i = self.body.partition_point(|q| q.1 < p);
        match (
            i.checked_sub(1).and_then(|j| self.body.get(j)),
            self.body.get(i),
        ) {
            (Some(a), Some(b)) => {
                let f = (p.ln() - a.1.ln()) / (b.1.ln() - a.1.ln());
                a.0 + f * (b.0 - a.0)
            }
            (Some(a), None) => a.0,
            (None, Some(b)) => b.0,
            (None, None) => f64::NAN,
        }
    }

    /// FPIR(t, N) = mean over probes of 1 − (1 − λ·F(t))^N, computed without cancellation for
    /// tiny F.
    pub fn fpir(&self, t: f64, gallery_size: f64) -> f64 {
        self.fpir_at_rate(self.cdf(t), gallery_size)
    }

    /// FPIR when an average impostor comparison passes with probability p.
    fn fpir_at_rate(&self, p: f64, n: f64) -> f64 {
        if self.probe_spread.is_empty() {
            return fpir_of(p, n);
        }
        let sum: f64 = self
            .probe_spread
            .iter()
            .map(|l| fpir_of((l * p).min(1.0), n))
            .sum();
        sum / self.probe_spread.len() as f64
    }

    /// The threshold whose predicted FPIR at `gallery_size` is `fpir`.
    pub fn threshold_for_fpir(&self, fpir: f64, gallery_size: f64) -> f64 {
        let independent = per_comparison(fpir, gallery_size);
        if self.probe_spread.is_empty() || !(independent > 0.0 && independent < 1.0) {
            return self.quantile(independent);
        }
        // FPIR rises with p; bisect in log p. With probes alike p is `independent`; spread
        // lowers FPIR at a given p, so the answer lies between it and its 10^6-fold.
        let (mut lo, mut hi) = (independent.ln(), (independent * 1e6).min(1.0).ln());
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if self.fpir_at_rate(mid.exp(), gallery_size) < fpir {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.quantile(lo.exp())
    }

    /// Predicted FNIR at threshold t and gallery size N from the dissimilarities of mated
    /// searches to their own mate (∞ when a search has none): a search finds its mate at rank 1
    /// within t when the mate passes and none of the N − 1 others comes closer.
    pub fn fnir(&self, mate_dissimilarities: &[f64], t: f64, gallery_size: f64) -> f64 {
        if mate_dissimilarities.is_empty() {
            return f64::NAN;
        }
        let others = (gallery_size - 1.0).max(0.0);
        let hits: f64 = mate_dissimilarities
            .iter()
            .filter(|d| **d < t)
            .map(|d| 1.0 - self.fpir_at_rate(self.cdf(*d), others))
            .sum();
        1.0 - hits / mate_dissimilarities.len() as f64
    }
}

/// What a pack can do at gallery size N, as a gallery policy keeps it: the impostor model and
/// the mated searches' distances to their own mate (quantiles), in the pack's metric. Made by
/// `eval calibrate --target-fpir` from an authority's own labelled images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackScale {
    /// The metric thresholds are expressed in (the tail itself is in dissimilarity).
    pub metric: crate::Metric,
    pub impostor: ImpostorTail,
    /// Mate dissimilarities of mated searches, ascending (quantiles of the calibration's
    /// genuine comparisons).
    pub mated: Vec<f64>,
}

/// What a threshold is expected to give at a gallery size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    pub gallery_size: u64,
    /// In the pack's metric.
    pub threshold: f64,
    pub fpir: f64,
    pub fnir: f64,
}

impl PackScale {
    pub fn validate(&self) -> Result<(), TailError> {
        self.impostor.validate()?;
        let sorted = self.mated.windows(2).all(|w| w[0] <= w[1]);
        if self.mated.is_empty()
            || self.mated.len() > 10_000
            || !sorted
            || self.mated.iter().any(|d| d.is_nan())
        {
            return Err(TailError::Malformed(
                "mated distances must be 1 to 10,000 ascending numbers",
            ));
        }
        Ok(())
    }

    /// A threshold in the pack's metric as a dissimilarity, and back.
    fn to_dissimilarity(&self, threshold: f64) -> f64 {
        if self.metric.is_similarity() {
            1.0 - threshold
        } else {
            threshold
        }
    }

    fn to_metric(&self, d: f64) -> f64 {
        self.to_dissimilarity(d)
    }

    /// The threshold (in the pack's metric) whose predicted FPIR at `gallery_size` is `fpir`.
    pub fn threshold_for_fpir(&self, fpir: f64, gallery_size: u64) -> f64 {
        self.to_metric(
            self.impostor
                .threshold_for_fpir(fpir, gallery_size.max(1) as f64),
        )
    }

    /// Expected FPIR and FNIR of `threshold` (the pack's metric) at `gallery_size`.
    pub fn expected(&self, threshold: f64, gallery_size: u64) -> Expected {
        let t = self.to_dissimilarity(threshold);
        // Metric matches include the threshold itself (≤ / ≥); the model's `< t` differs from
        // it only on a set of measure zero.
        let n = gallery_size.max(1) as f64;
        Expected {
            gallery_size,
            threshold,
            fpir: self.impostor.fpir(t, n),
            fnir: self.impostor.fnir(&self.mated, t, n),
        }
    }
}

/// 1 − (1 − p)^n without cancellation.
pub fn fpir_of(p: f64, n: f64) -> f64 {
    if p >= 1.0 {
        return if n > 0.0 { 1.0 } else { 0.0 };
    }
    -(n * (-p).ln_1p()).exp_m1()
}

/// The per-comparison pass rate p with 1 − (1 − p)^n = fpir.
pub fn per_comparison(fpir: f64, n: f64) -> f64 {
    if !(fpir > 0.0 && fpir < 1.0 && n >= 1.0) {
        return if fpir >= 1.0 { 1.0 } else { 0.0 };
    }
    -((-fpir).ln_1p() / n).exp_m1()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform impostor dissimilarities on [0, 1]: F(t) = t exactly. A GPD tail with ξ = −1 and
    /// σ = u is the uniform's own tail below u, so the model is exact everywhere.
    fn uniform() -> ImpostorTail {
        let u = 0.01f64;
        let mut body = vec![(u, u)];
        let mut x = u;
        while x < 1.0 {
            x = (x * 1.5).min(1.0);
            body.push((x, x));
        }
        ImpostorTail {
            body,
            tail_start: u,
            tail_mass: u,
            shape: -1.0,
            scale: u,
            impostor_pairs: 0,
            probe_spread: Vec::new(),
        }
    }

    #[test]
    fn uniform_cdf_quantile_and_fpir_are_exact() {
        let m = uniform();
        m.validate().unwrap();
        for t in [1e-6, 1e-4, 0.005, 0.01] {
            assert!((m.cdf(t) - t).abs() < 1e-15, "tail at {t}");
            assert!((m.quantile(t) - t).abs() < 1e-15);
        }
        // Log-linear interpolation of a linear F is not exact between knots, but close.
        for t in [0.02, 0.3, 0.9] {
            assert!(
                (m.cdf(t) / t - 1.0).abs() < 0.03,
                "body at {t}: {}",
                m.cdf(t)
            );
        }
        assert_eq!(m.cdf(-0.5), 0.0, "no dissimilarity is negative");
        // FPIR(t, N) = 1 − (1 − t)^N.
        let t = 1e-5f64;
        for n in [1.0, 100.0, 1e4, 1e6] {
            let want = 1.0 - (1.0 - t).powf(n);
            assert!(
                (m.fpir(t, n) / want - 1.0).abs() < 1e-9,
                "{n}: {} vs {want}",
                m.fpir(t, n)
            );
        }
        // Threshold for FPIR 1e-2 at 10^8: p = 1 − 0.99^(1e-8) ≈ 1.005e-10.
        let th = m.threshold_for_fpir(1e-2, 1e8);
        assert!((th - 1.005_033_585e-10).abs() < 1e-18, "{th}");
        // u − y cancels near zero: ~1e-18 absolute on a 1e-10 threshold.
        assert!((m.fpir(th, 1e8) / 1e-2 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn exponential_tail_matches_its_closed_form() {
        // Exceedance below u exponential with scale 0.05: F(t) = m·exp(−(u − t)/σ).
        let m = ImpostorTail {
            body: vec![(1.5, 1e-3), (1.9, 0.5), (2.3, 1.0)],
            tail_start: 1.5,
            tail_mass: 1e-3,
            shape: 0.0,
            scale: 0.05,
            impostor_pairs: 0,
            probe_spread: Vec::new(),
        };
        m.validate().unwrap();
        for t in [1.1, 1.3, 1.45] {
            let want = 1e-3 * (-(1.5 - t) / 0.05f64).exp();
            assert!((m.cdf(t) / want - 1.0).abs() < 1e-12);
            assert!((m.quantile(want) - t).abs() < 1e-12);
        }
        // Growing the gallery tenfold at fixed FPIR moves the threshold by σ·ln 10 (tiny p).
        let a = m.threshold_for_fpir(1e-3, 1e6);
        let b = m.threshold_for_fpir(1e-3, 1e7);
        assert!(((a - b) - 0.05 * 10f64.ln()).abs() < 1e-6, "{}", a - b);
    }

    #[test]
    fn fnir_counts_mates_outranked_by_the_gallery() {
        let m = uniform();
        // Three mated searches: one mate at 1e-4, one at 0.5 (above t), one with no mate.
        let mates = [1e-4, 0.5, f64::INFINITY];
        let t = 0.01;
        // Gallery of one (only the mate): the first search hits, the others miss.
        assert!((m.fnir(&mates, t, 1.0) - 2.0 / 3.0).abs() < 1e-12);
        // N = 10^4: the first mate survives 9,999 others with (1 − 1e-4)^9999.
        let hit = (1.0 - 1e-4f64).powf(9999.0);
        assert!((m.fnir(&mates, t, 1e4) - (1.0 - hit / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn probe_spread_mixes_probes_and_lowers_fpir_where_n_f_nears_one() {
        let alike = uniform();
        let mut mixed = uniform();
        // Half the probes pass impostors at 1.8x the average rate, half at 0.2x.
        mixed.probe_spread = vec![0.2, 1.8];
        mixed.validate().unwrap();
        let (t, n) = (1e-4, 1e4);
        let want = 0.5 * (fpir_of(0.2 * t, n) + fpir_of(1.8 * t, n));
        assert!((mixed.fpir(t, n) / want - 1.0).abs() < 1e-9);
        // Jensen: spread lowers FPIR, a lot at N·F = 1, hardly at N·F = 1e-3.
        assert!(mixed.fpir(t, n) < alike.fpir(t, n) * 0.95);
        assert!((mixed.fpir(1e-7, n) / alike.fpir(1e-7, n) - 1.0).abs() < 1e-3);
        // The threshold inverts the mixture.
        for f in [1e-3, 1e-2, 0.1] {
            let th = mixed.threshold_for_fpir(f, n);
            assert!(
                (mixed.fpir(th, n) / f - 1.0).abs() < 1e-6,
                "{f}: {}",
                mixed.fpir(th, n)
            );
            assert!(th >= alike.threshold_for_fpir(f, n));
        }
        // A search's mate survives N − 1 others at the mixture's rate too.
        let mates = [1e-5];
        let hit = 1.0 - mixed.fnir(&mates, 1e-3, n);
        let want = 1.0 - 0.5 * (fpir_of(0.2e-5, n - 1.0) + fpir_of(1.8e-5, n - 1.0));
        assert!((hit - want).abs() < 1e-12);
    }

    #[test]
    fn heavy_tails_stop_at_zero() {
        let m = ImpostorTail {
            body: vec![(0.3, 1e-3), (1.0, 1.0)],
            tail_start: 0.3,
            tail_mass: 1e-3,
            shape: 0.5,
            scale: 0.05,
            impostor_pairs: 0,
            probe_spread: Vec::new(),
        };
        // The GPD would put mass below 0; the model does not.
        assert_eq!(m.cdf(0.0), 0.0);
        assert_eq!(m.quantile(1e-12), 0.0);
        assert_eq!(m.threshold_for_fpir(1e-3, 1e12), 0.0);
    }

    #[test]
    fn pack_scale_speaks_the_packs_metric() {
        let mut impostor = uniform();
        impostor.body.last_mut().unwrap().0 = 1.0;
        let scale = PackScale {
            metric: crate::Metric::Cosine,
            impostor,
            mated: vec![1e-8, 2e-8, 0.5],
        };
        scale.validate().unwrap();
        // Cosine: a dissimilarity of 1e-6 is a similarity of 1 − 1e-6.
        let t = scale.threshold_for_fpir(1e-2, 10_000);
        let d = scale.impostor.threshold_for_fpir(1e-2, 1e4);
        assert!((t - (1.0 - d)).abs() < 1e-15);
        let e = scale.expected(t, 10_000);
        assert!((e.fpir / 1e-2 - 1.0).abs() < 1e-6, "{}", e.fpir);
        // The third mate (0.5 away) never passes; the first two nearly always do.
        assert!(e.fnir > 1.0 / 3.0 && e.fnir < 0.34, "{}", e.fnir);
        let mut bad = scale.clone();
        bad.mated = vec![0.5, 0.1];
        assert!(bad.validate().is_err());
        bad.mated.clear();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn malformed_models_are_refused() {
        let good = uniform();
        let mut m = good.clone();
        m.scale = 0.0;
        assert!(m.validate().is_err());
        let mut m = good.clone();
        m.shape = f64::NAN;
        assert!(m.validate().is_err());
        let mut m = good.clone();
        m.body.swap(1, 2);
        assert!(m.validate().is_err());
        let mut m = good.clone();
        m.body[0].1 = 0.02;
        assert!(m.validate().is_err());
        let mut m = good.clone();
        m.probe_spread = vec![1.0, f64::INFINITY];
        assert!(m.validate().is_err());
        let mut m = good;
        m.body.clear();
        assert!(m.validate().is_err());
    }

    #[test]
    fn per_comparison_inverts_fpir_of() {
        for (f, n) in [(1e-3, 1e8), (0.1, 2.0), (0.5, 1e3)] {
            let p = per_comparison(f, n);
            assert!((fpir_of(p, n) / f - 1.0).abs() < 1e-12);
        }
        assert_eq!(per_comparison(0.0, 10.0), 0.0);
        assert_eq!(fpir_of(0.0, 1e9), 0.0);
    }
}
