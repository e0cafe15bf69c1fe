//! Gallery policy and the roles that act on galleries.

use crate::error::{GalleryError, Result};
use serde::{Deserialize, Serialize};

/// Who is acting. The server maps API keys to these; the CLI acts as the local operator it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An e-gate or kiosk: verify and identify only.
    Gate,
    Enroller,
    Operator,
    /// Reads and verifies the audit log; never touches biometric data.
    Auditor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gate => "gate",
            Role::Enroller => "enroller",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Role> {
        Ok(match s {
            "gate" => Role::Gate,
            "enroller" => Role::Enroller,
            "operator" => Role::Operator,
            "auditor" => Role::Auditor,
            "admin" => Role::Admin,
            _ => {
                return Err(GalleryError::Invalid(format!(
                    "unknown role '{s}' (gate, enroller, operator, auditor, admin)"
                )))
            }
        })
    }
}

/// Comparison metric of the templates a gallery holds (set by the model pack at first enrolment):
/// the one metric of the workspace.
pub use template::Metric;

/// What a gallery is for and how it may be used. Stored with the gallery; changes are audited.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    /// Why the gallery exists (e.g. "registered traveller programme").
    pub purpose: String,
    /// Legal basis for processing (statute, consent scheme).
    pub legal_basis: String,
    /// Subjects expire this many days after enrolment; expired subjects are never returned.
    pub retention_days: u32,
    /// Decision threshold in the pack's metric; `None` means the model pack's calibrated default.
    pub threshold: Option<f64>,
    /// The false-match rate the threshold was calibrated for, when known.
    pub target_fmr: Option<f64>,
    /// At most this many candidates are returned by a search.
    pub max_candidates: usize,
    /// Roles allowed to search (identify/verify against) this gallery.
    pub search_roles: Vec<Role>,
    /// Search structure: exact (default) or approximate HNSW for very large galleries.
    #[serde(default)]
    pub index: IndexChoice,
    /// How subject references are normalised (upper case for document numbers). Galleries
    /// created before this rule existed read as `preserve`, so their pseudonyms stay valid.
    #[serde(default)]
    pub reference_case: crate::reference::ReferenceCase,
    /// Enrolment quality gate: the minimum OFIQ-aligned score (0–100) per named quality
    /// component an enrolment image's face must reach. Empty: no gate. (The gallery stores the
    /// numbers; the layers that see images check them.)
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub enrol_min_quality: std::collections::BTreeMap<String, u8>,
}

/// Which search structure a gallery uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexChoice {
    /// Exhaustive, provably equal to an f32 scan. The default.
    #[default]
    Exact,
    /// The same exact results with only int8 codes in memory (156 bytes per 128-D template
    /// instead of 668: 10^8 templates in 15.6 GB); candidates are re-scored from storage, which
    /// adds a few tens of microseconds per candidate to each search.
    Compact,
    /// HNSW graph proposing candidates, re-scored exactly; recall below 1.
    Hnsw(crate::approx::HnswParams),
}

impl Policy {
    pub fn validate(&self) -> Result<()> {
        if self.purpose.trim().is_empty() {
            return Err(GalleryError::Invalid("a gallery needs a purpose".into()));
        }
        if self.legal_basis.trim().is_empty() {
            return Err(GalleryError::Invalid(
                "a gallery needs a legal basis".into(),
            ));
        }
        if self.retention_days == 0 {
            return Err(GalleryError::Invalid(
                "retention must be at least one day".into(),
            ));
        }
        if self.max_candidates == 0 || self.max_candidates > 1000 {
            return Err(GalleryError::Invalid(
                "max candidates must be 1..=1000".into(),
            ));
        }
        if let Some(t) = self.threshold {
            if !t.is_finite() {
                return Err(GalleryError::Invalid(
                    "threshold must be a finite number".into(),
                ));
            }
        }
        Ok(())
    }
}
