//! Chip files read at a gate are hostile until authenticated, and parsed before they are: EF.COM,
//! DG1 (MRZ) and DG2 (CBEFF + ISO/IEC 19794-5) must return a value or an error, never panic, and
//! the BER normaliser must keep every DER element's bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use passport::{dg2, lds, mrz, tlv};

fuzz_target!(|data: &[u8]| {
    let _ = lds::parse_com(data);
    if let Ok(m) = mrz::parse_dg1(data) {
        assert!(["TD1", "TD2", "TD3"].contains(&m.format));
    }
    if let Ok(faces) = dg2::parse_dg2(data) {
        assert!(!faces.is_empty() && faces.len() <= dg2::MAX_FACES);
        assert!(faces.iter().all(|f| f.image.len() <= data.len()));
    }
    if let Ok(der) = tlv::definite_lengths(data, "fuzz") {
        // Normalising twice changes nothing more.
        assert_eq!(tlv::definite_lengths(&der, "fuzz").ok().as_deref(), Some(&der[..]));
    }
});
