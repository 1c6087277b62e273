//! `/` and `/api`: count one view and show it, as a page or as JSON.

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;

use super::board::page_tiles;
use super::errors::{AppError, Form, Problem};
use super::view::{VisitView, placement};
use super::{has_flag, query_pairs};
use crate::build_info;
use crate::clock::unix_millis;
use crate::echo::shorten;
use crate::state::AppState;
use crate::store::{Store, StoreError};

/// Auto-refresh bounds, in seconds: fast enough to watch, slow enough to read.
const REFRESH_SECONDS: std::ops::RangeInclusive<u32> = 1..=60;

/// Room reserved for a page beside its board's tiles. A page without tiles is about 3 KB,
/// more than askama's own estimate: a smaller buffer would be copied twice as it grows,
/// on every view. A test checks that it still fits.
const PAGE_WITHOUT_TILES: usize = 4 * 1024;

#[derive(Template)]
#[template(path = "page.html")]
struct Page<'a> {
    view: &'a VisitView<'a>,
    placement: String,
    accent: &'static str,
    refresh: Option<u32>,
    /// The latest heartbeat's board drawn, with this replica highlighted.
    tiles: &'a str,
}

pub async fn page(
    req: HttpRequest,
    state: Data<AppState>,
    store: Data<Store>,
) -> Result<HttpResponse, AppError> {
    let fail = |problem| AppError::new(&state, Form::Html, problem);
    let refresh = refresh_option(req.query_string()).map_err(|p| fail(Problem::bad_request(p)))?;
    let view = count_visit(&state, &store)
        .await
        .map_err(|e| fail(Problem::redis_down(&state, &e)))?;
    let published = state.board.borrow().clone();
    let page = Page {
        placement: placement(view.slot, view.node),
        view: &view,
        accent: build_info::ACCENT,
        refresh,
        tiles: page_tiles(&published),
    };
    let mut body = String::with_capacity(PAGE_WITHOUT_TILES + page.tiles.len());
    page.render_into(&mut body)
        .map_err(|e| fail(Problem::internal(e)))?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(body))
}

/// `?close` closes the connection after the answer even with keep-alive on, so the next
/// request opens a new one and a balancer may send it to another replica.
pub async fn api(
    req: HttpRequest,
    state: Data<AppState>,
    store: Data<Store>,
) -> Result<HttpResponse, AppError> {
    let view = count_visit(&state, &store)
        .await
        .map_err(|e| AppError::new(&state, Form::Json, Problem::redis_down(&state, &e)))?;
    let mut answer = HttpResponse::Ok();
    if asks_to_close(req.query_string()) {
        answer.force_close();
    }
    Ok(answer.json(view))
}

/// HEAD on `/`: the status and headers a GET would get, without counting a view.
pub async fn head_page(state: Data<AppState>, store: Data<Store>) -> HttpResponse {
    head(&state, &store, "text/html; charset=utf-8").await
}

/// HEAD on `/api`, likewise.
pub async fn head_api(state: Data<AppState>, store: Data<Store>) -> HttpResponse {
    head(&state, &store, "application/json").await
}

async fn head(state: &AppState, store: &Store, content_type: &str) -> HttpResponse {
    let status = match store.check_ready().await {
        Ok(()) => StatusCode::OK,
        Err(e) => {
            state.redis_failed(&e, "HEAD: Redis is not ready");
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, content_type))
        .finish()
}

/// Counts the view in Redis (the store retries safely, see `Store::record_visit`); a
/// failure is logged with its details and counted in the metrics.
async fn count_visit<'a>(state: &'a AppState, store: &Store) -> Result<VisitView<'a>, StoreError> {
    let now = unix_millis();
    match store.record_visit().await {
        Ok(visit) => {
            state.viewed_at(now);
            Ok(VisitView::new(state, visit))
        }
        Err(e) => {
            state.redis_failed(&e, "could not count the view");
            Err(e)
        }
    }
}

fn asks_to_close(query: &str) -> bool {
    has_flag(query, "close")
}

/// Reads `?refresh=N`; other parameters are ignored.
fn refresh_option(query: &str) -> Result<Option<u32>, String> {
    let pairs =
        query_pairs(query).ok_or_else(|| "The query string could not be read.".to_owned())?;
    let Some((_, value)) = pairs.iter().find(|(k, _)| k == "refresh") else {
        return Ok(None);
    };
    match value.parse() {
        Ok(secs) if REFRESH_SECONDS.contains(&secs) => Ok(Some(secs)),
        _ => Err(format!(
            "refresh={} is not a number of seconds from {} to {}.",
            shorten(value),
            REFRESH_SECONDS.start(),
            REFRESH_SECONDS.end()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_without_its_tiles_fits_the_room_reserved_for_it() {
        let long = "x".repeat(63);
        let view = VisitView {
            count: i64::MAX,
            hostname: &long,
            slot: Some(&long),
            node: Some(&long),
            colour: &long,
            version: build_info::VERSION,
            served: u64::MAX,
        };
        let page = Page {
            placement: placement(view.slot, view.node),
            view: &view,
            accent: build_info::ACCENT,
            refresh: Some(60),
            tiles: "",
        };
        let rendered = page.render().unwrap().len();
        assert!(
            rendered <= PAGE_WITHOUT_TILES,
            "a page without tiles is {rendered} bytes; raise PAGE_WITHOUT_TILES"
        );
    }

    #[test]
    fn refresh_accepts_seconds_in_range_only() {
        assert_eq!(refresh_option(""), Ok(None));
        assert_eq!(refresh_option("refresh=2"), Ok(Some(2)));
        assert_eq!(refresh_option("x=1&refresh=60"), Ok(Some(60)));
        assert!(refresh_option("refresh=0").is_err());
        assert!(refresh_option("refresh=61").is_err());
        assert!(refresh_option("refresh=soon").is_err());
    }

    #[test]
    fn close_is_asked_by_name() {
        assert!(asks_to_close("close"));
        assert!(asks_to_close("a=1&close=1"));
        assert!(!asks_to_close("closed=1"));
        assert!(!asks_to_close(""));
    }
}
