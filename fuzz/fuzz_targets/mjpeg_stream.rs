//! An MJPEG camera's stream (multipart/x-mixed-replace) is network input, cut wherever the network
//! cuts it: the parser must return parts or an error, never panic, and never hold more than one
//! part (with its headers and a delimiter) whatever arrives.
#![no_main]
use libfuzzer_sys::fuzz_target;
use video::mjpeg::MjpegParser;

const MAX_PART: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the stream is cut into pieces.
    let Some((&cut, stream)) = data.split_first() else { return };
    let piece = usize::from(cut % 64) + 1;
    let Ok(mut p) = MjpegParser::new("frame", MAX_PART) else { return };
    for chunk in stream.chunks(piece) {
        match p.push(chunk) {
            Ok(parts) => assert!(parts.iter().all(|x| x.len() <= MAX_PART)),
            Err(_) => return,
        }
        assert!(p.buffered() <= MAX_PART + video::mjpeg::MAX_PART_HEADER_BYTES + 256);
    }
});
