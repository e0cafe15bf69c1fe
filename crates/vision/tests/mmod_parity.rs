//! MMOD detection parity with dlib 20.0.1's cnn_face_detection_model_v1 (../shared/golden).

mod common;
use common::*;
use vision::mmod::DetectOptions;
use vision::models::{Detector, Models};

fn check(upsample: u32, key: &str) {
    let (Some(g), Some((pack, _))) = (golden(), pack_and_runtime()) else {
        return;
    };
    let models = Models::load(&pack, 0).unwrap();
    let Detector::Mmod(det) = &models.detector else {
        panic!("the dlib pack has an MMOD detector");
    };
    let gdir = shared_dir().join("golden");
    let (mut total, mut exact, mut worst_px, mut worst_score) = (0, 0, 0f64, 0f64);
    let mut mismatched = Vec::new();
    for img in g["images"].as_array().unwrap() {
        let name = img["name"].as_str().unwrap();
        // The 1280x720 image upsampled is ~10 GB of work in dlib's layout; covered by u0.
        if upsample > 0
            && img["width"].as_u64().unwrap() * img["height"].as_u64().unwrap() > 700_000
        {
            continue;
        }
        let rgb = load_rgb(&gdir.join(img["file"].as_str().unwrap()));
        let got = det
            .detect(
                &rgb,
                &DetectOptions {
                    upsample,
                    ..Default::default()
                },
            )
            .unwrap();
        let want = img["cnn"][key]["dets"].as_array().unwrap();
        if got.len() != want.len() {
            mismatched.push(format!("{name}: {} boxes, dlib {}", got.len(), want.len()));
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
            let ds = (d.score as f64 - w["confidence"].as_f64().unwrap()).abs();
            worst_px = worst_px.max(px);
            worst_score = worst_score.max(ds);
            exact += (px == 0.0) as usize;
            total += 1;
        }
    }
    eprintln!("mmod {key}: {total} boxes, {exact} exact, max corner diff {worst_px} px, max score diff {worst_score:.2e}; count mismatches: {mismatched:?}");
    assert!(mismatched.is_empty(), "{mismatched:?}");
    assert!(worst_px <= 1.0, "corner off by {worst_px}");
    assert!(worst_score < 1e-3, "score off by {worst_score}");
}

#[test]
fn mmod_boxes_match_dlib_without_upsampling() {
    check(0, "u0");
}

#[test]
fn mmod_boxes_match_dlib_with_upsampling() {
    check(1, "u1");
}

#[test]
fn pyramid_up_matches_dlib() {
    let (Some(src), Some(want)) = (
        shared("golden/images/lfw_Abel_Pacheco_0001.png"),
        shared("golden/extra/pyramid_up_lfw_Abel_Pacheco_0001.png"),
    ) else {
        return;
    };
    let got = vision::mmod::pyramid_up(&load_rgb(&src));
    let want = load_rgb(&want);
    assert_eq!((got.width(), got.height()), (want.width(), want.height()));
    let diffs = got
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .filter(|(a, b)| a != b)
        .count();
    let maxd = max_abs_diff(&got, &want);
    eprintln!("pyramid_up: {diffs} differing values, max diff {maxd}");
    assert_eq!(diffs, 0);
}
