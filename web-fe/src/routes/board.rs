//! The board as JSON (`/api/board`) and as a stream of Server-Sent Events
//! (`/api/board/stream`). Neither counts a view, and neither asks Redis: both send what the
//! latest heartbeat read.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER};
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use futures_util::stream;
use serde::Serialize;
use tokio::sync::watch;

use super::has_flag;
use crate::board::{Board, Member, NodeGroup, Published, Shown};
use crate::state::{AppState, BoardStreamPlace};

/// The board as the page draws it. `current` names the replica to highlight: the page's
/// own, or none in a stream (the page's script highlights its replica).
#[derive(Template)]
#[template(path = "board.html")]
pub struct BoardHtml<'a> {
    pub board: &'a Board,
    pub current: &'a str,
}

/// One stream event: the board drawn, and the figures the page shows outside it.
#[derive(Serialize)]
struct BoardEvent<'a> {
    read_by: &'a str,
    hits: Option<i64>,
    live: usize,
    html: String,
    /// The next event comes within this long, unless this replica is gone.
    next_within_ms: u64,
}

/// The board with, on `?html`, the tiles drawn as a stream event carries them: what the
/// page reads while its stream is refused.
#[derive(Serialize)]
struct BoardWithHtml<'a> {
    #[serde(flatten)]
    board: &'a Board,
    html: String,
}

pub async fn board_json(req: HttpRequest, state: Data<AppState>) -> HttpResponse {
    let published = state.board.borrow().clone();
    let mut answer = HttpResponse::Ok();
    if !has_flag(req.query_string(), "html") {
        return answer.json(&published.board);
    }
    answer.json(BoardWithHtml {
        board: &published.board,
        html: stream_tiles(&published.board),
    })
}

/// How long a refused stream's page waits before asking again; it reads `/api/board`
/// meanwhile.
const STREAMS_FULL_RETRY_SECS: &str = "10";

/// A board event at every heartbeat until the client leaves or this replica shuts down.
/// A replica that is draining refuses new streams, so the page reconnects elsewhere; so
/// does one that already serves `MAX_BOARD_STREAMS`, so watchers never take the
/// connections that views need.
pub async fn board_stream(state: Data<AppState>) -> HttpResponse {
    if state.is_draining() {
        return refuse(
            "1",
            "this replica is shutting down; reconnect to reach another\n",
        );
    }
    let Some(place) = AppState::open_board_stream(&state) else {
        return refuse(
            STREAMS_FULL_RETRY_SECS,
            "this replica already serves as many board streams as MAX_BOARD_STREAMS allows; \
             read /api/board meanwhile, or try again after Retry-After\n",
        );
    };
    let mut boards = state.board.clone();
    boards.mark_changed();
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/event-stream"))
        // Proxies such as nginx would otherwise hold events back.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events(boards, state.board_due, place))
}

fn refuse(retry_after: &'static str, why: &'static str) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((RETRY_AFTER, retry_after))
        .body(why)
}

/// Each board once, as it is published; ends after a closing one or when the heartbeat
/// task is gone. The stream holds its place until it is dropped.
fn events(
    boards: watch::Receiver<Arc<Published>>,
    due: Duration,
    place: BoardStreamPlace,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    stream::unfold(Some((boards, place)), move |open| async move {
        let (mut boards, place) = open?;
        boards.changed().await.ok()?;
        let published = boards.borrow_and_update().clone();
        let event = published
            .event
            .get_or_init(|| render_event(&published.board, due));
        let next = (!published.closing).then_some((boards, place));
        Some((Ok(event.clone()), next))
    })
}

/// The tiles with this replica's (the board's reader's) highlighted, as every page of this
/// replica shows them until the next heartbeat: drawn once per board, not once per view.
pub fn page_tiles(published: &Published) -> &str {
    let board = &published.board;
    published
        .page_tiles
        .get_or_init(|| render_board(board, &board.read_by))
}

/// The tiles, with none highlighted: the page's script highlights its own replica.
fn stream_tiles(board: &Board) -> String {
    render_board(board, "")
}

fn render_board(board: &Board, current: &str) -> String {
    BoardHtml { board, current }.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "board rendering failed");
        String::new()
    })
}

fn render_event(board: &Board, due: Duration) -> Bytes {
    let html = stream_tiles(board);
    let event = BoardEvent {
        read_by: &board.read_by,
        hits: board.hits,
        live: board.live,
        html,
        next_within_ms: u64::try_from(due.as_millis()).unwrap_or(u64::MAX),
    };
    let json = serde_json::to_string(&event).expect("a board event always serialises");
    // JSON escapes newlines, so the event is one `data:` line.
    Bytes::from(format!("event: board\ndata: {json}\n\n"))
}

/// What the board's template shows, in words.
impl Member {
    /// Empty while serving: the tile says enough.
    pub fn status_text(&self) -> String {
        let since = seconds(self.beat_age_ms);
        match self.state {
            Shown::Serving => String::new(),
            Shown::Draining => "draining".into(),
            Shown::Stopped => format!("stopped {since} ago"),
            Shown::Silent => format!("no heartbeat for {since}"),
            Shown::CannotReachRedis => "cannot reach Redis".into(),
        }
    }

    pub fn last_view_text(&self) -> String {
        self.view_age_ms.map_or_else(
            || "no view yet".into(),
            |age| format!("last view {} ago", seconds(age)),
        )
    }

    pub fn version_text(&self) -> &str {
        self.version.as_deref().unwrap_or("?")
    }

    pub fn slot_text(&self) -> String {
        self.slot
            .as_deref()
            .map_or_else(String::new, |s| format!("slot {s}"))
    }

    /// Bar width; at least a sliver so a new replica is visible.
    pub fn bar_width(&self) -> String {
        format!("{:.1}%", self.share.max(1.0))
    }
}

impl NodeGroup {
    pub fn title(&self) -> String {
        self.node
            .as_deref()
            .map_or_else(|| "this host".into(), |n| format!("node {n}"))
    }

    pub fn node_name(&self) -> &str {
        self.node.as_deref().unwrap_or("")
    }
}

/// "3 s", "2 min": short enough for a tile on a phone.
fn seconds(ms: u64) -> String {
    match ms / 1000 {
        s @ 0..=119 => format!("{s} s"),
        s => format!("{} min", s / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_seconds_then_minutes() {
        assert_eq!(seconds(400), "0 s");
        assert_eq!(seconds(4_200), "4 s");
        assert_eq!(seconds(180_000), "3 min");
    }

    #[test]
    fn an_event_is_one_data_line() {
        let event = render_event(&Board::empty("r1"), Duration::from_millis(1500));
        let text = std::str::from_utf8(&event).unwrap();
        assert!(text.starts_with("event: board\ndata: {"), "{text}");
        assert!(text.contains(r#""next_within_ms":1500"#), "{text}");
        assert!(text.ends_with("}\n\n"), "{text}");
        assert_eq!(text.trim_end().lines().count(), 2, "{text}");
    }
}
