//! The embedded backend: two SQLite files in the data directory.
//!
//! - `store.db`, the record store: galleries, subjects (pseudonyms), sealed templates, sealed
//!   references, the audit log and deletion receipts. Safe to back up: without the keys it holds
//!   no biometric data.
//! - `keys.db`, the key store: one wrapped data key per subject. Deleting a key deletes its row
//!   with SQLite's secure_delete and then truncates the WAL ([`KeyStore::scrub`]), so every copy
//!   of `store.db` — backups included — loses that subject for good. Back up `keys.db` only within
//!   the retention window.
//!
//! Both are opened with WAL (readers never block the writer), `synchronous = FULL` (an
//! acknowledged write survives power loss) and `secure_delete` (freed pages are zeroed). One
//! connection per file behind a mutex: SQLite serialises writers anyway, and the service's reads
//! are short.

use super::*;
use crate::error::GalleryError;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The data directory layout's version, kept in `meta`.
pub const FORMAT: i64 = 1;

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
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, record TEXT NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit_heads (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, sig BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
  gallery TEXT NOT NULL, generation INTEGER NOT NULL, kind TEXT NOT NULL, subject INTEGER NOT NULL,
  templates TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS changes_by_generation ON changes(gallery, generation);
";

pub(super) fn ids_parse(text: &str) -> Result<Vec<i64>> {
    text.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse()
                .map_err(|_| GalleryError::Storage("a recorded change is malformed".into()))
        })
        .collect()
}

const KEYS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subject_keys (
  gallery TEXT NOT NULL, pseudonym BLOB NOT NULL, wrapped BLOB NOT NULL, created INTEGER NOT NULL,
  PRIMARY KEY (gallery, pseudonym));
CREATE TABLE IF NOT EXISTS pending (
  gallery TEXT NOT NULL, pseudonym BLOB NOT NULL, op TEXT NOT NULL, created INTEGER NOT NULL,
  pid INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (gallery, pseudonym, op));
";

impl From<rusqlite::Error> for GalleryError {
    fn from(e: rusqlite::Error) -> Self {
        GalleryError::Storage(e.to_string())
    }
}

/// Both SQLite files of a data directory.
pub struct SqliteBackend {
    dir: PathBuf,
    db: Mutex<Connection>,
    keys: SqliteKeys,
}

/// `keys.db` (see `keys`).
pub struct SqliteKeys {
    conn: Mutex<Connection>,
}

mod keys;

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock cannot leave a transaction open: the guard's transaction
    // rolled back when it unwound. The connection itself stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteBackend {
    /// Open (creating) `store.db` and `keys.db` in `dir`, which must exist.
    pub fn open(dir: &Path) -> Result<SqliteBackend> {
        let db = open_db(&dir.join("store.db"), STORE_SCHEMA)?;
        let keys = open_db(&dir.join("keys.db"), KEYS_SCHEMA)?;
        migrate_keys(&keys)?;
        Ok(SqliteBackend {
            dir: dir.to_path_buf(),
            db: Mutex::new(db),
            keys: SqliteKeys {
                conn: Mutex::new(keys),
            },
        })
    }

    /// Whether `dir` holds an initialised store.
    pub fn exists(dir: &Path) -> bool {
        dir.join("store.db").exists()
    }

    /// The audit log of a data directory, read-only (an auditor's verification; no keys).
    pub fn audit_log(dir: &Path) -> Result<ReadOnlyLog> {
        let conn = Connection::open_with_flags(
            dir.join("store.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Ok(ReadOnlyLog(conn))
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        lock(&self.db)
    }
}

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

fn open_db(path: &Path, schema: &str) -> Result<Connection> {
    crate::files::secure_file(path)?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
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

/// A transaction over a locked connection. Write transactions take the write lock up front
/// (BEGIN IMMEDIATE): a deferred transaction that reads and then writes cannot wait for another
/// writer (another process) and fails with "database is locked".
struct Tx<'a> {
    conn: MutexGuard<'a, Connection>,
    open: bool,
}

impl<'a> Tx<'a> {
    fn begin(conn: MutexGuard<'a, Connection>) -> Result<Tx<'a>> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Tx { conn, open: true })
    }

    fn commit(mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<T>>) -> Result<Vec<T>> {
    Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
}

fn gallery_templates(conn: &Connection, gallery: &str) -> Result<Vec<StoredTemplate>> {
    let mut st = conn.prepare_cached(
        "SELECT t.id, s.pseudonym, s.expires, t.sealed FROM templates t JOIN subjects s ON t.subject = s.id
         WHERE s.gallery = ?1 ORDER BY t.id",
    )?;
    let rows = st.query_map([gallery], |r| {
        Ok(StoredTemplate {
            id: r.get(0)?,
            pseudonym: r.get(1)?,
            expires: r.get(2)?,
            sealed: r.get(3)?,
        })
    })?;
    collect(rows)
}

fn meta(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0))
        .optional()?)
}

impl AuditLog for Connection {
    fn stored_public_key(&self) -> Result<Option<Vec<u8>>> {
        meta(self, "audit_public_key")
    }

    fn last_head(&self) -> Result<Option<HeadRow>> {
        Ok(self
            .query_row(
                "SELECT seq, hash, sig FROM audit_heads ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    fn scan_records(
        &self,
        from: u64,
        limit: usize,
        each: &mut dyn FnMut(u64, String, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let mut st = self.prepare_cached(
            "SELECT seq, record, hash FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
        )?;
        let mut q = st.query(params![
            from.min(i64::MAX as u64) as i64,
            limit.min(i64::MAX as usize) as i64
        ])?;
        while let Some(r) = q.next()? {
            each(r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)?;
        }
        Ok(())
    }

    fn scan_heads(&self, each: &mut dyn FnMut(u64, Vec<u8>, Vec<u8>) -> Result<()>) -> Result<()> {
        let mut st = self.prepare_cached("SELECT seq, hash, sig FROM audit_heads ORDER BY seq")?;
        let mut q = st.query([])?;
        while let Some(r) = q.next()? {
            each(r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)?;
        }
        Ok(())
    }
}

/// `store.db`'s audit log opened read-only.
pub struct ReadOnlyLog(Connection);

impl AuditLog for ReadOnlyLog {
    fn stored_public_key(&self) -> Result<Option<Vec<u8>>> {
        self.0.stored_public_key()
    }
    fn last_head(&self) -> Result<Option<HeadRow>> {
        self.0.last_head()
    }
    fn scan_records(
        &self,
        from: u64,
        limit: usize,
        each: &mut dyn FnMut(u64, String, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        self.0.scan_records(from, limit, each)
    }
    fn scan_heads(&self, each: &mut dyn FnMut(u64, Vec<u8>, Vec<u8>) -> Result<()>) -> Result<()> {
        self.0.scan_heads(each)
    }
}

impl AuditLog for SqliteBackend {
    fn stored_public_key(&self) -> Result<Option<Vec<u8>>> {
        self.db().stored_public_key()
    }
    fn last_head(&self) -> Result<Option<HeadRow>> {
        self.db().last_head()
    }
    fn scan_records(
        &self,
        from: u64,
        limit: usize,
        each: &mut dyn FnMut(u64, String, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        self.db().scan_records(from, limit, each)
    }
    fn scan_heads(&self, each: &mut dyn FnMut(u64, Vec<u8>, Vec<u8>) -> Result<()>) -> Result<()> {
        self.db().scan_heads(each)
    }
}

impl Backend for SqliteBackend {
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        meta(&self.db(), key)
    }

    fn write(&self) -> Result<Box<dyn WriteTxn + '_>> {
        Ok(Box::new(StoreTx(Tx::begin(self.db())?)))
    }

    fn keys(&self) -> &dyn KeyStore {
        &self.keys
    }

    fn gallery_names(&self) -> Result<Vec<String>> {
        let db = self.db();
        let mut st = db.prepare_cached("SELECT name FROM galleries ORDER BY name")?;
        let rows = st.query_map([], |r| r.get(0))?;
        collect(rows)
    }

    fn gallery(&self, name: &str) -> Result<Option<GalleryRow>> {
        Ok(self
            .db()
            .query_row(
                "SELECT policy, dim, metric, pack, created FROM galleries WHERE name = ?1",
                [name],
                |r| {
                    Ok(GalleryRow {
                        policy: r.get(0)?,
                        dim: r.get(1)?,
                        metric: r.get(2)?,
                        pack: r.get(3)?,
                        created: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    fn gallery_seed(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db()
            .query_row("SELECT seed FROM galleries WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn generation(&self, name: &str) -> Result<Option<i64>> {
        Ok(self
            .db()
            .query_row(
                "SELECT generation FROM galleries WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn changes_since(&self, gallery: &str, after: i64, upto: i64) -> Result<Vec<ChangeRow>> {
        let db = self.db();
        let mut st = db.prepare_cached(
            "SELECT generation, kind, subject, templates FROM changes
             WHERE gallery = ?1 AND generation > ?2 AND generation <= ?3 ORDER BY generation",
        )?;
        let rows = st.query_map(params![gallery, after, upto], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
        })?;
        collect(rows)?
            .into_iter()
            .map(|(generation, kind, subject, t)| {
                Ok(ChangeRow {
                    generation,
                    kind,
                    subject,
                    templates: ids_parse(&t)?,
                })
            })
            .collect()
    }

    fn subject_by_id(&self, gallery: &str, subject: i64) -> Result<Option<SubjectTemplates>> {
        let db = self.db();
        let head: Option<([u8; 32], i64)> = db
            .query_row(
                "SELECT pseudonym, expires FROM subjects WHERE id = ?1 AND gallery = ?2",
                params![subject, gallery],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((pseudonym, expires)) = head else {
            return Ok(None);
        };
        let mut st =
            db.prepare_cached("SELECT id, sealed FROM templates WHERE subject = ?1 ORDER BY id")?;
        let templates = collect(st.query_map([subject], |r| Ok((r.get(0)?, r.get(1)?)))?)?;
        Ok(Some(SubjectTemplates {
            pseudonym,
            expires,
            templates,
        }))
    }

    fn counts(&self, gallery: &str, now: i64) -> Result<GalleryCounts> {
        let db = self.db();
        let count = |sql: &str| -> Result<u64> {
            Ok(db.query_row(sql, params![gallery, now], |r| r.get::<_, i64>(0))? as u64)
        };
        Ok(GalleryCounts {
            subjects: count("SELECT COUNT(*) FROM subjects WHERE gallery = ?1 AND expires > ?2")?,
            templates: count(
                "SELECT COUNT(*) FROM templates t JOIN subjects s ON t.subject = s.id
                 WHERE s.gallery = ?1 AND s.expires > ?2",
            )?,
            expired: count("SELECT COUNT(*) FROM subjects WHERE gallery = ?1 AND expires <= ?2")?,
        })
    }

    fn subject_count(&self, gallery: &str) -> Result<u64> {
        let n: i64 = self.db().query_row(
            "SELECT COUNT(*) FROM subjects WHERE gallery = ?1",
            [gallery],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    fn has_subjects(&self, gallery: &str) -> Result<bool> {
        Ok(self.db().query_row(
            "SELECT EXISTS(SELECT 1 FROM subjects WHERE gallery = ?1)",
            [gallery],
            |r| r.get(0),
        )?)
    }

    fn subject_exists(&self, gallery: &str, pseudonym: &[u8]) -> Result<bool> {
        Ok(self.db().query_row(
            "SELECT EXISTS(SELECT 1 FROM subjects WHERE gallery = ?1 AND pseudonym = ?2)",
            params![gallery, pseudonym],
            |r| r.get(0),
        )?)
    }

    fn subject(&self, gallery: &str, pseudonym: &[u8]) -> Result<Option<SubjectRow>> {
        Ok(self
            .db()
            .query_row(
                "SELECT s.enrolled, s.expires, (SELECT COUNT(*) FROM templates t WHERE t.subject = s.id),
                        (SELECT COUNT(*) FROM images i WHERE i.subject = s.id), s.consent IS NOT NULL
                 FROM subjects s WHERE s.gallery = ?1 AND s.pseudonym = ?2",
                params![gallery, pseudonym],
                |r| {
                    Ok(SubjectRow {
                        enrolled: r.get(0)?,
                        expires: r.get(1)?,
                        templates: r.get(2)?,
                        images: r.get(3)?,
                        consent: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    fn subject_record(&self, subject: i64) -> Result<Option<SubjectRecord>> {
        let db = self.db();
        let row = db
            .query_row(
                "SELECT reference, consent, enrolled, expires FROM subjects WHERE id = ?1",
                [subject],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((reference, consent, enrolled, expires)) = row else {
            return Ok(None);
        };
        let mut st =
            db.prepare_cached("SELECT sealed FROM images WHERE subject = ?1 ORDER BY id")?;
        let images = collect(st.query_map([subject], |r| r.get(0))?)?;
        Ok(Some(SubjectRecord {
            reference,
            consent,
            enrolled,
            expires,
            images,
        }))
    }

    fn subject_reference(&self, subject: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db()
            .query_row(
                "SELECT reference FROM subjects WHERE id = ?1",
                [subject],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn subject_templates(&self, gallery: &str, pseudonym: &[u8], now: i64) -> Result<Vec<Vec<u8>>> {
        let db = self.db();
        let mut st = db.prepare_cached(
            "SELECT t.sealed FROM templates t JOIN subjects s ON t.subject = s.id
             WHERE s.gallery = ?1 AND s.pseudonym = ?2 AND s.expires > ?3",
        )?;
        let rows = st.query_map(params![gallery, pseudonym, now], |r| r.get(0))?;
        collect(rows)
    }

    fn subject_image(&self, gallery: &str, pseudonym: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db()
            .query_row(
                "SELECT i.sealed FROM images i JOIN subjects s ON i.subject = s.id
                 WHERE s.gallery = ?1 AND s.pseudonym = ?2",
                params![gallery, pseudonym],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn expired(&self, gallery: &str, now: i64) -> Result<Vec<Vec<u8>>> {
        let db = self.db();
        let mut st = db.prepare_cached(
            "SELECT pseudonym FROM subjects WHERE gallery = ?1 AND expires <= ?2",
        )?;
        let rows = st.query_map(params![gallery, now], |r| r.get(0))?;
        collect(rows)
    }

    fn all_subjects(&self) -> Result<Vec<(i64, String, Vec<u8>)>> {
        let db = self.db();
        let mut st = db.prepare_cached("SELECT id, gallery, pseudonym FROM subjects")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        collect(rows)
    }

    fn receipts(&self) -> Result<Vec<String>> {
        let db = self.db();
        let mut st = db.prepare_cached("SELECT receipt FROM receipts ORDER BY id")?;
        let rows = st.query_map([], |r| r.get(0))?;
        collect(rows)
    }

    fn gallery_templates(&self, gallery: &str) -> Result<Vec<StoredTemplate>> {
        gallery_templates(&self.db(), gallery)
    }

    fn templates_by_id(&self, gallery: &str, ids: &[u64]) -> Result<Vec<Option<TemplateById>>> {
        let db = self.db();
        let mut st = db.prepare_cached(
            "SELECT t.subject, t.sealed, s.pseudonym FROM templates t JOIN subjects s ON s.id = t.subject
             WHERE t.id = ?1 AND s.gallery = ?2",
        )?;
        let rows = ids
            .iter()
            .map(|id| {
                st.query_row(params![*id as i64, gallery], |r| {
                    Ok(TemplateById {
                        subject: r.get(0)?,
                        sealed: r.get(1)?,
                        pseudonym: r.get(2)?,
                    })
                })
                .optional()
            })
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn scan_subjects(
        &self,
        gallery: &str,
        each: &mut dyn FnMut(i64, [u8; 32], i64) -> bool,
    ) -> Result<()> {
        let db = self.db();
        // Whole-gallery reads scan the table in storage order (NOT INDEXED): going through the
        // (gallery, pseudonym) index would cost one random table seek per row.
        let mut st = db.prepare_cached(
            "SELECT id, pseudonym, expires FROM subjects NOT INDEXED WHERE gallery = ?1",
        )?;
        let mut q = st.query([gallery])?;
        while let Some(r) = q.next()? {
            if !each(r.get(0)?, r.get(1)?, r.get(2)?) {
                break;
            }
        }
        Ok(())
    }

    fn scan_templates(
        &self,
        _gallery: &str,
        each: &mut dyn FnMut(i64, Vec<u8>) -> bool,
    ) -> Result<()> {
        // Every gallery's templates in storage order: a join to keep only this gallery's would
        // cost a seek per row, and the caller drops other subjects' rows by id anyway.
        let db = self.db();
        let mut st = db.prepare_cached("SELECT subject, sealed FROM templates")?;
        let mut q = st.query([])?;
        while let Some(r) = q.next()? {
            if !each(r.get(0)?, r.get(1)?) {
                break;
            }
        }
        Ok(())
    }

    fn template_counts(&self, gallery: &str) -> Result<(u64, Option<u64>)> {
        let (n, max): (i64, Option<i64>) = self.db().query_row(
            "SELECT COALESCE(SUM(c), 0), MAX(c) FROM (SELECT COUNT(*) AS c FROM templates t
             JOIN subjects s ON s.id = t.subject WHERE s.gallery = ?1 GROUP BY t.subject)",
            [gallery],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((n.max(0) as u64, max.map(|m| m.max(0) as u64)))
    }

    fn scan_keyed_templates(
        &self,
        gallery: &str,
        each: &mut dyn FnMut(KeyedTemplate) -> bool,
    ) -> Result<()> {
        // Its own read-only connection with keys.db attached: one streaming join across both
        // files, and the service's connections stay free while a big gallery loads.
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
        let mut st = conn.prepare(
            // CROSS JOIN fixes the order: templates in storage order, each subject by primary
            // key (nearly sequential, enrolled together), then the key by index. SQLite's own
            // choice (subjects by the gallery index, in pseudonym order) seeks randomly
            // everywhere: 2-3x slower.
            "SELECT t.id, s.expires, s.pseudonym, sk.wrapped, t.sealed
             FROM templates t CROSS JOIN subjects s ON s.id = t.subject
             CROSS JOIN k.subject_keys sk ON sk.gallery = s.gallery AND sk.pseudonym = s.pseudonym
             WHERE s.gallery = ?1",
        )?;
        let mut q = st.query([gallery])?;
        while let Some(r) = q.next()? {
            let row = KeyedTemplate {
                id: r.get(0)?,
                expires: r.get(1)?,
                pseudonym: r.get(2)?,
                wrapped: r.get(3)?,
                sealed: r.get(4)?,
            };
            if !each(row) {
                break;
            }
        }
        Ok(())
    }
}

struct StoreTx<'a>(Tx<'a>);

impl StoreTx<'_> {
    fn conn(&self) -> &Connection {
        &self.0.conn
    }
}

impl WriteTxn for StoreTx<'_> {
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        meta(self.conn(), key)
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.conn().execute(
            "INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            params![key, value],
        )?;
        Ok(())
    }

    fn insert_gallery(
        &mut self,
        name: &str,
        policy: &str,
        seed: &[u8],
        created: i64,
    ) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO galleries (name, policy, seed, created) VALUES (?1, ?2, ?3, ?4)",
            params![name, policy, seed, created],
        )?;
        Ok(n == 1)
    }

    fn set_policy(&mut self, name: &str, policy: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE galleries SET policy = ?1 WHERE name = ?2",
            params![policy, name],
        )?;
        Ok(())
    }

    fn set_kind(&mut self, name: &str, dim: i64, metric: &str, pack: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE galleries SET dim = ?2, metric = ?3, pack = ?4 WHERE name = ?1",
            params![name, dim, metric, pack],
        )?;
        Ok(())
    }

    fn set_seed(&mut self, name: &str, seed: &[u8]) -> Result<()> {
        self.conn().execute(
            "UPDATE galleries SET seed = ?1 WHERE name = ?2",
            params![seed, name],
        )?;
        Ok(())
    }

    fn seeds(&mut self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut st = self
            .conn()
            .prepare_cached("SELECT name, seed FROM galleries")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        collect(rows)
    }

    fn bump_generation(&mut self, name: &str) -> Result<i64> {
        let conn = self.conn();
        let generation: i64 = conn.query_row(
            "UPDATE galleries SET generation = generation + 1 WHERE name = ?1 RETURNING generation",
            [name],
            |r| r.get(0),
        )?;
        // Changes too old to follow go, once per transaction (not per recorded row).
        conn.prepare_cached("DELETE FROM changes WHERE gallery = ?1 AND generation <= ?2")?
            .execute(params![name, generation - CHANGES_KEPT])?;
        Ok(generation)
    }

    fn record_change(
        &mut self,
        gallery: &str,
        generation: i64,
        kind: &str,
        subject: i64,
        templates: &[i64],
    ) -> Result<()> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO changes (gallery, generation, kind, subject, templates) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![gallery, generation, kind, subject, ids_text(templates)])?;
        Ok(())
    }

    fn insert_subject(&mut self, s: &NewSubject<'_>) -> Result<Option<i64>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "INSERT OR IGNORE INTO subjects (gallery, pseudonym, reference, consent, enrolled, expires)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let n = st.execute(params![
            s.gallery,
            s.pseudonym,
            s.reference,
            s.consent,
            s.enrolled,
            s.expires
        ])?;
        Ok((n == 1).then(|| conn.last_insert_rowid()))
    }

    fn insert_template(&mut self, subject: i64, sealed: &[u8]) -> Result<i64> {
        let conn = self.conn();
        conn.prepare_cached("INSERT INTO templates (subject, sealed) VALUES (?1, ?2)")?
            .execute(params![subject, sealed])?;
        Ok(conn.last_insert_rowid())
    }

    fn insert_image(&mut self, subject: i64, sealed: &[u8]) -> Result<()> {
        self.conn()
            .prepare_cached("INSERT INTO images (subject, sealed) VALUES (?1, ?2)")?
            .execute(params![subject, sealed])?;
        Ok(())
    }

    fn subject_id(&mut self, gallery: &str, pseudonym: &[u8]) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id FROM subjects WHERE gallery = ?1 AND pseudonym = ?2",
                params![gallery, pseudonym],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn template_ids(&mut self, subject: i64) -> Result<Vec<i64>> {
        let mut st = self
            .conn()
            .prepare_cached("SELECT id FROM templates WHERE subject = ?1")?;
        let rows = st.query_map([subject], |r| r.get(0))?;
        collect(rows)
    }

    fn delete_subject(&mut self, subject: i64) -> Result<()> {
        // Templates and images go with it (ON DELETE CASCADE).
        self.conn()
            .execute("DELETE FROM subjects WHERE id = ?1", [subject])?;
        Ok(())
    }

    fn gallery_templates(&mut self, gallery: &str) -> Result<Vec<StoredTemplate>> {
        gallery_templates(self.conn(), gallery)
    }

    fn update_template(&mut self, id: i64, sealed: &[u8]) -> Result<()> {
        self.conn()
            .prepare_cached("UPDATE templates SET sealed = ?1 WHERE id = ?2")?
            .execute(params![sealed, id])?;
        Ok(())
    }

    fn insert_receipt(&mut self, receipt: &str) -> Result<()> {
        self.conn()
            .execute("INSERT INTO receipts (receipt) VALUES (?1)", [receipt])?;
        Ok(())
    }

    fn audit_tail(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?)
    }

    fn append_audit(&mut self, seq: u64, record: &str, hash: &[u8], sig: &[u8]) -> Result<()> {
        let conn = self.conn();
        conn.prepare_cached("INSERT INTO audit (seq, record, hash) VALUES (?1, ?2, ?3)")?
            .execute(params![seq as i64, record, hash])?;
        conn.prepare_cached("INSERT INTO audit_heads (seq, hash, sig) VALUES (?1, ?2, ?3)")?
            .execute(params![seq as i64, hash, sig])?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.0.commit()
    }
}
