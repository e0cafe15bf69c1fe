//! `facegate serve`: the vision pipeline and the gallery as a versioned JSON API.
//!
//! Layout, the way axum services are usually split: `routes` (the route table: method, path,
//! [`gallery::Action`]), `auth` (the layer that checks the key from the request head, before any
//! body byte is read), `handlers` (one module per resource), `error` (the one error shape),
//! `conn` (accept loop with connection limits and timeouts), `metrics`, `apikeys`, `tls`,
//! `config`.
//!
//! Every route but `/healthz`, `/readyz` and `/v1/openapi.json` needs `Authorization: Bearer
//! <api key>`; the key's role must be one the route's action allows. Inference runs on the
//! blocking pool behind a semaphore of `inference_slots`; a request that cannot get a slot within
//! `queue_wait_ms` gets 503 at once instead of queueing without bound. Gallery work runs on the
//! blocking pool too.

#![forbid(unsafe_code)]

pub mod apikeys;
mod auth;
mod challenge;
pub mod config;
pub mod conn;
pub mod error;
mod handlers;

/// The request-body parsers, for the fuzz targets (`fuzz/fuzz_targets/http_bodies.rs`).
pub mod bodies {
    pub use crate::handlers::galleries::parse_policy;
    pub use crate::handlers::images::multipart_fields;
}
pub mod metrics;
pub mod routes;
pub mod tls;

use apikeys::ApiKeys;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use config::ServerConfig;
pub use error::ApiError;
use gallery::Store;
use handlers::{audit, galleries, gate, images, ops};
pub use routes::ROUTES;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use vision::pipeline::Pipeline;

pub const OPENAPI: &str = include_str!("../openapi.json");

/// How often refused authentications are written to the audit log (one aggregated record).
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);

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
    rate: auth::RateLimiter,
    auth_failures: auth::AuthFailures,
    pub ready: AtomicBool,
    next_id: AtomicU64,
    default_threshold: f64,
    calibrated_fmr: Option<f64>,
    /// Head-turn challenges issued and not yet spent.
    pub(crate) challenges: challenge::Challenges,
    /// Passport chips: CSCAs, CRLs and the passive-authentication policy.
    pub(crate) chip: app::chip::ChipTrust,
}

impl AppState {
    /// `pipelines` holds one pipeline per inference slot (at least one).
    pub fn new(
        config: ServerConfig,
        store: Arc<Store>,
        pipelines: Vec<Arc<Pipeline>>,
        keys: Arc<ApiKeys>,
        chip: app::chip::ChipTrust,
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
            rate: auth::RateLimiter::default(),
            auth_failures: auth::AuthFailures::default(),
            ready: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            default_threshold: cal.as_ref().map_or(0.6, |c| c.threshold),
            calibrated_fmr: cal.and_then(|c| c.fmr),
            challenges: challenge::Challenges::default(),
            chip,
        })
    }

    /// Write the refusals counted so far to the audit log now (tests; the server does it every
    /// [`AUTH_FAILURE_WINDOW`]).
    pub async fn flush_auth_failures(self: &Arc<Self>) {
        auth::flush_refusals(self, AUTH_FAILURE_WINDOW).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Request ids, per-route metrics, and errors that did not come from a handler (body too large,
/// bad path, timeout) turned into the same JSON shape.
async fn envelope(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // Whether the handler read the request body to its end: an answer given before that (a
    // limit, a refusal) must close the connection, or a client reusing it would send its next
    // request into the rest of this body.
    let (req, body_read) = conn::track_body_end(req);
    let id = format!(
        "{:016x}",
        st.next_id.fetch_add(1, Ordering::Relaxed) ^ (now_ms() as u64) << 20
    );
    let route = metrics::route_label(
        req.method().as_str(),
        req.extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str()),
    );
    // Every log line of this request carries its id and route.
    let span =
        tracing::info_span!("request", id = %id, route = %format_args!("{} {}", route.0, route.1));
    let res = tracing::Instrument::instrument(next.run(req), span.clone()).await;
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
    if !body_read.load(Ordering::Relaxed) {
        res.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    st.metrics.observe(route, status.as_u16(), seconds);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            ms = format_args!("{:.1}", seconds * 1e3),
            "answered"
        )
    });
    res
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route (see /v1/openapi.json)",
    )
}

/// The router: every route of [`ROUTES`], the authentication layer on the routed endpoints, then
/// body limit, request timeout and the envelope around everything.
pub fn router(st: Arc<AppState>) -> Router {
    let timeout = Duration::from_secs(st.config.request_timeout_s.max(1));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/v1/openapi.json", get(ops::openapi))
        .route("/metrics", get(ops::metrics))
        .route("/v1/detect", post(images::detect))
        .route("/v1/verify", post(images::verify))
        .route("/v1/gate/challenge", post(gate::challenge))
        .route("/v1/gate/session", post(gate::session))
        .route("/v1/galleries", get(galleries::list))
        .route("/v1/galleries/{gallery}/policy", put(galleries::put_policy))
        .route(
            "/v1/galleries/{gallery}/identify",
            post(galleries::identify),
        )
        .route("/v1/galleries/{gallery}/subjects", post(galleries::enrol))
        .route(
            "/v1/galleries/{gallery}/subjects/{reference}",
            get(galleries::get_subject).delete(galleries::delete_subject),
        )
        .route("/v1/audit", get(audit::records))
        .route("/v1/audit/verify", post(audit::verify))
        .route_layer(axum::middleware::from_fn_with_state(
            st.clone(),
            auth::authenticate,
        ))
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
        tracing::warn!(%addr, "serving plain HTTP off loopback: biometric data and API keys cross the network unencrypted; set tls_cert and tls_key, or put a TLS terminator in front");
    }
    let preload = st.config.preload.clone();
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || {
        for g in preload {
            match st2.store.preload(&g) {
                Ok((n, bytes, locked)) => tracing::info!(
                    gallery = %g,
                    templates = n,
                    mb = format_args!("{:.1}", bytes as f64 / 1e6),
                    memory_locked = locked,
                    "gallery loaded"
                ),
                Err(e) => tracing::error!(gallery = %g, error = %e, "could not load gallery"),
            }
        }
        st2.ready.store(true, Ordering::Relaxed);
    });
    // Other nodes' changes are applied as they commit (PostgreSQL's change feed), not by the
    // first search after them; without a feed (SQLite) the thread ends at once.
    let stop_following = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let (st, stop) = (st.clone(), stop_following.clone());
        std::thread::Builder::new()
            .name("facegate-changes".into())
            .spawn(move || {
                // The feed is reopened every second while PostgreSQL is out of reach: one
                // warning a minute says so, with how many attempts failed meanwhile.
                let mut throttle = Throttle::new(FEED_WARNING_EVERY);
                st.store
                    .follow_notices(&stop, Duration::from_secs(1), &mut |e| {
                        if let Some(failures_not_logged) = throttle.admit(Instant::now()) {
                            tracing::warn!(error = %e, failures_not_logged, "change feed: following other nodes' changes at the next search until it is back")
                        }
                    })
            })?
    };
    let refusals = tokio::spawn(auth::audit_refusals(st.clone(), AUTH_FAILURE_WINDOW));
    let c = &st.config;
    let limits = conn::ConnLimits {
        max_connections: c.max_connections,
        header_timeout: Duration::from_secs(c.header_timeout_s),
        max_header_bytes: c.max_header_bytes,
        linger: Duration::from_secs(c.linger_s),
        linger_bytes: c.max_body_bytes as u64,
    };
    let stats = st.metrics.connections.clone();
    let app = router(st.clone());
    match tls {
        Some(cfg) => {
            let listener = tls::TlsListener::new(listener, cfg)?;
            conn::serve(listener, app, limits, stats, shutdown_signal()).await
        }
        None => conn::serve(listener, app, limits, stats, shutdown_signal()).await,
    }
    refusals.abort();
    stop_following.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || follower.join()).await;
    // What was refused since the last record still reaches the log.
    st.flush_auth_failures().await;
    Ok(())
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
    tracing::info!("shutting down: finishing in-flight requests");
}

/// How often the change feed's failure to reopen is logged while it lasts.
const FEED_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Lets one message through per `every`, counting the ones held back in between.
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)`: say it now, `n` having been held back since the last one said; `None`: hold
    /// it back.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_throttle_says_the_first_then_one_per_interval_with_the_count_held_back() {
        let mut t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.admit(at(0)), Some(0));
        for s in 1..60 {
            assert_eq!(t.admit(at(s)), None);
        }
        assert_eq!(t.admit(at(60)), Some(59));
        assert_eq!(t.admit(at(61)), None);
        assert_eq!(t.admit(at(200)), Some(1));
    }

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
                if let Some(route) = routes::find(&method.to_uppercase(), path) {
                    assert_eq!(
                        public,
                        route.action.is_none(),
                        "{method} {path}: security differs from the route table"
                    );
                    if let Some(action) = route.action {
                        let d = op["description"].as_str().unwrap_or("");
                        for r in action.roles() {
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
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(
            documented, routed,
            "OpenAPI paths and the router's route table differ"
        );
    }

    #[test]
    fn metric_labels_come_from_the_route_table_only() {
        assert_eq!(
            metrics::route_label("POST", Some("/v1/detect")),
            ("POST", "/v1/detect")
        );
        assert_eq!(
            metrics::route_label("BREW", Some("/v1/detect")),
            ("other", "/v1/detect")
        );
        assert_eq!(
            metrics::route_label("GET", Some("/not/in/the/table")),
            ("other", "unmatched")
        );
        assert_eq!(
            metrics::route_label("X-RANDOM-123", None),
            ("other", "unmatched")
        );
    }
}
