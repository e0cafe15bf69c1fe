//! API-level tests: the router driven in-process with `tower::ServiceExt::oneshot` (no socket),
//! next to the end-to-end tests in `crates/cli/tests/server_api.rs`. Needs the dlib pack
//! installed under `$FACEGATE_HOME` (`facegate models fetch`): skipped with a message when it is
//! not, a failure in CI.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

use axum::body::Body;
use axum::http::{Request, StatusCode};
use gallery::crypto::{self, LocalKeyRing};
use gallery::{store, Context, Role, Store};
use server::apikeys::ApiKeys;
use server::config::ServerConfig;
use server::{AppState, ROUTES};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tower::ServiceExt;

#[path = "../../gallery/tests/common/pg.rs"]
#[allow(dead_code)] // the gallery tests use the rest
mod pg;
use vision::models::{DetectorChoice, Models};
use vision::pipeline::Pipeline;

fn home() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("FACEGATE_HOME")?);
    home.join("packs/dlib/manifest.json")
        .exists()
        .then_some(home)
}

fn state(data: &std::path::Path) -> Option<Arc<AppState>> {
    state_with(data, ServerConfig::default())
}

fn state_with(data: &std::path::Path, config: ServerConfig) -> Option<Arc<AppState>> {
    let store = Store::open(
        data,
        Box::new(LocalKeyRing::new(crypto::random_key().expect("key"))),
        store::system_clock(),
    )
    .expect("store");
    state_on(data, store, config)
}

fn state_on(data: &std::path::Path, store: Store, config: ServerConfig) -> Option<Arc<AppState>> {
    let Some(home) = home() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the dlib pack must be installed under FACEGATE_HOME in CI"
        );
        eprintln!("skipped: no dlib pack under FACEGATE_HOME (run `facegate models fetch`)");
        return None;
    };
    let rt = vision::pack::installed_runtime(&home).expect("ONNX Runtime installed");
    vision::runtime::ensure_runtime(Some(&rt)).expect("runtime loads");
    let models = Models::load_with(&home.join("packs/dlib"), 1, DetectorChoice::Hog)
        .expect("dlib pack loads");
    let store = Arc::new(store);
    let (keys, _) = ApiKeys::open(store.clone(), data).expect("api keys");
    let chip = config.chip_trust().expect("chip trust");
    Some(AppState::new(
        config,
        store,
        vec![Arc::new(Pipeline::new(models))],
        Arc::new(keys),
        chip,
    ))
}

/// A body that records whether anyone read it.
fn watched_body(read: Arc<AtomicBool>) -> Body {
    let chunk = std::iter::once(()).map(move |()| {
        read.store(true, Ordering::SeqCst);
        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(&[0u8; 1024]))
    });
    Body::from_stream(futures_util::stream::iter(chunk))
}

fn concrete(path: &str) -> String {
    path.replace("{gallery}", "g1")
        .replace("{reference}", "P123")
}

#[tokio::test]
async fn every_keyed_route_refuses_without_a_key_before_reading_the_body() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(st) = state(dir.path()) else { return };
    let app = server::router(st.clone());
    for r in ROUTES {
        let read = Arc::new(AtomicBool::new(false));
        let req = Request::builder()
            .method(r.method)
            .uri(concrete(r.path))
            .header("content-type", "image/jpeg")
            .body(watched_body(read.clone()))
            .expect("request");
        let res = app.clone().oneshot(req).await.expect("response");
        if r.action.is_some() {
            assert_eq!(
                res.status(),
                StatusCode::UNAUTHORIZED,
                "{} {}",
                r.method,
                r.path
            );
            assert!(
                !read.load(Ordering::SeqCst),
                "{} {}: body read before the key was checked",
                r.method,
                r.path
            );
            assert_eq!(
                res.headers().get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..])
            );
        } else {
            assert_ne!(res.status(), StatusCode::NOT_FOUND, "{}", r.path);
        }
    }
}

#[tokio::test]
async fn each_role_reaches_exactly_the_routes_its_actions_allow() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(st) = state(dir.path()) else { return };
    let app = server::router(st.clone());
    let roles = [
        Role::Gate,
        Role::Enroller,
        Role::Operator,
        Role::Auditor,
        Role::Admin,
    ];
    for role in roles {
        let (token, _) = st.keys.create(&admin_ctx(), role, None, 0).expect("key");
        for r in ROUTES.iter().filter(|r| r.action.is_some()) {
            let req = Request::builder()
                .method(r.method)
                .uri(concrete(r.path))
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request");
            let status = app.clone().oneshot(req).await.expect("response").status();
            let allowed = r.action.is_some_and(|a| a.allows(role));
            assert_eq!(
                status == StatusCode::FORBIDDEN,
                !allowed,
                "{} {} as {}: {status}",
                r.method,
                r.path,
                role.as_str()
            );
        }
    }
}

#[tokio::test]
async fn refusals_are_counted_and_audited_in_one_aggregated_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(st) = state(dir.path()) else { return };
    let app = server::router(st.clone());
    for i in 0..25 {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/detect")
            .header("authorization", format!("Bearer fg_guess_{i}"))
            .body(Body::empty())
            .expect("request");
        let res = app.clone().oneshot(req).await.expect("response");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let (gate, _) = st
        .keys
        .create(&admin_ctx(), Role::Gate, None, 0)
        .expect("key");
    let req = Request::builder()
        .uri("/v1/audit")
        .header("authorization", format!("Bearer {gate}"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(
        app.clone().oneshot(req).await.expect("response").status(),
        StatusCode::FORBIDDEN
    );
    st.flush_auth_failures().await;
    let records = st.store.audit_records().expect("records");
    let agg: Vec<_> = records
        .iter()
        .filter(|r| r.action == "auth-failure")
        .collect();
    assert_eq!(agg.len(), 1, "one aggregated record");
    let counts = &agg[0].details["counts"];
    assert_eq!(counts["refused"]["unauthenticated"], 25);
    assert_eq!(counts["refused"]["forbidden"], 1);
    assert_eq!(agg[0].actor, "facegate");
    // Nothing new: no record.
    st.flush_auth_failures().await;
    assert_eq!(
        st.store
            .audit_records()
            .expect("records")
            .iter()
            .filter(|r| r.action == "auth-failure")
            .count(),
        1
    );
    let metrics = st.metrics.render();
    assert!(metrics.contains("facegate_auth_failures_total{reason=\"unauthenticated\"} 25"));
}

#[tokio::test]
async fn random_methods_and_paths_add_no_metric_series() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(st) = state(dir.path()) else { return };
    let app = server::router(st.clone());
    let series = |st: &AppState| {
        st.metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("facegate_requests_total"))
            .count()
    };
    let mut seen = Vec::new();
    for i in 0..200 {
        let req = Request::builder()
            .method(format!("M{i}X").as_str())
            .uri(if i % 2 == 0 {
                "/healthz".to_string()
            } else {
                format!("/nowhere/{i}")
            })
            .body(Body::empty())
            .expect("request");
        let _ = app.clone().oneshot(req).await.expect("response");
        seen.push(series(&st));
    }
    assert!(
        seen[199] <= 4,
        "series grew with the requests: {}",
        seen[199]
    );
    assert_eq!(seen[50], seen[199]);
}

/// An answer given before the request body was read to its end closes the connection (a client
/// reusing it would send its next request into the rest of the body); an answer after the body
/// was read keeps it open.
#[tokio::test]
async fn unread_bodies_close_the_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ServerConfig {
        max_body_bytes: 1000,
        ..ServerConfig::default()
    };
    let Some(st) = state_with(dir.path(), config) else {
        return;
    };
    let app = server::router(st.clone());
    let (gate, _) = st
        .keys
        .create(&admin_ctx(), Role::Gate, None, 0)
        .expect("key");
    let send = |body: Body| {
        Request::builder()
            .method("POST")
            .uri("/v1/detect")
            .header("authorization", format!("Bearer {gate}"))
            .header("content-type", "image/jpeg")
            .body(body)
            .expect("request")
    };
    // Five 1000-byte chunks, as a socket delivers them: the limit stops reading at the second.
    let chunks = (0..5).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![0u8; 1000])));
    let res = app
        .clone()
        .oneshot(send(Body::from_stream(futures_util::stream::iter(chunks))))
        .await
        .expect("response");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        res.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let res = app
        .clone()
        .oneshot(send(Body::from(b"not an image".to_vec())))
        .await
        .expect("response");
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.headers().get("connection"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_is_a_503_with_retry_advice_and_passes_by_itself() {
    let Some(pg) = pg::PgCluster::start() else {
        return;
    };
    let (store_url, keys_url) = tokio::task::block_in_place(|| pg.store_urls("srv"));
    let dir = tempfile::tempdir().expect("temp dir");
    // The store is synchronous (its PostgreSQL client blocks on a runtime of its own): it is
    // built, like every store call of the server, off the async threads.
    let st = tokio::task::block_in_place(|| {
        let store = Store::with_backend(
            dir.path(),
            Box::new(
                gallery::store::backend::postgres::PgBackend::open(&store_url, &keys_url).unwrap(),
            ),
            Box::new(LocalKeyRing::new(crypto::random_key().expect("key"))),
            store::system_clock(),
        )
        .expect("store on PostgreSQL");
        state_on(dir.path(), store, ServerConfig::default())
    });
    let Some(st) = st else { return };
    let app = server::router(st.clone());
    let (admin, _) = tokio::task::block_in_place(|| {
        st.keys
            .create(&admin_ctx(), Role::Admin, None, 0)
            .expect("key")
    });
    let list = || {
        Request::builder()
            .uri("/v1/galleries")
            .header("authorization", format!("Bearer {admin}"))
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(
        app.clone().oneshot(list()).await.unwrap().status(),
        StatusCode::OK
    );
    // The database goes away (a crash, a failover in progress).
    tokio::task::block_in_place(|| pg.stop_immediate());
    let res = app.clone().oneshot(list()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
    // Once the node's copy of the API keys is stale, the key lookup itself needs the database:
    // the same 503, not an internal error.
    tokio::time::sleep(server::apikeys::FRESH_FOR + std::time::Duration::from_millis(100)).await;
    let res = app.clone().oneshot(list()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
    // It comes back: the pool replaces its dead connections, no restart of facegate.
    tokio::task::block_in_place(|| pg.start_server());
    assert_eq!(
        app.clone().oneshot(list()).await.unwrap().status(),
        StatusCode::OK
    );
}

/// Who creates the tests' keys (key administration is an admin's).
fn admin_ctx() -> Context {
    Context::new("test", Role::Admin, "test keys")
}
