//! Signed heads and deletion receipts come back from outside (anchors, receipts a subject keeps):
//! parsing and verifying arbitrary input must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<gallery::DeletionReceipt>(data) {
        let _ = gallery::store::verify_receipt(&r);
    }
    let _ = serde_json::from_slice::<gallery::audit::SignedHead>(data);
});
