//! What all workers share: this replica's identity, metrics, and whether the process is
//! shutting down. The Redis [`crate::store::Store`] is per worker and handed in apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::metrics::Metrics;
use crate::replica::Replica;

pub struct AppState {
    pub replica: Replica,
    pub metrics: Metrics,
    /// A replica unseen for this long starts to fade on the page.
    pub replica_stale: Duration,
    /// Whether connections stay open between requests (`KEEP_ALIVE`).
    pub keep_alive: bool,
    draining: AtomicBool,
}

impl AppState {
    pub fn new(replica: Replica, replica_stale: Duration, keep_alive: bool) -> Self {
        Self {
            replica,
            metrics: Metrics::new(crate::build_info::VERSION),
            replica_stale,
            keep_alive,
            draining: AtomicBool::new(false),
        }
    }

    /// Replicas unseen for this long are dropped from Redis and from the page.
    pub fn replica_forget(&self) -> Duration {
        self.replica_stale * 20
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
