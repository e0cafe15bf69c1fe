//! `facegate eval video`: tracking and once-per-passer-by decisions measured on generated scenes
//! with exact ground truth (people from an identity/image directory such as LFW walking,
//! approaching, crossing, occluding, leaving and coming back).

use crate::cmd_watch::VideoPipeline;
use crate::engine::EngineArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use video::evaluate::{run_scene, Judge};
use video::synth::{Actor, Scene, SceneConfig};
use video::watch::WatchConfig;
use vision::decode::{decode_file, DecodeLimits};

#[derive(Args)]
pub struct VideoEvalArgs {
    /// Directory of identity folders (people with 2+ images are used: one walks, one is the
    /// reference).
    #[arg(long)]
    pub images: PathBuf,
    /// Passers-by per scene.
    #[arg(long, default_value_t = 30)]
    pub people: usize,
    /// Frames per scene (640x480, 30 fps).
    #[arg(long, default_value_t = 1200)]
    pub frames: u64,
    /// Scenes (each with other people and paths).
    #[arg(long, default_value_t = 1)]
    pub scenes: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Detect on every n-th frame only.
    #[arg(long, default_value_t = 1)]
    pub every: u32,
    /// Decision threshold (default: the pack's calibrated one).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Print the full result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write each scene's ground truth and tracks in MOTChallenge format into this directory
    /// (sceneN_gt.txt, sceneN_hyp.txt), e.g. for `scripts/mot_crosscheck.py`.
    #[arg(long)]
    pub mot_dir: Option<PathBuf>,
    /// Send every generated frame through an H.264 encoder at this many bits per second and
    /// back before the pipeline sees it (openh264, frames skipped when the budget runs out, as
    /// a camera's encoder does): tracking and decisions on a compressed stream.
    #[arg(long)]
    pub h264_bitrate: Option<u32>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// People with at least two JPEG or PNG images, in name order: (first image, second image).
fn people(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let jpg_or_png = |p: &Path| p.extension().is_some_and(|x| x == "jpg" || x == "png");
    Ok(super::dataset::people_with_two_images(dir, jpg_or_png)?
        .into_iter()
        .map(|(_, a, b)| (a, b))
        .collect())
}

pub fn run(home: &Path, a: VideoEvalArgs) -> Result<i32> {
    let cfg = WatchConfig {
        detect_every: a.every.max(1),
        ..Default::default()
    };
    let mut vp = VideoPipeline::load(home, &a.engine, &cfg)?;
    let threshold = a
        .threshold
        .or(vp
            .p
            .models
            .manifest
            .calibration
            .as_ref()
            .map(|c| c.threshold))
        .context("no threshold: pass --threshold")?;
    let cfg = cfg.for_pack(vp.p.metric(), threshold);
    let all = people(&a.images)?;
    if all.len() < 2 {
        bail!(
            "{} holds fewer than two people with two images",
            a.images.display()
        );
    }
    let limits = DecodeLimits::default();
    let mut reports = Vec::new();
    for scene_no in 0..a.scenes {
        // Each scene draws its people from a different stretch of the list.
        let mut actors = Vec::new();
        let mut references = HashMap::new();
        let offset = (scene_no as usize * a.people * 7 + a.seed as usize * 13) % all.len();
        for k in 0..all.len() {
            if actors.len() == a.people {
                break;
            }
            let identity = (offset + k) % all.len();
            let (walk, reference) = &all[identity];
            let (Ok(img), Ok(ref_img)) =
                (decode_file(walk, &limits), decode_file(reference, &limits))
            else {
                continue;
            };
            // The face box on the photo alone (ground truth convention), and the reference template.
            let Some(face) = vp.still_faces(&img)?.into_iter().next() else {
                continue;
            };
            let Some(r) = vp.still_faces(&ref_img)?.into_iter().next() else {
                continue;
            };
            references.insert(identity, r.embedding);
            actors.push(Actor::from_photo(identity, &img, face.rect));
        }
        let scene = Scene::new(
            SceneConfig {
                frames: a.frames,
                seed: a.seed.wrapping_add(scene_no),
                ..Default::default()
            },
            actors,
        );
        let judge = Judge {
            references: &references,
            metric: vp.p.metric(),
            threshold,
        };
        let r = run_scene(&scene, &vp.p, cfg, &judge, a.h264_bitrate)?;
        if let Some(dir) = &a.mot_dir {
            std::fs::create_dir_all(dir)?;
            let (gt, hyp) = video::metrics::mot_text(&r.boxes);
            std::fs::write(dir.join(format!("scene{scene_no}_gt.txt")), gt)?;
            std::fs::write(dir.join(format!("scene{scene_no}_hyp.txt")), hyp)?;
            std::fs::write(
                dir.join(format!("scene{scene_no}_facegate.json")),
                serde_json::to_string(&r.tracking)?,
            )?;
        }
        let (none, many, wrong) = r.per_thousand();
        if !a.json {
            println!(
                "scene {scene_no}: {} frames, {} passers-by: MOTA {:.3}, IDF1 {:.3}, HOTA {:.3} ({} id switches); per 1,000 passers-by: {:.0} without a decision, {:.0} with 2+, {:.0} with a wrong one; fused FNMR {:.2}% FMR {:.2}%, best single frame FNMR {:.2}% FMR {:.2}%; {:.1} fps",
                r.frames,
                r.passages,
                r.tracking.mota,
                r.tracking.idf1,
                r.tracking.hota.hota,
                r.tracking.id_switches,
                none,
                many,
                wrong,
                100.0 * r.fused.fnmr(),
                100.0 * r.fused.fmr(),
                100.0 * r.single_frame.fnmr(),
                100.0 * r.single_frame.fmr(),
                r.frames as f64 / r.seconds.max(1e-9)
            );
            if let Some(h) = &r.h264 {
                println!(
                    "scene {scene_no}: through H.264 at {} kbit/s: {:.0} kbit/s delivered, {} frames skipped by the encoder",
                    h.target_bits_per_second / 1000,
                    h.delivered_bits_per_second / 1000.0,
                    h.skipped_frames
                );
            }
        }
        reports.push(json!({"scene": scene_no, "report": r,
            "per_1000": {"without_decision": none, "two_or_more": many, "wrong": wrong}}));
    }
    if a.json {
        println!(
            "{}",
            json!({"detector": vp.p.detector_name(), "detect_every": cfg.detect_every,
                "threshold": threshold, "scenes": reports,
                "method": "generated 640x480 scenes, ground truth: face boxes at least half visible; MOTA/IDF1 at IoU 0.5 and HOTA over IoU 0.05-0.95 (TrackEval's definition) on detection frames; a decided track belongs to the passer-by it overlapped most; a decision is wrong if the fused template rejects the passer-by's own reference photo or accepts the next identity's"})
        );
    }
    Ok(0)
}
