//! The storage seam: what the gallery service needs from a database, and nothing of how.
//!
//! The service (`Store`) owns every decision — policy, roles, sealing, the audit chain, the order
//! of writes that crash recovery relies on. A backend only keeps rows: it never sees a key that
//! opens anything, a clear reference or a template (every blob it is handed is sealed), and it
//! reports failures as [`crate::GalleryError::Storage`], so no caller depends on which database holds a
//! gallery. [`sqlite`] is the embedded default; another engine is another module implementing
//! these traits.
//!
//! Two stores behind one backend, on purpose (see `Store`): the **record store** (galleries,
//! subjects, sealed templates and references, receipts, the audit log) and the **key store**
//! (one wrapped data key per subject, and the pending marks of crash recovery). Erasure destroys a
//! key in the key store; every copy of the record store then holds only ciphertext nobody can
//! open. A backend must keep them in separate files or databases so they are backed up apart.
//!
//! What a backend must guarantee:
//! - A [`WriteTxn`] is atomic and durable once `commit` returns (an acknowledged write survives
//!   power loss), and serialised against every other writer of the same record store, so the
//!   audit chain's tail read in a transaction is still the tail when it commits. Dropping it
//!   uncommitted rolls it back.
//! - [`KeyStore::scrub`] leaves no file (log, journal, free page) holding a key it deleted.
//! - A thread holding a [`WriteTxn`] makes no other call on the same backend until it ends (the
//!   embedded backend serialises on one connection per store; the service never nests them).
//! - Row ids (subjects, templates) are stable and never reused while a gallery is loaded (the
//!   in-memory index names rows by id).

use crate::error::Result;

pub mod postgres;
pub mod sqlite;

/// A gallery as stored.
pub struct GalleryRow {
    /// The policy, as JSON.
    pub policy: String,
    pub dim: Option<i64>,
    pub metric: Option<String>,
    pub pack: Option<String>,
    /// Unix ms.
    pub created: i64,
}

/// What the store holds about one subject, without opening anything.
pub struct SubjectRow {
    pub enrolled: i64,
    pub expires: i64,
    pub templates: i64,
    pub images: i64,
    pub consent: bool,
}

/// A new subject's row: the pseudonym and sealed blobs.
pub struct NewSubject<'a> {
    pub gallery: &'a str,
    pub pseudonym: &'a [u8],
    pub reference: &'a [u8],
    pub consent: Option<&'a [u8]>,
    pub enrolled: i64,
    pub expires: i64,
}

/// One sealed template with its subject's pseudonym and expiry.
pub struct StoredTemplate {
    pub id: i64,
    pub pseudonym: [u8; 32],
    pub expires: i64,
    pub sealed: Vec<u8>,
}

/// One sealed template joined with its subject's wrapped key (the compact index's load).
pub struct KeyedTemplate {
    pub id: i64,
    pub expires: i64,
    pub pseudonym: [u8; 32],
    pub wrapped: Vec<u8>,
    pub sealed: Vec<u8>,
}

/// A template fetched by id for re-scoring: its subject row, sealed bytes and pseudonym.
pub struct TemplateById {
    pub subject: i64,
    pub sealed: Vec<u8>,
    pub pseudonym: [u8; 32],
}

/// What one generation of a gallery did to its rows (`kind` "enrol" or "delete"), kept so that
/// other processes and nodes follow a change instead of reloading the gallery. Row ids only: no
/// pseudonym, nothing sealed.
pub struct ChangeRow {
    pub generation: i64,
    pub kind: String,
    pub subject: i64,
    pub templates: Vec<i64>,
}

/// Template ids as a change carries them in text: decimal, comma-separated.
pub(crate) fn ids_text(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// Generations of changes kept per gallery: a process further behind reloads the gallery.
pub const CHANGES_KEPT: i64 = 100_000;

/// A subject's sealed templates by row id, with what opening and indexing them needs.
pub struct SubjectTemplates {
    pub pseudonym: [u8; 32],
    pub expires: i64,
    /// (template row id, sealed template)
    pub templates: Vec<(i64, Vec<u8>)>,
}

/// Everything stored about one subject besides its templates, sealed as stored (a migration
/// copies it as it is).
pub struct SubjectRecord {
    pub reference: Vec<u8>,
    pub consent: Option<Vec<u8>>,
    pub enrolled: i64,
    pub expires: i64,
    pub images: Vec<Vec<u8>>,
}

/// Subjects and templates of a gallery at a moment.
pub struct GalleryCounts {
    pub subjects: u64,
    pub templates: u64,
    pub expired: u64,
}

/// A subject key, as listed for reconciliation and rotation.
pub struct KeyRow {
    pub gallery: String,
    pub pseudonym: Vec<u8>,
    pub wrapped: Vec<u8>,
    pub created: i64,
}

/// A pending mark: an enrolment or deletion that touched the key store and may not have reached
/// the record store (crash recovery reads these).
pub struct Mark {
    pub gallery: String,
    pub pseudonym: Vec<u8>,
    pub op: String,
    pub created: i64,
    /// The process that wrote the mark (0: unknown).
    pub pid: i64,
    /// Whether that process ran on this host, where its pid can be checked. A mark from another
    /// node of a shared database is never judged by pid: it is waited out (see recovery).
    pub here: bool,
}

/// Who holds a pending mark: its process id, and whether that process ran on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkOwner {
    pub pid: i64,
    pub here: bool,
}

/// A signed head as stored: (seq, hash, signature).
pub type HeadRow = (u64, Vec<u8>, Vec<u8>);

/// Notices of committed changes, from one connection that listens for them.
pub trait ChangeNotices: Send {
    /// Waits up to `timeout` for notices; returns the galleries they name (empty when none
    /// came). An error means the feed broke (its connection was lost): notices sent meanwhile
    /// are lost, so the caller catches up from the generations and opens a new feed.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<Vec<String>>;
}

/// The read side of the audit log (also all an auditor's verification needs: no keys).
pub trait AuditLog {
    /// The public key the log's heads are signed with, as stored.
    fn stored_public_key(&self) -> Result<Option<Vec<u8>>>;
    /// The newest signed head.
    fn last_head(&self) -> Result<Option<HeadRow>>;
    /// At most `limit` records from `from` on, in sequence order: (seq, stored text, hash).
    fn scan_records(
        &self,
        from: u64,
        limit: usize,
        each: &mut dyn FnMut(u64, String, Vec<u8>) -> Result<()>,
    ) -> Result<()>;
    /// Every signed head in sequence order: (seq, hash, signature).
    fn scan_heads(&self, each: &mut dyn FnMut(u64, Vec<u8>, Vec<u8>) -> Result<()>) -> Result<()>;
}

/// The record store and the key store of one deployment.
pub trait Backend: AuditLog + Send + Sync {
    /// A value kept under `key` in the record store's metadata (wrapped service keys, format).
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Begin a write transaction on the record store (see the module's guarantees).
    fn write(&self) -> Result<Box<dyn WriteTxn + '_>>;
    fn keys(&self) -> &dyn KeyStore;

    fn gallery_names(&self) -> Result<Vec<String>>;
    fn gallery(&self, name: &str) -> Result<Option<GalleryRow>>;
    /// The gallery's wrapped transform seed.
    fn gallery_seed(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Moves on every change that a loaded index must follow.
    fn generation(&self, name: &str) -> Result<Option<i64>>;
    /// A feed of notices that galleries' generations moved, sent by whoever commits the change
    /// (PostgreSQL's LISTEN/NOTIFY); `None` where the backend has none (SQLite: a change is found
    /// when the next search reads the generation).
    fn change_notices(&self) -> Result<Option<Box<dyn ChangeNotices>>> {
        Ok(None)
    }
    /// The recorded changes of generations `after + 1 ..= upto`, in generation order (a
    /// generation without a row changed something else: the follower reloads).
    fn changes_since(&self, gallery: &str, after: i64, upto: i64) -> Result<Vec<ChangeRow>>;
    /// A subject's templates by its row id; `None` once it is gone or of another gallery.
    fn subject_by_id(&self, gallery: &str, subject: i64) -> Result<Option<SubjectTemplates>>;
    /// Live (expires > now) and expired counts.
    fn counts(&self, gallery: &str, now: i64) -> Result<GalleryCounts>;
    fn has_subjects(&self, gallery: &str) -> Result<bool>;
    /// Every subject row of a gallery, expired ones included (one indexed count: the
    /// enrolment path of a gallery whose threshold follows its size asks it).
    fn subject_count(&self, gallery: &str) -> Result<u64>;
    fn subject_exists(&self, gallery: &str, pseudonym: &[u8]) -> Result<bool>;
    fn subject(&self, gallery: &str, pseudonym: &[u8]) -> Result<Option<SubjectRow>>;
    /// A subject's row as stored (sealed blobs as they are), by row id.
    fn subject_record(&self, subject: i64) -> Result<Option<SubjectRecord>>;
    /// A subject's sealed reference, by row id.
    fn subject_reference(&self, subject: i64) -> Result<Option<Vec<u8>>>;
    /// A live subject's sealed templates.
    fn subject_templates(&self, gallery: &str, pseudonym: &[u8], now: i64) -> Result<Vec<Vec<u8>>>;
    fn subject_image(&self, gallery: &str, pseudonym: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Pseudonyms of a gallery's subjects past retention.
    fn expired(&self, gallery: &str, now: i64) -> Result<Vec<Vec<u8>>>;
    /// Every subject of every gallery: (row id, gallery, pseudonym).
    fn all_subjects(&self) -> Result<Vec<(i64, String, Vec<u8>)>>;
    /// Every deletion receipt, in issue order, as stored (JSON).
    fn receipts(&self) -> Result<Vec<String>>;
    /// Every sealed template of a gallery, by template id.
    fn gallery_templates(&self, gallery: &str) -> Result<Vec<StoredTemplate>>;
    /// Templates by id, for re-scoring; `None` where the row is gone or of another gallery.
    fn templates_by_id(&self, gallery: &str, ids: &[u64]) -> Result<Vec<Option<TemplateById>>>;

    // Whole-gallery streams for loading an index: rows arrive in storage order (the cheapest
    // order to read), `each` returns false to stop early.

    /// A gallery's subjects: (row id, pseudonym, expires).
    fn scan_subjects(
        &self,
        gallery: &str,
        each: &mut dyn FnMut(i64, [u8; 32], i64) -> bool,
    ) -> Result<()>;
    /// (subject row id, sealed template) for the gallery's templates; a backend may include other
    /// galleries' rows where filtering would cost a join (the caller keeps only its subjects').
    fn scan_templates(
        &self,
        gallery: &str,
        each: &mut dyn FnMut(i64, Vec<u8>) -> bool,
    ) -> Result<()>;
    /// The gallery's template count and the most templates any one subject has.
    fn template_counts(&self, gallery: &str) -> Result<(u64, Option<u64>)>;
    /// Each template with its subject's wrapped key, streamed as one join of both stores.
    fn scan_keyed_templates(
        &self,
        gallery: &str,
        each: &mut dyn FnMut(KeyedTemplate) -> bool,
    ) -> Result<()>;
}

/// One write transaction on the record store. Every method acts inside it; nothing is visible to
/// others until [`WriteTxn::commit`]; dropped uncommitted, it rolls back.
pub trait WriteTxn {
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>>;
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()>;

    /// False when a gallery of that name exists.
    fn insert_gallery(
        &mut self,
        name: &str,
        policy: &str,
        seed: &[u8],
        created: i64,
    ) -> Result<bool>;
    fn set_policy(&mut self, name: &str, policy: &str) -> Result<()>;
    /// Fix the gallery's template kind (dimension, metric, pack).
    fn set_kind(&mut self, name: &str, dim: i64, metric: &str, pack: &str) -> Result<()>;
    fn set_seed(&mut self, name: &str, seed: &[u8]) -> Result<()>;
    /// Every gallery's wrapped seed: (name, seed).
    fn seeds(&mut self) -> Result<Vec<(String, Vec<u8>)>>;
    /// Move the gallery's generation on by one; returns the new generation.
    fn bump_generation(&mut self, name: &str) -> Result<i64>;
    /// Record what generation `generation` did (see [`ChangeRow`]); changes older than
    /// [`CHANGES_KEPT`] generations are dropped.
    fn record_change(
        &mut self,
        gallery: &str,
        generation: i64,
        kind: &str,
        subject: i64,
        templates: &[i64],
    ) -> Result<()>;

    /// The new subject's row id; `None` when the pseudonym is already in the gallery.
    fn insert_subject(&mut self, s: &NewSubject<'_>) -> Result<Option<i64>>;
    fn insert_template(&mut self, subject: i64, sealed: &[u8]) -> Result<i64>;
    /// Many subjects at once: their row ids in the order given (`None` where the pseudonym is
    /// already in the gallery). A backend that pays a round trip per statement writes them in
    /// one; the default inserts one by one.
    fn insert_subjects(&mut self, rows: &[NewSubject<'_>]) -> Result<Vec<Option<i64>>> {
        rows.iter().map(|r| self.insert_subject(r)).collect()
    }
    /// Many templates at once, (subject row id, sealed template): row ids in the order given,
    /// ascending within a subject as one-by-one inserts would give them.
    fn insert_templates(&mut self, rows: &[(i64, &[u8])]) -> Result<Vec<i64>> {
        rows.iter()
            .map(|(subject, sealed)| self.insert_template(*subject, sealed))
            .collect()
    }
    fn insert_image(&mut self, subject: i64, sealed: &[u8]) -> Result<()>;
    fn subject_id(&mut self, gallery: &str, pseudonym: &[u8]) -> Result<Option<i64>>;
    fn template_ids(&mut self, subject: i64) -> Result<Vec<i64>>;
    /// Deletes the subject with its templates and image.
    fn delete_subject(&mut self, subject: i64) -> Result<()>;
    fn gallery_templates(&mut self, gallery: &str) -> Result<Vec<StoredTemplate>>;
    fn update_template(&mut self, id: i64, sealed: &[u8]) -> Result<()>;
    fn insert_receipt(&mut self, receipt: &str) -> Result<()>;

    /// The chain's tail as of this transaction: (seq, hash).
    fn audit_tail(&mut self) -> Result<Option<(u64, Vec<u8>)>>;
    /// Append a record and its signed head.
    fn append_audit(&mut self, seq: u64, record: &str, hash: &[u8], sig: &[u8]) -> Result<()>;

    fn commit(self: Box<Self>) -> Result<()>;
}

/// The key store: wrapped per-subject keys and pending marks.
pub trait KeyStore: Send + Sync {
    fn write(&self) -> Result<Box<dyn KeyTxn + '_>>;
    fn wrapped(&self, gallery: &str, pseudonym: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Every wrapped key of a gallery: (pseudonym, wrapped).
    fn scan_wrapped(&self, gallery: &str, each: &mut dyn FnMut([u8; 32], Vec<u8>)) -> Result<()>;
    fn all_keys(&self) -> Result<Vec<KeyRow>>;
    fn marks(&self) -> Result<Vec<Mark>>;
    /// Make deleted keys unrecoverable from the store's files (called after each destruction).
    fn scrub(&self) -> Result<()>;
}

/// One write transaction on the key store.
pub trait KeyTxn {
    /// False when the subject already has a key.
    fn insert_key(
        &mut self,
        gallery: &str,
        pseudonym: &[u8],
        wrapped: &[u8],
        created: i64,
    ) -> Result<bool>;
    fn key_created(&mut self, gallery: &str, pseudonym: &[u8]) -> Result<Option<i64>>;
    fn replace_key(
        &mut self,
        gallery: &str,
        pseudonym: &[u8],
        wrapped: &[u8],
        created: i64,
    ) -> Result<()>;
    /// Deletes the key (only if created at `created`, when given).
    fn delete_key(&mut self, gallery: &str, pseudonym: &[u8], created: Option<i64>) -> Result<()>;
    fn all_keys(&mut self) -> Result<Vec<KeyRow>>;
    fn set_wrapped(&mut self, gallery: &str, pseudonym: &[u8], wrapped: &[u8]) -> Result<()>;
    fn mark(&mut self, mark: &Mark) -> Result<()>;
    /// Many keys of one gallery at once, (pseudonym, wrapped key, created): for each, whether it
    /// was inserted (false: a key for that pseudonym is there already, left as it is).
    fn insert_keys(&mut self, gallery: &str, rows: &[(&[u8], &[u8], i64)]) -> Result<Vec<bool>> {
        rows.iter()
            .map(|(ps, wrapped, created)| self.insert_key(gallery, ps, wrapped, *created))
            .collect()
    }
    /// Many pending marks at once (as [`KeyTxn::mark`] on each, in order).
    fn mark_all(&mut self, marks: &[Mark]) -> Result<()> {
        marks.iter().try_for_each(|m| self.mark(m))
    }
    /// The process that marked `op` for the subject, if marked.
    fn mark_owner(
        &mut self,
        gallery: &str,
        pseudonym: &[u8],
        op: &str,
    ) -> Result<Option<MarkOwner>>;
    fn unmark(&mut self, gallery: &str, pseudonym: &[u8], op: &str) -> Result<()>;
    fn commit(self: Box<Self>) -> Result<()>;
}
