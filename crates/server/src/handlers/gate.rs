//! The e-gate session: the frames a gate camera took of one traveller, and the reference face
//! (the chip photo) in; one decision out, made the way `facegate watch` makes it — faces tracked
//! through the frames, the traveller's best frames by quality embedded and fused, liveness (when
//! asked) from the passive score over those frames and the planar-motion cue, and (for an
//! unattended gate) a head-turn challenge issued by `challenge` and checked from the traveller's
//! head pose over the frames. No frame is kept; one audit record per session.

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
    pad: Option<app::liveness::PadVerdict>,
    challenge: Option<ChallengeResult>,
    warnings: Vec<String>,
}

fn unprocessable(code: &'static str, msg: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg)
}

/// The fields of a session sent as a camera stream (`multipart/x-mixed-replace`, as an MJPEG
/// camera sends it, usually chunked): the first part is the reference image, every further part
/// a frame in order; `liveness` and `challenge` come in the query string. The whole body is
/// bounded by `max_body_bytes` (413 past it), each part by the same limit; the frames are
/// counted against `max_session_frames` by `session`, as a form's are. The stream must end with
/// its closing delimiter (`--BOUNDARY--`): a part cut short by the end of the body is not a
/// frame.
async fn stream_fields(st: &AppState, req: Request) -> ApiResult<HashMap<String, Bytes>> {
    let bad = |code: &'static str, e: String| ApiError::bad_request(code, e);
    let content_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let boundary = video::mjpeg::MjpegParser::boundary_of(&content_type)
        .map_err(|e| bad("bad_stream", e.to_string()))?;
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let limit = st.config.max_body_bytes;
    let body = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the stream is over the body limit of {limit} bytes"),
            )
        })?;
    let mut parser = video::mjpeg::MjpegParser::new(&boundary, limit)
        .map_err(|e| bad("bad_stream", e.to_string()))?;
    let parts = parser
        .push(&body)
        .map_err(|e| bad("bad_stream", e.to_string()))?;
    drop(body);
    if !parser.finished() {
        return Err(bad(
            "bad_stream",
            "the stream did not end with its closing delimiter (--boundary--)".into(),
        ));
    }
    // The frame count is checked with the form's, after a challenge nonce is spent, so both
    // ways of sending a session spend it alike.
    let mut parts = parts.into_iter();
    let mut fields = HashMap::new();
    if let Some(reference) = parts.next() {
        fields.insert("reference".to_string(), Bytes::from(reference));
    }
    for (i, frame) in parts.enumerate() {
        fields.insert(format!("frame{i:06}"), Bytes::from(frame));
    }
    for name in ["liveness", "challenge"] {
        if let Some(v) = query.get(name) {
            fields.insert(name.to_string(), Bytes::from(v.clone()));
        }
    }
    Ok(fields)
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
    let mut fields = if is_stream {
        stream_fields(&st, req).await?
    } else {
        multipart_fields(&st, req).await?
    };
    let live = wants_liveness(&st, text(&fields, "liveness").is_some_and(|v| v == "true"))?;
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
    // Frames in the order of their field names (frame000, frame001, ...).
    let mut frames: Vec<(String, Bytes)> = fields
        .into_iter()
        .filter(|(k, _)| k.starts_with("frame"))
        .collect();
    frames.sort_by(|a, b| a.0.cmp(&b.0));
    if frames.is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            "at least one 'frame' field is required",
        ));
    }
    let most = st.config.max_session_frames;
    if frames.len() > most {
        return Err(unprocessable(
            "too_many_frames",
            format!("{} frames, the limit is {most}", frames.len()),
        ));
    }
    let probe_limits = limits(&st, Use::Probe);
    let threshold = st.default_threshold;
    let policy = st.config.pad_policy;
    let pad_threshold = st.config.pad_threshold;
    let max_faces = st.config.max_faces;
    let n_frames = frames.len();
    // Liveness and the challenge look at every frame.
    let early = Some(st.config.gate_decide_early).filter(|f| *f > 0.0 && !live && turn.is_none());
    let outcome = with_pipeline(&st, move |p| {
        let mut warnings = Vec::new();
        // The reference: a photo, never assessed for liveness.
        let (img, truncated) = decode_flagged(&reference, &probe_limits)?;
        warnings.extend(truncated.map(|t| format!("reference: {t}")));
        let faces = p.faces(&img)?;
        let (rface, _, _) = largest(faces, "reference")?;
        drop(img);
        let metric = p.metric();
        let cfg = WatchConfig::default().for_pack(metric, threshold);
        let mut w = Watcher::new(cfg);
        w.set_early_match(early.map(|factor| {
            video::watch::EarlyMatch::new([rface.embedding.clone()], metric, threshold, factor)
        }));
        let mut events = Vec::new();
        let mut frames_processed = 0;
        let mut settled = false;
        // Each tracked face's yaw per frame, when a challenge is to be checked.
        let mut yaws: HashMap<u64, Vec<f64>> = HashMap::new();
        let alignment = p.models.manifest.embedder.alignment.clone();
        for (i, (name, bytes)) in frames.into_iter().enumerate() {
            let (image, truncated) = decode_flagged(&bytes, &probe_limits)?;
            warnings.extend(truncated.map(|t| format!("{name}: {t}")));
            let frame = video::Frame {
                index: i as u64,
                time_ms: i as u64 * 1000 / 30,
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
            if turn.is_some() {
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
            if w.live_tracks() > max_faces {
                return Err(unprocessable(
                    "too_many_faces",
                    format!("{name}: more than {max_faces} faces tracked"),
                ));
            }
            if settled {
                break;
            }
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
            Some(l) if live => Some(
                app::liveness::PadVerdict::of_track(
                    &l.passive,
                    l.motion.clone(),
                    policy,
                    pad_threshold,
                )
                .ok_or_else(ApiError::internal)?,
            ),
            _ => None,
        };
        let challenge = turn.map(|t| check_turn(yaws.get(&ev.track).map_or(&[], |v| v), t));
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
        })
    })
    .await?;
    let pad = outcome.pad;
    let challenge = outcome.challenge;
    let pad_blocks = pad.as_ref().is_some_and(|v| v.blocks);
    // A challenge not met blocks under the block policy, like a PAD verdict.
    let challenge_blocks =
        challenge.as_ref().is_some_and(|c| !c.passed) && policy == app::liveness::PadPolicy::Block;
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
        "tracks": outcome.tracks,
        "fusion": "mean of the best frames' normalised embeddings",
        "warnings": outcome.warnings,
    })))
}
