//! `cargo bench -p facegate-video`: live capture's stages per frame, at the two sizes the
//! real-time targets name — a 640x480 e-gate stream on one thread and a 1280x720 CCTV stream on
//! two — on generated scenes (the people of ../shared/data/people walking, as `eval video` makes
//! them) encoded to H.264 by openh264: decode, detection, the tracker alone, and the whole
//! watcher (detect + track + quality + embedding the kept frames), each per frame. Real time at
//! 30 fps is 33.3 ms a frame. Needs `facegate models fetch` and ../shared (prints why and
//! measures nothing otherwise). `scripts/bench_live.py` runs `facegate watch` end to end on the
//! same kind of streams.
#![allow(clippy::unwrap_used)] // benchmarks stop at the first surprise

use criterion::{criterion_group, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use video::source::{Frame, FrameSource, Mp4Source};
use video::synth::{Actor, Scene, SceneConfig};
use video::track::{Observation, Tracker};
use video::watch::{WatchConfig, Watcher};
use vision::models::Models;
use vision::pipeline::Pipeline;

#[path = "../../cli/src/machine.rs"]
mod machine;

const FRAMES: u64 = 60;

fn pipeline(home: &Path, threads: usize) -> Pipeline {
    let mut p = Pipeline::new(Models::load(&home.join("packs/dlib"), threads).expect("dlib pack"));
    // As `facegate watch` runs it: weak detections reach the tracker's second pass.
    p.detect.threshold = p
        .detect
        .threshold
        .min(WatchConfig::default().tracker.low_score);
    p
}

/// A generated scene of `size` with the people photos, its frames through an H.264 MP4.
fn scene_mp4(p: &Pipeline, people: &Path, size: (u32, u32), dir: &Path) -> std::path::PathBuf {
    let limits = vision::decode::DecodeLimits::default();
    let mut actors = Vec::new();
    let mut photos: Vec<_> = std::fs::read_dir(people)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
        .collect();
    photos.sort();
    for (i, photo) in photos.iter().enumerate() {
        let img = vision::decode::decode_file(photo, &limits).unwrap();
        if let Some(face) = p.faces(&img).unwrap().first() {
            actors.push(Actor::from_photo(i, &img, face.rect));
        }
    }
    let scene = Scene::new(
        SceneConfig {
            width: size.0,
            height: size.1,
            frames: 200,
            spacing: 20,
            seed: 3,
        },
        actors,
    );
    let path = dir.join(format!("scene_{}x{}.mp4", size.0, size.1));
    let mut out = video::annotate::Mp4Out::create(&path).unwrap();
    // The busiest stretch: several people in view at once.
    for f in 100..100 + FRAMES {
        out.push(&scene.frame(f).0, f * 1000 / 30).unwrap();
    }
    out.finish().unwrap();
    path
}

fn frames(path: &Path) -> Vec<Frame> {
    let mut source = Mp4Source::open(path, &Default::default()).unwrap();
    std::iter::from_fn(|| source.next_frame().map(|f| f.unwrap())).collect()
}

fn stages(c: &mut Criterion) {
    let home = vision::pack::default_home();
    let people = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/people");
    let Some(rt) = vision::pack::installed_runtime(&home) else {
        eprintln!(
            "no ONNX Runtime under {}: run `facegate models fetch`",
            home.display()
        );
        return;
    };
    if !people.is_dir() || !home.join("packs/dlib/manifest.json").exists() {
        eprintln!("needs {} and the dlib pack", people.display());
        return;
    }
    vision::runtime::ensure_runtime(Some(&rt)).expect("ONNX Runtime");
    let dir = tempfile::tempdir().unwrap();
    for (size, threads, name) in [
        ((640, 480), 1, "egate_640x480_1thread"),
        ((1280, 720), 2, "cctv_1280x720_2threads"),
    ] {
        let p = pipeline(&home, threads);
        let path = scene_mp4(&p, &people, size, dir.path());
        let decoded = frames(&path);
        let detections: Vec<Vec<Observation>> = decoded
            .iter()
            .map(|f| {
                p.detect(&f.image)
                    .unwrap()
                    .iter()
                    .map(|d| Observation {
                        rect: d.rect,
                        score: d.score,
                    })
                    .collect()
            })
            .collect();
        let faces: usize = detections.iter().map(Vec::len).sum();
        eprintln!(
            "{name}: {} frames, {:.1} faces a frame",
            decoded.len(),
            faces as f64 / decoded.len() as f64
        );
        let mut g = c.benchmark_group(name);
        g.sample_size(10);
        g.throughput(Throughput::Elements(decoded.len() as u64));
        g.bench_function("decode_h264", |b| b.iter(|| black_box(frames(&path))));
        g.bench_function("detect", |b| {
            b.iter(|| {
                for f in &decoded {
                    black_box(p.detect(&f.image).unwrap());
                }
            })
        });
        g.bench_function("track_only", |b| {
            b.iter(|| {
                let mut t = Tracker::new(WatchConfig::default().tracker);
                t.set_frame_size(size.0, size.1);
                for obs in &detections {
                    black_box(t.update(obs, &mut |_| None));
                }
            })
        });
        g.bench_function("watch_all_stages_excl_decode", |b| {
            b.iter(|| {
                let mut w = Watcher::new(WatchConfig::default());
                for f in &decoded {
                    black_box(w.process(f, &p).unwrap());
                }
                black_box(w.finish(&p).unwrap())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, stages);

fn main() {
    // criterion_main!, with the machine line every facegate benchmark prints first.
    println!(
        "machine: {}; threads: 1 (640x480 e-gate), 2 (1280x720 CCTV); method: Criterion, time per iteration",
        machine::describe()
    );
    benches();
    Criterion::default().configure_from_args().final_summary();
}
