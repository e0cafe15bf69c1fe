//! Images in: face detection, 1:1 comparison of two images, and the shared steps (decode and
//! find faces under an inference slot, pick the largest face, multipart fields).

use super::{blocking, ctx, purpose, required_purpose};
use crate::apikeys::ApiKey;
use crate::auth::gallery_allowed;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use vision::decode::{decode_flagged, DecodeLimits};
use vision::pipeline::Face;

/// What decoding and detection found besides the faces: the image size, and warnings for the
/// answer (a file cut short, which enrolment refuses instead; a frame searched below its native
/// size to stay within the memory budget).
pub(crate) struct Found {
    pub width: u32,
    pub height: u32,
    pub faces: Vec<Face>,
    pub warnings: Vec<String>,
}

impl Found {
    /// The warnings, each prefixed with which image it is about.
    pub(crate) fn warnings_for(&self, what: &str) -> impl Iterator<Item = String> + '_ {
        let what = what.to_string();
        self.warnings.iter().map(move |w| format!("{what}: {w}"))
    }
}

/// How a request's image is decoded: enrolment refuses a truncated file, a search flags it; a
/// live probe's chosen face (the largest) also goes through the liveness stage.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    Enrolment,
    Probe,
    LiveProbe,
}

/// Whether this request's probe is assessed for liveness: always when the server requires it,
/// else when the request asks (`liveness=true`). Asking a server without a PAD pack is a 409.
pub(crate) fn wants_liveness(st: &AppState, asked: bool) -> ApiResult<bool> {
    let wanted = st.config.liveness_required || asked;
    if wanted && st.pipeline.liveness.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "liveness_unavailable",
            "this server has no PAD pack loaded (set pad_pack in its configuration)",
        ));
    }
    Ok(wanted)
}

/// The liveness verdict on a probe face assessed with [`Use::LiveProbe`].
pub(crate) fn pad_verdict(st: &AppState, face: &Face) -> ApiResult<app::liveness::PadVerdict> {
    app::liveness::PadVerdict::of(face, st.config.pad_policy, st.config.pad_threshold)
        .ok_or_else(ApiError::internal)
}

/// Runs `work` on the blocking pool with one of the inference slots and its pipeline (a bounded
/// wait for a slot, then 503).
pub(crate) async fn with_pipeline<T: Send + 'static>(
    st: &Arc<AppState>,
    work: impl FnOnce(&vision::pipeline::Pipeline) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    st.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    let permit = tokio::time::timeout(
        Duration::from_millis(st.config.queue_wait_ms),
        st.slots.clone().acquire_owned(),
    )
    .await;
    st.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
    let permit = match permit {
        Ok(Ok(p)) => p,
        _ => {
            st.metrics.rejected_overload.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "every inference slot is busy; retry shortly",
            ));
        }
    };
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        // A permit guarantees a free pipeline: there are as many permits as pipelines.
        let p = st2
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| st2.pipeline.clone());
        let r = work(&p);
        st2.pool.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        r
    })
    .await
    .map_err(|_| ApiError::internal())?
}

/// The decode limits of a request's image.
pub(crate) fn limits(st: &AppState, purpose: Use) -> DecodeLimits {
    DecodeLimits {
        max_bytes: st.config.max_body_bytes as u64,
        max_pixels: st.config.max_pixels,
        refuse_truncated: purpose == Use::Enrolment,
    }
}

/// Decode and find faces off the async runtime, holding one of the inference slots.
pub(crate) async fn faces(st: &Arc<AppState>, bytes: Bytes, purpose: Use) -> ApiResult<Found> {
    let limits = limits(st, purpose);
    let out = with_pipeline(st, move |p| {
        let (img, truncated) = decode_flagged(&bytes, &limits)?;
        let warnings = truncated
            .map(str::to_string)
            .into_iter()
            .chain(p.detection_warning(img.width(), img.height()))
            .collect();
        let mut faces = p.faces(&img)?;
        if purpose == Use::LiveProbe {
            // The face the answer will be about (`largest`'s rule): PAD costs milliseconds per
            // face, so only that one is assessed.
            if let Some(i) = app::faces::largest(&faces) {
                p.assess_liveness(&img, &mut faces[i..=i])?;
            }
        }
        Ok(Found {
            width: img.width(),
            height: img.height(),
            faces,
            warnings,
        })
    })
    .await?;
    st.metrics
        .faces_detected
        .fetch_add(out.faces.len() as u64, Ordering::Relaxed);
    if out.faces.len() > st.config.max_faces {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_faces",
            format!(
                "{} faces, the limit is {}",
                out.faces.len(),
                st.config.max_faces
            ),
        ));
    }
    Ok(out)
}

/// A 1:1 decision made on images, for its audit record.
pub(crate) struct Decision {
    /// A liveness verdict blocked it: nothing was compared.
    pub blocked: bool,
    pub matched: bool,
    pub score: f64,
    pub threshold: f64,
}

/// The audit record of a 1:1 decision on images (nothing is stored, no biometric is written):
/// action `verify`, the outcome, the score (or `compared: false`), the threshold, the liveness
/// capture record and `extra` details.
pub(crate) async fn audit_image_decision(
    st: &Arc<AppState>,
    c: gallery::Context,
    d: Decision,
    capture: Option<Value>,
    extra: Value,
) -> ApiResult<u64> {
    blocking(st, move |store| {
        let mut details = if d.blocked {
            json!({"compared": false, "threshold": d.threshold})
        } else {
            json!({"score": d.score, "threshold": d.threshold})
        };
        if let (Some(obj), Some(more)) = (details.as_object_mut(), extra.as_object()) {
            obj.extend(more.clone());
        }
        if let Some(capture) = capture {
            details["capture"] = capture;
        }
        store.audit_event(
            &c,
            gallery::audit::AuditEvent {
                action: "verify".into(),
                outcome: match (d.blocked, d.matched) {
                    (true, _) => "presentation-attack",
                    (false, true) => "match",
                    (false, false) => "no-match",
                }
                .into(),
                details,
                ..Default::default()
            },
        )
    })
    .await
}

/// The largest face (`app::faces`, the CLI's rule too), its index and how many were found; 422
/// when there is none.
pub(crate) fn largest(faces: Vec<Face>, what: &str) -> ApiResult<(Face, usize, usize)> {
    let c = app::faces::choose(faces, None, what)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_face", e.to_string()))?;
    Ok((c.face, c.index, c.found))
}

pub(crate) fn face_json(f: &Face) -> Value {
    json!({
        "box": [f.rect.left, f.rect.top, f.rect.right, f.rect.bottom],
        "score": f.score,
        "landmarks": f.landmarks.iter().map(|p| [p.x, p.y]).collect::<Vec<_>>(),
        "quality": f.quality,
    })
}

/// The image of a request: the raw body (multipart is refused with a hint).
pub(crate) fn body_image(headers: &HeaderMap, body: Bytes) -> ApiResult<Bytes> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("multipart/") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the image as the raw body (image/jpeg, image/png, image/jp2)",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the request body must be an image",
        ));
    }
    Ok(body)
}

/// Every field of a multipart body (the body limit bounds the total); a field given twice is
/// refused. Public for the `http_bodies` fuzz target.
pub async fn multipart_fields<S: Send + Sync>(
    state: &S,
    req: Request,
) -> ApiResult<HashMap<String, Bytes>> {
    use axum::extract::FromRequest;
    let bad = |e: String| ApiError::bad_request("bad_multipart", e);
    let mut mp = Multipart::from_request(req, state)
        .await
        .map_err(|e| bad(e.body_text()))?;
    let mut out = HashMap::new();
    while let Some(f) = mp.next_field().await.map_err(|e| bad(e.to_string()))? {
        let name = f.name().unwrap_or("").to_string();
        let data = f.bytes().await.map_err(|e| bad(e.to_string()))?;
        if out.insert(name.clone(), data).is_some() {
            return Err(bad(format!("field '{name}' given twice")));
        }
    }
    Ok(out)
}

/// A text field, trimmed; `None` when absent, empty or not UTF-8.
pub(crate) fn text(fields: &HashMap<String, Bytes>, name: &str) -> Option<String> {
    fields
        .get(name)
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub(crate) async fn detect(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let img = body_image(&headers, body)?;
    let found = faces(&st, img, Use::Probe).await?;
    Ok(Json(json!({
        "width": found.width, "height": found.height,
        "faces": found.faces.iter().map(face_json).collect::<Vec<_>>(),
        "warnings": found.warnings,
    })))
}

/// 1:1: a probe against a reference image, or against an enrolled subject.
pub(crate) async fn verify(
    State(st): State<Arc<AppState>>,
    Extension(key): Extension<ApiKey>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Json<Value>> {
    let declared_purpose = purpose(&headers)?;
    let mut fields = multipart_fields(&st, req).await?;
    let probe = fields.remove("probe").ok_or_else(|| {
        ApiError::bad_request("missing_field", "multipart field 'probe' is required")
    })?;
    // A chip reference is authenticated first: a refused chip costs no face processing.
    let reference = super::chip::take_reference(&st, &mut fields).await?;
    if let Some(super::chip::Reference::Chip(chip)) = &reference {
        if !chip.accepted() {
            let p = declared_purpose.unwrap_or_else(|| "1:1 verification".into());
            return super::chip::refuse(&st, &key, p, chip, "verify", json!({})).await;
        }
    }
    let live = wants_liveness(&st, text(&fields, "liveness").is_some_and(|v| v == "true"))?;
    let probe_use = if live { Use::LiveProbe } else { Use::Probe };
    let probe = faces(&st, probe, probe_use).await?;
    let mut warnings: Vec<String> = probe.warnings_for("probe").collect();
    let (pface, pi, pn) = largest(probe.faces, "probe")?;
    let pad = if live {
        Some(pad_verdict(&st, &pface)?)
    } else {
        None
    };
    let blocked = pad.as_ref().is_some_and(|v| v.blocks);
    let decided_by = if blocked {
        app::liveness::DECIDED_BY_PAD
    } else {
        "comparison"
    };
    let capture = pad.as_ref().map(|v| v.audit_record());
    let metric = st.pipeline.metric();
    if let Some(reference) = reference {
        let (bytes, chip) = match reference {
            super::chip::Reference::Image(b) => (b, None),
            super::chip::Reference::Chip(c) => (Bytes::from(c.face.image.clone()), Some(c)),
        };
        // The reference is a photo (a print by nature): never assessed for liveness.
        let reference = faces(&st, bytes, Use::Probe).await?;
        warnings.extend(reference.warnings_for("reference"));
        let (rface, ri, rn) = largest(reference.faces, "reference")?;
        let score = metric.compare(&pface.embedding, &rface.embedding);
        let matched = !blocked && metric.is_match(score, st.default_threshold);
        st.metrics.decision(matched);
        // Two images in, a decision out: nothing is stored; the call is audited without biometrics.
        let c = ctx(
            &key,
            declared_purpose.unwrap_or_else(|| "1:1 verification".into()),
        );
        audit_image_decision(
            &st,
            c,
            Decision {
                blocked,
                matched,
                score,
                threshold: st.default_threshold,
            },
            capture,
            chip.as_ref()
                .map_or_else(|| json!({}), |c| super::chip::audit_details(&st, c)),
        )
        .await?;
        return Ok(Json(json!({
            "match": matched, "score": if blocked { None } else { Some(score) }, "metric": metric, "threshold": st.default_threshold, "calibrated_fmr": st.calibrated_fmr,
            "decided_by": decided_by, "liveness": pad,
            "chip": chip.as_ref().map(|c| c.report_json(false)),
            "probe": {"faces_found": pn, "face_used": pi, "selection": "largest", "face": face_json(&pface)},
            "reference": {"faces_found": rn, "face_used": ri, "selection": "largest", "face": face_json(&rface)},
            "warnings": warnings,
        })));
    }
    let (Some(g), Some(subject)) = (text(&fields, "gallery"), text(&fields, "subject")) else {
        return Err(ApiError::bad_request(
            "missing_field",
            "give a 'reference' image, the chip's 'dg2' and 'sod', or 'gallery' and 'subject'",
        ));
    };
    gallery_allowed(&key, &g)?;
    let p = required_purpose(&headers, "when verifying against an enrolled subject")?;
    let c = match capture {
        Some(capture) => ctx(&key, p).with_capture(capture),
        None => ctx(&key, p),
    };
    if blocked {
        // No comparison is made: the refusal is audited with the PAD outcome.
        let seq = blocking(&st, move |store| {
            store.refuse_comparison(&c, &g, "verify", "presentation-attack")
        })
        .await?;
        st.metrics.decision(false);
        return Ok(Json(
            json!({"match": false, "score": null, "metric": metric, "threshold": null,
            "decided_by": decided_by, "liveness": pad, "audit_seq": seq,
            "probe": {"faces_found": pn, "face_used": pi, "selection": "largest"}, "warnings": warnings}),
        ));
    }
    let th = st.default_threshold;
    let pack = st.pipeline.models.manifest.name.clone();
    let r = blocking(&st, move |store| {
        store.check_pack(&g, &pack)?;
        store.verify_subject(&c, &g, &subject, &pface.embedding, th)
    })
    .await?;
    st.metrics.decision(r.matched);
    Ok(Json(
        json!({"match": r.matched, "score": r.score, "metric": r.metric, "threshold": r.threshold, "audit_seq": r.audit_seq,
        "decided_by": decided_by, "liveness": pad,
        "probe": {"faces_found": pn, "face_used": pi, "selection": "largest"}, "warnings": warnings}),
    ))
}
