//! HOG frontal face detector parity with dlib 20.0.1's get_frontal_face_detector (../shared/golden).

mod common;
use common::*;
use vision::mmod::DetectOptions;
use vision::models::{Detector, DetectorChoice, Models};

/// The installed dlib pack's HOG detector (decoded from dlib's sdist at fetch time).
fn models() -> Option<Models> {
    let (pack, _) = pack_and_runtime()?;
    Some(Models::load_with(&pack, 1, DetectorChoice::Hog).unwrap())
}

fn check(upsample: u32, adjust: f32, key: &str) {
    let (Some(g), Some(models)) = (golden(), models()) else {
        return;
    };
    let Detector::Hog(det) = &models.detector else {
        panic!("asked for the HOG detector");
    };
    let gdir = shared_dir().join("golden");
    let (mut total, mut exact, mut worst_px, mut worst_score) = (0, 0, 0f64, 0f64);
    let mut mismatched = Vec::new();
    for img in g["images"].as_array().unwrap() {
        let name = img["name"].as_str().unwrap();
        let rgb = load_rgb(&gdir.join(img["file"].as_str().unwrap()));
        let opts = DetectOptions {
            upsample,
            threshold: adjust,
            ..Default::default()
        };
        let got = det.detect(&rgb, &opts).unwrap();
        let want = img["hog"][key]["dets"].as_array().unwrap();
        if got.len() != want.len() {
            mismatched.push(format!(
                "{name}: {} boxes {:?}, dlib {}",
                got.len(),
                got.iter().map(|d| (d.rect, d.score)).collect::<Vec<_>>(),
                serde_json::to_string(want).unwrap()
            ));
            continue;
        }
        for (d, w) in got.iter().zip(want) {
            let r = f64s(&w["rect"]);
            let px = [
                d.rect.left - r[0],
                d.rect.top - r[1],
                d.rect.right - r[2],
                d.rect.bottom - r[3],
            ]
            .iter()
            .fold(0f64, |m, v| m.max(v.abs()));
            let ds = (d.score as f64 - w["score"].as_f64().unwrap()).abs();
            worst_px = worst_px.max(px);
            worst_score = worst_score.max(ds);
            exact += (px == 0.0) as usize;
            total += 1;
        }
    }
    eprintln!("hog {key}: {total} boxes, {exact} exact, max corner diff {worst_px} px, max score diff {worst_score:.2e}; count mismatches: {mismatched:#?}");
    // Features and window scores are computed in dlib's float order, so boxes are identical and
    // scores differ only by the f32 the result is stored in.
    assert!(mismatched.is_empty(), "{mismatched:#?}");
    assert_eq!(exact, total);
    assert!(total > 50);
    assert!(worst_score < 1e-6, "score off by {worst_score}");
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
