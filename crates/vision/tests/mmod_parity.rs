//! MMOD detection parity with dlib 20.0.1's cnn_face_detection_model_v1 (../shared/golden).
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

mod common;
use common::*;
use vision::detect::DetectOptions;
use vision::models::Models;

fn check(upsample: u32, key: &str) {
    let (Some(g), Some((pack, _))) = (golden(), pack_and_runtime()) else {
        return;
    };
    let models = Models::load(&pack, 0).unwrap();
    let det = &models.detector;
    assert_eq!(det.name(), "mmod", "the dlib pack has an MMOD detector");
    let gdir = shared_dir().join("golden");
    let mut cmp = BoxComparison::default();
    for img in g["images"].as_array().unwrap() {
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
        cmp.add(img["name"].as_str().unwrap(), &got, want, "confidence");
    }
    eprintln!("mmod {key}: {cmp:?}");
    assert!(cmp.mismatched.is_empty(), "{:#?}", cmp.mismatched);
    assert!(cmp.worst_px <= 1.0, "corner off by {}", cmp.worst_px);
    assert!(cmp.worst_score < 1e-3, "score off by {}", cmp.worst_score);
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
    let got = vision::dlib::resize::pyramid_up(&load_rgb(&src));
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
