//! Untrusted image bytes (travellers' photos, gate cameras, chip photos): decoding must return an
//! image or an error, never panic, and respect the limits; the truncation check must agree with
//! strict decoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vision::decode::{decode, truncation, DecodeLimits};

fuzz_target!(
    init: {
        // decode() turns a decoder's panic into an error (catch_unwind); libfuzzer-sys's panic
        // hook would abort before that can happen. With the default hook a caught panic is an
        // answer, and an uncaught one still aborts (libfuzzer-sys checks the closure's result).
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_pixels: 1 << 20,
        refuse_truncated: false,
    };
    if let Ok(img) = decode(data, &limits) {
        assert!((img.width() as u64) * (img.height() as u64) <= limits.max_pixels);
    }
    let cut = truncation(data);
    if cut.is_some() {
        assert!(decode(data, &limits.strict()).is_err());
    }
});
