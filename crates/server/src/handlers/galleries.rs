//! Galleries and their subjects: list, policy, identify, enrol, read, erase.

use super::images::{
    body_image, faces, largest, multipart_fields, pad_verdict, text, wants_liveness, Use,
};
use super::{blocking, ctx, purpose, required_purpose};
use crate::apikeys::ApiKey;
use crate::auth::gallery_allowed;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use gallery::{Enrolment, Policy};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) async fn list(
    State(st): State<Arc<AppState>>,
    Extension(key): Extension<ApiKey>,
) -> ApiResult<Json<Value>> {
    let all: Vec<_> = blocking(&st, |store| store.galleries())
        .await?
        .into_iter()
        .filter(|g| key.may_use(&g.name))
        .collect();
    Ok(Json(json!({"galleries": all})))
}

pub(crate) async fn put_policy(
    State(st): State<Arc<AppState>>,
    Extension(key): Extension<ApiKey>,
    Path(g): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    gallery_allowed(&key, &g)?;
    let p = parse_policy(&body)?;
    let c = ctx(
        &key,
        purpose(&headers)?.unwrap_or_else(|| "policy change".into()),
    );
    let info = blocking(&st, move |store| {
        store.update_policy(&c, &g, &p, None)?;
        store.gallery(&g)
    })
    .await?;
    Ok(Json(serde_json::to_value(info).unwrap_or_default()))
}

/// A policy document from a request body: JSON that must also pass the policy's own checks.
/// Public for the `http_bodies` fuzz target.
pub fn parse_policy(body: &[u8]) -> ApiResult<Policy> {
    let p: Policy = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("policy: {e}"),
        )
    })?;
    p.validate()?;
    app::faces::check_quality_gate(&p.enrol_min_quality)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()))?;
    Ok(p)
}

#[derive(Deserialize)]
pub(crate) struct IdentifyQuery {
    k: Option<usize>,
    /// Assess the probe for liveness (always done when the server requires it).
    liveness: Option<bool>,
}

pub(crate) async fn identify(
    State(st): State<Arc<AppState>>,
    Extension(key): Extension<ApiKey>,
    Path(g): Path<String>,
    Query(q): Query<IdentifyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    gallery_allowed(&key, &g)?;
    if q.k == Some(0) {
        return Err(ApiError::bad_request("bad_query", "k must be at least 1"));
    }
    let p = required_purpose(&headers, "for a search")?;
    let live = wants_liveness(&st, q.liveness == Some(true))?;
    let img = body_image(&headers, body)?;
    let probe = faces(&st, img, if live { Use::LiveProbe } else { Use::Probe }).await?;
    let warnings: Vec<String> = probe.warnings_for("probe").collect();
    let (face, used, found) = largest(probe.faces, "probe")?;
    let pad = if live {
        Some(pad_verdict(&st, &face)?)
    } else {
        None
    };
    let c = match &pad {
        Some(v) => ctx(&key, p).with_capture(v.audit_record()),
        None => ctx(&key, p),
    };
    if pad.as_ref().is_some_and(|v| v.blocks) {
        // Nothing is searched: the refusal is audited with the PAD outcome.
        let seq = blocking(&st, move |store| {
            store.refuse_comparison(&c, &g, "identify", "presentation-attack")
        })
        .await?;
        st.metrics.decision(false);
        return Ok(Json(json!({
            "match": false, "candidates": [], "metric": st.pipeline.metric(), "threshold": null,
            "searched_templates": 0, "decided_by": app::liveness::DECIDED_BY_PAD,
            "liveness": pad, "audit_seq": seq,
            "probe": {"faces_found": found, "face_used": used, "selection": "largest"},
            "warnings": warnings,
        })));
    }
    let th = st.default_threshold;
    let pack = st.pipeline.models.manifest.name.clone();
    let r = blocking(&st, move |store| {
        store.check_pack(&g, &pack)?;
        store.identify(&c, &g, &face.embedding, q.k, th)
    })
    .await?;
    st.metrics.decision(!r.candidates.is_empty());
    Ok(Json(json!({
        "match": !r.candidates.is_empty(), "candidates": r.candidates, "metric": r.metric, "threshold": r.threshold,
        "cohort_z_threshold": r.cohort_z_threshold,
        "searched_templates": r.searched_templates, "audit_seq": r.audit_seq,
        "decided_by": "comparison", "liveness": pad,
        "probe": {"faces_found": found, "face_used": used, "selection": "largest"},
        "warnings": warnings,
    })))
}

pub(crate) async fn enrol(
    State(st): State<Arc<AppState>>,
    Extension(key): Extension<ApiKey>,
    Path(g): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    gallery_allowed(&key, &g)?;
    let declared_purpose = purpose(&headers)?;
    let mut fields = multipart_fields(&st, req).await?;
    let reference = text(&fields, "reference").ok_or_else(|| {
        ApiError::bad_request("missing_field", "multipart field 'reference' is required")
    })?;
    let consent = text(&fields, "consent");
    let keep = text(&fields, "keep_image").is_some_and(|v| v == "true");
    let mut images: Vec<(String, Bytes)> = fields
        .drain()
        .filter(|(k, _)| k.starts_with("image"))
        .collect();
    images.sort_by(|a, b| a.0.cmp(&b.0));
    if images.is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            "at least one 'image' field is required",
        ));
    }
    let gallery_name = g.clone();
    let gate = blocking(&st, move |store| store.gallery(&gallery_name))
        .await?
        .policy
        .enrol_min_quality;
    let mut templates = Vec::new();
    for (name, img) in &images {
        let found = faces(&st, img.clone(), Use::Enrolment).await?;
        let face = largest(found.faces, "enrolment")?.0;
        app::faces::pass_quality_gate(&face.quality, &gate, name).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "quality_gate",
                e.to_string(),
            )
        })?;
        templates.push(face.embedding);
    }
    let c = ctx(&key, declared_purpose.unwrap_or_else(|| "enrolment".into()));
    let metric = st.pipeline.metric();
    let pack = st.pipeline.models.manifest.name.clone();
    let opts = Enrolment {
        consent,
        image: keep.then(|| images[0].1.to_vec()),
        expires_ms: None,
    };
    let r = blocking(&st, move |store| {
        store.enrol(&c, &g, &reference, &templates, metric, &pack, &opts)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(r).unwrap_or_default()),
    )
        .into_response())
}

pub(crate) async fn get_subject(
    State(st): State<Arc<AppState>>,
    Extension(key): Extension<ApiKey>,
    Path((g, r)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    gallery_allowed(&key, &g)?;
    let info = blocking(&st, move |store| store.subject(&g, &r)).await?;
    Ok(Json(serde_json::to_value(info).unwrap_or_default()))
}

#[derive(Deserialize)]
pub(crate) struct DeleteQuery {
    reason: Option<String>,
}

pub(crate) async fn delete_subject(
    State(st): State<Arc<AppState>>,
    Extension(key): Extension<ApiKey>,
    Path((g, r)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    gallery_allowed(&key, &g)?;
    let reason = q
        .reason
        .or_else(|| {
            headers
                .get("x-reason")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let c = ctx(&key, purpose(&headers)?.unwrap_or_else(|| "erasure".into()));
    let receipt = blocking(&st, move |store| store.delete(&c, &g, &r, &reason)).await?;
    Ok(Json(serde_json::to_value(receipt).unwrap_or_default()))
}
