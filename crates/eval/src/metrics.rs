//! Error-rate arithmetic shared by the eval commands. Scores are dissimilarities: a comparison
//! matches when d ≤ t (similarity packs are turned into 1 − cosine by the caller).
//!
//! Every rate is computed from weights: the point estimate uses unit weights, a bootstrap
//! replicate weights each comparison by how often its identities were drawn. One code path for
//! both means the intervals and the point estimates cannot drift apart.

/// Comparison scores sorted ascending, each with the identities it involves (for the bootstrap
/// and for per-group subsets).
#[derive(Debug, Clone, Default)]
pub struct ScoreSet {
    pub genuine: Vec<f64>,
    pub genuine_id: Vec<u32>,
    pub impostor: Vec<f64>,
    pub impostor_ids: Vec<(u32, u32)>,
}

impl ScoreSet {
    pub fn new(mut genuine: Vec<(f64, u32)>, mut impostor: Vec<(f64, u32, u32)>) -> ScoreSet {
        genuine.sort_by(|a, b| a.0.total_cmp(&b.0));
        impostor.sort_by(|a, b| a.0.total_cmp(&b.0));
        ScoreSet {
            genuine: genuine.iter().map(|g| g.0).collect(),
            genuine_id: genuine.iter().map(|g| g.1).collect(),
            impostor: impostor.iter().map(|i| i.0).collect(),
            impostor_ids: impostor.iter().map(|i| (i.1, i.2)).collect(),
        }
    }

    pub fn unit_weights(&self) -> Weights {
        Weights {
            genuine: vec![1.0; self.genuine.len()],
            impostor: vec![1.0; self.impostor.len()],
        }
    }

    /// Weights of a bootstrap replicate in which identity `i` was drawn `draws[i]` times: a
    /// genuine pair counts as often as its identity, an impostor pair as the product of its two.
    pub fn weights(&self, draws: &[f64]) -> Weights {
        Weights {
            genuine: self.genuine_id.iter().map(|&i| draws[i as usize]).collect(),
            impostor: self
                .impostor_ids
                .iter()
                .map(|&(a, b)| draws[a as usize] * draws[b as usize])
                .collect(),
        }
    }
}

pub struct Weights {
    pub genuine: Vec<f64>,
    pub impostor: Vec<f64>,
}

/// The largest float below `x`: "just below the next impostor" as a threshold.
pub fn prev_f64(x: f64) -> f64 {
    if x > 0.0 {
        f64::from_bits(x.to_bits() - 1)
    } else if x == 0.0 {
        -f64::MIN_POSITIVE
    } else {
        f64::from_bits(x.to_bits() + 1)
    }
}

/// Sum from +0.0 (the standard `Sum` of no floats is −0.0, which would print as "-0").
fn total(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |a, b| a + b)
}

/// (FMR, FNMR) at threshold `t`.
pub fn rates(s: &ScoreSet, w: &Weights, t: f64) -> (f64, f64) {
    let ni = s.impostor.partition_point(|d| *d <= t);
    let ng = s.genuine.partition_point(|d| *d <= t);
    let fm = total(&w.impostor[..ni]) / total(&w.impostor);
    let fnm = total(&w.genuine[ng..]) / total(&w.genuine);
    (fm, fnm)
}

/// The largest threshold whose FMR is at most `fmr`, and the FNMR there: (FNMR, threshold).
/// The threshold sits just below the first impostor whose cumulative weight exceeds the allowance.
pub fn fnmr_at_fmr(s: &ScoreSet, w: &Weights, fmr: f64) -> (f64, f64) {
    let it = total(&w.impostor);
    let allowed = fmr * it;
    let mut cum = 0.0;
    let mut t = f64::INFINITY;
    for (d, wi) in s.impostor.iter().zip(&w.impostor) {
        cum += wi;
        if cum > allowed {
            t = prev_f64(*d);
            break;
        }
    }
    (rates(s, w, t).1, t)
}

/// Equal error rate: at the distinct score where FMR and FNMR are closest, their mean;
/// (EER, threshold).
pub fn eer(s: &ScoreSet, w: &Weights) -> (f64, f64) {
    let it = total(&w.impostor);
    let gt = total(&w.genuine);
    let (mut i, mut g) = (0usize, 0usize);
    let (mut wi, mut wg) = (0.0f64, 0.0f64);
    let mut best = (f64::INFINITY, f64::NAN, f64::NAN);
    loop {
        let t = match (s.impostor.get(i), s.genuine.get(g)) {
            (Some(a), Some(b)) => a.min(*b),
            (Some(a), None) => *a,
            (None, Some(b)) => *b,
            (None, None) => break,
        };
        while i < s.impostor.len() && s.impostor[i] <= t {
            wi += w.impostor[i];
            i += 1;
        }
        while g < s.genuine.len() && s.genuine[g] <= t {
            wg += w.genuine[g];
            g += 1;
        }
        let (fm, fnm) = (wi / it, (gt - wg) / gt);
        if (fm - fnm).abs() < best.0 {
            best = ((fm - fnm).abs(), (fm + fnm) / 2.0, t);
        }
    }
    (best.1, best.2)
}

/// Curve points (FMR, FNMR) at impostor scores, about `max_points` of them spaced evenly in
/// log FMR (every point at the low-FMR end, where the operating points are).
pub fn det_points(s: &ScoreSet, max_points: usize) -> Vec<(f64, f64)> {
    let n = s.impostor.len();
    if n == 0 {
        return Vec::new();
    }
    let ratio = (n as f64).powf(1.0 / max_points.max(2) as f64);
    let mut idx = Vec::new();
    let mut x = 1.0f64;
    while (x as usize) <= n {
        let i = x as usize - 1;
        if idx.last() != Some(&i) {
            idx.push(i);
        }
        x = (x * ratio).max(x + 1.0);
    }
    if idx.last() != Some(&(n - 1)) {
        idx.push(n - 1);
    }
    let fnmr = |t: f64| {
        let above = s.genuine.len() - s.genuine.partition_point(|d| *d <= t);
        above as f64 / s.genuine.len().max(1) as f64
    };
    // The curve is a staircase: at FMR (i+1)/n, FNMR runs from its value at impostor i down to
    // its value just below impostor i+1 (where the operating points sit).
    let mut pts = Vec::with_capacity(2 * idx.len());
    for i in idx {
        let fm = (i + 1) as f64 / n as f64;
        pts.push((fm, fnmr(s.impostor[i])));
        if let Some(&next) = s.impostor.get(i + 1) {
            pts.push((fm, fnmr(prev_f64(next))));
        }
    }
    pts
}

/// Seeded sampling must give the same report twice, on every platform.
pub use vision::rng::SplitMix;

/// 95% percentile intervals of each statistic `f` returns, over `replicates` bootstrap
/// replicates that redraw the `identities` with replacement (pairs of one person are not
/// independent, so people, not pairs, are resampled).
pub fn bootstrap<F>(
    s: &ScoreSet,
    identities: usize,
    replicates: usize,
    seed: u64,
    f: F,
) -> Vec<(f64, f64)>
where
    F: Fn(&Weights) -> Vec<f64>,
{
    let mut rng = SplitMix::new(seed);
    let mut samples = Replicates::default();
    let mut draws = vec![0.0f64; identities];
    for _ in 0..replicates {
        redraw(&mut rng, &mut draws);
        let w = s.weights(&draws);
        // A replicate that drew no genuine or no impostor pair has no rate; skip it.
        if total(&w.genuine) == 0.0 || total(&w.impostor) == 0.0 {
            continue;
        }
        samples.push(f(&w));
    }
    samples.intervals()
}

/// One bootstrap draw of people: `draws[i]` becomes how often identity `i` was drawn when
/// `draws.len()` identities are drawn with replacement.
pub fn redraw(rng: &mut SplitMix, draws: &mut [f64]) {
    let n = draws.len();
    draws.iter_mut().for_each(|d| *d = 0.0);
    for _ in 0..n {
        draws[rng.below(n)] += 1.0;
    }
}

/// Bootstrap replicates' values, gathered quantity by quantity.
#[derive(Default)]
pub struct Replicates(Vec<Vec<f64>>);

impl Replicates {
    /// One replicate's values, in the same order every time.
    pub fn push(&mut self, values: Vec<f64>) {
        for (k, v) in values.into_iter().enumerate() {
            if self.0.len() <= k {
                self.0.push(Vec::new());
            }
            self.0[k].push(v);
        }
    }

    /// Each quantity's 95% percentile interval (non-finite values left out).
    pub fn intervals(self) -> Vec<(f64, f64)> {
        self.0
            .into_iter()
            .map(|mut v| {
                v.retain(|x| x.is_finite());
                v.sort_by(f64::total_cmp);
                (percentile(&v, 0.025), percentile(&v, 0.975))
            })
            .collect()
    }
}

/// Linear-interpolated percentile of sorted values (NaN when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Open-set figures from each search's best candidate: `mated` holds (rank-1 is the mate, rank-1
/// distance), `nonmated` the rank-1 distance of searches for people not enrolled. The threshold
/// for a target FPIR is the largest distance at which at most that fraction of non-mated searches
/// return a candidate; FNIR is the fraction of mated searches without their mate at rank 1 within
/// it. Returns (FNIR, threshold); candidates pass when d < threshold.
pub fn fnir_at_fpir(mated: &[(bool, f64)], nonmated: &[f64], fpir: f64) -> (f64, f64) {
    let mut nm = nonmated.to_vec();
    nm.sort_by(f64::total_cmp);
    let allowed = (fpir * nm.len() as f64).floor() as usize;
    // Distances strictly below nm[allowed] pass: exactly `allowed` non-mated searches do.
    let t = nm.get(allowed).copied().unwrap_or(f64::INFINITY);
    (fnir_at(mated, t), t)
}

/// [`fnir_at_fpir`] with each search weighted (a bootstrap replicate's draws): `mated` holds
/// (rank-1 is the mate, rank-1 distance, weight), `nonmated` (rank-1 distance, weight). The
/// threshold lets through at most `fpir` of the non-mated weight; FNIR is the weighted share of
/// mated searches missed (NaN without mated weight). Unit weights give [`fnir_at_fpir`]'s FNIR.
pub fn fnir_at_fpir_weighted(
    mated: &[(bool, f64, f64)],
    nonmated: &[(f64, f64)],
    fpir: f64,
) -> f64 {
    let mut nm = nonmated.to_vec();
    nm.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = nm.iter().map(|n| n.1).sum();
    let mut cum = 0.0;
    let mut t = f64::INFINITY;
    for (s, w) in &nm {
        cum += w;
        if cum > fpir * total {
            t = *s;
            break;
        }
    }
    let (mut miss, mut all) = (0.0, 0.0);
    for (ok, d, w) in mated {
        all += w;
        if !(*ok && *d < t) {
            miss += w;
        }
    }
    if all > 0.0 {
        miss / all
    } else {
        f64::NAN
    }
}

/// FNIR at a fixed threshold (candidates pass when d < t).
pub fn fnir_at(mated: &[(bool, f64)], t: f64) -> f64 {
    let misses = mated.iter().filter(|(ok, d)| !(*ok && *d < t)).count();
    misses as f64 / mated.len().max(1) as f64
}

/// FPIR at a fixed threshold: the fraction of non-mated searches returning a candidate.
pub fn fpir_at(nonmated: &[f64], t: f64) -> f64 {
    nonmated.iter().filter(|d| **d < t).count() as f64 / nonmated.len().max(1) as f64
}

/// Cumulative match characteristic: for r = 1..=max_rank, the fraction of mated searches whose
/// mate is at rank r or better (`None`: mate not in the returned list).
pub fn cmc(mate_ranks: &[Option<usize>], max_rank: usize) -> Vec<f64> {
    (1..=max_rank)
        .map(|r| {
            mate_ranks
                .iter()
                .filter(|k| k.is_some_and(|k| k <= r))
                .count() as f64
                / mate_ranks.len().max(1) as f64
        })
        .collect()
}

/// Largest minus smallest rate across groups (defined even when a group is at zero).
pub fn spread(rates: &[f64]) -> Option<f64> {
    let finite: Vec<f64> = rates.iter().copied().filter(|r| r.is_finite()).collect();
    if finite.len() < 2 {
        return None;
    }
    let max = finite.iter().copied().fold(f64::MIN, f64::max);
    let min = finite.iter().copied().fold(f64::MAX, f64::min);
    Some(max - min)
}

/// Differential across groups as NIST's demographic reports state it: the largest rate over the
/// smallest. `None` with fewer than two groups or when the smallest rate is zero (no ratio
/// exists; the caller reports the rates themselves).
pub fn differential(rates: &[f64]) -> Option<f64> {
    let finite: Vec<f64> = rates.iter().copied().filter(|r| r.is_finite()).collect();
    if finite.len() < 2 {
        return None;
    }
    let max = finite.iter().copied().fold(f64::MIN, f64::max);
    let min = finite.iter().copied().fold(f64::MAX, f64::min);
    (min > 0.0).then_some(max / min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> ScoreSet {
        // 4 genuine (identities 0, 0, 1, 2) and 10 impostor dissimilarities.
        let g = vec![(0.1, 0), (0.2, 0), (0.3, 1), (0.9, 2)];
        let imp = [0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.95, 1.0, 1.1, 1.2];
        ScoreSet::new(
            g,
            imp.iter()
                .enumerate()
                .map(|(k, d)| (*d, (k % 3) as u32, 3))
                .collect(),
        )
    }

    #[test]
    fn rates_eer_and_fnmr_at_fmr_on_known_scores() {
        let s = known();
        let w = s.unit_weights();
        assert_eq!(rates(&s, &w, 0.3), (0.1, 0.25));
        // FMR 0.1: one impostor may pass -> threshold just below 0.5 -> FNMR 1/4 (0.9 misses).
        let (fnmr, t) = fnmr_at_fmr(&s, &w, 0.1);
        assert!(t < 0.5 && t > 0.49);
        assert_eq!(fnmr, 0.25);
        // FMR 0: none may pass -> threshold below 0.25 -> 0.3 and 0.9 miss.
        assert_eq!(fnmr_at_fmr(&s, &w, 0.0).0, 0.5);
        // FMR 1: everything passes.
        assert_eq!(fnmr_at_fmr(&s, &w, 1.0), (0.0, f64::INFINITY));
        // EER: the closest crossing is at t = 0.5 (FMR 0.2, FNMR 0.25; gap 0.05) -> EER 0.225.
        let (e, t) = eer(&s, &w);
        assert!((e - 0.225).abs() < 1e-12, "{e}");
        assert_eq!(t, 0.5);
    }

    #[test]
    fn det_staircase_passes_through_the_operating_points() {
        let s = known();
        let pts = det_points(&s, 400);
        let w = s.unit_weights();
        for fmr in [0.1, 0.2, 0.5] {
            let (fnmr, _) = fnmr_at_fmr(&s, &w, fmr);
            assert!(pts.contains(&(fmr, fnmr)), "{fmr} {fnmr} {pts:?}");
        }
        assert_eq!(pts.last(), Some(&(1.0, 0.0)));
    }

    #[test]
    fn weights_count_identities_as_drawn() {
        let s = known();
        // Identity 0 drawn twice, 1 not at all, 2 and 3 once: genuine pairs of identity 0 count
        // twice, identity 1's pair vanishes; impostors (k%3, 3) weigh draws[k%3] * 1.
        let w = s.weights(&[2.0, 0.0, 1.0, 1.0]);
        assert_eq!(w.genuine, vec![2.0, 2.0, 0.0, 1.0]);
        // FNMR at t = 0.3: only the 0.9 pair (weight 1 of 5) misses.
        assert!((rates(&s, &w, 0.3).1 - 0.2).abs() < 1e-12);
        // Impostor 0.25 is k = 0 -> identity 0 -> weight 2 of a total 2*4 + 0*3 + 1*3 = 11.
        assert!((rates(&s, &w, 0.3).0 - 2.0 / 11.0).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_interval_brackets_the_estimate_and_is_reproducible() {
        // 40 identities, genuine d ~ identity-dependent, impostors spread: the EER interval must
        // contain the point estimate and come out the same for the same seed.
        let mut g = Vec::new();
        let mut imp = Vec::new();
        let mut rng = SplitMix::new(7);
        for id in 0..40u32 {
            for _ in 0..3 {
                g.push((0.3 + (rng.below(1000) as f64) / 2000.0, id));
            }
            for _ in 0..20 {
                let other = (id + 1 + rng.below(39) as u32) % 40;
                imp.push((0.6 + (rng.below(1000) as f64) / 1500.0, id, other));
            }
        }
        let s = ScoreSet::new(g, imp);
        let point = eer(&s, &s.unit_weights()).0;
        let ci = bootstrap(&s, 40, 200, 1, |w| vec![eer(&s, w).0]);
        let ci2 = bootstrap(&s, 40, 200, 1, |w| vec![eer(&s, w).0]);
        assert_eq!(ci, ci2);
        assert!(ci[0].0 <= point && point <= ci[0].1, "{ci:?} vs {point}");
        assert!(ci[0].1 > ci[0].0);
    }

    #[test]
    fn open_set_figures_on_known_scores() {
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
        assert!((fpir_at(&nonmated, t) - 0.1).abs() < 1e-12);
        // FPIR 0: nothing non-mated may pass: threshold is the lowest non-mated distance.
        let (fnir, t) = fnir_at_fpir(&mated, &nonmated, 0.0);
        assert_eq!(t, 0.45);
        assert!((fnir - 4.0 / 5.0).abs() < 1e-12);
        assert_eq!(fpir_at(&nonmated, t), 0.0);
        // CMC: ranks 1, 1, 2, none, 3 -> 2/5 at rank 1, 3/5 at 2, 4/5 from 3 on.
        let c = cmc(&[Some(1), Some(1), Some(2), None, Some(3)], 4);
        assert_eq!(c, vec![0.4, 0.6, 0.8, 0.8]);
    }

    #[test]
    fn differential_is_max_over_min() {
        assert_eq!(differential(&[0.01, 0.04, 0.02]), Some(4.0));
        assert_eq!(differential(&[0.0, 0.04]), None);
        assert_eq!(spread(&[0.0, 0.04]), Some(0.04));
        assert_eq!(differential(&[0.04]), None);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0], 0.25), 1.25);
    }
}
