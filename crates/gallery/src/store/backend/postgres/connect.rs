//! Connecting: connection strings (TLS included), the pool and its connections, and which
//! PostgreSQL errors mean "unavailable, retry".

use super::*;
use ::postgres::config::SslMode;
use ::postgres::types::FromSqlOwned;
use ::postgres::{Client, NoTls, Statement};
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connections per database and node: reads of a loading gallery run beside the service's
/// short queries and one writer.
pub(super) const POOL_SIZE: u32 = 8;
/// How long a request waits for a connection (or a failed-over primary) before it is refused
/// as unavailable.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLSTATE classes and codes that mean "not now, try again" rather than "wrong": connection
/// exceptions (08), an operator or failover shutting the server down (57P01-57P03), a standby
/// that is read-only (25006) or still recovering.
pub(super) fn is_unavailable(e: &::postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(c) => {
            let c = c.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "25006" | "53300")
        }
        // No SQLSTATE: a problem reaching the server (retry), or one on this side — a value that
        // does not convert, a wrong parameter count — which no retry mends.
        None => e.as_db_error().is_none() && !is_client_side(e),
    }
}

/// The client's own errors: converting a parameter or a column, a statement used wrongly, a bad
/// connection string. tokio-postgres keeps its error kinds private; its messages name them
/// (each starts with its kind's text), and the test on these pins them.
fn is_client_side(e: &::postgres::Error) -> bool {
    const CLIENT_SIDE: [&str; 7] = [
        "error serializing parameter",
        "error deserializing column",
        "invalid column",
        "expected ",
        "query returned an unexpected number of rows",
        "invalid connection string",
        "invalid configuration",
    ];
    let text = e.to_string();
    CLIENT_SIDE.iter().any(|k| text.starts_with(k))
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
    pub(super) client: DropAnywhere,
    prepared: HashMap<&'static str, Statement>,
}

/// A client that may be dropped on any thread. The blocking client closes its connection by
/// blocking on its own runtime, which tokio forbids on a thread that drives async tasks (a
/// server dropping its store at shutdown, a pool dropped in an async test): there the close is
/// handed to a short-lived plain thread instead.
pub(super) struct DropAnywhere(Option<Client>);

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

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Conn {
    pub(super) fn prepare(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql)?;
        self.prepared.insert(sql, st.clone());
        Ok(st)
    }

    pub(super) fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        let st = self.prepare(sql)?;
        Ok(self.client.execute(&st, params)?)
    }

    pub(super) fn opt(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>> {
        let st = self.prepare(sql)?;
        Ok(self.client.query_opt(&st, params)?)
    }

    pub(super) fn one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row> {
        let st = self.prepare(sql)?;
        Ok(self.client.query_one(&st, params)?)
    }

    pub(super) fn all(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        let st = self.prepare(sql)?;
        Ok(self.client.query(&st, params)?)
    }

    /// The first column of the row `sql` returns, if it returns one.
    pub(super) fn value<T: FromSqlOwned>(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<T>> {
        self.opt(sql, params)?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    /// The first column of every row `sql` returns.
    pub(super) fn column<T: FromSqlOwned>(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<T>> {
        self.all(sql, params)?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    /// Streams the rows of `sql` to `each` without buffering the result; `each` returns false
    /// to stop.
    pub(super) fn stream(
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
#[derive(Clone)]
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

pub(super) type Pool = r2d2::Pool<Manager>;
pub(super) type Pooled = r2d2::PooledConnection<Manager>;

/// Splits libpq's `sslrootcert` parameter (which tokio-postgres does not know) off a connection
/// URL (`…?sslrootcert=F&…`) or key-value string (`… sslrootcert=F …`).
pub(super) fn take_root_cert(url: &str) -> (String, Option<String>) {
    // The parameters, how they are joined, and what stays in front of them.
    let (head, params, sep) = match url.split_once('?') {
        Some((head, query)) => (head, query.split('&').collect::<Vec<_>>(), "&"),
        None if url.contains("://") => return (url.to_string(), None),
        None => ("", url.split_whitespace().collect(), " "),
    };
    let mut root = None;
    let rest: Vec<&str> = params
        .into_iter()
        .filter(|kv| match kv.strip_prefix("sslrootcert=") {
            Some(v) => {
                root = Some(v.to_string());
                false
            }
            None => true,
        })
        .collect();
    let url = match (head, rest.is_empty()) {
        ("", _) => rest.join(sep),
        (head, true) => head.to_string(),
        (head, false) => format!("{head}?{}", rest.join(sep)),
    };
    (url, root)
}

/// The TLS client for `sslrootcert`: rustls (ring), those roots only.
pub(super) fn tls_to(root: &str) -> Result<MakeRustlsConnect> {
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
pub(super) fn parse_url(url: &str) -> Result<(::postgres::Config, Option<MakeRustlsConnect>)> {
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
pub(super) fn database_identity(c: &::postgres::Config) -> (String, String) {
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

/// Connections to the record store's database outside the pool: the change feed's.
pub(super) fn manager((config, tls): (::postgres::Config, Option<MakeRustlsConnect>)) -> Manager {
    Manager { config, tls }
}

/// The change feed: one connection of its own that LISTENs for `facegate_changes`. Keepalives
/// are short on it, because it only reads: a primary that vanished without closing the
/// connection (a host lost, not a process) is noticed within about 10 s, not the system's
/// two hours, and the feed is opened again on whichever host is now the primary.
pub(super) struct PgNotices {
    client: DropAnywhere,
}

impl PgNotices {
    pub(super) fn listen(manager: &Manager) -> Result<PgNotices> {
        let mut manager = manager.clone();
        manager
            .config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(2);
        let mut conn = r2d2::ManageConnection::connect(&manager)?;
        conn.client.batch_execute("LISTEN facegate_changes")?;
        Ok(PgNotices {
            client: conn.client,
        })
    }
}

impl ChangeNotices for PgNotices {
    fn wait(&mut self, timeout: Duration) -> Result<Vec<String>> {
        let mut out = Vec::new();
        {
            let mut notices = self.client.notifications();
            let first = notices.timeout_iter(timeout).next()?;
            if let Some(n) = first {
                out.push(n.payload().to_string());
                let mut more = notices.iter();
                while let Some(n) = more.next()? {
                    out.push(n.payload().to_string());
                }
            }
        }
        // The iterators end the same way on a timeout and on a closed connection.
        if self.client.is_closed() {
            return Err(GalleryError::Unavailable(
                "PostgreSQL: the change feed's connection was closed".into(),
            ));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

pub(super) fn pool(manager: Manager, schema: &str) -> Result<Pool> {
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
pub(super) fn node_id() -> String {
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
