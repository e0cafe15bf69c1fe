//! Multi-object tracking metrics against ground truth: CLEAR MOT (MOTA, identity switches) and
//! the identity measures (IDF1), as the MOTChallenge tools define them (`motmetrics`): a
//! hypothesis matches a ground-truth object when their boxes overlap with IoU ≥ 0.5; and HOTA
//! over IoU thresholds 0.05…0.95 as TrackEval defines it (`crate::hota`).

use crate::track::iou;
use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;
use std::collections::HashMap;
use vision::geometry::Rect;

/// Ground truth and hypotheses of one frame: (object or track id, box).
#[derive(Debug, Clone, Default)]
pub struct FrameBoxes {
    /// The frame's index in its sequence (for export; metrics do not use it).
    pub frame: u64,
    pub truth: Vec<(u64, Rect)>,
    pub tracks: Vec<(u64, Rect)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MotSummary {
    pub frames: usize,
    pub truth_boxes: usize,
    pub track_boxes: usize,
    pub matches: usize,
    pub misses: usize,
    pub false_positives: usize,
    pub id_switches: usize,
    pub mota: f64,
    /// Identity true positives of the best one-to-one id assignment.
    pub idtp: usize,
    pub idf1: f64,
    pub idp: f64,
    pub idr: f64,
    /// HOTA, DetA, AssA, LocA.
    pub hota: crate::hota::Hota,
}

const MIN_IOU: f32 = 0.5;
/// Every allowed pair outweighs any sum of overlaps, so the assignment maximises the number of
/// matches first (as motmetrics' minimum-cost assignment over allowed pairs does).
const MATCH_WEIGHT: i64 = 1_000_000_000;

/// Hungarian assignment maximising integer weights; pairs with weight 0 are dropped.
pub(crate) fn assign(weights: &[Vec<i64>]) -> Vec<(usize, usize)> {
    let rows = weights.len();
    let cols = weights.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    let transpose = rows > cols;
    let (r, c) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut m = Matrix::new(r, c, 0i64);
    for i in 0..r {
        for j in 0..c {
            m[(i, j)] = if transpose {
                weights[j][i]
            } else {
                weights[i][j]
            };
        }
    }
    let (_, a) = kuhn_munkres(&m);
    a.iter()
        .enumerate()
        .filter(|(i, j)| m[(*i, **j)] > 0)
        .map(|(i, &j)| if transpose { (j, i) } else { (i, j) })
        .collect()
}

/// MOTA and IDF1 over a sequence.
pub fn evaluate(frames: &[FrameBoxes]) -> MotSummary {
    let mut s = MotSummary {
        frames: frames.len(),
        ..Default::default()
    };
    // CLEAR MOT: keep each object's last correspondence while it still overlaps, assign the
    // rest optimally (most matches first, then most overlap), count an identity switch when an
    // object's track differs from its last one.
    let mut last_track: HashMap<u64, u64> = HashMap::new();
    // Identity measures: frames in which each (object, track) pair overlaps.
    let mut pair_frames: HashMap<(u64, u64), i64> = HashMap::new();
    let mut truth_count: HashMap<u64, usize> = HashMap::new();
    let mut track_count: HashMap<u64, usize> = HashMap::new();
    for f in frames {
        s.truth_boxes += f.truth.len();
        s.track_boxes += f.tracks.len();
        for (g, _) in &f.truth {
            *truth_count.entry(*g).or_default() += 1;
        }
        for (h, _) in &f.tracks {
            *track_count.entry(*h).or_default() += 1;
        }
        let overlap: Vec<Vec<f32>> = f
            .truth
            .iter()
            .map(|(_, g)| f.tracks.iter().map(|(_, h)| iou(g, h)).collect())
            .collect();
        for (i, (g, _)) in f.truth.iter().enumerate() {
            for (j, (h, _)) in f.tracks.iter().enumerate() {
                if overlap[i][j] >= MIN_IOU {
                    *pair_frames.entry((*g, *h)).or_default() += 1;
                }
            }
        }
        let mut matched: Vec<(usize, usize)> = Vec::new();
        let (mut used_g, mut used_h) = (vec![false; f.truth.len()], vec![false; f.tracks.len()]);
        for (i, (g, _)) in f.truth.iter().enumerate() {
            if let Some(h) = last_track.get(g) {
                if let Some(j) = f.tracks.iter().position(|(t, _)| t == h) {
                    if overlap[i][j] >= MIN_IOU && !used_h[j] {
                        matched.push((i, j));
                        used_g[i] = true;
                        used_h[j] = true;
                    }
                }
            }
        }
        let weights: Vec<Vec<i64>> = (0..f.truth.len())
            .map(|i| {
                (0..f.tracks.len())
                    .map(|j| {
                        if used_g[i] || used_h[j] || overlap[i][j] < MIN_IOU {
                            0
                        } else {
                            MATCH_WEIGHT + (overlap[i][j] * 1e6) as i64
                        }
                    })
                    .collect()
            })
            .collect();
        matched.extend(assign(&weights));
        for &(i, j) in &matched {
            let (g, h) = (f.truth[i].0, f.tracks[j].0);
            if last_track.get(&g).is_some_and(|&prev| prev != h) {
                s.id_switches += 1;
            }
            last_track.insert(g, h);
        }
        s.matches += matched.len();
        s.misses += f.truth.len() - matched.len();
        s.false_positives += f.tracks.len() - matched.len();
    }
    s.mota = if s.truth_boxes == 0 {
        0.0
    } else {
        1.0 - (s.misses + s.false_positives + s.id_switches) as f64 / s.truth_boxes as f64
    };
    // IDF1: the one-to-one object ↔ track assignment that maximises frames matched.
    let gs: Vec<u64> = truth_count.keys().copied().collect();
    let hs: Vec<u64> = track_count.keys().copied().collect();
    let weights: Vec<Vec<i64>> = gs
        .iter()
        .map(|g| {
            hs.iter()
                .map(|h| pair_frames.get(&(*g, *h)).copied().unwrap_or(0))
                .collect()
        })
        .collect();
    s.idtp = assign(&weights)
        .iter()
        .map(|&(i, j)| weights[i][j] as usize)
        .sum();
    let denom = (s.truth_boxes + s.track_boxes) as f64;
    s.idf1 = if denom > 0.0 {
        2.0 * s.idtp as f64 / denom
    } else {
        0.0
    };
    s.idp = s.idtp as f64 / (s.track_boxes.max(1)) as f64;
    s.idr = s.idtp as f64 / (s.truth_boxes.max(1)) as f64;
    s.hota = crate::hota::hota(frames);
    s
}

/// The boxes in MOTChallenge text format (`frame,id,left,top,width,height,1,-1,-1,-1`, frames
/// 1-based): (ground truth, hypotheses), for cross-checking with other tools.
pub fn mot_text(frames: &[FrameBoxes]) -> (String, String) {
    use std::fmt::Write as _;
    let (mut gt, mut hyp) = (String::new(), String::new());
    for f in frames {
        for (out, list) in [(&mut gt, &f.truth), (&mut hyp, &f.tracks)] {
            for (id, r) in list {
                let _ = writeln!(
                    out,
                    "{},{},{:.3},{:.3},{:.3},{:.3},1,-1,-1,-1",
                    f.frame + 1,
                    id,
                    r.left,
                    r.top,
                    r.width(),
                    r.height()
                );
            }
        }
    }
    (gt, hyp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: f64) -> Rect {
        Rect {
            left: x,
            top: 0.0,
            right: x + 10.0,
            bottom: 10.0,
        }
    }

    #[test]
    fn a_perfect_tracker_scores_one() {
        let frames: Vec<FrameBoxes> = (0..10)
            .map(|k| FrameBoxes {
                frame: k,
                truth: vec![(1, b(k as f64)), (2, b(100.0))],
                tracks: vec![(7, b(k as f64)), (8, b(100.0))],
            })
            .collect();
        let s = evaluate(&frames);
        assert_eq!((s.mota, s.idf1, s.id_switches), (1.0, 1.0, 0));
    }

    #[test]
    fn a_swap_halfway_costs_one_switch_each_and_half_the_identity() {
        // Two objects far apart; the tracker swaps their ids at frame 5.
        let frames: Vec<FrameBoxes> = (0..10)
            .map(|k| {
                let (a, c) = if k < 5 { (7, 8) } else { (8, 7) };
                FrameBoxes {
                    frame: k,
                    truth: vec![(1, b(0.0)), (2, b(100.0))],
                    tracks: vec![(a, b(0.0)), (c, b(100.0))],
                }
            })
            .collect();
        let s = evaluate(&frames);
        assert_eq!(s.id_switches, 2);
        assert!((s.mota - (1.0 - 2.0 / 20.0)).abs() < 1e-12);
        assert!((s.idf1 - 0.5).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn misses_and_false_positives_count() {
        let frames = vec![
            FrameBoxes {
                frame: 0,
                truth: vec![(1, b(0.0))],
                tracks: vec![],
            },
            FrameBoxes {
                frame: 1,
                truth: vec![(1, b(0.0))],
                tracks: vec![(5, b(0.0)), (6, b(300.0))],
            },
        ];
        let s = evaluate(&frames);
        assert_eq!((s.misses, s.false_positives, s.matches), (1, 1, 1));
        assert!((s.mota - 0.0).abs() < 1e-12);
        // IDTP 1 of 2 truth and 2 track boxes.
        assert!((s.idf1 - 0.5).abs() < 1e-12);
    }
}
