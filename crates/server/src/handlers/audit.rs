//! The audit log over HTTP: paged records (read in SQL, page by page), verification.

use super::{blocking, ctx};
use crate::apikeys::ApiKey;
use crate::error::ApiResult;
use crate::AppState;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Most records one call returns.
pub const MAX_PAGE: usize = 10_000;

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

pub(crate) async fn records(
    State(st): State<Arc<AppState>>,
    Extension(key): Extension<ApiKey>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    // What the OpenAPI document allows, refused otherwise (not silently clamped).
    let from = q.from.unwrap_or(1);
    let limit = q.limit.unwrap_or(1000);
    if from == 0 || !(1..=MAX_PAGE).contains(&limit) {
        return Err(crate::error::ApiError::bad_request(
            "bad_query",
            format!("from must be >= 1 and limit 1..={MAX_PAGE}"),
        ));
    }
    let c = ctx(&key, "audit review".into());
    let recs = blocking(&st, move |store| {
        let recs = store.audit_records_page(from, limit)?;
        store.audit_event(
            &c,
            gallery::audit::AuditEvent {
                action: "audit-export".into(),
                outcome: "exported".into(),
                details: json!({"from": from, "records": recs.len()}),
                ..Default::default()
            },
        )?;
        Ok(recs)
    })
    .await?;
    Ok(Json(json!({"records": recs})))
}

pub(crate) async fn verify(State(st): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let report = blocking(&st, |store| store.audit_verify(None, &[])).await?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}
