//! HTTP routes. `/` and `/api` count a view; the others only report.

mod assets;
mod board;
mod counter;
mod errors;
mod health;
mod metrics;
mod view;

use actix_web::web::{self, Query};

use errors::Form;
pub use errors::not_found;
pub use health::healthz;

/// Registers every route; each one answers 405 with `Allow` for methods it does not take.
/// HEAD is answered everywhere and counts nothing.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(counter::page))
            .route(web::head().to(counter::head_page))
            .default_service(web::to(errors::method_not_allowed(Form::Html))),
    )
    .service(
        web::resource("/api")
            .route(web::get().to(counter::api))
            .route(web::head().to(counter::head_api))
            .default_service(web::to(errors::method_not_allowed(Form::Json))),
    )
    .service(read_only("/api/board", board::board_json))
    .service(read_only("/api/board/stream", board::board_stream))
    .service(read_only("/healthz", health::healthz))
    .service(read_only("/readyz", health::readyz))
    .service(read_only("/metrics", metrics::metrics))
    .service(read_only("/assets/{file}", assets::asset));
}

/// A route that changes nothing, so HEAD is as good as GET (probes often use it).
fn read_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(errors::method_not_allowed(Form::Text)))
}

/// The query string's parameters, decoded, in order.
fn query_pairs(query: &str) -> Option<Vec<(String, String)>> {
    Query::<Vec<(String, String)>>::from_query(query)
        .ok()
        .map(Query::into_inner)
}

/// Whether `name` is asked (`?close`, `?html`, with any value or none); an unreadable query
/// string asks nothing.
fn has_flag(query: &str, name: &str) -> bool {
    query_pairs(query).is_some_and(|pairs| pairs.iter().any(|(k, _)| k == name))
}
