//! What a failed liveness check does to a decision, written once for the CLI and the server:
//! the policy, the verdict, and the capture record that goes into the audit log.

use serde::{Deserialize, Serialize};
use serde_json::json;
use vision::liveness::{MotionCue, MotionVerdict, PadOutcome};
use vision::pipeline::Face;

/// Whether a presentation attack verdict blocks the comparison's decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PadPolicy {
    /// A face judged an attack gets no match, whatever its comparison score (e-gates).
    #[default]
    Block,
    /// The PAD outcome is reported and audited, the decision is the comparison's alone
    /// (an operator watches; evaluation).
    Report,
}

impl std::str::FromStr for PadPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "block" => Ok(PadPolicy::Block),
            "report" => Ok(PadPolicy::Report),
            _ => Err(format!("PAD policy '{s}': expected block or report")),
        }
    }
}

/// The liveness stage's say on one probe face, or on one passer-by of a video.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PadVerdict {
    /// The passive score: of the face, or averaged over a track's best frames.
    pub outcome: PadOutcome,
    /// A track's planar-motion cue (video only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub motion: Option<MotionCue>,
    /// Frames the passive score was averaged over (1 for a still).
    pub frames: usize,
    /// The fused decision: live when the passive score passes and the motion cue did not find
    /// a plane (either cue finding an attack is enough to reject).
    pub live: bool,
    pub policy: PadPolicy,
    /// The face was judged an attack and the policy blocks: no match may be declared.
    pub blocks: bool,
}

impl PadVerdict {
    /// The verdict on `face` (which must have been through `Pipeline::assess_liveness`).
    pub fn of(face: &Face, policy: PadPolicy, threshold: Option<f32>) -> Option<Self> {
        let mut outcome = face.liveness.clone()?;
        if let Some(t) = threshold {
            outcome.threshold = t;
            outcome.live = outcome.score >= t;
        }
        Some(PadVerdict {
            blocks: !outcome.live && policy == PadPolicy::Block,
            live: outcome.live,
            motion: None,
            frames: 1,
            policy,
            outcome,
        })
    }

    /// The verdict on a passer-by of a video: the passive outcomes of the track's best frames
    /// averaged, and the track's planar-motion cue. `None` without any passive outcome.
    pub fn of_track(
        frames: &[PadOutcome],
        motion: MotionCue,
        policy: PadPolicy,
        threshold: Option<f32>,
    ) -> Option<Self> {
        let mut outcome = PadOutcome::mean(frames)?;
        if let Some(t) = threshold {
            outcome.threshold = t;
            outcome.live = outcome.score >= t;
        }
        let live = outcome.live && motion.verdict != MotionVerdict::Planar;
        Some(PadVerdict {
            blocks: !live && policy == PadPolicy::Block,
            live,
            motion: Some(motion),
            frames: frames.len(),
            policy,
            outcome,
        })
    }

    /// The capture record for the audit log: the pack, each model's live score, the fused
    /// score, threshold, decision and policy (no image, no crop, no template).
    pub fn audit_record(&self) -> serde_json::Value {
        let o = &self.outcome;
        json!({
            "pad": {
                "pack": o.pack,
                "models": o.models.iter().map(|m| json!({"model": m.model, "live": m.live})).collect::<Vec<_>>(),
                "score": o.score,
                "threshold": o.threshold,
                "frames": self.frames,
                "motion": self.motion.as_ref().map(|m| json!({
                    "verdict": m.verdict, "moving_pairs": m.moving_pairs, "ratio": m.ratio})),
                "decision": if self.live { "live" } else { "attack" },
                "policy": self.policy,
            }
        })
    }
}
