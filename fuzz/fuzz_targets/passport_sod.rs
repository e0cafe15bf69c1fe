//! EF.SOD and ICAO master lists (CMS SignedData, certificates, signatures over hostile curve
//! parameters): parsing and passive authentication must report, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use passport::{pa, sod, trust::TrustStore};
use std::time::SystemTime;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = sod::parse_sod(data) {
        let r = pa::authenticate(&s, &[(1, b"\x61\x00".as_slice())], None, SystemTime::UNIX_EPOCH);
        assert_eq!(r.data_groups.len(), 1);
        let _ = pa::Policy::default().refusals(&r);
    }
    let mut store = TrustStore::default();
    if let Ok(r) = store.add_master_list(data, SystemTime::UNIX_EPOCH) {
        // A list loads only with a verified signature and a signer chained to a CSCA.
        assert!(!r.signature.is_empty() && !r.signer_chains_to.is_empty());
    }
    let _ = store.add_crl(data);
    let _ = store.add_certificate(data);
});
