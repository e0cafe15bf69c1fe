//! Tests of `hog`, kept beside it so the module reads as the algorithm.

use super::*;

/// dlib's integer encoding: a control byte (length, 0x80 if negative), then little-endian bytes.
fn put_int(out: &mut Vec<u8>, v: i64) {
    let m = v.unsigned_abs();
    let bytes = m.to_le_bytes();
    let n = 8 - bytes.iter().rev().take_while(|&&b| b == 0).count();
    out.push(n as u8 | if v < 0 { 0x80 } else { 0 });
    out.extend_from_slice(&bytes[..n]);
}

/// dlib's float encoding: integer mantissa and exponent (value = m · 2^e).
fn put_float(out: &mut Vec<u8>, v: f64) {
    let e = -40i64;
    put_int(out, (v * 2f64.powi(40)).round() as i64);
    put_int(out, e);
}

/// A detector in dlib's serialized layout with `n` filters of rank-2 planes.
fn synthetic(n: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2, 1, 0, 0, 8, 0, 80, 80, 1000, 64, 64] {
        put_int(&mut b, v);
    }
    put_float(&mut b, 9.0);
    put_int(&mut b, 3100);
    put_float(&mut b, 0.33);
    put_float(&mut b, 0.78);
    put_int(&mut b, n as i64);
    let mut rng = crate::rng::SplitMix::new(7);
    for _ in 0..n {
        put_int(&mut b, -3101);
        put_int(&mut b, -1);
        for _ in 0..31 {
            let (u1, v1, u2, v2): (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) = (
                (0..10).map(|_| rng.range(-0.3, 0.3)).collect(),
                (0..10).map(|_| rng.range(-0.3, 0.3)).collect(),
                (0..10).map(|_| rng.range(-0.1, 0.1)).collect(),
                (0..10).map(|_| rng.range(-0.1, 0.1)).collect(),
            );
            for r in 0..10 {
                for c in 0..10 {
                    put_float(&mut b, u1[r] * v1[c] + u2[r] * v2[c]);
                }
            }
        }
        put_float(&mut b, 0.5);
    }
    b
}

#[test]
fn parses_dlibs_layout_and_splits_each_plane_into_its_rank() {
    let d = HogDetector::parse(&synthetic(2)).unwrap();
    assert_eq!((d.filters.len(), d.filter_rows, d.filter_cols), (2, 10, 10));
    assert_eq!((d.cell, d.window), (8, 80.0));
    assert!((d.iou - 0.33).abs() < 1e-9 && (d.covered - 0.78).abs() < 1e-9);
    for f in &d.filters {
        assert!((f.threshold - 0.5).abs() < 1e-9);
        // Rank-2 planes give two separable terms each (parse checks that they rebuild it).
        assert!(f.planes.iter().all(|terms| terms.len() == 2));
    }
}

#[test]
fn damaged_detectors_are_refused() {
    let good = synthetic(1);
    for n in [0, 1, 10, 40, good.len() / 2, good.len() - 1] {
        assert!(HogDetector::parse(&good[..n]).is_err(), "truncated at {n}");
    }
    let mut extra = good.clone();
    extra.push(0);
    assert!(HogDetector::parse(&extra).is_err());
    assert!(serialized_from_header("no detector here").is_err());
    assert!(serialized_from_header("get_serialized_frontal_faces()\n sout << \"@@@\";\n").is_err());
}

#[test]
fn flat_and_tiny_images_give_no_faces_and_no_panic() {
    let d = HogDetector::parse(&synthetic(1)).unwrap();
    let opts = DetectOptions::default();
    for (w, h) in [(1, 1), (7, 300), (30, 30), (120, 90)] {
        let img = RgbImage::from_pixel(w, h, image::Rgb([90, 120, 150]));
        assert!(d.detect(&img, &opts).unwrap().is_empty(), "{w}x{h}");
    }
    assert!(d.detect(&RgbImage::new(0, 0), &opts).is_err());
    // A flat image has no gradients, so every FHOG feature is zero.
    let img = RgbImage::from_pixel(64, 48, image::Rgb([200, 10, 10]));
    let f = fhog(&Planar::from_rgb(&img), 8, 10, 10).unwrap();
    assert!(f.data.iter().all(|&v| v == 0.0));
}

/// The AVX2/AVX-512 copies (`simd_twin!`, the only unsafe here) give the portable code's
/// bits; on a CPU without them both sides run the portable code.
#[test]
fn simd_twins_match_portable_code() {
    let mut rng = crate::rng::SplitMix::new(11);
    let d = HogDetector::parse(&synthetic(2)).unwrap();
    for (w, h) in [(203u32, 157u32), (96, 64), (333, 250)] {
        // Smooth gradients plus noise, so that every orientation bin and both tie rules occur.
        let img = RgbImage::from_fn(w, h, |x, y| {
            let base = ((x * 3 + y * 5) % 256) as u8;
            let n = rng.below(4) as u8;
            image::Rgb([base.wrapping_add(n), base, (x as u8).wrapping_mul(7) ^ n])
        });
        let p = Planar::from_rgb(&img);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let base = fhog_body(&p, 8, 10, 10).unwrap();
        assert!(base.data.iter().any(|&v| v != 0.0));
        // The planar pyramid step gives dlib's RGB resize (resize_rgb_truncating, checked
        // against dlib's own output in mmod_parity), with and without the gathers.
        let (dw, dh) = (5 * w as usize / 6, 5 * h as usize / 6);
        let want = Planar::from_rgb(&crate::dlib::resize::resize_rgb_truncating(&img, dw, dh));
        assert_eq!(resize_planar_with(&p, dw, dh, false).planes, want.planes);
        // Every compiled copy this CPU can run (the level is capped at what it has).
        for level in [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512] {
            let feats = fhog_at(level, &p, 8, 10, 10).unwrap();
            assert_eq!(bits(&feats.data), bits(&base.data), "{level:?}");
            for f in &d.filters {
                let (mut s1, mut s2) = (Scratch::default(), Scratch::default());
                scan_at(level, f, &base, &mut s1);
                scan_body(f, &base, &mut s2);
                assert_eq!(bits(&s1.saliency), bits(&s2.saliency), "{level:?}");
            }
            let got = pyramid_down6_at(level, &p, dw, dh);
            assert_eq!((got.w, got.h), (dw, dh));
            assert_eq!(got.planes, want.planes, "{level:?}");
        }
    }
    eprintln!("widest SIMD level on this CPU: {:?}", SimdLevel::detect());
}

#[test]
fn level_count_matches_dlib() {
    // Level counts dlib printed for these sizes (golden/extra/dlib_params_and_layers.txt).
    let d = HogDetector::parse(&synthetic(1)).unwrap();
    for (w, h, n) in [
        (640, 480, 12),
        (1282, 961, 15),
        (1280, 720, 14),
        (250, 250, 8),
        (502, 501, 12),
    ] {
        assert_eq!(d.level_count(w, h), n, "{w}x{h}");
    }
}
