//! What `/metrics` reports, kept with the `prometheus` crate: requests and latency per
//! route, Redis errors by kind, requests refused before routing, and the standard process
//! metrics (memory, CPU, open descriptors, start time).

use std::time::Duration;

use actix_web::http::StatusCode;
use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::rejections::REJECTED;
use crate::store::{StoreError, Trouble};

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The route label of a request no route matched: scanners and fuzzers cannot grow the
/// label set, since every other label is a route's own pattern.
pub const NO_ROUTE: &str = "other";

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    in_flight: IntGauge,
    latency: HistogramVec,
    redis_errors: IntCounterVec,
    dropped: IntCounter,
    board_streams: IntGauge,
    batch_sizes: Histogram,
}

/// Upper bounds of the batch size histogram, in views.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

impl Metrics {
    pub fn new(version: &str) -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route and status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "http_requests_in_flight",
            "Requests being served now, this scrape of /metrics among them.",
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer a request, by route.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let redis_errors = IntCounterVec::new(
            Opts::new("redis_errors_total", "Redis calls that failed, by kind."),
            &["kind"],
        )
        .expect("valid metric");
        // Every kind is listed, at 0 until it happens, so rates work from the start.
        for trouble in Trouble::ALL {
            redis_errors.with_label_values(&[trouble.label()]);
        }
        let dropped = IntCounter::new(
            "http_requests_dropped_total",
            "Requests pipelined after a Connection: close answer, not served.",
        )
        .expect("valid metric");
        let board_streams = IntGauge::new(
            "web_fe_board_streams",
            "Board streams (/api/board/stream) open now; refused ones are 503s of that route.",
        )
        .expect("valid metric");
        let batch_sizes = Histogram::with_opts(
            HistogramOpts::new(
                "redis_visit_batch_size",
                "Views counted by one call to Redis: those that arrived while the last was in flight.",
            )
            .buckets(BATCH_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let build = IntGaugeVec::new(
            Opts::new("web_fe_build_info", "Version of the running web-fe."),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[version]).set(1);
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(in_flight.clone()),
            Box::new(latency.clone()),
            Box::new(redis_errors.clone()),
            Box::new(dropped.clone()),
            Box::new(board_streams.clone()),
            Box::new(batch_sizes.clone()),
            Box::new(build),
            Box::new(REJECTED.counter().clone()),
            Box::new(ProcessCollector::for_self()),
        ] {
            registry
                .register(collector)
                .expect("each metric is registered once");
        }
        Self {
            registry,
            requests,
            in_flight,
            latency,
            redis_errors,
            dropped,
            board_streams,
            batch_sizes,
        }
    }

    /// Where each worker's store observes its batches.
    pub fn batch_sizes(&self) -> Histogram {
        self.batch_sizes.clone()
    }

    /// Counts a request in `http_requests_in_flight` until the guard is dropped, which
    /// also happens when its client leaves early.
    pub fn request_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// `route` is the pattern the router matched, or [`NO_ROUTE`].
    pub fn observe_request(&self, route: &str, status: StatusCode, latency: Duration) {
        self.requests
            .with_label_values(&[route, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(latency.as_secs_f64());
    }

    pub fn observe_redis_error(&self, error: &StoreError) {
        self.redis_errors
            .with_label_values(&[error.trouble.label()])
            .inc();
    }

    pub fn observe_pipelined_after_close(&self) {
        self.dropped.inc();
    }

    pub fn board_streams_opened(&self) {
        self.board_streams.inc();
    }

    pub fn board_stream_closed(&self) {
        self.board_streams.dec();
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8192);
        // Encoding into memory fails only on a broken metric, which `new` rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// One request in `http_requests_in_flight`.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_kinds_and_the_histogram_are_reported() {
        let m = Metrics::new("1.2.3");
        m.observe_request("/api", StatusCode::OK, Duration::from_micros(300));
        m.observe_request("/api", StatusCode::OK, Duration::from_millis(3));
        m.observe_request(NO_ROUTE, StatusCode::NOT_FOUND, Duration::from_secs(9));
        m.observe_redis_error(&StoreError::timed_out(
            "redis:6379",
            Duration::from_millis(500),
        ));
        let text = m.render();
        for line in [
            "http_requests_total{route=\"/api\",status=\"200\"} 2\n",
            "http_requests_total{route=\"other\",status=\"404\"} 1\n",
            "http_request_duration_seconds_bucket{route=\"/api\",le=\"0.0005\"} 1\n",
            "http_request_duration_seconds_bucket{route=\"/api\",le=\"0.005\"} 2\n",
            "http_request_duration_seconds_bucket{route=\"other\",le=\"2.5\"} 0\n",
            "http_request_duration_seconds_bucket{route=\"other\",le=\"+Inf\"} 1\n",
            "redis_errors_total{kind=\"timeout\"} 1\n",
            "redis_errors_total{kind=\"password\"} 0\n",
            "web_fe_build_info{version=\"1.2.3\"} 1\n",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
