//! `facegate serve`: the vision pipeline and the gallery as a versioned JSON API.
//!
//! Every route but `/healthz`, `/readyz` and `/v1/openapi.json` needs `Authorization: Bearer
//! <api key>`; the key's role decides what it may call (`ROUTES` is the table, checked against the
//! OpenAPI document in tests). Inference runs on the blocking pool behind a semaphore of
//! `inference_slots`; a request that cannot get a slot within `queue_wait_ms` gets 503 at once
//! instead of queueing without bound.

pub mod apikeys;
pub mod config;
pub mod metrics;
pub mod tls;

use apikeys::{ApiKey, ApiKeys};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use config::ServerConfig;
use gallery::{Context, Enrolment, Metric, Policy, Role, Store};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use vision::decode::{decode, DecodeLimits};
use vision::pipeline::{compare, is_match, Face, Pipeline};
use vision::VisionError;

/// Every route, its method and the roles allowed (`None`: no key needed). The OpenAPI document
/// and the router are both checked against this table.
pub const ROUTES: &[(&str, &str, Option<&[Role]>)] = &[
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/v1/openapi.json", None),
    (
        "GET",
        "/metrics",
        Some(&[Role::Operator, Role::Auditor, Role::Admin]),
    ),
    (
        "POST",
        "/v1/detect",
        Some(&[Role::Gate, Role::Enroller, Role::Operator, Role::Admin]),
    ),
    (
        "POST",
        "/v1/verify",
        Some(&[Role::Gate, Role::Operator, Role::Admin]),
    ),
    (
        "GET",
        "/v1/galleries",
        Some(&[Role::Operator, Role::Auditor, Role::Admin]),
    ),
    (
        "PUT",
        "/v1/galleries/{gallery}/policy",
        Some(&[Role::Admin]),
    ),
    (
        "POST",
        "/v1/galleries/{gallery}/identify",
        Some(&[Role::Gate, Role::Operator, Role::Admin]),
    ),
    (
        "POST",
        "/v1/galleries/{gallery}/subjects",
        Some(&[Role::Enroller, Role::Operator, Role::Admin]),
    ),
    (
        "GET",
        "/v1/galleries/{gallery}/subjects/{reference}",
        Some(&[Role::Operator, Role::Admin]),
    ),
    (
        "DELETE",
        "/v1/galleries/{gallery}/subjects/{reference}",
        Some(&[Role::Enroller, Role::Operator, Role::Admin]),
    ),
    ("GET", "/v1/audit", Some(&[Role::Auditor, Role::Admin])),
    (
        "POST",
        "/v1/audit/verify",
        Some(&[Role::Auditor, Role::Admin]),
    ),
];

pub const OPENAPI: &str = include_str!("../openapi.json");

pub struct AppState {
    pub config: ServerConfig,
    pub store: Arc<Store>,
    /// The first pipeline of the pool (model metadata).
    pub pipeline: Arc<Pipeline>,
    /// One pipeline per inference slot: an ONNX Runtime session runs one call at a time, so slots
    /// sharing one pipeline would queue on its sessions instead of using their cores.
    pool: Mutex<Vec<Arc<Pipeline>>>,
    pub keys: Arc<ApiKeys>,
    pub metrics: metrics::Metrics,
    slots: Arc<Semaphore>,
    rate: Mutex<HashMap<String, (Instant, f64)>>,
    pub ready: AtomicBool,
    next_id: AtomicU64,
    default_threshold: f64,
    calibrated_fmr: Option<f64>,
}

impl AppState {
    /// `pipelines` holds one pipeline per inference slot (at least one).
    pub fn new(
        config: ServerConfig,
        store: Arc<Store>,
        pipelines: Vec<Arc<Pipeline>>,
        keys: Arc<ApiKeys>,
    ) -> Arc<AppState> {
        assert!(!pipelines.is_empty(), "at least one pipeline");
        let pipeline = pipelines[0].clone();
        let cal = pipeline.models.manifest.calibration.clone();
        Arc::new(AppState {
            slots: Arc::new(Semaphore::new(pipelines.len())),
            pool: Mutex::new(pipelines),
            config,
            store,
            pipeline,
            keys,
            metrics: metrics::Metrics::default(),
            rate: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            default_threshold: cal.as_ref().map_or(0.6, |c| c.threshold),
            calibrated_fmr: cal.and_then(|c| c.fmr),
        })
    }
}

/// An error answer: stable code, message, request id (added by the middleware). Never a trace.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<gallery::GalleryError> for ApiError {
    fn from(e: gallery::GalleryError) -> Self {
        use gallery::GalleryError as G;
        let (status, code) = match &e {
            G::UnknownGallery(_) => (StatusCode::NOT_FOUND, "unknown_gallery"),
            G::UnknownSubject(_) => (StatusCode::NOT_FOUND, "unknown_subject"),
            G::GalleryExists(_) => (StatusCode::CONFLICT, "gallery_exists"),
            G::DuplicateSubject(_) => (StatusCode::CONFLICT, "duplicate_subject"),
            G::Dimension { .. } | G::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            G::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal error (see server log)".to_string()
        } else {
            e.to_string()
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            eprintln!("internal error: {e}");
        }
        ApiError::new(status, code, message)
    }
}

fn vision_error(e: VisionError) -> ApiError {
    match e {
        VisionError::TooLarge { .. } | VisionError::TooManyBytes { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_large",
            e.to_string(),
        ),
        VisionError::Decode(_)
        | VisionError::UnsupportedFormat(_)
        | VisionError::Empty
        | VisionError::Invalid(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_image", e.to_string())
        }
        other => {
            eprintln!("inference error: {other}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error (see server log)",
            )
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The API key of a request, checked against the route's roles and the per-key rate limit.
fn authorize(st: &AppState, headers: &HeaderMap, roles: &[Role]) -> ApiResult<ApiKey> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "an API key is required (Authorization: Bearer ...)",
            )
        })?;
    let key = st
        .keys
        .authenticate(token.trim())
        .map_err(|e| {
            eprintln!("api key store: {e}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error (see server log)",
            )
        })?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "unknown or revoked API key",
            )
        })?;
    if !roles.contains(&key.role) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role '{}' may not call this route", key.role.as_str()),
        ));
    }
    // Token bucket per key: rate_per_minute tokens, refilled continuously.
    let cap = st.config.rate_per_minute.max(1) as f64;
    let mut rate = st.rate.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let (last, tokens) = rate.entry(key.id.clone()).or_insert((now, cap));
    let refill = now.duration_since(*last).as_secs_f64() * cap / 60.0;
    *tokens = (*tokens + refill).min(cap);
    *last = now;
    if *tokens < 1.0 {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests for this API key",
        ));
    }
    *tokens -= 1.0;
    Ok(key)
}

fn roles_of(method: &str, path: &str) -> &'static [Role] {
    ROUTES
        .iter()
        .find(|r| r.0 == method && r.1 == path)
        .and_then(|r| r.2)
        .unwrap_or(&[])
}

fn gallery_allowed(key: &ApiKey, gallery: &str) -> ApiResult<()> {
    if key.may_use(gallery) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this API key may not use gallery '{gallery}'"),
        ))
    }
}

fn purpose(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-purpose")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn ctx(key: &ApiKey, purpose: String) -> Context {
    Context::new(&key.id, key.role, &purpose)
}

/// Decode and find faces off the async runtime, holding one of the inference slots.
async fn faces(st: &Arc<AppState>, bytes: Bytes) -> ApiResult<(u32, u32, Vec<Face>)> {
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
        };
        // A permit guarantees a free pipeline: there are as many permits as pipelines.
        let p = st2
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| st2.pipeline.clone());
        let r = decode(&bytes, &limits)
            .and_then(|img| p.faces(&img).map(|f| (img.width(), img.height(), f)));
        st2.pool.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        r
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (see server log)",
        )
    })?
    .map_err(vision_error)?;
    st.metrics
        .faces_detected
        .fetch_add(out.2.len() as u64, Ordering::Relaxed);
    if out.2.len() > st.config.max_faces {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_faces",
            format!(
                "{} faces, the limit is {}",
                out.2.len(),
                st.config.max_faces
            ),
        ));
    }
    Ok(out)
}

fn largest(faces: Vec<Face>, what: &str) -> ApiResult<(Face, usize, usize)> {
    let n = faces.len();
    let i = (0..n)
        .max_by(|&a, &b| faces[a].rect.area().total_cmp(&faces[b].rect.area()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_face",
                format!("no face found in the {what} image"),
            )
        })?;
    let f = faces
        .into_iter()
        .nth(i)
        .ok_or_else(|| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_face", "no face"))?;
    Ok((f, i, n))
}

fn face_json(f: &Face) -> Value {
    json!({
        "box": [f.rect.left, f.rect.top, f.rect.right, f.rect.bottom],
        "score": f.score,
        "landmarks": f.landmarks.iter().map(|p| [p.x, p.y]).collect::<Vec<_>>(),
        "quality": f.quality,
    })
}

fn metric_of(p: &Pipeline) -> Metric {
    match p.metric() {
        vision::pack::Metric::Euclidean => Metric::Euclidean,
        vision::pack::Metric::Cosine => Metric::Cosine,
    }
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    if st.ready.load(Ordering::Relaxed) {
        Json(json!({"status": "ready", "pack": st.pipeline.models.manifest.name})).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "galleries are still loading",
        )
        .into_response()
    }
}

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

async fn metrics_route(State(st): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Response> {
    authorize(&st, &headers, roles_of("GET", "/metrics"))?;
    Ok((
        [("content-type", "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response())
}

/// The image of a request: the raw body, or the multipart field `image`.
async fn body_image(headers: &HeaderMap, body: Bytes) -> ApiResult<Bytes> {
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
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the request body must be an image",
        ));
    }
    Ok(body)
}

async fn detect(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    authorize(&st, &headers, roles_of("POST", "/v1/detect"))?;
    let img = body_image(&headers, body).await?;
    let (w, h, faces) = faces(&st, img).await?;
    Ok(Json(
        json!({"width": w, "height": h, "faces": faces.iter().map(face_json).collect::<Vec<_>>()}),
    ))
}

async fn multipart_fields(mut mp: Multipart) -> ApiResult<HashMap<String, Bytes>> {
    let mut out = HashMap::new();
    while let Some(f) = mp
        .next_field()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.to_string()))?
    {
        let name = f.name().unwrap_or("").to_string();
        let data = f
            .bytes()
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.to_string()))?;
        if out.insert(name.clone(), data).is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_multipart",
                format!("field '{name}' given twice"),
            ));
        }
    }
    Ok(out)
}

fn text(fields: &HashMap<String, Bytes>, name: &str) -> Option<String> {
    fields
        .get(name)
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Multipart is parsed only after the key is checked, so an anonymous caller learns nothing.
async fn multipart_after_auth(
    st: &Arc<AppState>,
    req: Request,
) -> ApiResult<HashMap<String, Bytes>> {
    use axum::extract::FromRequest;
    let mp = Multipart::from_request(req, st)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.body_text()))?;
    multipart_fields(mp).await
}

async fn verify(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Json<Value>> {
    let key = authorize(&st, &headers, roles_of("POST", "/v1/verify"))?;
    let mut fields = multipart_after_auth(&st, req).await?;
    let probe = fields.remove("probe").ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_field",
            "multipart field 'probe' is required",
        )
    })?;
    let (_, _, pf) = faces(&st, probe).await?;
    let (pface, pi, pn) = largest(pf, "probe")?;
    let metric = metric_of(&st.pipeline);
    if let Some(reference) = fields.remove("reference") {
        let (_, _, rf) = faces(&st, reference).await?;
        let (rface, ri, rn) = largest(rf, "reference")?;
        let score = compare(st.pipeline.metric(), &pface.embedding, &rface.embedding);
        let matched = is_match(st.pipeline.metric(), score, st.default_threshold);
        let c = if matched {
            &st.metrics.matches
        } else {
            &st.metrics.non_matches
        };
        c.fetch_add(1, Ordering::Relaxed);
        // Two images in, a decision out: nothing is stored; the call is audited without biometrics.
        st.store.audit_event(
            &ctx(
                &key,
                purpose(&headers).unwrap_or_else(|| "1:1 verification".into()),
            ),
            gallery::audit::AuditEvent {
                action: "verify".into(),
                outcome: if matched { "match" } else { "no-match" }.into(),
                details: json!({"score": score, "threshold": st.default_threshold}),
                ..Default::default()
            },
        )?;
        return Ok(Json(json!({
            "match": matched, "score": score, "metric": metric, "threshold": st.default_threshold, "calibrated_fmr": st.calibrated_fmr,
            "probe": {"faces_found": pn, "face_used": pi, "selection": "largest", "face": face_json(&pface)},
            "reference": {"faces_found": rn, "face_used": ri, "selection": "largest", "face": face_json(&rface)},
        })));
    }
    let (Some(g), Some(subject)) = (text(&fields, "gallery"), text(&fields, "subject")) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_field",
            "give a 'reference' image, or 'gallery' and 'subject'",
        ));
    };
    gallery_allowed(&key, &g)?;
    let p = purpose(&headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_purpose",
            "X-Purpose is required when verifying against an enrolled subject",
        )
    })?;
    let store = st.store.clone();
    let c = ctx(&key, p);
    let th = st.default_threshold;
    let r = tokio::task::spawn_blocking(move || {
        store.verify_subject(&c, &g, &subject, &pface.embedding, th)
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    })??;
    let c = if r.matched {
        &st.metrics.matches
    } else {
        &st.metrics.non_matches
    };
    c.fetch_add(1, Ordering::Relaxed);
    Ok(Json(
        json!({"match": r.matched, "score": r.score, "metric": r.metric, "threshold": r.threshold, "audit_seq": r.audit_seq,
        "probe": {"faces_found": pn, "face_used": pi, "selection": "largest"}}),
    ))
}

#[derive(Deserialize)]
struct IdentifyQuery {
    k: Option<usize>,
}

async fn identify(
    State(st): State<Arc<AppState>>,
    Path(g): Path<String>,
    Query(q): Query<IdentifyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let key = authorize(
        &st,
        &headers,
        roles_of("POST", "/v1/galleries/{gallery}/identify"),
    )?;
    gallery_allowed(&key, &g)?;
    let p = purpose(&headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_purpose",
            "X-Purpose is required for a search",
        )
    })?;
    let img = body_image(&headers, body).await?;
    let (_, _, f) = faces(&st, img).await?;
    let (face, used, found) = largest(f, "probe")?;
    let store = st.store.clone();
    let c = ctx(&key, p);
    let th = st.default_threshold;
    let r = tokio::task::spawn_blocking(move || store.identify(&c, &g, &face.embedding, q.k, th))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        })??;
    let c = if r.candidates.is_empty() {
        &st.metrics.non_matches
    } else {
        &st.metrics.matches
    };
    c.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({
        "match": !r.candidates.is_empty(), "candidates": r.candidates, "metric": r.metric, "threshold": r.threshold,
        "searched_templates": r.searched_templates, "audit_seq": r.audit_seq,
        "probe": {"faces_found": found, "face_used": used, "selection": "largest"},
    })))
}

async fn enrol(
    State(st): State<Arc<AppState>>,
    Path(g): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let key = authorize(
        &st,
        &headers,
        roles_of("POST", "/v1/galleries/{gallery}/subjects"),
    )?;
    gallery_allowed(&key, &g)?;
    let mut fields = multipart_after_auth(&st, req).await?;
    let reference = text(&fields, "reference").ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_field",
            "multipart field 'reference' is required",
        )
    })?;
    let consent = text(&fields, "consent");
    let keep = text(&fields, "keep_image").is_some_and(|v| v == "true");
    let mut images: Vec<(String, Bytes)> = fields
        .drain()
        .filter(|(k, _)| k == "image" || k.starts_with("image"))
        .collect();
    images.sort_by(|a, b| a.0.cmp(&b.0));
    if images.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_field",
            "at least one 'image' field is required",
        ));
    }
    let mut templates = Vec::new();
    for (_, img) in &images {
        let (_, _, f) = faces(&st, img.clone()).await?;
        templates.push(largest(f, "enrolment")?.0.embedding);
    }
    let store = st.store.clone();
    let c = ctx(
        &key,
        purpose(&headers).unwrap_or_else(|| "enrolment".into()),
    );
    let metric = metric_of(&st.pipeline);
    let pack = st.pipeline.models.manifest.name.clone();
    let opts = Enrolment {
        consent,
        image: keep.then(|| images[0].1.to_vec()),
        expires_ms: None,
    };
    let r = tokio::task::spawn_blocking(move || {
        store.enroll(&c, &g, &reference, &templates, metric, &pack, &opts)
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    })??;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(r).unwrap_or_default()),
    )
        .into_response())
}

async fn get_subject(
    State(st): State<Arc<AppState>>,
    Path((g, r)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let key = authorize(
        &st,
        &headers,
        roles_of("GET", "/v1/galleries/{gallery}/subjects/{reference}"),
    )?;
    gallery_allowed(&key, &g)?;
    Ok(Json(
        serde_json::to_value(st.store.subject(&g, &r)?).unwrap_or_default(),
    ))
}

#[derive(Deserialize)]
struct DeleteQuery {
    reason: Option<String>,
}

async fn delete_subject(
    State(st): State<Arc<AppState>>,
    Path((g, r)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let key = authorize(
        &st,
        &headers,
        roles_of("DELETE", "/v1/galleries/{gallery}/subjects/{reference}"),
    )?;
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
    let store = st.store.clone();
    let c = ctx(&key, purpose(&headers).unwrap_or_else(|| "erasure".into()));
    let receipt = tokio::task::spawn_blocking(move || store.delete(&c, &g, &r, &reason))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        })??;
    Ok(Json(serde_json::to_value(receipt).unwrap_or_default()))
}

async fn galleries(State(st): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let key = authorize(&st, &headers, roles_of("GET", "/v1/galleries"))?;
    let all: Vec<_> = st
        .store
        .galleries()?
        .into_iter()
        .filter(|g| key.may_use(&g.name))
        .collect();
    Ok(Json(json!({"galleries": all})))
}

async fn put_policy(
    State(st): State<Arc<AppState>>,
    Path(g): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let key = authorize(
        &st,
        &headers,
        roles_of("PUT", "/v1/galleries/{gallery}/policy"),
    )?;
    gallery_allowed(&key, &g)?;
    let p: Policy = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("policy: {e}"),
        )
    })?;
    st.store.update_policy(
        &ctx(
            &key,
            purpose(&headers).unwrap_or_else(|| "policy change".into()),
        ),
        &g,
        &p,
        None,
    )?;
    Ok(Json(
        serde_json::to_value(st.store.gallery(&g)?).unwrap_or_default(),
    ))
}

#[derive(Deserialize)]
struct AuditQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn audit_records(
    State(st): State<Arc<AppState>>,
    Query(q): Query<AuditQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let key = authorize(&st, &headers, roles_of("GET", "/v1/audit"))?;
    let from = q.from.unwrap_or(1);
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let recs: Vec<_> = st
        .store
        .audit_records()?
        .into_iter()
        .filter(|r| r.seq >= from)
        .take(limit)
        .collect();
    st.store.audit_event(
        &ctx(&key, "audit review".into()),
        gallery::audit::AuditEvent {
            action: "audit-export".into(),
            outcome: "exported".into(),
            details: json!({"from": from, "records": recs.len()}),
            ..Default::default()
        },
    )?;
    Ok(Json(json!({"records": recs})))
}

async fn audit_verify(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    authorize(&st, &headers, roles_of("POST", "/v1/audit/verify"))?;
    Ok(Json(
        serde_json::to_value(st.store.audit_verify(None, &[])?).unwrap_or_default(),
    ))
}

/// Request ids, per-route metrics, and errors that did not come from a handler (body too large,
/// bad path, timeout) turned into the same JSON shape.
async fn envelope(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = format!(
        "{:016x}",
        st.next_id.fetch_add(1, Ordering::Relaxed) ^ (now_ms() as u64) << 20
    );
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let res = next.run(req).await;
    let status = res.status();
    let mut res = if status.is_client_error() || status.is_server_error() {
        let (mut parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let mut v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            let code = match status {
                StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                StatusCode::REQUEST_TIMEOUT => "timeout",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                _ if status.is_client_error() => "bad_request",
                _ => "internal",
            };
            let msg = String::from_utf8_lossy(&bytes).trim().chars().take(300).collect::<String>();
            json!({"error": {"code": code, "message": if msg.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { msg }}})
        });
        v["error"]["request_id"] = json!(id);
        parts
            .headers
            .insert("content-type", HeaderValue::from_static("application/json"));
        parts.headers.remove("content-length");
        Response::from_parts(parts, axum::body::Body::from(v.to_string()))
    } else {
        res
    };
    if let Ok(h) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", h);
    }
    st.metrics.observe(
        &format!("{method} {route}"),
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    res
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route (see /v1/openapi.json)",
    )
}

pub fn router(st: Arc<AppState>) -> Router {
    let timeout = Duration::from_secs(st.config.request_timeout_s.max(1));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics_route))
        .route("/v1/detect", post(detect))
        .route("/v1/verify", post(verify))
        .route("/v1/galleries", get(galleries))
        .route("/v1/galleries/{gallery}/policy", put(put_policy))
        .route("/v1/galleries/{gallery}/identify", post(identify))
        .route("/v1/galleries/{gallery}/subjects", post(enrol))
        .route(
            "/v1/galleries/{gallery}/subjects/{reference}",
            get(get_subject).delete(delete_subject),
        )
        .route("/v1/audit", get(audit_records))
        .route("/v1/audit/verify", post(audit_verify))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(st.config.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(st.clone(), envelope))
        .with_state(st)
}

/// Serve until ctrl-c or SIGTERM; in-flight requests finish, then the store is dropped (closed).
/// With `tls_cert` and `tls_key` configured, every connection is TLS; without, plain HTTP, with
/// a warning when the address is reachable from other machines.
pub async fn serve(st: Arc<AppState>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let tls = match (&st.config.tls_cert, &st.config.tls_key) {
        (Some(c), Some(k)) => Some(
            tls::server_config(c, k)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        ),
        _ => None,
    };
    if tls.is_none() && !addr.ip().is_loopback() {
        eprintln!("WARNING: serving plain HTTP on {addr}, off loopback. Biometric data and API keys cross the network unencrypted: set tls_cert and tls_key, or put a TLS terminator in front.");
    }
    let preload = st.config.preload.clone();
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || {
        for g in preload {
            match st2.store.preload(&g) {
                Ok((n, bytes, locked)) => eprintln!(
                    "loaded gallery {g}: {n} templates, {:.1} MB, memory locked: {locked}",
                    bytes as f64 / 1e6
                ),
                Err(e) => eprintln!("could not load gallery {g}: {e}"),
            }
        }
        st2.ready.store(true, Ordering::Relaxed);
    });
    match tls {
        Some(cfg) => {
            axum::serve(tls::TlsListener::new(listener, cfg)?, router(st))
                .with_graceful_shutdown(shutdown_signal())
                .await
        }
        None => {
            axum::serve(listener, router(st))
                .with_graceful_shutdown(shutdown_signal())
                .await
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    eprintln!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn openapi_document_and_route_table_agree_both_ways() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                documented.insert((method.to_uppercase(), path.clone()));
                assert!(
                    op["responses"].is_object(),
                    "{method} {path} has no responses"
                );
                // Public routes say so; every other route states its roles.
                let public = op["security"].as_array().is_some_and(|s| s.is_empty());
                let route = ROUTES
                    .iter()
                    .find(|r| r.0 == method.to_uppercase() && r.1 == path);
                if let Some((_, _, roles)) = route {
                    assert_eq!(
                        public,
                        roles.is_none(),
                        "{method} {path}: security differs from the route table"
                    );
                    if let Some(roles) = roles {
                        let d = op["description"].as_str().unwrap_or("");
                        for r in roles.iter() {
                            assert!(
                                d.contains(r.as_str()),
                                "{method} {path}: role {} not documented",
                                r.as_str()
                            );
                        }
                    }
                }
            }
        }
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.0.to_string(), r.1.to_string()))
            .collect();
        assert_eq!(
            documented, routed,
            "OpenAPI paths and the router's route table differ"
        );
    }
}
