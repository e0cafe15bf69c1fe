//! facegate's gallery layer: subjects and templates, private by construction.
//!
//! - [`crypto`]: per-subject data keys wrapped by a master key ([`crypto::KeyWrapper`] is the KMS seam),
//!   keyed pseudonyms for external references.
//! - [`transform`]: keyed orthogonal transform making templates unlinkable across galleries and renewable.
//! - [`index`]: exact top-k search (int8 scan, f32 re-scoring, provably equal to exhaustive f32).
//! - [`audit`]: hash-chained, Ed25519-signed audit log.
//! - [`store`]: the embedded engine (SQLite) tying them together, behind [`GalleryEngine`].

pub mod approx;
pub mod audit;
pub mod crypto;
pub mod error;
pub mod index;
pub mod policy;
pub mod store;
pub mod transform;

pub use error::{GalleryError, Result};
pub use policy::{IndexChoice, Metric, Policy, Role};
pub use store::{
    Candidate, Context, DeletionReceipt, EnrolReceipt, Enrolment, GalleryInfo, Identification,
    Store, SubjectInfo, SubjectVerification,
};

/// What callers (CLI, server) need from a gallery engine. The embedded [`Store`] implements it; a
/// distributed engine would implement the same calls.
pub trait GalleryEngine: Send + Sync {
    fn create_gallery(&self, ctx: &Context, name: &str, policy: &Policy) -> Result<()>;
    fn galleries(&self) -> Result<Vec<GalleryInfo>>;
    fn gallery(&self, name: &str) -> Result<GalleryInfo>;
    #[allow(clippy::too_many_arguments)]
    fn enroll(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
        templates: &[Vec<f32>],
        metric: Metric,
        pack: &str,
        opts: &Enrolment,
    ) -> Result<EnrolReceipt>;
    fn identify(
        &self,
        ctx: &Context,
        gallery: &str,
        probe: &[f32],
        k: Option<usize>,
        default_threshold: f64,
    ) -> Result<Identification>;
    fn delete(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
        reason: &str,
    ) -> Result<DeletionReceipt>;
    fn purge(&self, ctx: &Context, gallery: &str) -> Result<Vec<DeletionReceipt>>;
}

impl GalleryEngine for Store {
    fn create_gallery(&self, ctx: &Context, name: &str, policy: &Policy) -> Result<()> {
        Store::create_gallery(self, ctx, name, policy)
    }
    fn galleries(&self) -> Result<Vec<GalleryInfo>> {
        Store::galleries(self)
    }
    fn gallery(&self, name: &str) -> Result<GalleryInfo> {
        Store::gallery(self, name)
    }
    fn enroll(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
        templates: &[Vec<f32>],
        metric: Metric,
        pack: &str,
        opts: &Enrolment,
    ) -> Result<EnrolReceipt> {
        Store::enroll(self, ctx, gallery, reference, templates, metric, pack, opts)
    }
    fn identify(
        &self,
        ctx: &Context,
        gallery: &str,
        probe: &[f32],
        k: Option<usize>,
        default_threshold: f64,
    ) -> Result<Identification> {
        Store::identify(self, ctx, gallery, probe, k, default_threshold)
    }
    fn delete(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
        reason: &str,
    ) -> Result<DeletionReceipt> {
        Store::delete(self, ctx, gallery, reference, reason)
    }
    fn purge(&self, ctx: &Context, gallery: &str) -> Result<Vec<DeletionReceipt>> {
        Store::purge(self, ctx, gallery)
    }
}
