//! The evaluation report as data. `report.json` is [`Report`] serialised; the HTML page and the
//! terminal summary are rendered from it (`render`). Rates that the data cannot define (a group
//! without impostor pairs, an FMR too small for the pairs at hand) are NaN in memory and `null` in
//! JSON, and read back as NaN.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// FMR levels of the 1:1 operating points (each reported only where the data supports it).
pub const FMR_LEVELS: [f64; 6] = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6];
/// FPIR levels of the 1:N operating points.
pub const FPIR_LEVELS: [f64; 3] = [1e-1, 1e-2, 1e-3];
/// Ranks kept in the CMC.
pub const MAX_RANK: usize = 20;

/// NaN ↔ `null`: serde_json writes a non-finite float as `null`; this reads `null` back as NaN.
mod nan_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(*x)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// A 95% interval, written as `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval(
    #[serde(with = "nan_null")] pub f64,
    #[serde(with = "nan_null")] pub f64,
);

impl From<(f64, f64)> for Interval {
    fn from((lo, hi): (f64, f64)) -> Self {
        Interval(lo, hi)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub facegate_version: String,
    pub dataset: DatasetInfo,
    pub protocol: ProtocolInfo,
    pub packs: Vec<PackReport>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub images_dir: PathBuf,
    pub identities: usize,
    pub images: usize,
    /// Byte-identical copies of an earlier image, left out.
    pub duplicates_left_out: Vec<String>,
    /// The attributes CSV the groups come from.
    pub attributes: Option<PathBuf>,
}

/// How the figures were made, in words (shown with the tables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtocolInfo {
    pub one_to_one: String,
    pub pairs_naming_missing_images: Vec<String>,
    pub one_to_n: String,
    pub threshold_rule: String,
    pub intervals: String,
    pub groups: String,
    pub seed: u64,
}

/// Every figure of one pack (or one setting of a pack).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackReport {
    pub label: String,
    pub pack: String,
    pub flip: bool,
    /// Jittered copies averaged per embedding (reports written before the option have none: 0).
    #[serde(default)]
    pub jitter: usize,
    /// The pack's score, in words.
    pub metric: String,
    pub embedding: EmbeddingRun,
    /// Images embedded from the central 40% because no face was detected.
    pub failures_to_detect: Vec<String>,
    pub failures_to_decode: Vec<DecodeFailure>,
    pub one_to_one: OneToOne,
    pub one_to_n: OneToN,
    pub operating_points: OperatingPoints,
    /// Per attribute column.
    pub groups: BTreeMap<String, GroupTable>,
    /// File name of the score histogram (SVG).
    pub histogram: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRun {
    pub computed: usize,
    pub from_cache: usize,
    pub seconds: f64,
    pub workers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeFailure {
    pub image: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneToOne {
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
    pub identities: usize,
    #[serde(with = "nan_null")]
    pub eer: f64,
    pub eer_ci95: Option<Interval>,
    /// In the pack's own score.
    #[serde(with = "nan_null")]
    pub eer_threshold: f64,
    /// One entry per [`FMR_LEVELS`].
    pub fnmr_at_fmr: Vec<FmrPoint>,
    /// Accuracy over a pairs file's folds (only with a pairs file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs_protocol: Option<FoldAccuracy>,
}

/// FNMR at one FMR; the rates and threshold are NaN where the data cannot support that FMR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FmrPoint {
    pub fmr: f64,
    pub supported_by_data: bool,
    #[serde(with = "nan_null")]
    pub fnmr: f64,
    #[serde(with = "nan_null")]
    pub tar: f64,
    #[serde(with = "nan_null")]
    pub threshold: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fnmr_ci95: Option<Interval>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldAccuracy {
    pub folds: usize,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub fold_accuracy: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneToN {
    pub gallery_size: usize,
    pub all: OpenSet,
    pub by_gallery_size: Vec<GallerySizePoint>,
    /// FPIR and FNIR predicted at any gallery size from the pack's impostor tail, checked
    /// against `by_gallery_size` (absent when there were too few impostor pairs to fit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<GalleryScale>,
    /// Ways of getting more from the same model, each beside the baseline it is measured
    /// against (same searches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub improvements: Vec<Improvement>,
    /// Cohort normalisation at each of `by_gallery_size`'s sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cohort_by_size: Vec<CohortAtSize>,
}

/// Cohort normalisation measured at one gallery size and FPIR: the z-threshold that keeps the
/// FPIR there (searches strictly below it pass), what it and the distance threshold at the same
/// FPIR miss, and what the z-threshold measured at the largest size does here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortAtSize {
    pub gallery_size: usize,
    pub fpir: f64,
    pub z_threshold: f64,
    #[serde(with = "nan_null")]
    pub fnir: f64,
    #[serde(with = "nan_null")]
    pub fnir_distance: f64,
    pub largest_threshold_fpir: f64,
    #[serde(with = "nan_null")]
    pub largest_threshold_fnir: f64,
}

/// One way of searching (a score normalisation, templates per subject) and its open-set rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Improvement {
    pub name: String,
    pub description: String,
    pub mated_searches: usize,
    pub nonmated_searches: usize,
    /// One entry per [`FPIR_LEVELS`].
    pub fnir_at_fpir: Vec<ImprovementPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImprovementPoint {
    pub fpir: f64,
    #[serde(with = "nan_null")]
    pub fnir: f64,
    /// Bootstrap by identity (searches weighted by their probe's draws; the threshold re-set in
    /// every replicate).
    pub fnir_ci95: Option<Interval>,
    pub supported_by_data: bool,
}

/// The prediction of FPIR and FNIR at gallery size N (`template::tail`): its model, the model's
/// fit to the measured tail, the check against measured searches, and the extrapolation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryScale {
    /// How the prediction is made, in words.
    pub method: String,
    /// The fitted model, in dissimilarity units (cosine packs: 1 − cosine).
    pub tail: template::tail::ImpostorTail,
    pub shape_ci95: Option<Interval>,
    /// The tail as measured against the model: (threshold, measured F, model F).
    pub tail_fit: Vec<TailFitPoint>,
    pub checks: Vec<ScaleCheck>,
    pub predictions: Vec<ScalePrediction>,
}

impl GalleryScale {
    /// The prediction at gallery size `n` and FPIR `fpir`, if it was made.
    pub fn at(&self, n: f64, fpir: f64) -> Option<&ScalePrediction> {
        self.predictions
            .iter()
            .find(|p| p.gallery_size == n && p.fpir == fpir)
    }

    /// The report's plain words: how many listed people a watchlist of 10^4 and 10^6 misses at
    /// FPIR 1e-3, and how the check against measured searches went.
    pub fn in_words(&self, label: &str) -> Vec<String> {
        let mut out = Vec::new();
        for n in [1e4, 1e6] {
            if let Some(p) = self.at(n, 1e-3) {
                let ci = p.fnir_ci95.map_or(String::new(), |Interval(a, b)| {
                    format!(" (95% interval {:.0}–{:.0}%)", a * 100.0, b * 100.0)
                });
                out.push(format!(
                    "with {label}, a watchlist of {} people at FPIR 1e-3 misses about {:.0}% of listed people{ci} at threshold {:.4} (predicted)",
                    group_thousands(n),
                    p.fnir * 100.0,
                    p.threshold
                ));
            }
        }
        let inside = self
            .checks
            .iter()
            .filter(|c| c.within_measured_interval)
            .count();
        if !self.checks.is_empty() {
            out.push(format!(
                "{label}: predicted FPIR inside the measured 95% interval at {inside} of {} checked (gallery size, target) points",
                self.checks.len()
            ));
        }
        out
    }
}

fn group_thousands(n: f64) -> String {
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TailFitPoint {
    /// In the pack's score units.
    pub threshold: f64,
    pub measured: f64,
    pub model: f64,
}

/// At one gallery size LFW-dev allows: the threshold the model gives for a target FPIR, and
/// what the searches measured there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleCheck {
    pub gallery_size: usize,
    pub target_fpir: f64,
    /// In the pack's score units.
    pub threshold: f64,
    /// The model's FPIR at the threshold across bootstrap replicates of the tail.
    pub predicted_fpir_ci95: Option<Interval>,
    pub nonmated_searches: usize,
    #[serde(with = "nan_null")]
    pub measured_fpir: f64,
    /// Wilson interval: non-mated searches are of distinct people.
    pub measured_fpir_ci95: Interval,
    /// The target lies within the measured interval.
    pub within_measured_interval: bool,
    #[serde(with = "nan_null")]
    pub predicted_fnir: f64,
    pub predicted_fnir_ci95: Option<Interval>,
    pub mated_searches: usize,
    #[serde(with = "nan_null")]
    pub measured_fnir: f64,
}

/// At a gallery size beyond the data: the threshold for a target FPIR and the FNIR it costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalePrediction {
    pub gallery_size: f64,
    pub fpir: f64,
    /// In the pack's score units.
    #[serde(with = "nan_null")]
    pub threshold: f64,
    pub threshold_ci95: Option<Interval>,
    #[serde(with = "nan_null")]
    pub fnir: f64,
    pub fnir_ci95: Option<Interval>,
}

/// Rank and open-set figures of a set of searches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenSet {
    pub mated_searches: usize,
    pub nonmated_searches: usize,
    #[serde(with = "nan_null")]
    pub rank1: f64,
    #[serde(with = "nan_null")]
    pub rank10: f64,
    /// Identification rate at ranks 1..=[`MAX_RANK`].
    pub cmc: Vec<f64>,
    /// One entry per [`FPIR_LEVELS`].
    pub fnir_at_fpir: Vec<FpirPoint>,
}

impl OpenSet {
    /// FNIR at FPIR 1e-2 (the level the gallery-size figures follow).
    pub fn fnir_at_1e2(&self) -> f64 {
        self.fnir_at_fpir.get(1).map_or(f64::NAN, |p| p.fnir)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FpirPoint {
    pub fpir: f64,
    #[serde(with = "nan_null")]
    pub fnir: f64,
    #[serde(with = "nan_null")]
    pub threshold: f64,
    pub supported_by_data: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GallerySizePoint {
    pub gallery_size: usize,
    pub mated_searches: usize,
    pub nonmated_searches: usize,
    #[serde(with = "nan_null")]
    pub rank1: f64,
    pub fnir_at_fpir: Vec<FpirPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoints {
    pub one_to_one: FmrThreshold,
    pub one_to_n: FpirThreshold,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FmrThreshold {
    pub fmr: f64,
    #[serde(with = "nan_null")]
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FpirThreshold {
    pub fpir: f64,
    #[serde(with = "nan_null")]
    pub threshold: f64,
}

/// The groups of one attribute column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupTable {
    pub groups: Vec<GroupRow>,
    pub differential: Differential,
    /// File name of the column's DET figure (SVG).
    pub figure: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    pub group: String,
    pub images: usize,
    pub identities: usize,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
    /// At the global 1:1 operating point.
    #[serde(with = "nan_null")]
    pub fnmr: f64,
    pub fnmr_ci95: Option<Interval>,
    #[serde(with = "nan_null")]
    pub fmr: f64,
    pub fmr_ci95: Option<Interval>,
    #[serde(with = "nan_null")]
    pub eer: f64,
    pub too_few_impostor_pairs_for_fmr: bool,
    /// The group's own curve: FNMR at each FMR its same-group impostors can measure.
    pub fnmr_at_fmr: Vec<GroupFmrPoint>,
    pub mated_searches: usize,
    #[serde(with = "nan_null")]
    pub rank1: f64,
    #[serde(with = "nan_null")]
    pub rank10: f64,
    /// At the global 1:N operating point.
    #[serde(with = "nan_null")]
    pub fnir: f64,
    pub nonmated_searches: usize,
    #[serde(with = "nan_null")]
    pub fpir: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupFmrPoint {
    pub fmr: f64,
    #[serde(with = "nan_null")]
    pub fnmr: f64,
    #[serde(with = "nan_null")]
    pub threshold: f64,
}

/// max/min across a column's groups (NaN when a group is at zero or there is one group), and
/// max − min.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Differential {
    #[serde(with = "nan_null")]
    pub fnmr: f64,
    #[serde(with = "nan_null")]
    pub fmr: f64,
    #[serde(with = "nan_null")]
    pub fnir: f64,
    #[serde(with = "nan_null")]
    pub fpir: f64,
    #[serde(with = "nan_null")]
    pub fnmr_spread: f64,
    #[serde(with = "nan_null")]
    pub fmr_spread: f64,
    #[serde(with = "nan_null")]
    pub fnir_spread: f64,
    #[serde(with = "nan_null")]
    pub fpir_spread: f64,
}

impl Differential {
    /// (name, ratio) of the four rates, for warnings and tables.
    pub fn ratios(&self) -> [(&'static str, f64, f64); 4] {
        [
            ("fnmr", self.fnmr, self.fnmr_spread),
            ("fmr", self.fmr, self.fmr_spread),
            ("fnir", self.fnir, self.fnir_spread),
            ("fpir", self.fpir, self.fpir_spread),
        ]
    }
}
