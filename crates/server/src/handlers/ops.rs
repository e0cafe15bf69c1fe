//! Liveness, readiness, the OpenAPI document, metrics.

use crate::{AppState, OPENAPI};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::ApiError;

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) async fn readyz(State(st): State<Arc<AppState>>) -> Response {
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

pub(crate) async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

pub(crate) async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut body = st.metrics.render();
    // How this node keeps its indexes current: changes followed (its own writes, other nodes'
    // through the change feed or the check before a search) versus whole galleries loaded.
    let (reloads, followed) = st.store.load_stats();
    body.push_str(&format!(
        "# HELP facegate_gallery_loads_total Galleries loaded whole into a search index (at start, after a change that cannot be followed).\n\
         # TYPE facegate_gallery_loads_total counter\nfacegate_gallery_loads_total {reloads}\n\
         # HELP facegate_gallery_changes_followed_total Enrolments and erasures applied to loaded indexes without a reload.\n\
         # TYPE facegate_gallery_changes_followed_total counter\nfacegate_gallery_changes_followed_total {followed}\n"
    ));
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}
