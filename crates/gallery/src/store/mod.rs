//! The gallery service: policy, roles, sealing and the audit chain over a storage [`backend`],
//! with an in-memory index per gallery for search.
//!
//! The service decides everything; the backend keeps rows (see [`backend`] for what it must
//! guarantee). Two stores behind it, on purpose: the record store (galleries, subjects as
//! pseudonyms, sealed templates and references, the audit log, deletion receipts — safe to back
//! up: without the keys it holds no biometric data) and the key store (one wrapped data key per
//! subject). Erasing a subject destroys its key, so every copy of the record store — backups
//! included — loses that subject for good. The embedded default is [`backend::sqlite`]
//! (`store.db` and `keys.db` in the data directory).

use crate::access::Action;
use crate::approx::{HnswIndex, HnswParams};
use crate::audit::{self, Actor, AuditEvent, AuditReport, SignedHead};
use crate::crypto::{self, KeyWrapper, SecretKey};
use crate::error::{GalleryError, Result};
use crate::index::{ExactIndex, SearchIndex, TemplateSource};
use crate::policy::{IndexChoice, Metric, Policy, Role};
use crate::transform::OrthogonalTransform;
use ed25519_dalek::{Signer, SigningKey};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use zeroize::Zeroizing;

mod access_list;
mod audited;
pub mod backend;
mod enrol;
mod erase;
mod export;
mod galleries;
mod keys;
mod load;
pub mod migrate;
mod recovery;
mod sealing;
mod search;

use backend::sqlite::{SqliteBackend, FORMAT};
use backend::{
    AuditLog, Backend, KeyStore, KeyTxn, KeyedTemplate, Mark, MarkOwner, NewSubject, WriteTxn,
};
use recovery::*;
use sealing::*;

pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Hasher for maps keyed by SQLite row ids or by pseudonyms (HMAC outputs). Neither is chosen by
/// whoever sends requests, so a multiply-mix hash is safe here, and it is several times cheaper
/// than SipHash when a million-subject gallery loads.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(23) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_i64(&mut self, x: i64) {
        self.write_u64(x as u64);
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
}

type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Wall-clock milliseconds since the Unix epoch.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

/// Who acts, in which role, and why. Every audited call takes one.
#[derive(Debug, Clone)]
pub struct Context {
    pub actor: String,
    pub role: Role,
    pub purpose: String,
    /// What the capture side established about the probe of a comparison (the liveness
    /// stage's outcome), written into the comparison's audit record as `details.capture`.
    pub capture: Option<serde_json::Value>,
}

impl Context {
    pub fn new(actor: &str, role: Role, purpose: &str) -> Self {
        Context {
            actor: actor.to_string(),
            role,
            purpose: purpose.to_string(),
            capture: None,
        }
    }

    /// The same context with the probe's capture facts attached (see `capture`).
    pub fn with_capture(mut self, capture: serde_json::Value) -> Self {
        self.capture = Some(capture);
        self
    }

    /// Largest capture record kept with a comparison, serialised.
    pub const MAX_CAPTURE_BYTES: usize = 4096;

    /// Longest actor id and purpose kept in the audit log: both are free text from callers.
    pub const MAX_TEXT: usize = 256;

    /// A context every audited operation accepts: an actor, a bounded purpose.
    pub fn check(&self) -> Result<()> {
        if self.actor.trim().is_empty() || self.actor.chars().count() > Self::MAX_TEXT {
            return Err(GalleryError::Invalid(format!(
                "the actor must be 1-{} characters",
                Self::MAX_TEXT
            )));
        }
        if self.purpose.chars().count() > Self::MAX_TEXT {
            return Err(GalleryError::Invalid(format!(
                "the purpose is longer than {} characters",
                Self::MAX_TEXT
            )));
        }
        if let Some(c) = &self.capture {
            if c.to_string().len() > Self::MAX_CAPTURE_BYTES {
                return Err(GalleryError::Invalid(format!(
                    "the capture record is longer than {} bytes",
                    Self::MAX_CAPTURE_BYTES
                )));
            }
        }
        Ok(())
    }

    fn audit_actor(&self) -> Actor<'_> {
        Actor {
            id: &self.actor,
            role: self.role.as_str(),
            purpose: &self.purpose,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GalleryInfo {
    pub name: String,
    pub policy: Policy,
    pub dim: Option<usize>,
    pub metric: Option<Metric>,
    pub pack: Option<String>,
    pub created: String,
    pub subjects: u64,
    pub templates: u64,
    /// Past retention, not yet purged (never returned by searches).
    pub expired: u64,
    /// What the threshold is expected to give at this size, when the policy keeps a target FPIR
    /// (and so holds a model of the pack).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<template::tail::Expected>,
}

/// Options for one enrolment.
#[derive(Debug, Clone, Default)]
pub struct Enrolment {
    pub consent: Option<String>,
    /// Encrypted and kept only when the caller asks.
    pub image: Option<Vec<u8>>,
    /// Overrides the policy's retention (Unix ms); never later than the policy allows.
    pub expires_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnrolReceipt {
    pub gallery: String,
    pub pseudonym: String,
    pub templates: usize,
    pub expires: String,
    pub audit_seq: u64,
    /// Said to the enroller, e.g. that the gallery has outgrown what its pack can deliver at
    /// the policy's target FPIR (see `Policy::fpir_target`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubjectInfo {
    pub gallery: String,
    pub pseudonym: String,
    pub enrolled: String,
    pub expires: String,
    pub templates: usize,
    pub image_kept: bool,
    pub consent_recorded: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubjectVerification {
    #[serde(rename = "match")]
    pub matched: bool,
    pub score: f64,
    pub threshold: f64,
    pub metric: Metric,
    pub audit_seq: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub rank: usize,
    pub reference: String,
    pub pseudonym: String,
    /// In the gallery's metric (distance or similarity).
    pub score: f64,
    /// The cohort-normalised dissimilarity the decision was made on (policy `cohort`, once the
    /// gallery has a full cohort); lower is closer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Identification {
    pub gallery: String,
    pub metric: Metric,
    pub threshold: f64,
    /// Set when candidates were decided on the cohort z-threshold instead of `threshold`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort_z_threshold: Option<f64>,
    /// Candidates at or better than the threshold, best first; empty means "no match".
    pub candidates: Vec<Candidate>,
    pub searched_templates: usize,
    pub audit_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeletionReceipt {
    pub gallery: String,
    pub pseudonym: String,
    pub time: String,
    pub reason: String,
    pub audit_seq: u64,
    /// Ed25519 over the receipt fields (see `receipt_message`), by the audit key.
    pub signature: String,
    pub public_key: String,
}

fn receipt_message(r: &DeletionReceipt) -> Vec<u8> {
    format!(
        "facegate/deletion-receipt/v1\0{}\0{}\0{}\0{}\0{}",
        r.gallery, r.pseudonym, r.time, r.reason, r.audit_seq
    )
    .into_bytes()
}

/// Check a deletion receipt's signature (what a subject or auditor holding one would do).
pub fn verify_receipt(r: &DeletionReceipt) -> bool {
    let Some(key) = hex::decode(&r.public_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
    else {
        return false;
    };
    let Some(sig) = hex::decode(&r.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    else {
        return false;
    };
    use ed25519_dalek::Verifier;
    key.verify(
        &receipt_message(r),
        &ed25519_dalek::Signature::from_bytes(&sig),
    )
    .is_ok()
}

/// A loaded search index, its row id → pseudonym map (empty when rows name templates), and the
/// most templates any subject has.
type LoadedIndex = (Box<dyn SearchIndex>, IdMap<u64, [u8; 32]>, usize);

struct LoadedGallery {
    generation: i64,
    metric: Metric,
    index: Box<dyn SearchIndex>,
    /// Index row id (subject row id) → pseudonym. Empty for a compact index, whose row ids are
    /// template row ids resolved from storage with the candidates (48 bytes a subject saved).
    pseudonyms: IdMap<u64, [u8; 32]>,
    max_templates_per_subject: usize,
    memory_locked: bool,
}

pub struct Store {
    /// Where the `audit.head` mirror is written (the data directory).
    dir: PathBuf,
    backend: Box<dyn Backend>,
    wrapper: Box<dyn KeyWrapper>,
    pseudonym_key: SecretKey,
    signer: SigningKey,
    public_key: String,
    clock: Clock,
    transforms: Mutex<HashMap<String, Arc<OrthogonalTransform>>>,
    loaded: Mutex<HashMap<String, Arc<RwLock<LoadedGallery>>>>,
    /// Serialises writes of the `audit.head` mirror (see `audit::advance_head_file`).
    mirror: Mutex<()>,
    /// Why the last crash recovery could not finish (e.g. a full disk), while it has not: reads
    /// and searches go on, and every write retries it first.
    recovery: Mutex<Option<String>>,
    stats: LoadStats,
    /// One whole-gallery load at a time per gallery: two searches (or a search and the change
    /// feed's thread) that find an index they cannot follow would otherwise each build one, and
    /// hold two copies of the gallery in memory meanwhile (2 x 15.2 GB at 10^8 compact).
    loading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// Whole-gallery loads and followed changes, since the store opened.
#[derive(Default)]
struct LoadStats {
    reloads: std::sync::atomic::AtomicU64,
    followed: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Open the data directory, creating it (and its keys) on first use, on the embedded SQLite
    /// backend.
    pub fn open(dir: &Path, wrapper: Box<dyn KeyWrapper>, clock: Clock) -> Result<Store> {
        crate::files::secure_dir(dir)?;
        let backend = SqliteBackend::open(dir)?;
        Store::with_backend(dir, Box::new(backend), wrapper, clock)
    }

    /// The service over any backend; `dir` (private, local) holds the `audit.head` mirror.
    pub fn with_backend(
        dir: &Path,
        backend: Box<dyn Backend>,
        wrapper: Box<dyn KeyWrapper>,
        clock: Clock,
    ) -> Result<Store> {
        crate::files::secure_dir(dir)?;
        let (pseudonym_key, signer) = match backend.meta("format")? {
            None => {
                let pk = crypto::random_key()?;
                let sk = crypto::random_key()?;
                let signer = SigningKey::from_bytes(&sk);
                let mut tx = backend.write()?;
                tx.set_meta("format", &FORMAT.to_le_bytes())?;
                tx.set_meta(
                    "pseudonym_key",
                    &wrapper.wrap(b"facegate/pseudonym-key/v1", &pk)?,
                )?;
                tx.set_meta("audit_key", &wrapper.wrap(b"facegate/audit-key/v1", &sk)?)?;
                tx.set_meta("audit_public_key", signer.verifying_key().as_bytes())?;
                tx.commit()?;
                (pk, signer)
            }
            Some(f) => {
                if f != FORMAT.to_le_bytes() {
                    return Err(GalleryError::Invalid(
                        "unsupported data directory format".into(),
                    ));
                }
                let pk = wrapper.unwrap_key(
                    b"facegate/pseudonym-key/v1",
                    &backend
                        .meta("pseudonym_key")?
                        .ok_or_else(|| GalleryError::Key("pseudonym key missing".into()))?,
                )?;
                let sk = wrapper.unwrap_key(
                    b"facegate/audit-key/v1",
                    &backend
                        .meta("audit_key")?
                        .ok_or_else(|| GalleryError::Key("audit key missing".into()))?,
                )?;
                (pk, SigningKey::from_bytes(&sk))
            }
        };
        let public_key = hex::encode(signer.verifying_key().as_bytes());
        let store = Store {
            dir: dir.to_path_buf(),
            backend,
            wrapper,
            pseudonym_key,
            signer,
            public_key,
            clock,
            transforms: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            mirror: Mutex::new(()),
            recovery: Mutex::new(None),
            stats: LoadStats::default(),
            loading: Mutex::new(HashMap::new()),
        };
        // A recovery that cannot write (a full disk) must not lock the data directory: reads,
        // searches and audit verification work without it, and writes retry it.
        store.retry_recovery();
        Ok(store)
    }

    /// Whether `dir` holds an initialised store.
    pub fn exists(dir: &Path) -> bool {
        SqliteBackend::exists(dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn audit_public_key(&self) -> &str {
        &self.public_key
    }

    pub fn master_key_id(&self) -> String {
        self.wrapper.current_id()
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn keys(&self) -> &dyn KeyStore {
        self.backend.keys()
    }

    /// The keyed pseudonym of an already normalised reference (see `Store::subject_pseudonym`).
    pub fn pseudonym(&self, gallery: &str, reference: &str) -> [u8; 32] {
        crypto::pseudonym(&self.pseudonym_key, gallery, reference)
    }

    /// The pseudonym of a reference as a caller typed it: normalised by the gallery's rule
    /// first (`reference::normalise`), so every path finds the same subject.
    pub(super) fn subject_pseudonym(
        &self,
        info: &GalleryInfo,
        reference: &str,
    ) -> Result<[u8; 32]> {
        let r = crate::reference::normalise(reference, info.policy.reference_case)?;
        Ok(self.pseudonym(&info.name, &r))
    }
}

/// Verify a data directory's audit log with only its public key (no master key needed: auditors
/// run this). Checks the stored heads, the `audit.head` mirror and any anchors.
pub fn verify_dir(
    dir: &Path,
    pin: Option<&str>,
    anchors: &[(String, SignedHead)],
) -> Result<AuditReport> {
    if !Store::exists(dir) {
        return Err(GalleryError::NotInitialised(dir.to_path_buf()));
    }
    verify_log(&SqliteBackend::audit_log(dir)?, dir, pin, anchors)
}

/// Verify an audit log held by any backend, with the `audit.head` mirror kept in `mirror_dir`
/// (each node's own: it bounds the log's end as that node last saw it).
pub fn verify_log(
    log: &dyn AuditLog,
    mirror_dir: &Path,
    pin: Option<&str>,
    anchors: &[(String, SignedHead)],
) -> Result<AuditReport> {
    let stored = log
        .stored_public_key()?
        .ok_or_else(|| GalleryError::Audit("the audit public key is missing".into()))?;
    let stored = hex::encode(stored);
    let key = pin.map(str::to_string).unwrap_or_else(|| stored.clone());
    let mut external: Vec<(String, SignedHead)> = anchors.to_vec();
    let mirror = audit::read_head_file(&mirror_dir.join("audit.head"))?;
    let mirrored = mirror.is_some();
    if let Some(h) = mirror {
        external.push(("audit.head".into(), h));
    }
    let mut report = audit::verify(log, &key, &external)?;
    if !mirrored && report.records > 0 {
        report.warnings.push(if anchors.is_empty() {
            "audit.head is missing: with no anchor given, a cut of the newest records and their heads would not show (keep `audit head` output off this machine and pass it with --anchor)".into()
        } else {
            "audit.head is missing: only the anchors given bound the log's end".into()
        });
    }
    if pin.is_some_and(|p| p != stored) {
        report.ok = false;
        report.problems.insert(
            0,
            "the data directory's public key differs from the pinned key".into(),
        );
    }
    Ok(report)
}

/// Every audit record of a data directory (read-only; no keys needed).
pub fn export_dir(dir: &Path) -> Result<Vec<audit::AuditRecord>> {
    if !Store::exists(dir) {
        return Err(GalleryError::NotInitialised(dir.to_path_buf()));
    }
    audit::records(&SqliteBackend::audit_log(dir)?)
}
