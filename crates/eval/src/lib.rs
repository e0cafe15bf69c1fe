//! facegate's evaluation as a library: what `facegate eval report` computes and how it is shown,
//! apart from how the images are read and embedded (the binary does that).
//!
//! - [`metrics`]: error rates from weighted score sets (FNMR at FMR, EER, FNIR at FPIR, CMC,
//!   differentials), bootstrap intervals that resample identities.
//! - [`model`]: the report as typed data (`Serialize` + `Deserialize`): `report.json` is this
//!   model written out, and every rendering reads the model, never JSON keys.
//! - [`plot`]: dependency-free SVG charts (DET/ROC/CMC, histograms).
//! - [`render`]: the self-contained HTML report and the terminal summary.
//! - [`scale`]: a pack's impostor tail fitted (generalised Pareto, by probability-weighted
//!   moments) and bootstrapped, to predict FPIR and FNIR at any gallery size.

#![forbid(unsafe_code)]

pub mod metrics;
pub mod model;
pub mod pad;
pub mod plot;
pub mod render;
pub mod scale;
