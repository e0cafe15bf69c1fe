//! `cargo bench -p facegate-vision`: the pipeline's stages on the 640×480 e-gate frame with the
//! installed default pack, one inference thread: decode, detection with the 100–400 px face range,
//! landmarks, chip, descriptor, end to end; then detection and end to end with the pack's HOG
//! detector (`--detector hog`) and the 120–400 px range. Needs `facegate models fetch` and ../shared (prints
//! why and measures nothing otherwise). The side-by-side ratio against dlib/face_recognition
//! comes from `facegate bench` and scripts/bench_face_recognition.py on the same image.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

use criterion::{criterion_group, Criterion};
use std::hint::black_box;
use std::path::Path;
use vision::decode::{decode_file, DecodeLimits};
use vision::detect::DetectOptions;
use vision::models::{DetectorChoice, Models};
use vision::pipeline::Pipeline;

#[path = "../../cli/src/machine.rs"]
mod machine;

fn stages(c: &mut Criterion) {
    let home = vision::pack::default_home();
    let image = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/golden/images/bench_640x480.png");
    let Some(rt) = vision::pack::installed_runtime(&home) else {
        eprintln!(
            "no ONNX Runtime under {}: run `facegate models fetch`",
            home.display()
        );
        return;
    };
    if !image.exists() || !home.join("packs/dlib/manifest.json").exists() {
        eprintln!("needs {} and the dlib pack", image.display());
        return;
    }
    vision::runtime::ensure_runtime(Some(&rt)).expect("ONNX Runtime");
    let models = Models::load(&home.join("packs/dlib"), 1).expect("dlib pack");
    let mut p = Pipeline::new(models);
    p.detect = DetectOptions {
        upsample: 0,
        min_face: Some(100.0),
        max_face: Some(400.0),
        threshold: 0.0,
    };
    let limits = DecodeLimits::default();
    let img = decode_file(&image, &limits).expect("decode");
    let det = p.detect(&img).expect("detect")[0];
    let lm = p.landmarks_for(&img, &det).expect("landmarks");
    let chip = p.chip(&img, &lm);
    let mut g = c.benchmark_group("dlib_pack_640x480_1thread");
    g.sample_size(20);
    g.bench_function("decode", |b| {
        b.iter(|| black_box(decode_file(&image, &limits)))
    });
    g.bench_function("detect_100_400px", |b| b.iter(|| black_box(p.detect(&img))));
    g.bench_function("landmarks_5", |b| {
        b.iter(|| black_box(p.landmarks_for(&img, &det)))
    });
    g.bench_function("chip", |b| b.iter(|| black_box(p.chip(&img, &lm))));
    g.bench_function("descriptor", |b| {
        b.iter(|| black_box(p.embed_aligned(std::slice::from_ref(&chip))))
    });
    g.bench_function("end_to_end_excl_decode", |b| {
        b.iter(|| black_box(p.faces(&img)))
    });
    g.finish();
    let hog = match Models::load_with(&home.join("packs/dlib"), 1, DetectorChoice::Hog) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("HOG detector: {e}");
            return;
        }
    };
    let mut p = Pipeline::new(hog);
    p.detect = DetectOptions {
        upsample: 0,
        min_face: Some(120.0),
        max_face: Some(400.0),
        threshold: 0.0,
    };
    let mut g = c.benchmark_group("dlib_pack_hog_640x480_1thread");
    g.sample_size(30);
    g.bench_function("detect_120_400px", |b| b.iter(|| black_box(p.detect(&img))));
    g.bench_function("end_to_end_excl_decode", |b| {
        b.iter(|| black_box(p.faces(&img)))
    });
    g.finish();
}

criterion_group!(benches, stages);

fn main() {
    // criterion_main!, with the machine line every facegate benchmark prints first.
    println!(
        "machine: {}; threads: 1 inference thread; method: Criterion, time per iteration",
        machine::describe()
    );
    benches();
    Criterion::default().configure_from_args().final_summary();
}
