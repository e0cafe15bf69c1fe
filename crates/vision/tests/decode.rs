//! Decoding: formats, orientation, bit depths, and refusal of bad input without panics.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

use std::path::Path;
use vision::decode::{decode, DecodeLimits};
use vision::VisionError;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn reference() -> image::RgbImage {
    decode(&fixture("synthetic.png"), &DecodeLimits::default()).unwrap()
}

#[test]
fn lossless_jpeg2000_equals_png() {
    let want = reference();
    let got = decode(&fixture("synthetic.jp2"), &DecodeLimits::default()).unwrap();
    assert_eq!(got.dimensions(), (64, 48));
    assert_eq!(got.as_raw(), want.as_raw());
}

#[test]
fn grey_jpeg2000_becomes_rgb() {
    let want = reference();
    let got = decode(&fixture("synthetic_grey.jp2"), &DecodeLimits::default()).unwrap();
    for (g, w) in got.pixels().zip(want.pixels()) {
        assert_eq!(g.0, [w[0], w[0], w[0]]);
    }
}

#[test]
fn exif_orientation_is_applied() {
    let want = reference();
    let got = decode(&fixture("synthetic_exif6.jpg"), &DecodeLimits::default()).unwrap();
    assert_eq!(
        got.dimensions(),
        (64, 48),
        "rotated back to display orientation"
    );
    let mean_err: f64 = got
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / got.as_raw().len() as f64;
    assert!(
        mean_err < 6.0,
        "JPEG of the rotated image should match after orientation: mean err {mean_err}"
    );
}

#[test]
fn sixteen_bit_grey_and_rgba_png() {
    let want = reference();
    let g16 = decode(&fixture("synthetic_grey16.png"), &DecodeLimits::default()).unwrap();
    for (g, w) in g16.pixels().zip(want.pixels()) {
        assert_eq!(g.0, [w[1], w[1], w[1]]);
    }
    let rgba = decode(&fixture("synthetic_rgba.png"), &DecodeLimits::default()).unwrap();
    assert_eq!(rgba.as_raw(), want.as_raw());
}

#[test]
fn pixel_limit_refuses_before_decoding() {
    let limits = DecodeLimits {
        max_pixels: 1000,
        ..Default::default()
    };
    for f in ["synthetic.png", "synthetic_q90.jpg", "synthetic.jp2"] {
        match decode(&fixture(f), &limits) {
            Err(VisionError::TooLarge {
                width: 64,
                height: 48,
                ..
            }) => {}
            other => panic!("{f}: {other:?}"),
        }
    }
    let limits = DecodeLimits {
        max_bytes: 100,
        ..Default::default()
    };
    assert!(matches!(
        decode(&fixture("synthetic_q90.jpg"), &limits),
        Err(VisionError::TooManyBytes { .. })
    ));
}

#[test]
fn a_png_header_claiming_a_huge_image_is_refused() {
    // A valid PNG signature and IHDR claiming 100000 x 100000 pixels, then an empty IDAT.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png.extend((13u32).to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    for chunk in [&b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01"[..], &b"IEND"[..]] {
        png.extend(((chunk.len() - 4) as u32).to_be_bytes());
        png.extend(chunk);
        png.extend(crc32(chunk).to_be_bytes());
    }
    let r = decode(&png, &DecodeLimits::default());
    assert!(matches!(r, Err(VisionError::TooLarge { .. })), "{r:?}");
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn corrupt_truncated_and_unknown_inputs_are_errors() {
    assert!(matches!(
        decode(b"GIF89a....", &DecodeLimits::default()),
        Err(VisionError::UnsupportedFormat(_))
    ));
    assert!(decode(b"", &DecodeLimits::default()).is_err());
    for f in ["synthetic.png", "synthetic_q90.jpg", "synthetic.jp2"] {
        let full = fixture(f);
        for cut in [4, 12, 40, full.len() / 2, full.len() - 1] {
            let _ = decode(&full[..cut], &DecodeLimits::default()); // must not panic
        }
        let mut flipped = full.clone();
        for i in (20..flipped.len()).step_by(7) {
            flipped[i] ^= 0x5a;
        }
        let _ = decode(&flipped, &DecodeLimits::default());
    }
}

/// A file cut anywhere before its end marker is reported as truncated (JPEG, PNG, JPEG 2000);
/// the complete file is not. Strict limits refuse it; default limits still decode it.
#[test]
fn truncated_files_are_detected_and_refused_when_strict() {
    use vision::decode::truncation;
    for f in ["synthetic_q90.jpg", "synthetic.png", "synthetic.jp2"] {
        let whole = fixture(f);
        assert_eq!(truncation(&whole), None, "{f} complete");
        // Every cut point in the second half, and a few in the first (inside headers).
        let cuts = (1..whole.len())
            .filter(|c| *c > whole.len() / 2 || c % 97 == 0)
            .filter(|c| *c > 8);
        for cut in cuts {
            let part = &whole[..cut];
            assert!(
                truncation(part).is_some(),
                "{f} cut at {cut} of {} not detected",
                whole.len()
            );
        }
        let half = &whole[..whole.len() / 2];
        assert!(matches!(
            decode(half, &DecodeLimits::default().strict()),
            Err(VisionError::Truncated(_))
        ));
        assert!(decode(&whole, &DecodeLimits::default().strict()).is_ok());
    }
    // Tolerant decoding of a half JPEG still yields an image (flagged by callers).
    let jpg = fixture("synthetic_q90.jpg");
    assert!(decode(&jpg[..jpg.len() * 3 / 4], &DecodeLimits::default()).is_ok());
    // Bytes after the end marker do not make a file truncated.
    let mut padded = jpg.clone();
    padded.extend_from_slice(b"trailing camera data");
    assert_eq!(truncation(&padded), None);
}

/// Where a JPEG 2000 file's SIZ marker (FF51) is.
fn siz_marker(jp2: &[u8]) -> usize {
    jp2.windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
        .unwrap()
        + 2
}

/// `jp2` with its image and its one tile made `side` x `side` pixels (SIZ's Xsiz, Ysiz, XTsiz,
/// YTsiz).
fn resized(jp2: &[u8], side: u32) -> Vec<u8> {
    let mut b = jp2.to_vec();
    let siz = siz_marker(&b);
    for at in [siz + 6, siz + 10, siz + 22, siz + 26] {
        b[at..at + 4].copy_from_slice(&side.to_be_bytes());
    }
    b
}

/// Decoding `bytes` is refused with a message naming `what` (the header checks' wording).
fn assert_refused(bytes: &[u8], what: &str) {
    match decode(bytes, &DecodeLimits::default()) {
        Err(VisionError::Decode(m)) => assert!(m.contains(what), "{m}"),
        other => panic!(
            "expected a refusal naming {what}, got {:?}",
            other.map(|img| img.dimensions())
        ),
    }
}

/// Decoding `bytes` is not refused by the header checks (it may fail in the decoder itself:
/// patched files' data no longer fits their headers).
fn assert_within_header_budgets(bytes: &[u8]) {
    if let Err(VisionError::Decode(m)) = decode(bytes, &DecodeLimits::default()) {
        assert!(!m.contains("headers commit"), "{m}");
    }
}

/// A JPEG 2000 header declaring a grid of tiny tiles (the tile bomb: work and memory grow with
/// the tile count) or too many components is refused from the header, before decoding.
#[test]
fn jpeg2000_tile_bombs_are_refused_from_the_header() {
    let base = fixture("synthetic.jp2");
    let siz = siz_marker(&base);
    let patched = |w: u32, h: u32, tile: u32, comps: u16| {
        let mut b = base.clone();
        b[siz + 6..siz + 10].copy_from_slice(&w.to_be_bytes());
        b[siz + 10..siz + 14].copy_from_slice(&h.to_be_bytes());
        b[siz + 22..siz + 26].copy_from_slice(&tile.to_be_bytes());
        b[siz + 26..siz + 30].copy_from_slice(&tile.to_be_bytes());
        b[siz + 38..siz + 40].copy_from_slice(&comps.to_be_bytes());
        b
    };
    let started = std::time::Instant::now();
    for (w, h, tile, comps) in [
        (910, 1137, 1, 3),
        (2000, 2000, 1, 3),
        (64, 48, 1, 3),
        (64, 48, 64, 900),
    ] {
        match decode(&patched(w, h, tile, comps), &DecodeLimits::default()) {
            Err(VisionError::Decode(m)) => {
                assert!(m.contains("tiles") || m.contains("components"), "{m}")
            }
            other => panic!("{w}x{h} tiles {tile} comps {comps}: {other:?}"),
        }
    }
    // Refused from the header: no decoding happened.
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // The untouched file still decodes.
    assert!(decode(&base, &DecodeLimits::default()).is_ok());
}

/// A JPEG 2000 header whose tiles and code-blocks make the decoder's tag trees explode (work
/// grows with the square of a precinct's longer side in code-blocks) is refused from its
/// headers; so is the 15 KB file fuzzing found (0.6 s for 0.2 MP before the check).
#[test]
fn jpeg2000_work_bombs_are_refused_from_the_headers() {
    let base = fixture("synthetic.jp2");
    let siz = siz_marker(&base);
    let cod = base.windows(2).position(|w| w == [0xFF, 0x52]).unwrap();
    let mut thin = base.clone();
    thin[siz + 6..siz + 10].copy_from_slice(&1024u32.to_be_bytes());
    thin[siz + 10..siz + 14].copy_from_slice(&1024u32.to_be_bytes());
    // Tiles 1 pixel wide (1024 of them, within the tile limit), code-blocks 64x4.
    thin[siz + 22..siz + 26].copy_from_slice(&1u32.to_be_bytes());
    thin[siz + 26..siz + 30].copy_from_slice(&1024u32.to_be_bytes());
    thin[cod + 10] = 4;
    thin[cod + 11] = 0;
    assert_refused(&thin, "tag-tree nodes");
    // The same pixels in one tile are within every budget (the data does not fit the new size,
    // so the decoder itself fails: the header check let it through).
    let mut whole = thin.clone();
    whole[siz + 22..siz + 26].copy_from_slice(&1024u32.to_be_bytes());
    assert_within_header_budgets(&whole);
    let fuzzed = fixture("fuzz_jp2_thin_tiles.jp2");
    assert!(matches!(
        decode(&fuzzed, &DecodeLimits::default()),
        Err(VisionError::Decode(_))
    ));
    assert!(decode(&base, &DecodeLimits::default()).is_ok());
}

/// A 1 KB JPEG found by fuzzing makes zune-jpeg 0.5.15 panic in its IDCT; decoding must answer
/// with an error instead of taking the process down.
#[test]
fn a_decoder_panic_is_a_decode_error() {
    let bytes = fixture("fuzz_zune_idct_panic.jpg");
    match decode(&bytes, &DecodeLimits::default()) {
        Err(VisionError::Decode(m)) => assert!(m.contains("malformed"), "{m}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// A 3.8 KB codestream (`jp2_pass_bomb` in scripts/hostile_inputs.py) whose packet headers
/// declare 94 coding passes and no data for every code-block of 1 MP in four components: the
/// decoder runs every declared pass over every sample (3.9 s for this file before the check, a
/// libFuzzer timeout in CI found the class). Refused from its headers; the same file with fewer
/// bit-planes is within the budget and decodes.
#[test]
fn jpeg2000_pass_bombs_are_refused_from_the_headers() {
    let bomb = fixture("jp2_pass_bomb.j2k");
    assert_refused(&bomb, "sample passes");
    // QCD's exponent 31 (32 bit-planes, 94 passes) lowered to 2 (3 bit-planes, 7 passes): the
    // decoder caps each code-block's passes at its bit-planes.
    let qcd = bomb.windows(2).position(|w| w == [0xFF, 0x5C]).unwrap();
    assert_eq!(bomb[qcd + 5], 31 << 3);
    let mut fewer = bomb.clone();
    fewer[qcd + 5] = 2 << 3;
    let img = decode(&fewer, &DecodeLimits::default()).unwrap();
    assert_eq!(img.dimensions(), (1000, 1000));
}

/// A 202-byte codestream written by hand (1000x1000 grey, 5 levels, 2x2-pixel precincts, 4x4
/// code-blocks, 32 layers, no packet data) made the decoder keep a record per code-block per
/// layer: 1.1 GB at 1 MP before the check. Refused from its headers; with one layer (227 MB) it
/// is within the layer bound and over the memory budget; at 500x500 within both.
#[test]
fn jpeg2000_layer_bombs_are_refused_from_the_headers() {
    let bomb = fixture("jp2_layer_bomb.j2k");
    assert_refused(&bomb, "code-block layers");
    // COD: marker, length, Scod, progression order, then the layer count.
    let cod = bomb.windows(2).position(|w| w == [0xFF, 0x52]).unwrap();
    assert_eq!(bomb[cod + 6..cod + 8], [0, 32]);
    let mut one = bomb.clone();
    one[cod + 7] = 1;
    assert_refused(&one, "of memory");
    assert_within_header_budgets(&resized(&one, 500));
}

/// The pass bomb with one bit-plane (cheap to decode) and its size raised to 6300x6300: 39.7 MP
/// in four components, whose buffers alone took 1.6 GB before the check (the 115 KB file
/// `jp2_pass_bomb` writes at that size). Refused from its headers (the seed
/// `fuzz/seeds/decode/jp2_memory_bomb.j2k` is this file); at its own 1 MP it decodes.
#[test]
fn jpeg2000_memory_bombs_are_refused_from_the_headers() {
    let mut small = fixture("jp2_pass_bomb.j2k");
    let qcd = small.windows(2).position(|w| w == [0xFF, 0x5C]).unwrap();
    small[qcd + 5] = 0;
    let img = decode(&small, &DecodeLimits::default()).unwrap();
    assert_eq!(img.dimensions(), (1000, 1000));
    let big = resized(&small, 6300);
    assert_refused(&big, "of memory");
    let seed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/decode/jp2_memory_bomb.j2k");
    assert_eq!(std::fs::read(seed).unwrap(), big);
}
