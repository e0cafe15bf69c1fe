//! Passive authentication (ICAO Doc 9303 part 11 §5.1): each check on its own, so policy can
//! weigh them — a gate may accept an expired document signer, never a broken hash.

use std::time::SystemTime;

use serde::Serialize;

use crate::sod::{CertSummary, Sod};
use crate::trust::{self, Chain, Revocation, TrustStore};

/// One check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    Failed,
    /// Could not be checked with what was given (no CSCA, no CRL, unsupported algorithm).
    NotChecked,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub status: Status,
    pub detail: String,
}

impl Check {
    fn passed(detail: impl Into<String>) -> Self {
        Check {
            status: Status::Passed,
            detail: detail.into(),
        }
    }
    fn failed(detail: impl Into<String>) -> Self {
        Check {
            status: Status::Failed,
            detail: detail.into(),
        }
    }
    fn not_checked(detail: impl Into<String>) -> Self {
        Check {
            status: Status::NotChecked,
            detail: detail.into(),
        }
    }
}

/// A data group's hash against the SOD's.
#[derive(Debug, Clone, Serialize)]
pub struct DataGroupCheck {
    pub data_group: u8,
    pub status: Status,
    pub detail: String,
}

/// Every check of passive authentication.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub hash_algorithm: &'static str,
    /// The data groups given, each against the hash the SOD signs.
    pub data_groups: Vec<DataGroupCheck>,
    /// contentType and messageDigest of the signed attributes.
    pub signed_attributes: Check,
    /// The signer info's signature with the document signer's key.
    pub signature: Check,
    /// The document signer certificate's validity at the time of checking.
    pub signer_validity: Check,
    /// The document signer certificate's signature by a trusted CSCA.
    pub chain: Check,
    /// The document signer's revocation status from its CSCA's CRLs.
    pub revocation: Check,
    pub document_signer: Option<CertSummary>,
    /// Data groups the SOD has hashes for.
    pub signed_data_groups: Vec<u8>,
}

impl Report {
    /// Every given data group matched its signed hash.
    pub fn hashes_ok(&self) -> bool {
        !self.data_groups.is_empty() && self.data_groups.iter().all(|d| d.status == Status::Passed)
    }

    /// The checks as (name, check) in report order, for printing.
    pub fn checks(&self) -> [(&'static str, &Check); 5] {
        [
            ("signed attributes", &self.signed_attributes),
            ("signature", &self.signature),
            ("signer validity", &self.signer_validity),
            ("chain to CSCA", &self.chain),
            ("revocation", &self.revocation),
        ]
    }
}

/// Runs every check. `data_groups` are (number, file bytes) as read from the chip; `trust` the
/// CSCAs and CRLs (None: chain and revocation are not checked); `at` the time validity is judged at.
pub fn authenticate(
    sod: &Sod,
    data_groups: &[(u8, &[u8])],
    trust: Option<&TrustStore>,
    at: SystemTime,
) -> Report {
    let hashes = data_groups
        .iter()
        .map(|&(n, bytes)| {
            let (status, detail) = match sod.hashes.iter().find(|(m, _)| *m == n) {
                None => (
                    Status::Failed,
                    "the SOD signs no hash for this data group".to_string(),
                ),
                Some((_, h)) if *h == sod.hash_algorithm.digest(bytes) => (
                    Status::Passed,
                    format!("{} matches", sod.hash_algorithm.name()),
                ),
                Some(_) => (
                    Status::Failed,
                    format!("{} differs from the signed hash", sod.hash_algorithm.name()),
                ),
            };
            DataGroupCheck {
                data_group: n,
                status,
                detail,
            }
        })
        .collect();
    let signed_attributes = match sod.cms.check_signed_attributes() {
        Ok(Some(())) => {
            Check::passed("contentType and messageDigest match the LDS security object")
        }
        Ok(None) => {
            Check::not_checked("no signed attributes: the signature covers the content itself")
        }
        Err(e) => Check::failed(e),
    };
    let signer = sod.cms.signer_certificate();
    let signature = match signer {
        None => Check::not_checked("the SOD carries no document signer certificate"),
        Some(cert) => match sod.cms.verify_signature(cert) {
            Ok(how) => Check::passed(how),
            Err(crate::crypto::SignatureError::Unsupported(e)) => Check::not_checked(e),
            Err(e) => Check::failed(e.to_string()),
        },
    };
    let signer_validity = match signer {
        None => Check::not_checked("no document signer certificate"),
        Some(cert) => {
            let v = cert.tbs_certificate().validity();
            let span = format!("{} to {}", v.not_before, v.not_after);
            if trust::valid_at(cert, at) {
                Check::passed(format!("valid {span}"))
            } else {
                Check::failed(format!("outside its validity ({span})"))
            }
        }
    };
    let chain = match (signer, trust) {
        (None, _) => Check::not_checked("no document signer certificate"),
        (Some(_), None) => Check::not_checked("no CSCA certificates given"),
        (Some(cert), Some(store)) => match trust::chain_to(cert, &store.cscas, at) {
            Chain::Verified { csca, how } => Check::passed(format!("signed by {csca} ({how})")),
            Chain::Failed(why) => Check::failed(why),
        },
    };
    let chained = chain.status == Status::Passed;
    let revocation = match (signer, trust) {
        (Some(cert), Some(store)) if chained => {
            match trust::revocation(cert, &store.cscas, &store.crls) {
                Revocation::Revoked(d) => Check::failed(d),
                Revocation::NotRevoked(d) => Check::passed(d),
                Revocation::NoCrl => Check::not_checked("no CRL of the signer's CSCA given"),
                Revocation::Failed(d) => Check::failed(d),
            }
        }
        _ => Check::not_checked("needs a verified chain"),
    };
    Report {
        hash_algorithm: sod.hash_algorithm.name(),
        data_groups: hashes,
        signed_attributes,
        signature,
        signer_validity,
        chain,
        revocation,
        document_signer: signer.map(CertSummary::of),
        signed_data_groups: sod.hashes.iter().map(|(n, _)| *n).collect(),
    }
}

/// What a failed or unchecked check does to a gate's decision.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Policy {
    /// Accept a document signer outside its validity (documents outlive their signer's
    /// certificate in some issuers' practice).
    pub allow_expired_signer: bool,
    /// Require the chain to a CSCA (turning it off trusts any self-made signer: tests only).
    pub require_chain: bool,
    /// Require a CRL check (off by default: CRLs are not always at hand at a gate).
    pub require_revocation: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_expired_signer: false,
            require_chain: true,
            require_revocation: false,
        }
    }
}

impl Policy {
    /// The reasons `report` is not accepted (empty: accepted). Hashes, signed attributes and the
    /// signature must pass whatever the policy; a revoked signer is refused whatever the policy.
    pub fn refusals(&self, report: &Report) -> Vec<String> {
        let mut why = Vec::new();
        if !report.hashes_ok() {
            why.push("data-group hash".to_string());
        }
        if report.signed_attributes.status == Status::Failed {
            why.push("signed attributes".into());
        }
        if report.signature.status != Status::Passed {
            why.push("signature".into());
        }
        if report.signer_validity.status != Status::Passed && !self.allow_expired_signer {
            why.push("signer validity".into());
        }
        if report.chain.status != Status::Passed && self.require_chain {
            why.push("chain to CSCA".into());
        }
        let revocation = report.revocation.status;
        if revocation == Status::Failed || (revocation != Status::Passed && self.require_revocation)
        {
            why.push("revocation".into());
        }
        why
    }
}

/// `YYYY-MM-DD` (midnight UTC) as a time to judge validity at (`--at`).
pub fn parse_date(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("{s:?} is not a date YYYY-MM-DD");
    let mut parts = s
        .splitn(3, '-')
        .map(|p| p.parse::<u16>().map_err(|_| bad()));
    let (y, m, d) = match (parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d)) => (y?, m?, d?),
        _ => return Err(bad()),
    };
    let m = u8::try_from(m).map_err(|_| bad())?;
    let d = u8::try_from(d).map_err(|_| bad())?;
    let t = der::DateTime::new(y, m, d, 0, 0, 0).map_err(|_| bad())?;
    Ok(SystemTime::UNIX_EPOCH + t.unix_duration())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_or_are_refused() {
        let t = parse_date("2008-06-01").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_212_278_400
        );
        for bad in [
            "2008-13-01",
            "2008-06",
            "yesterday",
            "2008-06-01-01",
            "1969-12-31",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
