//! Logging: the subscriber (text or JSON, filtered by `RUST_LOG`) and the middleware that
//! writes one line and records metrics for every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Data;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::configuration::{ConfigError, LogFormat, LogSettings};
use crate::echo::clip;
use crate::metrics::NO_ROUTE;
use crate::rejections;
use crate::state::AppState;

/// Longest path written to a log line; a fuzzer's 8 KiB path is cut, not logged whole.
const MAX_LOGGED_PATH: usize = 200;

/// Names each request in its answer and in every log line written while serving it.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client (a proxy's); a longer or odd one is replaced.
const MAX_REQUEST_ID: usize = 64;

pub fn init_subscriber(settings: &LogSettings) -> Result<(), ConfigError> {
    let filter = EnvFilter::try_new(&settings.filter).map_err(|e| ConfigError {
        var: "RUST_LOG".into(),
        value: settings.filter.clone(),
        expected: format!("a filter such as info or web_fe=debug ({e})"),
    })?;
    // actix's own lines about refused requests are summarised by `rejections` instead.
    let not_actix_dispatcher = filter_fn(|meta| meta.target() != rejections::ACTIX_DISPATCHER);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stdout)
        .with_target(false);
    let fmt = match settings.format {
        LogFormat::Text => fmt.with_ansi(false).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    // Ignore "already set": tests may build more than one app in a process.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter.and(not_actix_dispatcher)))
        .with(rejections::layer())
        .try_init();
    Ok(())
}

/// Logs replica, method, path, status and latency, and feeds the same figures to metrics.
/// Everything logged while serving the request is in a `request` span carrying its id.
pub async fn observe_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<Data<AppState>>().cloned();
    let _in_flight = state.as_ref().map(|s| s.metrics.request_started());
    let method = req.method().clone();
    let path = req.path().to_owned();
    // The router's own pattern: a new route is labelled without a list to update.
    let route = req.match_pattern().unwrap_or_else(|| NO_ROUTE.to_owned());
    let id = request_id(&req);
    // At error level so that the id is on a warning even when RUST_LOG=warn.
    let span = tracing::error_span!("request", id = %id.to_str().unwrap_or_default());
    let mut response = next.call(req).instrument(span.clone()).await?;
    let latency = started.elapsed();
    let status = response.status();
    response.headers_mut().insert(REQUEST_ID, id);
    if let Some(state) = state {
        state.metrics.observe_request(&route, status, latency);
        tracing::info!(
            parent: &span,
            replica = %state.replica.hostname,
            method = %method,
            path = %clip(&path, MAX_LOGGED_PATH),
            status = status.as_u16(),
            latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            "request"
        );
    }
    Ok(response)
}

/// The id a proxy in front gave the request, if it is short and plain (it is written to
/// the log as is); otherwise this process's next number.
fn request_id(req: &ServiceRequest) -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    req.headers()
        .get(REQUEST_ID)
        .filter(|id| is_plain_id(id.as_bytes()))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(NEXT.fetch_add(1, Ordering::Relaxed)))
}

fn is_plain_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::is_plain_id;

    #[test]
    fn only_short_plain_ids_are_taken_from_clients() {
        assert!(is_plain_id(b"4bf92f3577b34da6-a3ce929d0e0e4736"));
        assert!(!is_plain_id(b""));
        assert!(!is_plain_id(b"id with spaces"));
        assert!(!is_plain_id(b"line\nbreak"));
        assert!(!is_plain_id(&[b'a'; 65]));
    }
}
