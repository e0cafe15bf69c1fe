//! Frame sources on the real clip and on damaged copies of it.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use std::path::{Path, PathBuf};
use video::source::{self, FrameSource, Mp4Source};
use video::{VideoError, VideoLimits};

fn shared(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel);
    assert!(
        p.exists() || std::env::var("CI").is_err(),
        "{} is missing (see ../shared/README.md)",
        p.display()
    );
    p
}

fn clip() -> PathBuf {
    shared("data/video/short_hamilton_clip.mp4")
}

#[test]
fn the_clip_decodes_to_every_frame() {
    let mut s = Mp4Source::open(&clip(), &VideoLimits::default()).unwrap();
    assert_eq!(s.expected_frames(), Some(275));
    assert!((s.frame_rate() - 29.97).abs() < 0.05, "{}", s.frame_rate());
    let mut n = 0;
    let mut last_time = 0;
    while let Some(f) = s.next_frame() {
        let f = f.unwrap();
        assert_eq!((f.image.width(), f.image.height()), (640, 360));
        assert_eq!(f.index, n);
        assert!(f.time_ms >= last_time);
        last_time = f.time_ms;
        n += 1;
    }
    assert_eq!(n, 275);
    assert_eq!(s.stats().skipped, 0);
    // 275 frames at 29.97 fps: the last starts near 9.14 s.
    assert!((9000..9300).contains(&last_time), "{last_time}");
}

#[test]
fn damaged_streams_skip_or_refuse_never_panic() {
    let bytes = std::fs::read(clip()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, b: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    // Cut in half: the header (at the end of this file or the start) or the samples are gone.
    for (name, b) in [
        ("half.mp4", &bytes[..bytes.len() / 2]),
        ("head.mp4", &bytes[..1000]),
        ("empty.mp4", &bytes[..0]),
    ] {
        let p = write(name, b);
        if let Ok(mut s) = source::open(&p, &VideoLimits::default()) {
            while let Some(f) = s.next_frame() {
                if f.is_err() {
                    break;
                }
            }
        }
    }
    // Noise over the sample data (the moov box is kept): frames are skipped or decoded with
    // damage, the stream ends, nothing panics.
    let moov = bytes.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap();
    let mut noisy = bytes.clone();
    let (from, to) = if mdat < moov {
        (mdat + 4, moov - 4)
    } else {
        (mdat + 4, bytes.len())
    };
    let mut x = 12345u32;
    for b in &mut noisy[from..to] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if x.is_multiple_of(7) {
            *b = x as u8;
        }
    }
    let p = write("noisy.mp4", &noisy);
    let mut s = Mp4Source::open(&p, &VideoLimits::default()).unwrap();
    let mut outcomes = (0, 0);
    while let Some(f) = s.next_frame() {
        match f {
            Ok(_) => outcomes.0 += 1,
            Err(_) => {
                outcomes.1 += 1;
                break;
            }
        }
    }
    assert!(outcomes.0 + outcomes.1 > 0);
    // Frames larger than the limit are refused, not decoded.
    let small = VideoLimits {
        max_pixels: 320 * 180,
        ..Default::default()
    };
    assert!(matches!(
        Mp4Source::open(&clip(), &small),
        Err(VideoError::TooLarge(_))
    ));
    // A sample larger than the limit is refused before it is read.
    let tiny = VideoLimits {
        max_sample_bytes: 64,
        ..Default::default()
    };
    let mut s = Mp4Source::open(&clip(), &tiny).unwrap();
    assert!(matches!(s.next_frame(), Some(Err(VideoError::TooLarge(_)))));
}

#[test]
fn a_folder_of_frames_is_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Mp4Source::open(&clip(), &VideoLimits::default()).unwrap();
    for i in 0..3 {
        let f = s.next_frame().unwrap().unwrap();
        f.image
            .save(dir.path().join(format!("frame{i:03}.png")))
            .unwrap();
    }
    std::fs::write(dir.path().join("frame001b.jpg"), b"not a jpeg").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    let mut f = source::open(dir.path(), &VideoLimits::default()).unwrap();
    let mut n = 0;
    while let Some(fr) = f.next_frame() {
        fr.unwrap();
        n += 1;
    }
    assert_eq!((n, f.stats().skipped), (3, 1));
}

/// Fuzzing found MP4 headers the `mp4` demuxer (0.14) loops on forever: a box of size 0 (or
/// smaller than its header) inside `moov` makes it seek back to where it started. The box tree is
/// checked before the demuxer sees it.
#[test]
fn a_zero_size_box_in_the_header_is_refused_not_looped_on() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let good = std::fs::read(root.join("../../fuzz/seeds/mp4_video/clip_first3.mp4")).unwrap();
    assert!(Mp4Source::from_bytes(good.clone(), &VideoLimits::default()).is_ok());
    let mvhd = good.windows(4).position(|w| w == b"mvhd").unwrap() - 4;
    for size in [0u32, 4] {
        let mut bad = good.clone();
        bad[mvhd..mvhd + 4].copy_from_slice(&size.to_be_bytes());
        bad[mvhd + 4..mvhd + 8].copy_from_slice(b"free");
        match Mp4Source::from_bytes(bad, &VideoLimits::default()) {
            Err(VideoError::Malformed(m)) => assert!(m.contains("does not fit"), "{m}"),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("a box of size {size} was accepted"),
        }
    }
    // The file the fuzzer found (its header also runs past the end of the file).
    let found = std::fs::read(root.join("tests/fixtures/fuzz_moov_zero_size_box.mp4")).unwrap();
    assert!(matches!(
        Mp4Source::from_bytes(found, &VideoLimits::default()),
        Err(VideoError::Malformed(_))
    ));
}

/// Fuzzing found a track whose media header has a timescale of 0: the demuxer's own duration
/// divides by it. Opening it must answer, not panic.
#[test]
fn a_zero_timescale_does_not_panic() {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz_mdhd_zero_timescale.mp4"),
    )
    .unwrap();
    if let Ok(mut s) = Mp4Source::from_bytes(bytes, &VideoLimits::default()) {
        assert_eq!(s.frame_rate(), 0.0);
        while let Some(Ok(_)) = s.next_frame() {}
    }
}

#[test]
fn a_source_is_named_without_its_credentials() {
    use std::path::Path;
    let cases = [
        (
            "rtsp://gate:s3cret@10.0.0.7/stream1",
            "rtsp://10.0.0.7/stream1",
        ),
        ("http://gate:s3cret@cam/x.mjpg", "http://cam/x.mjpg"),
        // Malformed (an unclosed IPv6 literal; a password with `/` and `@` in it): everything
        // up to the last `@` goes.
        ("http://gate:s3cret@[::1/x.mjpg", "http://[::1/x.mjpg"),
        ("rtsp://gate:s3/c@ret@[::1/x", "rtsp://[::1/x"),
        ("/var/video/gate 3.mp4", "/var/video/gate 3.mp4"),
        ("frames/", "frames/"),
    ];
    for (source, want) in cases {
        let got = video::source::shown(Path::new(source));
        assert_eq!(got, want);
        assert!(!got.contains("s3"), "{got}");
    }
}
