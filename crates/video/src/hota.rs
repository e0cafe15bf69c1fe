//! HOTA, Higher Order Tracking Accuracy (Luiten et al., IJCV 2021), computed as the reference
//! implementation (TrackEval's `metrics/hota.py`) does, so the figures can be checked against it
//! (`scripts/mot_crosscheck.py`):
//!
//! 1. Per frame, a soft IoU-weighted co-occurrence of every (object, track) pair is summed over
//!    the sequence into a global alignment score between identities.
//! 2. Per frame, detections are matched one-to-one maximising alignment score × IoU.
//! 3. For each localisation threshold α = 0.05, 0.10, …, 0.95, matches with IoU ≥ α count:
//!    DetA = TP / (TP + FN + FP); AssA = mean over true positives of the pair's association
//!    Jaccard |TPA| / (|TPA| + |FNA| + |FPA|); HOTA(α) = √(DetA · AssA); LocA = mean IoU of the
//!    matches. The reported figures are the means over the 19 thresholds.
//!
//! Unlike MOTA (dominated by detection) and IDF1 (dominated by association), HOTA weighs both.

use crate::metrics::FrameBoxes;
use crate::track::iou;
use std::collections::{BTreeMap, HashMap};

/// HOTA and its parts, each the mean over the localisation thresholds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Hota {
    pub hota: f64,
    /// Detection accuracy.
    pub deta: f64,
    /// Association accuracy.
    pub assa: f64,
    /// Localisation accuracy (mean IoU of matched boxes).
    pub loca: f64,
}

/// The 19 localisation thresholds, as `numpy.arange(0.05, 0.99, 0.05)` makes them.
fn alphas() -> impl Iterator<Item = f64> {
    (0..19).map(|i| 0.05 + i as f64 * 0.05)
}

/// Scale of the integer weights the assignment maximises (scores lie in [0, 1]).
const SCORE_SCALE: f64 = 1e12;

/// One-to-one assignment maximising the sum of `score` (non-negative). A positive score never
/// rounds to the zero weight the assignment drops.
fn best_matching(score: &[Vec<f64>]) -> Vec<(usize, usize)> {
    let weights: Vec<Vec<i64>> = score
        .iter()
        .map(|r| {
            r.iter()
                .map(|&s| match (s * SCORE_SCALE).round() as i64 {
                    0 if s > 0.0 => 1,
                    w => w,
                })
                .collect()
        })
        .collect();
    crate::metrics::assign(&weights)
}

/// HOTA over one sequence.
pub fn hota(frames: &[FrameBoxes]) -> Hota {
    // Dense identity indices.
    let mut truth_ix: HashMap<u64, usize> = HashMap::new();
    let mut track_ix: HashMap<u64, usize> = HashMap::new();
    for f in frames {
        for (g, _) in &f.truth {
            let n = truth_ix.len();
            truth_ix.entry(*g).or_insert(n);
        }
        for (t, _) in &f.tracks {
            let n = track_ix.len();
            track_ix.entry(*t).or_insert(n);
        }
    }
    let (ng, nt) = (truth_ix.len(), track_ix.len());
    if ng == 0 || nt == 0 {
        // Nothing to match: no detection or association accuracy (TrackEval: LocA 1).
        return Hota {
            loca: 1.0,
            ..Default::default()
        };
    }
    let similarity = |f: &FrameBoxes| -> Vec<Vec<f64>> {
        f.truth
            .iter()
            .map(|(_, g)| f.tracks.iter().map(|(_, t)| iou(g, t) as f64).collect())
            .collect()
    };

    // 1. Global alignment between identities.
    let mut potential = vec![vec![0.0f64; nt]; ng];
    let (mut truth_count, mut track_count) = (vec![0.0f64; ng], vec![0.0f64; nt]);
    for f in frames {
        let sim = similarity(f);
        let row: Vec<f64> = sim.iter().map(|r| r.iter().sum()).collect();
        let col: Vec<f64> = (0..f.tracks.len())
            .map(|j| sim.iter().map(|r| r[j]).sum())
            .collect();
        for (i, (g, _)) in f.truth.iter().enumerate() {
            for (j, (t, _)) in f.tracks.iter().enumerate() {
                let denom = row[i] + col[j] - sim[i][j];
                if denom > f64::EPSILON {
                    potential[truth_ix[g]][track_ix[t]] += sim[i][j] / denom;
                }
            }
            truth_count[truth_ix[g]] += 1.0;
        }
        for (t, _) in &f.tracks {
            track_count[track_ix[t]] += 1.0;
        }
    }
    let alignment: Vec<Vec<f64>> = (0..ng)
        .map(|g| {
            (0..nt)
                .map(|t| potential[g][t] / (truth_count[g] + track_count[t] - potential[g][t]))
                .collect()
        })
        .collect();

    // 2–3. Matching per frame, counted at each threshold.
    let levels: Vec<f64> = alphas().collect();
    let (mut tp, mut fn_, mut fp, mut loc) = (
        vec![0.0f64; levels.len()],
        vec![0.0f64; levels.len()],
        vec![0.0f64; levels.len()],
        vec![0.0f64; levels.len()],
    );
    // Ordered, so the association sums run in the same order every time (a hash map's order
    // changes from run to run, and the sums with it in the last digit).
    let mut pair_matches: Vec<BTreeMap<(usize, usize), f64>> = vec![BTreeMap::new(); levels.len()];
    for f in frames {
        let (n_truth, n_tracks) = (f.truth.len() as f64, f.tracks.len() as f64);
        if f.truth.is_empty() || f.tracks.is_empty() {
            for a in 0..levels.len() {
                fp[a] += n_tracks;
                fn_[a] += n_truth;
            }
            continue;
        }
        let sim = similarity(f);
        let gi: Vec<usize> = f.truth.iter().map(|(g, _)| truth_ix[g]).collect();
        let ti: Vec<usize> = f.tracks.iter().map(|(t, _)| track_ix[t]).collect();
        let score: Vec<Vec<f64>> = (0..gi.len())
            .map(|i| {
                (0..ti.len())
                    .map(|j| alignment[gi[i]][ti[j]] * sim[i][j])
                    .collect()
            })
            .collect();
        let matching = best_matching(&score);
        for (a, alpha) in levels.iter().enumerate() {
            let mut n = 0.0;
            for &(i, j) in &matching {
                if sim[i][j] >= alpha - f64::EPSILON {
                    n += 1.0;
                    loc[a] += sim[i][j];
                    *pair_matches[a].entry((gi[i], ti[j])).or_default() += 1.0;
                }
            }
            tp[a] += n;
            fn_[a] += n_truth - n;
            fp[a] += n_tracks - n;
        }
    }
    let mut out = Hota::default();
    for a in 0..levels.len() {
        let assoc: f64 = pair_matches[a]
            .iter()
            .map(|(&(g, t), &m)| m * m / (truth_count[g] + track_count[t] - m).max(1.0))
            .sum::<f64>()
            / tp[a].max(1.0);
        let det = tp[a] / (tp[a] + fn_[a] + fp[a]).max(1.0);
        out.hota += (det * assoc).sqrt();
        out.deta += det;
        out.assa += assoc;
        out.loca += loc[a].max(1e-10) / tp[a].max(1e-10);
    }
    let n = levels.len() as f64;
    Hota {
        hota: out.hota / n,
        deta: out.deta / n,
        assa: out.assa / n,
        loca: out.loca / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision::geometry::Rect;

    fn b(x: f64, w: f64) -> Rect {
        Rect {
            left: x,
            top: 0.0,
            right: x + w,
            bottom: 10.0,
        }
    }

    #[test]
    fn a_perfect_tracker_scores_one() {
        let frames: Vec<FrameBoxes> = (0..10)
            .map(|k| FrameBoxes {
                frame: k,
                truth: vec![(1, b(k as f64, 10.0)), (2, b(100.0, 10.0))],
                tracks: vec![(7, b(k as f64, 10.0)), (8, b(100.0, 10.0))],
            })
            .collect();
        let h = hota(&frames);
        assert!((h.hota - 1.0).abs() < 1e-12, "{h:?}");
        assert!((h.deta - 1.0).abs() < 1e-12 && (h.assa - 1.0).abs() < 1e-12);
        assert!((h.loca - 1.0).abs() < 1e-12);
    }

    #[test]
    fn an_identity_swap_halfway_halves_association_not_detection() {
        // Two objects far apart; the tracker swaps their ids at frame 5: every box is detected
        // (DetA 1), and each matched pair covers 5 of the 10 + 10 − 5 frames of its object and
        // track: AssA = 5/15 = 1/3, HOTA = √(1/3).
        let frames: Vec<FrameBoxes> = (0..10)
            .map(|k| {
                let (a, c) = if k < 5 { (7, 8) } else { (8, 7) };
                FrameBoxes {
                    frame: k,
                    truth: vec![(1, b(0.0, 10.0)), (2, b(100.0, 10.0))],
                    tracks: vec![(a, b(0.0, 10.0)), (c, b(100.0, 10.0))],
                }
            })
            .collect();
        let h = hota(&frames);
        assert!((h.deta - 1.0).abs() < 1e-12, "{h:?}");
        assert!((h.assa - 1.0 / 3.0).abs() < 1e-12, "{h:?}");
        assert!((h.hota - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn a_box_half_off_counts_only_below_its_overlap() {
        // One object, one track whose box is shifted by half its width. Boxes are dlib's
        // inclusive pixel rectangles (11 px wide here), so the overlap is 6 × 11 of
        // 121 + 121 − 66: IoU 0.375, matched at α = 0.05…0.35 (7 of 19 thresholds), missed and
        // false beyond.
        let frames: Vec<FrameBoxes> = (0..4)
            .map(|k| FrameBoxes {
                frame: k,
                truth: vec![(1, b(0.0, 10.0))],
                tracks: vec![(9, b(5.0, 10.0))],
            })
            .collect();
        let h = hota(&frames);
        // Matched levels: DetA 1, AssA 1; unmatched: TP 0, FN 4, FP 4 → DetA 0.
        assert!((h.deta - 7.0 / 19.0).abs() < 1e-12, "{h:?}");
        assert!((h.hota - 7.0 / 19.0).abs() < 1e-12, "{h:?}");
        // LocA: 0.375 where matched; 1e-10/1e-10 = 1 where nothing matched (TrackEval's guard).
        assert!((h.loca - (7.0 * 0.375 + 12.0) / 19.0).abs() < 1e-9, "{h:?}");
    }

    #[test]
    fn nothing_tracked_scores_zero() {
        let frames = vec![FrameBoxes {
            frame: 0,
            truth: vec![(1, b(0.0, 10.0))],
            tracks: vec![],
        }];
        assert_eq!(hota(&frames).hota, 0.0);
    }
}
