//! Hashes and signature verification as ICAO documents use them: RSA PKCS#1 v1.5 and PSS,
//! ECDSA (DER or BSI TR-03111 plain r‖s) over P-256/384/521 and brainpoolP224r1/256r1/384r1,
//! curves named by OID or spelled out in explicit parameters ([`crate::curves`]).
//!
//! All arithmetic is RustCrypto's (`rsa`, `ecdsa`, the curve crates); this module only maps
//! algorithm identifiers to them.

use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use ecdsa::signature::hazmat::PrehashVerifier;
use serde::Serialize;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::curves::{self, Curve};

/// The hash functions ICAO's LDS allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HashAlgorithm {
    #[serde(rename = "SHA-1")]
    Sha1,
    #[serde(rename = "SHA-224")]
    Sha224,
    #[serde(rename = "SHA-256")]
    Sha256,
    #[serde(rename = "SHA-384")]
    Sha384,
    #[serde(rename = "SHA-512")]
    Sha512,
}

impl HashAlgorithm {
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        Some(match oid.to_string().as_str() {
            "1.3.14.3.2.26" => HashAlgorithm::Sha1,
            "2.16.840.1.101.3.4.2.4" => HashAlgorithm::Sha224,
            "2.16.840.1.101.3.4.2.1" => HashAlgorithm::Sha256,
            "2.16.840.1.101.3.4.2.2" => HashAlgorithm::Sha384,
            "2.16.840.1.101.3.4.2.3" => HashAlgorithm::Sha512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "SHA-1",
            HashAlgorithm::Sha224 => "SHA-224",
            HashAlgorithm::Sha256 => "SHA-256",
            HashAlgorithm::Sha384 => "SHA-384",
            HashAlgorithm::Sha512 => "SHA-512",
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha1::Digest;
        match self {
            HashAlgorithm::Sha1 => sha1::Sha1::digest(data).to_vec(),
            HashAlgorithm::Sha224 => sha2_11::Sha224::digest(data).to_vec(),
            HashAlgorithm::Sha256 => sha2_11::Sha256::digest(data).to_vec(),
            HashAlgorithm::Sha384 => sha2_11::Sha384::digest(data).to_vec(),
            HashAlgorithm::Sha512 => sha2_11::Sha512::digest(data).to_vec(),
        }
    }
}

/// A signature scheme with its hash, resolved from an algorithm identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    RsaPkcs1v15(HashAlgorithm),
    RsaPss {
        hash: HashAlgorithm,
        salt_len: usize,
    },
    /// `plain`: BSI TR-03111's r‖s encoding instead of DER.
    Ecdsa {
        hash: HashAlgorithm,
        plain: bool,
    },
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The algorithm or key cannot be verified here (reported as such, never as a pass).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The signature does not verify with this key.
    #[error("{0}")]
    Invalid(String),
}

/// Resolves a signature algorithm identifier. CMS signer infos may name only the key type
/// (`rsaEncryption`, `id-ecPublicKey`); their hash is then the signer info's digest algorithm.
pub fn scheme(
    alg: &AlgorithmIdentifierOwned,
    digest: Option<HashAlgorithm>,
) -> Result<Scheme, SignatureError> {
    let oid = alg.oid.to_string();
    let need_digest = || {
        digest
            .ok_or_else(|| SignatureError::Unsupported(format!("{oid} without a digest algorithm")))
    };
    Ok(match oid.as_str() {
        "1.2.840.113549.1.1.1" => Scheme::RsaPkcs1v15(need_digest()?),
        "1.2.840.113549.1.1.5" => Scheme::RsaPkcs1v15(HashAlgorithm::Sha1),
        "1.2.840.113549.1.1.14" => Scheme::RsaPkcs1v15(HashAlgorithm::Sha224),
        "1.2.840.113549.1.1.11" => Scheme::RsaPkcs1v15(HashAlgorithm::Sha256),
        "1.2.840.113549.1.1.12" => Scheme::RsaPkcs1v15(HashAlgorithm::Sha384),
        "1.2.840.113549.1.1.13" => Scheme::RsaPkcs1v15(HashAlgorithm::Sha512),
        "1.2.840.113549.1.1.10" => pss_scheme(alg)?,
        "1.2.840.10045.2.1" => Scheme::Ecdsa {
            hash: need_digest()?,
            plain: false,
        },
        "1.2.840.10045.4.1" => ecdsa_der(HashAlgorithm::Sha1),
        "1.2.840.10045.4.3.1" => ecdsa_der(HashAlgorithm::Sha224),
        "1.2.840.10045.4.3.2" => ecdsa_der(HashAlgorithm::Sha256),
        "1.2.840.10045.4.3.3" => ecdsa_der(HashAlgorithm::Sha384),
        "1.2.840.10045.4.3.4" => ecdsa_der(HashAlgorithm::Sha512),
        // BSI TR-03111 ecdsa-plain-SHA1 … SHA512.
        "0.4.0.127.0.7.1.1.4.1.1" => ecdsa_plain(HashAlgorithm::Sha1),
        "0.4.0.127.0.7.1.1.4.1.2" => ecdsa_plain(HashAlgorithm::Sha224),
        "0.4.0.127.0.7.1.1.4.1.3" => ecdsa_plain(HashAlgorithm::Sha256),
        "0.4.0.127.0.7.1.1.4.1.4" => ecdsa_plain(HashAlgorithm::Sha384),
        "0.4.0.127.0.7.1.1.4.1.5" => ecdsa_plain(HashAlgorithm::Sha512),
        _ => {
            return Err(SignatureError::Unsupported(format!(
                "signature algorithm {oid}"
            )))
        }
    })
}

fn ecdsa_der(hash: HashAlgorithm) -> Scheme {
    Scheme::Ecdsa { hash, plain: false }
}

fn ecdsa_plain(hash: HashAlgorithm) -> Scheme {
    Scheme::Ecdsa { hash, plain: true }
}

/// RSASSA-PSS parameters (RFC 4055): hash, MGF1 with the same hash, salt length, trailer 1.
fn pss_scheme(alg: &AlgorithmIdentifierOwned) -> Result<Scheme, SignatureError> {
    let unsupported = |why: &str| SignatureError::Unsupported(format!("RSASSA-PSS {why}"));
    let params = match &alg.parameters {
        Some(p) => {
            let der = p
                .to_der()
                .map_err(|_| unsupported("parameters do not encode"))?;
            rsa::pkcs1::RsaPssParams::<der::Any>::from_der(&der)
                .map_err(|_| unsupported("parameters do not parse"))?
        }
        None => rsa::pkcs1::RsaPssParams::default(),
    };
    let hash = HashAlgorithm::from_oid(&params.hash.oid).ok_or_else(|| unsupported("hash"))?;
    let mgf_hash = params
        .mask_gen
        .parameters
        .as_ref()
        .and_then(|h| HashAlgorithm::from_oid(&h.oid));
    if params.mask_gen.oid.to_string() != "1.2.840.113549.1.1.8" || mgf_hash != Some(hash) {
        return Err(unsupported(
            "with a mask generation other than MGF1 over the same hash",
        ));
    }
    Ok(Scheme::RsaPss {
        hash,
        salt_len: usize::from(params.salt_len),
    })
}

/// What a verified signature was: e.g. "ECDSA brainpoolP224r1 (explicit parameters) SHA-1".
pub type Verified = String;

/// Verifies `signature` over `message` with the public key `spki` under `scheme`.
pub fn verify(
    spki: &SubjectPublicKeyInfoOwned,
    scheme: Scheme,
    message: &[u8],
    signature: &[u8],
) -> Result<Verified, SignatureError> {
    let key_oid = spki.algorithm.oid.to_string();
    let key_bytes = spki.subject_public_key.raw_bytes();
    match scheme {
        Scheme::RsaPkcs1v15(hash) | Scheme::RsaPss { hash, .. } => {
            if key_oid != "1.2.840.113549.1.1.1" && key_oid != "1.2.840.113549.1.1.10" {
                return Err(SignatureError::Invalid(format!(
                    "an RSA signature, but the key is {key_oid}"
                )));
            }
            use rsa::pkcs1::DecodeRsaPublicKey;
            let key = rsa::PublicKey::from_pkcs1_der(key_bytes)
                .map_err(|e| SignatureError::Unsupported(format!("RSA public key: {e}")))?;
            let hashed = hash.digest(message);
            let (name, result) = match scheme {
                Scheme::RsaPss { salt_len, .. } => (
                    "RSASSA-PSS",
                    rsa_pss(&key, hash, salt_len, &hashed, signature),
                ),
                _ => ("RSA PKCS#1 v1.5", rsa_pkcs1(&key, hash, &hashed, signature)),
            };
            let bits = rsa::traits::PublicKeyParts::size(&key) * 8;
            result
                .map(|()| format!("{name} {bits}-bit {}", hash.name()))
                .map_err(|_| SignatureError::Invalid(format!("{name} signature does not verify")))
        }
        Scheme::Ecdsa { hash, plain } => {
            if key_oid != "1.2.840.10045.2.1" {
                return Err(SignatureError::Invalid(format!(
                    "an ECDSA signature, but the key is {key_oid}"
                )));
            }
            let (curve, explicit) = ec_curve(spki)?;
            let prehash = hash.digest(message);
            macro_rules! with_curve {
                ($c:ty) => {{
                    let key =
                        ecdsa::VerifyingKey::<$c>::from_sec1_bytes(key_bytes).map_err(|_| {
                            SignatureError::Invalid("public key is not a point on its curve".into())
                        })?;
                    let sig = if plain {
                        ecdsa::Signature::<$c>::from_slice(signature)
                    } else {
                        ecdsa::der::Signature::<$c>::from_bytes(signature)
                            .and_then(ecdsa::Signature::<$c>::try_from)
                    }
                    .map_err(|_| {
                        SignatureError::Invalid("ECDSA signature is not well formed".into())
                    })?;
                    key.verify_prehash(&prehash, &sig)
                }};
            }
            let result = match curve {
                Curve::P256 => with_curve!(p256::NistP256),
                Curve::P384 => with_curve!(p384::NistP384),
                Curve::P521 => with_curve!(p521::NistP521),
                Curve::BrainpoolP224r1 => with_curve!(curves::bp224::BrainpoolP224r1),
                Curve::BrainpoolP256r1 => with_curve!(bp256::BrainpoolP256r1),
                Curve::BrainpoolP384r1 => with_curve!(bp384::BrainpoolP384r1),
            };
            let how = if explicit {
                " (explicit parameters)"
            } else {
                ""
            };
            result
                .map(|()| format!("ECDSA {}{how} {}", curve.name(), hash.name()))
                .map_err(|_| SignatureError::Invalid("ECDSA signature does not verify".into()))
        }
    }
}

fn rsa_pkcs1(
    key: &rsa::PublicKey,
    hash: HashAlgorithm,
    hashed: &[u8],
    sig: &[u8],
) -> rsa::Result<()> {
    use rsa::Pkcs1v15Sign;
    let scheme = match hash {
        HashAlgorithm::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
        HashAlgorithm::Sha224 => Pkcs1v15Sign::new::<sha2_11::Sha224>(),
        HashAlgorithm::Sha256 => Pkcs1v15Sign::new::<sha2_11::Sha256>(),
        HashAlgorithm::Sha384 => Pkcs1v15Sign::new::<sha2_11::Sha384>(),
        HashAlgorithm::Sha512 => Pkcs1v15Sign::new::<sha2_11::Sha512>(),
    };
    key.verify(scheme, hashed, sig)
}

fn rsa_pss(
    key: &rsa::PublicKey,
    hash: HashAlgorithm,
    salt_len: usize,
    hashed: &[u8],
    sig: &[u8],
) -> rsa::Result<()> {
    use rsa::pss::Pss;
    match hash {
        HashAlgorithm::Sha1 => key.verify(Pss::<sha1::Sha1>::new_with_salt(salt_len), hashed, sig),
        HashAlgorithm::Sha224 => {
            key.verify(Pss::<sha2_11::Sha224>::new_with_salt(salt_len), hashed, sig)
        }
        HashAlgorithm::Sha256 => {
            key.verify(Pss::<sha2_11::Sha256>::new_with_salt(salt_len), hashed, sig)
        }
        HashAlgorithm::Sha384 => {
            key.verify(Pss::<sha2_11::Sha384>::new_with_salt(salt_len), hashed, sig)
        }
        HashAlgorithm::Sha512 => {
            key.verify(Pss::<sha2_11::Sha512>::new_with_salt(salt_len), hashed, sig)
        }
    }
}

/// The curve of an EC public key, and whether it was given by explicit parameters.
pub fn ec_curve(spki: &SubjectPublicKeyInfoOwned) -> Result<(Curve, bool), SignatureError> {
    let params = spki.algorithm.parameters.as_ref().ok_or_else(|| {
        SignatureError::Unsupported("EC key without curve parameters (implicitlyCA)".into())
    })?;
    if let Ok(oid) = params.decode_as::<ObjectIdentifier>() {
        return Curve::from_oid(&oid)
            .map(|c| (c, false))
            .ok_or_else(|| SignatureError::Unsupported(format!("curve {oid}")));
    }
    let der = params
        .to_der()
        .map_err(|_| SignatureError::Unsupported("curve parameters do not encode".into()))?;
    curves::from_explicit(&der)
        .map(|c| (c, true))
        .map_err(SignatureError::Unsupported)
}
