//! `/metrics` for Prometheus.

use actix_web::HttpResponse;
use actix_web::web::Data;

use crate::state::AppState;

pub async fn metrics(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
