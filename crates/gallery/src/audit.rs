//! Tamper-evident audit log: every record carries the hash of the one before it, and after every
//! write the newest (sequence, hash) pair — the head — is signed with the deployment's Ed25519 key.
//! Editing, reordering or removing a record breaks the chain; cutting records off the end leaves a
//! signed head (in the database, in the `audit.head` mirror file, or in an anchor an auditor kept)
//! that points past the end. Verification needs only the public key.

use crate::error::{GalleryError, Result};
use crate::store::backend::{AuditLog, WriteTxn};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// What the caller says about an audited action; the log adds sequence, time and chain.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    pub action: String,
    pub gallery: Option<String>,
    /// Subject pseudonym (hex), never a clear reference.
    pub subject: Option<String>,
    pub outcome: String,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub actor: String,
    pub role: String,
    pub purpose: String,
    pub action: String,
    pub gallery: Option<String>,
    pub subject: Option<String>,
    pub outcome: String,
    pub details: serde_json::Value,
    /// Hex SHA-256 of the previous record (64 zeros for the first).
    pub prev: String,
}

/// A signed head: the log had `seq` records and the last one hashed to `hash`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignedHead {
    pub seq: u64,
    pub hash: String,
    pub signature: String,
    pub public_key: String,
}

/// Hash of a record's stored text. The text is hashed as stored, never re-encoded: a JSON round
/// trip need not reproduce the same bytes (float formatting), and the chain must not depend on it.
pub fn text_hash(text: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"facegate/audit-record/v1\0");
    h.update(text.as_bytes());
    h.finalize().into()
}

/// The stored text of a record and its hash.
pub fn encode_record(rec: &AuditRecord) -> Result<(String, [u8; 32])> {
    let text = serde_json::to_string(rec).map_err(|e| GalleryError::Audit(e.to_string()))?;
    let h = text_hash(&text);
    Ok((text, h))
}

fn head_message(seq: u64, hash: &[u8]) -> Vec<u8> {
    let mut m = b"facegate/audit-head/v1\0".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

pub fn now_rfc3339(unix_ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

pub struct Actor<'a> {
    pub id: &'a str,
    pub role: &'a str,
    pub purpose: &'a str,
}

/// Append one record and sign the new head, inside the caller's transaction (so the action and its
/// record commit together or not at all).
pub fn append(
    tx: &mut dyn WriteTxn,
    signer: &SigningKey,
    actor: &Actor,
    unix_ms: i64,
    ev: AuditEvent,
) -> Result<SignedHead> {
    let last = tx.audit_tail()?;
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, hex::encode(h)),
        None => (1, "0".repeat(64)),
    };
    let rec = AuditRecord {
        seq,
        time: now_rfc3339(unix_ms),
        actor: actor.id.to_string(),
        role: actor.role.to_string(),
        purpose: actor.purpose.to_string(),
        action: ev.action,
        gallery: ev.gallery,
        subject: ev.subject,
        outcome: ev.outcome,
        details: ev.details,
        prev,
    };
    let (text, hash) = encode_record(&rec)?;
    let sig = signer.sign(&head_message(seq, &hash));
    tx.append_audit(seq, &text, &hash, &sig.to_bytes())?;
    Ok(SignedHead {
        seq,
        hash: hex::encode(hash),
        signature: hex::encode(sig.to_bytes()),
        public_key: hex::encode(signer.verifying_key().to_bytes()),
    })
}

/// Write the head mirror atomically (temp + rename), outside the database, so that truncating the
/// database alone is detected.
pub fn write_head_file(path: &Path, head: &SignedHead) -> Result<()> {
    // A unique temporary name: two writers (threads or processes) never rename each other's
    // half-written file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let text = serde_json::to_vec_pretty(head).map_err(|e| GalleryError::Audit(e.to_string()))?;
    crate::files::write_private(&tmp, &text)?;
    std::fs::rename(&tmp, path).map_err(|e| GalleryError::io(path, e))
}

/// Moves the mirror to `head` unless it already holds that record or a later one: commits from
/// several threads or processes reach their mirror write out of order, and a mirror that went
/// backwards would hide a truncation of the newest records until the next write. Callers in one
/// process serialise through a lock; across processes a narrow race remains (two writers reading
/// the same old head), which can only leave the mirror behind, as a failed write does.
pub fn advance_head_file(path: &Path, head: &SignedHead) -> Result<()> {
    if let Ok(Some(current)) = read_head_file(path) {
        if current.public_key == head.public_key && current.seq >= head.seq {
            return Ok(());
        }
    }
    write_head_file(path, head)
}

pub fn read_head_file(path: &Path) -> Result<Option<SignedHead>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| GalleryError::Audit(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(GalleryError::io(path, e)),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub records: u64,
    pub signed_heads: u64,
    pub last_seq: u64,
    pub public_key: String,
    pub ok: bool,
    pub problems: Vec<String>,
    /// What verification could not check (e.g. no `audit.head` mirror: a clean cut of the newest
    /// records would not show). Not failures by themselves; `audit verify --strict` makes them so.
    #[serde(default)]
    pub warnings: Vec<String>,
}

fn parse_key(hex_key: &str) -> Result<VerifyingKey> {
    let b: [u8; 32] = hex::decode(hex_key)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| GalleryError::Audit("public key must be 64 hex characters".into()))?;
    VerifyingKey::from_bytes(&b).map_err(|e| GalleryError::Audit(format!("bad public key: {e}")))
}

fn check_head(key: &VerifyingKey, seq: u64, hash: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = <[u8; 64]>::try_from(sig) else {
        return false;
    };
    key.verify(&head_message(seq, hash), &Signature::from_bytes(&sig))
        .is_ok()
}

/// Check the whole log against `public_key`, the heads stored with it, and any external heads
/// (the mirror file, an auditor's anchor). Reports every problem found, not just the first.
pub fn verify(
    log: &dyn AuditLog,
    public_key: &str,
    external: &[(String, SignedHead)],
) -> Result<AuditReport> {
    let key = parse_key(public_key)?;
    let mut problems = Vec::new();
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    let mut prev = [0u8; 32];
    let mut expected_seq = 1u64;
    log.scan_records(1, usize::MAX, &mut |seq, text, stored| {
        if seq != expected_seq {
            problems.push(format!(
                "record {seq}: expected sequence number {expected_seq} (records removed or reordered)"
            ));
        }
        let h = text_hash(&text);
        if h[..] != stored[..] {
            problems.push(format!(
                "record {seq}: content does not match its hash (edited)"
            ));
        }
        match serde_json::from_str::<AuditRecord>(&text) {
            Ok(rec) => {
                if rec.seq != seq {
                    problems.push(format!(
                        "record {seq}: its content says sequence {} (moved)",
                        rec.seq
                    ));
                }
                if rec.prev != hex::encode(prev) {
                    problems.push(format!(
                        "record {seq}: does not link to the record before it (removed, inserted or reordered)"
                    ));
                }
            }
            Err(e) => problems.push(format!("record {seq}: unreadable ({e})")),
        }
        prev = h;
        hashes.push(prev);
        expected_seq = seq + 1;
        Ok(())
    })?;
    let last_seq = hashes.len() as u64;
    let mut signed = 0u64;
    let mut max_head = 0u64;
    log.scan_heads(&mut |seq, hash, sig| {
        signed += 1;
        max_head = max_head.max(seq);
        if !check_head(&key, seq, &hash, &sig) {
            problems.push(format!("head {seq}: signature does not verify"));
            return Ok(());
        }
        match hashes.get(seq.wrapping_sub(1) as usize) {
            Some(h) if h[..] == hash[..] => {}
            Some(_) => problems.push(format!(
                "head {seq}: signed hash differs from the log's record {seq}"
            )),
            None => problems.push(format!(
                "head {seq}: signed, but the log ends at {last_seq} (records cut off the end)"
            )),
        }
        Ok(())
    })?;
    if last_seq > 0 && max_head < last_seq {
        problems.push(format!(
            "records {}..={last_seq} are not covered by any signed head (appended without the key)",
            max_head + 1
        ));
    }
    for (source, head) in external {
        if head.public_key != public_key {
            problems.push(format!(
                "{source}: signed by another key ({})",
                head.public_key
            ));
            continue;
        }
        let hash = hex::decode(&head.hash).unwrap_or_default();
        let sig = hex::decode(&head.signature).unwrap_or_default();
        if !check_head(&key, head.seq, &hash, &sig) {
            problems.push(format!(
                "{source}: head {} signature does not verify",
                head.seq
            ));
            continue;
        }
        match hashes.get(head.seq.wrapping_sub(1) as usize) {
            Some(h) if h[..] == hash[..] => {}
            Some(_) => problems.push(format!(
                "{source}: head {} differs from the log's record {} (history rewritten)",
                head.seq, head.seq
            )),
            None => problems.push(format!(
                "{source}: head {} is past the end of the log at {last_seq} (truncated)",
                head.seq
            )),
        }
    }
    Ok(AuditReport {
        records: last_seq,
        signed_heads: signed,
        last_seq,
        public_key: public_key.to_string(),
        ok: problems.is_empty(),
        problems,
        warnings: Vec::new(),
    })
}

/// Every record in order, as stored.
pub fn records(log: &dyn AuditLog) -> Result<Vec<AuditRecord>> {
    records_page(log, 1, usize::MAX)
}

/// At most `limit` records from sequence number `from` on, read page by page from storage (a
/// reader of the API never pulls the whole log into memory).
pub fn records_page(log: &dyn AuditLog, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
    let mut out = Vec::new();
    log.scan_records(from, limit, &mut |_, text, _| {
        out.push(serde_json::from_str(&text).map_err(|e| GalleryError::Audit(e.to_string()))?);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod head_file_tests {
    use super::*;

    fn head(seq: u64, key: &str) -> SignedHead {
        SignedHead {
            seq,
            hash: format!("h{seq}"),
            signature: String::new(),
            public_key: key.into(),
        }
    }

    #[test]
    fn the_mirror_never_moves_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.head");
        advance_head_file(&p, &head(5, "k")).unwrap();
        advance_head_file(&p, &head(3, "k")).unwrap();
        assert_eq!(read_head_file(&p).unwrap().unwrap().seq, 5);
        advance_head_file(&p, &head(7, "k")).unwrap();
        assert_eq!(read_head_file(&p).unwrap().unwrap().seq, 7);
        // A mirror of another log (other key) or an unreadable one is replaced.
        advance_head_file(&p, &head(2, "other")).unwrap();
        assert_eq!(read_head_file(&p).unwrap().unwrap().public_key, "other");
        std::fs::write(&p, b"not json").unwrap();
        advance_head_file(&p, &head(1, "k")).unwrap();
        assert_eq!(read_head_file(&p).unwrap().unwrap().seq, 1);
    }
}
