//! Request handlers, one module per resource. A handler parses the request, calls the vision
//! pipeline or the gallery service off the async workers, and serialises the answer; the key was
//! checked before it runs (`auth`), and arrives as an `Extension<ApiKey>`.

pub(crate) mod audit;
pub(crate) mod camera_stream;
pub(crate) mod chip;
pub(crate) mod galleries;
pub(crate) mod gate;
pub(crate) mod images;
pub(crate) mod ops;

use crate::apikeys::ApiKey;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::http::HeaderMap;
use gallery::{Context, GalleryError, Store};
use std::sync::Arc;

/// The caller's `X-Purpose`, trimmed; refused when longer than the audit log keeps.
pub(crate) fn purpose(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("x-purpose") else {
        return Ok(None);
    };
    let p = v
        .to_str()
        .map_err(|_| ApiError::bad_request("bad_purpose", "X-Purpose must be visible ASCII"))?
        .trim();
    if p.chars().count() > Context::MAX_TEXT {
        return Err(ApiError::bad_request(
            "bad_purpose",
            format!("X-Purpose is longer than {} characters", Context::MAX_TEXT),
        ));
    }
    Ok((!p.is_empty()).then(|| p.to_string()))
}

/// The purpose a search must state.
pub(crate) fn required_purpose(headers: &HeaderMap, what: &str) -> ApiResult<String> {
    purpose(headers)?.ok_or_else(|| {
        ApiError::bad_request("missing_purpose", format!("X-Purpose is required {what}"))
    })
}

pub(crate) fn ctx(key: &ApiKey, purpose: String) -> Context {
    Context::new(&key.id, key.role, &purpose)
}

/// Gallery work on the blocking pool: SQLite with FULL sync and decryption must not hold an
/// async worker.
pub(crate) async fn blocking<T: Send + 'static>(
    st: &Arc<AppState>,
    work: impl FnOnce(&Store) -> Result<T, GalleryError> + Send + 'static,
) -> ApiResult<T> {
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
}
