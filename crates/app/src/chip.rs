//! The passport chip as a 1:1 reference (CLI `verify --dg2 --sod`, the server's verify and gate
//! routes): passive authentication first, policy on its checks, and only then the chip's face.
//!
//! Privacy: the MRZ (DG1) is personal data. It is read to check its hash and check digits and to
//! derive the document's keyed pseudonym; [`ChipReference::audit_record`] holds neither it nor
//! the document number, only that pseudonym, and the face image is never kept.

use std::path::Path;
use std::time::SystemTime;

use passport::dg2::FaceImage;
use passport::mrz::Mrz;
use passport::pa::{self, Policy, Report};
use passport::trust::{MasterList, TrustStore};
use serde_json::{json, Value};

use crate::{AppError, Result};

/// The chip files a reference is read from, as bytes.
pub struct ChipFiles<'a> {
    pub sod: &'a [u8],
    pub dg2: &'a [u8],
    pub dg1: Option<&'a [u8]>,
}

/// Trust anchors and the policy applied to passive authentication, loaded once.
pub struct ChipTrust {
    pub store: Option<TrustStore>,
    pub policy: Policy,
    /// What loading said (master lists verified, files skipped): for logs and `--json`.
    pub loaded: Vec<String>,
}

impl ChipTrust {
    /// Reads CSCA certificates (a directory), master lists and CRL files.
    pub fn load(
        csca_dir: Option<&Path>,
        master_lists: &[&Path],
        crls: &[&Path],
        policy: Policy,
        at: SystemTime,
    ) -> Result<Self> {
        let refused = |what: &str, p: &Path, e: passport::PassportError| {
            AppError::Refused(format!("{what} {}: {e}", p.display()))
        };
        let mut loaded = Vec::new();
        // No trust material at all: the chain is "not checked". CRLs alone still make a store
        // (with no CSCA the chain then fails, rather than the CRLs being silently ignored).
        if csca_dir.is_none() && master_lists.is_empty() && crls.is_empty() {
            return Ok(ChipTrust {
                store: None,
                policy,
                loaded,
            });
        }
        let mut store = match csca_dir {
            Some(d) => TrustStore::from_dir(d).map_err(|e| refused("CSCA directory", d, e))?,
            None => TrustStore::default(),
        };
        for ml in master_lists {
            let bytes = read_bounded(ml, passport::trust::MAX_MASTER_LIST_BYTES)?;
            let r: MasterList = store
                .add_master_list(&bytes, at)
                .map_err(|e| refused("master list", ml, e))?;
            loaded.push(format!(
                "master list {}: {} CSCA certificates, signature {}, signer chains to {}{}",
                ml.display(),
                r.certificates,
                r.signature,
                r.signer_chains_to,
                if r.anchored {
                    ""
                } else {
                    " (a CSCA of the list itself)"
                }
            ));
        }
        for crl in crls {
            let bytes = read_bounded(crl, passport::trust::MAX_CERT_FILE_BYTES)?;
            store.add_crl(&bytes).map_err(|e| refused("CRL", crl, e))?;
        }
        loaded.extend(store.skipped.iter().map(|s| format!("skipped {s}")));
        loaded.push(format!(
            "{} CSCA certificates, {} CRLs",
            store.cscas.len(),
            store.crls.len()
        ));
        Ok(ChipTrust {
            store: Some(store),
            policy,
            loaded,
        })
    }
}

/// Reads a file no larger than `limit` (checked before reading).
pub fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| AppError::Refused(format!("{}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > limit as u64 {
        return Err(AppError::Refused(format!(
            "{}: {len} bytes, more than the {limit} accepted",
            path.display()
        )));
    }
    std::fs::read(path).map_err(io)
}

/// A chip read and authenticated.
pub struct ChipReference {
    pub report: Report,
    /// Why policy refuses the chip (empty: accepted).
    pub refusals: Vec<String>,
    /// DG1's MRZ when given: personal data, never logged.
    pub mrz: Option<Mrz>,
    /// DG2's first face (the one compared).
    pub face: FaceImage,
    pub faces_in_dg2: usize,
}

/// The `decided_by` of a decision refused because the chip did not authenticate.
pub const DECIDED_BY_PA: &str = "passive-authentication";

/// Parses the files, runs passive authentication and applies the policy. Errors are files that
/// do not parse; a chip that parses but fails a check is an `Ok` with refusals.
pub fn read_chip(files: &ChipFiles, trust: &ChipTrust, at: SystemTime) -> Result<ChipReference> {
    let bad = |what: &str, e: passport::PassportError| AppError::Refused(format!("{what}: {e}"));
    let sod = passport::sod::parse_sod(files.sod).map_err(|e| bad("EF.SOD", e))?;
    let mut faces = passport::dg2::parse_dg2(files.dg2).map_err(|e| bad("DG2", e))?;
    let mrz = files
        .dg1
        .map(passport::mrz::parse_dg1)
        .transpose()
        .map_err(|e| bad("DG1", e))?;
    let mut groups: Vec<(u8, &[u8])> = vec![(2, files.dg2)];
    if let Some(dg1) = files.dg1 {
        groups.insert(0, (1, dg1));
    }
    let report = pa::authenticate(&sod, &groups, trust.store.as_ref(), at);
    let mut refusals = trust.policy.refusals(&report);
    if mrz.as_ref().is_some_and(|m| !m.check_digits_ok()) {
        refusals.push("MRZ check digits".into());
    }
    let faces_in_dg2 = faces.len();
    // parse_dg2 returns at least one face or an error.
    let face = faces.swap_remove(0);
    Ok(ChipReference {
        report,
        refusals,
        mrz,
        face,
        faces_in_dg2,
    })
}

impl ChipReference {
    pub fn accepted(&self) -> bool {
        self.refusals.is_empty()
    }

    /// The string a keyed pseudonym of the document is computed over: issuing state and
    /// document number (no other DG1 field).
    pub fn document_reference(&self) -> Option<String> {
        self.mrz
            .as_ref()
            .map(|m| format!("{}:{}", m.issuing_state, m.document_number))
    }

    /// What the audit log keeps: each check's status, the signer's name, the face's format —
    /// and the document only as `pseudonym` (hex of a keyed hash), never DG1's fields.
    pub fn audit_record(&self, pseudonym: Option<String>) -> Value {
        let r = &self.report;
        json!({
            "chip": {
                "accepted": self.accepted(),
                "refusals": self.refusals,
                "data_groups": r.data_groups.iter().map(|d| json!({"dg": d.data_group, "status": d.status})).collect::<Vec<_>>(),
                "signed_attributes": r.signed_attributes.status,
                "signature": r.signature.status,
                "signer_validity": r.signer_validity.status,
                "chain": r.chain.status,
                "revocation": r.revocation.status,
                "document_signer": r.document_signer.as_ref().map(|s| &s.subject),
                "document_pseudonym": pseudonym,
                "face": {"format": self.face.format, "bytes": self.face.image.len()},
            }
        })
    }

    /// What the operator is shown: every check with its detail; the MRZ only when asked.
    pub fn report_json(&self, with_mrz: bool) -> Value {
        let mut v = json!({
            "accepted": self.accepted(),
            "refusals": self.refusals,
            "passive_authentication": self.report,
            "face": {
                "record": self.face.record_format,
                "format": self.face.format,
                "declared_width": self.face.width,
                "declared_height": self.face.height,
                "bytes": self.face.image.len(),
                "faces_in_dg2": self.faces_in_dg2,
            },
        });
        if let Some(m) = &self.mrz {
            v["mrz_check_digits"] = json!(m.check_digits);
            if with_mrz {
                v["mrz"] = json!(m);
            }
        }
        v
    }
}
