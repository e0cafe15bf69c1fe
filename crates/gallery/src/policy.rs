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
    /// Keep a false-positive identification rate as the gallery grows: `threshold` then
    /// follows the gallery's size (set by `eval calibrate --target-fpir`). `None`: the
    /// threshold stays where it was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fpir_target: Option<FpirTarget>,
    /// What a subject enrolled from several images keeps: each template (a search takes the
    /// nearest) or their average (one template; on LFW-dev it misses far fewer listed people,
    /// docs/evaluation.md "More from the same model").
    #[serde(default, skip_serializing_if = "TemplateFusion::is_each")]
    pub template_fusion: TemplateFusion,
    /// Decide 1:N searches on the rank-1 distance normalised against the probe's distances to
    /// the rest of the gallery instead of on `threshold` (set by `eval calibrate --cohort`).
    /// `None`: decide on `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<CohortNormalisation>,
}

/// Score normalisation against a cohort, the gallery itself (T-norm): a search fetches the
/// probe's nearest `ranks` subjects; ranks 2…`ranks` are its cohort, and a candidate at
/// dissimilarity d (Euclidean distance, or 1 − cosine) is returned when
/// z = (d − mean) / sd of the cohort's dissimilarities is at most `z_threshold`.
///
/// Why: a probe close to everybody (the scale model's probe spread) no longer passes as easily
/// as one close to nobody; on LFW-dev it cut dlib's FNIR at FPIR 1e-2 from 73% to 52%, and made
/// the MobileFaceNet pack worse (docs/evaluation.md "More from the same model"), so it is a
/// per-gallery choice, calibrated on the authority's data, never a default.
///
/// The z-threshold is measured at one gallery size (`calibrated_at`): a smaller gallery keeps
/// the FPIR with room to spare, a larger one lets more impostors through (enrolment warns).
/// Until the gallery holds `ranks` subjects there is no full cohort and searches decide on
/// `threshold`. 1:1 comparisons (verify) never use it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CohortNormalisation {
    /// Nearest subjects fetched per search; ranks 2…ranks form the cohort.
    pub ranks: usize,
    /// A candidate is returned when its z is at most this.
    pub z_threshold: f64,
    /// The FPIR the z-threshold was measured for…
    pub fpir: f64,
    /// …at this gallery size.
    pub calibrated_at: u64,
}

/// The smallest and largest cohorts a policy may ask for: fewer than 16 others give a noisy
/// mean and spread; more than 1,024 only cost search time.
pub const COHORT_RANKS: std::ops::RangeInclusive<usize> = 17..=1025;

/// How a subject's several enrolment templates are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TemplateFusion {
    /// Every template kept; a search takes the subject's nearest (max fusion). The default, and
    /// what galleries created before this choice existed do.
    #[default]
    Each,
    /// One template: the mean of the unit templates at their mean norm (`template::fuse`).
    Mean,
}

impl TemplateFusion {
    pub fn is_each(&self) -> bool {
        *self == TemplateFusion::Each
    }
}

/// A threshold that follows the gallery's size so that searches keep a target FPIR.
///
/// The threshold is always set for a size at least as large as the gallery (`sized_for`, with
/// headroom), and moved — tighter only, in an audited record — before an enrolment takes the
/// gallery past it. Erasures never loosen it: a smaller gallery at a tighter threshold only
/// keeps its FPIR promise with room to spare (a new calibration resets it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FpirTarget {
    /// The FPIR searches of this gallery should not exceed.
    pub fpir: f64,
    /// What the pack does at gallery size N (impostor tail, mated distances), measured on the
    /// authority's own data.
    pub model: template::tail::PackScale,
    /// The gallery size the current threshold was set for.
    pub sized_for: u64,
    /// Enrolment warns when the expected FNIR at the gallery's size exceeds this…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fnir: Option<f64>,
    /// …and refuses instead of warning when this is set.
    #[serde(default)]
    pub refuse_beyond_max_fnir: bool,
}

/// Headroom when a followed threshold is set: for 25% more subjects than the gallery holds (at
/// least 16), so it moves about once per quarter of growth, not at every enrolment.
pub fn sized_for(size: u64) -> u64 {
    size.saturating_add(size / 4).max(16)
}

/// Which search structure a gallery uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexChoice {
    /// Exhaustive, provably equal to an f32 scan. The default.
    #[default]
    Exact,
    /// The same exact results with only int8 codes in memory (152 bytes per 128-D template
    /// instead of 664: 10^8 templates in 15.2 GB); candidates are re-scored from storage, which
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
        if let Some(f) = &self.fpir_target {
            if !(f.fpir > 0.0 && f.fpir < 1.0) {
                return Err(GalleryError::Invalid(
                    "target FPIR must lie strictly between 0 and 1".into(),
                ));
            }
            if f.max_fnir.is_some_and(|m| !(m > 0.0 && m <= 1.0)) {
                return Err(GalleryError::Invalid("max FNIR must lie in (0, 1]".into()));
            }
            f.model
                .validate()
                .map_err(|e| GalleryError::Invalid(e.to_string()))?;
        }
        if let Some(c) = &self.cohort {
            if !COHORT_RANKS.contains(&c.ranks) {
                return Err(GalleryError::Invalid(format!(
                    "a cohort of {} ranks: it must be {}..={}",
                    c.ranks,
                    COHORT_RANKS.start(),
                    COHORT_RANKS.end()
                )));
            }
            if !(c.z_threshold.is_finite() && c.fpir > 0.0 && c.fpir < 1.0) {
                return Err(GalleryError::Invalid(
                    "a cohort needs a finite z-threshold and an FPIR strictly between 0 and 1"
                        .into(),
                ));
            }
            if self.fpir_target.is_some() {
                // The scale model predicts raw distances, one impostor at a time; cohort z-scores
                // of one search are not independent, so a followed threshold would promise
                // what nothing measured.
                return Err(GalleryError::Invalid(
                    "a gallery decides on a cohort z-threshold or on a size-following target FPIR, not both".into(),
                ));
            }
        }
        Ok(())
    }

    /// Set the threshold for the target FPIR at `size` (with headroom), whatever it was: when a
    /// target is first set or recalibrated. Returns the previous threshold, or `None` without a
    /// target.
    pub fn size_threshold(&mut self, size: u64) -> Option<Option<f64>> {
        let f = self.fpir_target.as_mut()?;
        f.sized_for = sized_for(size);
        let old = self.threshold;
        self.threshold = Some(f.model.threshold_for_fpir(f.fpir, f.sized_for));
        Some(old)
    }

    /// Move the threshold if the gallery is about to hold `size` subjects and the current one was
    /// set for fewer. Returns the previous threshold when it moved.
    pub fn follow_size(&mut self, size: u64) -> Option<Option<f64>> {
        let f = self.fpir_target.as_ref()?;
        if size <= f.sized_for && self.threshold.is_some() {
            return None;
        }
        self.size_threshold(size)
    }

    /// What the threshold is expected to give at `size`, when the policy has a target (and so a
    /// model of the pack).
    pub fn expected(&self, size: u64) -> Option<template::tail::Expected> {
        let f = self.fpir_target.as_ref()?;
        Some(f.model.expected(self.threshold?, size))
    }
}
