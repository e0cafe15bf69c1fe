//! `facegate watch`: a video source in, one decision per passer-by out (JSON Lines).
//!
//! E-gate mode (`--reference IMAGE`): each track's fused template against the reference face.
//! Watchlist mode (`--gallery G --purpose TEXT`): each track's fused template searched in the
//! gallery, audited (one record per decision, none per frame). No frame is written anywhere.

use crate::cmd_faces::pick;
use crate::cmd_gallery::StoreArgs;
use crate::engine::{load, EngineArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use video::cadence::{Cadence, Every};
use video::watch::{Event, Evidence, WatchConfig, Watcher};
use video::VideoLimits;
use vision::decode::{decode_file, DecodeLimits};

#[derive(Args)]
pub struct WatchArgs {
    /// An MP4 file (H.264), a directory of frames (JPEG, PNG, JPEG 2000, in name order), an
    /// MJPEG camera (http://host/path or https://host/path) or an H.264 RTSP camera
    /// (`rtsp://[user:password@]host/path`; the credentials are never printed).
    pub source: PathBuf,
    /// E-gate: compare each passer-by with the face in this image (e.g. the chip photo).
    #[arg(long, conflicts_with = "gallery")]
    pub reference: Option<PathBuf>,
    /// Watchlist: search each passer-by in this gallery (needs --purpose).
    #[arg(long, requires = "purpose")]
    pub gallery: Option<String>,
    /// Why the search is made (recorded with each decision in the audit log).
    #[arg(long)]
    pub purpose: Option<String>,
    /// Decision threshold (default: the gallery's, else the pack's calibrated one).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Most candidates per decision in watchlist mode (capped by the gallery policy).
    #[arg(long)]
    pub k: Option<usize>,
    /// Detect on every n-th frame only (the tracker steps on those frames); `auto`: as often as
    /// this machine keeps up with the stream's frame rate (every frame if it can, up to
    /// --max-every), measured while watching and changed as the cost changes; a live camera
    /// that still has to drop frames raises it at once.
    #[arg(long, default_value = "1")]
    pub every: Every,
    /// With --every auto: the largest interval it may go to.
    #[arg(long, default_value_t = video::cadence::Cadence::DEFAULT_MAX)]
    pub max_every: u32,
    /// With --every auto: the camera's frame rate, what it keeps up with. Default: the rate the
    /// source declares (an MP4's, an RTSP camera's), else 30 — an MJPEG camera and a folder of
    /// frames declare none, so say it for them.
    #[arg(long, value_parser = parse_fps)]
    pub fps: Option<f64>,
    /// Best frames (by quality) kept and embedded per passer-by.
    #[arg(long, default_value_t = 3)]
    pub best: usize,
    /// Decide after a passer-by was seen this many times (or when they leave).
    #[arg(long, default_value_t = 30)]
    pub decide_after: u32,
    /// E-gate: decide a traveller as soon as their best frames match the reference within this
    /// fraction of the decision distance (0-1; default 0.9; `off`: only after --decide-after):
    /// checked once they were seen 8 times with all --best frames kept, and at each better frame
    /// after; a face not matching that clearly is decided after --decide-after as usual.
    /// Not with a gallery (each search is audited, so it is not probed frame after frame), nor
    /// with a liveness stage (it looks at the whole collection).
    #[arg(long, value_parser = parse_early)]
    pub decide_early: Option<Early>,
    /// Decide on the best single frame instead of the fused template (for comparisons).
    #[arg(long)]
    pub single_frame: bool,
    /// Write each frame with the tracked faces boxed (one colour per track), for people to look
    /// at: an H.264 video when the path ends in .mp4, else JPEG files in this directory. Off by
    /// default: frames are otherwise never kept.
    #[arg(long)]
    pub annotate: Option<PathBuf>,
    /// For an rtsp:// recording (an NVR's archive played over RTSP): wait for the reader
    /// instead of dropping frames when it falls behind. A live camera should drop (the default:
    /// up to the next key frame, counted in the summary's `dropped_units`).
    #[arg(long)]
    pub keep_every_frame: bool,
    /// For an rtsp:// camera: how it sends its RTP packets, interleaved on the RTSP connection
    /// (tcp, the default) or over UDP (udp, for a camera network only: no reordering, a lost
    /// packet costs its frame).
    #[arg(long, value_enum, default_value_t = RtspTransportArg::Tcp)]
    pub rtsp_transport: RtspTransportArg,
    /// For an https:// MJPEG camera: the camera network's CA certificates (PEM); the camera's
    /// certificate must chain to one of them. Without it, to the public roots compiled in.
    #[arg(long, env = "FACEGATE_CAMERA_CA")]
    pub camera_ca: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

fn parse_fps(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| Cadence::FRAMES_PER_SECOND.contains(f))
        .ok_or_else(|| {
            let range = Cadence::FRAMES_PER_SECOND;
            format!(
                "{s:?}: frames a second, {} to {}",
                range.start(),
                range.end()
            )
        })
}

/// `--decide-early`: a factor, or `off`.
#[derive(Clone, Copy, Debug)]
pub enum Early {
    Off,
    Within(f32),
}

fn parse_early(s: &str) -> Result<Early, String> {
    if s == "off" {
        Ok(Early::Off)
    } else {
        crate::eval::video::parse_fraction(s).map(Early::Within)
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RtspTransportArg {
    Tcp,
    Udp,
}

/// How a decision is made.
enum Decider {
    Reference {
        template: Vec<f32>,
        threshold: f64,
        metric: vision::pack::Metric,
    },
    Gallery {
        store: Box<gallery::Store>,
        ctx: gallery::Context,
        name: String,
        k: Option<usize>,
        default_threshold: f64,
    },
}

impl Decider {
    /// The decision on one passer-by. A liveness verdict that blocks makes it a refusal: no
    /// comparison result is given (and, against a gallery, no search is made; the refusal is
    /// audited with the verdict).
    fn decide(
        &self,
        template: &[f32],
        pad: Option<&app::liveness::PadVerdict>,
    ) -> Result<serde_json::Value> {
        if let Some(v) = pad.filter(|v| v.blocks) {
            let mut line = json!({"match": false, "decided_by": app::liveness::DECIDED_BY_PAD});
            match self {
                Decider::Reference { .. } => line["mode"] = json!("verify"),
                Decider::Gallery {
                    store, ctx, name, ..
                } => {
                    let ctx = ctx.clone().with_capture(v.audit_record());
                    let seq =
                        store.refuse_comparison(&ctx, name, "identify", "presentation-attack")?;
                    line["mode"] = json!("identify");
                    line["gallery"] = json!(name);
                    line["audit_seq"] = json!(seq);
                }
            }
            return Ok(line);
        }
        Ok(match self {
            Decider::Reference {
                template: reference,
                threshold,
                metric,
            } => {
                let score = metric.compare(template, reference);
                json!({
                    "mode": "verify",
                    "match": metric.is_match(score, *threshold),
                    "score": score,
                    "threshold": threshold,
                    "score_kind": metric.describe(),
                })
            }
            Decider::Gallery {
                store,
                ctx,
                name,
                k,
                default_threshold,
            } => {
                let ctx = match pad {
                    Some(v) => ctx.clone().with_capture(v.audit_record()),
                    None => ctx.clone(),
                };
                let r = store.identify(&ctx, name, template, *k, *default_threshold)?;
                json!({
                    "mode": "identify",
                    "match": !r.candidates.is_empty(),
                    "gallery": r.gallery,
                    "candidates": r.candidates,
                    "threshold": r.threshold,
                    "score_kind": r.metric.describe(),
                    "audit_seq": r.audit_seq,
                })
            }
        })
    }
}

/// One pipeline for a video run: loaded once, detecting down to the tracker's weak-detection
/// score (its second pass continues tracks with them); stills (reference photos) go through
/// `still_faces` at the detector's usual threshold.
pub struct VideoPipeline {
    pub p: vision::pipeline::Pipeline,
    still_threshold: f32,
}

impl VideoPipeline {
    pub fn load(home: &Path, engine: &EngineArgs, cfg: &WatchConfig) -> Result<VideoPipeline> {
        let mut p = load(home, engine)?;
        let still_threshold = p.detect.threshold;
        p.detect.threshold = still_threshold.min(cfg.tracker.low_score);
        Ok(VideoPipeline { p, still_threshold })
    }

    /// The faces of a still image: only confident detections count.
    pub fn still_faces(&mut self, img: &image::RgbImage) -> Result<Vec<vision::pipeline::Face>> {
        let video = std::mem::replace(&mut self.p.detect.threshold, self.still_threshold);
        let faces = self.p.faces(img);
        self.p.detect.threshold = video;
        Ok(faces?)
    }
}

pub fn watch(home: &Path, s: &StoreArgs, a: WatchArgs) -> Result<i32> {
    if matches!(a.decide_early, Some(Early::Within(_))) && a.reference.is_none() {
        bail!("--decide-early needs --reference: a gallery is searched once per passer-by (each search is audited), not probed frame after frame");
    }
    let cfg = WatchConfig {
        detect_every: a.every.first(),
        best_frames: a.best.max(1),
        decide_after_frames: a.decide_after.max(1),
        ..Default::default()
    };
    let mut vp = VideoPipeline::load(home, &a.engine, &cfg)?;
    let pack_threshold =
        vp.p.models
            .manifest
            .calibration
            .as_ref()
            .map(|c| c.threshold);
    let metric = vp.p.metric();
    // The tracker's appearance gates follow the pack's calibrated threshold (the geometry of its
    // embeddings), whatever threshold the decisions use; `eval video` measured the tracker so.
    let cfg = match pack_threshold {
        Some(t) => cfg.for_pack(metric, t),
        None => cfg,
    };
    let decider = match (&a.reference, &a.gallery) {
        (Some(path), None) => {
            let img = decode_file(path, &DecodeLimits::default().strict())
                .with_context(|| format!("reference {}", path.display()))?;
            let (face, _, _, _) = pick(vp.still_faces(&img)?, None, "reference")?;
            Decider::Reference {
                template: face.embedding.clone(),
                threshold: a
                    .threshold
                    .or(pack_threshold)
                    .context("no threshold: pass --threshold")?,
                metric,
            }
        }
        (None, Some(name)) => {
            let purpose = a.purpose.clone().unwrap_or_default();
            let store = s.open(home)?;
            store.check_pack(name, &vp.p.models.manifest.name)?;
            Decider::Gallery {
                store: Box::new(store),
                ctx: s.context(&purpose)?,
                name: name.clone(),
                k: a.k,
                default_threshold: a
                    .threshold
                    .or(pack_threshold)
                    .context("the pack has no calibrated threshold: pass --threshold")?,
            }
        }
        _ => bail!("say what to decide against: --reference IMAGE (e-gate) or --gallery G --purpose TEXT (watchlist)"),
    };
    let p = &vp.p;
    let shown = video::source::shown(&a.source);
    let options = video::source::SourceOptions {
        rtsp: video::rtsp::RtspOptions {
            keep_every_unit: a.keep_every_frame,
            transport: match a.rtsp_transport {
                RtspTransportArg::Tcp => video::rtsp::RtspTransport::Tcp,
                RtspTransportArg::Udp => video::rtsp::RtspTransport::Udp,
            },
            ..Default::default()
        },
        camera_roots: match &a.camera_ca {
            Some(path) => video::mjpeg::CameraRoots::from_pem_file(path)
                .with_context(|| format!("reading the camera CA {}", path.display()))?,
            None => video::mjpeg::CameraRoots::Public,
        },
    };
    let mut source = video::source::open_with(&a.source, &VideoLimits::default(), &options)
        .with_context(|| format!("opening {shown}"))?;
    let progress = indicatif::ProgressBar::with_draw_target(
        source.expected_frames(),
        indicatif::ProgressDrawTarget::stderr(),
    );
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} frames, {per_sec}, {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut w = Watcher::new(cfg);
    // A rate given over the source's own; a source that declares none (0) is taken for 30 fps.
    let frames_per_second = a.fps.unwrap_or(source.frame_rate());
    let mut cadence = a.every.cadence(a.max_every, frames_per_second);
    let early = match a.decide_early {
        None => Some(video::watch::EarlyMatch::DEFAULT_FACTOR),
        Some(Early::Off) => None,
        Some(Early::Within(f)) => Some(f),
    };
    if let (
        Some(factor),
        Decider::Reference {
            template,
            threshold,
            metric,
        },
    ) = (early, &decider)
    {
        w.set_early_match(Some(video::watch::EarlyMatch::new(
            [template.clone()],
            *metric,
            *threshold,
            factor,
        )));
    }
    let started = std::time::Instant::now();
    let mut out = std::io::stdout().lock();
    let (mut tracks, mut decisions, mut matches) = (0u64, 0u64, 0u64);
    let mut emit = |events: Vec<Event>, out: &mut dyn std::io::Write| -> Result<()> {
        for ev in events {
            let line = match ev {
                Event::TrackStart {
                    track,
                    frame,
                    time_ms,
                    rect,
                } => {
                    tracks += 1;
                    json!({"event": "track_start", "track": track, "frame": frame, "time_ms": time_ms,
                        "box": [rect.left, rect.top, rect.right, rect.bottom]})
                }
                Event::Decide(ev) => {
                    decisions += 1;
                    let line = decision(&decider, &ev, a.single_frame, &a.engine)?;
                    if line["match"] == true {
                        matches += 1;
                    }
                    line
                }
                Event::TrackEnd {
                    track,
                    first_frame,
                    frame,
                    time_ms,
                    frames_seen,
                    decided,
                    merged_into,
                    duplicate_of,
                } => {
                    let mut line = json!({"event": "track_end", "track": track, "first_frame": first_frame,
                        "frame": frame, "time_ms": time_ms, "frames_seen": frames_seen, "decided": decided});
                    if let Some(into) = merged_into {
                        line["merged_into"] = json!(into);
                    }
                    if let Some(of) = duplicate_of {
                        line["duplicate_of"] = json!(of);
                    }
                    line
                }
            };
            writeln!(out, "{line}")?;
        }
        Ok(())
    };
    let mut annotated = match &a.annotate {
        Some(path) => Some(
            video::annotate::AnnotatedOutput::create(path)
                .with_context(|| format!("creating {}", path.display()))?,
        ),
        None => None,
    };
    let mut decode_seconds = 0.0;
    // A source that fails (a camera lost, a file damaged past its limits) still lets every
    // passer-by already seen be decided; the error is reported after the summary.
    let mut source_error = None;
    // The source's dropped units seen so far: each is a frame the tracker's next step spans.
    let mut dropped = 0;
    // Whether `auto` falls behind the stream even at its largest interval (said when it
    // starts and when it ends: a camera that never stops has no summary to say it in).
    let mut behind = false;
    loop {
        let clock = std::time::Instant::now();
        let Some(frame) = source.next_frame() else {
            break;
        };
        decode_seconds += clock.elapsed().as_secs_f64();
        let mut frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                source_error = Some(e);
                break;
            }
        };
        let dropped_now = source.stats().dropped;
        w.note_lost(dropped_now.saturating_sub(dropped));
        dropped = dropped_now;
        // What this frame cost to process (a live source's next_frame waits for the camera, so
        // reading is not counted; decoding, 1-2 ms a frame, is inside the cadence's margin).
        let clock = std::time::Instant::now();
        let events = w.process(&frame, p)?;
        emit(events, &mut out)?;
        if let Some(out) = &mut annotated {
            video::annotate::draw_tracks(&mut frame.image, w.boxes());
            out.push(&frame.image, frame.index, frame.time_ms)
                .context("writing the annotated frames")?;
        }
        let every = cadence.observe(
            clock.elapsed().as_secs_f64() * 1e3,
            w.detected_last(),
            dropped,
        );
        w.set_detect_every(every);
        if cadence.behind() != behind {
            behind = cadence.behind();
            let line = if behind {
                let cost = cadence.cost_ms().unwrap_or(0.0);
                let budget = cadence.budget_ms().unwrap_or(0.0);
                progress.suspend(|| {
                    eprintln!(
                        "facegate watch: this machine does not keep up with {shown} at {fps} fps \
                         even detecting on one frame in {every} ({cost:.1} ms a frame, {budget:.1} \
                         allowed): {lost}. Raise --max-every, narrow --min-face/--max-face, or \
                         use a lighter detector.",
                        fps = cadence.frames_per_second().unwrap_or(0.0),
                        // A file or a folder is read whole however long it takes.
                        lost = if source.expected_frames().is_some() {
                            "a camera's frames would be lost"
                        } else {
                            "frames are being lost"
                        }
                    )
                });
                json!({"event": "behind", "frame": frame.index, "time_ms": frame.time_ms,
                    "detect_every": every, "ms_per_frame": cost, "budget_ms": budget,
                    "dropped_units": dropped})
            } else {
                json!({"event": "keeping_up", "frame": frame.index, "time_ms": frame.time_ms,
                    "detect_every": every, "frames_behind": cadence.frames_behind()})
            };
            writeln!(out, "{line}")?;
        }
        progress.inc(1);
    }
    let events = w.finish(p)?;
    emit(events, &mut out)?;
    if let Some(out) = annotated {
        out.finish().context("completing the annotated video")?;
    }
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let stats = source.stats();
    let st = w.stage_seconds();
    let per_frame = |x: f64| 1000.0 * x / stats.frames.max(1) as f64;
    let stages = json!({"decode": per_frame(decode_seconds), "detect": per_frame(st.detect),
        "track": per_frame(st.track), "appearance": per_frame(st.appearance),
        "collect": per_frame(st.collect), "decide": per_frame(st.decide),
        "liveness": per_frame(st.liveness)});
    writeln!(
        out,
        "{}",
        json!({"event": "summary", "frames": stats.frames, "skipped_samples": stats.skipped,
            "dropped_units": stats.dropped, "source_error": source_error.as_ref().map(|e| e.to_string()),
            "tracks": tracks, "decisions": decisions, "matches": matches, "seconds": secs,
            "frames_per_second": stats.frames as f64 / secs.max(1e-9),
            "stage_ms_per_frame": stages,
            "detector": p.detector_name(), "detect_every": cadence.every(),
            "detection_frames": w.detection_frames(),
            "detect_every_auto": cadence.frames_per_second().map(|fps| json!({"max": a.max_every, "fps": fps,
                "largest_used": cadence.largest(), "changes": cadence.changes(),
                "frames_behind": cadence.frames_behind()})),
            "fusion": if a.single_frame { "best single frame" } else { "mean of the best frames' normalised embeddings" }})
    )?;
    if let Some(e) = source_error {
        return Err(e).with_context(|| format!("reading {shown}"));
    }
    Ok(0)
}

fn decision(
    decider: &Decider,
    ev: &Evidence,
    single: bool,
    engine: &EngineArgs,
) -> Result<serde_json::Value> {
    let template = if single { &ev.best } else { &ev.fused };
    let pad = match &ev.liveness {
        Some(l) => Some(
            app::liveness::PadVerdict::of_track(
                &l.passive,
                l.motion.clone(),
                engine.pad_policy,
                engine.pad_threshold,
            )
            .context("no PAD outcome for a decided track")?,
        ),
        None => None,
    };
    let mut line = decider.decide(template, pad.as_ref())?;
    if let Some(v) = &pad {
        line["liveness"] = json!(v);
    }
    line["event"] = json!("decision");
    line["track"] = json!(ev.track);
    line["frame"] = json!(ev.frame);
    line["time_ms"] = json!(ev.time_ms);
    line["frames_seen"] = json!(ev.frames_seen);
    line["frames_used"] = json!(ev.frames_used);
    line["at_track_end"] = json!(ev.at_track_end);
    line["early"] = json!(ev.early);
    Ok(line)
}
