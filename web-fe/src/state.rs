//! What all workers share: this replica's identity, metrics, the latest board, and whether
//! the process is shutting down. The Redis [`crate::store::Store`] is per worker and handed
//! in apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{Notify, watch};

use crate::board::Published;
use crate::metrics::Metrics;
use crate::replica::Replica;

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
}

impl AppState {
    pub fn new(replica: Replica, keep_alive: bool, board: watch::Receiver<Arc<Published>>) -> Self {
        Self {
            replica,
            metrics: Metrics::new(crate::build_info::VERSION),
            keep_alive,
            board,
            draining: AtomicBool::new(false),
            drain_started: Notify::new(),
            last_view_ms: AtomicU64::new(0),
        }
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
}
