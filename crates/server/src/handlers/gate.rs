//! The e-gate session: the frames a gate camera took of one traveller, and the reference face
//! (the chip photo) in; one decision out, made the way `facegate watch` makes it — faces tracked
//! through the frames, the traveller's best frames by quality embedded and fused, liveness (when
//! asked) from the passive score over those frames and the planar-motion cue, and (for an
//! unattended gate) a head-turn challenge issued by `challenge` and checked from the traveller's
//! head pose over the frames. No frame is kept; one audit record per session.

use super::camera_stream::CameraStream;
use super::images::{
    audit_image_decision, largest, limits, multipart_fields, text, wants_liveness, with_pipeline,
    Decision, Use,
};
use super::{ctx, purpose};
use crate::apikeys::ApiKey;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use app::liveness::{check_turn, ChallengeResult, Turn};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use video::cadence::Every;
use video::watch::{Event, WatchConfig, Watcher};
use vision::decode::decode_flagged;

/// `POST /v1/gate/challenge`: a head-turn challenge for the next session of this key.
pub(crate) async fn challenge(
    State(st): State<Arc<AppState>>,
    Extension(key): Extension<ApiKey>,
) -> ApiResult<Json<Value>> {
    let ttl = Duration::from_secs(st.config.challenge_ttl_s);
    let (nonce, turn) = st
        .challenges
        .issue(&key.id, ttl, Instant::now())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many challenges outstanding; retry shortly",
            )
        })?;
    Ok(Json(json!({
        "nonce": nonce,
        "turn": turn,
        "expires_in_s": ttl.as_secs(),
        "frontal_degrees": app::liveness::CHALLENGE_FRONTAL_DEGREES,
        "min_turn_degrees": app::liveness::CHALLENGE_TURN_DEGREES,
        "instruction": match turn {
            Turn::Left => "look at the camera, then turn your head to your left",
            Turn::Right => "look at the camera, then turn your head to your right",
        },
    })))
}

/// What the frames gave, for the answer and the audit record.
struct Outcome {
    score: f64,
    /// Frames looked at: all of them, unless a clear match settled the session early.
    frames_processed: usize,
    early: bool,
    frames_seen: u32,
    frames_used: Vec<video::watch::FrameUsed>,
    tracks: usize,
    /// Frames faces were detected on, and how the interval went.
    detection_frames: u64,
    detect_every: Value,
    pad: Option<app::liveness::PadVerdict>,
    challenge: Option<ChallengeResult>,
    warnings: Vec<String>,
}

fn unprocessable(code: &'static str, msg: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg)
}

/// The reference part and the options of a session sent as a camera stream: the first part is
/// the reference image, every further part a frame in order; `liveness`, `challenge`, `every`
/// and `fps` come in the query string. The frames are left in the stream, to be read as they arrive.
async fn stream_start(
    st: &AppState,
    req: Request,
) -> ApiResult<(HashMap<String, Bytes>, CameraStream)> {
    let content_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let mut camera = CameraStream::new(
        &content_type,
        req.into_body(),
        st.config.max_body_bytes,
        Duration::from_millis(st.config.gate_frame_gap_ms),
    )?;
    let mut fields = HashMap::new();
    if let Some(reference) = camera.next_part().await? {
        fields.insert("reference".to_string(), reference);
    }
    for name in ["liveness", "challenge", "every", "fps"] {
        if let Some(v) = query.get(name) {
            fields.insert(name.to_string(), Bytes::from(v.clone()));
        }
    }
    Ok((fields, camera))
}

/// A frame of a session: its name (for messages) and its encoded image.
type NamedFrame = (String, Bytes);

/// What the reader of a camera stream hands the session's worker.
enum Part {
    Frame(Bytes),
    /// The stream's closing delimiter: no more frames.
    End,
}

/// A camera stream's frames as the worker takes them, waiting for each (on the blocking thread
/// that runs the session).
struct Received {
    parts: tokio::sync::mpsc::Receiver<Part>,
    taken: usize,
}

impl Iterator for Received {
    type Item = ApiResult<NamedFrame>;

    fn next(&mut self) -> Option<ApiResult<NamedFrame>> {
        match self.parts.blocking_recv() {
            Some(Part::Frame(bytes)) => {
                let name = format!("frame{:06}", self.taken);
                self.taken += 1;
                Some(Ok((name, bytes)))
            }
            Some(Part::End) => None,
            // The request was given up (refused by the reader, or timed out): stop, so the slot
            // and the pipeline go back at once.
            None => Some(Err(ApiError::bad_request(
                "bad_stream",
                "the stream was abandoned",
            ))),
        }
    }
}

/// How the frames come: all read already (a multipart form), or from a camera stream still
/// arriving.
enum Frames {
    Form(Vec<NamedFrame>),
    Camera(CameraStream, Bytes),
}

/// What a session is decided with, taken from the server's configuration and the request.
struct Settings {
    probe_limits: vision::decode::DecodeLimits,
    threshold: f64,
    policy: app::liveness::PadPolicy,
    pad_threshold: Option<f32>,
    max_faces: usize,
    live: bool,
    turn: Option<Turn>,
    early: Option<f32>,
    /// How often faces are detected, up to `max_every` when `auto`, on a camera of
    /// `frames_per_second`.
    every: Every,
    max_every: u32,
    frames_per_second: f64,
}

/// The session's detection interval and camera frame rate: asked for by the session (`every`,
/// `fps`) within the server's bounds, else the server's.
fn cadence_asked(st: &AppState, fields: &HashMap<String, Bytes>) -> ApiResult<(Every, u32, f64)> {
    let max = st.config.gate_max_every;
    let every = match text(fields, "every") {
        None => st.config.gate_detect_every,
        Some(v) => v
            .parse::<Every>()
            .ok()
            .filter(|e| e.most(max) <= max)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_parameter",
                    format!("every: a whole number of frames 1..={max}, or auto"),
                )
            })?,
    };
    let fps = match text(fields, "fps") {
        None => st.config.gate_frames_per_second,
        Some(v) => {
            let range = crate::config::GATE_FRAMES_PER_SECOND;
            v.parse::<f64>()
                .ok()
                .filter(|f| range.contains(f))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_parameter",
                        format!(
                            "fps: the camera's frames a second, {}..={}",
                            range.start(),
                            range.end()
                        ),
                    )
                })?
        }
    };
    Ok((every, max, fps))
}

/// The session's work on the pipeline: the reference's face, then the frames through a
/// watcher, in order, until they end or a clear match settles the session.
fn decide(
    p: &vision::pipeline::Pipeline,
    reference: &[u8],
    frames: impl Iterator<Item = ApiResult<NamedFrame>>,
    s: Settings,
) -> ApiResult<Outcome> {
    let mut warnings = Vec::new();
    // The reference: a photo, never assessed for liveness.
    let (img, truncated) = decode_flagged(reference, &s.probe_limits)?;
    warnings.extend(truncated.map(|t| format!("reference: {t}")));
    let faces = p.faces(&img)?;
    let (rface, _, _) = largest(faces, "reference")?;
    drop(img);
    let metric = p.metric();
    let cfg = WatchConfig {
        detect_every: s.every.first(),
        ..WatchConfig::default()
    }
    .for_pack(metric, s.threshold);
    let mut w = Watcher::new(cfg);
    let mut cadence = s.every.cadence(s.max_every, s.frames_per_second);
    w.set_early_match(s.early.map(|factor| {
        video::watch::EarlyMatch::new([rface.embedding.clone()], metric, s.threshold, factor)
    }));
    let mut events = Vec::new();
    let mut frames_processed = 0;
    let mut settled = false;
    // Each tracked face's yaw per frame, when a challenge is to be checked.
    let mut yaws: HashMap<u64, Vec<f64>> = HashMap::new();
    let alignment = p.models.manifest.embedder.alignment.clone();
    for (i, named) in frames.enumerate() {
        let (name, bytes) = named?;
        // What this frame costs here: from its arrival (waiting for the camera is not counted).
        let clock = Instant::now();
        let (image, truncated) = decode_flagged(&bytes, &s.probe_limits)?;
        drop(bytes);
        warnings.extend(truncated.map(|t| format!("{name}: {t}")));
        let frame = video::Frame {
            index: i as u64,
            time_ms: (i as f64 * 1000.0 / s.frames_per_second) as u64,
            image,
        };
        let now = w
            .process(&frame, p)
            .map_err(|e| unprocessable("bad_frame", format!("{name}: {e}")))?;
        settled = now
            .iter()
            .any(|e| matches!(e, Event::Decide(ev) if ev.early));
        events.extend(now);
        frames_processed = i + 1;
        // Head pose from the faces detected in this frame (between detections the boxes are
        // the last detection's, not this frame's).
        if s.turn.is_some() && w.detected_last() {
            for &(track, rect) in w.boxes() {
                let d = vision::detect::Detection {
                    rect,
                    score: 0.0,
                    landmarks: None,
                };
                let lm = p.landmarks_for(&frame.image, &d)?;
                if let Some(y) = vision::quality::head_yaw(&lm, &alignment) {
                    yaws.entry(track).or_default().push(y);
                }
            }
        }
        if w.live_tracks() > s.max_faces {
            return Err(unprocessable(
                "too_many_faces",
                format!("{name}: more than {} faces tracked", s.max_faces),
            ));
        }
        if settled {
            break;
        }
        let every = cadence.observe(clock.elapsed().as_secs_f64() * 1e3, w.detected_last(), 0);
        w.set_detect_every(every);
    }
    if !settled {
        events.extend(
            w.finish(p)
                .map_err(|e| unprocessable("bad_frame", e.to_string()))?,
        );
    }
    let decided: Vec<_> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::Decide(ev) => Some(ev),
            _ => None,
        })
        .collect();
    let tracks = decided.len();
    // The traveller: the face that settled the session, else the face followed through the
    // most frames.
    let ev = decided
        .into_iter()
        .max_by_key(|ev| (ev.early, ev.frames_seen))
        .ok_or_else(|| unprocessable("no_face", "no face was followed in the frames".into()))?;
    let pad = match &ev.liveness {
        Some(l) if s.live => Some(
            app::liveness::PadVerdict::of_track(
                &l.passive,
                l.motion.clone(),
                s.policy,
                s.pad_threshold,
            )
            .ok_or_else(ApiError::internal)?,
        ),
        _ => None,
    };
    let challenge = s
        .turn
        .map(|t| check_turn(yaws.get(&ev.track).map_or(&[], |v| v), t));
    Ok(Outcome {
        challenge,
        score: metric.compare(&ev.fused, &rface.embedding),
        frames_processed,
        early: ev.early,
        frames_seen: ev.frames_seen,
        frames_used: ev.frames_used.clone(),
        tracks,
        pad,
        warnings,
        detection_frames: w.detection_frames(),
        detect_every: json!({"asked": s.every, "last": cadence.every(),
            "largest_used": cadence.largest(), "changes": cadence.changes(),
            "fps": s.frames_per_second, "frames_behind": cadence.frames_behind()}),
    })
}

/// Runs the session's work on an inference slot. A camera stream is read here while the slot's
/// worker looks at the frames already read (at most two wait between them), so the answer can
/// go back as soon as the session is settled, with the rest of the stream not read. Returns the
/// outcome and the frames received.
async fn run(
    st: &Arc<AppState>,
    reference: Bytes,
    frames: Frames,
    s: Settings,
) -> ApiResult<(Outcome, usize)> {
    let (mut camera, first) = match frames {
        Frames::Form(frames) => {
            let n = frames.len();
            let outcome = with_pipeline(st, move |p| {
                decide(p, &reference, frames.into_iter().map(Ok), s)
            })
            .await?;
            return Ok((outcome, n));
        }
        Frames::Camera(camera, first) => (camera, first),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(Part::Frame(first))
        .await
        .map_err(|_| ApiError::internal())?;
    let received = Received {
        parts: rx,
        taken: 0,
    };
    let work = with_pipeline(st, move |p| decide(p, &reference, received, s));
    let most = st.config.max_session_frames;
    let mut n = 1;
    // The reader; it ends at the closing delimiter, or when the worker stops taking frames.
    let read = async {
        loop {
            let part = match camera.next_part().await? {
                Some(frame) => {
                    n += 1;
                    if n > most {
                        return Err(unprocessable(
                            "too_many_frames",
                            format!("over the limit of {most} frames"),
                        ));
                    }
                    Part::Frame(frame)
                }
                None => Part::End,
            };
            let end = matches!(part, Part::End);
            if tx.send(part).await.is_err() || end {
                return Ok(());
            }
        }
    };
    let outcome = {
        tokio::pin!(work);
        tokio::pin!(read);
        let mut read_all = false;
        loop {
            tokio::select! {
                biased;
                outcome = &mut work => break outcome?,
                r = &mut read, if !read_all => {
                    r?;
                    read_all = true;
                }
            }
        }
    };
    Ok((outcome, n))
}

pub(crate) async fn session(
    State(st): State<Arc<AppState>>,
    Extension(key): Extension<ApiKey>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Json<Value>> {
    let declared_purpose = purpose(&headers)?;
    let is_stream = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/x-mixed-replace")
        });
    let (mut fields, camera) = if is_stream {
        let (fields, camera) = stream_start(&st, req).await?;
        (fields, Some(camera))
    } else {
        (multipart_fields(&st, req).await?, None)
    };
    let live = wants_liveness(&st, text(&fields, "liveness").is_some_and(|v| v == "true"))?;
    let (every, max_every, frames_per_second) = cadence_asked(&st, &fields)?;
    // A challenge nonce is spent now, whatever follows.
    let turn = match text(&fields, "challenge") {
        Some(nonce) => Some(
            st.challenges
                .redeem(&nonce, &key.id, Instant::now())
                .map_err(|why| {
                    unprocessable(
                        "challenge_invalid",
                        format!("the challenge nonce is not usable: {why:?}"),
                    )
                })?,
        ),
        None => None,
    };
    // The reference: an image, or the chip (authenticated now; refused before any frame is
    // looked at).
    let (reference, chip) = match super::chip::take_reference(&st, &mut fields).await? {
        Some(super::chip::Reference::Image(b)) => (b, None),
        Some(super::chip::Reference::Chip(c)) => {
            if !c.accepted() {
                let p = declared_purpose.unwrap_or_else(|| "e-gate session".into());
                let frames = fields.keys().filter(|k| k.starts_with("frame")).count();
                let answer =
                    json!({"frames": frames, "frames_seen": 0, "frames_used": [], "tracks": 0});
                return super::chip::refuse(&st, &key, p, &c, "gate-session", answer).await;
            }
            (Bytes::from(c.face.image.clone()), Some(c))
        }
        None => {
            return Err(ApiError::bad_request(
                "missing_field",
                "a 'reference' image or the chip's 'dg2' and 'sod' are required",
            ))
        }
    };
    let no_frame = || ApiError::bad_request("missing_field", "at least one frame is required");
    let most = st.config.max_session_frames;
    let frames = match camera {
        Some(mut camera) => {
            let first = camera.next_part().await?.ok_or_else(no_frame)?;
            Frames::Camera(camera, first)
        }
        None => {
            // Frames in the order of their field names (frame000, frame001, ...).
            let mut frames: Vec<NamedFrame> = fields
                .into_iter()
                .filter(|(k, _)| k.starts_with("frame"))
                .collect();
            frames.sort_by(|a, b| a.0.cmp(&b.0));
            if frames.is_empty() {
                return Err(no_frame());
            }
            if frames.len() > most {
                return Err(unprocessable(
                    "too_many_frames",
                    format!("{} frames, the limit is {most}", frames.len()),
                ));
            }
            Frames::Form(frames)
        }
    };
    let settings = Settings {
        probe_limits: limits(&st, Use::Probe),
        threshold: st.default_threshold,
        policy: st.config.pad_policy,
        pad_threshold: st.config.pad_threshold,
        max_faces: st.config.max_faces,
        live,
        turn,
        // Liveness and the challenge look at every frame.
        early: Some(st.config.gate_decide_early).filter(|f| *f > 0.0 && !live && turn.is_none()),
        every,
        max_every,
        frames_per_second,
    };
    let threshold = settings.threshold;
    let (outcome, n_frames) = run(&st, reference, frames, settings).await?;
    let pad = outcome.pad;
    let challenge = outcome.challenge;
    let pad_blocks = pad.as_ref().is_some_and(|v| v.blocks);
    // A challenge not met blocks under the block policy, like a PAD verdict.
    let challenge_blocks = challenge.as_ref().is_some_and(|c| !c.passed)
        && st.config.pad_policy == app::liveness::PadPolicy::Block;
    let blocked = pad_blocks || challenge_blocks;
    let decided_by = if pad_blocks {
        app::liveness::DECIDED_BY_PAD
    } else if challenge_blocks {
        "liveness: head-turn challenge not met"
    } else {
        "comparison"
    };
    let score = outcome.score;
    let metric = st.pipeline.metric();
    let matched = !blocked && metric.is_match(score, threshold);
    st.metrics.decision(matched);
    let mut capture = pad.as_ref().map(|v| v.audit_record());
    if let Some(c) = &challenge {
        capture.get_or_insert_with(|| json!({}))["challenge"] =
            json!({"turn": c.turn, "passed": c.passed, "max_turn_degrees": c.max_turn_degrees});
    }
    let c = ctx(
        &key,
        declared_purpose.unwrap_or_else(|| "e-gate session".into()),
    );
    audit_image_decision(
        &st,
        c,
        Decision {
            blocked,
            matched,
            score,
            threshold,
        },
        capture,
        {
            let mut extra = chip
                .as_ref()
                .map_or_else(|| json!({}), |c| super::chip::audit_details(&st, c));
            extra["mode"] = json!("gate-session");
            extra["frames"] = json!(n_frames);
            extra["frames_seen"] = json!(outcome.frames_seen);
            extra["early"] = json!(outcome.early);
            extra["detection_frames"] = json!(outcome.detection_frames);
            extra
        },
    )
    .await?;
    Ok(Json(json!({
        "match": matched,
        "score": if blocked { None } else { Some(score) },
        "metric": metric,
        "threshold": threshold,
        "decided_by": decided_by,
        "liveness": pad,
        "chip": chip.as_ref().map(|c| c.report_json(false)),
        "challenge": challenge,
        "frames": n_frames,
        "frames_processed": outcome.frames_processed,
        "early": outcome.early,
        "frames_seen": outcome.frames_seen,
        "frames_used": outcome.frames_used,
        "detection_frames": outcome.detection_frames,
        "detect_every": outcome.detect_every,
        "tracks": outcome.tracks,
        "fusion": "mean of the best frames' normalised embeddings",
        "warnings": outcome.warnings,
    })))
}
