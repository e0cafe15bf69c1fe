//! Trust anchors: country signing CA (CSCA) certificates from a directory or an ICAO master list,
//! and certificate revocation lists; and the document signer's chain to them.
//!
//! A master list is itself CMS SignedData (content type `id-icao-cscaMasterList`) signed by a
//! master list signer whose certificate chains to a CSCA. Loading one verifies that signature and
//! that chain — to a CSCA already trusted when one is given, else to a CSCA inside the list (which
//! proves the list intact, not who made it: [`MasterList::anchored`] says which).

use std::path::Path;
use std::time::{Duration, SystemTime};

use der::{Decode, DecodePem, Encode, Sequence};
use serde::Serialize;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, SubjectKeyIdentifier};
use x509_cert::Certificate;

use crate::crypto;
use crate::sod::SignedContent;
use crate::PassportError;

/// Largest master list accepted (Germany's, with ~500 CSCAs, is under 1 MB).
pub const MAX_MASTER_LIST_BYTES: usize = 16 << 20;
/// Largest single certificate or CRL file read from a directory.
pub const MAX_CERT_FILE_BYTES: usize = 4 << 20;
/// Most files read from a CSCA directory.
pub const MAX_DIR_FILES: usize = 10_000;

const ID_ICAO_CSCA_MASTER_LIST: &str = "2.23.136.1.1.2";

/// CscaMasterList ::= SEQUENCE { version INTEGER, certList SET OF Certificate }
#[derive(Sequence)]
struct CscaMasterList {
    version: u8,
    cert_list: der::asn1::SetOfVec<der::Any>,
}

/// Country signing CA certificates and CRLs a chain may end in.
#[derive(Default)]
pub struct TrustStore {
    pub cscas: Vec<Certificate>,
    pub crls: Vec<CertificateList>,
    /// Files or list entries that did not parse (reported, not fatal: one bad file in a
    /// directory of hundreds must not disable every other country).
    pub skipped: Vec<String>,
}

/// What loading a master list found.
#[derive(Debug, Clone, Serialize)]
pub struct MasterList {
    pub certificates: usize,
    pub signature: String,
    /// The CSCA the list signer chains to.
    pub signer_chains_to: String,
    /// True when that CSCA was trusted before the list was read; false when it is one of the
    /// list's own certificates.
    pub anchored: bool,
}

impl TrustStore {
    /// Reads every `.der`, `.cer`, `.crt`, `.pem` (certificates) and `.crl` file of a directory.
    pub fn from_dir(dir: &Path) -> Result<Self, PassportError> {
        let io = |e: std::io::Error| PassportError::malformed("CSCA directory", e.to_string());
        let mut store = TrustStore::default();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .take(MAX_DIR_FILES + 1)
            .collect::<Result<_, _>>()
            .map_err(io)?;
        if entries.len() > MAX_DIR_FILES {
            return Err(PassportError::TooLarge {
                what: "CSCA directory (files)",
                limit: MAX_DIR_FILES,
            });
        }
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .unwrap_or_default();
            if !["der", "cer", "crt", "pem", "crl"].contains(&ext.as_str()) {
                continue;
            }
            let name = path.display().to_string();
            let len = entry.metadata().map_err(io)?.len();
            if len > MAX_CERT_FILE_BYTES as u64 {
                store
                    .skipped
                    .push(format!("{name}: larger than {MAX_CERT_FILE_BYTES} bytes"));
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io)?;
            let added = if ext == "crl" {
                store.add_crl(&bytes)
            } else {
                store.add_certificate(&bytes)
            };
            if let Err(e) = added {
                store.skipped.push(format!("{name}: {e}"));
            }
        }
        Ok(store)
    }

    /// Adds a CSCA certificate (DER or PEM).
    pub fn add_certificate(&mut self, bytes: &[u8]) -> Result<(), PassportError> {
        let cert = if bytes.starts_with(b"-----BEGIN") {
            Certificate::from_pem(bytes)
        } else {
            Certificate::from_der(bytes)
        }
        .map_err(|e| PassportError::malformed("certificate", e.to_string()))?;
        self.cscas.push(cert);
        Ok(())
    }

    /// Adds a CRL (DER or PEM).
    pub fn add_crl(&mut self, bytes: &[u8]) -> Result<(), PassportError> {
        let crl = if bytes.starts_with(b"-----BEGIN") {
            CertificateList::from_pem(bytes)
        } else {
            CertificateList::from_der(bytes)
        }
        .map_err(|e| PassportError::malformed("CRL", e.to_string()))?;
        self.crls.push(crl);
        Ok(())
    }

    /// Reads an ICAO master list, verifies its signature and its signer's chain, and adds its
    /// CSCA certificates. `self`'s CSCAs (if any) are the anchors the signer must chain to.
    pub fn add_master_list(
        &mut self,
        bytes: &[u8],
        at: SystemTime,
    ) -> Result<MasterList, PassportError> {
        if bytes.len() > MAX_MASTER_LIST_BYTES {
            return Err(PassportError::TooLarge {
                what: "master list",
                limit: MAX_MASTER_LIST_BYTES,
            });
        }
        let what = "master list";
        let cms = SignedContent::parse(bytes, what)?;
        if cms.content_type.to_string() != ID_ICAO_CSCA_MASTER_LIST {
            return Err(PassportError::malformed(
                what,
                "content type is not id-icao-cscaMasterList",
            ));
        }
        let list = CscaMasterList::from_der(&cms.content)
            .map_err(|e| PassportError::malformed(what, format!("CscaMasterList: {e}")))?;
        let _ = list.version;
        let mut certs = Vec::new();
        let mut skipped = Vec::new();
        for (i, any) in list.cert_list.iter().enumerate() {
            match any
                .to_der()
                .ok()
                .and_then(|d| Certificate::from_der(&d).ok())
            {
                Some(c) => certs.push(c),
                None => skipped.push(format!("master list entry {i}: not a certificate")),
            }
        }
        let bad = |why: String| PassportError::malformed(what, why);
        cms.check_signed_attributes()
            .map_err(|e| bad(format!("signed attributes: {e}")))?;
        let signer = cms
            .signer_certificate()
            .ok_or_else(|| bad("the signer's certificate is not in the list".into()))?;
        let signature = cms
            .verify_signature(signer)
            .map_err(|e| bad(format!("signature: {e}")))?;
        let anchored = !self.cscas.is_empty();
        let anchors = if anchored { &self.cscas } else { &certs };
        let chain = chain_to(signer, anchors, at);
        let signer_chains_to = match chain {
            Chain::Verified { csca, .. } => csca,
            Chain::Failed(why) => return Err(bad(format!("the list signer's chain: {why}"))),
        };
        let report = MasterList {
            certificates: certs.len(),
            signature,
            signer_chains_to,
            anchored,
        };
        self.cscas.extend(certs);
        self.skipped.extend(skipped);
        Ok(report)
    }
}

/// The outcome of looking for a certificate's issuer among anchors.
#[derive(Debug, Clone)]
pub enum Chain {
    Verified { csca: String, how: String },
    Failed(String),
}

/// Finds the CSCA that issued `cert` and verifies `cert`'s signature with its key.
pub fn chain_to(cert: &Certificate, cscas: &[Certificate], at: SystemTime) -> Chain {
    let tbs = cert.tbs_certificate();
    let aki = authority_key_id(cert);
    let mut named: Vec<&Certificate> = cscas
        .iter()
        .filter(|c| c.tbs_certificate().subject() == tbs.issuer())
        .collect();
    if named.is_empty() {
        return Chain::Failed(format!("no CSCA named {}", tbs.issuer()));
    }
    // Doc 9303 part 12: a CSCA certificate is a CA (basicConstraints cA). A signer's
    // certificate placed among the anchors must not certify anything.
    named.retain(|c| is_ca(c));
    if named.is_empty() {
        return Chain::Failed(format!(
            "the certificate named {} is not a CA",
            tbs.issuer()
        ));
    }
    // Prefer the CSCA whose key identifier the certificate names (CSCAs are renewed under the
    // same name; the key identifier tells their keys apart).
    named.sort_by_key(|c| aki.is_none() || subject_key_id(c) != aki);
    let Ok(message) = tbs.to_der() else {
        return Chain::Failed("certificate does not re-encode".into());
    };
    let mut last = String::new();
    for csca in named {
        let scheme = match crypto::scheme(cert.signature_algorithm(), None) {
            Ok(s) => s,
            Err(e) => return Chain::Failed(e.to_string()),
        };
        match crypto::verify(
            csca.tbs_certificate().subject_public_key_info(),
            scheme,
            &message,
            cert.signature().raw_bytes(),
        ) {
            Ok(how) => {
                let mut csca_name = csca.tbs_certificate().subject().to_string();
                if !valid_at(csca, at) {
                    csca_name.push_str(" (CSCA certificate outside its validity now)");
                }
                return Chain::Verified {
                    csca: csca_name,
                    how,
                };
            }
            Err(e) => last = e.to_string(),
        }
    }
    Chain::Failed(format!(
        "no CSCA's key verifies the signer certificate ({last})"
    ))
}

/// Whether `at` lies within the certificate's validity.
pub fn valid_at(cert: &Certificate, at: SystemTime) -> bool {
    let v = cert.tbs_certificate().validity();
    let at = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    v.not_before.to_unix_duration() <= at && at <= v.not_after.to_unix_duration()
}

/// Revocation status of a certificate from the CRLs its issuer signed.
#[derive(Debug, Clone)]
pub enum Revocation {
    Revoked(String),
    NotRevoked(String),
    NoCrl,
    Failed(String),
}

/// The revocation status of `cert` from the CRLs of its issuer's name. A CRL counts only if a
/// CSCA of that name (a CA) signed it: CSCAs are renewed under the same name, and a CRL is signed
/// with the current key, which need not be the key that certified `cert`.
pub fn revocation(
    cert: &Certificate,
    cscas: &[Certificate],
    crls: &[CertificateList],
) -> Revocation {
    let tbs = cert.tbs_certificate();
    let issuers: Vec<&Certificate> = cscas
        .iter()
        .filter(|c| c.tbs_certificate().subject() == tbs.issuer() && is_ca(c))
        .collect();
    let mut checked = 0;
    for crl in crls
        .iter()
        .filter(|c| c.tbs_cert_list.issuer == *tbs.issuer())
    {
        let scheme = match crypto::scheme(&crl.signature_algorithm, None) {
            Ok(s) => s,
            Err(e) => return Revocation::Failed(format!("CRL: {e}")),
        };
        let Ok(message) = crl.tbs_cert_list.to_der() else {
            return Revocation::Failed("CRL does not re-encode".into());
        };
        let verified = issuers.iter().any(|issuer| {
            crypto::verify(
                issuer.tbs_certificate().subject_public_key_info(),
                scheme,
                &message,
                crl.signature.raw_bytes(),
            )
            .is_ok()
        });
        if !verified {
            return Revocation::Failed(format!(
                "CRL signature: no CSCA named {} verifies it",
                tbs.issuer()
            ));
        }
        checked += 1;
        let revoked = crl
            .tbs_cert_list
            .revoked_certificates
            .iter()
            .flatten()
            .find(|r| r.serial_number == *tbs.serial_number());
        if let Some(r) = revoked {
            return Revocation::Revoked(format!("revoked on {}", r.revocation_date));
        }
    }
    if checked == 0 {
        Revocation::NoCrl
    } else {
        Revocation::NotRevoked(format!("not listed in {checked} CRL(s) of its issuer"))
    }
}

fn is_ca(cert: &Certificate) -> bool {
    matches!(
        cert.tbs_certificate().get_extension::<BasicConstraints>(),
        Ok(Some((_, bc))) if bc.ca
    )
}

/// The certificate's subject key identifier, if it has one.
pub fn subject_key_id(cert: &Certificate) -> Option<Vec<u8>> {
    let (_, ski) = cert
        .tbs_certificate()
        .get_extension::<SubjectKeyIdentifier>()
        .ok()??;
    Some(ski.0.as_bytes().to_vec())
}

fn authority_key_id(cert: &Certificate) -> Option<Vec<u8>> {
    let (_, aki) = cert
        .tbs_certificate()
        .get_extension::<AuthorityKeyIdentifier>()
        .ok()??;
    aki.key_identifier.map(|k| k.as_bytes().to_vec())
}
