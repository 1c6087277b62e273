//! Request, latency and Redis error counters in the Prometheus text format.
//! Hand-written: three metric families do not earn a metrics framework and its dependencies.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::rejections::REJECTED;
use crate::store::{StoreError, Trouble};

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The routes the app serves; anything else is counted as `other` so random paths
/// (scanners, fuzzers) cannot grow the label set without bound.
pub const ROUTES: [&str; 5] = ["/", "/api", "/healthz", "/readyz", "/metrics"];

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    redis_errors: Mutex<BTreeMap<&'static str, u64>>,
    pipelined_after_close: AtomicU64,
}

impl Metrics {
    pub fn observe_request(&self, path: &str, status: u16, latency: Duration) {
        let route = ROUTES
            .iter()
            .find(|r| **r == path)
            .copied()
            .unwrap_or("other");
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route, status))
            .or_default() += 1;
        let secs = latency.as_secs_f64();
        // Buckets are kept per bound, not cumulative; `render` sums them.
        if let Some(i) = BUCKETS.iter().position(|le| secs <= *le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Relaxed);
    }

    pub fn observe_redis_error(&self, error: &StoreError) {
        *self
            .redis_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(error.trouble.label())
            .or_default() += 1;
    }

    pub fn observe_pipelined_after_close(&self) {
        self.pipelined_after_close.fetch_add(1, Relaxed);
    }

    pub fn render(&self, version: &str) -> String {
        let mut out = String::with_capacity(2048);
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP http_requests_total HTTP requests answered, by route and status.\n");
        out.push_str("# TYPE http_requests_total counter\n");
        for ((route, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        drop(requests);

        out.push_str("# HELP http_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (le, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.latency_count.load(Relaxed);
        let sum = self.latency_sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             http_request_duration_seconds_sum {sum}\n\
             http_request_duration_seconds_count {count}"
        );

        out.push_str("# HELP redis_errors_total Redis calls that failed, by kind.\n");
        out.push_str("# TYPE redis_errors_total counter\n");
        let errors = self.redis_errors.lock().unwrap_or_else(|e| e.into_inner());
        // Every kind is listed, at 0 until it happens, so rates work from the start.
        for kind in Trouble::ALL.map(Trouble::label) {
            let n = errors.get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "redis_errors_total{{kind=\"{kind}\"}} {n}");
        }
        drop(errors);

        out.push_str(
            "# HELP http_requests_rejected_total Requests the HTTP parser answered itself, \
             by status (none: a connection error).\n",
        );
        out.push_str("# TYPE http_requests_rejected_total counter\n");
        for (status, n) in REJECTED.snapshot() {
            let _ = writeln!(
                out,
                "http_requests_rejected_total{{status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP http_requests_dropped_total Requests pipelined after a Connection: close \
             answer, not served.\n",
        );
        out.push_str("# TYPE http_requests_dropped_total counter\n");
        let _ = writeln!(
            out,
            "http_requests_dropped_total {}",
            self.pipelined_after_close.load(Relaxed)
        );

        out.push_str("# HELP web_fe_build_info Version of the running web-fe.\n");
        out.push_str("# TYPE web_fe_build_info gauge\n");
        let _ = writeln!(out, "web_fe_build_info{{version=\"{version}\"}} 1");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label_and_the_histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_request("/api", 200, Duration::from_micros(300));
        m.observe_request("/api", 200, Duration::from_millis(3));
        m.observe_request("/wp-login.php", 404, Duration::from_secs(9));
        m.observe_redis_error(&StoreError::timed_out(
            "redis:6379",
            Duration::from_millis(500),
        ));
        let text = m.render("1.2.3");
        assert!(text.contains("http_requests_total{route=\"/api\",status=\"200\"} 2\n"));
        assert!(text.contains("http_requests_total{route=\"other\",status=\"404\"} 1\n"));
        assert!(!text.contains("wp-login"));
        assert!(text.contains("http_request_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("http_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("http_request_duration_seconds_bucket{le=\"2.5\"} 2\n"));
        assert!(text.contains("http_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("redis_errors_total{kind=\"timeout\"} 1\n"));
        assert!(text.contains("web_fe_build_info{version=\"1.2.3\"} 1\n"));
    }
}
