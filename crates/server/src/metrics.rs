//! Prometheus text exposition, kept by hand: a handful of counters and one histogram family do
//! not justify a metrics framework.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

const BUCKETS_S: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS_S.len()],
    count: u64,
    sum: f64,
}

/// Every label value comes from the route table or from the server's own constants, never from
/// the request (a client sending random methods or paths adds no series).
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(RouteLabel, u16), u64>>,
    latency: Mutex<BTreeMap<RouteLabel, Histogram>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    pub connections: std::sync::Arc<crate::conn::ConnStats>,
    pub faces_detected: AtomicU64,
    pub matches: AtomicU64,
    pub non_matches: AtomicU64,
    pub queue_depth: AtomicI64,
    pub rejected_overload: AtomicU64,
}

/// Method and route path, both from the route table ("other" for a method the table does not
/// list on a known path, "unmatched" for any path it does not know).
pub type RouteLabel = (&'static str, &'static str);

/// The label of a request: only values from the route table.
pub fn route_label(method: &str, matched_path: Option<&str>) -> RouteLabel {
    match matched_path {
        Some(path) => match crate::routes::find(method, path) {
            Some(r) => (r.method, r.path),
            None => (
                "other",
                crate::routes::ROUTES
                    .iter()
                    .find(|r| r.path == path)
                    .map_or("unmatched", |r| r.path),
            ),
        },
        None => ("other", "unmatched"),
    }
}

impl Metrics {
    pub fn observe(&self, route: RouteLabel, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route, status))
            .or_default() += 1;
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = l.entry(route).or_default();
        for (i, b) in BUCKETS_S.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// A refused authentication, by reason (a fixed set: unauthenticated, forbidden,
    /// rate_limited, key_store_error).
    pub fn auth_failure(&self, reason: &'static str) {
        *self
            .auth_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// A verify or identify decision.
    pub fn decision(&self, matched: bool) {
        let c = if matched {
            &self.matches
        } else {
            &self.non_matches
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP facegate_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(o, "# TYPE facegate_requests_total counter");
        for (((method, path), status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "facegate_requests_total{{route=\"{method} {path}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP facegate_request_seconds Request latency by route."
        );
        let _ = writeln!(o, "# TYPE facegate_request_seconds histogram");
        for ((method, path), h) in self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let route = format!("{method} {path}");
            for (i, b) in BUCKETS_S.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "facegate_request_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                o,
                "facegate_request_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                o,
                "facegate_request_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                o,
                "facegate_request_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        let g = |o: &mut String, name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        g(
            &mut o,
            "facegate_faces_detected_total",
            "counter",
            "Faces detected in request images.",
            self.faces_detected.load(Ordering::Relaxed).to_string(),
        );
        g(
            &mut o,
            "facegate_matches_total",
            "counter",
            "Verify/identify calls that matched.",
            self.matches.load(Ordering::Relaxed).to_string(),
        );
        g(
            &mut o,
            "facegate_non_matches_total",
            "counter",
            "Verify/identify calls that did not match.",
            self.non_matches.load(Ordering::Relaxed).to_string(),
        );
        g(
            &mut o,
            "facegate_queue_depth",
            "gauge",
            "Requests waiting for an inference slot.",
            self.queue_depth.load(Ordering::Relaxed).to_string(),
        );
        g(
            &mut o,
            "facegate_overload_rejections_total",
            "counter",
            "Requests answered 503 because every inference slot stayed busy.",
            self.rejected_overload.load(Ordering::Relaxed).to_string(),
        );
        let _ = writeln!(
            o,
            "# HELP facegate_auth_failures_total Requests refused before their body was read, by reason.\n# TYPE facegate_auth_failures_total counter"
        );
        for (reason, n) in self
            .auth_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(o, "facegate_auth_failures_total{{reason=\"{reason}\"}} {n}");
        }
        let c = &self.connections;
        g(
            &mut o,
            "facegate_connections_open",
            "gauge",
            "Client connections open now.",
            c.open.load(Ordering::Relaxed).to_string(),
        );
        g(
            &mut o,
            "facegate_connections_accepted_total",
            "counter",
            "Client connections accepted.",
            c.accepted.load(Ordering::Relaxed).to_string(),
        );
        g(
            &mut o,
            "facegate_connections_refused_total",
            "counter",
            "Client connections closed at accept because max_connections were open.",
            c.refused_at_limit.load(Ordering::Relaxed).to_string(),
        );
        o
    }
}
