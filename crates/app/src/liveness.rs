//! What a failed liveness check does to a decision, written once for the CLI and the server:
//! the policy, the verdict, and the capture record that goes into the audit log.

use serde::{Deserialize, Serialize};
use serde_json::json;
use vision::liveness::{MotionCue, MotionVerdict, PadOutcome};
use vision::pipeline::Face;

/// The `decided_by` of a decision a blocking PAD verdict refused (CLI and server answers).
pub const DECIDED_BY_PAD: &str = "liveness: presentation attack suspected";

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

/// Which way a head-turn challenge asks the traveller to turn: their own left or right (in a
/// camera image that is not mirrored, turning left moves the nose towards the image's right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Turn {
    Left,
    Right,
}

/// A head at most this far from frontal (yaw, degrees) counts as facing the camera.
pub const CHALLENGE_FRONTAL_DEGREES: f64 = 10.0;
/// A turn of at least this much (yaw towards the asked side, degrees) meets the challenge.
pub const CHALLENGE_TURN_DEGREES: f64 = 20.0;

/// How a head-turn challenge went over a traveller's frames.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChallengeResult {
    pub turn: Turn,
    /// The traveller faced the camera, then turned at least [`CHALLENGE_TURN_DEGREES`] the asked
    /// way.
    pub passed: bool,
    /// Frames with a yaw estimate, and of them the first facing the camera.
    pub frames: usize,
    pub first_frontal: Option<usize>,
    /// The largest yaw towards the asked side after the first frontal frame (degrees).
    pub max_turn_degrees: Option<f64>,
}

/// Checks a head-turn challenge against the traveller's yaw over the frames, in order (positive
/// yaw: turned to their own left, `vision::quality::head_yaw`'s sign). Facing the camera first
/// and then turning is required, so a face held turned all along (a photo taken from the side)
/// does not pass. Yaw comes from five landmarks: rough (±10–15° between faces), hence the wide
/// margins.
pub fn check_turn(yaws: &[f64], turn: Turn) -> ChallengeResult {
    let sign = match turn {
        Turn::Left => 1.0,
        Turn::Right => -1.0,
    };
    let first_frontal = yaws
        .iter()
        .position(|y| y.abs() <= CHALLENGE_FRONTAL_DEGREES);
    let max_turn_degrees = first_frontal.and_then(|i| {
        yaws[i..]
            .iter()
            .map(|y| sign * y)
            .filter(|t| t.is_finite())
            .max_by(|a, b| a.total_cmp(b))
    });
    ChallengeResult {
        turn,
        passed: max_turn_degrees.is_some_and(|t| t >= CHALLENGE_TURN_DEGREES),
        frames: yaws.len(),
        first_frontal,
        max_turn_degrees,
    }
}

/// `outcome` judged against `threshold` instead of its pack's, when one is given.
fn rejudged(mut outcome: PadOutcome, threshold: Option<f32>) -> PadOutcome {
    if let Some(t) = threshold {
        outcome.threshold = t;
        outcome.live = outcome.score >= t;
    }
    outcome
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
        let outcome = rejudged(face.liveness.clone()?, threshold);
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
        let outcome = rejudged(PadOutcome::mean(frames)?, threshold);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_passes_only_after_facing_the_camera_and_only_the_asked_way() {
        let to_left = [2.0, -3.0, 8.0, 15.0, 24.0, 30.0, 12.0];
        assert!(check_turn(&to_left, Turn::Left).passed);
        assert!(!check_turn(&to_left, Turn::Right).passed);
        let mirrored: Vec<f64> = to_left.iter().map(|y| -y).collect();
        assert!(check_turn(&mirrored, Turn::Right).passed);
        assert!(!check_turn(&mirrored, Turn::Left).passed);
        // Turned from the first frame: never frontal, no pass (a profile photo).
        let r = check_turn(&[25.0, 28.0, 30.0], Turn::Left);
        assert!(!r.passed && r.first_frontal.is_none());
        // A turn before facing the camera does not count.
        assert!(!check_turn(&[30.0, 25.0, 5.0, 3.0], Turn::Left).passed);
        // Not far enough; nothing at all.
        assert!(!check_turn(&[0.0, 10.0, 19.0], Turn::Left).passed);
        let none = check_turn(&[], Turn::Right);
        assert!(!none.passed && none.max_turn_degrees.is_none());
    }
}
