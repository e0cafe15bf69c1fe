//! `facegate bench-passport`: what reading a chip costs at a gate — parsing EF.SOD / DG1 / DG2 and
//! passive authentication (hashes, signed attributes, signature, chain) on one core, and the
//! JPEG 2000 face's decoding side by side with OpenJPEG (`opj_decompress`, its own decode timer)
//! in the same run.

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use std::process::Command;

use crate::cmd_bench::median_ms;
use crate::cmd_passport::{ChipFileArgs, TrustArgs};

#[derive(Args)]
pub struct BenchPassportArgs {
    #[command(flatten)]
    pub files: ChipFileArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: BenchPassportArgs) -> Result<i32> {
    let files = a.files.read()?;
    let (sod_b, dg2_b, dg1_b) = (files.sod, files.dg2, files.dg1);
    let trust = a.trust.load()?;
    let at = a.trust.at()?;
    let runs = a.runs;
    use passport::{dg2, mrz, pa, sod};

    let parse_sod = median_ms(runs, || {
        sod::parse_sod(&sod_b).map(drop).map_err(Into::into)
    })?;
    let parse_dg2 = median_ms(runs, || {
        dg2::parse_dg2(&dg2_b).map(drop).map_err(Into::into)
    })?;
    let parse_dg1 = match &dg1_b {
        Some(b) => Some(median_ms(runs, || {
            mrz::parse_dg1(b).map(drop).map_err(Into::into)
        })?),
        None => None,
    };
    let s = sod::parse_sod(&sod_b)?;
    let mut groups: Vec<(u8, &[u8])> = vec![(2, &dg2_b)];
    if let Some(b) = &dg1_b {
        groups.push((1, b));
    }
    let signer = s
        .cms
        .signer_certificate()
        .context("the SOD carries no signer certificate")?;
    let signature = median_ms(runs, || {
        s.cms
            .verify_signature(signer)
            .map(drop)
            .map_err(anyhow::Error::msg)
    })?;
    let authenticate = median_ms(runs, || {
        pa::authenticate(&s, &groups, trust.store.as_ref(), at);
        Ok(())
    })?;
    // What a gate does per traveller: every parse plus passive authentication.
    let end_to_end = median_ms(runs, || {
        let s = sod::parse_sod(&sod_b)?;
        let _faces = dg2::parse_dg2(&dg2_b)?;
        if let Some(b) = &dg1_b {
            mrz::parse_dg1(b)?;
        }
        pa::authenticate(&s, &groups, trust.store.as_ref(), at);
        Ok(())
    })?;
    let report = pa::authenticate(&s, &groups, trust.store.as_ref(), at);

    // JPEG 2000: ours (hayro-jpeg2000 through vision::decode) and OpenJPEG's, same image.
    let faces = dg2::parse_dg2(&dg2_b)?;
    let face = &faces[0];
    let limits = vision::decode::DecodeLimits::default();
    let decode_runs = (runs / 10).max(5);
    let ours = median_ms(decode_runs, || {
        vision::decode::decode(&face.image, &limits)
            .map(drop)
            .map_err(Into::into)
    })?;
    let openjpeg = openjpeg_decode_ms(&face.image, decode_runs);
    let pillow = pillow_openjpeg_ms(&face.image, decode_runs);

    let machine = json!({
        "cpu": crate::machine::cpu_model(),
        "vector": crate::machine::vector_extensions(),
        "threads": 1,
    });
    let out = json!({
        "machine": machine,
        "method": format!("median of {runs} runs (decoding: {decode_runs}), one thread, files in memory"),
        "signature": report.signature.detail,
        "chain": report.chain.detail,
        "ms": {
            "parse_sod": parse_sod,
            "parse_dg2": parse_dg2,
            "parse_dg1": parse_dg1,
            "signature_verify": signature,
            "passive_authentication": authenticate,
            "parse_and_authenticate": end_to_end,
        },
        "jpeg2000_decode_ms": {
            "facegate": ours,
            "openjpeg_opj_decompress": openjpeg.as_ref().ok(),
            "openjpeg_opj_decompress_note": openjpeg.as_ref().err(),
            "openjpeg_pillow": pillow.as_ref().ok().map(|p| p.0),
            "openjpeg_pillow_version": pillow.as_ref().ok().map(|p| p.1.clone()),
            "openjpeg_pillow_note": pillow.as_ref().err(),
            "image": format!("{:?} {} bytes", face.format, face.image.len()),
        },
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    println!(
        "machine: {} ({}) ; threads: 1 ; method: {}",
        out["machine"]["cpu"].as_str().unwrap_or("?"),
        out["machine"]["vector"].as_str().unwrap_or("?"),
        out["method"].as_str().unwrap_or("")
    );
    println!("signature: {}", report.signature.detail);
    for (k, v) in out["ms"].as_object().into_iter().flatten() {
        if let Some(ms) = v.as_f64() {
            println!("{k:>24}: {ms:9.4} ms");
        }
    }
    println!(
        "JPEG 2000 face ({}): facegate (hayro-jpeg2000) {ours:.2} ms",
        out["jpeg2000_decode_ms"]["image"].as_str().unwrap_or("")
    );
    match &pillow {
        Ok((ms, v)) => {
            println!("JPEG 2000 face: OpenJPEG {v} in Pillow (in-process timer) {ms:.2} ms")
        }
        Err(e) => println!("JPEG 2000 face: OpenJPEG in Pillow not measured: {e}"),
    }
    match openjpeg {
        Ok(ms) => {
            println!("JPEG 2000 face: OpenJPEG opj_decompress (its own timer, whole ms) {ms:.0} ms")
        }
        Err(e) => println!("JPEG 2000 face: opj_decompress not measured: {e}"),
    }
    Ok(0)
}

/// OpenJPEG's decode time for the image: `opj_decompress` prints its own timer around the
/// decode (file reading and process start are outside it). Median of `runs`, one thread.
fn openjpeg_decode_ms(image: &[u8], runs: usize) -> Result<f64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let input = dir.path().join("face.jp2");
    let output = dir.path().join("face.ppm");
    std::fs::write(&input, image).map_err(|e| e.to_string())?;
    let mut t = Vec::new();
    for _ in 0..runs {
        let out = Command::new("opj_decompress")
            .arg("-i")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .env("OPJ_NUM_THREADS", "1")
            .output()
            .map_err(|e| format!("opj_decompress: {e} (apt-get install libopenjp2-tools)"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let ms = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("decode time:"))
            .and_then(|v| v.trim().trim_end_matches("ms").trim().parse::<f64>().ok())
            .ok_or("opj_decompress printed no decode time")?;
        t.push(ms);
    }
    t.sort_by(f64::total_cmp);
    t.get(t.len() / 2).copied().ok_or_else(|| "no run".into())
}

/// OpenJPEG inside Python's Pillow (its wheel bundles OpenJPEG): timed in-process with
/// `perf_counter`, so sub-millisecond differences show. Median of `runs`; returns (ms, version).
fn pillow_openjpeg_ms(image: &[u8], runs: usize) -> Result<(f64, String), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let input = dir.path().join("face.jp2");
    std::fs::write(&input, image).map_err(|e| e.to_string())?;
    const SCRIPT: &str = r#"
import io, sys, time
from PIL import Image, features
b = open(sys.argv[1], 'rb').read()
t = []
for _ in range(int(sys.argv[2])):
    s = time.perf_counter()
    im = Image.open(io.BytesIO(b)); im.load()
    t.append((time.perf_counter() - s) * 1e3)
t.sort()
print(t[len(t) // 2], features.version('jpg_2000'))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&input)
        .arg(runs.to_string())
        .env("OPJ_NUM_THREADS", "1")
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "Pillow: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let ms = it
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or("Pillow printed no time")?;
    Ok((ms, it.next().unwrap_or("?").to_string()))
}
