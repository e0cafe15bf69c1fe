//! facegate's gallery layer: subjects and templates, private by construction.
//!
//! - [`crypto`]: per-subject data keys wrapped by a master key ([`crypto::KeyWrapper`] is the KMS seam),
//!   keyed pseudonyms for external references.
//! - [`transform`]: keyed orthogonal transform making templates unlinkable across galleries and renewable.
//! - [`index`]: exact top-k search (int8 scan, f32 re-scoring, provably equal to exhaustive f32).
//! - [`audit`]: hash-chained, Ed25519-signed audit log.
//! - [`access`]: the one table of actions and the roles allowed to take them.
//! - [`store`]: the gallery service (policy, sealing, audit) over its SQLite storage.

// `unsafe` lives in `index` alone (AVX-512 loads and stores), allowed there and nowhere else.
#![deny(unsafe_code)]

pub mod access;
pub mod approx;
pub mod audit;
pub mod crypto;
pub mod error;
pub mod files;
#[allow(unsafe_code)] // SAFETY comments at each block; int8_scan_equals_exhaustive_f32 tests it
pub mod index;
pub mod policy;
pub mod reference;
pub mod store;
pub mod transform;

pub use access::Action;
pub use error::{GalleryError, Result};
pub use policy::{IndexChoice, Metric, Policy, Role};
pub use reference::ReferenceCase;
pub use store::{
    Candidate, Context, DeletionReceipt, EnrolReceipt, Enrolment, GalleryInfo, Identification,
    Store, SubjectInfo, SubjectVerification,
};
