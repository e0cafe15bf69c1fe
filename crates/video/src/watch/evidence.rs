//! What a track's decision is made from: its kept frames ranked, embedded once and fused, with
//! the track's liveness evidence when the pipeline has a PAD stage. The watcher decides *when*
//! ([`super::Watcher`]); this builds the [`Evidence`] it hands out, and the embeddings the
//! watcher's other checks use ([`embeddings_of`]), zeroising them once used.

use super::{Kept, StageSeconds, TrackState};
use crate::error::VideoError;
use crate::motion::MotionCue;
use image::RgbImage;
use template::fuse;
use vision::liveness::{PadCrops, PadOutcome};
use vision::pipeline::Pipeline;
use vision::quality::Quality;
use zeroize::{Zeroize, Zeroizing};

/// A frame a decision used.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrameUsed {
    pub frame: u64,
    /// The rank it was chosen by: [`frame_rank`](crate::rank::frame_rank) times `visible`.
    pub rank: f64,
    /// Share of the face that shows, 0 to 1: inside the frame and not behind the head of a
    /// nearer (larger or equal) detected face ([`visible_share`](crate::rank::visible_share)).
    pub visible: f64,
    pub quality: Quality,
    #[serde(rename = "box")]
    pub rect: [f64; 4],
}

/// What a track's decision is made from. The embeddings are zeroised when this is dropped.
pub struct Evidence {
    pub track: u64,
    /// The frame at which the decision is made.
    pub frame: u64,
    pub time_ms: u64,
    pub frames_seen: u32,
    pub frames_used: Vec<FrameUsed>,
    /// The best frame's embedding (the first of `frames_used`).
    pub best: Vec<f32>,
    /// Mean of the kept frames' normalised embeddings, scaled back to their mean norm.
    pub fused: Vec<f32>,
    /// The track's first collected frame's embedding, with
    /// [`WatchConfig::first_frame_template`](super::WatchConfig::first_frame_template).
    pub first: Option<Vec<f32>>,
    /// Whether the track ended before `decide_after_frames` (decided on what there was).
    pub at_track_end: bool,
    /// Whether it was decided before `decide_after_frames` on a clear match
    /// ([`EarlyMatch`](super::EarlyMatch)).
    pub early: bool,
    /// The liveness evidence, when the pipeline has a PAD stage.
    pub liveness: Option<TrackLiveness>,
}

/// A track's liveness evidence: the passive PAD outcome of each kept frame (best first) and the
/// planar-motion cue over the frames collected. Fusing them into a decision is policy's
/// (`app::liveness::PadVerdict::of_track`).
#[derive(Debug, Clone)]
pub struct TrackLiveness {
    pub passive: Vec<PadOutcome>,
    pub motion: MotionCue,
}

impl Drop for Evidence {
    fn drop(&mut self) {
        self.best.zeroize();
        self.fused.zeroize();
        if let Some(f) = &mut self.first {
            f.zeroize();
        }
    }
}

/// The embeddings of `kept`, in its order: the ones an early check made as they are, the others
/// embedded from their chips in one batch. With `keep`, those are stored in `kept` and their
/// chips zeroised; without, chips stay and the embeddings are only returned. The caller zeroises
/// what it gets ([`zeroize_all`]).
pub(super) fn embeddings_of(
    p: &Pipeline,
    kept: &mut [Kept],
    keep: bool,
) -> Result<Vec<Vec<f32>>, VideoError> {
    let chips: Vec<RgbImage> = kept
        .iter()
        .filter(|k| k.embedding.is_none())
        .filter_map(|k| k.chip.clone())
        .collect();
    let embedded = p.embed_aligned(&chips);
    for c in chips {
        c.into_raw().zeroize();
    }
    let mut fresh = embedded?.into_iter();
    let mut out = Vec::with_capacity(kept.len());
    for k in kept.iter_mut() {
        if let Some(e) = &k.embedding {
            out.push(e.to_vec());
        } else if k.chip.is_some() {
            let Some(e) = fresh.next() else {
                break;
            };
            if keep {
                k.embedding = Some(Zeroizing::new(e.clone()));
                if let Some(c) = k.chip.take() {
                    c.into_raw().zeroize();
                }
            }
            out.push(e);
        }
    }
    for mut e in fresh {
        e.zeroize();
    }
    Ok(out)
}

pub(super) fn zeroize_all(mut embeddings: Vec<Vec<f32>>) {
    for e in &mut embeddings {
        e.zeroize();
    }
}

/// [`evidence`], timed: its liveness work is counted in `seconds.liveness`, the rest in
/// `seconds.decide`.
pub(super) fn decide(
    id: u64,
    state: &mut TrackState,
    frame: u64,
    time_ms: u64,
    at_track_end: bool,
    p: &Pipeline,
    seconds: &mut StageSeconds,
) -> Result<Option<Evidence>, VideoError> {
    let clock = std::time::Instant::now();
    let liveness_before = seconds.liveness;
    let r = evidence(id, state, frame, time_ms, at_track_end, p, seconds);
    seconds.decide += clock.elapsed().as_secs_f64() - (seconds.liveness - liveness_before);
    r
}

/// The evidence of a track not yet decided, from its kept frames (none kept: nothing to decide
/// on). Marks the track decided and drops its chips, PAD crops and motion patches. The time of
/// the liveness work is added to `seconds.liveness`.
fn evidence(
    id: u64,
    state: &mut TrackState,
    frame: u64,
    time_ms: u64,
    at_track_end: bool,
    p: &Pipeline,
    seconds: &mut StageSeconds,
) -> Result<Option<Evidence>, VideoError> {
    if state.decided || state.kept.is_empty() {
        return Ok(None);
    }
    state.decided = true;
    let mut kept = std::mem::take(&mut state.kept);
    kept.sort_by(|a, b| b.rank.total_cmp(&a.rank));
    let clock = std::time::Instant::now();
    let liveness = match (&p.liveness, state.motion.take()) {
        (Some(pad), Some(motion)) => {
            let crops: Vec<PadCrops> = kept.iter_mut().filter_map(|k| k.pad.take()).collect();
            Some(TrackLiveness {
                passive: pad.assess_crops(&crops)?,
                motion: motion.cue(),
            })
        }
        _ => None,
    };
    seconds.liveness += clock.elapsed().as_secs_f64();
    let embeddings = embeddings_of(p, &mut kept, false)?;
    let fused = fuse(&embeddings);
    let best = embeddings.first().cloned().unwrap_or_default();
    zeroize_all(embeddings);
    let first = match state.first.take() {
        Some(first) => embeddings_of(p, &mut [first], false)?.pop(),
        None => None,
    };
    Ok(Some(Evidence {
        track: id,
        frame,
        time_ms,
        frames_seen: state.seen,
        frames_used: kept
            .iter()
            .map(|k| FrameUsed {
                frame: k.frame,
                rank: k.rank,
                visible: k.visible,
                quality: k.quality.clone(),
                rect: [k.rect.left, k.rect.top, k.rect.right, k.rect.bottom],
            })
            .collect(),
        best,
        fused,
        first,
        at_track_end,
        early: false,
        liveness,
    }))
}
