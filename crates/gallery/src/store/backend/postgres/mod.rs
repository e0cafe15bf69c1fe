//! The PostgreSQL backend: the record store and the key store in two separate PostgreSQL
//! databases, for deployments that outlive one host (streaming replication, failover, several
//! facegate nodes over one system of record).
//!
//! - The **record store** database: galleries, subjects (pseudonyms), sealed templates, sealed
//!   references, deletion receipts and the audit chain. Every byte of biometric data in it is
//!   sealed; like `store.db`, it may be backed up freely.
//! - The **key store** database: one wrapped data key per subject and the pending marks of crash
//!   recovery. It must be another database (and should be another cluster, backed up on its own
//!   schedule): erasing a subject destroys its key there, and every copy of the record store,
//!   backups included, loses the subject. [`PgBackend::open`] refuses one database for both.
//!
//! Writers are serialised **in the database**: every write transaction first locks the one row
//! of `writer` (`SELECT … FOR UPDATE`), so two facegate nodes appending to the audit chain at
//! once still make one chain, each transaction's tail being the other's last append (the same
//! guarantee SQLite's `BEGIN IMMEDIATE` gives the embedded backend). Transactions run at READ
//! COMMITTED: every statement after the lock sees everything committed before it.
//!
//! Connections come from a small r2d2 pool per database (checked before each use, so a
//! connection that died with a failed-over primary is replaced, not handed out); statements are
//! prepared once per connection. A database that cannot be reached, is shutting down or is a
//! read-only standby is reported as [`GalleryError::Unavailable`] (the server answers 503 with
//! retry advice), every other failure as [`GalleryError::Storage`].
//!
//! The client is `postgres`, the blocking face of `tokio-postgres`: the store service is
//! synchronous (the server calls it from blocking tasks), so an async pool would only add a
//! runtime hop per query. Multi-host connection strings with `target_session_attrs=read-write`
//! find the primary after a failover.
//!
//! Code map: `connect` (connection strings and TLS, the pool, errors meaning "unavailable"),
//! this module (schema and every read), `write` (record store transactions), `keys` (the key
//! store).
//!
//! TLS: `sslmode=require` with `sslrootcert=FILE` (PEM, libpq's parameter names) connects over
//! TLS (rustls) and verifies the server's certificate and host name against that file — what
//! libpq calls verify-full; there is no unverified TLS. Without them connections are plain (for a
//! private network or a local socket); `sslmode=require` without a root certificate is refused.

use super::*;
use crate::error::GalleryError;
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::types::ToSql;
use ::postgres::Row;
use std::collections::HashMap;

mod connect;
mod keys;
mod write;

use connect::*;
use write::*;

const STORE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS galleries (
  name TEXT PRIMARY KEY, policy TEXT NOT NULL, seed BYTEA NOT NULL, dim BIGINT, metric TEXT,
  pack TEXT, created BIGINT NOT NULL, generation BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS subjects (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  gallery TEXT NOT NULL REFERENCES galleries(name), pseudonym BYTEA NOT NULL,
  reference BYTEA NOT NULL, consent BYTEA, enrolled BIGINT NOT NULL, expires BIGINT NOT NULL,
  UNIQUE (gallery, pseudonym));
CREATE TABLE IF NOT EXISTS templates (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  subject BIGINT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE, sealed BYTEA NOT NULL);
CREATE INDEX IF NOT EXISTS templates_subject ON templates(subject);
CREATE TABLE IF NOT EXISTS images (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  subject BIGINT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE, sealed BYTEA NOT NULL);
CREATE INDEX IF NOT EXISTS images_subject ON images(subject);
CREATE TABLE IF NOT EXISTS receipts (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, receipt TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (seq BIGINT PRIMARY KEY, record TEXT NOT NULL, hash BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS audit_heads (seq BIGINT PRIMARY KEY, hash BYTEA NOT NULL, sig BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
  gallery TEXT NOT NULL, generation BIGINT NOT NULL, kind TEXT NOT NULL, subject BIGINT NOT NULL,
  templates BIGINT[] NOT NULL);
CREATE INDEX IF NOT EXISTS changes_by_generation ON changes(gallery, generation);
CREATE TABLE IF NOT EXISTS writer (id INT PRIMARY KEY CHECK (id = 1));
INSERT INTO writer VALUES (1) ON CONFLICT DO NOTHING;
";

/// The record store and the key store on two PostgreSQL databases.
pub struct PgBackend {
    db: Pool,
    keys: PgKeys,
    /// How to open the record store's change feed (a connection of its own).
    feed: Manager,
}

/// The key store database (see `keys`).
pub struct PgKeys {
    pool: Pool,
    node: String,
}

impl PgBackend {
    /// Connect to the record store at `store_url` and the key store at `keys_url` (libpq
    /// connection strings or URLs, several hosts allowed), creating the schema on first use.
    /// The two must be different databases.
    pub fn open(store_url: &str, keys_url: &str) -> Result<PgBackend> {
        let store = parse_url(store_url)?;
        let keys = parse_url(keys_url)?;
        if database_identity(&store.0) == database_identity(&keys.0) {
            return Err(GalleryError::Invalid(
                "the key store must be another PostgreSQL database than the record store (erasure destroys keys there, and its backups follow their own rule)".into(),
            ));
        }
        let feed = manager(store);
        let db = pool(feed.clone(), STORE_SCHEMA)?;
        let keys = pool(manager(keys), keys::KEYS_SCHEMA)?;
        Ok(PgBackend {
            db,
            feed,
            keys: PgKeys {
                pool: keys,
                node: node_id(),
            },
        })
    }

    /// The key store URL a record store URL implies when none is given: the same server, the
    /// database name with `_keys` appended.
    pub fn default_keys_url(store_url: &str) -> Result<String> {
        let (c, _) = parse_url(store_url)?;
        let db = c
            .get_dbname()
            .or(c.get_user())
            .ok_or_else(|| {
                GalleryError::Invalid("the store URL names no database (add /DBNAME)".into())
            })?
            .to_string();
        let keys_db = format!("{db}_keys");
        if let Some((head, tail)) = store_url.split_once('?') {
            if let Some(base) = head.strip_suffix(&db) {
                return Ok(format!("{base}{keys_db}?{tail}"));
            }
        } else if let Some(base) = store_url.strip_suffix(&db) {
            return Ok(format!("{base}{keys_db}"));
        }
        Err(GalleryError::Invalid(
            "cannot derive the key store URL from the store URL: give it explicitly".into(),
        ))
    }

    fn db(&self) -> Result<Pooled> {
        Ok(self.db.get()?)
    }
}

fn pseudonym(row: &Row, i: usize) -> Result<[u8; 32]> {
    let v: Vec<u8> = row.try_get(i)?;
    <[u8; 32]>::try_from(v.as_slice())
        .map_err(|_| GalleryError::Storage("a stored pseudonym is not 32 bytes".into()))
}

fn meta(conn: &mut Conn, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .opt("SELECT v FROM meta WHERE k = $1", &[&key])?
        .map(|r| r.try_get(0))
        .transpose()?)
}

fn gallery_templates(conn: &mut Conn, gallery: &str) -> Result<Vec<StoredTemplate>> {
    conn.all(
        "SELECT t.id, s.pseudonym, s.expires, t.sealed FROM templates t JOIN subjects s ON t.subject = s.id
         WHERE s.gallery = $1 ORDER BY t.id",
        &[&gallery],
    )?
    .iter()
    .map(|r| {
        Ok(StoredTemplate {
            id: r.try_get(0)?,
            pseudonym: pseudonym(r, 1)?,
            expires: r.try_get(2)?,
            sealed: r.try_get(3)?,
        })
    })
    .collect()
}

fn seq(v: i64) -> u64 {
    v.max(0) as u64
}

fn sql_seq(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl AuditLog for PgBackend {
    fn stored_public_key(&self) -> Result<Option<Vec<u8>>> {
        meta(&mut *self.db()?, "audit_public_key")
    }

    fn last_head(&self) -> Result<Option<HeadRow>> {
        self.db()?
            .opt(
                "SELECT seq, hash, sig FROM audit_heads ORDER BY seq DESC LIMIT 1",
                &[],
            )?
            .map(|r| Ok((seq(r.try_get(0)?), r.try_get(1)?, r.try_get(2)?)))
            .transpose()
    }

    fn scan_records(
        &self,
        from: u64,
        limit: usize,
        each: &mut dyn FnMut(u64, String, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.db()?.stream(
            "SELECT seq, record, hash FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2",
            &[&sql_seq(from), &limit],
            &mut |r| {
                each(seq(r.try_get(0)?), r.try_get(1)?, r.try_get(2)?)?;
                Ok(true)
            },
        )
    }

    fn scan_heads(&self, each: &mut dyn FnMut(u64, Vec<u8>, Vec<u8>) -> Result<()>) -> Result<()> {
        self.db()?.stream(
            "SELECT seq, hash, sig FROM audit_heads ORDER BY seq",
            &[],
            &mut |r| {
                each(seq(r.try_get(0)?), r.try_get(1)?, r.try_get(2)?)?;
                Ok(true)
            },
        )
    }
}

impl Backend for PgBackend {
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        meta(&mut *self.db()?, key)
    }

    fn write(&self) -> Result<Box<dyn WriteTxn + '_>> {
        Ok(Box::new(StoreTx::begin(self.db()?)?))
    }

    fn keys(&self) -> &dyn KeyStore {
        &self.keys
    }

    fn gallery_names(&self) -> Result<Vec<String>> {
        self.db()?
            .column("SELECT name FROM galleries ORDER BY name", &[])
    }

    fn gallery(&self, name: &str) -> Result<Option<GalleryRow>> {
        self.db()?
            .opt(
                "SELECT policy, dim, metric, pack, created FROM galleries WHERE name = $1",
                &[&name],
            )?
            .map(|r| {
                Ok(GalleryRow {
                    policy: r.try_get(0)?,
                    dim: r.try_get(1)?,
                    metric: r.try_get(2)?,
                    pack: r.try_get(3)?,
                    created: r.try_get(4)?,
                })
            })
            .transpose()
    }

    fn gallery_seed(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.db()?
            .value("SELECT seed FROM galleries WHERE name = $1", &[&name])
    }

    fn generation(&self, name: &str) -> Result<Option<i64>> {
        self.db()?
            .value("SELECT generation FROM galleries WHERE name = $1", &[&name])
    }

    fn change_notices(&self) -> Result<Option<Box<dyn ChangeNotices>>> {
        Ok(Some(Box::new(PgNotices::listen(&self.feed)?)))
    }

    fn changes_since(&self, gallery: &str, after: i64, upto: i64) -> Result<Vec<ChangeRow>> {
        self.db()?
            .all(
                "SELECT generation, kind, subject, templates FROM changes
                 WHERE gallery = $1 AND generation > $2 AND generation <= $3 ORDER BY generation",
                &[&gallery, &after, &upto],
            )?
            .iter()
            .map(|r| {
                Ok(ChangeRow {
                    generation: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    subject: r.try_get(2)?,
                    templates: r.try_get(3)?,
                })
            })
            .collect()
    }

    fn subject_by_id(&self, gallery: &str, subject: i64) -> Result<Option<SubjectTemplates>> {
        let mut db = self.db()?;
        let Some(head) = db.opt(
            "SELECT pseudonym, expires FROM subjects WHERE id = $1 AND gallery = $2",
            &[&subject, &gallery],
        )?
        else {
            return Ok(None);
        };
        let templates = db
            .all(
                "SELECT id, sealed FROM templates WHERE subject = $1 ORDER BY id",
                &[&subject],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
        Ok(Some(SubjectTemplates {
            pseudonym: pseudonym(&head, 0)?,
            expires: head.try_get(1)?,
            templates,
        }))
    }

    fn counts(&self, gallery: &str, now: i64) -> Result<GalleryCounts> {
        let r = self.db()?.one(
            "SELECT (SELECT COUNT(*) FROM subjects WHERE gallery = $1 AND expires > $2),
                    (SELECT COUNT(*) FROM templates t JOIN subjects s ON t.subject = s.id
                     WHERE s.gallery = $1 AND s.expires > $2),
                    (SELECT COUNT(*) FROM subjects WHERE gallery = $1 AND expires <= $2)",
            &[&gallery, &now],
        )?;
        let n = |i: usize| -> Result<u64> { Ok(r.try_get::<_, i64>(i)?.max(0) as u64) };
        Ok(GalleryCounts {
            subjects: n(0)?,
            templates: n(1)?,
            expired: n(2)?,
        })
    }

    fn subject_count(&self, gallery: &str) -> Result<u64> {
        let n: i64 = self
            .db()?
            .one(
                "SELECT COUNT(*) FROM subjects WHERE gallery = $1",
                &[&gallery],
            )?
            .try_get(0)?;
        Ok(n.max(0) as u64)
    }

    fn has_subjects(&self, gallery: &str) -> Result<bool> {
        Ok(self
            .db()?
            .one(
                "SELECT EXISTS(SELECT 1 FROM subjects WHERE gallery = $1)",
                &[&gallery],
            )?
            .try_get(0)?)
    }

    fn subject_exists(&self, gallery: &str, pseudonym: &[u8]) -> Result<bool> {
        Ok(self
            .db()?
            .one(
                "SELECT EXISTS(SELECT 1 FROM subjects WHERE gallery = $1 AND pseudonym = $2)",
                &[&gallery, &pseudonym],
            )?
            .try_get(0)?)
    }

    fn subject(&self, gallery: &str, pseudonym: &[u8]) -> Result<Option<SubjectRow>> {
        self.db()?
            .opt(
                "SELECT s.enrolled, s.expires, (SELECT COUNT(*) FROM templates t WHERE t.subject = s.id),
                        (SELECT COUNT(*) FROM images i WHERE i.subject = s.id), s.consent IS NOT NULL
                 FROM subjects s WHERE s.gallery = $1 AND s.pseudonym = $2",
                &[&gallery, &pseudonym],
            )?
            .map(|r| {
                Ok(SubjectRow {
                    enrolled: r.try_get(0)?,
                    expires: r.try_get(1)?,
                    templates: r.try_get(2)?,
                    images: r.try_get(3)?,
                    consent: r.try_get(4)?,
                })
            })
            .transpose()
    }

    fn subject_record(&self, subject: i64) -> Result<Option<SubjectRecord>> {
        let mut db = self.db()?;
        let Some(r) = db.opt(
            "SELECT reference, consent, enrolled, expires FROM subjects WHERE id = $1",
            &[&subject],
        )?
        else {
            return Ok(None);
        };
        let images = db.column(
            "SELECT sealed FROM images WHERE subject = $1 ORDER BY id",
            &[&subject],
        )?;
        Ok(Some(SubjectRecord {
            reference: r.try_get(0)?,
            consent: r.try_get(1)?,
            enrolled: r.try_get(2)?,
            expires: r.try_get(3)?,
            images,
        }))
    }

    fn subject_reference(&self, subject: i64) -> Result<Option<Vec<u8>>> {
        self.db()?
            .value("SELECT reference FROM subjects WHERE id = $1", &[&subject])
    }

    fn subject_templates(&self, gallery: &str, pseudonym: &[u8], now: i64) -> Result<Vec<Vec<u8>>> {
        self.db()?.column(
            "SELECT t.sealed FROM templates t JOIN subjects s ON t.subject = s.id
                 WHERE s.gallery = $1 AND s.pseudonym = $2 AND s.expires > $3 ORDER BY t.id",
            &[&gallery, &pseudonym, &now],
        )
    }

    fn subject_image(&self, gallery: &str, pseudonym: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db()?.value(
            "SELECT i.sealed FROM images i JOIN subjects s ON i.subject = s.id
                 WHERE s.gallery = $1 AND s.pseudonym = $2 ORDER BY i.id LIMIT 1",
            &[&gallery, &pseudonym],
        )
    }

    fn expired(&self, gallery: &str, now: i64) -> Result<Vec<Vec<u8>>> {
        self.db()?.column(
            "SELECT pseudonym FROM subjects WHERE gallery = $1 AND expires <= $2",
            &[&gallery, &now],
        )
    }

    fn all_subjects(&self) -> Result<Vec<(i64, String, Vec<u8>)>> {
        self.db()?
            .all("SELECT id, gallery, pseudonym FROM subjects", &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    fn receipts(&self) -> Result<Vec<String>> {
        self.db()?
            .column("SELECT receipt FROM receipts ORDER BY id", &[])
    }

    fn gallery_templates(&self, gallery: &str) -> Result<Vec<StoredTemplate>> {
        gallery_templates(&mut *self.db()?, gallery)
    }

    fn templates_by_id(&self, gallery: &str, ids: &[u64]) -> Result<Vec<Option<TemplateById>>> {
        // One round trip for the whole candidate list, then back into the caller's order.
        let wanted: Vec<i64> = ids.iter().map(|&i| sql_seq(i)).collect();
        let rows = self.db()?.all(
            "SELECT t.id, t.subject, t.sealed, s.pseudonym FROM templates t JOIN subjects s ON s.id = t.subject
             WHERE t.id = ANY($1) AND s.gallery = $2",
            &[&wanted, &gallery],
        )?;
        let mut found: HashMap<i64, TemplateById> = HashMap::with_capacity(rows.len());
        for r in &rows {
            found.insert(
                r.try_get(0)?,
                TemplateById {
                    subject: r.try_get(1)?,
                    sealed: r.try_get(2)?,
                    pseudonym: pseudonym(r, 3)?,
                },
            );
        }
        Ok(wanted.iter().map(|id| found.remove(id)).collect())
    }

    fn scan_subjects(
        &self,
        gallery: &str,
        each: &mut dyn FnMut(i64, [u8; 32], i64) -> bool,
    ) -> Result<()> {
        self.db()?.stream(
            "SELECT id, pseudonym, expires FROM subjects WHERE gallery = $1",
            &[&gallery],
            &mut |r| Ok(each(r.try_get(0)?, pseudonym(r, 1)?, r.try_get(2)?)),
        )
    }

    fn scan_templates(
        &self,
        gallery: &str,
        each: &mut dyn FnMut(i64, Vec<u8>) -> bool,
    ) -> Result<()> {
        self.db()?.stream(
            "SELECT t.subject, t.sealed FROM templates t JOIN subjects s ON s.id = t.subject
             WHERE s.gallery = $1",
            &[&gallery],
            &mut |r| Ok(each(r.try_get(0)?, r.try_get(1)?)),
        )
    }

    fn template_counts(&self, gallery: &str) -> Result<(u64, Option<u64>)> {
        let r = self.db()?.one(
            "SELECT COALESCE(SUM(c), 0)::BIGINT, MAX(c) FROM (SELECT COUNT(*) AS c FROM templates t
             JOIN subjects s ON s.id = t.subject WHERE s.gallery = $1 GROUP BY t.subject) AS per",
            &[&gallery],
        )?;
        let n: i64 = r.try_get(0)?;
        let max: Option<i64> = r.try_get(1)?;
        Ok((n.max(0) as u64, max.map(|m| m.max(0) as u64)))
    }

    fn scan_keyed_templates(
        &self,
        gallery: &str,
        each: &mut dyn FnMut(KeyedTemplate) -> bool,
    ) -> Result<()> {
        // The two databases cannot be joined in one query: the gallery's wrapped keys are read
        // first (about 100 bytes a subject), then the templates streamed and matched to them. A
        // subject without a key has been erased and is left out, as the embedded join does.
        let mut wrapped: HashMap<[u8; 32], Vec<u8>> = HashMap::new();
        self.keys.scan_wrapped(gallery, &mut |p, w| {
            wrapped.insert(p, w);
        })?;
        self.db()?.stream(
            "SELECT t.id, s.expires, s.pseudonym, t.sealed FROM templates t
             JOIN subjects s ON s.id = t.subject WHERE s.gallery = $1",
            &[&gallery],
            &mut |r| {
                let ps = pseudonym(r, 2)?;
                let Some(w) = wrapped.get(&ps) else {
                    return Ok(true);
                };
                Ok(each(KeyedTemplate {
                    id: r.try_get(0)?,
                    expires: r.try_get(1)?,
                    pseudonym: ps,
                    wrapped: w.clone(),
                    sealed: r.try_get(3)?,
                }))
            },
        )
    }
}
