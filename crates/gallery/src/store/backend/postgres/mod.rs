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
//! TLS: `sslmode=require` with `sslrootcert=FILE` (PEM, libpq's parameter names) connects over
//! TLS (rustls) and verifies the server's certificate and host name against that file — what
//! libpq calls verify-full; there is no unverified TLS. Without them connections are plain (for a
//! private network or a local socket); `sslmode=require` without a root certificate is refused.

use super::*;
use crate::error::GalleryError;
use ::postgres::config::SslMode;
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::types::ToSql;
use ::postgres::{Client, NoTls, Row, Statement};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

mod keys;

/// Connections per database and node: reads of a loading gallery run beside the service's
/// short queries and one writer.
const POOL_SIZE: u32 = 8;
/// How long a request waits for a connection (or a failed-over primary) before it is refused
/// as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// SQLSTATE classes and codes that mean "not now, try again" rather than "wrong": connection
/// exceptions (08), an operator or failover shutting the server down (57P01-57P03), a standby
/// that is read-only (25006) or still recovering.
fn is_unavailable(e: &::postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(c) => {
            let c = c.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "25006" | "53300")
        }
        // No SQLSTATE: an I/O error or a refused connection.
        None => e.as_db_error().is_none(),
    }
}

impl From<::postgres::Error> for GalleryError {
    fn from(e: ::postgres::Error) -> Self {
        if is_unavailable(&e) {
            GalleryError::Unavailable(format!("PostgreSQL: {e}"))
        } else {
            GalleryError::Storage(format!("PostgreSQL: {e}"))
        }
    }
}

impl From<r2d2::Error> for GalleryError {
    fn from(e: r2d2::Error) -> Self {
        GalleryError::Unavailable(format!("PostgreSQL: no connection: {e}"))
    }
}

/// One pooled connection with its prepared statements.
pub(crate) struct Conn {
    client: DropAnywhere,
    prepared: HashMap<&'static str, Statement>,
}

/// A client that may be dropped on any thread. The blocking client closes its connection by
/// blocking on its own runtime, which tokio forbids on a thread that drives async tasks (a
/// server dropping its store at shutdown, a pool dropped in an async test): there the close is
/// handed to a short-lived plain thread instead.
struct DropAnywhere(Option<Client>);

impl std::ops::Deref for DropAnywhere {
    type Target = Client;
    fn deref(&self) -> &Client {
        #[allow(clippy::expect_used)]
        self.0
            .as_ref()
            .expect("the client is taken only when dropped")
    }
}

impl std::ops::DerefMut for DropAnywhere {
    fn deref_mut(&mut self) -> &mut Client {
        #[allow(clippy::expect_used)]
        self.0
            .as_mut()
            .expect("the client is taken only when dropped")
    }
}

impl Drop for DropAnywhere {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("facegate-pg-close".into())
                    .spawn(move || drop(client));
            }
        }
    }
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Conn {
    fn prepare(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql)?;
        self.prepared.insert(sql, st.clone());
        Ok(st)
    }

    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        let st = self.prepare(sql)?;
        Ok(self.client.execute(&st, params)?)
    }

    fn opt(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>> {
        let st = self.prepare(sql)?;
        Ok(self.client.query_opt(&st, params)?)
    }

    fn one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row> {
        let st = self.prepare(sql)?;
        Ok(self.client.query_one(&st, params)?)
    }

    fn all(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        let st = self.prepare(sql)?;
        Ok(self.client.query(&st, params)?)
    }

    /// Streams the rows of `sql` to `each` without buffering the result; `each` returns false
    /// to stop.
    fn stream(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
        each: &mut dyn FnMut(&Row) -> Result<bool>,
    ) -> Result<()> {
        let st = self.prepare(sql)?;
        let mut rows = self.client.query_raw(&st, params.iter().copied())?;
        while let Some(row) = rows.next()? {
            if !each(&row)? {
                break;
            }
        }
        Ok(())
    }
}

/// r2d2's view of a database: how to connect (plain, or TLS verified against the given roots)
/// and how to tell a connection is still good.
pub(crate) struct Manager {
    config: ::postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = ::postgres::Error;

    fn connect(&self) -> std::result::Result<Conn, ::postgres::Error> {
        let client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone())?,
            None => self.config.connect(NoTls)?,
        };
        Ok(Conn {
            client: DropAnywhere(Some(client)),
            prepared: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> std::result::Result<(), ::postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.client.is_closed()
    }
}

type Pool = r2d2::Pool<Manager>;
type Pooled = r2d2::PooledConnection<Manager>;

/// Splits libpq's `sslrootcert` parameter (which tokio-postgres does not know) off a connection
/// URL (`…?sslrootcert=F&…`) or key-value string (`… sslrootcert=F …`).
fn take_root_cert(url: &str) -> (String, Option<String>) {
    if let Some((head, query)) = url.split_once('?') {
        let mut root = None;
        let rest: Vec<&str> = query
            .split('&')
            .filter(|kv| match kv.strip_prefix("sslrootcert=") {
                Some(v) => {
                    root = Some(v.to_string());
                    false
                }
                None => true,
            })
            .collect();
        let url = if rest.is_empty() {
            head.to_string()
        } else {
            format!("{head}?{}", rest.join("&"))
        };
        return (url, root);
    }
    if url.contains("://") {
        return (url.to_string(), None);
    }
    let mut root = None;
    let rest: Vec<&str> = url
        .split_whitespace()
        .filter(|kv| match kv.strip_prefix("sslrootcert=") {
            Some(v) => {
                root = Some(v.to_string());
                false
            }
            None => true,
        })
        .collect();
    (rest.join(" "), root)
}

/// The TLS client for `sslrootcert`: rustls (ring), those roots only.
fn tls_to(root: &str) -> Result<MakeRustlsConnect> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |e: String| GalleryError::Invalid(format!("sslrootcert {root}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A connection string parsed (with its TLS client when it asks for TLS), the password kept
/// out of anything printed.
fn parse_url(url: &str) -> Result<(::postgres::Config, Option<MakeRustlsConnect>)> {
    let (url, root) = take_root_cert(url);
    let mut config = ::postgres::Config::from_str(&url)
        .map_err(|e| GalleryError::Invalid(format!("PostgreSQL connection string: {e}")))?;
    let tls = match (root, config.get_ssl_mode()) {
        (Some(_), SslMode::Disable) => {
            return Err(GalleryError::Invalid(
                "sslrootcert with sslmode=disable: choose one".into(),
            ))
        }
        (Some(root), _) => {
            // Verified TLS or nothing: no fallback to plain text.
            config.ssl_mode(SslMode::Require);
            Some(tls_to(&root)?)
        }
        (None, SslMode::Require) => return Err(GalleryError::Invalid(
            "sslmode=require needs sslrootcert=FILE: facegate verifies the server's certificate"
                .into(),
        )),
        (None, _) => {
            config.ssl_mode(SslMode::Disable);
            None
        }
    };
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("facegate");
    }
    Ok((config, tls))
}

/// The database a connection string names: (hosts and ports, database name), for telling two
/// strings apart.
fn database_identity(c: &::postgres::Config) -> (String, String) {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .zip(c.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| format!("{h:?}:{p}"))
        .collect();
    let db = c
        .get_dbname()
        .or(c.get_user())
        .unwrap_or_default()
        .to_string();
    (hosts.join(","), db)
}

fn pool(
    (config, tls): (::postgres::Config, Option<MakeRustlsConnect>),
    schema: &str,
) -> Result<Pool> {
    let manager = Manager { config, tls };
    // One connection made here first, so a database that cannot be reached fails the start with
    // PostgreSQL's own reason (not a pool timeout), and the schema is in place before any use.
    let mut first = r2d2::ManageConnection::connect(&manager)?;
    // Two nodes starting at once must not race on CREATE TABLE IF NOT EXISTS (it is not atomic
    // against itself in PostgreSQL): the schema is created under a transaction-scoped lock.
    let mut tx = first.client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock(7466198462)", &[])?;
    tx.batch_execute(schema)?;
    tx.commit()?;
    drop(first);
    Ok(r2d2::Pool::builder()
        .max_size(POOL_SIZE)
        .min_idle(Some(1))
        .connection_timeout(CONNECT_TIMEOUT)
        .build_unchecked(manager))
}

/// This node's name in pending marks: host name and boot id, so crash recovery checks a mark's
/// process only where that process ran (see `Mark::here`).
fn node_id() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let host = read("/proc/sys/kernel/hostname");
    let boot = read("/proc/sys/kernel/random/boot_id");
    if host.is_empty() || boot.is_empty() {
        // Unknown: a name no other process has, so every other process's marks count as
        // elsewhere (waited out, never judged).
        let mut r = [0u8; 16];
        let _ = getrandom::getrandom(&mut r);
        return hex::encode(r);
    }
    format!("{host}/{boot}")
}

/// The record store and the key store on two PostgreSQL databases.
pub struct PgBackend {
    db: Pool,
    keys: PgKeys,
}

/// The key store database (see [`keys`]).
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
        let db = pool(store, STORE_SCHEMA)?;
        let keys = pool(keys, keys::KEYS_SCHEMA)?;
        Ok(PgBackend {
            db,
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
        Ok(Box::new(StoreTx {
            tx: Tx::begin(self.db()?)?,
            tail: None,
            audit: AuditRows::default(),
            changes: ChangeRows::default(),
        }))
    }

    fn keys(&self) -> &dyn KeyStore {
        &self.keys
    }

    fn gallery_names(&self) -> Result<Vec<String>> {
        self.db()?
            .all("SELECT name FROM galleries ORDER BY name", &[])?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
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
            .opt("SELECT seed FROM galleries WHERE name = $1", &[&name])?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    fn generation(&self, name: &str) -> Result<Option<i64>> {
        self.db()?
            .opt("SELECT generation FROM galleries WHERE name = $1", &[&name])?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
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
        let images = db
            .all(
                "SELECT sealed FROM images WHERE subject = $1 ORDER BY id",
                &[&subject],
            )?
            .iter()
            .map(|i| Ok(i.try_get(0)?))
            .collect::<Result<_>>()?;
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
            .opt("SELECT reference FROM subjects WHERE id = $1", &[&subject])?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    fn subject_templates(&self, gallery: &str, pseudonym: &[u8], now: i64) -> Result<Vec<Vec<u8>>> {
        self.db()?
            .all(
                "SELECT t.sealed FROM templates t JOIN subjects s ON t.subject = s.id
                 WHERE s.gallery = $1 AND s.pseudonym = $2 AND s.expires > $3 ORDER BY t.id",
                &[&gallery, &pseudonym, &now],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    fn subject_image(&self, gallery: &str, pseudonym: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db()?
            .opt(
                "SELECT i.sealed FROM images i JOIN subjects s ON i.subject = s.id
                 WHERE s.gallery = $1 AND s.pseudonym = $2 ORDER BY i.id LIMIT 1",
                &[&gallery, &pseudonym],
            )?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    fn expired(&self, gallery: &str, now: i64) -> Result<Vec<Vec<u8>>> {
        self.db()?
            .all(
                "SELECT pseudonym FROM subjects WHERE gallery = $1 AND expires <= $2",
                &[&gallery, &now],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
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
            .all("SELECT receipt FROM receipts ORDER BY id", &[])?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
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

/// A transaction on a pooled connection, serialised against every writer of the same database
/// by the `writer` row lock; rolled back when dropped uncommitted.
struct Tx {
    conn: Pooled,
    open: bool,
}

impl Tx {
    fn begin(mut conn: Pooled) -> Result<Tx> {
        conn.client.batch_execute("BEGIN")?;
        let mut tx = Tx { conn, open: true };
        tx.conn
            .one("SELECT id FROM writer WHERE id = 1 FOR UPDATE", &[])?;
        Ok(tx)
    }

    fn commit(mut self) -> Result<()> {
        self.open = false;
        self.conn.client.batch_execute("COMMIT")?;
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            // A connection whose ROLLBACK fails is closed and the pool drops it (has_broken).
            let _ = self.conn.client.batch_execute("ROLLBACK");
        }
    }
}

/// A record store transaction. Rows nothing reads back inside the transaction — audit records
/// with their heads, recorded changes — are buffered and written at commit in one statement
/// each (bulk enrolment appends one of each per subject); the chain's tail is read once (the
/// writer lock keeps it ours) and then follows this transaction's own appends.
struct StoreTx {
    tx: Tx,
    tail: Option<Option<(u64, Vec<u8>)>>,
    audit: AuditRows,
    changes: ChangeRows,
}

#[derive(Default)]
struct AuditRows {
    seq: Vec<i64>,
    record: Vec<String>,
    hash: Vec<Vec<u8>>,
    sig: Vec<Vec<u8>>,
}

#[derive(Default)]
struct ChangeRows {
    gallery: Vec<String>,
    generation: Vec<i64>,
    kind: Vec<String>,
    subject: Vec<i64>,
    templates: Vec<String>,
}

impl StoreTx {
    fn conn(&mut self) -> &mut Conn {
        &mut self.tx.conn
    }

    /// Write the buffered rows (before the commit).
    fn flush(&mut self) -> Result<()> {
        if !self.audit.seq.is_empty() {
            let a = std::mem::take(&mut self.audit);
            self.tx.conn.execute(
                "WITH r AS (INSERT INTO audit (seq, record, hash)
                            SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::BYTEA[]))
                 INSERT INTO audit_heads (seq, hash, sig)
                 SELECT * FROM unnest($1::BIGINT[], $3::BYTEA[], $4::BYTEA[])",
                &[&a.seq, &a.record, &a.hash, &a.sig],
            )?;
        }
        if !self.changes.generation.is_empty() {
            let c = std::mem::take(&mut self.changes);
            self.tx.conn.execute(
                "INSERT INTO changes (gallery, generation, kind, subject, templates)
                 SELECT g, n, k, s, string_to_array(t, ',')::BIGINT[]
                 FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[])
                      AS u(g, n, k, s, t)",
                &[&c.gallery, &c.generation, &c.kind, &c.subject, &c.templates],
            )?;
        }
        Ok(())
    }
}

impl WriteTxn for StoreTx {
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        meta(self.conn(), key)
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.conn().execute(
            "INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            &[&key, &value],
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
            "INSERT INTO galleries (name, policy, seed, created) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&name, &policy, &seed, &created],
        )?;
        Ok(n == 1)
    }

    fn set_policy(&mut self, name: &str, policy: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE galleries SET policy = $1 WHERE name = $2",
            &[&policy, &name],
        )?;
        Ok(())
    }

    fn set_kind(&mut self, name: &str, dim: i64, metric: &str, pack: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE galleries SET dim = $2, metric = $3, pack = $4 WHERE name = $1",
            &[&name, &dim, &metric, &pack],
        )?;
        Ok(())
    }

    fn set_seed(&mut self, name: &str, seed: &[u8]) -> Result<()> {
        self.conn().execute(
            "UPDATE galleries SET seed = $1 WHERE name = $2",
            &[&seed, &name],
        )?;
        Ok(())
    }

    fn seeds(&mut self) -> Result<Vec<(String, Vec<u8>)>> {
        self.conn()
            .all("SELECT name, seed FROM galleries", &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    fn bump_generation(&mut self, name: &str) -> Result<i64> {
        let generation: i64 = self
            .conn()
            .one(
                "UPDATE galleries SET generation = generation + 1 WHERE name = $1 RETURNING generation",
                &[&name],
            )?
            .try_get(0)?;
        // Changes too old to follow go, once per transaction (not per recorded row).
        let oldest = generation - CHANGES_KEPT;
        self.conn().execute(
            "DELETE FROM changes WHERE gallery = $1 AND generation <= $2",
            &[&name, &oldest],
        )?;
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
        let c = &mut self.changes;
        c.gallery.push(gallery.to_string());
        c.generation.push(generation);
        c.kind.push(kind.to_string());
        c.subject.push(subject);
        c.templates.push(ids_text(templates));
        Ok(())
    }

    fn insert_subject(&mut self, s: &NewSubject<'_>) -> Result<Option<i64>> {
        self.conn()
            .opt(
                "INSERT INTO subjects (gallery, pseudonym, reference, consent, enrolled, expires)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
                &[
                    &s.gallery,
                    &s.pseudonym,
                    &s.reference,
                    &s.consent,
                    &s.enrolled,
                    &s.expires,
                ],
            )?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    fn insert_template(&mut self, subject: i64, sealed: &[u8]) -> Result<i64> {
        Ok(self
            .conn()
            .one(
                "INSERT INTO templates (subject, sealed) VALUES ($1, $2) RETURNING id",
                &[&subject, &sealed],
            )?
            .try_get(0)?)
    }

    fn insert_image(&mut self, subject: i64, sealed: &[u8]) -> Result<()> {
        self.conn().execute(
            "INSERT INTO images (subject, sealed) VALUES ($1, $2)",
            &[&subject, &sealed],
        )?;
        Ok(())
    }

    fn subject_id(&mut self, gallery: &str, pseudonym: &[u8]) -> Result<Option<i64>> {
        self.conn()
            .opt(
                "SELECT id FROM subjects WHERE gallery = $1 AND pseudonym = $2",
                &[&gallery, &pseudonym],
            )?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    fn template_ids(&mut self, subject: i64) -> Result<Vec<i64>> {
        self.conn()
            .all(
                "SELECT id FROM templates WHERE subject = $1 ORDER BY id",
                &[&subject],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    fn delete_subject(&mut self, subject: i64) -> Result<()> {
        // Templates and images go with it (ON DELETE CASCADE).
        self.conn()
            .execute("DELETE FROM subjects WHERE id = $1", &[&subject])?;
        Ok(())
    }

    fn gallery_templates(&mut self, gallery: &str) -> Result<Vec<StoredTemplate>> {
        gallery_templates(self.conn(), gallery)
    }

    fn update_template(&mut self, id: i64, sealed: &[u8]) -> Result<()> {
        self.conn().execute(
            "UPDATE templates SET sealed = $1 WHERE id = $2",
            &[&sealed, &id],
        )?;
        Ok(())
    }

    fn insert_receipt(&mut self, receipt: &str) -> Result<()> {
        self.conn()
            .execute("INSERT INTO receipts (receipt) VALUES ($1)", &[&receipt])?;
        Ok(())
    }

    fn audit_tail(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        if let Some(tail) = &self.tail {
            return Ok(tail.clone());
        }
        let tail = self
            .conn()
            .opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?
            .map(|r| Ok::<_, GalleryError>((seq(r.try_get(0)?), r.try_get(1)?)))
            .transpose()?;
        self.tail = Some(tail.clone());
        Ok(tail)
    }

    fn append_audit(&mut self, seq: u64, record: &str, hash: &[u8], sig: &[u8]) -> Result<()> {
        self.tail = Some(Some((seq, hash.to_vec())));
        let a = &mut self.audit;
        a.seq.push(sql_seq(seq));
        a.record.push(record.to_string());
        a.hash.push(hash.to_vec());
        a.sig.push(sig.to_vec());
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        self.flush()?;
        self.tx.commit()
    }
}
