//! What a failed liveness check does to a decision, written once for the CLI and the server:
//! the policy, the verdict, and the capture record that goes into the audit log.

use serde::{Deserialize, Serialize};
use serde_json::json;
use vision::liveness::PadOutcome;
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

/// The liveness stage's say on one probe face.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PadVerdict {
    pub outcome: PadOutcome,
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
                "decision": if o.live { "live" } else { "attack" },
                "policy": self.policy,
            }
        })
    }
}
