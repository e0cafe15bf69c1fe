//! API keys: shown once at creation, kept only as a SHA-256 of their secret part. Key format:
//! `fg_<id>_<secret>`; the id is public (it is the actor in the audit log).
//!
//! The keys live in the record store's access list (`gallery::Store::access_list`), so every
//! node on a shared store (PostgreSQL) accepts the same keys, `migrate` carries them, and a key
//! is created or revoked in the same transaction as its audit record. A node reads the list at
//! most once per [`FRESH_FOR`] and looks tokens up in memory: a flood of made-up tokens costs no
//! database read, and a key created or revoked anywhere holds on every node within that time.

use gallery::audit::AuditEvent;
use gallery::{Context, GalleryError, Role, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a node answers from the access list it read last.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// The per-node key file of earlier versions, moved into the access list when found.
const OLD_KEY_FILE: &str = "apikeys.db";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] GalleryError),
    #[error("no randomness: {0}")]
    Random(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub role: Role,
    /// Galleries this key may touch; `None` means all.
    pub galleries: Option<Vec<String>>,
    pub created: i64,
    pub revoked: bool,
}

impl ApiKey {
    pub fn may_use(&self, gallery: &str) -> bool {
        self.galleries
            .as_ref()
            .is_none_or(|g| g.iter().any(|x| x == gallery))
    }
}

/// One key as the access list stores it.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    id: String,
    /// Hex SHA-256 of the secret part (see [`hash`]).
    hash: String,
    role: String,
    galleries: Option<Vec<String>>,
    created: i64,
    revoked: bool,
}

/// The access list document (JSON in the record store).
#[derive(Debug, Serialize, Deserialize)]
struct AccessList {
    version: u32,
    keys: Vec<Entry>,
}

const VERSION: u32 = 1;

impl AccessList {
    fn parse(stored: Option<Vec<u8>>) -> Result<AccessList, KeyError> {
        let Some(bytes) = stored else {
            return Ok(AccessList {
                version: VERSION,
                keys: Vec::new(),
            });
        };
        let list: AccessList = serde_json::from_slice(&bytes)
            .map_err(|e| KeyError::Invalid(format!("the stored access list is unreadable: {e}")))?;
        if list.version != VERSION {
            return Err(KeyError::Invalid(format!(
                "access list version {} (this build reads {VERSION})",
                list.version
            )));
        }
        Ok(list)
    }

    fn to_bytes(&self) -> Result<Vec<u8>, GalleryError> {
        serde_json::to_vec(self).map_err(|e| GalleryError::Invalid(e.to_string()))
    }

    fn find(&self, id: &str) -> Option<&Entry> {
        self.keys.iter().find(|k| k.id == id)
    }
}

impl Entry {
    fn key(&self) -> Result<ApiKey, KeyError> {
        Ok(ApiKey {
            id: self.id.clone(),
            role: Role::parse(&self.role).map_err(|e| KeyError::Invalid(e.to_string()))?,
            galleries: self.galleries.clone(),
            created: self.created,
            revoked: self.revoked,
        })
    }
}

fn hash(secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"facegate/api-key/v1\0");
    h.update(secret.as_bytes());
    h.finalize().to_vec()
}

fn random_hex(n: usize) -> Result<String, KeyError> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(hex::encode(b))
}

fn event(action: &str, details: serde_json::Value) -> AuditEvent {
    AuditEvent {
        action: action.into(),
        outcome: "done".into(),
        details,
        ..Default::default()
    }
}

pub struct ApiKeys {
    store: Arc<Store>,
    /// The list as last read, and when.
    cache: Mutex<Option<(Instant, Arc<AccessList>)>>,
    /// Held while reading the list, so a burst of requests after it went stale reads it once.
    reading: Mutex<()>,
}

impl ApiKeys {
    pub fn new(store: Arc<Store>) -> ApiKeys {
        ApiKeys {
            store,
            cache: Mutex::new(None),
            reading: Mutex::new(()),
        }
    }

    /// `new`, after moving the keys of an earlier version's per-node `apikeys.db` in
    /// `data_dir` into the access list (audited as one `apikey-import`; the file is removed
    /// once they are in). Returns how many keys were moved.
    pub fn open(store: Arc<Store>, data_dir: &Path) -> Result<(ApiKeys, usize), KeyError> {
        let keys = ApiKeys::new(store);
        let moved = keys.import_old_file(&data_dir.join(OLD_KEY_FILE))?;
        Ok((keys, moved))
    }

    fn cached(&self) -> Option<Arc<AccessList>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, list)| list.clone())
    }

    fn forget(&self) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The keys in memory if they were read less than [`FRESH_FOR`] ago: nothing that blocks.
    pub fn in_memory(&self) -> Option<KeySnapshot> {
        self.cached().map(KeySnapshot)
    }

    /// The keys, read from the store when the copy in memory is older than [`FRESH_FOR`].
    /// Blocks on the store then (call it off the async threads).
    pub fn snapshot(&self) -> Result<KeySnapshot, KeyError> {
        self.current().map(KeySnapshot)
    }

    fn current(&self) -> Result<Arc<AccessList>, KeyError> {
        if let Some(list) = self.cached() {
            return Ok(list);
        }
        let _one_reader = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = self.cached() {
            return Ok(list);
        }
        let list = Arc::new(AccessList::parse(self.store.access_list()?)?);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// A new key, recorded with its audit record. The returned token is the only copy of the
    /// secret.
    pub fn create(
        &self,
        ctx: &Context,
        role: Role,
        galleries: Option<Vec<String>>,
        now: i64,
    ) -> Result<(String, ApiKey), KeyError> {
        let id = random_hex(8)?;
        let secret = random_hex(32)?;
        let key = ApiKey {
            id: id.clone(),
            role,
            galleries: galleries.clone(),
            created: now,
            revoked: false,
        };
        let entry = Entry {
            id: id.clone(),
            hash: hex::encode(hash(&secret)),
            role: role.as_str().to_string(),
            galleries,
            created: now,
            revoked: false,
        };
        self.store.change_access_list(ctx, |stored| {
            let mut list = AccessList::parse(stored).map_err(into_gallery)?;
            if list.find(&id).is_some() {
                return Err(GalleryError::Invalid("key id drawn twice".into()));
            }
            list.keys.push(entry);
            let details =
                serde_json::json!({"key_id": key.id, "role": key.role, "galleries": key.galleries});
            Ok((list.to_bytes()?, event("apikey-create", details), ()))
        })?;
        self.forget();
        Ok((format!("fg_{id}_{secret}"), key))
    }

    /// Every key (ids, roles, galleries; never secrets), read from the store now.
    pub fn list(&self) -> Result<Vec<ApiKey>, KeyError> {
        AccessList::parse(self.store.access_list()?)?
            .keys
            .iter()
            .map(Entry::key)
            .collect()
    }

    /// Revoke a key, with its audit record. False: no active key has this id (nothing written).
    pub fn revoke(&self, ctx: &Context, id: &str) -> Result<bool, KeyError> {
        let mut absent = false;
        let outcome = self.store.change_access_list(ctx, |stored| {
            let mut list = AccessList::parse(stored).map_err(into_gallery)?;
            let Some(entry) = list.keys.iter_mut().find(|k| k.id == id && !k.revoked) else {
                absent = true;
                return Err(GalleryError::Invalid(format!("no active key with id {id}")));
            };
            entry.revoked = true;
            let details = serde_json::json!({"key_id": id});
            Ok((list.to_bytes()?, event("apikey-revoke", details), ()))
        });
        self.forget();
        match outcome {
            Ok(()) => Ok(true),
            Err(_) if absent => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The key a bearer token belongs to, if it is valid and not revoked. Reads the store at
    /// most once per [`FRESH_FOR`] (and so may block: the server uses [`ApiKeys::in_memory`]
    /// or [`ApiKeys::snapshot`] off its async threads).
    pub fn authenticate(&self, token: &str) -> Result<Option<ApiKey>, KeyError> {
        self.snapshot()?.authenticate(token)
    }

    /// Move the keys of an earlier version's per-node key file into the access list (those
    /// whose id is not there yet), then remove the file.
    fn import_old_file(&self, path: &Path) -> Result<usize, KeyError> {
        if !path.exists() {
            return Ok(0);
        }
        let old = read_old_file(path)?;
        let ids: Vec<String> = old.iter().map(|e| e.id.clone()).collect();
        // Another process on this data directory may have moved them a moment ago.
        let current = AccessList::parse(self.store.access_list()?)?;
        let moved = if ids.iter().all(|id| current.find(id).is_some()) {
            0
        } else {
            self.store.change_access_list_as_service(
            "API keys moved into the record store",
            |stored| {
                let mut list = AccessList::parse(stored).map_err(into_gallery)?;
                let mut moved = Vec::new();
                for entry in old {
                    if list.find(&entry.id).is_none() {
                        moved.push(entry.id.clone());
                        list.keys.push(entry);
                    }
                }
                let details = serde_json::json!({"from": OLD_KEY_FILE, "key_ids": moved, "already_there": ids.len() - moved.len()});
                Ok((list.to_bytes()?, event("apikey-import", details), moved.len()))
            },
            )?
        };
        self.forget();
        // The keys are in the list (committed): the old file holds nothing more.
        for suffix in ["", "-wal", "-shm"] {
            let f = path.with_file_name(format!("{OLD_KEY_FILE}{suffix}"));
            match std::fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(KeyError::Invalid(format!(
                        "removing {} after moving its keys: {e}",
                        f.display()
                    )))
                }
                _ => {}
            }
        }
        Ok(moved)
    }
}

/// The keys as read at one moment: lookups in memory.
pub struct KeySnapshot(Arc<AccessList>);

impl KeySnapshot {
    /// The key a bearer token belongs to, if it is valid and not revoked.
    pub fn authenticate(&self, token: &str) -> Result<Option<ApiKey>, KeyError> {
        let Some(rest) = token.strip_prefix("fg_") else {
            return Ok(None);
        };
        let Some((id, secret)) = rest.split_once('_') else {
            return Ok(None);
        };
        if id.len() != 16 || secret.len() != 64 {
            return Ok(None);
        }
        let Some(entry) = self.0.find(id) else {
            return Ok(None);
        };
        let stored = hex::decode(&entry.hash).unwrap_or_default();
        let given = hash(secret);
        // Compare in constant time (every byte, no early exit).
        let diff = stored
            .iter()
            .zip(&given)
            .fold(stored.len() ^ given.len(), |d, (a, b)| d | (a ^ b) as usize);
        if diff != 0 || entry.revoked {
            return Ok(None);
        }
        entry.key().map(Some)
    }
}

/// Keep a parse failure's message through the store's transaction.
fn into_gallery(e: KeyError) -> GalleryError {
    match e {
        KeyError::Store(g) => g,
        other => GalleryError::Invalid(other.to_string()),
    }
}

/// The keys of an earlier version's `apikeys.db`.
fn read_old_file(path: &Path) -> Result<Vec<Entry>, KeyError> {
    let bad = |e: rusqlite::Error| KeyError::Invalid(format!("reading {}: {e}", path.display()));
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(bad)?;
    let mut st = conn
        .prepare(
            "SELECT id, hash, role, galleries, created, revoked FROM api_keys ORDER BY created, id",
        )
        .map_err(bad)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .map_err(bad)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, hash, role, galleries, created, revoked) = row.map_err(bad)?;
        Role::parse(&role).map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))?;
        out.push(Entry {
            id,
            hash: hex::encode(hash),
            role,
            galleries: galleries.and_then(|g| serde_json::from_str(&g).ok()),
            created,
            revoked: revoked != 0,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gallery::crypto::{self, LocalKeyRing};

    fn store(dir: &Path) -> Arc<Store> {
        let key = crypto::random_key().expect("key");
        Arc::new(
            Store::open(
                dir,
                Box::new(LocalKeyRing::new(key)),
                gallery::store::system_clock(),
            )
            .expect("store"),
        )
    }

    fn admin() -> Context {
        Context::new("admin", Role::Admin, "key administration")
    }

    fn actions(store: &Store) -> Vec<String> {
        store
            .audit_records()
            .expect("records")
            .into_iter()
            .map(|r| r.action)
            .collect()
    }

    #[test]
    fn a_key_made_on_one_node_works_on_another_and_its_revocation_holds_there_within_fresh_for() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(dir.path());
        // Two nodes: two key sets over one store, each with its own copy in memory.
        let (a, b) = (ApiKeys::new(store.clone()), ApiKeys::new(store.clone()));
        let (token, key) = a
            .create(&admin(), Role::Gate, Some(vec!["g1".into()]), 5)
            .expect("create");
        let on_b = b.authenticate(&token).expect("lookup").expect("accepted");
        assert_eq!((on_b.id.as_str(), on_b.role), (key.id.as_str(), Role::Gate));
        assert!(on_b.may_use("g1") && !on_b.may_use("g2"));
        // Wrong secret, malformed tokens: refused.
        let last = if token.ends_with('0') { "1" } else { "0" };
        let wrong = format!("{}{last}", &token[..token.len() - 1]);
        for t in [wrong.as_str(), "fg_x_y", "", "Bearer"] {
            assert!(b.authenticate(t).expect("lookup").is_none(), "{t}");
        }
        // An operator may not make keys; nothing is written then.
        let before = actions(&store);
        let operator = Context::new("op", Role::Operator, "key administration");
        assert!(a.create(&operator, Role::Admin, None, 6).is_err());
        assert_eq!(actions(&store), before);
        // Revoked on A: refused on A at once, and on B once its copy is FRESH_FOR old.
        assert!(a.revoke(&admin(), &key.id).expect("revoke"));
        assert!(a.authenticate(&token).expect("lookup").is_none());
        std::thread::sleep(FRESH_FOR + Duration::from_millis(100));
        assert!(b.authenticate(&token).expect("lookup").is_none());
        // Revoking it again, or an unknown id: false, and no audit record.
        let before = actions(&store);
        assert!(!a.revoke(&admin(), &key.id).expect("revoke"));
        assert!(!a.revoke(&admin(), "0123456789abcdef").expect("revoke"));
        assert_eq!(actions(&store), before);
        let listed = b.list().expect("list");
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked);
        let tail: Vec<String> = before.into_iter().rev().take(2).collect();
        assert_eq!(tail, ["apikey-revoke", "apikey-create"]);
    }

    #[test]
    fn an_earlier_versions_key_file_is_moved_into_the_access_list_once() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(dir.path());
        // The per-node file as earlier versions wrote it: one active key, one revoked.
        let secret = "ab".repeat(32);
        let path = dir.path().join(OLD_KEY_FILE);
        let write_old_file = || {
            let conn = rusqlite::Connection::open(&path).expect("old file");
            conn.execute_batch(
                "CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash BLOB NOT NULL, role TEXT NOT NULL,
                 galleries TEXT, created INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);",
            )
            .expect("schema");
            conn.execute(
                "INSERT INTO api_keys VALUES (?1, ?2, 'operator', '[\"g1\"]', 3, 0), (?3, ?2, 'admin', NULL, 4, 1)",
                rusqlite::params!["00112233445566aa", hash(&secret), "00112233445566bb"],
            )
            .expect("rows");
        };
        write_old_file();
        let (keys, moved) = ApiKeys::open(store.clone(), dir.path()).expect("open");
        assert_eq!(moved, 2);
        assert!(
            !path.exists(),
            "the old file is removed once its keys are in"
        );
        let key = keys
            .authenticate(&format!("fg_00112233445566aa_{secret}"))
            .expect("lookup")
            .expect("the old key still works");
        assert_eq!(
            (key.role, key.galleries),
            (Role::Operator, Some(vec!["g1".to_string()]))
        );
        assert!(keys
            .authenticate(&format!("fg_00112233445566bb_{secret}"))
            .expect("lookup")
            .is_none());
        assert_eq!(
            actions(&store).last().map(String::as_str),
            Some("apikey-import")
        );
        let (_, moved) = ApiKeys::open(store.clone(), dir.path()).expect("open again");
        assert_eq!(moved, 0);
        // The same keys in a file again (another node's copy): nothing moved, nothing recorded,
        // the file removed.
        let records = actions(&store).len();
        write_old_file();
        let (_, moved) = ApiKeys::open(store.clone(), dir.path()).expect("open again");
        assert_eq!((moved, actions(&store).len()), (0, records));
        assert!(!path.exists());
        assert_eq!(keys.list().expect("list").len(), 2);
    }
}
