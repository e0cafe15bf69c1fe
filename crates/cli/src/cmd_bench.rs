//! `facegate bench`: per-stage medians of the 1:1 pipeline on one image, with the machine,
//! thread count and method printed, so numbers can be compared with face_recognition's
//! (scripts/bench_face_recognition.py runs the same stages through dlib).

use crate::engine::{load, EngineArgs};
use crate::machine;
use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vision::decode::{decode, DecodeLimits};
use vision::detect::DetectOptions;

#[derive(Args)]
pub struct BenchArgs {
    /// Image to run on (e.g. ../shared/golden/images/bench_640x480.png).
    pub image: PathBuf,
    /// Repetitions per stage (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Median milliseconds of `iters` calls of `f`, after one warm-up call.
pub(crate) fn median_ms<F: FnMut() -> Result<()>>(iters: usize, mut f: F) -> Result<f64> {
    f()?; // warm-up
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// Peak resident memory of this process (Linux), in MiB.
pub(crate) fn peak_rss_mb() -> Option<f64> {
    status_mib("VmHWM:")
}

/// Anonymous resident memory now (Linux), in MiB: the heap, without pages of memory-mapped
/// files (SQLite maps its database; those pages are page cache the kernel can drop).
pub(crate) fn rss_anon_mb() -> Option<f64> {
    status_mib("RssAnon:")
}

fn status_mib(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(home: &Path, a: BenchArgs) -> Result<i32> {
    let mut p = load(home, &a.engine)?;
    let bytes =
        std::fs::read(&a.image).with_context(|| format!("reading {}", a.image.display()))?;
    let limits = DecodeLimits::default();
    let img = decode(&bytes, &limits)?;
    let n = a.iters;
    let decode_ms = median_ms(n, || Ok(decode(&bytes, &limits).map(|_| ())?))?;

    let ranged = DetectOptions {
        upsample: a.engine.upsample,
        min_face: Some(a.engine.min_face.unwrap_or(100.0)),
        max_face: Some(a.engine.max_face.unwrap_or(400.0)),
        threshold: a.engine.det_threshold,
    };
    let full = DetectOptions {
        min_face: None,
        max_face: None,
        ..ranged
    };
    p.detect = full;
    let detect_full_ms = median_ms(n.min(5), || Ok(p.detect(&img).map(|_| ())?))?;
    p.detect = ranged;
    let detect_range_ms = median_ms(n, || Ok(p.detect(&img).map(|_| ())?))?;
    let dets = p.detect(&img)?;
    let det = *dets
        .first()
        .context("no face found in the benchmark image")?;
    let landmarks_ms = median_ms(n * 10, || Ok(p.landmarks_for(&img, &det).map(|_| ())?))?;
    let lm = p.landmarks_for(&img, &det)?;
    let chip_ms = median_ms(n * 10, || {
        p.chip(&img, &lm);
        Ok(())
    })?;
    let chip = p.chip(&img, &lm);
    let embed1_ms = median_ms(n, || {
        Ok(p.embed_aligned(std::slice::from_ref(&chip)).map(|_| ())?)
    })?;
    let batch: Vec<_> = (0..16).map(|_| chip.clone()).collect();
    let embed16_ms = median_ms(n.div_ceil(4), || Ok(p.embed_aligned(&batch).map(|_| ())?))? / 16.0;
    let e2e_ms = median_ms(n, || Ok(p.faces(&img).map(|_| ())?))?;
    // The liveness stage (with --liveness): the passive PAD networks on one face, and the
    // planar-motion cue's per-frame patch and per-pair measurement (a pair of the same frame
    // with the box moved by two pixels: the same work as a real pair).
    let liveness = match &p.liveness {
        Some(pad) => {
            let crops_ms = median_ms(n * 10, || Ok(pad.crops(&img, &det.rect).map(|_| ())?))?;
            let crops = [pad.crops(&img, &det.rect)?];
            let nets_ms = median_ms(n, || Ok(pad.assess_crops(&crops).map(|_| ())?))?;
            let cfg = video::motion::MotionConfig::default();
            let patch = || {
                video::motion::FacePatch::new(&img, &det.rect, 0, &cfg)
                    .context("the face is too small for the motion cue")
            };
            let patch_ms = median_ms(n, || patch().map(|_| ()))?;
            let a = patch()?;
            let moved = vision::geometry::Rect {
                left: det.rect.left + 2.0,
                right: det.rect.right + 2.0,
                ..det.rect
            };
            let b = video::motion::FacePatch::new(&img, &moved, 8, &cfg)
                .context("the face is too small for the motion cue")?;
            let pair_ms = median_ms(n, || {
                video::motion::measure_pair(&a, &b, &cfg);
                Ok(())
            })?;
            let e2e_pad_ms = median_ms(n, || {
                let mut faces = p.faces(&img)?;
                Ok(p.assess_liveness(&img, &mut faces)?)
            })?;
            Some(json!({
                "pad_pack": pad.name(),
                "pad_crops_per_face": crops_ms,
                "pad_networks_per_face": nets_ms,
                "motion_patch_per_frame": patch_ms,
                "motion_pair": pair_ms,
                "end_to_end_face_range_with_pad_excl_decode": e2e_pad_ms,
            }))
        }
        None => None,
    };
    let threads = if a.engine.threads == 0 {
        "all cores (ORT default)".to_string()
    } else {
        a.engine.threads.to_string()
    };
    let out = json!({
        "machine": {"cpu": machine::cpu_model(), "vector": machine::vector_extensions(), "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)},
        "threads": threads,
        "pack": p.models.manifest.name,
        "detector": p.detector_name(),
        "method": format!("median of {n} runs after one warm-up (full-pyramid detection: {} runs; landmarks/chip: {} runs)", n.min(5), n * 10),
        "image": {"path": a.image, "width": img.width(), "height": img.height(), "faces": dets.len()},
        "face_range_px": [ranged.min_face, ranged.max_face],
        "ms": {
            "decode": decode_ms,
            "detect_full_pyramid": detect_full_ms,
            "detect_face_range": detect_range_ms,
            "landmarks_5": landmarks_ms,
            "chip": chip_ms,
            "descriptor_single": embed1_ms,
            "descriptor_per_face_batch16": embed16_ms,
            "end_to_end_face_range_excl_decode": e2e_ms,
        },
        "liveness_ms": liveness,
        "peak_rss_mb": peak_rss_mb(),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "facegate bench: {} ({}x{}, {} face(s))",
            a.image.display(),
            img.width(),
            img.height(),
            dets.len()
        );
        println!(
            "machine: {} ({}) ; threads: {threads} ; pack: {} ; detector: {}",
            out["machine"]["cpu"].as_str().unwrap_or("?"),
            out["machine"]["vector"].as_str().unwrap_or("?"),
            p.models.manifest.name,
            p.detector_name()
        );
        println!("method: {}", out["method"].as_str().unwrap_or(""));
        if let Some(ms) = out["ms"].as_object() {
            for (k, v) in ms {
                println!("  {k:<36} {:>9.2} ms", v.as_f64().unwrap_or(f64::NAN));
            }
        }
        if let Some(ms) = out["liveness_ms"].as_object() {
            for (k, v) in ms {
                if let Some(v) = v.as_f64() {
                    println!("  {k:<36} {v:>9.2} ms");
                }
            }
        }
        println!(
            "  throughput (end to end)              {:>9.1} frames/s",
            1e3 / e2e_ms
        );
        if let Some(m) = peak_rss_mb() {
            println!("  peak RSS                             {m:>9.0} MB");
        }
    }
    Ok(0)
}
