//! Stage-by-stage parity with the real dlib 20.0.1 (outputs in ../shared/golden).
//! Tolerances: landmarks exact; chips within 1 grey level; descriptors within 1e-3 L2.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

mod common;
use common::*;
use vision::chip::{face_chip, face_chip_details};
use vision::dlib::shape_predictor::ShapePredictor;
use vision::embed::Embedder as _;
use vision::geometry::{Point, Rect};
use vision::pack::{LandmarkSpec, Manifest};

fn embedder(pack: &std::path::Path) -> vision::embed::OnnxEmbedder {
    let m = Manifest::load(pack).unwrap();
    let bytes = Manifest::read_verified(pack, &m.embedder.model).unwrap();
    vision::embed::OnnxEmbedder::from_onnx(
        &bytes,
        m.embedder.input.clone(),
        m.embedder.embedding_size,
        0,
    )
    .unwrap()
}

fn shape_predictor(pack: &std::path::Path) -> ShapePredictor {
    let m = Manifest::load(pack).unwrap();
    let LandmarkSpec::DlibShapePredictor { model } = &m.landmarks else {
        panic!("not a dlib pack")
    };
    ShapePredictor::parse(&Manifest::read_verified(pack, model).unwrap()).unwrap()
}

fn faces(g: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for img in g["images"].as_array().unwrap() {
        for f in img["faces"].as_array().unwrap() {
            out.push((img["file"].as_str().unwrap().to_string(), f.clone()));
        }
    }
    out
}

fn landmarks(f: &serde_json::Value) -> Vec<Point> {
    f["landmarks5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Point {
            x: p[0].as_f64().unwrap(),
            y: p[1].as_f64().unwrap(),
        })
        .collect()
}

#[test]
fn descriptors_from_golden_chips_match_dlib() {
    let (Some(g), Some((pack, _))) = (golden(), pack_and_runtime()) else {
        return;
    };
    let emb = embedder(&pack);
    let gdir = shared_dir().join("golden");
    let fs = faces(&g);
    let chips: Vec<_> = fs
        .iter()
        .map(|(_, f)| load_rgb(&gdir.join(f["chip"].as_str().unwrap())))
        .collect();
    let out = emb.embed(&chips).unwrap();
    let mut worst = 0f64;
    for ((_, f), d) in fs.iter().zip(&out) {
        let e = l2(d, &f64s(&f["descriptor_from_chip"]));
        worst = worst.max(e);
    }
    eprintln!(
        "descriptor from chip: {} faces, max L2 error {worst:.2e}",
        fs.len()
    );
    assert_eq!(fs.len(), 118);
    assert!(worst < 1e-3, "max L2 error {worst}");
}

#[test]
fn landmarks_match_dlib_exactly() {
    let (Some(g), Some((pack, _))) = (golden(), pack_and_runtime()) else {
        return;
    };
    let sp = shape_predictor(&pack);
    let gdir = shared_dir().join("golden");
    let mut checked = 0;
    for img in g["images"].as_array().unwrap() {
        let rgb = load_rgb(&gdir.join(img["file"].as_str().unwrap()));
        for f in img["faces"].as_array().unwrap() {
            let r = f64s(&f["rect"]);
            let rect = Rect {
                left: r[0],
                top: r[1],
                right: r[2],
                bottom: r[3],
            };
            let got = sp.predict(&rgb, &rect);
            assert_eq!(got, landmarks(f), "{} rect {r:?}", img["name"]);
            checked += 1;
        }
    }
    assert_eq!(checked, 118);
}

#[test]
fn chips_match_dlib_within_one_grey_level() {
    let Some(g) = golden() else { return };
    let gdir = shared_dir().join("golden");
    let mut worst = 0i32;
    let mut exact = 0;
    let mut n = 0;
    for img in g["images"].as_array().unwrap() {
        let rgb = load_rgb(&gdir.join(img["file"].as_str().unwrap()));
        for f in img["faces"].as_array().unwrap() {
            let lm = landmarks(f);
            let det = face_chip_details(&lm, 150, 0.25);
            let gr = f64s(&f["chip_details"]["rect"]);
            assert!(
                (det.rect.left - gr[0]).abs() < 1e-6 && (det.rect.bottom - gr[3]).abs() < 1e-6,
                "{det:?} vs {gr:?}"
            );
            let chip = face_chip(&rgb, &lm, 150, 0.25);
            let want = load_rgb(&gdir.join(f["chip"].as_str().unwrap()));
            let d = max_abs_diff(&chip, &want);
            worst = worst.max(d);
            exact += (d == 0) as usize;
            n += 1;
        }
    }
    eprintln!("chips: {n} compared, {exact} bit-exact, max abs diff {worst}");
    assert!(worst <= 1, "max abs pixel diff {worst}");
}

#[test]
fn descriptors_from_images_and_landmarks_match_dlib() {
    let (Some(g), Some((pack, _))) = (golden(), pack_and_runtime()) else {
        return;
    };
    let emb = embedder(&pack);
    let gdir = shared_dir().join("golden");
    let mut worst = 0f64;
    let mut n = 0;
    for img in g["images"].as_array().unwrap() {
        let rgb = load_rgb(&gdir.join(img["file"].as_str().unwrap()));
        let fs = img["faces"].as_array().unwrap();
        let chips: Vec<_> = fs
            .iter()
            .map(|f| face_chip(&rgb, &landmarks(f), 150, 0.25))
            .collect();
        for (f, d) in fs.iter().zip(emb.embed(&chips).unwrap()) {
            worst = worst.max(l2(&d, &f64s(&f["descriptor"])));
            n += 1;
        }
    }
    eprintln!("descriptor end-to-end from landmarks: {n} faces, max L2 error {worst:.2e}");
    assert!(worst < 1e-3, "max L2 error {worst}");
}
