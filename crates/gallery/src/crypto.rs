//! Keys and sealing. Nothing here is home-made cryptography: XChaCha20-Poly1305 (RustCrypto) seals,
//! HMAC-SHA-256 makes pseudonyms, Ed25519 (dalek) signs. This module only decides which key seals
//! what, and with which associated data, so a ciphertext cannot be moved to another subject or role.

use crate::error::{GalleryError, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// Sealed blob layout: version (1) | key id (8) | nonce (24) | ciphertext+tag.
const SEAL_VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;

pub type SecretKey = Zeroizing<[u8; KEY_LEN]>;

pub fn random_key() -> Result<SecretKey> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::getrandom(k.as_mut())
        .map_err(|e| GalleryError::Key(format!("no randomness: {e}")))?;
    Ok(k)
}

/// Short public identifier of a key: lets errors say "wrong key" instead of "corrupt data",
/// and lets a half-finished rotation find the right key for each blob.
pub fn key_id(key: &[u8; KEY_LEN]) -> [u8; KEY_ID_LEN] {
    let mut h = Sha256::new();
    h.update(b"facegate/key-id/v1");
    h.update(key);
    let d = h.finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&d[..KEY_ID_LEN]);
    id
}

/// Seal `msg` under `key`; `aad` binds the blob to its place (subject, purpose).
pub fn seal(key: &[u8; KEY_LEN], aad: &[u8], msg: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut nonce)
        .map_err(|e| GalleryError::Key(format!("no randomness: {e}")))?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
        .map_err(|_| GalleryError::Key("encryption failed".into()))?;
    let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + ct.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&key_id(key));
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// The key id a sealed blob was made with (to pick a key from a ring).
pub fn sealed_key_id(blob: &[u8]) -> Result<[u8; KEY_ID_LEN]> {
    if blob.len() < 1 + KEY_ID_LEN + NONCE_LEN + 16 || blob[0] != SEAL_VERSION {
        return Err(GalleryError::Decrypt("sealed blob is malformed".into()));
    }
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&blob[1..1 + KEY_ID_LEN]);
    Ok(id)
}

pub fn open(key: &[u8; KEY_LEN], aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(blob.len()));
    open_into(key, aad, blob, &mut buf)?;
    Ok(buf)
}

/// `open` into the caller's buffer, so a bulk load (a million blobs) allocates nothing per blob.
/// On success `buf` holds the plaintext, which the caller wipes; on failure it is wiped here.
pub fn open_into(key: &[u8; KEY_LEN], aad: &[u8], blob: &[u8], buf: &mut Vec<u8>) -> Result<()> {
    use chacha20poly1305::aead::AeadInPlace;
    use zeroize::Zeroize;
    let id = sealed_key_id(blob)?;
    let nonce = &blob[1 + KEY_ID_LEN..1 + KEY_ID_LEN + NONCE_LEN];
    buf.zeroize();
    buf.clear();
    buf.extend_from_slice(&blob[1 + KEY_ID_LEN + NONCE_LEN..]);
    let cipher = XChaCha20Poly1305::new(key.into());
    // The tag is the check; the key id only names the failure. It is computed on failure, not
    // on every open (a gallery load opens two blobs per subject).
    cipher
        .decrypt_in_place(XNonce::from_slice(nonce), aad, buf)
        .map_err(|_| {
            buf.zeroize();
            if id != key_id(key) {
                GalleryError::WrongKey {
                    expected: hex::encode(id),
                    given: hex::encode(key_id(key)),
                }
            } else {
                GalleryError::Decrypt("authentication tag does not verify".into())
            }
        })
}

/// Wraps and unwraps data keys. The local implementation holds master keys in memory; the trait is
/// the seam where a KMS or HSM client goes (it would never reveal the master key).
pub trait KeyWrapper: Send + Sync {
    /// Id of the key new wraps are made with.
    fn current_id(&self) -> String;
    fn wrap(&self, aad: &[u8], key: &[u8; KEY_LEN]) -> Result<Vec<u8>>;
    fn unwrap_key(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretKey>;
}

/// Master keys held locally: the current one, plus older ones during a rotation.
pub struct LocalKeyRing {
    current: SecretKey,
    current_id: [u8; KEY_ID_LEN],
    others: BTreeMap<[u8; KEY_ID_LEN], SecretKey>,
}

impl LocalKeyRing {
    pub fn new(current: SecretKey) -> Self {
        LocalKeyRing {
            current_id: key_id(&current),
            current,
            others: BTreeMap::new(),
        }
    }

    /// Keep an older key so blobs not yet rewrapped still open.
    pub fn with_previous(mut self, key: SecretKey) -> Self {
        self.others.insert(key_id(&key), key);
        self
    }

    fn key_for(&self, id: &[u8; KEY_ID_LEN]) -> Option<&[u8; KEY_LEN]> {
        if *id == self.current_id {
            return Some(&self.current);
        }
        self.others.get(id).map(|k| &**k)
    }
}

impl KeyWrapper for LocalKeyRing {
    fn current_id(&self) -> String {
        hex::encode(self.current_id)
    }

    fn wrap(&self, aad: &[u8], key: &[u8; KEY_LEN]) -> Result<Vec<u8>> {
        seal(&self.current, aad, key)
    }

    fn unwrap_key(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretKey> {
        let id = sealed_key_id(wrapped)?;
        let key = self.key_for(&id).ok_or_else(|| GalleryError::WrongKey {
            expected: hex::encode(id),
            given: self.current_id(),
        })?;
        let plain = open(key, aad, wrapped)?;
        if plain.len() != KEY_LEN {
            return Err(GalleryError::Decrypt(
                "wrapped key has the wrong length".into(),
            ));
        }
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        k.copy_from_slice(&plain);
        Ok(k)
    }
}

/// Keyed pseudonym of an external reference (passport number, case id): HMAC-SHA-256 over the
/// gallery name and the reference, so the database never holds the reference and the same person
/// gets unrelated pseudonyms in different galleries.
pub fn pseudonym(key: &[u8; KEY_LEN], gallery: &str, reference: &str) -> [u8; 32] {
    // new_from_slice cannot fail for HMAC (any key length is valid).
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(b"facegate/pseudonym/v1\0");
    mac.update(gallery.as_bytes());
    mac.update(b"\0");
    mac.update(reference.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Master key as 64 hex characters in a file only its owner can read.
pub fn read_master_key_file(path: &Path) -> Result<SecretKey> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| GalleryError::io(path, e))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(GalleryError::Key(format!(
                "{} is readable by group or others (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            )));
        }
    }
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| GalleryError::io(path, e))?);
    parse_master_key(text.trim())
}

pub fn parse_master_key(hex_text: &str) -> Result<SecretKey> {
    let bytes = Zeroizing::new(
        hex::decode(hex_text.trim())
            .map_err(|_| GalleryError::Key("master key must be 64 hex characters".into()))?,
    );
    if bytes.len() != KEY_LEN {
        return Err(GalleryError::Key(format!(
            "master key must be {KEY_LEN} bytes (64 hex characters), got {}",
            bytes.len()
        )));
    }
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    k.copy_from_slice(&bytes);
    Ok(k)
}

/// Write a new master key file with mode 0600, atomically (temp file, fsync, rename).
pub fn write_master_key_file(path: &Path, key: &[u8; KEY_LEN]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| GalleryError::io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| GalleryError::io(&tmp, e))?;
    let text = Zeroizing::new(hex::encode(key));
    f.write_all(text.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|e| GalleryError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| GalleryError::io(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let k = random_key().unwrap();
        let blob = seal(&k, b"subject-a", b"hello template").unwrap();
        assert_eq!(
            &open(&k, b"subject-a", &blob).unwrap()[..],
            b"hello template"
        );
        // Moving the blob to another subject (different AAD) fails.
        assert!(matches!(
            open(&k, b"subject-b", &blob),
            Err(GalleryError::Decrypt(_))
        ));
        // A flipped bit fails.
        let mut bad = blob.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open(&k, b"subject-a", &bad).is_err());
        // Another key is reported as a wrong key, not as corruption.
        let k2 = random_key().unwrap();
        assert!(matches!(
            open(&k2, b"subject-a", &blob),
            Err(GalleryError::WrongKey { .. })
        ));
    }

    #[test]
    fn key_ring_opens_blobs_of_previous_key() {
        let old = random_key().unwrap();
        let dk = random_key().unwrap();
        let wrapped = LocalKeyRing::new(old.clone()).wrap(b"x", &dk).unwrap();
        let ring = LocalKeyRing::new(random_key().unwrap()).with_previous(old);
        assert_eq!(*ring.unwrap_key(b"x", &wrapped).unwrap(), *dk);
        let stranger = LocalKeyRing::new(random_key().unwrap());
        assert!(matches!(
            stranger.unwrap_key(b"x", &wrapped),
            Err(GalleryError::WrongKey { .. })
        ));
    }

    #[test]
    fn pseudonyms_depend_on_key_gallery_and_reference() {
        let k = random_key().unwrap();
        let p = pseudonym(&k, "g", "P1234567");
        assert_eq!(p, pseudonym(&k, "g", "P1234567"));
        assert_ne!(p, pseudonym(&k, "h", "P1234567"));
        assert_ne!(p, pseudonym(&k, "g", "P1234568"));
        assert_ne!(p, pseudonym(&random_key().unwrap(), "g", "P1234567"));
        // No ambiguity between ("ab","c") and ("a","bc").
        assert_ne!(pseudonym(&k, "ab", "c"), pseudonym(&k, "a", "bc"));
    }

    #[test]
    fn master_key_file_permissions_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let k = random_key().unwrap();
        write_master_key_file(&p, &k).unwrap();
        assert_eq!(*read_master_key_file(&p).unwrap(), *k);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                read_master_key_file(&p),
                Err(GalleryError::Key(_))
            ));
        }
        assert!(parse_master_key("abcd").is_err());
        assert!(parse_master_key(&"zz".repeat(32)).is_err());
    }
}
