//! The embedded gallery engine: SQLite for durable state, an in-memory exact index for search.
//!
//! Two database files under the data directory, on purpose:
//! - `store.db`: galleries, subjects (pseudonyms), sealed templates, sealed references, the audit
//!   log and deletion receipts. Safe to back up: without the keys it holds no biometric data.
//! - `keys.db`: one wrapped data key per subject. Deleting a subject destroys its row here (with
//!   SQLite's secure_delete and a WAL truncation), so every copy of `store.db` — backups
//!   included — loses that subject for good. Back up `keys.db` only within the retention window.

use crate::approx::{HnswIndex, HnswParams};
use crate::audit::{self, Actor, AuditEvent, AuditReport, SignedHead};
use crate::crypto::{self, KeyWrapper, SecretKey};
use crate::error::{GalleryError, Result};
use crate::index::{ExactIndex, SearchIndex, TemplateSource};
use crate::policy::{IndexChoice, Metric, Policy, Role};
use crate::transform::OrthogonalTransform;
use ed25519_dalek::{Signer, SigningKey};
use rayon::prelude::*;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use zeroize::Zeroizing;

const FORMAT: i64 = 1;
/// Keys whose subject row never appeared are removed after this long (a crash mid-enrolment);
/// the delay keeps a concurrent enrolment in another process safe.
const ORPHAN_KEY_AGE_MS: i64 = 3_600_000;

const STORE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS galleries (
  name TEXT PRIMARY KEY, policy TEXT NOT NULL, seed BLOB NOT NULL, dim INTEGER, metric TEXT,
  pack TEXT, created INTEGER NOT NULL, generation INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS subjects (
  id INTEGER PRIMARY KEY, gallery TEXT NOT NULL REFERENCES galleries(name), pseudonym BLOB NOT NULL,
  reference BLOB NOT NULL, consent BLOB, enrolled INTEGER NOT NULL, expires INTEGER NOT NULL,
  UNIQUE (gallery, pseudonym));
CREATE TABLE IF NOT EXISTS templates (
  id INTEGER PRIMARY KEY, subject INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
  sealed BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS templates_subject ON templates(subject);
CREATE TABLE IF NOT EXISTS images (
  id INTEGER PRIMARY KEY, subject INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
  sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS receipts (id INTEGER PRIMARY KEY, receipt TEXT NOT NULL);
";

const KEYS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subject_keys (
  gallery TEXT NOT NULL, pseudonym BLOB NOT NULL, wrapped BLOB NOT NULL, created INTEGER NOT NULL,
  PRIMARY KEY (gallery, pseudonym));
CREATE TABLE IF NOT EXISTS pending (
  gallery TEXT NOT NULL, pseudonym BLOB NOT NULL, op TEXT NOT NULL, created INTEGER NOT NULL,
  pid INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (gallery, pseudonym, op));
";

/// Bring a `keys.db` written by an older facegate up to the current schema, in place: a data
/// directory must survive an upgrade. (The `pending.pid` column came with crash recovery that
/// knows whether the enrolling process is alive; older marks get pid 0, "unknown".)
fn migrate_keys(keys: &Connection) -> Result<()> {
    let has_pid = keys
        .prepare("SELECT 1 FROM pragma_table_info('pending') WHERE name = 'pid'")?
        .exists([])?;
    if !has_pid {
        keys.execute_batch("ALTER TABLE pending ADD COLUMN pid INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
}

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

/// Whether the process that marked an enrolment could still be running it. On Linux, a process
/// id with no /proc entry is gone (its enrolment was interrupted); where /proc is absent, assume
/// it may run. (A reused pid errs on the safe side: it looks alive, and the hour-long orphan age
/// still ends the wait.)
fn enrolment_may_be_running(pid: i64) -> bool {
    if pid <= 0 || pid == std::process::id() as i64 {
        return pid > 0;
    }
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    proc.join(pid.to_string()).exists()
}

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
}

impl Context {
    pub fn new(actor: &str, role: Role, purpose: &str) -> Self {
        Context {
            actor: actor.to_string(),
            role,
            purpose: purpose.to_string(),
        }
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Identification {
    pub gallery: String,
    pub metric: Metric,
    pub threshold: f64,
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

/// policy, dim, metric, pack, created.
type GalleryRow = (String, Option<i64>, Option<String>, Option<String>, i64);

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
    dir: PathBuf,
    db: Mutex<Connection>,
    keys: Mutex<Connection>,
    wrapper: Box<dyn KeyWrapper>,
    pseudonym_key: SecretKey,
    signer: SigningKey,
    public_key: String,
    clock: Clock,
    transforms: Mutex<HashMap<String, Arc<OrthogonalTransform>>>,
    loaded: Mutex<HashMap<String, Arc<RwLock<LoadedGallery>>>>,
    /// Serialises writes of the `audit.head` mirror (see `audit::advance_head_file`).
    mirror: Mutex<()>,
}

/// Rows per chunk when a gallery loads: big enough to keep the decrypting threads busy, small
/// enough that the chunks in flight (two) are a few tens of megabytes.
const LOAD_CHUNK: usize = 32_768;

/// Runs `produce` on a reader thread of `sc`; the rows it emits arrive in chunks of `LOAD_CHUNK`
/// (the channel holds one chunk, so reading stays one chunk ahead of the consumer). The sink
/// returns false once the consumer has gone; an error ends the stream with that error.
fn chunked_reader<'scope, T: Send + 'scope>(
    sc: &'scope std::thread::Scope<'scope, '_>,
    produce: impl FnOnce(&mut dyn FnMut(T) -> bool) -> Result<()> + Send + 'scope,
) -> std::sync::mpsc::Receiver<Result<Vec<T>>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    sc.spawn(move || {
        let mut chunk = Vec::with_capacity(LOAD_CHUNK);
        let mut open = true;
        let done = produce(&mut |row| {
            chunk.push(row);
            if chunk.len() == LOAD_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK));
                open = tx.send(Ok(full)).is_ok();
            }
            open
        });
        let _ = tx.send(done.map(|()| chunk));
    });
    rx
}

/// Reusable buffers for opening many sealed templates of one gallery straight into f32 slices
/// (one per worker thread while a gallery loads): the associated data is rebuilt in place and
/// the plaintext zeroised after each template, so nothing is allocated per row.
struct TemplateOpener {
    aad: Vec<u8>,
    prefix: usize,
    plain: Zeroizing<Vec<u8>>,
}

impl TemplateOpener {
    fn new(gallery: &str, dim: usize) -> Self {
        let aad = aad("template", gallery, b"");
        TemplateOpener {
            prefix: aad.len(),
            aad,
            plain: Zeroizing::new(Vec::with_capacity(4 * dim + 16)),
        }
    }

    /// Opens subject `ps`'s sealed template into `out` (the gallery's dimension long).
    fn open(
        &mut self,
        dk: &SecretKey,
        ps: &[u8; 32],
        sealed: &[u8],
        out: &mut [f32],
    ) -> Result<()> {
        self.aad.truncate(self.prefix);
        self.aad.extend_from_slice(ps);
        crypto::open_into(dk, &self.aad, sealed, &mut self.plain)?;
        if self.plain.len() != 4 * out.len() {
            return Err(GalleryError::Decrypt(
                "template length differs from the gallery's".into(),
            ));
        }
        for (o, c) in out.iter_mut().zip(self.plain.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        zeroize::Zeroize::zeroize(&mut *self.plain);
        Ok(())
    }
}

/// One decrypted template with what is needed to seal it again.
struct OpenTemplate {
    id: i64,
    pseudonym: [u8; 32],
    expires: i64,
    template: Zeroizing<Vec<f32>>,
    key: SecretKey,
}

/// A compact index's candidates, decrypted from storage one by one (only the few rows whose
/// int8 bound reaches the top k). Remembers each template's subject for the result.
struct StoredTemplates<'a> {
    store: &'a Store,
    gallery: &'a str,
    resolved: Mutex<IdMap<u64, (i64, [u8; 32])>>,
}

impl<'a> StoredTemplates<'a> {
    fn new(store: &'a Store, gallery: &'a str) -> Self {
        StoredTemplates {
            store,
            gallery,
            resolved: Mutex::new(IdMap::default()),
        }
    }

    /// Template row id → (subject row id, pseudonym) for every template fetched.
    fn into_resolved(self) -> IdMap<u64, (i64, [u8; 32])> {
        self.resolved
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl TemplateSource for StoredTemplates<'_> {
    fn templates(&self, ids: &[u64]) -> Result<Vec<Option<Zeroizing<Vec<f32>>>>> {
        // (subject id, sealed template, pseudonym) per id; None when the row is gone.
        type Stored = Option<(i64, Vec<u8>, [u8; 32])>;
        let rows: Vec<Stored> = {
            let db = self.store.db();
            let mut st = db.prepare_cached(
                "SELECT t.subject, t.sealed, s.pseudonym FROM templates t JOIN subjects s ON s.id = t.subject
                 WHERE t.id = ?1 AND s.gallery = ?2",
            )?;
            ids.iter()
                .map(|id| {
                    st.query_row(params![*id as i64, self.gallery], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()
                })
                .collect::<std::result::Result<_, _>>()?
        };
        let mut keys: IdMap<i64, Option<SecretKey>> = IdMap::default();
        let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(ids.len());
        for (id, row) in ids.iter().zip(rows) {
            let Some((sid, sealed, ps)) = row else {
                out.push(None);
                continue;
            };
            let dk = match keys.entry(sid) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.store.subject_key(self.gallery, &ps)?)
                }
            };
            // Erased between the scan and now: the key is gone, so is the template.
            let Some(dk) = dk else {
                out.push(None);
                continue;
            };
            let plain = crypto::open(dk, &aad("template", self.gallery, &ps), &sealed)?;
            out.push(Some(Zeroizing::new(bytes_to_f32(&plain)?)));
            resolved.insert(*id, (sid, ps));
        }
        Ok(out)
    }
}

fn aad(kind: &str, gallery: &str, pseudonym: &[u8]) -> Vec<u8> {
    let mut a = format!("facegate/{kind}/v1\0{gallery}\0").into_bytes();
    a.extend_from_slice(pseudonym);
    a
}

fn open_db(path: &Path, schema: &str) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL: readers never block the writer; FULL: an acknowledged write survives power loss;
    // secure_delete: freed pages are zeroed, so deleted keys and ciphertexts do not linger.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    // Reads through mmap instead of read() copies: loading a gallery reads the whole file.
    conn.pragma_update(None, "mmap_size", 1i64 << 34)?;
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

/// Write transactions take the write lock up front (BEGIN IMMEDIATE): a deferred transaction that
/// reads and then writes cannot wait for another writer and fails with "database is locked".
trait WriteTx {
    fn write_tx(&self) -> rusqlite::Result<rusqlite::Transaction<'_>>;
}

impl WriteTx for Connection {
    fn write_tx(&self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        rusqlite::Transaction::new_unchecked(self, rusqlite::TransactionBehavior::Immediate)
    }
}

fn bytes_to_f32(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(GalleryError::Decrypt("template has a torn length".into()));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn f32_to_bytes(v: &[f32]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if n == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| (*x as f64 / n) as f32).collect()
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(GalleryError::Invalid(format!(
            "gallery name '{name}' must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

impl Store {
    /// Open the data directory, creating it (and its keys) on first use.
    pub fn open(dir: &Path, wrapper: Box<dyn KeyWrapper>, clock: Clock) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| GalleryError::io(dir, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let db = open_db(&dir.join("store.db"), STORE_SCHEMA)?;
        db.execute_batch(audit::SCHEMA)?;
        let keys = open_db(&dir.join("keys.db"), KEYS_SCHEMA)?;
        migrate_keys(&keys)?;
        let get = |k: &str| -> Result<Option<Vec<u8>>> {
            Ok(db
                .query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
                .optional()?)
        };
        let (pseudonym_key, signer) = match get("format")? {
            None => {
                let pk = crypto::random_key()?;
                let sk = crypto::random_key()?;
                let signer = SigningKey::from_bytes(&sk);
                let tx = db.write_tx()?;
                let put = |k: &str, v: &[u8]| {
                    tx.execute("INSERT INTO meta (k, v) VALUES (?1, ?2)", params![k, v])
                };
                put("format", &FORMAT.to_le_bytes())?;
                put(
                    "pseudonym_key",
                    &wrapper.wrap(b"facegate/pseudonym-key/v1", &pk)?,
                )?;
                put("audit_key", &wrapper.wrap(b"facegate/audit-key/v1", &sk)?)?;
                put("audit_public_key", signer.verifying_key().as_bytes())?;
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
                    &get("pseudonym_key")?
                        .ok_or_else(|| GalleryError::Key("pseudonym key missing".into()))?,
                )?;
                let sk = wrapper.unwrap_key(
                    b"facegate/audit-key/v1",
                    &get("audit_key")?
                        .ok_or_else(|| GalleryError::Key("audit key missing".into()))?,
                )?;
                (pk, SigningKey::from_bytes(&sk))
            }
        };
        let public_key = hex::encode(signer.verifying_key().as_bytes());
        let store = Store {
            dir: dir.to_path_buf(),
            db: Mutex::new(db),
            keys: Mutex::new(keys),
            wrapper,
            pseudonym_key,
            signer,
            public_key,
            clock,
            transforms: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            mirror: Mutex::new(()),
        };
        store.recover_pending()?;
        Ok(store)
    }

    /// Whether `dir` holds an initialised store.
    pub fn exists(dir: &Path) -> bool {
        dir.join("store.db").exists()
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

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finish or undo what a crash between the two databases interrupted. Every enrolment and
    /// deletion marks its subject in `keys.db`'s `pending` table before touching `store.db` and
    /// clears the mark after, so start-up only looks at marked subjects, not the whole gallery.
    fn recover_pending(&self) -> Result<()> {
        let marks: Vec<(String, Vec<u8>, String, i64, i64)> = {
            let keys = self.keys();
            let mut st =
                keys.prepare("SELECT gallery, pseudonym, op, created, pid FROM pending")?;
            let rows = st.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let now = self.now();
        for (g, p, op, created, pid) in marks {
            let in_store: bool = self.db().query_row(
                "SELECT EXISTS(SELECT 1 FROM subjects WHERE gallery = ?1 AND pseudonym = ?2)",
                params![g, p],
                |r| r.get(0),
            )?;
            let keys = self.keys();
            match (op.as_str(), in_store) {
                // Enrolment committed, or deletion never reached store.db: the key stays.
                ("enrol", true) | ("delete", true) => {}
                // Enrolment that never committed: drop its key once it is surely not in flight.
                ("enrol", false)
                    if now - created <= ORPHAN_KEY_AGE_MS && enrolment_may_be_running(pid) =>
                {
                    continue
                }
                ("enrol", false) | ("delete", false) => {
                    keys.execute(
                        "DELETE FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2",
                        params![g, p],
                    )?;
                }
                _ => {}
            }
            keys.execute(
                "DELETE FROM pending WHERE gallery = ?1 AND pseudonym = ?2 AND op = ?3",
                params![g, p, op],
            )?;
        }
        Ok(())
    }

    fn mark(&self, conn: &Connection, gallery: &str, ps: &[u8], op: &str, now: i64) -> Result<()> {
        conn.execute(
            "INSERT OR REPLACE INTO pending (gallery, pseudonym, op, created, pid) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![gallery, ps, op, now, std::process::id() as i64],
        )?;
        Ok(())
    }

    fn unmark(&self, gallery: &str, ps: &[u8], op: &str) {
        // Best effort: a mark left behind is only re-checked at the next start.
        let _ = self.keys().execute(
            "DELETE FROM pending WHERE gallery = ?1 AND pseudonym = ?2 AND op = ?3",
            params![gallery, ps, op],
        );
    }

    /// Full consistency sweep between the two databases (run by `purge`): subjects whose key is
    /// gone (e.g. an old `store.db` restored next to a newer `keys.db`) are deleted and audited;
    /// keys with no subject, older than an hour, are destroyed.
    pub fn reconcile(&self) -> Result<()> {
        let keyset: Vec<(String, Vec<u8>, i64)> = {
            let keys = self.keys();
            let mut st = keys.prepare("SELECT gallery, pseudonym, created FROM subject_keys")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let have: std::collections::HashSet<(String, Vec<u8>)> = keyset
            .iter()
            .map(|(g, p, _)| (g.clone(), p.clone()))
            .collect();
        let subjects: Vec<(i64, String, Vec<u8>)> = {
            let db = self.db();
            let mut st = db.prepare("SELECT id, gallery, pseudonym FROM subjects")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let now = self.now();
        let keyless: Vec<&(i64, String, Vec<u8>)> = subjects
            .iter()
            .filter(|(_, g, p)| !have.contains(&(g.clone(), p.clone())))
            .collect();
        if !keyless.is_empty() {
            let db = self.db();
            let tx = db.write_tx()?;
            for (id, g, p) in keyless {
                tx.execute("DELETE FROM subjects WHERE id = ?1", [id])?;
                tx.execute(
                    "UPDATE galleries SET generation = generation + 1 WHERE name = ?1",
                    [g],
                )?;
                audit::append(
                    &tx,
                    &self.signer,
                    &Actor {
                        id: "facegate",
                        role: "system",
                        purpose: "crash recovery",
                    },
                    now,
                    AuditEvent {
                        action: "delete".into(),
                        gallery: Some(g.clone()),
                        subject: Some(hex::encode(p)),
                        outcome: "completed after interruption (key already destroyed)".into(),
                        details: serde_json::Value::Null,
                    },
                )?;
            }
            tx.commit()?;
        }
        let subject_set: std::collections::HashSet<(String, Vec<u8>)> =
            subjects.into_iter().map(|(_, g, p)| (g, p)).collect();
        let keys = self.keys();
        for (g, p, created) in keyset {
            if !subject_set.contains(&(g.clone(), p.clone())) && now - created > ORPHAN_KEY_AGE_MS {
                keys.execute(
                    "DELETE FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2",
                    params![g, p],
                )?;
            }
        }
        Ok(())
    }

    fn audit_in(&self, conn: &Connection, ctx: &Context, ev: AuditEvent) -> Result<SignedHead> {
        audit::append(conn, &self.signer, &ctx.audit_actor(), self.now(), ev)
    }

    fn after_commit(&self, head: &SignedHead) {
        // The mirror is a second witness against truncation; failing to write it must not undo a
        // committed action, and the next write retries.
        let _order = self.mirror.lock().unwrap_or_else(|p| p.into_inner());
        let _ = audit::advance_head_file(&self.dir.join("audit.head"), head);
    }

    /// Record an action that changes nothing else (e.g. an export, a failed search).
    pub fn audit_event(&self, ctx: &Context, ev: AuditEvent) -> Result<u64> {
        let db = self.db();
        let tx = db.write_tx()?;
        let head = self.audit_in(&tx, ctx, ev)?;
        tx.commit()?;
        self.after_commit(&head);
        Ok(head.seq)
    }

    pub fn create_gallery(&self, ctx: &Context, name: &str, policy: &Policy) -> Result<()> {
        check_name(name)?;
        policy.validate()?;
        if ctx.role != Role::Admin && ctx.role != Role::Operator {
            return Err(GalleryError::Forbidden(
                "creating a gallery needs the admin or operator role".into(),
            ));
        }
        let seed = crypto::random_key()?;
        let wrapped = self.wrapper.wrap(&aad("gallery-seed", name, b""), &seed)?;
        let text =
            serde_json::to_string(policy).map_err(|e| GalleryError::Invalid(e.to_string()))?;
        let db = self.db();
        let tx = db.write_tx()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO galleries (name, policy, seed, created) VALUES (?1, ?2, ?3, ?4)",
            params![name, text, wrapped, self.now()],
        )?;
        if n == 0 {
            return Err(GalleryError::GalleryExists(name.into()));
        }
        let head = self.audit_in(
            &tx,
            ctx,
            AuditEvent {
                action: "gallery-create".into(),
                gallery: Some(name.into()),
                outcome: "created".into(),
                details: serde_json::to_value(policy).unwrap_or_default(),
                ..Default::default()
            },
        )?;
        tx.commit()?;
        self.after_commit(&head);
        Ok(())
    }

    /// Replace a gallery's policy (admin). `evidence` says why (e.g. a calibration's dataset and
    /// figures) and is kept in the audit record with the old and new policy.
    pub fn update_policy(
        &self,
        ctx: &Context,
        name: &str,
        policy: &Policy,
        evidence: Option<serde_json::Value>,
    ) -> Result<()> {
        policy.validate()?;
        if ctx.role != Role::Admin {
            return Err(GalleryError::Forbidden(
                "changing a policy needs the admin role".into(),
            ));
        }
        let old = self.gallery_meta(name)?.policy;
        let text =
            serde_json::to_string(policy).map_err(|e| GalleryError::Invalid(e.to_string()))?;
        let db = self.db();
        let tx = db.write_tx()?;
        tx.execute(
            "UPDATE galleries SET policy = ?1 WHERE name = ?2",
            params![text, name],
        )?;
        // Another search structure: every process rebuilds its loaded index.
        let rebuild = old.index != policy.index;
        if rebuild {
            tx.execute(
                "UPDATE galleries SET generation = generation + 1 WHERE name = ?1",
                [name],
            )?;
        }
        let head = self.audit_in(
            &tx,
            ctx,
            AuditEvent {
                action: "policy-change".into(),
                gallery: Some(name.into()),
                outcome: "changed".into(),
                details: match evidence {
                    Some(e) => serde_json::json!({ "from": old, "to": policy, "evidence": e }),
                    None => serde_json::json!({ "from": old, "to": policy }),
                },
                ..Default::default()
            },
        )?;
        tx.commit()?;
        self.after_commit(&head);
        drop(db);
        if rebuild {
            self.loaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
        }
        Ok(())
    }

    pub fn galleries(&self) -> Result<Vec<GalleryInfo>> {
        let names: Vec<String> = {
            let db = self.db();
            let mut st = db.prepare("SELECT name FROM galleries ORDER BY name")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        names.iter().map(|n| self.gallery(n)).collect()
    }

    /// Policy and template kind of a gallery, without counting anything (the hot path).
    fn gallery_meta(&self, name: &str) -> Result<GalleryInfo> {
        let db = self.db();
        let row: Option<GalleryRow> = db
            .query_row(
                "SELECT policy, dim, metric, pack, created FROM galleries WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let (policy, dim, metric, pack, created) =
            row.ok_or_else(|| GalleryError::UnknownGallery(name.into()))?;
        let policy: Policy = serde_json::from_str(&policy)
            .map_err(|e| GalleryError::Invalid(format!("stored policy: {e}")))?;
        Ok(GalleryInfo {
            name: name.into(),
            dim: dim.map(|d| d as usize),
            metric: metric.as_deref().map(Metric::parse).transpose()?,
            pack,
            created: audit::now_rfc3339(created),
            subjects: 0,
            templates: 0,
            expired: 0,
            policy,
        })
    }

    /// A gallery's policy, template kind and counts.
    pub fn gallery(&self, name: &str) -> Result<GalleryInfo> {
        let mut info = self.gallery_meta(name)?;
        let db = self.db();
        let now = self.now();
        let count = |sql: &str| -> Result<u64> {
            Ok(db.query_row(sql, params![name, now], |r| r.get::<_, i64>(0))? as u64)
        };
        info.subjects = count("SELECT COUNT(*) FROM subjects WHERE gallery = ?1 AND expires > ?2")?;
        info.templates = count(
            "SELECT COUNT(*) FROM templates t JOIN subjects s ON t.subject = s.id
             WHERE s.gallery = ?1 AND s.expires > ?2",
        )?;
        info.expired = count("SELECT COUNT(*) FROM subjects WHERE gallery = ?1 AND expires <= ?2")?;
        Ok(info)
    }

    fn transform(&self, gallery: &str, dim: usize) -> Result<Arc<OrthogonalTransform>> {
        let mut cache = self.transforms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cache.get(gallery) {
            if t.dim() == dim {
                return Ok(t.clone());
            }
        }
        let wrapped: Vec<u8> = self
            .db()
            .query_row(
                "SELECT seed FROM galleries WHERE name = ?1",
                [gallery],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| GalleryError::UnknownGallery(gallery.into()))?;
        let seed = self
            .wrapper
            .unwrap_key(&aad("gallery-seed", gallery, b""), &wrapped)?;
        let t = Arc::new(OrthogonalTransform::from_seed(&seed, dim));
        cache.insert(gallery.into(), t.clone());
        Ok(t)
    }

    fn protect(&self, gallery: &str, metric: Metric, x: &[f32]) -> Result<Vec<f32>> {
        let t = self.transform(gallery, x.len())?;
        Ok(match metric {
            Metric::Cosine => t.apply(&unit(x)),
            Metric::Euclidean => t.apply(x),
        })
    }

    pub fn pseudonym(&self, gallery: &str, reference: &str) -> [u8; 32] {
        crypto::pseudonym(&self.pseudonym_key, gallery, reference)
    }

    // The arguments are what an enrolment is (who, where, whom, what, of which kind, how); a
    // parameter struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    /// Enrol a subject with one or more templates. Returns once the enrolment and its audit record
    /// are durable.
    pub fn enroll(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
        templates: &[Vec<f32>],
        metric: Metric,
        pack: &str,
        opts: &Enrolment,
    ) -> Result<EnrolReceipt> {
        if !matches!(ctx.role, Role::Enroller | Role::Operator | Role::Admin) {
            return Err(GalleryError::Forbidden(
                "enrolment needs the enroller, operator or admin role".into(),
            ));
        }
        if reference.trim().is_empty() || reference.len() > 256 {
            return Err(GalleryError::Invalid(
                "subject reference must be 1-256 characters".into(),
            ));
        }
        if templates.is_empty() {
            return Err(GalleryError::Invalid("no template to enrol".into()));
        }
        let info = self.gallery_meta(gallery)?;
        let dim = info.dim.unwrap_or(templates[0].len());
        for t in templates {
            if t.len() != dim || dim == 0 {
                return Err(GalleryError::Dimension {
                    gallery: gallery.into(),
                    expected: dim,
                    got: t.len(),
                });
            }
            if t.iter().any(|v| !v.is_finite()) {
                return Err(GalleryError::Invalid(
                    "template holds a non-finite value".into(),
                ));
            }
        }
        if let Some(m) = info.metric {
            if m != metric {
                return Err(GalleryError::Invalid(format!(
                    "gallery '{gallery}' holds {} templates; these are {}",
                    m.as_str(),
                    metric.as_str()
                )));
            }
        }
        if let Some(p) = &info.pack {
            if p != pack {
                return Err(GalleryError::Invalid(format!(
                    "gallery '{gallery}' holds templates of model pack '{p}', not '{pack}'"
                )));
            }
        }
        let ps = self.pseudonym(gallery, reference);
        let now = self.now();
        let limit = now + info.policy.retention_days as i64 * 86_400_000;
        let expires = opts.expires_ms.map_or(limit, |e| e.min(limit));
        if expires <= now {
            return Err(GalleryError::Invalid("expiry is in the past".into()));
        }
        {
            let exists: bool = self.db().query_row(
                "SELECT EXISTS(SELECT 1 FROM subjects WHERE gallery = ?1 AND pseudonym = ?2)",
                params![gallery, &ps[..]],
                |r| r.get(0),
            )?;
            if exists {
                return Err(GalleryError::DuplicateSubject(gallery.into()));
            }
        }
        let dk = crypto::random_key()?;
        let wrapped = self.wrapper.wrap(&aad("subject-key", gallery, &ps), &dk)?;
        let protected: Vec<Vec<f32>> = templates
            .iter()
            .map(|t| self.protect(gallery, metric, t))
            .collect::<Result<_>>()?;
        let mut sealed = Vec::with_capacity(protected.len());
        for p in &protected {
            sealed.push(crypto::seal(
                &dk,
                &aad("template", gallery, &ps),
                &f32_to_bytes(p),
            )?);
        }
        let sealed_ref = crypto::seal(&dk, &aad("reference", gallery, &ps), reference.as_bytes())?;
        let sealed_consent = opts
            .consent
            .as_ref()
            .map(|c| crypto::seal(&dk, &aad("consent", gallery, &ps), c.as_bytes()))
            .transpose()?;
        let sealed_image = opts
            .image
            .as_ref()
            .map(|i| crypto::seal(&dk, &aad("image", gallery, &ps), i))
            .transpose()?;
        // Key first: a crash after this leaves an orphan key (removed later), never a subject
        // without a key.
        {
            let keys = self.keys();
            let tx = keys.write_tx()?;
            self.insert_key(&tx, gallery, &ps, &wrapped, now)?;
            self.mark(&tx, gallery, &ps, "enrol", now)?;
            tx.commit()?;
        }
        let result = (|| -> Result<(SignedHead, i64, Vec<i64>)> {
            let db = self.db();
            let tx = db.write_tx()?;
            tx.execute(
                "UPDATE galleries SET dim = ?2, metric = ?3, pack = ?4, generation = generation + 1 WHERE name = ?1",
                params![gallery, dim as i64, metric.as_str(), pack],
            )?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO subjects (gallery, pseudonym, reference, consent, enrolled, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![gallery, &ps[..], sealed_ref, sealed_consent, now, expires],
            )?;
            if inserted == 0 {
                return Err(GalleryError::DuplicateSubject(gallery.into()));
            }
            let sid = tx.last_insert_rowid();
            let mut tids = Vec::with_capacity(sealed.len());
            for s in &sealed {
                tx.execute(
                    "INSERT INTO templates (subject, sealed) VALUES (?1, ?2)",
                    params![sid, s],
                )?;
                tids.push(tx.last_insert_rowid());
            }
            if let Some(img) = &sealed_image {
                tx.execute(
                    "INSERT INTO images (subject, sealed) VALUES (?1, ?2)",
                    params![sid, img],
                )?;
            }
            let head = self.audit_in(
                &tx,
                ctx,
                AuditEvent {
                    action: "enrol".into(),
                    gallery: Some(gallery.into()),
                    subject: Some(hex::encode(ps)),
                    outcome: "enrolled".into(),
                    details: serde_json::json!({
                        "templates": sealed.len(),
                        "image_kept": sealed_image.is_some(),
                        "consent_recorded": sealed_consent.is_some(),
                        "expires": audit::now_rfc3339(expires),
                        "pack": pack,
                    }),
                },
            )?;
            tx.commit()?;
            Ok((head, sid, tids))
        })();
        let (head, sid, tids) = match result {
            Ok(r) => r,
            Err(e) => {
                if !matches!(e, GalleryError::DuplicateSubject(_)) {
                    let _ = self.keys().execute(
                        "DELETE FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2",
                        params![gallery, &ps[..]],
                    );
                }
                self.unmark(gallery, &ps, "enrol");
                return Err(e);
            }
        };
        self.unmark(gallery, &ps, "enrol");
        self.after_commit(&head);
        // Keep an already loaded index current without reloading it.
        if let Some(lg) = self.loaded_entry(gallery) {
            let mut lg = lg.write().unwrap_or_else(|p| p.into_inner());
            lg.generation += 1;
            if lg.index.is_compact() {
                for (p, tid) in protected.iter().zip(&tids) {
                    lg.index.push(*tid as u64, p, expires);
                }
            } else {
                for p in &protected {
                    lg.index.push(sid as u64, p, expires);
                }
                lg.pseudonyms.insert(sid as u64, ps);
            }
            lg.max_templates_per_subject = lg.max_templates_per_subject.max(protected.len());
        }
        Ok(EnrolReceipt {
            gallery: gallery.into(),
            pseudonym: hex::encode(ps),
            templates: sealed.len(),
            expires: audit::now_rfc3339(expires),
            audit_seq: head.seq,
        })
    }

    /// Enrol many subjects in one transaction per database (all or nothing): for migrations and
    /// bulk loads, where one fsync per subject would dominate. Each subject still gets its own key,
    /// its own audit record, and the same checks as `enroll`.
    pub fn enroll_batch(
        &self,
        ctx: &Context,
        gallery: &str,
        items: &[(String, Vec<Vec<f32>>)],
        metric: Metric,
        pack: &str,
    ) -> Result<Vec<EnrolReceipt>> {
        if !matches!(ctx.role, Role::Enroller | Role::Operator | Role::Admin) {
            return Err(GalleryError::Forbidden(
                "enrolment needs the enroller, operator or admin role".into(),
            ));
        }
        let info = self.gallery_meta(gallery)?;
        let Some(first) = items.first().and_then(|i| i.1.first()) else {
            return Ok(Vec::new());
        };
        let dim = info.dim.unwrap_or(first.len());
        if info.metric.is_some_and(|m| m != metric)
            || info.pack.as_deref().is_some_and(|p| p != pack)
        {
            return Err(GalleryError::Invalid(format!(
                "gallery '{gallery}' holds another pack's templates"
            )));
        }
        let now = self.now();
        let expires = now + info.policy.retention_days as i64 * 86_400_000;
        let transform = self.transform(gallery, dim)?;
        type Sealed = ([u8; 32], Vec<u8>, Vec<u8>, Vec<Vec<u8>>);
        let sealed: Vec<Sealed> = items
            .par_iter()
            .map(|(reference, templates)| {
                if reference.trim().is_empty() || reference.len() > 256 || templates.is_empty() {
                    return Err(GalleryError::Invalid(
                        "each subject needs a 1-256 character reference and a template".into(),
                    ));
                }
                let ps = self.pseudonym(gallery, reference);
                let dk = crypto::random_key()?;
                let wrapped = self.wrapper.wrap(&aad("subject-key", gallery, &ps), &dk)?;
                let sref =
                    crypto::seal(&dk, &aad("reference", gallery, &ps), reference.as_bytes())?;
                let mut ts = Vec::with_capacity(templates.len());
                for t in templates {
                    if t.len() != dim || t.iter().any(|v| !v.is_finite()) {
                        return Err(GalleryError::Dimension {
                            gallery: gallery.into(),
                            expected: dim,
                            got: t.len(),
                        });
                    }
                    let p = match metric {
                        Metric::Cosine => transform.apply(&unit(t)),
                        Metric::Euclidean => transform.apply(t),
                    };
                    ts.push(crypto::seal(
                        &dk,
                        &aad("template", gallery, &ps),
                        &f32_to_bytes(&p),
                    )?);
                }
                Ok((ps, wrapped, sref, ts))
            })
            .collect::<Result<_>>()?;
        {
            let keys = self.keys();
            let tx = keys.write_tx()?;
            // Any conflict fails the whole batch before anything is committed (the key transaction
            // rolls back when dropped).
            for (ps, wrapped, _, _) in &sealed {
                self.insert_key(&tx, gallery, ps, wrapped, now)?;
                self.mark(&tx, gallery, ps, "enrol", now)?;
            }
            tx.commit()?;
        }
        let result = (|| -> Result<(SignedHead, Vec<EnrolReceipt>)> {
            let db = self.db();
            let tx = db.write_tx()?;
            tx.execute(
                "UPDATE galleries SET dim = ?2, metric = ?3, pack = ?4, generation = generation + 1 WHERE name = ?1",
                params![gallery, dim as i64, metric.as_str(), pack],
            )?;
            let mut receipts = Vec::with_capacity(sealed.len());
            let mut head = None;
            {
                let mut ins_s = tx.prepare(
                    "INSERT OR IGNORE INTO subjects (gallery, pseudonym, reference, enrolled, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let mut ins_t =
                    tx.prepare("INSERT INTO templates (subject, sealed) VALUES (?1, ?2)")?;
                for (ps, _, sref, ts) in &sealed {
                    if ins_s.execute(params![gallery, &ps[..], sref, now, expires])? == 0 {
                        return Err(GalleryError::DuplicateSubject(gallery.into()));
                    }
                    let sid = tx.last_insert_rowid();
                    for t in ts {
                        ins_t.execute(params![sid, t])?;
                    }
                    let h = self.audit_in(
                        &tx,
                        ctx,
                        AuditEvent {
                            action: "enrol".into(),
                            gallery: Some(gallery.into()),
                            subject: Some(hex::encode(ps)),
                            outcome: "enrolled".into(),
                            details: serde_json::json!({"templates": ts.len(), "batch": true, "pack": pack,
                                "expires": audit::now_rfc3339(expires)}),
                        },
                    )?;
                    receipts.push(EnrolReceipt {
                        gallery: gallery.into(),
                        pseudonym: hex::encode(ps),
                        templates: ts.len(),
                        expires: audit::now_rfc3339(expires),
                        audit_seq: h.seq,
                    });
                    head = Some(h);
                }
            }
            tx.commit()?;
            head.map(|h| (h, receipts))
                .ok_or_else(|| GalleryError::Invalid("empty batch".into()))
        })();
        match result {
            Ok((head, receipts)) => {
                self.after_commit(&head);
                self.clear_marks(gallery, sealed.iter().map(|x| &x.0[..]), "enrol");
                // Loaded indexes reload on next use (the generation moved).
                Ok(receipts)
            }
            Err(e) => {
                let keys = self.keys();
                for (ps, _, _, _) in &sealed {
                    let _ = keys.execute(
                        "DELETE FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2 AND created = ?3",
                        params![gallery, &ps[..], now],
                    );
                }
                drop(keys);
                self.clear_marks(gallery, sealed.iter().map(|x| &x.0[..]), "enrol");
                Err(e)
            }
        }
    }

    /// Store a new subject key. Never overwrites a key in use: an existing subject is a duplicate;
    /// a key without a subject is either an enrolment in flight in another process (refused) or,
    /// past the orphan age, the leftover of a crash (replaced).
    fn insert_key(
        &self,
        tx: &Connection,
        gallery: &str,
        ps: &[u8],
        wrapped: &[u8],
        now: i64,
    ) -> Result<()> {
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO subject_keys (gallery, pseudonym, wrapped, created) VALUES (?1, ?2, ?3, ?4)",
            params![gallery, ps, wrapped, now],
        )?;
        if inserted == 1 {
            return Ok(());
        }
        let in_store: bool = self.db().query_row(
            "SELECT EXISTS(SELECT 1 FROM subjects WHERE gallery = ?1 AND pseudonym = ?2)",
            params![gallery, ps],
            |r| r.get(0),
        )?;
        if in_store {
            return Err(GalleryError::DuplicateSubject(gallery.into()));
        }
        let created: i64 = tx.query_row(
            "SELECT created FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2",
            params![gallery, ps],
            |r| r.get(0),
        )?;
        let owner: Option<i64> = tx
            .query_row(
                "SELECT pid FROM pending WHERE gallery = ?1 AND pseudonym = ?2 AND op = 'enrol'",
                params![gallery, ps],
                |r| r.get(0),
            )
            .optional()?;
        // The key belongs to an enrolment that may still commit (its process is alive, within the
        // hour): refuse rather than pull the key from under it.
        if now - created <= ORPHAN_KEY_AGE_MS && owner.is_some_and(enrolment_may_be_running) {
            return Err(GalleryError::Invalid(
                "an enrolment of this subject is in progress or was interrupted less than an hour ago".into(),
            ));
        }
        tx.execute(
            "UPDATE subject_keys SET wrapped = ?3, created = ?4 WHERE gallery = ?1 AND pseudonym = ?2",
            params![gallery, ps, wrapped, now],
        )?;
        Ok(())
    }

    fn clear_marks<'a>(&self, gallery: &str, pss: impl Iterator<Item = &'a [u8]>, op: &str) {
        let keys = self.keys();
        let Ok(tx) = keys.write_tx() else { return };
        for ps in pss {
            let _ = tx.execute(
                "DELETE FROM pending WHERE gallery = ?1 AND pseudonym = ?2 AND op = ?3",
                params![gallery, ps, op],
            );
        }
        let _ = tx.commit();
    }

    fn loaded_entry(&self, gallery: &str) -> Option<Arc<RwLock<LoadedGallery>>> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(gallery)
            .cloned()
    }

    fn generation(&self, gallery: &str) -> Result<i64> {
        self.db()
            .query_row(
                "SELECT generation FROM galleries WHERE name = ?1",
                [gallery],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| GalleryError::UnknownGallery(gallery.into()))
    }

    /// Decrypt a gallery's templates into memory (once; again only when another process changed it).
    fn load(&self, gallery: &str) -> Result<Arc<RwLock<LoadedGallery>>> {
        let generation = self.generation(gallery)?;
        if let Some(lg) = self.loaded_entry(gallery) {
            if lg.read().unwrap_or_else(|p| p.into_inner()).generation == generation {
                return Ok(lg);
            }
        }
        let info = self.gallery_meta(gallery)?;
        let metric = info.metric.unwrap_or(Metric::Euclidean);
        let dim = info.dim.unwrap_or(0);
        let (mut index, pseudonyms, max_templates_per_subject) = match info.policy.index {
            IndexChoice::Compact => {
                let (index, max) = self.load_compact(gallery, dim)?;
                (
                    Box::new(index) as Box<dyn SearchIndex>,
                    IdMap::default(),
                    max,
                )
            }
            IndexChoice::Exact => self.load_full(gallery, dim, None)?,
            IndexChoice::Hnsw(params) => self.load_full(gallery, dim, Some(params))?,
        };
        let memory_locked = index.lock_memory();
        let lg = Arc::new(RwLock::new(LoadedGallery {
            generation,
            metric,
            index,
            pseudonyms,
            max_templates_per_subject,
            memory_locked,
        }));
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(gallery.into(), lg.clone());
        Ok(lg)
    }

    /// An exact (f32 in memory) or HNSW index with the subject pseudonyms and the most templates
    /// any subject has: subjects and wrapped keys read into maps, each key unwrapped once, then
    /// the templates streamed and decrypted in chunks.
    fn load_full(
        &self,
        gallery: &str,
        dim: usize,
        hnsw_params: Option<HnswParams>,
    ) -> Result<LoadedIndex> {
        // Whole-gallery reads scan the tables in storage order (NOT INDEXED): going through the
        // (gallery, pseudonym) index would cost one random table seek per row.
        // The subjects and the wrapped keys are read at the same time (separate connections).
        let (wrapped, subjects) = std::thread::scope(|sc| {
            let keys_reader = sc.spawn(|| self.wrapped_keys(gallery));
            let subjects = (|| -> Result<IdMap<i64, ([u8; 32], i64)>> {
                let db = self.db();
                let mut st = db.prepare(
                    "SELECT id, pseudonym, expires FROM subjects NOT INDEXED WHERE gallery = ?1",
                )?;
                let mut q = st.query([gallery])?;
                let mut out = IdMap::default();
                while let Some(r) = q.next()? {
                    let ps: [u8; 32] = r.get(1)?;
                    out.insert(r.get(0)?, (ps, r.get(2)?));
                }
                Ok(out)
            })();
            let wrapped = keys_reader
                .join()
                .map_err(|_| GalleryError::Invalid("key reader thread panicked".into()))?;
            Ok::<_, GalleryError>((wrapped?, subjects?))
        })?;
        // Unwrap each subject's key once, in parallel. A subject without a key has been erased:
        // it is skipped, not an error.
        let subject_list: Vec<(i64, [u8; 32])> =
            subjects.iter().map(|(id, (ps, _))| (*id, *ps)).collect();
        let dks: IdMap<i64, SecretKey> = subject_list
            .par_iter()
            .filter_map(|(sid, ps)| {
                let w = wrapped.get(ps)?;
                Some(
                    self.wrapper
                        .unwrap_key(&aad("subject-key", gallery, ps), w)
                        .map(|k| (*sid, k)),
                )
            })
            .collect::<Result<_>>()?;
        drop(wrapped);
        // Templates stream from storage in chunks: one thread reads the next chunk while the
        // others decrypt the current one straight into a flat, zeroised-on-drop buffer. No copy
        // of the whole sealed gallery is ever held.
        let mut pseudonyms: IdMap<u64, [u8; 32]> =
            IdMap::with_capacity_and_hasher(subjects.len(), Default::default());
        let mut per_subject: IdMap<i64, usize> =
            IdMap::with_capacity_and_hasher(subjects.len(), Default::default());
        let mut exact = ExactIndex::new(dim);
        if hnsw_params.is_none() {
            exact.reserve(subjects.len());
        }
        // Only the HNSW build needs every template at once.
        let mut all: Zeroizing<Vec<f32>> = Zeroizing::new(Vec::new());
        let mut all_rows: Vec<(u64, i64)> = Vec::new();
        std::thread::scope(|sc| -> Result<()> {
            type Sealed = (i64, Vec<u8>);
            let rx = chunked_reader::<Sealed>(sc, move |sink| {
                let db = self.db();
                let mut st = db.prepare("SELECT subject, sealed FROM templates")?;
                let mut q = st.query([])?;
                while let Some(r) = q.next()? {
                    if !sink((r.get(0)?, r.get(1)?)) {
                        break;
                    }
                }
                Ok(())
            });
            type Decrypted = (Vec<Sealed>, Vec<bool>, Zeroizing<Vec<f32>>);
            let (btx, brx) = std::sync::mpsc::sync_channel::<Decrypted>(1);
            let (subjects, exact, pseudonyms, per_subject, all, all_rows) = (
                &subjects,
                &mut exact,
                &mut pseudonyms,
                &mut per_subject,
                &mut all,
                &mut all_rows,
            );
            let hnsw = hnsw_params.is_some();
            let builder = sc.spawn(move || {
                for (chunk, ok, flat) in brx {
                    for (k, ((sid, _), ok)) in chunk.iter().zip(&ok).enumerate() {
                        if !*ok {
                            continue;
                        }
                        let Some((ps, exp)) = subjects.get(sid) else {
                            continue;
                        };
                        *per_subject.entry(*sid).or_default() += 1;
                        let v = &flat[k * dim..(k + 1) * dim];
                        pseudonyms.insert(*sid as u64, *ps);
                        if hnsw {
                            all.extend_from_slice(v);
                            all_rows.push((*sid as u64, *exp));
                        } else {
                            exact.push(*sid as u64, v, *exp);
                        }
                    }
                }
            });
            for chunk in rx {
                let chunk = chunk?;
                let mut flat: Zeroizing<Vec<f32>> = Zeroizing::new(vec![0f32; chunk.len() * dim]);
                let ok: Vec<bool> = chunk
                    .par_iter()
                    .zip(flat.par_chunks_mut(dim.max(1)))
                    .map_init(
                        || TemplateOpener::new(gallery, dim),
                        |opener, ((sid, sealed), out)| -> Result<bool> {
                            let (Some(dk), Some((ps, _))) = (dks.get(sid), subjects.get(sid))
                            else {
                                return Ok(false);
                            };
                            opener.open(dk, ps, sealed, out)?;
                            Ok(true)
                        },
                    )
                    .collect::<Result<_>>()?;
                // The index is built on its own thread while the next chunk decrypts.
                if btx.send((chunk, ok, flat)).is_err() {
                    break;
                }
            }
            drop(btx);
            builder
                .join()
                .map_err(|_| GalleryError::Invalid("index builder thread panicked".into()))?;
            Ok(())
        })?;
        let index: Box<dyn SearchIndex> = match hnsw_params {
            None => Box::new(exact),
            Some(params) => {
                let mut h = HnswIndex::new(dim, params, all_rows.len());
                let rows: Vec<(u64, &[f32], i64)> = all_rows
                    .iter()
                    .enumerate()
                    .map(|(k, (id, e))| (*id, &all[k * dim..(k + 1) * dim], *e))
                    .collect();
                h.extend(&rows);
                Box::new(h)
            }
        };
        drop(all);
        let max_per_subject = per_subject.values().copied().max().unwrap_or(1);
        Ok((index, pseudonyms, max_per_subject))
    }

    /// A compact index, built from one streaming join of templates, subjects and wrapped keys:
    /// no whole-gallery map is ever held, so loading 10^8 templates needs little more memory than
    /// the index itself (156 bytes a 128-D template). Each template's key is unwrapped on its own
    /// (one extra AEAD per template) instead of once per subject through a map.
    fn load_compact(&self, gallery: &str, dim: usize) -> Result<(ExactIndex, usize)> {
        let conn = Connection::open_with_flags(
            self.dir.join("store.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "mmap_size", 1i64 << 34)?;
        let keys_uri = format!(
            "file:{}?mode=ro",
            self.dir
                .join("keys.db")
                .to_str()
                .ok_or_else(|| GalleryError::Invalid("data directory path is not UTF-8".into()))?
                .replace('%', "%25")
                .replace('?', "%3f")
                .replace('#', "%23")
        );
        conn.execute("ATTACH DATABASE ?1 AS k", [keys_uri])?;
        conn.pragma_update(Some("k"), "mmap_size", 1i64 << 34)?;
        // Exact sizes first: the index reserves once (growing by doubling could need twice the
        // memory at 10^8).
        let (templates, max_per_subject): (i64, Option<i64>) = conn.query_row(
            "SELECT COALESCE(SUM(c), 0), MAX(c) FROM (SELECT COUNT(*) AS c FROM templates t
             JOIN subjects s ON s.id = t.subject WHERE s.gallery = ?1 GROUP BY t.subject)",
            [gallery],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut index = ExactIndex::compact(dim);
        index.reserve(templates.max(0) as usize);
        type Row = (i64, i64, [u8; 32], Vec<u8>, Vec<u8>);
        std::thread::scope(|sc| -> Result<()> {
            let rx = chunked_reader::<Row>(sc, move |sink| {
                let mut st = conn.prepare(
                        // CROSS JOIN fixes the order: templates in storage order, each
                        // subject by primary key (nearly sequential, enrolled together), then
                        // the key by index. SQLite's own choice (subjects by the gallery index,
                        // in pseudonym order) seeks randomly everywhere: 2-3x slower.
                        "SELECT t.id, s.expires, s.pseudonym, sk.wrapped, t.sealed
                         FROM templates t CROSS JOIN subjects s ON s.id = t.subject
                         CROSS JOIN k.subject_keys sk ON sk.gallery = s.gallery AND sk.pseudonym = s.pseudonym
                         WHERE s.gallery = ?1",
                    )?;
                let mut q = st.query([gallery])?;
                while let Some(r) = q.next()? {
                    if !sink((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)) {
                        break;
                    }
                }
                Ok(())
            });
            let key_aad = aad("subject-key", gallery, b"");
            for chunk in rx {
                let chunk = chunk?;
                let mut flat: Zeroizing<Vec<f32>> = Zeroizing::new(vec![0f32; chunk.len() * dim]);
                chunk
                    .par_iter()
                    .zip(flat.par_chunks_mut(dim.max(1)))
                    .try_for_each_init(
                        || (key_aad.clone(), TemplateOpener::new(gallery, dim)),
                        |(ka, opener), ((_, _, ps, wrapped, sealed), out)| -> Result<()> {
                            ka.truncate(key_aad.len());
                            ka.extend_from_slice(ps);
                            let dk = self.wrapper.unwrap_key(ka, wrapped)?;
                            opener.open(&dk, ps, sealed, out)
                        },
                    )?;
                for (k, (tid, expires, _, _, _)) in chunk.iter().enumerate() {
                    index.push(*tid as u64, &flat[k * dim..(k + 1) * dim], *expires);
                }
            }
            Ok(())
        })?;
        Ok((index, max_per_subject.unwrap_or(1).max(1) as usize))
    }

    /// Load a gallery's templates into memory now (servers do this at start-up).
    /// Returns (templates, memory bytes, whether the memory is locked against swap).
    pub fn preload(&self, gallery: &str) -> Result<(usize, usize, bool)> {
        let lg = self.load(gallery)?;
        let lg = lg.read().unwrap_or_else(|p| p.into_inner());
        Ok((lg.index.len(), lg.index.memory_bytes(), lg.memory_locked))
    }

    fn check_search(&self, ctx: &Context, info: &GalleryInfo) -> Result<()> {
        if ctx.purpose.trim().is_empty() {
            return Err(GalleryError::Invalid(
                "a search must state its purpose".into(),
            ));
        }
        if !info.policy.search_roles.contains(&ctx.role) {
            return Err(GalleryError::Forbidden(format!(
                "role '{}' may not search gallery '{}'",
                ctx.role.as_str(),
                info.name
            )));
        }
        Ok(())
    }

    /// Every template of a gallery that still has its subject key, decrypted (for rekeying and
    /// export; `load` streams instead, to keep a big gallery's peak memory down).
    fn open_templates(
        &self,
        conn: &Connection,
        gallery: &str,
        wrapped: &IdMap<[u8; 32], Vec<u8>>,
    ) -> Result<Vec<OpenTemplate>> {
        let rows: Vec<(i64, [u8; 32], i64, Vec<u8>)> = {
            let mut st = conn.prepare(
                "SELECT t.id, s.pseudonym, s.expires, t.sealed FROM templates t JOIN subjects s ON t.subject = s.id
                 WHERE s.gallery = ?1 ORDER BY t.id",
            )?;
            let rows = st.query_map([gallery], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        rows.par_iter()
            .filter_map(|(id, ps, expires, sealed)| {
                // No key: erased, and so is the template.
                let w = wrapped.get(ps)?;
                Some((|| {
                    let key = self
                        .wrapper
                        .unwrap_key(&aad("subject-key", gallery, ps), w)?;
                    let plain = crypto::open(&key, &aad("template", gallery, ps), sealed)?;
                    Ok(OpenTemplate {
                        id: *id,
                        pseudonym: *ps,
                        expires: *expires,
                        template: Zeroizing::new(bytes_to_f32(&plain)?),
                        key,
                    })
                })())
            })
            .collect()
    }

    /// Every wrapped subject key of a gallery, by pseudonym (for loading and rekeying).
    fn wrapped_keys(&self, gallery: &str) -> Result<IdMap<[u8; 32], Vec<u8>>> {
        let keys = self.keys();
        // A table scan in storage order: through the (gallery, pseudonym) index every row would
        // cost a random seek.
        let mut st = keys.prepare(
            "SELECT pseudonym, wrapped FROM subject_keys NOT INDEXED WHERE gallery = ?1",
        )?;
        let mut q = st.query([gallery])?;
        let mut out = IdMap::default();
        while let Some(r) = q.next()? {
            let ps: [u8; 32] = r.get(0)?;
            out.insert(ps, r.get(1)?);
        }
        Ok(out)
    }

    /// A subject's data key, unwrapped; `None` once it has been destroyed (erased) or if the
    /// subject never existed.
    fn subject_key(&self, gallery: &str, ps: &[u8; 32]) -> Result<Option<SecretKey>> {
        let wrapped: Option<Vec<u8>> = self
            .keys()
            .query_row(
                "SELECT wrapped FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2",
                params![gallery, &ps[..]],
                |r| r.get(0),
            )
            .optional()?;
        wrapped
            .map(|w| {
                self.wrapper
                    .unwrap_key(&aad("subject-key", gallery, ps), &w)
            })
            .transpose()
    }

    fn reference_of(&self, gallery: &str, sid: i64, ps: &[u8; 32]) -> Result<String> {
        let dk = self
            .subject_key(gallery, ps)?
            .ok_or_else(|| GalleryError::UnknownSubject(gallery.into()))?;
        let sealed: Vec<u8> = self
            .db()
            .query_row("SELECT reference FROM subjects WHERE id = ?1", [sid], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| GalleryError::UnknownSubject(gallery.into()))?;
        let plain = crypto::open(&dk, &aad("reference", gallery, ps), &sealed)?;
        String::from_utf8(plain.to_vec())
            .map_err(|_| GalleryError::Decrypt("reference is not UTF-8".into()))
    }

    /// Open-set 1:N search. `threshold` overrides the policy's (which overrides the pack default
    /// `default_threshold`). The probe is never stored; the audit record holds only pseudonyms.
    pub fn identify(
        &self,
        ctx: &Context,
        gallery: &str,
        probe: &[f32],
        k: Option<usize>,
        default_threshold: f64,
    ) -> Result<Identification> {
        let info = self.gallery_meta(gallery)?;
        self.check_search(ctx, &info)?;
        let threshold = info.policy.threshold.unwrap_or(default_threshold);
        let k = k
            .unwrap_or(info.policy.max_candidates)
            .min(info.policy.max_candidates);
        let (metric, dim) = match (info.metric, info.dim) {
            (Some(m), Some(d)) => (m, d),
            _ => {
                let seq = self.audit_event(
                    ctx,
                    AuditEvent {
                        action: "identify".into(),
                        gallery: Some(gallery.into()),
                        outcome: "no-match".into(),
                        details: serde_json::json!({"searched": 0, "threshold": threshold}),
                        ..Default::default()
                    },
                )?;
                return Ok(Identification {
                    gallery: gallery.into(),
                    metric: info.metric.unwrap_or(Metric::Euclidean),
                    threshold,
                    candidates: vec![],
                    searched_templates: 0,
                    audit_seq: seq,
                });
            }
        };
        if probe.len() != dim {
            return Err(GalleryError::Dimension {
                gallery: gallery.into(),
                expected: dim,
                got: probe.len(),
            });
        }
        let q = self.protect(gallery, metric, probe)?;
        let q2: f64 = q.iter().map(|v| (*v as f64).powi(2)).sum();
        // The index ranks by s = q·x − |x|²/2; turn the threshold into a floor on s.
        let floor = match metric {
            Metric::Euclidean => ((q2 - threshold * threshold) / 2.0) as f32,
            Metric::Cosine => (threshold - 0.5) as f32,
        };
        let now = self.now();
        let lg = self.load(gallery)?;
        let (hits, searched) = {
            let lg = lg.read().unwrap_or_else(|p| p.into_inner());
            let kk = k * lg.max_templates_per_subject.max(1);
            // Only a compact index asks the source for anything.
            let source = StoredTemplates::new(self, gallery);
            let found = lg.index.search(&[&q[..]], kk, Some(floor), now, &source)?;
            let hits = found.into_iter().next().unwrap_or_default();
            // A compact index names templates: their subjects came back with the templates.
            let resolved = source.into_resolved();
            let mut seen = std::collections::HashSet::new();
            let mut best = Vec::new();
            for mut h in hits {
                let ps = match resolved.get(&h.id) {
                    Some((sid, ps)) => {
                        h.id = *sid as u64;
                        Some(*ps)
                    }
                    None => lg.pseudonyms.get(&h.id).copied(),
                };
                if seen.insert(h.id) {
                    let score = match lg.metric {
                        Metric::Euclidean => (q2 - 2.0 * h.score as f64).max(0.0).sqrt(),
                        Metric::Cosine => h.dot as f64,
                    };
                    if metric.is_match(score, threshold) {
                        best.push((h.id, ps.unwrap_or([0; 32]), score));
                    }
                }
                if best.len() == k {
                    break;
                }
            }
            (best, lg.index.len())
        };
        let mut candidates = Vec::with_capacity(hits.len());
        for (rank, (sid, ps, score)) in hits.iter().enumerate() {
            candidates.push(Candidate {
                rank: rank + 1,
                reference: self.reference_of(gallery, *sid as i64, ps)?,
                pseudonym: hex::encode(ps),
                score: *score,
            });
        }
        let seq = self.audit_event(
            ctx,
            AuditEvent {
                action: "identify".into(),
                gallery: Some(gallery.into()),
                subject: candidates.first().map(|c| c.pseudonym.clone()),
                outcome: if candidates.is_empty() { "no-match" } else { "match" }.into(),
                details: serde_json::json!({
                    "searched": searched,
                    "threshold": threshold,
                    "candidates": candidates.iter().map(|c| serde_json::json!({"pseudonym": c.pseudonym, "score": c.score})).collect::<Vec<_>>(),
                }),
            },
        )?;
        Ok(Identification {
            gallery: gallery.into(),
            metric,
            threshold,
            candidates,
            searched_templates: searched,
            audit_seq: seq,
        })
    }

    /// What the store holds about one subject (no biometric data): for operators and for checks
    /// that an acknowledged enrolment is there. Expired subjects are reported as unknown.
    pub fn subject(&self, gallery: &str, reference: &str) -> Result<SubjectInfo> {
        self.gallery_meta(gallery)?;
        let ps = self.pseudonym(gallery, reference);
        let db = self.db();
        let row: Option<(i64, i64, i64, i64, i64)> = db
            .query_row(
                "SELECT s.enrolled, s.expires, (SELECT COUNT(*) FROM templates t WHERE t.subject = s.id),
                        (SELECT COUNT(*) FROM images i WHERE i.subject = s.id), s.consent IS NOT NULL
                 FROM subjects s WHERE s.gallery = ?1 AND s.pseudonym = ?2",
                params![gallery, &ps[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        match row {
            Some((enrolled, expires, templates, images, consent)) if expires > self.now() => {
                Ok(SubjectInfo {
                    gallery: gallery.into(),
                    pseudonym: hex::encode(ps),
                    enrolled: audit::now_rfc3339(enrolled),
                    expires: audit::now_rfc3339(expires),
                    templates: templates as usize,
                    image_kept: images > 0,
                    consent_recorded: consent != 0,
                })
            }
            _ => Err(GalleryError::UnknownSubject(gallery.into())),
        }
    }

    /// 1:1 against an enrolled subject (e.g. a gate with a token naming the traveller): the best
    /// score over the subject's templates, decided at the gallery's threshold. Audited like a search.
    pub fn verify_subject(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
        probe: &[f32],
        default_threshold: f64,
    ) -> Result<SubjectVerification> {
        let info = self.gallery_meta(gallery)?;
        self.check_search(ctx, &info)?;
        let (metric, dim) = match (info.metric, info.dim) {
            (Some(m), Some(d)) => (m, d),
            _ => return Err(GalleryError::UnknownSubject(gallery.into())),
        };
        if probe.len() != dim {
            return Err(GalleryError::Dimension {
                gallery: gallery.into(),
                expected: dim,
                got: probe.len(),
            });
        }
        let threshold = info.policy.threshold.unwrap_or(default_threshold);
        let ps = self.pseudonym(gallery, reference);
        let now = self.now();
        let sealed: Vec<Vec<u8>> = {
            let db = self.db();
            let mut st = db.prepare(
                "SELECT t.sealed FROM templates t JOIN subjects s ON t.subject = s.id
                 WHERE s.gallery = ?1 AND s.pseudonym = ?2 AND s.expires > ?3",
            )?;
            let rows = st.query_map(params![gallery, &ps[..], now], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let dk = self.subject_key(gallery, &ps)?;
        let (Some(dk), false) = (dk, sealed.is_empty()) else {
            self.audit_event(
                ctx,
                AuditEvent {
                    action: "verify".into(),
                    gallery: Some(gallery.into()),
                    subject: Some(hex::encode(ps)),
                    outcome: "unknown-subject".into(),
                    details: serde_json::Value::Null,
                },
            )?;
            return Err(GalleryError::UnknownSubject(gallery.into()));
        };
        let q = self.protect(gallery, metric, probe)?;
        let mut best: Option<f64> = None;
        for b in &sealed {
            let x = bytes_to_f32(&crypto::open(&dk, &aad("template", gallery, &ps), b)?)?;
            let score = match metric {
                Metric::Euclidean => q
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>()
                    .sqrt(),
                Metric::Cosine => q
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>(),
            };
            best = Some(match best {
                None => score,
                Some(s) if metric.is_match(score, s) => score,
                Some(s) => s,
            });
        }
        let score = best.unwrap_or(f64::NAN);
        let matched = metric.is_match(score, threshold);
        let seq = self.audit_event(
            ctx,
            AuditEvent {
                action: "verify".into(),
                gallery: Some(gallery.into()),
                subject: Some(hex::encode(ps)),
                outcome: if matched { "match" } else { "no-match" }.into(),
                details: serde_json::json!({"score": score, "threshold": threshold}),
            },
        )?;
        Ok(SubjectVerification {
            matched,
            score,
            threshold,
            metric,
            audit_seq: seq,
        })
    }

    /// Erase one subject: its key is destroyed, its rows deleted, a signed receipt returned.
    pub fn delete(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
        reason: &str,
    ) -> Result<DeletionReceipt> {
        if !matches!(ctx.role, Role::Operator | Role::Admin | Role::Enroller) {
            return Err(GalleryError::Forbidden(
                "deletion needs the enroller, operator or admin role".into(),
            ));
        }
        self.gallery_meta(gallery)?;
        let ps = self.pseudonym(gallery, reference);
        self.erase(ctx, gallery, &ps, reason)
    }

    fn erase(
        &self,
        ctx: &Context,
        gallery: &str,
        ps: &[u8; 32],
        reason: &str,
    ) -> Result<DeletionReceipt> {
        if reason.trim().is_empty() {
            return Err(GalleryError::Invalid(
                "a deletion must state its reason".into(),
            ));
        }
        let now = self.now();
        self.mark(&self.keys(), gallery, ps, "delete", now)?;
        let committed = (|| -> Result<(DeletionReceipt, SignedHead, i64, Vec<i64>)> {
            let db = self.db();
            let tx = db.write_tx()?;
            let sid: i64 = tx
                .query_row(
                    "SELECT id FROM subjects WHERE gallery = ?1 AND pseudonym = ?2",
                    params![gallery, &ps[..]],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| GalleryError::UnknownSubject(gallery.into()))?;
            let tids: Vec<i64> = {
                let mut st = tx.prepare("SELECT id FROM templates WHERE subject = ?1")?;
                let rows = st.query_map([sid], |r| r.get(0))?;
                rows.collect::<std::result::Result<_, _>>()?
            };
            tx.execute("DELETE FROM subjects WHERE id = ?1", [sid])?;
            tx.execute(
                "UPDATE galleries SET generation = generation + 1 WHERE name = ?1",
                [gallery],
            )?;
            let head = self.audit_in(
                &tx,
                ctx,
                AuditEvent {
                    action: "delete".into(),
                    gallery: Some(gallery.into()),
                    subject: Some(hex::encode(ps)),
                    outcome: "erased".into(),
                    details: serde_json::json!({ "reason": reason }),
                },
            )?;
            let mut receipt = DeletionReceipt {
                gallery: gallery.into(),
                pseudonym: hex::encode(ps),
                time: audit::now_rfc3339(now),
                reason: reason.into(),
                audit_seq: head.seq,
                signature: String::new(),
                public_key: self.public_key.clone(),
            };
            receipt.signature =
                hex::encode(self.signer.sign(&receipt_message(&receipt)).to_bytes());
            tx.execute(
                "INSERT INTO receipts (receipt) VALUES (?1)",
                [serde_json::to_string(&receipt)
                    .map_err(|e| GalleryError::Invalid(e.to_string()))?],
            )?;
            tx.commit()?;
            Ok((receipt, head, sid, tids))
        })();
        let (receipt, head, sid, tids) = match committed {
            Ok(r) => r,
            Err(e) => {
                self.unmark(gallery, ps, "delete");
                return Err(e);
            }
        };
        self.after_commit(&head);
        self.destroy_key(gallery, ps)?;
        if let Some(lg) = self.loaded_entry(gallery) {
            let mut lg = lg.write().unwrap_or_else(|p| p.into_inner());
            if lg.index.is_compact() {
                for tid in tids {
                    lg.index.remove(tid as u64);
                }
            } else {
                lg.index.remove(sid as u64);
                lg.pseudonyms.remove(&(sid as u64));
            }
            lg.generation += 1;
        }
        Ok(receipt)
    }

    fn destroy_key(&self, gallery: &str, ps: &[u8; 32]) -> Result<()> {
        let keys = self.keys();
        let tx = keys.write_tx()?;
        tx.execute(
            "DELETE FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2",
            params![gallery, &ps[..]],
        )?;
        tx.execute(
            "DELETE FROM pending WHERE gallery = ?1 AND pseudonym = ?2 AND op = 'delete'",
            params![gallery, &ps[..]],
        )?;
        tx.commit()?;
        // secure_delete zeroed the page in the WAL copy; checkpointing and truncating the WAL
        // removes the last file that held the old page.
        keys.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Erase every subject of `gallery` past its retention. Returns the signed receipts.
    pub fn purge(&self, ctx: &Context, gallery: &str) -> Result<Vec<DeletionReceipt>> {
        if !matches!(ctx.role, Role::Operator | Role::Admin) {
            return Err(GalleryError::Forbidden(
                "purging needs the operator or admin role".into(),
            ));
        }
        self.gallery_meta(gallery)?;
        self.reconcile()?;
        let now = self.now();
        let expired: Vec<Vec<u8>> = {
            let db = self.db();
            let mut st =
                db.prepare("SELECT pseudonym FROM subjects WHERE gallery = ?1 AND expires <= ?2")?;
            let rows = st.query_map(params![gallery, now], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let mut receipts = Vec::with_capacity(expired.len());
        for p in expired {
            let ps: [u8; 32] = p.try_into().map_err(|_| {
                GalleryError::Invalid("stored pseudonym has the wrong length".into())
            })?;
            receipts.push(self.erase(ctx, gallery, &ps, "retention period expired")?);
        }
        Ok(receipts)
    }

    /// Every deletion receipt issued so far.
    pub fn receipts(&self) -> Result<Vec<DeletionReceipt>> {
        let db = self.db();
        let mut st = db.prepare("SELECT receipt FROM receipts ORDER BY id")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(serde_json::from_str(&r?).map_err(|e| GalleryError::Invalid(e.to_string()))?);
        }
        Ok(out)
    }

    /// Move every template of `gallery` to a fresh transform (renewal): no images, no re-enrolment.
    /// Templates stored before the call no longer match probes protected after it.
    pub fn rekey_gallery(&self, ctx: &Context, gallery: &str) -> Result<usize> {
        if ctx.role != Role::Admin {
            return Err(GalleryError::Forbidden(
                "rekeying needs the admin role".into(),
            ));
        }
        let info = self.gallery_meta(gallery)?;
        let new_seed = crypto::random_key()?;
        let new_wrapped = self
            .wrapper
            .wrap(&aad("gallery-seed", gallery, b""), &new_seed)?;
        // Transforms and keys are read before the store lock is taken (`transform` reads the seed
        // through it); a gallery with no template yet only gets its new seed.
        let plan = match info.dim {
            Some(dim) => Some((
                self.transform(gallery, dim)?,
                OrthogonalTransform::from_seed(&new_seed, dim),
                self.wrapped_keys(gallery)?,
            )),
            None => None,
        };
        let db = self.db();
        let tx = db.write_tx()?;
        let mut resealed: Vec<(i64, Vec<u8>)> = Vec::new();
        if let Some((old, new, wrapped)) = plan {
            resealed = self
                .open_templates(&tx, gallery, &wrapped)?
                .par_iter()
                .map(|t| {
                    let a = aad("template", gallery, &t.pseudonym);
                    let moved = old.rekey(&new, &t.template);
                    Ok((t.id, crypto::seal(&t.key, &a, &f32_to_bytes(&moved))?))
                })
                .collect::<Result<_>>()?;
            for (tid, s) in &resealed {
                tx.execute(
                    "UPDATE templates SET sealed = ?1 WHERE id = ?2",
                    params![s, tid],
                )?;
            }
        }
        tx.execute(
            "UPDATE galleries SET seed = ?1, generation = generation + 1 WHERE name = ?2",
            params![new_wrapped, gallery],
        )?;
        let head = self.audit_in(
            &tx,
            ctx,
            AuditEvent {
                action: "gallery-rekey".into(),
                gallery: Some(gallery.into()),
                outcome: "rekeyed".into(),
                details: serde_json::json!({ "templates": resealed.len() }),
                ..Default::default()
            },
        )?;
        tx.commit()?;
        drop(db);
        self.after_commit(&head);
        let moved = resealed.len();
        self.transforms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(gallery);
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(gallery);
        Ok(moved)
    }

    /// Rewrap every key under `new` (the master-key rotation). Templates are not touched. `new`
    /// must still open blobs of the current key (a ring holding both).
    pub fn rotate_master(&mut self, ctx: &Context, new: Box<dyn KeyWrapper>) -> Result<usize> {
        if ctx.role != Role::Admin {
            return Err(GalleryError::Forbidden(
                "key rotation needs the admin role".into(),
            ));
        }
        let mut count = 0;
        {
            let keys = self.keys();
            let tx = keys.write_tx()?;
            let rows: Vec<(String, Vec<u8>, Vec<u8>)> = {
                let mut st = tx.prepare("SELECT gallery, pseudonym, wrapped FROM subject_keys")?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<std::result::Result<_, _>>()?
            };
            for (g, ps, w) in rows {
                let a = aad("subject-key", &g, &ps);
                let dk = new.unwrap_key(&a, &w)?;
                tx.execute(
                    "UPDATE subject_keys SET wrapped = ?1 WHERE gallery = ?2 AND pseudonym = ?3",
                    params![new.wrap(&a, &dk)?, g, ps],
                )?;
                count += 1;
            }
            tx.commit()?;
            keys.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        let from = self.wrapper.current_id();
        {
            let db = self.db();
            let tx = db.write_tx()?;
            for (k, a) in [
                ("pseudonym_key", &b"facegate/pseudonym-key/v1"[..]),
                ("audit_key", b"facegate/audit-key/v1"),
            ] {
                let w: Vec<u8> =
                    tx.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))?;
                let key = new.unwrap_key(a, &w)?;
                tx.execute(
                    "UPDATE meta SET v = ?1 WHERE k = ?2",
                    params![new.wrap(a, &key)?, k],
                )?;
                count += 1;
            }
            let seeds: Vec<(String, Vec<u8>)> = {
                let mut st = tx.prepare("SELECT name, seed FROM galleries")?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<std::result::Result<_, _>>()?
            };
            for (g, w) in seeds {
                let a = aad("gallery-seed", &g, b"");
                let seed = new.unwrap_key(&a, &w)?;
                tx.execute(
                    "UPDATE galleries SET seed = ?1 WHERE name = ?2",
                    params![new.wrap(&a, &seed)?, g],
                )?;
                count += 1;
            }
            let head = self.audit_in(
                &tx,
                ctx,
                AuditEvent {
                    action: "key-rotate".into(),
                    outcome: "rewrapped".into(),
                    details: serde_json::json!({ "from_key": from, "to_key": new.current_id(), "keys": count }),
                    ..Default::default()
                },
            )?;
            tx.commit()?;
            self.after_commit(&head);
        }
        self.wrapper = new;
        Ok(count)
    }

    /// Verify the audit log. `pin` is the public key the verifier trusts (default: the stored one);
    /// `anchors` are heads kept elsewhere (the mirror file is always checked).
    pub fn audit_verify(
        &self,
        pin: Option<&str>,
        anchors: &[(String, SignedHead)],
    ) -> Result<AuditReport> {
        verify_dir(&self.dir, pin, anchors)
    }

    pub fn audit_records(&self) -> Result<Vec<audit::AuditRecord>> {
        audit::records(&self.db())
    }

    /// The current signed head, for anchoring outside this machine.
    pub fn audit_head(&self) -> Result<Option<SignedHead>> {
        let db = self.db();
        let row: Option<(i64, Vec<u8>, Vec<u8>)> = db
            .query_row(
                "SELECT seq, hash, sig FROM audit_heads ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(row.map(|(seq, hash, sig)| SignedHead {
            seq: seq as u64,
            hash: hex::encode(hash),
            signature: hex::encode(sig),
            public_key: self.public_key.clone(),
        }))
    }

    /// The protected (transformed) templates of a gallery, for migration to another engine or for
    /// an unlinkability check. Admin only, audited as an export. They are still keyed by the
    /// gallery's transform: without its seed they cannot be compared with anything outside it.
    pub fn export_templates(
        &self,
        ctx: &Context,
        gallery: &str,
    ) -> Result<Vec<(String, Vec<f32>)>> {
        if ctx.role != Role::Admin {
            return Err(GalleryError::Forbidden(
                "exporting templates needs the admin role".into(),
            ));
        }
        // From storage, not from the loaded index: a compact index holds no f32 templates.
        let wrapped = self.wrapped_keys(gallery)?;
        let now = self.now();
        let out: Vec<(String, Vec<f32>)> = self
            .open_templates(&self.db(), gallery, &wrapped)?
            .into_iter()
            .filter(|t| t.expires > now)
            .map(|t| (hex::encode(t.pseudonym), t.template.to_vec()))
            .collect();
        self.audit_event(
            ctx,
            AuditEvent {
                action: "export".into(),
                gallery: Some(gallery.into()),
                outcome: "exported".into(),
                details: serde_json::json!({ "templates": out.len() }),
                ..Default::default()
            },
        )?;
        Ok(out)
    }

    /// Sealed enrolment image of a subject, if one was kept (decrypted for the caller).
    pub fn enrolment_image(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        if !matches!(ctx.role, Role::Operator | Role::Admin) {
            return Err(GalleryError::Forbidden(
                "reading an enrolment image needs the operator or admin role".into(),
            ));
        }
        let ps = self.pseudonym(gallery, reference);
        let dk = self
            .subject_key(gallery, &ps)?
            .ok_or_else(|| GalleryError::UnknownSubject(gallery.into()))?;
        let sealed: Option<Vec<u8>> = self
            .db()
            .query_row(
                "SELECT i.sealed FROM images i JOIN subjects s ON i.subject = s.id WHERE s.gallery = ?1 AND s.pseudonym = ?2",
                params![gallery, &ps[..]],
                |r| r.get(0),
            )
            .optional()?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let img = crypto::open(&dk, &aad("image", gallery, &ps), &sealed)?;
        self.audit_event(
            ctx,
            AuditEvent {
                action: "image-read".into(),
                gallery: Some(gallery.into()),
                subject: Some(hex::encode(ps)),
                outcome: "read".into(),
                details: serde_json::Value::Null,
            },
        )?;
        Ok(Some(img))
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
    let conn = Connection::open_with_flags(
        dir.join("store.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let stored: Vec<u8> =
        conn.query_row("SELECT v FROM meta WHERE k = 'audit_public_key'", [], |r| {
            r.get(0)
        })?;
    let stored = hex::encode(stored);
    let key = pin.map(str::to_string).unwrap_or_else(|| stored.clone());
    let mut external: Vec<(String, SignedHead)> = anchors.to_vec();
    if let Some(h) = audit::read_head_file(&dir.join("audit.head"))? {
        external.push(("audit.head".into(), h));
    }
    let mut report = audit::verify(&conn, &key, &external)?;
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
    let conn = Connection::open_with_flags(
        dir.join("store.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    audit::records(&conn)
}
