//! Presentation attack detection figures in ISO/IEC 30107-3's vocabulary, from one live score per
//! presentation (higher = more likely a live person; a presentation is classified bona fide when
//! its score is at least the threshold):
//!
//! - **APCER** per attack type (PAI species): attack presentations classified bona fide; the
//!   worst type's APCER is what an attacker who picks the best instrument gets.
//! - **BPCER**: bona fide presentations classified as attacks.
//! - **BPCER at APCER x**: the BPCER at the lowest threshold where *every* attack type's APCER is
//!   at most x (the conservative reading: the worst type sets the threshold).
//! - **Non-response rates** (ANRR, BNRR): presentations where no face was found. They are reported
//!   apart and left out of APCER and BPCER, whose denominators are the presentations the PAD
//!   subsystem actually judged.
//!
//! Intervals come from a bootstrap that redraws subjects (a subject's presentations are not
//! independent), as in the comparison figures of [`crate::metrics`].

use crate::metrics::{percentile, SplitMix};
use serde::{Deserialize, Serialize};

/// One presentation: whose it is, bona fide or which attack type, and the PAD score (`None`:
/// no face found, a non-response).
#[derive(Debug, Clone, PartialEq)]
pub struct Presentation {
    pub subject: u32,
    /// `None` = bona fide; `Some(i)` = attack of type `types[i]`.
    pub attack: Option<usize>,
    pub score: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct PadSet {
    pub types: Vec<String>,
    pub items: Vec<Presentation>,
    pub subjects: usize,
}

/// Per-presentation weights of one bootstrap replicate (all ones for the point estimates).
fn weights(set: &PadSet, draws: Option<&[f64]>) -> Vec<f64> {
    set.items
        .iter()
        .map(|p| draws.map_or(1.0, |d| d.get(p.subject as usize).copied().unwrap_or(0.0)))
        .collect()
}

/// Error rates at threshold `t`: (APCER per type, BPCER). NaN where a class has no judged
/// presentation.
pub fn rates(set: &PadSet, w: &[f64], t: f64) -> (Vec<f64>, f64) {
    let mut acc = vec![(0.0, 0.0); set.types.len()];
    let (mut bf_wrong, mut bf_all) = (0.0, 0.0);
    for (p, &wi) in set.items.iter().zip(w) {
        let Some(s) = p.score else { continue };
        match p.attack {
            Some(k) => {
                acc[k].1 += wi;
                if s >= t {
                    acc[k].0 += wi;
                }
            }
            None => {
                bf_all += wi;
                if s < t {
                    bf_wrong += wi;
                }
            }
        }
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    (
        acc.iter().map(|(a, b)| ratio(*a, *b)).collect(),
        ratio(bf_wrong, bf_all),
    )
}

fn worst(apcer: &[f64]) -> f64 {
    apcer
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NAN, |m, v| if m.is_nan() { v } else { m.max(v) })
}

/// Candidate thresholds: every judged score, and one above the largest (nothing accepted).
fn thresholds(set: &PadSet) -> Vec<f64> {
    let mut t: Vec<f64> = set.items.iter().filter_map(|p| p.score).collect();
    t.sort_by(f64::total_cmp);
    t.dedup();
    if let Some(&last) = t.last() {
        t.push(last + 1e-9_f64.max(last.abs() * 1e-9));
    }
    t
}

/// (BPCER, threshold) at the lowest threshold where the worst attack type's APCER is at most
/// `target`.
pub fn bpcer_at_apcer(set: &PadSet, w: &[f64], target: f64) -> (f64, f64) {
    for t in thresholds(set) {
        let (a, b) = rates(set, w, t);
        if worst(&a) <= target {
            return (b, t);
        }
    }
    (f64::NAN, f64::NAN)
}

/// DET curve points (worst-type APCER, BPCER) over all thresholds, thinned to at most
/// `max_points`.
pub fn det(set: &PadSet, max_points: usize) -> Vec<(f64, f64)> {
    let w = weights(set, None);
    let t = thresholds(set);
    let step = (t.len() / max_points.max(1)).max(1);
    t.iter()
        .step_by(step)
        .map(|&t| {
            let (a, b) = rates(set, &w, t);
            (worst(&a), b)
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttackTypeFigures {
    pub attack_type: String,
    pub presentations: usize,
    pub non_responses: usize,
    pub apcer: Interval,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BpcerAtApcer {
    pub apcer: f64,
    pub bpcer: Interval,
    pub threshold: f64,
}

/// Everything `facegate eval pad` reports about the PAD subsystem.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PadFigures {
    pub threshold: f64,
    pub subjects: usize,
    pub bona_fide_presentations: usize,
    pub attack_presentations: usize,
    pub per_type: Vec<AttackTypeFigures>,
    /// The worst attack type's APCER at the threshold.
    pub apcer_worst: Interval,
    pub bpcer: Interval,
    /// Attack and bona fide non-response rates (no face found).
    pub anrr: f64,
    pub bnrr: f64,
    pub bpcer_at_apcer: Vec<BpcerAtApcer>,
    pub det: Vec<(f64, f64)>,
    pub bootstrap_replicates: usize,
}

/// The figures at `threshold`, with 95% intervals from `replicates` subject-level bootstrap
/// replicates.
pub fn figures(set: &PadSet, threshold: f64, replicates: usize, seed: u64) -> PadFigures {
    let targets = [0.01, 0.05, 0.10];
    let stats = |w: &[f64]| -> Vec<f64> {
        let (a, b) = rates(set, w, threshold);
        let mut v = a.clone();
        v.push(worst(&a));
        v.push(b);
        v.extend(targets.iter().map(|&x| bpcer_at_apcer(set, w, x).0));
        v
    };
    let point = stats(&weights(set, None));
    let mut rng = SplitMix::new(seed);
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); point.len()];
    let mut draws = vec![0.0; set.subjects];
    for _ in 0..replicates {
        draws.iter_mut().for_each(|d| *d = 0.0);
        for _ in 0..set.subjects {
            draws[rng.below(set.subjects)] += 1.0;
        }
        for (k, v) in stats(&weights(set, Some(&draws))).into_iter().enumerate() {
            if v.is_finite() {
                samples[k].push(v);
            }
        }
    }
    let interval = |k: usize| {
        let mut s = samples[k].clone();
        s.sort_by(f64::total_cmp);
        Interval {
            value: point[k],
            low: percentile(&s, 0.025),
            high: percentile(&s, 0.975),
        }
    };
    let n = set.types.len();
    let count = |f: &dyn Fn(&Presentation) -> bool| set.items.iter().filter(|p| f(p)).count();
    let unit = weights(set, None);
    PadFigures {
        threshold,
        subjects: set.subjects,
        bona_fide_presentations: count(&|p| p.attack.is_none()),
        attack_presentations: count(&|p| p.attack.is_some()),
        per_type: set
            .types
            .iter()
            .enumerate()
            .map(|(k, name)| AttackTypeFigures {
                attack_type: name.clone(),
                presentations: count(&|p| p.attack == Some(k)),
                non_responses: count(&|p| p.attack == Some(k) && p.score.is_none()),
                apcer: interval(k),
            })
            .collect(),
        apcer_worst: interval(n),
        bpcer: interval(n + 1),
        anrr: ratio(
            count(&|p| p.attack.is_some() && p.score.is_none()),
            count(&|p| p.attack.is_some()),
        ),
        bnrr: ratio(
            count(&|p| p.attack.is_none() && p.score.is_none()),
            count(&|p| p.attack.is_none()),
        ),
        bpcer_at_apcer: targets
            .iter()
            .enumerate()
            .map(|(i, &x)| BpcerAtApcer {
                apcer: x,
                bpcer: interval(n + 2 + i),
                threshold: bpcer_at_apcer(set, &unit, x).1,
            })
            .collect(),
        det: det(set, 400),
        bootstrap_replicates: replicates,
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(subject: u32, attack: Option<usize>, score: Option<f64>) -> Presentation {
        Presentation {
            subject,
            attack,
            score,
        }
    }

    fn set() -> PadSet {
        PadSet {
            types: vec!["print".into(), "replay".into()],
            subjects: 4,
            items: vec![
                p(0, None, Some(0.9)),
                p(1, None, Some(0.8)),
                p(2, None, Some(0.4)),
                p(3, None, None),
                p(0, Some(0), Some(0.1)),
                p(1, Some(0), Some(0.6)),
                p(2, Some(1), Some(0.2)),
                p(3, Some(1), Some(0.3)),
                p(3, Some(1), None),
            ],
        }
    }

    #[test]
    fn rates_count_by_hand() {
        let s = set();
        let w = weights(&s, None);
        let (a, b) = rates(&s, &w, 0.5);
        // print: 1 of 2 accepted; replay: 0 of 2 judged; bona fide: 1 of 3 judged rejected.
        assert_eq!(a, vec![0.5, 0.0]);
        assert!((b - 1.0 / 3.0).abs() < 1e-12);
        // Every attack below 0.61: the lowest threshold with worst APCER 0 is 0.8 (the next
        // score above 0.6), where bona fide 0.4 is rejected: BPCER 1/3.
        let (bp, t) = bpcer_at_apcer(&s, &w, 0.0);
        assert_eq!(t, 0.8);
        assert!((bp - 1.0 / 3.0).abs() < 1e-12);
        let (bp, t) = bpcer_at_apcer(&s, &w, 0.5);
        assert_eq!(t, 0.3);
        assert_eq!(bp, 0.0);
    }

    #[test]
    fn figures_report_non_responses_apart_and_intervals_contain_the_point() {
        let f = figures(&set(), 0.5, 200, 7);
        assert_eq!(f.bona_fide_presentations, 4);
        assert_eq!(f.attack_presentations, 5);
        assert!((f.anrr - 0.2).abs() < 1e-12);
        assert!((f.bnrr - 0.25).abs() < 1e-12);
        assert_eq!(f.apcer_worst.value, 0.5);
        assert_eq!(f.per_type[1].non_responses, 1);
        for i in [&f.apcer_worst, &f.bpcer] {
            assert!(i.low <= i.value && i.value <= i.high, "{i:?}");
        }
        // DET: worst APCER falls and BPCER rises as the threshold rises.
        assert!(f
            .det
            .windows(2)
            .all(|w| w[1].0 <= w[0].0 && w[1].1 >= w[0].1));
    }
}
