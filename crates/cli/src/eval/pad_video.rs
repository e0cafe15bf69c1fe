//! `facegate eval pad-video`: liveness on video, per passer-by, the way `watch --liveness`
//! decides it: the passive score averaged over each track's best frames, the planar-motion cue,
//! and their fusion, each measured as APCER per attack type and BPCER (ISO/IEC 30107-3's terms,
//! counted per track). Bona fide: the user's real videos. Attacks: the user's recorded attacks
//! (one folder per attack type) and/or a labelled synthetic set — photos rendered as a print or
//! a screen held up and waved in front of the camera (`video::attack::render_motion`).

use super::dataset::sorted_entries;
use crate::cmd_watch::VideoPipeline;
use crate::engine::EngineArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use video::attack::{render_motion, AttackKind};
use video::motion::MotionVerdict;
use video::watch::{Event, WatchConfig, Watcher};
use video::{Frame, VideoLimits};
use vision::decode::{decode_file, DecodeLimits};

#[derive(Args)]
pub struct PadVideoArgs {
    /// Bona fide videos: MP4 files or folders of frames (real people in front of a camera).
    #[arg(long, num_args = 1..)]
    pub bona_fide: Vec<PathBuf>,
    /// Recorded attacks: one folder per attack type (print, replay, ...), each holding MP4 files
    /// or folders of frames.
    #[arg(long)]
    pub attacks: Option<PathBuf>,
    /// Render synthetic video attacks (print and replay, waved in front of the camera) from the
    /// photos in this folder (images, or one folder per person: its first image).
    #[arg(long)]
    pub synthetic: Option<PathBuf>,
    /// Photos taken from --synthetic, in name order.
    #[arg(long, default_value_t = 20)]
    pub people: usize,
    /// Frames per synthetic attack (30 fps).
    #[arg(long, default_value_t = 60)]
    pub frames: usize,
    /// Synthetic frame size as a multiple of the photo's.
    #[arg(long, default_value_t = 2.0)]
    pub scale: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print every track's evidence and the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// One decided track's liveness evidence.
#[derive(serde::Serialize)]
struct TrackResult {
    source: String,
    /// "bona-fide" or the attack type.
    label: String,
    track: u64,
    frames_seen: u32,
    passive_score: f32,
    passive_live: bool,
    motion: video::motion::MotionCue,
    fused_live: bool,
}

fn video_sources(dir: &Path) -> Result<Vec<PathBuf>> {
    sorted_entries(dir, |p| {
        p.is_dir() || p.extension().is_some_and(|x| x.eq_ignore_ascii_case("mp4"))
    })
}

fn photos(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let is_image = |p: &Path| {
        p.is_file()
            && p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| ["jpg", "jpeg", "png"].contains(&x.to_ascii_lowercase().as_str()))
    };
    let mut out = Vec::new();
    for entry in sorted_entries(dir, |p| p.is_dir() || is_image(p))? {
        if out.len() >= n {
            break;
        }
        if entry.is_dir() {
            if let Some(first) = sorted_entries(&entry, is_image)?.into_iter().next() {
                out.push(first);
            }
        } else {
            out.push(entry);
        }
    }
    Ok(out)
}

fn bounded(img: image::RgbImage, side: u32) -> image::RgbImage {
    let (w, h) = img.dimensions();
    if w.max(h) <= side {
        return img;
    }
    let s = side as f64 / w.max(h) as f64;
    image::imageops::resize(
        &img,
        ((w as f64 * s).round() as u32).max(1),
        ((h as f64 * s).round() as u32).max(1),
        image::imageops::FilterType::Triangle,
    )
}

/// Runs the watcher over `frames` and returns each decided track's evidence.
fn tracks(
    vp: &VideoPipeline,
    cfg: WatchConfig,
    frames: &mut dyn Iterator<Item = Result<Frame>>,
    source: &str,
    label: &str,
    engine: &EngineArgs,
) -> Result<Vec<TrackResult>> {
    let mut w = Watcher::new(cfg);
    let mut events = Vec::new();
    for frame in frames {
        events.extend(w.process(&frame?, &vp.p)?);
    }
    events.extend(w.finish(&vp.p)?);
    let mut out = Vec::new();
    for ev in events {
        let Event::Decide(ev) = ev else { continue };
        let Some(l) = &ev.liveness else {
            bail!("a track was decided without liveness evidence");
        };
        let verdict = app::liveness::PadVerdict::of_track(
            &l.passive,
            l.motion.clone(),
            engine.pad_policy,
            engine.pad_threshold,
        )
        .context("no PAD outcome for a decided track")?;
        out.push(TrackResult {
            source: source.to_string(),
            label: label.to_string(),
            track: ev.track,
            frames_seen: ev.frames_seen,
            passive_score: verdict.outcome.score,
            passive_live: verdict.outcome.live,
            motion: l.motion.clone(),
            fused_live: verdict.live,
        });
    }
    Ok(out)
}

pub fn run(home: &Path, a: PadVideoArgs) -> Result<i32> {
    if !a.engine.liveness {
        bail!("eval pad-video measures the liveness stage: pass --liveness (and --pad-pack if not the default)");
    }
    if a.bona_fide.is_empty() && a.attacks.is_none() && a.synthetic.is_none() {
        bail!("nothing to measure: give --bona-fide VIDEO..., --attacks DIR and/or --synthetic PHOTOS");
    }
    let cfg = WatchConfig::default();
    let vp = VideoPipeline::load(home, &a.engine, &cfg)?;
    let mut results: Vec<TrackResult> = Vec::new();
    let limits = VideoLimits::default();
    let mut from_source = |path: &Path, label: &str| -> Result<()> {
        let mut src = video::source::open(path, &limits)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut frames = std::iter::from_fn(|| src.next_frame().map(|f| f.map_err(Into::into)));
        let name = path.display().to_string();
        let found = tracks(&vp, cfg, &mut frames, &name, label, &a.engine)?;
        eprintln!("{label:>10}  {name}: {} decided tracks", found.len());
        results.extend(found);
        Ok(())
    };
    for path in &a.bona_fide {
        from_source(path, "bona-fide")?;
    }
    if let Some(dir) = &a.attacks {
        for kind_dir in sorted_entries(dir, |p| p.is_dir())? {
            let kind = kind_dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            for path in video_sources(&kind_dir)? {
                from_source(&path, &kind)?;
            }
        }
    }
    if let Some(dir) = &a.synthetic {
        for (i, photo) in photos(dir, a.people)?.iter().enumerate() {
            let img = decode_file(photo, &DecodeLimits::default().strict())
                .with_context(|| format!("photo {}", photo.display()))?;
            // A photo is printed or shown at a size a camera sees it at a gate, not at its file's
            // resolution: at most 320 px on its longer side before the frame is scaled.
            let img = bounded(img, 320);
            for (k, kind) in [AttackKind::Print, AttackKind::Replay]
                .into_iter()
                .enumerate()
            {
                let seed = a.seed.wrapping_mul(1_000_003) ^ ((i as u64) << 8 | k as u64);
                let rendered = render_motion(&img, kind, seed, a.scale, a.frames)?;
                let mut frames = rendered.into_iter().enumerate().map(|(n, image)| {
                    Ok(Frame {
                        index: n as u64,
                        time_ms: n as u64 * 1000 / 30,
                        image,
                    })
                });
                let name = format!("synthetic {} of {}", kind.name(), photo.display());
                let found = tracks(&vp, cfg, &mut frames, &name, kind.name(), &a.engine)?;
                eprintln!(
                    "{:>10}  {name}: {} decided tracks",
                    kind.name(),
                    found.len()
                );
                results.extend(found);
            }
        }
    }
    let summary = summarise(&results);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"tracks": results, "summary": summary, "synthetic_attacks": a.synthetic.is_some()})
            )?
        );
    } else {
        print_summary(&summary, a.synthetic.is_some());
    }
    Ok(0)
}

/// Per label, per cue: tracks, and how many each cue judged an attack (motion: also how many it
/// abstained on).
fn summarise(results: &[TrackResult]) -> serde_json::Value {
    let mut by_label: BTreeMap<&str, Vec<&TrackResult>> = BTreeMap::new();
    for r in results {
        by_label.entry(r.label.as_str()).or_default().push(r);
    }
    let rate = |k: usize, n: usize| {
        if n == 0 {
            None
        } else {
            Some(k as f64 / n as f64)
        }
    };
    let mut rows = serde_json::Map::new();
    for (label, rs) in by_label {
        let n = rs.len();
        let passive_attack = rs.iter().filter(|r| !r.passive_live).count();
        let planar = rs
            .iter()
            .filter(|r| r.motion.verdict == MotionVerdict::Planar)
            .count();
        let relief = rs
            .iter()
            .filter(|r| r.motion.verdict == MotionVerdict::Relief)
            .count();
        let fused_attack = rs.iter().filter(|r| !r.fused_live).count();
        let bona = label == "bona-fide";
        // APCER: attacks judged live; BPCER: bona fide judged attacks.
        let error = |attack: usize| {
            if bona {
                rate(attack, n)
            } else {
                rate(n - attack, n)
            }
        };
        rows.insert(
            label.to_string(),
            json!({
                "tracks": n,
                "measure": if bona { "BPCER" } else { "APCER" },
                "passive": {"judged_attack": passive_attack, "error_rate": error(passive_attack)},
                "motion": {"planar": planar, "relief": relief, "inconclusive": n - planar - relief,
                           "error_rate_when_decided": if bona { rate(planar, planar + relief) } else { rate(relief, planar + relief) }},
                "fused": {"judged_attack": fused_attack, "error_rate": error(fused_attack)},
            }),
        );
    }
    serde_json::Value::Object(rows)
}

fn print_summary(summary: &serde_json::Value, synthetic: bool) {
    let pct = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("  n/a".to_string(), |x| format!("{:5.1}%", 100.0 * x))
    };
    println!("liveness per passer-by (track); APCER for attacks, BPCER for bona fide");
    println!(
        "{:<10} {:>6} {:>6}  {:>8} {:>8}  {:>6} {:>6} {:>6} {:>8}",
        "label", "tracks", "rate", "passive", "fused", "planar", "relief", "abst.", "motion"
    );
    if let Some(rows) = summary.as_object() {
        for (label, r) in rows {
            println!(
                "{:<10} {:>6} {:>6}  {:>8} {:>8}  {:>6} {:>6} {:>6} {:>8}",
                label,
                r["tracks"],
                r["measure"].as_str().unwrap_or(""),
                pct(&r["passive"]["error_rate"]),
                pct(&r["fused"]["error_rate"]),
                r["motion"]["planar"],
                r["motion"]["relief"],
                r["motion"]["inconclusive"],
                pct(&r["motion"]["error_rate_when_decided"]),
            );
        }
    }
    println!("motion: error rate over the tracks where the cue did not abstain");
    if synthetic {
        println!("attacks are SYNTHETIC renderings (exactly planar, rendered surface cues): not evidence against real attacks");
    }
}
