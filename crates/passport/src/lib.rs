//! Passport chips (ICAO Doc 9303 parts 10 and 11): the files of the logical data structure and
//! passive authentication.
//!
//! Data flows one way: bytes of EF.COM / DG1 / DG2 / EF.SOD → parsed structures ([`lds`], [`mrz`],
//! [`dg2`], [`sod`]) → [`pa::authenticate`], which recomputes each data group's hash, checks the
//! signed attributes, the signature with the document signer's key ([`crypto`]), the signer's
//! validity and its chain to a country signing CA ([`trust`]: a directory of certificates or an
//! ICAO master list, itself verified; optional CRLs). Every check is reported on its own
//! ([`pa::Report`]), so a gate policy can accept an expired signer yet never a broken hash.
//!
//! Everything here reads hostile bytes: sizes are bounded before anything is allocated, every
//! parser returns an error instead of panicking, and each is fuzzed (`fuzz/fuzz_targets/passport_*`).
//! This crate knows nothing of images: DG2's face leaves it as encoded bytes.
#![forbid(unsafe_code)]

pub mod crypto;
pub mod curves;
pub mod dg2;
pub mod lds;
pub mod mrz;
pub mod pa;
pub mod sod;
pub mod tlv;
pub mod trust;

/// Why a chip file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PassportError {
    #[error("{what} is malformed: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("{what} is larger than the {limit} bytes accepted")]
    TooLarge { what: &'static str, limit: usize },
    #[error("not supported: {0}")]
    Unsupported(String),
}

impl PassportError {
    pub(crate) fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        PassportError::Malformed {
            what,
            why: why.into(),
        }
    }
}
