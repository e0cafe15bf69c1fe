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
use video::cadence::Every;
use video::evaluate::{run_scene, Judge, SceneRun};
use video::replay::LiveOptions;
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
    /// Frames per scene (30 fps).
    #[arg(long, default_value_t = 1200)]
    pub frames: u64,
    /// Scenes (each with other people and paths).
    #[arg(long, default_value_t = 1)]
    pub scenes: u64,
    /// Number of the first scene run (scenes are numbered from 0; scene n is the same whatever
    /// else runs, so `--first-scene 7 --scenes 3` looks again at scenes 7-9 alone).
    #[arg(long, default_value_t = 0)]
    pub first_scene: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Detect on every n-th frame only; `auto`: as often as this machine keeps up (as `watch
    /// --every auto`; with --live, on the replayed camera's clock).
    #[arg(long, default_value = "1")]
    pub every: Every,
    /// With --every auto: the largest interval it may go to.
    #[arg(long, default_value_t = video::cadence::Cadence::DEFAULT_MAX)]
    pub max_every: u32,
    /// Replay each scene as a live camera: frames released at their times (--live-fps), read
    /// through a queue of --live-queue frames, and lost up to the next key frame (every
    /// --live-key-every frames) when the queue is full, as an RTSP camera's are. The reader's
    /// costs are measured here as it runs: what a live pipeline on this machine delivers.
    #[arg(long)]
    pub live: bool,
    #[arg(long, default_value_t = LiveOptions::default().frames_per_second, requires = "live")]
    pub live_fps: f64,
    #[arg(long, default_value_t = LiveOptions::default().queue, requires = "live")]
    pub live_queue: usize,
    #[arg(long, default_value_t = LiveOptions::default().key_every, requires = "live")]
    pub live_key_every: u64,
    /// Decision threshold (default: the pack's calibrated one).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Decide a passer-by early, once their best frames match a reference within this fraction
    /// of the decision distance (0-1; the scene's references stand for the faces a gate or a
    /// watchlist knows). Off by default.
    #[arg(long, value_parser = parse_fraction)]
    pub decide_early: Option<f32>,
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
    /// Frame size of the generated scenes, WIDTHxHEIGHT (faces keep their sizes: a wider
    /// frame is a wider view, as a CCTV camera's).
    #[arg(long, default_value = "640x480", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Instead of evaluating, write each scene into this directory as an H.264 MP4
    /// (sceneN.mp4, openh264) with its ground truth (sceneN_gt.txt, MOTChallenge format), e.g.
    /// for `facegate watch` or `scripts/bench_live.py`.
    #[arg(long)]
    pub export_mp4: Option<PathBuf>,
    /// A track about to be decided is taken for another passer-by (and not decided again) when
    /// their fused templates are within this multiple of the decision distance.
    #[arg(long, default_value_t = WatchConfig::default().duplicate_factor)]
    pub duplicate_factor: f32,
    #[command(flatten)]
    pub engine: EngineArgs,
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once('x')
        .ok_or_else(|| format!("{text}: expected WIDTHxHEIGHT"))?;
    let side = |v: &str| {
        v.parse::<u32>()
            .ok()
            .filter(|n| (64..=4096).contains(n) && n % 2 == 0)
            .ok_or_else(|| format!("{text}: sides must be even numbers of 64-4096 pixels"))
    };
    Ok((side(w)?, side(h)?))
}

/// Write `scene` as `dir/sceneN.mp4` and its ground truth as `dir/sceneN_gt.txt`.
fn export(scene: &Scene, dir: &Path, scene_no: u64) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let video_path = dir.join(format!("scene{scene_no}.mp4"));
    let mut mp4 = video::annotate::Mp4Out::create(&video_path)?;
    let mut boxes = Vec::with_capacity(scene.frames() as usize);
    for f in 0..scene.frames() {
        let (image, truth) = scene.frame(f);
        mp4.push(&image, f * 1000 / 30)?;
        boxes.push(video::metrics::FrameBoxes {
            frame: f,
            truth: truth.iter().map(|t| (t.passage, t.rect)).collect(),
            tracks: Vec::new(),
        });
    }
    mp4.finish()?;
    let (gt, _) = video::metrics::mot_text(&boxes);
    std::fs::write(dir.join(format!("scene{scene_no}_gt.txt")), gt)?;
    eprintln!("wrote {}", video_path.display());
    Ok(())
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
        detect_every: a.every.first(),
        duplicate_factor: a.duplicate_factor,
        // Not live: one more embedding a passer-by would be charged to the camera's clock.
        first_frame_template: !a.live,
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
    if a.live && !a.json {
        // The replay's costs are this machine's.
        println!("{}", crate::machine::describe());
    }
    let mut reports = Vec::new();
    for scene_no in a.first_scene..a.first_scene.saturating_add(a.scenes) {
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
                width: a.size.0,
                height: a.size.1,
                seed: a.seed.wrapping_add(scene_no),
                ..Default::default()
            },
            actors,
        );
        if let Some(dir) = &a.export_mp4 {
            export(&scene, dir, scene_no)?;
            continue;
        }
        let judge = Judge {
            references: &references,
            metric: vp.p.metric(),
            threshold,
        };
        let live = a.live.then_some(LiveOptions {
            frames_per_second: a.live_fps,
            queue: a.live_queue,
            key_every: a.live_key_every,
        });
        let run = SceneRun {
            h264_bits_per_second: a.h264_bitrate,
            early: a.decide_early,
            cadence: a
                .every
                .cadence(a.max_every, live.map_or(30.0, |l| l.frames_per_second)),
            live,
        };
        let r = run_scene(&scene, &vp.p, cfg, &judge, run)?;
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
                "scene {scene_no}: {} frames, {} passers-by: MOTA {:.3}, IDF1 {:.3}, HOTA {:.3} ({} id switches); per 1,000 passers-by: {:.0} without a decision, {:.0} with 2+, {:.0} with a wrong one (passers-by without / with 2+ when a decision counts for the one its track overlapped most: {} / {}); fused FNMR {:.2}% FMR {:.2}%, best single frame FNMR {:.2}% FMR {:.2}%{}; {:.1} fps",
                r.frames,
                r.passages,
                r.tracking.mota,
                r.tracking.idf1,
                r.tracking.hota.hota,
                r.tracking.id_switches,
                none,
                many,
                wrong,
                r.by_overlap.without_decision,
                r.by_overlap.two_or_more,
                100.0 * r.fused.fnmr(),
                100.0 * r.fused.fmr(),
                100.0 * r.single_frame.fnmr(),
                100.0 * r.single_frame.fmr(),
                first_frame(&r.first_frame),
                r.frames as f64 / r.seconds.max(1e-9)
            );
            let delays = &r.decision_delay_frames;
            println!(
                "scene {scene_no}: {} decisions ({} early); frames from a passer-by's first sight to their decision: median {}, mean {:.1}",
                r.decisions,
                r.decided_early,
                delays.get(delays.len() / 2).copied().unwrap_or(0),
                delays.iter().sum::<u64>() as f64 / delays.len().max(1) as f64
            );
            for (what, cases) in [
                ("decided by", &r.decided_twice),
                ("not decided; tracks on them", &r.undecided),
            ] {
                for d in cases {
                    println!(
                        "scene {scene_no}: passer-by {} (identity {}, visible in frames {}-{}) {what} {:?} (track, first and last frame on them)",
                        d.passage, d.identity, d.visible.0, d.visible.1, d.tracks
                    );
                }
            }
            if let Some(l) = &r.live {
                let d = &l.decision_delay_ms;
                println!(
                    "scene {scene_no}: live at {} fps (queue {}, key frame every {}): {} frames read, {} lost ({} of them scored as missed), waited {:.0} ms on average, {:.0} at most; from a passer-by's first frame in view to their decision: median {:.0} ms, largest {:.0}; detection on {} frames, every {} at the end (largest {}, {} changes; behind the camera even at the largest on {} frames)",
                    l.camera.frames_per_second,
                    l.camera.queue,
                    l.camera.key_every,
                    l.facts.frames_read,
                    l.facts.frames_lost,
                    l.lost_frames_scored,
                    l.facts.wait_mean_ms,
                    l.facts.wait_max_ms,
                    d.get(d.len() / 2).copied().unwrap_or(0.0),
                    d.last().copied().unwrap_or(0.0),
                    r.detection_frames,
                    r.detect_every.last,
                    r.detect_every.largest_used,
                    r.detect_every.changes,
                    r.detect_every.frames_behind
                );
            }
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
            json!({"detector": vp.p.detector_name(),
                "detect_every": a.every,
                "decide_early": a.decide_early,
                "threshold": threshold, "scenes": reports,
                "size": format!("{}x{}", a.size.0, a.size.1),
                "method": "generated scenes, ground truth: face boxes at least half visible; MOTA/IDF1 at IoU 0.5 and HOTA over IoU 0.05-0.95 (TrackEval's definition) on detection frames; a decision belongs to the passer-by most of its used frames show (by_overlap: to the one its track overlapped most); a decision is wrong if the fused template rejects the passer-by's own reference photo or accepts the next identity's; single_frame: the best of the frames fused alone; first_frame: the track's first collected frame alone (not with --live); live: frames released on the camera's clock, the reader's decoding and processing measured on this machine and charged to that clock, frames lost when the queue is full (then up to the next key frame), a lost frame a detection was due on scored with no tracks",
                "machine": a.live.then(crate::machine::describe)})
        );
    }
    Ok(0)
}

/// The first-frame figures of a scene's line, when they were measured.
fn first_frame(o: &video::evaluate::Outcomes) -> String {
    if o.genuine == 0 {
        return String::new();
    }
    format!(
        ", first frame FNMR {:.2}% FMR {:.2}%",
        100.0 * o.fnmr(),
        100.0 * o.fmr()
    )
}

/// A fraction in (0, 1].
pub fn parse_fraction(s: &str) -> Result<f32, String> {
    let f: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if f > 0.0 && f <= 1.0 {
        Ok(f)
    } else {
        Err(format!("{s} is not in (0, 1]"))
    }
}
