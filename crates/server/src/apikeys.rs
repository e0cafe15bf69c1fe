//! API keys: shown once at creation, stored only as a SHA-256 of their secret part.
//! Key format: `fg_<id>_<secret>`; the id is public (it is the actor in the audit log).

use gallery::Role;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("storage: {0}")]
    Storage(#[from] rusqlite::Error),
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

/// hash, role, galleries (JSON), created, revoked.
type KeyRow = (Vec<u8>, String, Option<String>, i64, i64);

pub struct ApiKeys {
    conn: Mutex<Connection>,
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

impl ApiKeys {
    pub fn open(data_dir: &Path) -> Result<ApiKeys, KeyError> {
        gallery::files::secure_dir(data_dir).map_err(|e| KeyError::Invalid(e.to_string()))?;
        let path = data_dir.join("apikeys.db");
        gallery::files::secure_file(&path).map_err(|e| KeyError::Invalid(e.to_string()))?;
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // As the gallery's databases: a created or revoked key survives power loss, and a
        // revoked key's hash leaves no freed page behind.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, hash BLOB NOT NULL, role TEXT NOT NULL,
             galleries TEXT, created INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);",
        )?;
        Ok(ApiKeys {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new key. The returned token is the only copy of the secret.
    pub fn create(
        &self,
        role: Role,
        galleries: Option<Vec<String>>,
        now: i64,
    ) -> Result<(String, ApiKey), KeyError> {
        let id = random_hex(8)?;
        let secret = random_hex(32)?;
        let g = galleries
            .as_ref()
            .map(|g| serde_json::to_string(g).unwrap_or_default());
        self.conn().execute(
            "INSERT INTO api_keys (id, hash, role, galleries, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, hash(&secret), role.as_str(), g, now],
        )?;
        let key = ApiKey {
            id: id.clone(),
            role,
            galleries,
            created: now,
            revoked: false,
        };
        Ok((format!("fg_{id}_{secret}"), key))
    }

    pub fn list(&self) -> Result<Vec<ApiKey>, KeyError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, role, galleries, created, revoked FROM api_keys ORDER BY created, id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, role, g, created, revoked) = r?;
            out.push(ApiKey {
                id,
                role: Role::parse(&role).map_err(|e| KeyError::Invalid(e.to_string()))?,
                galleries: g.and_then(|g| serde_json::from_str(&g).ok()),
                created,
                revoked: revoked != 0,
            });
        }
        Ok(out)
    }

    pub fn revoke(&self, id: &str) -> Result<bool, KeyError> {
        Ok(self.conn().execute(
            "UPDATE api_keys SET revoked = 1 WHERE id = ?1 AND revoked = 0",
            [id],
        )? > 0)
    }

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
        let row: Option<KeyRow> = self
            .conn()
            .query_row(
                "SELECT hash, role, galleries, created, revoked FROM api_keys WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((stored, role, g, created, revoked)) = row else {
            return Ok(None);
        };
        let given = hash(secret);
        // Compare in constant time (every byte, no early exit).
        let diff = stored
            .iter()
            .zip(&given)
            .fold(stored.len() ^ given.len(), |d, (a, b)| d | (a ^ b) as usize);
        if diff != 0 || revoked != 0 {
            return Ok(None);
        }
        Ok(Some(ApiKey {
            id: id.to_string(),
            role: Role::parse(&role).map_err(|e| KeyError::Invalid(e.to_string()))?,
            galleries: g.and_then(|g| serde_json::from_str(&g).ok()),
            created,
            revoked: false,
        }))
    }
}
