//! The data directory and its master key: where the key comes from, how a fresh directory gets
//! one, how an interrupted rotation is recognised and finished. Library code returns notices;
//! the caller decides how to show them.

use crate::{AppError, Result};
use gallery::crypto::{self, LocalKeyRing};
use gallery::store::backend::postgres::PgBackend;
use gallery::store::backend::sqlite::SqliteBackend;
use gallery::store::backend::Backend;
use gallery::store::system_clock;
use gallery::{Context, Store};
use std::path::{Path, PathBuf};

/// Where the gallery's records and keys are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// `store.db` and `keys.db` in the data directory (the default).
    Embedded,
    /// Two PostgreSQL databases (several facegate nodes may share them): the record store and
    /// the key store, as libpq connection strings or URLs.
    Postgres { store: String, keys: String },
}

impl Storage {
    /// PostgreSQL at `store`, with its key store at `keys` or, when not given, the same server's
    /// database named after the store's with `_keys` appended.
    pub fn postgres(store: &str, keys: Option<&str>) -> Result<Storage> {
        let keys = match keys {
            Some(k) => k.to_string(),
            None => PgBackend::default_keys_url(store)?,
        };
        Ok(Storage::Postgres {
            store: store.to_string(),
            keys,
        })
    }

    /// The backend, connected. `data` is the local data directory (the embedded files live there).
    pub fn backend(&self, data: &Path) -> Result<Box<dyn Backend>> {
        Ok(match self {
            Storage::Embedded => {
                gallery::files::secure_dir(data)?;
                Box::new(SqliteBackend::open(data)?)
            }
            Storage::Postgres { store, keys } => Box::new(PgBackend::open(store, keys)?),
        })
    }

    /// Whether the store was ever initialised (a fresh one may get a new master key file).
    fn initialised(&self, data: &Path, backend: &dyn Backend) -> Result<bool> {
        Ok(match self {
            Storage::Embedded => Store::exists(data),
            Storage::Postgres { .. } => backend.meta("format")?.is_some(),
        })
    }
}

/// Where the master key comes from.
#[derive(Debug, Clone)]
pub enum MasterKey {
    /// 64 hex characters given directly (e.g. `FACEGATE_MASTER_KEY`, set by a secrets manager).
    Hex(String),
    /// A key file, mode 0600; created on first use of a fresh data directory.
    File(PathBuf),
}

/// Something the operator should know about how the store was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A new master key file was written.
    CreatedKey(PathBuf),
    /// A rotation was interrupted: blobs may be wrapped by either key until it is finished.
    InterruptedRotation,
    /// Crash recovery could not finish (e.g. a full disk); reads work, writes retry it.
    RecoveryPending(String),
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::CreatedKey(p) => write!(
                f,
                "created master key {} (mode 0600); keep a copy off this disk — without it the data is unreadable",
                p.display()
            ),
            Notice::InterruptedRotation => write!(
                f,
                "an interrupted key rotation was found; run `facegate keys rotate` to finish it"
            ),
            Notice::RecoveryPending(why) => write!(
                f,
                "crash recovery could not finish ({why}); reads work, and the next write retries it"
            ),
        }
    }
}

/// The file a rotation writes its new key to before rewrapping anything.
fn pending_key(path: &Path) -> PathBuf {
    path.with_extension("key.new")
}

/// The key ring for `key`: a fresh directory (`create`) gets a key file; a rotation that was
/// interrupted opens with both keys.
pub fn key_ring(key: &MasterKey, create: bool) -> Result<(LocalKeyRing, Vec<Notice>)> {
    let path = match key {
        MasterKey::Hex(hex) => {
            return Ok((LocalKeyRing::new(crypto::parse_master_key(hex)?), vec![]))
        }
        MasterKey::File(p) => p,
    };
    let mut notices = Vec::new();
    if !path.exists() {
        if !create {
            return Err(AppError::Refused(format!(
                "master key file {} is missing (set --master-key or FACEGATE_MASTER_KEY)",
                path.display()
            )));
        }
        crypto::write_master_key_file(path, &*crypto::random_key()?)?;
        notices.push(Notice::CreatedKey(path.clone()));
    }
    let current = crypto::read_master_key_file(path)?;
    let pending = pending_key(path);
    if pending.exists() {
        let new = crypto::read_master_key_file(&pending)?;
        notices.push(Notice::InterruptedRotation);
        return Ok((LocalKeyRing::new(current).with_previous(new), notices));
    }
    Ok((LocalKeyRing::new(current), notices))
}

/// Open (or create) the store with its master key; `data` is the local data directory (the
/// embedded databases, or a PostgreSQL node's `audit.head` mirror).
pub fn open_store(data: &Path, storage: &Storage, key: &MasterKey) -> Result<(Store, Vec<Notice>)> {
    // Embedded: a key file is created with a fresh directory (before the databases exist).
    let fresh = match storage {
        Storage::Embedded => !Store::exists(data),
        Storage::Postgres { .. } => false,
    };
    let backend = storage.backend(data)?;
    let create = fresh || !storage.initialised(data, &*backend)?;
    let (ring, mut notices) = key_ring(key, create)?;
    let store = Store::with_backend(data, backend, Box::new(ring), system_clock())?;
    notices.extend(store.recovery_pending().map(Notice::RecoveryPending));
    Ok((store, notices))
}

/// Move a deployment from one storage to another (embedded ⇄ PostgreSQL): everything copied
/// as stored and verified on the target (`gallery::store::migrate`), then the target opened
/// with the master key — proof the key opens what was copied — and the migration recorded in
/// its audit chain. `data` is the local directory for the target's `audit.head` mirror.
pub fn migrate(
    data: &Path,
    from: (&Path, &Storage),
    to: (&Path, &Storage),
    key: &MasterKey,
    ctx: &Context,
) -> Result<gallery::store::migrate::Migration> {
    if from.1 == to.1 && (from.1 != &Storage::Embedded || from.0 == to.0) {
        return Err(AppError::Refused(
            "source and target are the same store".into(),
        ));
    }
    let source = from.1.backend(from.0)?;
    if !from.1.initialised(from.0, &*source)? {
        return Err(AppError::Refused(
            "the source holds no facegate store".into(),
        ));
    }
    // Opening the source once settles any unfinished crash recovery.
    let (ring, _) = key_ring(key, false)?;
    drop(Store::with_backend(
        from.0,
        from.1.backend(from.0)?,
        Box::new(ring),
        system_clock(),
    )?);
    let target = to.1.backend(to.0)?;
    let report = gallery::store::migrate::copy_backend(&*source, &*target)?;
    let (ring, _) = key_ring(key, false)?;
    let store = Store::with_backend(data, target, Box::new(ring), system_clock())?;
    let describe = |s: &Storage| match s {
        Storage::Embedded => "embedded",
        Storage::Postgres { .. } => "postgresql",
    };
    store.audit_event(
        ctx,
        gallery::audit::AuditEvent {
            action: "store-migrate".into(),
            outcome: "migrated".into(),
            details: serde_json::json!({
                "from": describe(from.1),
                "to": describe(to.1),
                "copied": &report,
            }),
            ..Default::default()
        },
    )?;
    Ok(report)
}

/// Rotate the master key of `data` (admin): the new key reaches the disk before anything is
/// rewrapped, so a crash at any point leaves every blob openable by one of the two files, and a
/// rerun finishes the job. Returns the keys rewrapped and the new key's id.
pub fn rotate_master_key(
    data: &Path,
    storage: &Storage,
    key: &MasterKey,
    ctx: &Context,
) -> Result<(usize, String)> {
    let MasterKey::File(path) = key else {
        return Err(AppError::Refused(
            "the master key comes from FACEGATE_MASTER_KEY: rotate it in the system that sets it (or use a key file)".into(),
        ));
    };
    let backend = storage.backend(data)?;
    if !storage.initialised(data, &*backend)? {
        return Err(AppError::Refused(format!(
            "{} is not initialised",
            data.display()
        )));
    }
    let pending = pending_key(path);
    if !pending.exists() {
        crypto::write_master_key_file(&pending, &*crypto::random_key()?)?;
    }
    let old = crypto::read_master_key_file(path)?;
    let new = crypto::read_master_key_file(&pending)?;
    let ring = LocalKeyRing::new(old.clone()).with_previous(new.clone());
    let mut store = Store::with_backend(data, backend, Box::new(ring), system_clock())?;
    let target = LocalKeyRing::new(new).with_previous(old);
    let n = store.rotate_master(ctx, Box::new(target))?;
    std::fs::rename(&pending, path).map_err(|e| gallery::GalleryError::io(path, e))?;
    Ok((n, store.master_key_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_gets_a_key_and_an_interrupted_rotation_opens_with_both() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let key = MasterKey::File(data.join("master.key"));
        let (_, notices) = open_store(&data, &Storage::Embedded, &key).unwrap();
        assert!(matches!(notices.as_slice(), [Notice::CreatedKey(_)]));
        let (_, notices) = open_store(&data, &Storage::Embedded, &key).unwrap();
        assert!(notices.is_empty());
        // A rotation that wrote its new key and stopped.
        crypto::write_master_key_file(&data.join("master.key.new"), &crypto::random_key().unwrap())
            .unwrap();
        let (_, notices) = open_store(&data, &Storage::Embedded, &key).unwrap();
        assert_eq!(notices, vec![Notice::InterruptedRotation]);
        let admin = Context::new("t", gallery::Role::Admin, "test");
        let (n, _) = rotate_master_key(&data, &Storage::Embedded, &key, &admin).unwrap();
        assert!(n >= 2, "pseudonym and audit keys at least");
        assert!(!data.join("master.key.new").exists());
        let (_, notices) = open_store(&data, &Storage::Embedded, &key).unwrap();
        assert!(notices.is_empty());
        // A missing key file for an existing directory is refused, not replaced.
        std::fs::remove_file(data.join("master.key")).unwrap();
        assert!(open_store(&data, &Storage::Embedded, &key).is_err());
    }
}
