//! One decision per passer-by: frames → detections → tracks → the best frames of each track →
//! one fused template, handed to the caller exactly once per track.
//!
//! Per frame the pipeline detects (every `detect_every`-th frame), the tracker assigns, and each
//! tracked face gets landmarks, an aligned chip and its quality; a track keeps only its
//! `best_frames` best chips (by [`frame_rank`] times [`visible_share`]). A track is decided
//! once: when it has been seen `decide_after_frames` times, or when it ends, whichever comes
//! first — or earlier, on a clear match with a known face, when the caller gives one
//! ([`EarlyMatch`]); later frames of a decided track only keep it tracked. When the tracker finds a young
//! track to be a lost one found again (late re-identification), the lost track continues with
//! the young one's kept frames and the young one ends without a decision (`merged_into`): one
//! passer-by, one decision, even if the face was hidden for a while. Only the kept chips are
//! embedded (plus one chip when a track starts, as its appearance for the tracker's crossing
//! gate, and the kept chips once more when a track is lost undecided: `Watcher::look_at_lost`).
//! Chips and embeddings are zeroised when they are dropped; no frame is kept.

use crate::error::VideoError;
use crate::motion::{MotionConfig, MotionTrack};
use crate::rank::{frame_rank, visible_share};
use crate::source::Frame;
use crate::track::{Observation, Tracker, TrackerConfig};
use image::RgbImage;
use std::collections::{HashMap, HashSet};
use template::{fuse, unit};
use vision::geometry::Rect;
use vision::liveness::PadCrops;
use vision::pipeline::Pipeline;
use vision::quality::Quality;
use zeroize::{Zeroize, Zeroizing};

mod evidence;
use evidence::{decide, embeddings_of, zeroize_all};
pub use evidence::{Evidence, FrameUsed, TrackLiveness};

/// Detection frames a track goes unseen before [`Watcher::look_at_lost`] looks at it: longer than
/// a missed detection or two, shorter than the shortest hiding behind a passer-by.
const LOST_LOOK_AFTER: u64 = 3;

/// A decided track that ended is remembered (see [`Watcher::recent`]) this many times as long as
/// a lost track is kept: a track that started within one such span is compared with it when it
/// decides, which may take up to two more (30 sightings, or its own end after being lost).
const RECENT_KEPT: u64 = 3;

#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// The tracker's settings; its `max_lost_frames` counts camera frames here (the watcher
    /// converts it to the tracker's steps of `detect_every` frames, rounding up), so a lost
    /// face is kept as long in time at any detection interval, fixed or `auto`.
    pub tracker: TrackerConfig,
    /// Detect on every n-th frame (1: every frame); the tracker steps on those frames only.
    pub detect_every: u32,
    /// Best frames kept (and embedded) per track.
    pub best_frames: usize,
    /// Decide a track after it was seen this many times (on detection frames), or when it ends.
    pub decide_after_frames: u32,
    /// A track that ends mid-stream seen fewer times than this is a fragment — a face glimpsed,
    /// or a half-hidden one before its passer-by's own track takes it back — and is not decided
    /// (its passer-by is decided by their own track). At the end of a stream (or a gate session)
    /// every track is decided on what there was.
    pub min_frames_to_decide: u32,
    /// Tracks whose frames are collected at once; more faces are tracked but not collected
    /// (bounds memory on a frame full of faces).
    pub max_collected_tracks: usize,
    /// The planar-motion liveness cue, measured on each track when the pipeline has a PAD stage.
    pub motion: MotionConfig,
    /// A track about to be decided whose fused template is within this distance of another
    /// passer-by's (in the tracker's geometry) is taken for that passer-by and not decided
    /// again. [`WatchConfig::for_pack`] sets it to `duplicate_factor` times the pack's decision
    /// distance.
    pub duplicate_distance: f32,
    /// `duplicate_distance` as a multiple of the decision distance, for `for_pack`.
    pub duplicate_factor: f32,
    /// Also keep each track's first collected frame and embed it with the decision
    /// ([`Evidence::first`]): what fusing the best frames is measured against, besides the best
    /// single frame. One more embedding a passer-by, so off except in evaluation.
    pub first_frame_template: bool,
}

impl WatchConfig {
    /// The tracker's appearance gates from a pack's metric and decision threshold.
    pub fn for_pack(self, metric: vision::pack::Metric, threshold: f64) -> WatchConfig {
        let d = decision_distance(metric, threshold);
        WatchConfig {
            tracker: self.tracker.for_threshold(d as f32),
            duplicate_distance: self.duplicate_factor * d as f32,
            ..self
        }
    }
}

/// A decision threshold as a distance in the tracker's geometry (`pack_geometry`): a distance
/// pack's threshold as it is; a similarity threshold t on unit vectors is the Euclidean distance
/// sqrt(2 - 2t).
pub fn decision_distance(metric: vision::pack::Metric, threshold: f64) -> f64 {
    if metric.is_similarity() {
        (2.0 - 2.0 * threshold).max(0.0).sqrt()
    } else {
        threshold
    }
}

/// Deciding a track before `decide_after_frames` when its best frames already match clearly.
///
/// An e-gate wants its traveller decided as soon as the evidence settles it, not after a second
/// of frames: once a track has been seen `min_frames_to_decide` times and holds its full
/// `best_frames`, its provisional fused template is compared with the references each time a
/// better frame is kept; within `factor` times the decision distance of one, the track is
/// decided there (on those frames, as any decision). Only a clear *match* ends collection early:
/// a face that does not match yet may still show a better frame, so it waits as before.
///
/// The references are faces the caller decides against without an audited search (the chip
/// photo at an e-gate, an evaluation's references): a gallery is not probed frame after frame.
/// Not with a PAD stage: its motion cue and passive checks look at the whole collection.
pub struct EarlyMatch {
    /// In the tracker's geometry, zeroised when dropped.
    references: Vec<Zeroizing<Vec<f32>>>,
    within: f32,
}

impl EarlyMatch {
    /// The factor an e-gate uses unless told otherwise (`watch --reference`, the server's gate
    /// session). On 20 held-out generated scenes (606 passers-by) it decided 77% of them early,
    /// a median of 10 frames after they came into view instead of 32, with fewer wrong decisions
    /// and fewer passers-by decided twice than without (docs/video.md).
    pub const DEFAULT_FACTOR: f32 = 0.9;

    /// `references` as the pack embeds them; `threshold` the decision threshold in the pack's
    /// metric; `factor` in (0, 1]: how far inside the threshold a match must be.
    pub fn new(
        references: impl IntoIterator<Item = Vec<f32>>,
        metric: vision::pack::Metric,
        threshold: f64,
        factor: f32,
    ) -> EarlyMatch {
        let similarity = metric.is_similarity();
        EarlyMatch {
            references: references
                .into_iter()
                .map(|r| Zeroizing::new(pack_geometry(similarity, r)))
                .collect(),
            within: factor * decision_distance(metric, threshold) as f32,
        }
    }

    /// Whether `fused` (in the tracker's geometry) is within reach of a reference.
    fn settles(&self, fused: &[f32]) -> bool {
        self.references
            .iter()
            .any(|r| crate::track::distance(fused, r) <= self.within)
    }
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            tracker: TrackerConfig::default(),
            detect_every: 1,
            best_frames: 3,
            decide_after_frames: 30,
            min_frames_to_decide: 8,
            max_collected_tracks: 32,
            motion: MotionConfig::default(),
            duplicate_distance: TrackerConfig::default().reid_distance,
            duplicate_factor: 0.85,
            first_frame_template: false,
        }
    }
}

/// One frame kept for a track: its aligned chip (zeroised on drop) and measurements.
struct Kept {
    /// Zeroised and dropped once the chip is embedded for an early check (`embedding`).
    chip: Option<RgbImage>,
    /// Its embedding, when an early check ([`EarlyMatch`]) embedded it.
    embedding: Option<Zeroizing<Vec<f32>>>,
    /// What the PAD stage needs of this frame (when the pipeline has one).
    pad: Option<PadCrops>,
    quality: Quality,
    rank: f64,
    /// Share of the face that shows ([`visible_share`]).
    visible: f64,
    frame: u64,
    rect: Rect,
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(c) = self.chip.take() {
            c.into_raw().zeroize();
        }
    }
}

struct TrackState {
    /// The index of its first frame, as the source numbered it (what its events report).
    first_frame: u64,
    /// Where its first frame lies on the camera's own count ([`Watcher::on_camera`]).
    started_at: u64,
    seen: u32,
    decided: bool,
    collecting: bool,
    kept: Vec<Kept>,
    /// Its first collected frame, with [`WatchConfig::first_frame_template`].
    first: Option<Kept>,
    /// The planar-motion cue's evidence (when the pipeline has a PAD stage).
    motion: Option<MotionTrack>,
    /// The fused template of its decision, in the tracker's geometry (kept while the track
    /// lives, and for a short while after: see [`Watcher::recent`]).
    decided_as: Option<Zeroizing<Vec<f32>>>,
    /// The track whose passer-by this one turned out to be when it came to decide: its decision
    /// was withheld (one passer-by, one decision).
    duplicate_of: Option<u64>,
    /// Tracks assigned a face in the same frame as this one at least once: different people
    /// (one face is not in two places), never taken for this one's passer-by.
    seen_with: HashSet<u64>,
    /// The frame it was last assigned a face in, on the camera's count.
    last_seen: u64,
    /// Whether, since it was last seen, its appearance in the tracker became the fusion of its
    /// best frames so far (see [`Watcher::look_at_lost`]).
    looked_at_lost: bool,
    /// Whether a frame was kept since the last early check ([`EarlyMatch`]).
    unchecked: bool,
}

impl TrackState {
    fn new(
        first_frame: u64,
        started_at: u64,
        collecting: bool,
        motion: Option<MotionTrack>,
    ) -> TrackState {
        TrackState {
            first_frame,
            started_at,
            seen: 0,
            decided: false,
            collecting,
            kept: Vec::new(),
            first: None,
            motion,
            decided_as: None,
            duplicate_of: None,
            seen_with: HashSet::new(),
            last_seen: started_at,
            looked_at_lost: false,
            unchecked: false,
        }
    }
}

/// Why a track ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Its face walked out of the frame: whoever comes back is a new passer-by.
    LeftView,
    /// Unseen for too long while in view (hidden).
    Lost,
    /// The stream ended.
    StreamEnd,
}

pub enum Event {
    TrackStart {
        track: u64,
        frame: u64,
        time_ms: u64,
        rect: Rect,
    },
    /// Decide now: exactly once per track.
    Decide(Evidence),
    TrackEnd {
        track: u64,
        first_frame: u64,
        frame: u64,
        time_ms: u64,
        frames_seen: u32,
        decided: bool,
        /// The earlier track this one turned out to be (the same face found again after it was
        /// lost): that track goes on with this one's frames, and decides for both, once.
        merged_into: Option<u64>,
        /// The track this one's face matched when it came to decide (a fragment of a passer-by
        /// another track follows or just decided): no decision was made for this one.
        duplicate_of: Option<u64>,
    },
}

/// Where a watcher's time went, summed over the frames it processed (seconds).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StageSeconds {
    /// Face detection (frames that ran it).
    pub detect: f64,
    /// The tracker's assignment, without the appearance embeddings it asked for.
    pub track: f64,
    /// Embeddings of faces for the tracker (track starts, ambiguous boxes, lost tracks).
    pub appearance: f64,
    /// Landmarks, aligned chip and quality of every tracked face still collecting.
    pub collect: f64,
    /// Embedding the kept frames of decided tracks and fusing them (without liveness).
    pub decide: f64,
    /// Liveness: the motion cue's patches and pairs, PAD crops, and the PAD networks at decision.
    pub liveness: f64,
}

pub struct Watcher {
    cfg: WatchConfig,
    tracker: Tracker,
    tracks: HashMap<u64, TrackState>,
    last_frame: u64,
    last_time: u64,
    /// Boxes of the tracks assigned in the last detection frame.
    boxes: Vec<(u64, Rect)>,
    seconds: StageSeconds,
    /// Decided tracks that ended recently ([`RECENT_KEPT`] times as long as a lost track is kept,
    /// `tracker.max_lost_frames` camera frames). A track that started at most one such
    /// keeping after one of them ended may be its passer-by found again, and is recognised as
    /// theirs when it comes to decide. Someone who walked out and comes back is a new
    /// passer-by: a track that walked out is only compared with tracks that had started before
    /// it left (its own passer-by's earlier track, lost behind someone, deciding late).
    /// Zeroised when they expire.
    recent: Vec<Recent>,
    /// Faces a clear match with decides a track early.
    early: Option<EarlyMatch>,
    /// Detect on every n-th frame now: `cfg.detect_every` unless changed while watching
    /// ([`Watcher::set_detect_every`], by [`crate::cadence::Cadence`]).
    every: u32,
    /// The first frame index that detects again (the schedule follows frame indices, so a
    /// changed interval applies from the next detection on).
    next_detect: u64,
    /// Whether the last frame processed ran detection.
    detected_last: bool,
    /// Frames that ran detection.
    detection_frames: u64,
    /// The last frame that ran detection, and the frames the source lost since
    /// ([`Watcher::note_lost`]): how far the tracker's next step reaches.
    last_step: Option<u64>,
    lost_since_step: u64,
    /// Frames the source lost so far: the spans counted in frames (a lost track's keeping, the
    /// recent decisions, a track unseen) are reckoned on the camera's count, which includes
    /// them ([`Watcher::on_camera`]), so they last as long after losses as without.
    lost_total: u64,
}

/// A decided track that ended, remembered a while: see [`Watcher::recent`].
struct Recent {
    track: u64,
    /// The frame it ended at, on the camera's count.
    ended: u64,
    left_view: bool,
    /// Its fused template in the tracker's geometry.
    template: Zeroizing<Vec<f32>>,
}

impl Watcher {
    pub fn new(cfg: WatchConfig) -> Watcher {
        Watcher {
            cfg,
            tracker: Tracker::new(TrackerConfig {
                max_lost_frames: cfg
                    .tracker
                    .max_lost_frames
                    .div_ceil(cfg.detect_every.max(1)),
                ..cfg.tracker
            }),
            tracks: HashMap::new(),
            last_frame: 0,
            last_time: 0,
            boxes: Vec::new(),
            seconds: StageSeconds::default(),
            recent: Vec::new(),
            early: None,
            every: cfg.detect_every.max(1),
            next_detect: 0,
            detected_last: false,
            detection_frames: 0,
            last_step: None,
            lost_since_step: 0,
            lost_total: 0,
        }
    }

    /// Detect on every n-th frame from the next detection on (n >= 1). The tracker steps on
    /// detection frames only, each step as long as the frames it spans, so its predictions
    /// follow a changed interval and a lost track is kept as many frames as before.
    pub fn set_detect_every(&mut self, n: u32) {
        self.every = n.max(1);
    }

    /// The source lost `frames` frames before the next one (a live camera's dropped units: it
    /// numbers the frames it delivers one by one). The tracker's next step spans them too, so
    /// the faces it predicts have moved on as far as the people did.
    pub fn note_lost(&mut self, frames: u64) {
        self.lost_since_step = self.lost_since_step.saturating_add(frames);
        self.lost_total = self.lost_total.saturating_add(frames);
    }

    /// Where frame `index` (the source's numbering, which has no numbers for the frames it
    /// lost) lies on the camera's own count: the frames lost before it added. For the current
    /// frame: every loss noted so far came before it.
    fn on_camera(&self, index: u64) -> u64 {
        index.saturating_add(self.lost_total)
    }

    /// Whether the last frame processed ran detection (the tracker stepped on it).
    pub fn detected_last(&self) -> bool {
        self.detected_last
    }

    /// Frames that ran detection so far.
    pub fn detection_frames(&self) -> u64 {
        self.detection_frames
    }

    /// Decide tracks early on a clear match with these faces ([`EarlyMatch`]); `None`: only after
    /// `decide_after_frames` or at the track's end.
    pub fn set_early_match(&mut self, early: Option<EarlyMatch>) {
        self.early = early;
    }

    /// The passer-by a track about to be decided on `fused` already is: another live track whose
    /// appearance is within `duplicate_distance` (one that is decided, or still
    /// collecting and so will be; never one itself withheld), or a decided track that ended
    /// recently. `started_at`: where the track's first frame lies on the camera's count.
    /// `None`: a passer-by of its own.
    fn duplicate_of(
        &self,
        id: u64,
        fused: &[f32],
        seen_with: &HashSet<u64>,
        started_at: u64,
        similarity: bool,
    ) -> Option<u64> {
        let mine = Zeroizing::new(pack_geometry(similarity, fused.to_vec()));
        let within = self.cfg.duplicate_distance;
        let live = self.tracker.same_face(id, &mine, within, |t| {
            !seen_with.contains(&t)
                && self.tracks.get(&t).is_some_and(|s| {
                    s.duplicate_of.is_none()
                        && (s.decided_as.is_some() || (!s.decided && s.collecting))
                })
        });
        let recent = self
            .recent
            .iter()
            .filter(|r| {
                !seen_with.contains(&r.track)
                    && started_at <= r.ended + self.lost_kept_for()
                    && (!r.left_view || started_at < r.ended)
            })
            .map(|r| (r.track, crate::track::distance(&mine, &r.template)))
            .filter(|(_, d)| *d <= within)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match (live, recent) {
            (Some(l), Some(r)) => Some(if r.1 < l.1 { r.0 } else { l.0 }),
            (l, r) => l.or(r).map(|(t, _)| t),
        }
    }

    /// Decide track `id` now, unless its face is a passer-by already decided or about to be
    /// ([`Watcher::duplicate_of`]). The decision, if one is made.
    fn decide_once(
        &mut self,
        id: u64,
        state: &mut TrackState,
        frame: (u64, u64),
        at_track_end: bool,
        p: &Pipeline,
    ) -> Result<Option<Evidence>, VideoError> {
        let Some(ev) = decide(
            id,
            state,
            frame.0,
            frame.1,
            at_track_end,
            p,
            &mut self.seconds,
        )?
        else {
            return Ok(None);
        };
        let similarity = p.metric().is_similarity();
        if let Some(other) = self.duplicate_of(
            id,
            &ev.fused,
            &state.seen_with,
            state.started_at,
            similarity,
        ) {
            // Withheld: `ev` (and its templates) are zeroised as it drops.
            state.duplicate_of = Some(other);
            return Ok(None);
        }
        state.decided_as = Some(Zeroizing::new(pack_geometry(similarity, ev.fused.clone())));
        Ok(Some(ev))
    }

    /// Decided tracks that ended longer ago than [`RECENT_KEPT`] times a lost track's keeping
    /// are forgotten (their templates zeroised).
    fn forget_recent(&mut self, now: u64) {
        let keep = RECENT_KEPT * self.lost_kept_for();
        self.recent.retain(|r| r.ended + keep >= now);
    }

    /// The order in which tracks still alive when the stream ends are ended: decided ones first,
    /// so that each undecided one is compared with all of them (an ended track is compared with
    /// through [`Watcher::recent`]; the tracker has let go of them all); start order otherwise.
    fn finishing_order(&self, mut ids: Vec<u64>) -> Vec<u64> {
        ids.sort_by_key(|id| (!self.tracks.get(id).is_some_and(|s| s.decided), *id));
        ids
    }

    /// Frames a lost track is kept (`max_lost_frames`, camera frames at any interval).
    fn lost_kept_for(&self) -> u64 {
        self.cfg.tracker.max_lost_frames as u64
    }

    /// Time spent per stage so far.
    pub fn stage_seconds(&self) -> StageSeconds {
        self.seconds
    }

    /// The tracked faces of the last frame that ran detection: (track, box), for annotation.
    pub fn boxes(&self) -> &[(u64, Rect)] {
        &self.boxes
    }

    /// Tracks alive in the tracker now.
    pub fn live_tracks(&self) -> usize {
        self.tracker.live_tracks()
    }

    pub fn process(&mut self, frame: &Frame, p: &Pipeline) -> Result<Vec<Event>, VideoError> {
        self.last_frame = frame.index;
        self.last_time = frame.time_ms;
        // Frames count from 0 one by one (a live source's dropped units are not frames), so
        // with a fixed interval n this detects on frames 0, n, 2n, ...
        self.detected_last = frame.index >= self.next_detect;
        if !self.detected_last {
            return Ok(Vec::new());
        }
        self.next_detect = frame.index + self.every as u64;
        let now = self.on_camera(frame.index);
        self.detection_frames += 1;
        // How many motion steps this detection is from the last: exactly 1 at a fixed interval
        // with nothing lost.
        // The tracker's motion step is the detection interval the watcher started with.
        let step_frames = self.cfg.detect_every.max(1);
        let spanned = match self.last_step {
            Some(last) => frame.index.saturating_sub(last) + self.lost_since_step,
            None => u64::from(step_frames),
        };
        self.last_step = Some(frame.index);
        self.lost_since_step = 0;
        let steps = spanned as f32 / step_frames as f32;
        let img = &frame.image;
        let clock = std::time::Instant::now();
        let dets = p.detect(img)?;
        self.seconds.detect += clock.elapsed().as_secs_f64();
        let obs: Vec<Observation> = dets
            .iter()
            .map(|d| Observation {
                rect: d.rect,
                score: d.score,
            })
            .collect();
        // Appearance in the pack's own geometry: raw for a distance pack, on the unit sphere for
        // a similarity pack (so the tracker's Euclidean gates follow the pack's threshold).
        let similarity = p.metric().is_similarity();
        let appearance = std::cell::Cell::new(0.0);
        let mut looks = |i: usize| -> Option<Vec<f32>> {
            let clock = std::time::Instant::now();
            let lm = p.landmarks_for(img, &dets[i]).ok();
            let e = lm.and_then(|lm| p.embed_aligned(&[p.chip(img, &lm)]).ok()?.pop());
            appearance.set(appearance.get() + clock.elapsed().as_secs_f64());
            e.map(|e| pack_geometry(similarity, e))
        };
        let clock = std::time::Instant::now();
        self.tracker.set_frame_size(img.width(), img.height());
        let update = self.tracker.update_over(steps, &obs, &mut looks);
        // The tracker's time, without the appearance embeddings it asked for (counted apart).
        self.seconds.track += (clock.elapsed().as_secs_f64() - appearance.get()).max(0.0);
        self.boxes = update
            .assigned
            .iter()
            .map(|&(d, id)| (id, dets[d].rect))
            .collect();
        let mut events = Vec::new();
        for &(young, old) in &update.merged {
            self.merge(young, old, frame, &mut events);
        }
        for &id in &update.started {
            let collecting = self.tracks.values().filter(|t| t.collecting).count()
                < self.cfg.max_collected_tracks;
            let motion = p
                .liveness
                .as_ref()
                .map(|_| MotionTrack::new(self.cfg.motion));
            self.tracks
                .insert(id, TrackState::new(frame.index, now, collecting, motion));
            if let Some(&(d, _)) = update.assigned.iter().find(|a| a.1 == id) {
                events.push(Event::TrackStart {
                    track: id,
                    frame: frame.index,
                    time_ms: frame.time_ms,
                    rect: dets[d].rect,
                });
                // The track's appearance for the crossing gate.
                if let Some(e) = looks(d) {
                    self.tracker.set_appearance(id, e);
                }
            }
        }
        self.seconds.appearance += appearance.get();
        let areas: Vec<f64> = dets
            .iter()
            .map(|d| d.rect.width() * d.rect.height())
            .collect();
        for &(_, a) in &update.assigned {
            if let Some(state) = self.tracks.get_mut(&a) {
                state
                    .seen_with
                    .extend(update.assigned.iter().map(|x| x.1).filter(|&b| b != a));
            }
        }
        for &(d, id) in &update.assigned {
            // Taken out while it is worked on (deciding looks at the other tracks), put back below.
            let Some(mut state) = self.tracks.remove(&id) else {
                continue;
            };
            let decision = self.collect(id, &mut state, d, &dets, &areas, frame, p);
            self.tracks.insert(id, state);
            if let Some(ev) = decision? {
                // The fused best frames are the best picture of this face the tracker will
                // get: what it re-identifies the face by if it is lost from here on.
                self.tracker
                    .set_appearance(id, pack_geometry(similarity, ev.fused.clone()));
                events.push(Event::Decide(ev));
            }
        }
        for &id in &update.ended {
            let ending = if update.left_view.contains(&id) {
                Ending::LeftView
            } else {
                Ending::Lost
            };
            self.end(id, frame.index, frame.time_ms, ending, p, &mut events)?;
        }
        self.look_at_lost(now, p)?;
        self.forget_recent(now);
        // Forget co-visible tracks that can no longer be compared with (gone and not recent):
        // a face that stays in view for hours next to thousands of passers-by holds only the
        // ones still around.
        let known: HashSet<u64> = self
            .tracks
            .keys()
            .copied()
            .chain(self.recent.iter().map(|r| r.track))
            .collect();
        for state in self.tracks.values_mut() {
            state.seen_with.retain(|t| known.contains(t));
        }
        Ok(events)
    }

    /// A track not yet decided that has gone unseen for `LOST_LOOK_AFTER` detection frames (hidden,
    /// most likely, behind someone) is known to the tracker from then on by the fusion of its
    /// best frames so far, not by the one chip it started with: the face it finds again, the
    /// young track taking it over, and the duplicate check before a decision all compare with
    /// the best picture of this face there is. Once per time a track is lost; not for fragments.
    fn look_at_lost(&mut self, now: u64, p: &Pipeline) -> Result<(), VideoError> {
        let every = self.every as u64;
        let similarity = p.metric().is_similarity();
        for (&id, state) in self.tracks.iter_mut() {
            if state.decided
                || !state.collecting
                || state.looked_at_lost
                || state.kept.is_empty()
                || state.seen < self.cfg.min_frames_to_decide
                || now.saturating_sub(state.last_seen) < LOST_LOOK_AFTER * every
            {
                continue;
            }
            state.looked_at_lost = true;
            let clock = std::time::Instant::now();
            let embeddings = embeddings_of(p, &mut state.kept, false)?;
            let fused = fuse(&embeddings);
            zeroize_all(embeddings);
            self.tracker
                .set_appearance(id, pack_geometry(similarity, fused));
            self.seconds.appearance += clock.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Track `id` was seen in detection `d`: its frame kept if among its best, and its decision
    /// once it was seen often enough.
    #[allow(clippy::too_many_arguments)]
    fn collect(
        &mut self,
        id: u64,
        state: &mut TrackState,
        d: usize,
        dets: &[vision::detect::Detection],
        areas: &[f64],
        frame: &Frame,
        p: &Pipeline,
    ) -> Result<Option<Evidence>, VideoError> {
        let img = &frame.image;
        state.seen += 1;
        state.last_seen = self.on_camera(frame.index);
        state.looked_at_lost = false;
        if state.decided || !state.collecting {
            return Ok(None);
        }
        let clock = std::time::Instant::now();
        let lm = p.landmarks_for(img, &dets[d])?;
        let chip = p.chip(img, &lm);
        let mut quality = Quality::measure(
            &dets[d].rect,
            &lm,
            &chip,
            &p.models.manifest.embedder.alignment,
            (img.width(), img.height()),
        );
        quality.set_single_face(areas);
        self.seconds.collect += clock.elapsed().as_secs_f64();
        // A face partly behind a nearer one, or partly out of the frame, makes a chip of part
        // of a face and whatever is beside it: its template matches neither this track's own
        // clear frames nor anyone else well.
        let visible = visible_share(d, dets, (img.width(), img.height()));
        let rank = frame_rank(&quality) * visible;
        let clock = std::time::Instant::now();
        if let Some(m) = &mut state.motion {
            m.add(img, &dets[d].rect, frame.index);
        }
        self.seconds.liveness += clock.elapsed().as_secs_f64();
        if self.cfg.first_frame_template && state.first.is_none() {
            state.first = Some(Kept {
                chip: Some(chip.clone()),
                embedding: None,
                pad: None,
                quality: quality.clone(),
                rank,
                visible,
                frame: frame.index,
                rect: dets[d].rect,
            });
        }
        let k = self.cfg.best_frames.max(1);
        let worst = state
            .kept
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.rank.total_cmp(&b.1.rank))
            .map(|(i, kept)| (i, kept.rank));
        let slot = match worst {
            _ if state.kept.len() < k => Some(state.kept.len()),
            Some((i, r)) if rank > r => Some(i),
            _ => None,
        };
        if let Some(i) = slot {
            let clock = std::time::Instant::now();
            let pad = match &p.liveness {
                Some(pad) => Some(pad.crops(img, &dets[d].rect)?),
                None => None,
            };
            self.seconds.liveness += clock.elapsed().as_secs_f64();
            let keep = Kept {
                chip: Some(chip),
                embedding: None,
                pad,
                quality,
                rank,
                visible,
                frame: frame.index,
                rect: dets[d].rect,
            };
            if i == state.kept.len() {
                state.kept.push(keep);
            } else {
                state.kept[i] = keep;
            }
            state.unchecked = true;
        }
        if state.seen < self.cfg.decide_after_frames || only_hidden(state) {
            if !self.settled_early(state, p)? {
                return Ok(None);
            }
            let ev = self.decide_once(id, state, (frame.index, frame.time_ms), false, p)?;
            return Ok(ev.map(|mut ev| {
                ev.early = true;
                ev
            }));
        }
        self.decide_once(id, state, (frame.index, frame.time_ms), false, p)
    }

    /// Whether a track still collecting is settled by a clear match ([`EarlyMatch`]): checked once
    /// it was seen `min_frames_to_decide` times with its `best_frames` full, and again each time
    /// it keeps a better frame. The kept frames embedded for the check keep their embeddings
    /// (their chips are dropped), so the decision embeds nothing twice.
    fn settled_early(&mut self, state: &mut TrackState, p: &Pipeline) -> Result<bool, VideoError> {
        let Some(early) = &self.early else {
            return Ok(false);
        };
        if p.liveness.is_some()
            || !state.unchecked
            || state.seen < self.cfg.min_frames_to_decide
            || state.kept.len() < self.cfg.best_frames.max(1)
            || only_hidden(state)
        {
            return Ok(false);
        }
        state.unchecked = false;
        let clock = std::time::Instant::now();
        let embeddings = embeddings_of(p, &mut state.kept, true)?;
        let fused = Zeroizing::new(pack_geometry(p.metric().is_similarity(), fuse(&embeddings)));
        let settles = early.settles(&fused);
        zeroize_all(embeddings);
        self.seconds.decide += clock.elapsed().as_secs_f64();
        Ok(settles)
    }

    /// The stream ended: every live track is decided (if it was not) and ended, in
    /// `Watcher::finishing_order`.
    pub fn finish(&mut self, p: &Pipeline) -> Result<Vec<Event>, VideoError> {
        let mut events = Vec::new();
        let (frame, time) = (self.last_frame, self.last_time);
        let ids = self.tracker.finish();
        for id in self.finishing_order(ids) {
            self.end(id, frame, time, Ending::StreamEnd, p, &mut events)?;
        }
        Ok(events)
    }

    /// Track `young` was the lost track `old` found again: `old` takes its collected frames
    /// (keeping the best) and its count, and `young` ends without a decision of its own.
    fn merge(&mut self, young: u64, old: u64, frame: &Frame, events: &mut Vec<Event>) {
        let Some(mut y) = self.tracks.remove(&young) else {
            return;
        };
        if let Some(o) = self.tracks.get_mut(&old) {
            o.seen += y.seen;
            o.seen_with
                .extend(y.seen_with.drain().filter(|&t| t != old));
            // One decision per passer-by: if either was decided, the merged track was (a young
            // track whose decision was withheld as another's made none).
            if y.decided && y.duplicate_of.is_none() {
                o.decided = true;
                if o.decided_as.is_none() {
                    o.decided_as = y.decided_as.take();
                }
            }
            if o.decided || !o.collecting {
                o.kept.clear();
            } else {
                o.kept.append(&mut y.kept);
                o.kept.sort_by(|a, b| b.rank.total_cmp(&a.rank));
                o.kept.truncate(self.cfg.best_frames.max(1));
                o.unchecked = true;
            }
        }
        events.push(Event::TrackEnd {
            track: young,
            first_frame: y.first_frame,
            frame: frame.index,
            time_ms: frame.time_ms,
            frames_seen: y.seen,
            decided: y.decided && y.duplicate_of.is_none(),
            merged_into: Some(old),
            duplicate_of: y.duplicate_of,
        });
    }

    /// Track `id` ended: decided if it was not (and is no fragment), and remembered a while as a
    /// passer-by just decided ([`Watcher::recent`]).
    /// `frame` is the current one (the last processed).
    fn end(
        &mut self,
        id: u64,
        frame: u64,
        time_ms: u64,
        ending: Ending,
        p: &Pipeline,
        events: &mut Vec<Event>,
    ) -> Result<(), VideoError> {
        let Some(mut state) = self.tracks.remove(&id) else {
            return Ok(());
        };
        let fragment = ending != Ending::StreamEnd
            && (state.seen < self.cfg.min_frames_to_decide || only_hidden(&state));
        if !fragment {
            if let Some(ev) = self.decide_once(id, &mut state, (frame, time_ms), true, p)? {
                events.push(Event::Decide(ev));
            }
        }
        events.push(Event::TrackEnd {
            track: id,
            first_frame: state.first_frame,
            frame,
            time_ms,
            frames_seen: state.seen,
            decided: state.decided && state.duplicate_of.is_none(),
            merged_into: None,
            duplicate_of: state.duplicate_of,
        });
        if let Some(template) = state.decided_as.take() {
            self.recent.push(Recent {
                track: id,
                ended: self.on_camera(frame),
                left_view: ending == Ending::LeftView,
                template,
            });
        }
        Ok(())
    }
}

/// Below this share of its face showing ([`visible_share`]), a frame shows less of the face than
/// of someone else's head or of the frame's edge.
const HIDDEN_BELOW: f64 = 0.5;

/// Whether every frame a track keeps is mostly hidden: a face seen only behind others (or only
/// half in the frame). It is not decided on such frames while it may still show clear; if it
/// ends mid-stream so, it is a fragment (its passer-by is decided by their own clear track); at
/// the end of a stream it is decided on what there was.
fn only_hidden(state: &TrackState) -> bool {
    !state.kept.is_empty() && state.kept.iter().all(|k| k.visible < HIDDEN_BELOW)
}

/// An embedding as the tracker compares them: raw for a distance pack, on the unit sphere for a
/// similarity pack (so the tracker's Euclidean gates follow the pack's threshold). The input is
/// zeroised when it is replaced.
fn pack_geometry(similarity: bool, mut e: Vec<f32>) -> Vec<f32> {
    if similarity {
        let u = unit(&e);
        e.zeroize();
        u
    } else {
        e
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
