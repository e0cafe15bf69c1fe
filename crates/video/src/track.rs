//! Multi-face tracking in the ByteTrack family: a constant-velocity Kalman filter per face box,
//! optimal assignment (Hungarian) of detections to predicted boxes on overlap, a second pass that
//! lets low-score detections continue existing tracks (a face turning away or blurred still
//! belongs to its track), and lost tracks kept for a while so a short occlusion does not start a
//! new identity. Appearance gating: when a detection could belong to more than one track (people
//! crossing), the caller's embeddings decide, and a pair whose faces disagree is never matched.
//!
//! A face hidden for a while is found again three ways: its lost track coasting into it (its
//! size frozen while lost, as ByteTrack does, and its face must agree); re-identification of a
//! new detection near where the lost track was heading; and late re-identification, which keeps
//! comparing a young track's face with the lost tracks for its first frames, because a face
//! coming out from behind another is half hidden at first. A track's appearance is a moving
//! average of the faces confirmed for it (the caller may set it, e.g. to the fused template it
//! decided on), so one half-hidden face does not overwrite it. A lost track whose predicted
//! centre has left the frame ends at once: the person walked out.
//!
//! Track ids are numbers local to one tracker (one stream), never reused, and carry nothing about
//! the person: nothing here links a face across cameras.

use nalgebra::{SMatrix, SVector};
use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;
use vision::geometry::Rect;
use zeroize::Zeroizing;

/// An embedding the tracker holds: zeroised when dropped (a track's appearance, a detection's
/// face while it is compared), so no face template outlives its use here.
type Face = Zeroizing<Vec<f32>>;

type State = SVector<f32, 8>;
type Cov = SMatrix<f32, 8, 8>;
type Obs = SVector<f32, 4>;

/// Tracker settings. Scores are the detector's (dlib's MMOD and HOG: 0 is their default
/// threshold); run the detector at `low_score` so the second pass has something to use.
#[derive(Debug, Clone, Copy)]
pub struct TrackerConfig {
    /// Detections at or above this start tracks and take part in the first pass.
    pub high_score: f32,
    /// Detections between this and `high_score` only continue tracks (second pass).
    pub low_score: f32,
    /// Least overlap (IoU) for a first-pass match.
    pub match_iou: f32,
    /// Least overlap for a second-pass (low-score) match.
    pub low_match_iou: f32,
    /// Motion steps a track may go unseen before it ends (unless it left the frame first):
    /// updates at the usual interval ([`Tracker::update`]), or the time [`Tracker::update_over`]
    /// is told each update spans, so that a track is kept as long in time whatever the updates'
    /// spacing.
    pub max_lost_frames: u32,
    /// Hits before a new track is reported (filters one-frame false detections).
    pub min_hits: u32,
    /// Appearance gate: two faces farther apart than this (Euclidean distance between the
    /// embeddings the caller supplies) are not the same person, whatever the boxes say.
    /// [`TrackerConfig::for_threshold`] sets it from the pack's decision threshold.
    pub appearance_gate: f32,
    /// Re-identification: a confident detection no track claimed takes over a lost track whose
    /// face is closer than this (normalised embeddings) and whose predicted box is near, instead
    /// of starting a new track (a face hidden behind another and found again).
    pub reid_distance: f32,
    /// How far (in the lost box's sides) a detection may be from its predicted centre to be
    /// re-identified with it.
    pub reid_reach: f32,
    /// Late re-identification: while a track has been seen at most this many times, its face is
    /// compared with the lost tracks' every frame, and a lost track it agrees with (within
    /// `reid_distance`, anywhere in the frame) takes it over. A face coming out from behind
    /// another is half hidden at first, too unlike its lost track to be re-identified on the
    /// first frame; a few frames later it is whole. Keep it below the watcher's
    /// `decide_after_frames`, so a track taken over was never decided on its own.
    pub reid_young_hits: u32,
}

impl TrackerConfig {
    /// The appearance distances scaled to a pack's decision threshold `d` (as a Euclidean
    /// distance between the embeddings the tracker is given): the crossing gate rejects pairs
    /// clearly beyond it (1.15 d), re-identification needs a pair clearly within it (0.85 d).
    pub fn for_threshold(self, d: f32) -> TrackerConfig {
        TrackerConfig {
            appearance_gate: 1.15 * d,
            reid_distance: 0.85 * d,
            ..self
        }
    }
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            high_score: 0.0,
            low_score: -0.6,
            match_iou: 0.3,
            low_match_iou: 0.5,
            max_lost_frames: 90,
            min_hits: 2,
            appearance_gate: 0.6,
            reid_distance: 0.45,
            reid_reach: 3.0,
            reid_young_hits: 15,
        }
    }
}

/// A detection handed to the tracker.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub rect: Rect,
    pub score: f32,
}

/// What happened in one update.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Update {
    /// (detection index, track id) for every detection that belongs to a reported track.
    pub assigned: Vec<(usize, u64)>,
    /// Tracks reported for the first time in this frame.
    pub started: Vec<u64>,
    /// Tracks that ended in this frame (unseen for too long, or gone out of view).
    pub ended: Vec<u64>,
    /// Those of `ended` that ended because their face left the frame (a person who walks out
    /// and comes back is a new passer-by; one hidden in view is not).
    pub left_view: Vec<u64>,
    /// (young track, lost track): a reported young track whose face turned out to be a lost
    /// track's; the lost track continues with its detections, the young one is gone.
    pub merged: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Seen fewer than `min_hits` times: not reported yet.
    Tentative,
    Tracked,
    /// Not seen in the last frame(s); still matched against.
    Lost,
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    mean: State,
    cov: Cov,
    phase: Phase,
    hits: u32,
    /// Updates since last seen.
    unseen: u32,
    /// Motion steps since last seen: the time unseen, which decides when a lost track ends.
    lost_steps: f32,
    /// The appearance of the face as last confirmed (normalised embedding), when known.
    appearance: Option<Face>,
}

/// The tracker of one stream.
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
    /// The frame's width and height, when the caller says (see [`Tracker::set_frame_size`]).
    frame: Option<(f64, f64)>,
}

fn observe(r: &Rect) -> Obs {
    Obs::new(
        ((r.left + r.right) / 2.0) as f32,
        ((r.top + r.bottom) / 2.0) as f32,
        r.width() as f32,
        r.height() as f32,
    )
}

fn rect_of(m: &State) -> Rect {
    let (cx, cy, w, h) = (
        m[0] as f64,
        m[1] as f64,
        m[2].max(1.0) as f64,
        m[3].max(1.0) as f64,
    );
    Rect {
        left: cx - w / 2.0,
        top: cy - h / 2.0,
        right: cx + w / 2.0,
        bottom: cy + h / 2.0,
    }
}

/// Intersection over union of two boxes (0 when either is empty). Boxes follow dlib's
/// inclusive convention (`Rect::width` is right − left + 1), the intersection too.
pub fn iou(a: &Rect, b: &Rect) -> f32 {
    let w = (a.right.min(b.right) - a.left.max(b.left) + 1.0).max(0.0);
    let h = (a.bottom.min(b.bottom) - a.top.max(b.top) + 1.0).max(0.0);
    let inter = w * h;
    let union = a.width() * a.height() + b.width() * b.height() - inter;
    if union <= 0.0 {
        0.0
    } else {
        (inter / union) as f32
    }
}

/// How much of a track's appearance one new confirmed face replaces. The faces confirmed are
/// those of ambiguous moments (people crossing, a face half hidden), so one of them must not
/// overwrite what the track looked like (the exponential moving average of BoT-SORT and
/// DeepSORT's successors, at their 0.9 / 0.1).
const APPEARANCE_UPDATE: f32 = 0.1;

/// The appearance after confirming face `e`: a moving average, scaled back to the mean of the
/// two norms (so a unit-length pack's appearance stays unit length).
fn blend(old: &[f32], e: &[f32]) -> Face {
    if old.len() != e.len() {
        return Zeroizing::new(e.to_vec());
    }
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut mixed: Face = Zeroizing::new(
        old.iter()
            .zip(e)
            .map(|(a, b)| (1.0 - APPEARANCE_UPDATE) * a + APPEARANCE_UPDATE * b)
            .collect(),
    );
    let want = (1.0 - APPEARANCE_UPDATE) * norm(old) + APPEARANCE_UPDATE * norm(e);
    let have = norm(&mixed);
    if have > 0.0 && have.is_finite() && want.is_finite() {
        mixed.iter_mut().for_each(|x| *x *= want / have);
        mixed
    } else {
        Zeroizing::new(e.to_vec())
    }
}

/// Euclidean distance: the tracker's measure between two appearances.
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

// Noise scaled by the face's size, as in SORT/ByteTrack: a big near face moves more pixels.
const POS_NOISE: f32 = 1.0 / 20.0;
const VEL_NOISE: f32 = 1.0 / 160.0;

impl Track {
    fn new(id: u64, r: &Rect) -> Track {
        let z = observe(r);
        let mut mean = State::zeros();
        mean.fixed_rows_mut::<4>(0).copy_from(&z);
        let s = z[3].max(1.0);
        let std = [
            2.0 * POS_NOISE * s,
            2.0 * POS_NOISE * s,
            2.0 * POS_NOISE * s,
            2.0 * POS_NOISE * s,
            10.0 * VEL_NOISE * s,
            10.0 * VEL_NOISE * s,
            10.0 * VEL_NOISE * s,
            10.0 * VEL_NOISE * s,
        ];
        let cov = Cov::from_diagonal(&State::from_iterator(std.iter().map(|v| v * v)));
        Track {
            id,
            mean,
            cov,
            phase: Phase::Tentative,
            hits: 1,
            unseen: 0,
            lost_steps: 0.0,
            appearance: None,
        }
    }

    /// Move the track on by `steps` of the motion model's step (1: the usual interval between
    /// updates; more when frames were skipped or lost since, fewer when updates came closer).
    fn predict(&mut self, steps: f32) {
        // A lost face keeps moving but stops growing: extrapolating its size for a second or two
        // makes boxes that no reappearing face overlaps (as ByteTrack freezes its height).
        if self.phase == Phase::Lost {
            self.mean[6] = 0.0;
            self.mean[7] = 0.0;
        }
        let mut f = Cov::identity();
        for i in 0..4 {
            f[(i, i + 4)] = steps;
        }
        let s = self.mean[3].max(1.0);
        // The noise a step adds grows with the time it spans (a random walk's variance).
        let q: State = State::from_iterator(
            [POS_NOISE, POS_NOISE, POS_NOISE, POS_NOISE]
                .iter()
                .map(|v| (v * s).powi(2) * steps)
                .chain([VEL_NOISE; 4].iter().map(|v| (v * s).powi(2) * steps)),
        );
        self.mean = f * self.mean;
        self.cov = f * self.cov * f.transpose() + Cov::from_diagonal(&q);
    }

    fn correct(&mut self, r: &Rect) {
        let z = observe(r);
        let h = SMatrix::<f32, 4, 8>::from_fn(|i, j| if i == j { 1.0 } else { 0.0 });
        let s = self.mean[3].max(1.0);
        let rn = SMatrix::<f32, 4, 4>::from_diagonal(&Obs::from_element((POS_NOISE * s).powi(2)));
        let innovation_cov = h * self.cov * h.transpose() + rn;
        // A covariance that cannot be inverted (degenerate numbers) resets the track to the
        // observation instead of poisoning it.
        let Some(inv) = innovation_cov.try_inverse() else {
            *self = Track {
                id: self.id,
                phase: self.phase,
                hits: self.hits,
                appearance: self.appearance.take(),
                ..Track::new(self.id, r)
            };
            return;
        };
        let gain = self.cov * h.transpose() * inv;
        self.mean += gain * (z - h * self.mean);
        self.cov = (Cov::identity() - gain * h) * self.cov;
    }

    fn rect(&self) -> Rect {
        rect_of(&self.mean)
    }
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Tracker {
        Tracker {
            config,
            tracks: Vec::new(),
            next_id: 1,
            frame: None,
        }
    }

    /// The size of the frames: a lost track whose predicted centre has left the frame has left
    /// the camera's view and ends then, instead of waiting `max_lost_frames` (its decision
    /// comes sooner, and a person who walks out and comes back later is a new passer-by, not
    /// taken for the one still coasting outside).
    pub fn set_frame_size(&mut self, width: u32, height: u32) {
        self.frame = Some((width as f64, height as f64));
    }

    /// The settings it runs with.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// Tracks alive now (tentative ones included): bounded by the faces in view plus those lost
    /// within `max_lost_frames`.
    pub fn live_tracks(&self) -> usize {
        self.tracks.len()
    }

    /// The predicted box of a live track.
    pub fn rect(&self, id: u64) -> Option<Rect> {
        self.tracks.iter().find(|t| t.id == id).map(Track::rect)
    }

    /// The closest live track other than `id` whose appearance is within distance `within` of
    /// `embedding` (in the tracker's geometry), among those `eligible` says may be; with the
    /// distance.
    pub fn same_face(
        &self,
        id: u64,
        embedding: &[f32],
        within: f32,
        eligible: impl Fn(u64) -> bool,
    ) -> Option<(u64, f32)> {
        self.tracks
            .iter()
            .filter(|t| t.id != id && eligible(t.id))
            .filter_map(|t| {
                t.appearance
                    .as_ref()
                    .map(|a| (t.id, distance(embedding, a)))
            })
            .filter(|(_, d)| *d <= within)
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Set a track's appearance (an embedding of its face, or the fused template of its best
    /// frames), replacing what it had.
    pub fn set_appearance(&mut self, id: u64, embedding: Vec<f32>) {
        if let Some(t) = self.tracks.iter_mut().find(|t| t.id == id) {
            t.appearance = Some(Zeroizing::new(embedding));
        }
    }

    /// Advance by one step. `appearance(i)` is asked for detection `i`'s embedding only when the
    /// boxes alone are ambiguous (it overlaps more than one track, or a track overlaps more than
    /// one detection) and a track involved has an appearance; return `None` when unknown.
    pub fn update(
        &mut self,
        detections: &[Observation],
        appearance: &mut dyn FnMut(usize) -> Option<Vec<f32>>,
    ) -> Update {
        self.update_over(1.0, detections, appearance)
    }

    /// Advance by `steps` of the motion model's step at once: the time since the last update
    /// in units of the usual interval between updates (the watcher's detection interval when
    /// it started). Faces move on by their velocity times `steps`, so a detection interval that
    /// changed, or frames a live source lost, do not leave the predicted boxes behind. Clamped
    /// to 1/16..64; not finite counts as 1. A lost track is kept for `max_lost_frames` steps
    /// of time, however many updates they took.
    pub fn update_over(
        &mut self,
        steps: f32,
        detections: &[Observation],
        appearance: &mut dyn FnMut(usize) -> Option<Vec<f32>>,
    ) -> Update {
        let steps = if steps.is_finite() {
            steps.clamp(1.0 / 16.0, 64.0)
        } else {
            1.0
        };
        let cfg = self.config;
        for t in &mut self.tracks {
            t.predict(steps);
        }
        let high: Vec<usize> = (0..detections.len())
            .filter(|&i| detections[i].score >= cfg.high_score && detections[i].score.is_finite())
            .collect();
        let low: Vec<usize> = (0..detections.len())
            .filter(|&i| {
                detections[i].score >= cfg.low_score && detections[i].score < cfg.high_score
            })
            .collect();

        // First pass: every track against the confident detections.
        let all: Vec<usize> = (0..self.tracks.len()).collect();
        let (pairs, free_tracks, free_high) =
            self.associate(&all, &high, detections, cfg.match_iou, appearance);
        let mut matched: Vec<(usize, usize)> = pairs;
        // Second pass: tracks seen last frame against the weak detections.
        let recent: Vec<usize> = free_tracks
            .iter()
            .copied()
            .filter(|&t| self.tracks[t].phase == Phase::Tracked)
            .collect();
        let (pairs, _, _) =
            self.associate(&recent, &low, detections, cfg.low_match_iou, appearance);
        matched.extend(pairs);

        let mut out = Update::default();
        let mut seen = vec![false; self.tracks.len()];
        for &(t, d) in &matched {
            seen[t] = true;
            let track = &mut self.tracks[t];
            track.correct(&detections[d].rect);
            track.hits += 1;
            track.unseen = 0;
            track.lost_steps = 0.0;
            match track.phase {
                Phase::Tentative if track.hits >= cfg.min_hits => {
                    track.phase = Phase::Tracked;
                    out.started.push(track.id);
                }
                Phase::Lost => track.phase = Phase::Tracked,
                _ => {}
            }
            if track.phase == Phase::Tracked {
                out.assigned.push((d, track.id));
            }
        }
        // Young tracks seen in this frame, for late re-identification below.
        let young: Vec<(u64, usize)> = matched
            .iter()
            .filter(|&&(t, _)| {
                self.tracks[t].hits <= cfg.reid_young_hits && self.tracks[t].phase != Phase::Lost
            })
            .map(|&(t, d)| (self.tracks[t].id, d))
            .collect();
        for (t, track) in self.tracks.iter_mut().enumerate() {
            if !seen[t] {
                track.unseen += 1;
                track.lost_steps += steps;
                if track.phase == Phase::Tracked {
                    track.phase = Phase::Lost;
                }
            }
        }
        // Ends: lost too long, or tentative and missed once.
        let max_lost = cfg.max_lost_frames as f32;
        let frame = self.frame;
        let left_view = |t: &Track| {
            frame.is_some_and(|(w, h)| {
                let (cx, cy) = (t.mean[0] as f64, t.mean[1] as f64);
                !(0.0..w).contains(&cx) || !(0.0..h).contains(&cy)
            })
        };
        self.tracks.retain(|t| {
            let gone = match t.phase {
                Phase::Tentative => t.unseen > 0,
                Phase::Lost => t.lost_steps > max_lost || left_view(t),
                Phase::Tracked => t.lost_steps > max_lost,
            };
            if gone && t.phase != Phase::Tentative {
                out.ended.push(t.id);
                if t.phase == Phase::Lost && left_view(t) {
                    out.left_view.push(t.id);
                }
            }
            !gone
        });
        // New tracks from confident detections nobody claimed, unless one is a lost face found
        // again (re-identified by appearance, near where its track was heading).
        let claimed: std::collections::HashSet<usize> = matched.iter().map(|m| m.1).collect();
        let mut revived = std::collections::HashSet::new();
        for &d in &free_high {
            if claimed.contains(&d) {
                continue;
            }
            if let Some(id) = self.reidentify(&detections[d].rect, d, &revived, appearance) {
                revived.insert(id);
                if let Some(t) = self.tracks.iter_mut().find(|t| t.id == id) {
                    t.correct(&detections[d].rect);
                    t.hits += 1;
                    t.unseen = 0;
                    t.lost_steps = 0.0;
                    t.phase = Phase::Tracked;
                }
                out.assigned.push((d, id));
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let mut t = Track::new(id, &detections[d].rect);
            if cfg.min_hits <= 1 {
                t.phase = Phase::Tracked;
                out.started.push(id);
                out.assigned.push((d, id));
            }
            self.tracks.push(t);
        }
        for (young_id, d) in young {
            self.late_reidentify(young_id, d, &mut out, appearance);
        }
        out.assigned.sort_unstable();
        out
    }

    /// Young track `young_id` (seen this frame in detection `d`) is taken over by the lost
    /// track whose face agrees best, if one does; `out` is rewritten to say so.
    fn late_reidentify(
        &mut self,
        young_id: u64,
        d: usize,
        out: &mut Update,
        appearance: &mut dyn FnMut(usize) -> Option<Vec<f32>>,
    ) {
        let Some(li) = self.closest_lost(|t| t.id < young_id, d, appearance) else {
            return;
        };
        let Some(yi) = self.tracks.iter().position(|t| t.id == young_id) else {
            return;
        };
        let young = self.tracks.remove(yi);
        let li = if li > yi { li - 1 } else { li };
        let old = &mut self.tracks[li];
        old.mean = young.mean;
        old.cov = young.cov;
        old.phase = Phase::Tracked;
        old.unseen = 0;
        old.lost_steps = 0.0;
        old.hits += young.hits;
        let old_id = old.id;
        let reported = young.phase == Phase::Tracked;
        if let Some(k) = out.started.iter().position(|&id| id == young_id) {
            // Reported in this very frame: it never was, as far as the caller knows.
            out.started.remove(k);
        } else if reported {
            out.merged.push((young_id, old_id));
        }
        out.assigned.retain(|&(_, id)| id != young_id);
        out.assigned.push((d, old_id));
    }

    /// The lost track (with a known appearance, its predicted box near `r`) that the face of
    /// detection `d` is closest to, if within `reid_distance`.
    fn reidentify(
        &self,
        r: &Rect,
        d: usize,
        taken: &std::collections::HashSet<u64>,
        appearance: &mut dyn FnMut(usize) -> Option<Vec<f32>>,
    ) -> Option<u64> {
        let near = |t: &Track| {
            let p = t.rect();
            let (dx, dy) = (
                (p.left + p.right - r.left - r.right) / 2.0,
                (p.top + p.bottom - r.top - r.bottom) / 2.0,
            );
            dx.hypot(dy) <= self.config.reid_reach as f64 * p.width().max(r.width())
        };
        self.closest_lost(|t| !taken.contains(&t.id) && near(t), d, appearance)
            .map(|i| self.tracks[i].id)
    }

    /// The index of the lost track (with a known appearance, and `eligible`) whose face is
    /// closest to detection `d`'s, if within `reid_distance`; `d`'s face is asked for only
    /// when there is such a track.
    fn closest_lost(
        &self,
        eligible: impl Fn(&Track) -> bool,
        d: usize,
        appearance: &mut dyn FnMut(usize) -> Option<Vec<f32>>,
    ) -> Option<usize> {
        let lost = |t: &Track| {
            t.phase == Phase::Lost && t.unseen > 0 && t.appearance.is_some() && eligible(t)
        };
        if !self.tracks.iter().any(lost) {
            return None;
        }
        let e = Zeroizing::new(appearance(d)?);
        self.tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| lost(t))
            .filter_map(|(i, t)| t.appearance.as_ref().map(|a| (i, distance(&e, a))))
            .filter(|(_, dist)| *dist <= self.config.reid_distance)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    /// End every track (the stream ended): their ids, in start order.
    pub fn finish(&mut self) -> Vec<u64> {
        let ended = self
            .tracks
            .iter()
            .filter(|t| t.phase != Phase::Tentative)
            .map(|t| t.id)
            .collect();
        self.tracks.clear();
        ended
    }

    /// Optimal one-to-one assignment of `tracks` to `dets` maximising overlap, pairs below
    /// `min_iou` or whose faces disagree left out. Returns (pairs, unmatched tracks, unmatched
    /// detections) as indices into `self.tracks` and `detections`.
    fn associate(
        &mut self,
        tracks: &[usize],
        dets: &[usize],
        detections: &[Observation],
        min_iou: f32,
        appearance: &mut dyn FnMut(usize) -> Option<Vec<f32>>,
    ) -> (Vec<(usize, usize)>, Vec<usize>, Vec<usize>) {
        if tracks.is_empty() || dets.is_empty() {
            return (Vec::new(), tracks.to_vec(), dets.to_vec());
        }
        let boxes: Vec<Rect> = tracks.iter().map(|&t| self.tracks[t].rect()).collect();
        let mut overlap = vec![vec![0f32; dets.len()]; tracks.len()];
        for (i, b) in boxes.iter().enumerate() {
            for (j, &d) in dets.iter().enumerate() {
                overlap[i][j] = iou(b, &detections[d].rect);
            }
        }
        // Appearance only where the boxes are ambiguous and a track knows its face.
        let candidates = |row: &[f32]| row.iter().filter(|v| **v >= min_iou).count();
        let mut embeddings: Vec<Option<Option<Face>>> = vec![None; dets.len()];
        for (i, &t) in tracks.iter().enumerate() {
            let Some(known) = self.tracks[t].appearance.clone() else {
                continue;
            };
            let row_ambiguous = candidates(&overlap[i]) > 1;
            // A lost track coasts on its last velocity: whoever walks into its predicted box
            // must also have its face to take it over.
            let lost = self.tracks[t].phase == Phase::Lost;
            for (j, &d) in dets.iter().enumerate() {
                if overlap[i][j] < min_iou {
                    continue;
                }
                let col_ambiguous = overlap.iter().filter(|r| r[j] >= min_iou).count() > 1;
                if !(row_ambiguous || col_ambiguous || lost) {
                    continue;
                }
                let e = embeddings[j].get_or_insert_with(|| appearance(d).map(Zeroizing::new));
                if let Some(e) = e {
                    if distance(e, &known) > self.config.appearance_gate {
                        overlap[i][j] = 0.0;
                    }
                }
            }
        }
        // Hungarian on integer weights (IoU in millionths); rows must not outnumber columns.
        let transpose = tracks.len() > dets.len();
        let (rows, cols) = if transpose {
            (dets.len(), tracks.len())
        } else {
            (tracks.len(), dets.len())
        };
        let weight = |r: usize, c: usize| -> i64 {
            let v = if transpose {
                overlap[c][r]
            } else {
                overlap[r][c]
            };
            if v >= min_iou {
                (v * 1e6) as i64
            } else {
                0
            }
        };
        let mut m = Matrix::new(rows, cols, 0i64);
        for r in 0..rows {
            for c in 0..cols {
                m[(r, c)] = weight(r, c);
            }
        }
        let (_, assignment) = kuhn_munkres(&m);
        let mut pairs = Vec::new();
        for (r, &c) in assignment.iter().enumerate() {
            if weight(r, c) == 0 {
                continue;
            }
            let (ti, dj) = if transpose { (c, r) } else { (r, c) };
            pairs.push((tracks[ti], dets[dj]));
        }
        // A track whose face was confirmed in this frame keeps its appearance current.
        for &(t, d) in &pairs {
            let j = dets.iter().position(|&x| x == d);
            if let Some(Some(Some(e))) = j.map(|j| embeddings[j].clone()) {
                let track = &mut self.tracks[t];
                track.appearance = Some(match track.appearance.take() {
                    Some(old) => blend(&old, &e),
                    None => e,
                });
            }
        }
        let used_t: std::collections::HashSet<usize> = pairs.iter().map(|p| p.0).collect();
        let used_d: std::collections::HashSet<usize> = pairs.iter().map(|p| p.1).collect();
        (
            pairs,
            tracks
                .iter()
                .copied()
                .filter(|t| !used_t.contains(t))
                .collect(),
            dets.iter()
                .copied()
                .filter(|d| !used_d.contains(d))
                .collect(),
        )
    }
}
