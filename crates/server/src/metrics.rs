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

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    pub faces_detected: AtomicU64,
    pub matches: AtomicU64,
    pub non_matches: AtomicU64,
    pub queue_depth: AtomicI64,
    pub rejected_overload: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route.to_string(), status))
            .or_default() += 1;
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = l.entry(route.to_string()).or_default();
        for (i, b) in BUCKETS_S.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP facegate_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(o, "# TYPE facegate_requests_total counter");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "facegate_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP facegate_request_seconds Request latency by route."
        );
        let _ = writeln!(o, "# TYPE facegate_request_seconds histogram");
        for (route, h) in self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
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
        o
    }
}
