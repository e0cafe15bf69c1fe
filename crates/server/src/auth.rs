//! The authentication layer: every keyed route is checked here, from the request head alone,
//! before any handler runs and so before one byte of the body is read. An anonymous or refused
//! caller costs a header parse and one key lookup in memory (a node reads the keys from the
//! store at most once a second, `apikeys::FRESH_FOR`). Refusals are counted and, aggregated per
//! minute, written to the audit log so an auditor sees a brute-force attempt.

use crate::apikeys::{ApiKey, KeyError, KeySnapshot};
use crate::error::{ApiError, ApiResult};
use crate::routes;
use crate::AppState;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gallery::Action;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Route layer: finds the route's action in the table, checks the key, passes the key on to the
/// handler as a request extension. A routed path missing from the table is refused (fail closed).
pub(crate) async fn authenticate(
    State(st): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(path) = req.extensions().get::<MatchedPath>().map(|m| m.as_str()) else {
        return next.run(req).await;
    };
    let route = match routes::find(req.method().as_str(), path) {
        Some(r) => r,
        // Another method on a known path: the router answers 405, no handler runs.
        None if routes::known_path(path) => return next.run(req).await,
        None => {
            tracing::error!(route = path, "routed but not in the route table: refused");
            return ApiError::internal().into_response();
        }
    };
    let Some(action) = route.action else {
        return next.run(req).await;
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    // The keys as read at most a second ago; reading them again blocks on the store, which
    // must not happen on an async thread. A request without a key is refused without them.
    let keys = match st.keys.in_memory() {
        Some(k) => Ok(k),
        None if !req.headers().contains_key(header::AUTHORIZATION) => Err(KeyError::Invalid(
            "no key given: the keys were not read".into(),
        )),
        None => {
            let st = st.clone();
            tokio::task::spawn_blocking(move || st.keys.snapshot())
                .await
                .unwrap_or_else(|e| Err(KeyError::Invalid(format!("reading the API keys: {e}"))))
        }
    };
    match check(&st, req.headers(), action, keys) {
        Ok(key) => {
            req.extensions_mut().insert(key);
            next.run(req).await
        }
        Err((e, refused)) => {
            st.metrics.auth_failure(refused.reason);
            st.auth_failures.note(refused, peer);
            let mut res = e.into_response();
            // The body was never read: tell the client this connection ends with the answer.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            res
        }
    }
}

/// Why a request was refused, for the aggregated audit record.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub reason: &'static str,
    /// The key, when it authenticated but may not take the action.
    pub key_id: Option<String>,
}

fn check(
    st: &AppState,
    headers: &HeaderMap,
    action: Action,
    keys: Result<KeySnapshot, KeyError>,
) -> Result<ApiKey, (ApiError, Refusal)> {
    let unauthenticated = |msg: &str| {
        (
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", msg),
            Refusal {
                reason: "unauthenticated",
                key_id: None,
            },
        )
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthenticated("an API key is required (Authorization: Bearer ...)"))?;
    let key = match keys.and_then(|k| k.authenticate(token.trim())) {
        Ok(Some(k)) => k,
        Ok(None) => return Err(unauthenticated("unknown or revoked API key")),
        Err(e) => {
            // The store failing over is a 503 with retry advice, as for any request.
            let answer = match e {
                KeyError::Store(g @ gallery::GalleryError::Unavailable(_)) => ApiError::from(g),
                other => {
                    tracing::error!(error = %other, "api key store");
                    ApiError::internal()
                }
            };
            return Err((
                answer,
                Refusal {
                    reason: "key_store_error",
                    key_id: None,
                },
            ));
        }
    };
    if let Err(e) = action.check(key.role) {
        return Err((
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
            Refusal {
                reason: "forbidden",
                key_id: Some(key.id),
            },
        ));
    }
    if !st.rate.take(&key.id, st.config.rate_per_minute) {
        return Err((
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this API key",
            ),
            Refusal {
                reason: "rate_limited",
                key_id: None,
            },
        ));
    }
    Ok(key)
}

/// Whether `key` may use `gallery` (keys can be restricted to some galleries).
pub(crate) fn gallery_allowed(key: &ApiKey, gallery: &str) -> ApiResult<()> {
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

/// Token bucket per key: `rate_per_minute` tokens, refilled continuously. Only keys that
/// authenticated get a bucket, so the map grows with the number of real keys, not with callers.
#[derive(Default)]
pub(crate) struct RateLimiter(std::sync::Mutex<std::collections::HashMap<String, (Instant, f64)>>);

impl RateLimiter {
    pub(crate) fn take(&self, key_id: &str, rate_per_minute: u32) -> bool {
        let cap = rate_per_minute.max(1) as f64;
        let mut rate = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (last, tokens) = rate.entry(key_id.to_string()).or_insert((now, cap));
        let refill = now.duration_since(*last).as_secs_f64() * cap / 60.0;
        *tokens = (*tokens + refill).min(cap);
        *last = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }
}

/// Most distinct peers and keys named in one aggregated record; the rest are counted together.
const MAX_NAMED: usize = 32;

/// Refusals since the last audit record: counts by reason, by peer address and by key id, each
/// bounded (a flood from many addresses costs one counter, not one entry per address).
#[derive(Default)]
pub(crate) struct AuthFailures(std::sync::Mutex<FailureWindow>);

#[derive(Default)]
struct FailureWindow {
    by_reason: BTreeMap<&'static str, u64>,
    by_peer: BTreeMap<IpAddr, u64>,
    other_peers: u64,
    by_key: BTreeMap<String, u64>,
    other_keys: u64,
}

fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, other: &mut u64, k: K) {
    if let Some(n) = map.get_mut(&k) {
        *n += 1;
    } else if map.len() < MAX_NAMED {
        map.insert(k, 1);
    } else {
        *other += 1;
    }
}

impl AuthFailures {
    fn note(&self, r: Refusal, peer: Option<IpAddr>) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut *guard;
        *w.by_reason.entry(r.reason).or_default() += 1;
        if let Some(ip) = peer {
            bump(&mut w.by_peer, &mut w.other_peers, ip);
        }
        if let Some(id) = r.key_id {
            bump(&mut w.by_key, &mut w.other_keys, id);
        }
    }

    /// The window's counts as audit details, emptying it; `None` when nothing was refused.
    pub(crate) fn take(&self) -> Option<serde_json::Value> {
        let w = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        if w.by_reason.is_empty() {
            return None;
        }
        Some(serde_json::json!({
            "refused": w.by_reason,
            "peers": w.by_peer.iter().map(|(ip, n)| (ip.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "other_peers": w.other_peers,
            "forbidden_keys": w.by_key,
            "other_keys": w.other_keys,
        }))
    }
}

/// Every `every`, writes the refusals of the past window as one audit record (`auth-failure`).
pub(crate) async fn audit_refusals(st: Arc<AppState>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        flush_refusals(&st, every).await;
    }
}

pub(crate) async fn flush_refusals(st: &Arc<AppState>, window: std::time::Duration) {
    let Some(details) = st.auth_failures.take() else {
        return;
    };
    let store = st.store.clone();
    let secs = window.as_secs();
    let written = tokio::task::spawn_blocking(move || {
        store.audit_system_event(
            "access control",
            gallery::audit::AuditEvent {
                action: "auth-failure".into(),
                outcome: "refused".into(),
                details: serde_json::json!({"window_s": secs, "counts": details}),
                ..Default::default()
            },
        )
    })
    .await;
    if !matches!(written, Ok(Ok(_))) {
        tracing::error!("could not write the aggregated auth-failure audit record");
    }
}
