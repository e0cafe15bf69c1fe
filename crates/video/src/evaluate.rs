//! Running the watcher over a generated scene and scoring it against the ground truth: tracking
//! (MOTA, IDF1, HOTA) and what a border operator counts per passer-by (no decision, two or more
//! decisions, a wrong decision), for fused and single-frame templates.

use crate::cadence::Cadence;
use crate::error::VideoError;
use crate::metrics::{evaluate as mot, FrameBoxes, MotSummary};
use crate::replay::{LiveFacts, LiveOptions, LiveReplay};
use crate::source::Frame;
use crate::synth::Scene;
use crate::track::iou;
use crate::watch::{EarlyMatch, Event, WatchConfig, Watcher};
use std::collections::HashMap;
use vision::geometry::Rect;
use vision::pack::Metric;
use vision::pipeline::Pipeline;

/// How decisions are judged: each identity's reference template (another photo of the person),
/// the pack's metric and threshold.
pub struct Judge<'a> {
    pub references: &'a HashMap<usize, Vec<f32>>,
    pub metric: Metric,
    pub threshold: f64,
}

/// Error counts of decisions made with one kind of template.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Outcomes {
    /// Decisions compared with the passer-by's own reference.
    pub genuine: usize,
    pub false_non_matches: usize,
    /// The same decisions compared with another identity's reference.
    pub impostor: usize,
    pub false_matches: usize,
}

impl Outcomes {
    pub fn fnmr(&self) -> f64 {
        self.false_non_matches as f64 / self.genuine.max(1) as f64
    }
    pub fn fmr(&self) -> f64 {
        self.false_matches as f64 / self.impostor.max(1) as f64
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SceneReport {
    pub frames: u64,
    pub passages: usize,
    pub tracking: MotSummary,
    pub decisions: usize,
    /// Decided tracks that follow no passer-by (false tracks).
    pub decisions_without_passer_by: usize,
    pub passers_by_without_decision: usize,
    pub passers_by_with_two_or_more_decisions: usize,
    /// Each passer-by decided more than once: which tracks decided, over which frames each
    /// overlapped them (for looking at the cases one by one).
    pub decided_twice: Vec<PasserByCase>,
    /// Each passer-by without a decision, with every track that overlapped them.
    pub undecided: Vec<PasserByCase>,
    /// The same two counts with each decision given to the passer-by its track overlapped most
    /// often, not the one its frames show (how they were counted before).
    pub by_overlap: ByOverlap,
    /// Passers-by with at least one wrong fused decision (own reference rejected, or another
    /// identity's accepted).
    pub passers_by_with_a_wrong_decision: usize,
    /// Decisions made before `decide_after_frames` on a clear match ([`crate::watch::EarlyMatch`]).
    pub decided_early: usize,
    /// Per passer-by decided: frames from the first scored frame they are visible in to their
    /// first decision (how long a gate or an operator waits).
    pub decision_delay_frames: Vec<u64>,
    pub fused: Outcomes,
    pub single_frame: Outcomes,
    /// The track's first collected frame alone, when the watcher kept it
    /// ([`crate::watch::WatchConfig::first_frame_template`]; empty otherwise).
    pub first_frame: Outcomes,
    pub seconds: f64,
    /// When the frames went through an H.264 round trip: what the stream delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h264: Option<StreamFacts>,
    /// Frames that ran detection (the tracker stepped on them).
    pub detection_frames: u64,
    /// The detection interval: fixed, or as `--every auto` moved it.
    pub detect_every: CadenceFacts,
    /// When the scene was replayed as a live camera: the frames read and lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveReport>,
    /// Ground truth and tracker boxes of every scored frame (for exporting in MOT format).
    #[serde(skip)]
    pub boxes: Vec<FrameBoxes>,
}

/// How often the scene's frames ran detection.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CadenceFacts {
    pub adaptive: bool,
    /// The interval at the end of the scene.
    pub last: u32,
    pub largest_used: u32,
    pub changes: u64,
    /// Frames on which `auto` was behind the camera's rate even at its largest interval
    /// ([`Cadence::behind`]); 0 for a fixed interval.
    pub frames_behind: u64,
}

/// A scene replayed as a live camera ([`LiveReplay`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveReport {
    pub camera: LiveOptions,
    #[serde(flatten)]
    pub facts: LiveFacts,
    /// Lost frames scored as frames the tracker had nothing on (those a detection was due on).
    pub lost_frames_scored: u64,
    /// Per passer-by decided, sorted: ms on the camera's clock from the first frame they were in
    /// view in being sent to their first decision being made (what a gate's traveller waits,
    /// queueing included).
    pub decision_delay_ms: Vec<f64>,
}

/// How a scene is run.
#[derive(Debug, Clone)]
pub struct SceneRun {
    /// Every frame through an H.264 encoder at this rate and back first
    /// ([`crate::h264::H264RoundTrip`]), as a camera's stream would deliver it.
    pub h264_bits_per_second: Option<u32>,
    /// Decide a track early on a clear match ([`EarlyMatch`], this factor) with any of the
    /// judge's references.
    pub early: Option<f32>,
    /// How often to detect.
    pub cadence: Cadence,
    /// Release the frames as a live camera would and lose those the reader is too slow for.
    pub live: Option<LiveOptions>,
}

/// Passers-by without a decision and with two or more, decisions attributed by track overlap.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ByOverlap {
    pub without_decision: usize,
    pub two_or_more: usize,
}

/// A decision as the evaluation keeps it.
struct Decided {
    track: u64,
    /// The frame it was made at.
    frame: u64,
    /// When, on a live camera's clock (ms).
    at_ms: Option<f64>,
    early: bool,
    fused: Vec<f32>,
    best: Vec<f32>,
    first: Option<Vec<f32>>,
    /// The frames its template was made of, with the face's box in each.
    used: Vec<(u64, Rect)>,
}

/// Which passer-by a decision was about: (the one most of the frames it `used` show, the one
/// its track overlapped most often), each by IoU ≥ 0.5 with the ground truth; ties go to the
/// lower passage number. `track` holds the track's box per scored frame (index into `truths`);
/// `scored` maps a frame number to its index in `truths`.
fn passer_by_of(
    used: &[(u64, Rect)],
    track: &[(usize, Rect)],
    truths: &[Vec<(u64, usize, Rect)>],
    scored: &HashMap<u64, usize>,
) -> (Option<u64>, Option<u64>) {
    let most = |boxes: &mut dyn Iterator<Item = (usize, &Rect)>| {
        let mut votes: HashMap<u64, usize> = HashMap::new();
        for (k, r) in boxes {
            for (passage, _, g) in &truths[k] {
                if iou(r, g) >= 0.5 {
                    *votes.entry(*passage).or_default() += 1;
                }
            }
        }
        votes
            .into_iter()
            .max_by_key(|(id, n)| (*n, std::cmp::Reverse(*id)))
            .map(|(id, _)| id)
    };
    let shown = most(&mut used.iter().filter_map(|(f, r)| Some((*scored.get(f)?, r))));
    let overlapped = most(&mut track.iter().map(|(k, r)| (*k, r)));
    (shown, overlapped)
}

/// A passer-by decided twice or not at all, for looking at the case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PasserByCase {
    pub passage: u64,
    pub identity: usize,
    /// First and last frame the passer-by is visible in (ground truth).
    pub visible: (u64, u64),
    /// Tracks (those that decided, or for an undecided passer-by all that overlapped them) with
    /// the first and last frame each overlapped the passer-by (IoU ≥ 0.5).
    pub tracks: Vec<(u64, u64, u64)>,
}

impl SceneReport {
    /// Per 1,000 passers-by: (no decision, two or more, wrong).
    pub fn per_thousand(&self) -> (f64, f64, f64) {
        let k = 1000.0 / self.passages.max(1) as f64;
        (
            self.passers_by_without_decision as f64 * k,
            self.passers_by_with_two_or_more_decisions as f64 * k,
            self.passers_by_with_a_wrong_decision as f64 * k,
        )
    }
}

/// The H.264 stream a scene's frames went through.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StreamFacts {
    pub target_bits_per_second: u32,
    pub delivered_bits_per_second: f64,
    /// Frames the encoder skipped to keep its rate (the previous picture was shown again).
    pub skipped_frames: u64,
}

/// Run `p` over the frames of `scene` with `cfg` as `run` says, and score it.
///
/// With early decisions, every passer-by is someone the watcher knows, as on a watchlist of
/// them all (or at an e-gate, where the reference is the traveller's own).
///
/// Replayed live, the watcher sees the frames the camera's queue let through, numbered one by
/// one as a live source numbers them (lost frames are not frames to it); the scoring maps them
/// back. A lost frame a detection was due on (the interval on from the last detection) is
/// scored with no tracks: a passer-by in view then was missed, as they were.
pub fn run_scene(
    scene: &Scene,
    p: &Pipeline,
    cfg: WatchConfig,
    judge: &Judge<'_>,
    run: SceneRun,
) -> Result<SceneReport, VideoError> {
    let started = std::time::Instant::now();
    let SceneRun {
        h264_bits_per_second,
        early,
        mut cadence,
        live,
    } = run;
    let mut stream = h264_bits_per_second
        .map(|bps| crate::h264::H264RoundTrip::new(bps, 30.0))
        .transpose()?;
    let mut replay = live.map(|o| LiveReplay::new(scene.frames(), o));
    let mut w = Watcher::new(cfg);
    w.set_detect_every(cadence.every());
    w.set_early_match(early.map(|factor| {
        EarlyMatch::new(
            judge.references.values().cloned(),
            judge.metric,
            judge.threshold,
            factor,
        )
    }));
    let mut boxes: Vec<FrameBoxes> = Vec::with_capacity(scene.frames() as usize);
    let mut truths: Vec<Vec<(u64, usize, Rect)>> = Vec::new();
    let mut decided: Vec<Decided> = Vec::new();
    let mut track_boxes: HashMap<u64, Vec<(usize, Rect)>> = HashMap::new();
    // Scored frame number → index into `truths`.
    let mut scored: HashMap<u64, usize> = HashMap::new();
    // The scene's frame number of each frame the watcher saw (its own numbers count those).
    let mut scene_of: Vec<u64> = Vec::with_capacity(scene.frames() as usize);
    let take =
        |events: Vec<Event>, decided: &mut Vec<Decided>, scene_of: &[u64], at_ms: Option<f64>| {
            let of = |k: u64| scene_of.get(k as usize).copied().unwrap_or(k);
            for ev in events {
                if let Event::Decide(e) = ev {
                    let used = e
                        .frames_used
                        .iter()
                        .map(|u| {
                            let [left, top, right, bottom] = u.rect;
                            (
                                of(u.frame),
                                Rect {
                                    left,
                                    top,
                                    right,
                                    bottom,
                                },
                            )
                        })
                        .collect();
                    decided.push(Decided {
                        track: e.track,
                        frame: of(e.frame),
                        at_ms,
                        early: e.early,
                        fused: e.fused.clone(),
                        best: e.best.clone(),
                        first: e.first.clone(),
                        used,
                    });
                }
            }
        };
    let mut score = |f: u64, truth: &[crate::synth::Truth], tracks: Vec<(u64, Rect)>| {
        for (id, r) in &tracks {
            track_boxes.entry(*id).or_default().push((truths.len(), *r));
        }
        boxes.push(FrameBoxes {
            frame: f,
            truth: truth.iter().map(|t| (t.passage, t.rect)).collect(),
            tracks,
        });
        scored.insert(f, truths.len());
        truths.push(
            truth
                .iter()
                .map(|t| (t.passage, t.identity, t.rect))
                .collect(),
        );
    };
    // The camera's next frame (every frame is made, and encoded when asked, lost or not).
    let mut sent = 0u64;
    // The next frame a detection is due on, in the scene's numbers (for scoring lost frames).
    let mut due = 0u64;
    let mut lost_frames_scored = 0u64;
    // Frames of the camera's stream each passer-by is in view in.
    let mut in_view: HashMap<u64, u64> = HashMap::new();
    // The first frame of the camera's stream each passer-by is in view in.
    let mut first_in_view: HashMap<u64, u64> = HashMap::new();
    loop {
        // The frame read next; at the end (None), the frames after the last one read were lost.
        let next = match replay.as_mut() {
            Some(r) => r.take().map(|t| t.frame),
            None => Some(sent).filter(|f| *f < scene.frames()),
        };
        let until = next.unwrap_or(scene.frames());
        let mut decode_ms = 0.0;
        let mut read = None;
        let mut lost_now = 0;
        while sent < scene.frames() && sent <= until {
            let g = sent;
            sent += 1;
            let (image, truth) = scene.frame(g);
            for t in &truth {
                *in_view.entry(t.passage).or_default() += 1;
                first_in_view.entry(t.passage).or_insert(g);
            }
            let image = match stream.as_mut() {
                Some(s) => {
                    let image = s.pass(&image)?;
                    decode_ms = s.last_decode_ms();
                    image
                }
                None => image,
            };
            if Some(g) == next {
                read = Some((image, truth));
                continue;
            }
            lost_now += 1;
            if g >= due {
                // Lost, and a detection was due on it: nothing tracked there.
                score(g, &truth, Vec::new());
                lost_frames_scored += 1;
                due = g + u64::from(cadence.every());
            }
        }
        let (Some(f), Some((image, truth))) = (next, read) else {
            break;
        };
        let frame = Frame {
            index: scene_of.len() as u64,
            time_ms: f * 1000 / 30,
            image,
        };
        scene_of.push(f);
        w.note_lost(lost_now);
        let clock = std::time::Instant::now();
        let events = w.process(&frame, p)?;
        let process_ms = clock.elapsed().as_secs_f64() * 1e3;
        if let Some(r) = replay.as_mut() {
            r.spend(decode_ms + process_ms);
        }
        take(
            events,
            &mut decided,
            &scene_of,
            replay.as_ref().map(LiveReplay::now_ms),
        );
        let detected_now = w.detected_last();
        // Frames without detection are not scored (nothing was claimed about them).
        if detected_now {
            score(f, &truth, w.boxes().to_vec());
        }
        // What `watch` does: the cadence sees the processing cost and the source's losses; the
        // camera's clock moves on by decoding and processing both.
        let lost = replay.as_ref().map_or(0, LiveReplay::lost);
        w.set_detect_every(cadence.observe(process_ms, detected_now, lost));
        if detected_now {
            due = f + u64::from(cadence.every());
        }
    }
    take(
        w.finish(p)?,
        &mut decided,
        &scene_of,
        replay.as_ref().map(LiveReplay::now_ms),
    );
    let tracking = mot(&boxes);

    // A decision belongs to the passer-by whose face its frames show: the one most of the
    // frames it used (its best frames, embedded and fused) overlap. A track that switched from
    // one person to another decided on whoever its best frames are of. (The passage the track
    // overlapped most often is kept beside it, `by_overlap`, the attribution used before.)
    let identity_of: HashMap<u64, usize> = scene
        .passages
        .iter()
        .map(|ps| (ps.id, ps.identity))
        .collect();
    let identities: Vec<usize> = {
        let mut v: Vec<usize> = judge.references.keys().copied().collect();
        v.sort_unstable();
        v
    };
    let mut per_passage: HashMap<u64, Vec<(bool, u64)>> = HashMap::new();
    let mut first_decision: HashMap<u64, u64> = HashMap::new();
    let mut first_decision_ms: HashMap<u64, f64> = HashMap::new();
    let mut by_overlap: HashMap<u64, usize> = HashMap::new();
    let (mut fused, mut single, mut first) = (
        Outcomes::default(),
        Outcomes::default(),
        Outcomes::default(),
    );
    let mut orphans = 0;
    for d in &decided {
        let (fused_t, best_t, first_t) = (&d.fused, &d.best, d.first.as_ref());
        let track = track_boxes.get(&d.track).map(Vec::as_slice).unwrap_or(&[]);
        let (shown, overlapped) = passer_by_of(&d.used, track, &truths, &scored);
        if let Some(p) = overlapped {
            *by_overlap.entry(p).or_default() += 1;
        }
        let Some(passage) = shown.or(overlapped) else {
            orphans += 1;
            continue;
        };
        let Some(&identity) = identity_of.get(&passage) else {
            orphans += 1;
            continue;
        };
        let (Some(own), Some(other)) = (
            judge.references.get(&identity),
            identities
                .iter()
                .position(|i| *i == identity)
                .map(|k| identities[(k + 1) % identities.len()])
                .filter(|i| *i != identity)
                .and_then(|i| judge.references.get(&i)),
        ) else {
            orphans += 1;
            continue;
        };
        let mut wrong = false;
        let templates = [
            (Some(fused_t), &mut fused, true),
            (Some(best_t), &mut single, false),
            (first_t, &mut first, false),
        ];
        for (template, out, counts) in templates {
            let Some(template) = template else {
                continue;
            };
            let genuine = judge
                .metric
                .is_match(judge.metric.compare(template, own), judge.threshold);
            let impostor = judge
                .metric
                .is_match(judge.metric.compare(template, other), judge.threshold);
            out.genuine += 1;
            out.impostor += 1;
            out.false_non_matches += usize::from(!genuine);
            out.false_matches += usize::from(impostor);
            if counts {
                wrong = !genuine || impostor;
            }
        }
        per_passage
            .entry(passage)
            .or_default()
            .push((wrong, d.track));
        let at = first_decision.entry(passage).or_insert(d.frame);
        *at = (*at).min(d.frame);
        if let Some(ms) = d.at_ms {
            let at = first_decision_ms.entry(passage).or_insert(ms);
            *at = at.min(ms);
        }
    }
    // A passer-by counts when in view in at least 5 frames of the camera's stream (a path may
    // stay mostly out of view, or be cut by the end of the scene) — whatever the frames the
    // watcher looked at, so runs at different detection intervals count the same people.
    // (Before 2026-12-04 it was 5 scored frames: the same on every frame, fewer people on
    // every n-th.)
    // The first scored frame each passer-by is visible in.
    let mut first_seen: HashMap<u64, u64> = HashMap::new();
    for (k, truth) in truths.iter().enumerate() {
        for t in truth {
            first_seen.entry(t.0).or_insert(boxes[k].frame);
        }
    }
    let counted: Vec<u64> = scene
        .passages
        .iter()
        .map(|ps| ps.id)
        .filter(|id| in_view.get(id).copied().unwrap_or(0) >= 5)
        .collect();
    let passages = counted.len();
    let frame_of = |k: usize| boxes[k].frame;
    let on = |track: u64, passage: u64| -> Vec<u64> {
        track_boxes
            .get(&track)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter(|(k, r)| {
                truths[*k]
                    .iter()
                    .any(|(ps, _, g)| *ps == passage && iou(r, g) >= 0.5)
            })
            .map(|(k, _)| frame_of(*k))
            .collect()
    };
    let case = |passage: u64, tracks: &[u64]| {
        let seen: Vec<u64> = (0..truths.len())
            .filter(|k| truths[*k].iter().any(|t| t.0 == passage))
            .map(frame_of)
            .collect();
        PasserByCase {
            passage,
            identity: identity_of.get(&passage).copied().unwrap_or(usize::MAX),
            visible: (
                seen.first().copied().unwrap_or(0),
                seen.last().copied().unwrap_or(0),
            ),
            tracks: tracks
                .iter()
                .map(|&t| {
                    let over = on(t, passage);
                    let first = over.first().copied().unwrap_or(0);
                    (t, first, over.last().copied().unwrap_or(first))
                })
                .collect(),
        }
    };
    let mut decided_twice: Vec<PasserByCase> = per_passage
        .iter()
        .filter(|(_, v)| v.len() >= 2)
        .map(|(&passage, v)| case(passage, &v.iter().map(|x| x.1).collect::<Vec<_>>()))
        .collect();
    let mut track_ids: Vec<u64> = track_boxes.keys().copied().collect();
    track_ids.sort_unstable();
    let undecided: Vec<PasserByCase> = counted
        .iter()
        .filter(|id| !per_passage.contains_key(id))
        .map(|&passage| {
            let over: Vec<u64> = track_ids
                .iter()
                .copied()
                .filter(|t| !on(*t, passage).is_empty())
                .collect();
            case(passage, &over)
        })
        .collect();
    decided_twice.sort_by_key(|d| d.passage);
    let mut decision_delay_frames: Vec<u64> = counted
        .iter()
        .filter_map(|id| Some(first_decision.get(id)?.saturating_sub(*first_seen.get(id)?)))
        .collect();
    decision_delay_frames.sort_unstable();
    let mut decision_delay_ms: Vec<f64> = match &replay {
        Some(r) => counted
            .iter()
            .filter_map(|id| Some(first_decision_ms.get(id)? - r.sent_ms(*first_in_view.get(id)?)))
            .collect(),
        None => Vec::new(),
    };
    decision_delay_ms.sort_by(f64::total_cmp);
    let wrong = per_passage
        .values()
        .filter(|v| v.iter().any(|(w, _)| *w))
        .count();
    Ok(SceneReport {
        frames: scene.frames(),
        passages,
        tracking,
        decisions: decided.len(),
        decisions_without_passer_by: orphans,
        passers_by_without_decision: undecided.len(),
        passers_by_with_two_or_more_decisions: decided_twice.len(),
        by_overlap: ByOverlap {
            without_decision: counted
                .iter()
                .filter(|id| !by_overlap.contains_key(id))
                .count(),
            two_or_more: by_overlap.values().filter(|n| **n >= 2).count(),
        },
        decided_twice,
        undecided,
        passers_by_with_a_wrong_decision: wrong,
        decided_early: decided.iter().filter(|d| d.early).count(),
        decision_delay_frames,
        fused,
        single_frame: single,
        first_frame: first,
        seconds: started.elapsed().as_secs_f64(),
        h264: match (&stream, h264_bits_per_second) {
            (Some(s), Some(bps)) => Some(StreamFacts {
                target_bits_per_second: bps,
                delivered_bits_per_second: s.delivered_bits_per_second(30.0),
                skipped_frames: s.skipped(),
            }),
            _ => None,
        },
        detection_frames: w.detection_frames(),
        detect_every: CadenceFacts {
            adaptive: cadence.is_adaptive(),
            last: cadence.every(),
            largest_used: cadence.largest(),
            changes: cadence.changes(),
            frames_behind: cadence.frames_behind(),
        },
        live: replay.map(|r| LiveReport {
            camera: r.options(),
            facts: r.facts(),
            lost_frames_scored,
            decision_delay_ms,
        }),
        boxes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x: f64) -> Rect {
        Rect {
            left: x,
            top: 100.0,
            right: x + 80.0,
            bottom: 180.0,
        }
    }

    #[test]
    fn a_decision_belongs_to_the_passer_by_its_frames_show_not_the_one_its_track_followed_longest()
    {
        // Passer-by 1 at x = 100 and passer-by 2 at x = 400 in frames 0-29. A track follows 1 for
        // frames 0-19, then switches to 2 for frames 20-29; its best frames are 25-27 (on 2).
        let truths: Vec<Vec<(u64, usize, Rect)>> = (0..30)
            .map(|_| vec![(1, 10, rect(100.0)), (2, 20, rect(400.0))])
            .collect();
        let scored: HashMap<u64, usize> = (0..30).map(|f| (f as u64, f)).collect();
        let track: Vec<(usize, Rect)> = (0..30)
            .map(|k| (k, rect(if k < 20 { 102.0 } else { 398.0 })))
            .collect();
        let used: Vec<(u64, Rect)> = (25..28).map(|f| (f, rect(398.0))).collect();
        assert_eq!(
            passer_by_of(&used, &track, &truths, &scored),
            (Some(2), Some(1))
        );
        // Used frames split 2 to 1: the majority; a tie goes to the lower passage.
        let split = [(5, rect(102.0)), (25, rect(398.0)), (26, rect(398.0))];
        assert_eq!(passer_by_of(&split, &track, &truths, &scored).0, Some(2));
        let tie = [(5, rect(102.0)), (25, rect(398.0))];
        assert_eq!(passer_by_of(&tie, &track, &truths, &scored).0, Some(1));
        // Frames on nobody (or not scored): no answer from them; the caller falls back to the
        // track's overlap.
        let nowhere = [(25, rect(700.0)), (99, rect(398.0))];
        assert_eq!(
            passer_by_of(&nowhere, &track, &truths, &scored),
            (None, Some(1))
        );
    }
}
