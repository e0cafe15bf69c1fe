//! Untrusted video files (an uploaded clip, a camera recording): opening and decoding an MP4 must
//! give frames or an error, never panic, and stay within the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use video::source::{FrameSource, Mp4Source};
use video::VideoLimits;

fuzz_target!(
    init: {
        // Mp4Source turns a demuxer's or decoder's panic into an error (catch_unwind);
        // libfuzzer-sys's hook would abort first. Uncaught panics still abort.
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
    let limits = VideoLimits {
        max_pixels: 1 << 20,
        max_sample_bytes: 1 << 20,
        max_header_bytes: 1 << 20,
        max_consecutive_errors: 4,
    };
    let Ok(mut s) = Mp4Source::from_bytes(data.to_vec(), &limits) else {
        return;
    };
    // A few frames are enough to reach every parser; the cap bounds each run.
    for _ in 0..8 {
        match s.next_frame() {
            Some(Ok(f)) => {
                assert!((f.image.width() as u64) * (f.image.height() as u64) <= limits.max_pixels)
            }
            _ => break,
        }
    }
});
