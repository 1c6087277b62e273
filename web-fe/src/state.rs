//! What all workers share: this replica's identity, metrics, the latest board, and whether
//! the process is shutting down. The Redis [`crate::store::Store`] is per worker and handed
//! in apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use actix_web::web::Data;
use tokio::sync::{Notify, watch};

use crate::board::Published;
use crate::metrics::Metrics;
use crate::replica::Replica;
use crate::store::StoreError;

pub struct AppState {
    pub replica: Replica,
    pub metrics: Metrics,
    /// Whether connections stay open between requests (`KEEP_ALIVE`).
    pub keep_alive: bool,
    /// The board from the latest heartbeat (see [`crate::presence`]).
    pub board: watch::Receiver<Arc<Published>>,
    draining: AtomicBool,
    drain_started: Notify,
    /// Unix ms of the last counted view; 0 before the first.
    last_view_ms: AtomicU64,
    /// Board streams open now, at most `max_board_streams`.
    board_streams: AtomicU32,
    max_board_streams: u32,
    /// The longest a board stream goes between events: a heartbeat's interval and its
    /// Redis call's time limit. Streams tell pages, which take a longer silence for a
    /// replica gone without closing (its machine died) and reconnect.
    pub board_due: Duration,
}

/// One open board stream; dropping it (the client left, or the stream ended) frees the place.
pub struct BoardStreamPlace(Data<AppState>);

impl AppState {
    pub fn new(
        replica: Replica,
        keep_alive: bool,
        max_board_streams: u32,
        board_due: Duration,
        board: watch::Receiver<Arc<Published>>,
    ) -> Self {
        Self {
            replica,
            metrics: Metrics::new(crate::build_info::VERSION),
            keep_alive,
            board,
            draining: AtomicBool::new(false),
            drain_started: Notify::new(),
            last_view_ms: AtomicU64::new(0),
            board_streams: AtomicU32::new(0),
            max_board_streams,
            board_due,
        }
    }

    /// Every failed Redis call goes through here: counted by kind in the metrics, and
    /// logged with its cause under `what` (within the request's span, so with its id).
    pub fn redis_failed(&self, error: &StoreError, what: &str) {
        self.metrics.observe_redis_error(error);
        tracing::warn!(error = %error.report(), "{what}");
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        // The heartbeat tells the others at once rather than at its next beat.
        self.drain_started.notify_one();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Resolves when draining starts (once).
    pub async fn drain_started(&self) {
        self.drain_started.notified().await;
    }

    pub fn viewed_at(&self, unix_ms: u64) {
        self.last_view_ms.fetch_max(unix_ms, Ordering::Relaxed);
    }

    pub fn last_view_ms(&self) -> Option<u64> {
        Some(self.last_view_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    /// A place for one more board stream, or `None` when all `MAX_BOARD_STREAMS` are taken.
    pub fn open_board_stream(state: &Data<Self>) -> Option<BoardStreamPlace> {
        let max = state.max_board_streams;
        state
            .board_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        state.metrics.board_streams_opened();
        Some(BoardStreamPlace(state.clone()))
    }
}

impl Drop for BoardStreamPlace {
    fn drop(&mut self) {
        self.0.board_streams.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.board_stream_closed();
    }
}
