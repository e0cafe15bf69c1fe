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

/// How a request's image is decoded: enrolment refuses a truncated file, a search flags it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    Enrolment,
    Probe,
}

/// Decode and find faces off the async runtime, holding one of the inference slots.
pub(crate) async fn faces(st: &Arc<AppState>, bytes: Bytes, purpose: Use) -> ApiResult<Found> {
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
    let out = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let limits = DecodeLimits {
            max_bytes: st2.config.max_body_bytes as u64,
            max_pixels: st2.config.max_pixels,
            refuse_truncated: purpose == Use::Enrolment,
        };
        // A permit guarantees a free pipeline: there are as many permits as pipelines.
        let p = st2
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| st2.pipeline.clone());
        let r = decode_flagged(&bytes, &limits).and_then(|(img, truncated)| {
            let warnings = truncated
                .map(str::to_string)
                .into_iter()
                .chain(p.detection_warning(img.width(), img.height()))
                .collect();
            p.faces(&img).map(|faces| Found {
                width: img.width(),
                height: img.height(),
                faces,
                warnings,
            })
        });
        st2.pool.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        r
    })
    .await
    .map_err(|_| ApiError::internal())??;
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

/// The largest face, its index and how many were found; 422 when there is none.
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
    let probe = faces(&st, probe, Use::Probe).await?;
    let mut warnings: Vec<String> = probe.warnings_for("probe").collect();
    let (pface, pi, pn) = largest(probe.faces, "probe")?;
    let metric = st.pipeline.metric();
    if let Some(reference) = fields.remove("reference") {
        let reference = faces(&st, reference, Use::Probe).await?;
        warnings.extend(reference.warnings_for("reference"));
        let (rface, ri, rn) = largest(reference.faces, "reference")?;
        let score = metric.compare(&pface.embedding, &rface.embedding);
        let matched = metric.is_match(score, st.default_threshold);
        st.metrics.decision(matched);
        // Two images in, a decision out: nothing is stored; the call is audited without biometrics.
        let c = ctx(
            &key,
            declared_purpose.unwrap_or_else(|| "1:1 verification".into()),
        );
        let threshold = st.default_threshold;
        blocking(&st, move |store| {
            store.audit_event(
                &c,
                gallery::audit::AuditEvent {
                    action: "verify".into(),
                    outcome: if matched { "match" } else { "no-match" }.into(),
                    details: json!({"score": score, "threshold": threshold}),
                    ..Default::default()
                },
            )
        })
        .await?;
        return Ok(Json(json!({
            "match": matched, "score": score, "metric": metric, "threshold": st.default_threshold, "calibrated_fmr": st.calibrated_fmr,
            "probe": {"faces_found": pn, "face_used": pi, "selection": "largest", "face": face_json(&pface)},
            "reference": {"faces_found": rn, "face_used": ri, "selection": "largest", "face": face_json(&rface)},
            "warnings": warnings,
        })));
    }
    let (Some(g), Some(subject)) = (text(&fields, "gallery"), text(&fields, "subject")) else {
        return Err(ApiError::bad_request(
            "missing_field",
            "give a 'reference' image, or 'gallery' and 'subject'",
        ));
    };
    gallery_allowed(&key, &g)?;
    let p = required_purpose(&headers, "when verifying against an enrolled subject")?;
    let c = ctx(&key, p);
    let th = st.default_threshold;
    let r = blocking(&st, move |store| {
        store.verify_subject(&c, &g, &subject, &pface.embedding, th)
    })
    .await?;
    st.metrics.decision(r.matched);
    Ok(Json(
        json!({"match": r.matched, "score": r.score, "metric": r.metric, "threshold": r.threshold, "audit_seq": r.audit_seq,
        "probe": {"faces_found": pn, "face_used": pi, "selection": "largest"}, "warnings": warnings}),
    ))
}
