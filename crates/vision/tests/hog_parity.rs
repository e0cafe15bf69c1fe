//! HOG frontal face detector parity with dlib 20.0.1's get_frontal_face_detector (../shared/golden).
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

mod common;
use common::*;
use vision::detect::DetectOptions;
use vision::models::{DetectorChoice, Models};

/// The installed dlib pack's HOG detector (decoded from dlib's sdist at fetch time).
fn models() -> Option<Models> {
    let (pack, _) = pack_and_runtime()?;
    Some(Models::load_with(&pack, 1, DetectorChoice::Hog).unwrap())
}

fn check(upsample: u32, adjust: f32, key: &str) {
    let (Some(g), Some(models)) = (golden(), models()) else {
        return;
    };
    let det = &models.detector;
    assert_eq!(det.name(), "hog", "asked for the HOG detector");
    let gdir = shared_dir().join("golden");
    let mut cmp = BoxComparison::default();
    for img in g["images"].as_array().unwrap() {
        let rgb = load_rgb(&gdir.join(img["file"].as_str().unwrap()));
        let opts = DetectOptions {
            upsample,
            threshold: adjust,
            ..Default::default()
        };
        let got = det.detect(&rgb, &opts).unwrap();
        let want = img["hog"][key]["dets"].as_array().unwrap();
        cmp.add(img["name"].as_str().unwrap(), &got, want, "score");
    }
    eprintln!("hog {key}: {cmp:?}");
    // Features and window scores are computed in dlib's float order, so boxes are identical and
    // scores differ only by the f32 the result is stored in.
    assert!(cmp.mismatched.is_empty(), "{:#?}", cmp.mismatched);
    assert_eq!(cmp.exact, cmp.total);
    assert!(cmp.total > 50);
    assert!(cmp.worst_score < 1e-6, "score off by {}", cmp.worst_score);
}

#[test]
fn hog_boxes_match_dlib_without_upsampling() {
    check(0, 0.0, "u0");
}

#[test]
fn hog_boxes_match_dlib_with_upsampling() {
    check(1, 0.0, "u1");
}

#[test]
fn hog_boxes_match_dlib_with_lower_threshold() {
    check(1, -0.5, "u1_adj-0.5");
}
