//! Database files and their schemas, and how connections are opened.

use super::*;

pub(super) const FORMAT: i64 = 1;

pub(super) const STORE_SCHEMA: &str = "
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

pub(super) const KEYS_SCHEMA: &str = "
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
pub(super) fn migrate_keys(keys: &Connection) -> Result<()> {
    let has_pid = keys
        .prepare("SELECT 1 FROM pragma_table_info('pending') WHERE name = 'pid'")?
        .exists([])?;
    if !has_pid {
        keys.execute_batch("ALTER TABLE pending ADD COLUMN pid INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
}

pub(super) fn open_db(path: &Path, schema: &str) -> Result<Connection> {
    crate::files::secure_file(path)?;
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
pub(super) trait WriteTx {
    fn write_tx(&self) -> rusqlite::Result<rusqlite::Transaction<'_>>;
}

impl WriteTx for Connection {
    fn write_tx(&self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        rusqlite::Transaction::new_unchecked(self, rusqlite::TransactionBehavior::Immediate)
    }
}
