//! Views sent to Redis in batches: each worker gathers the views that arrive while its
//! previous call is in flight and counts them with one script run and one `WAIT`. A lone
//! view waits for nobody: there is no timer, a batch is whatever queued during the last
//! call.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Duration;

use prometheus::Histogram;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{StoreError, Visit};

/// The most views one script call counts: its work and reply stay small, and the rest go
/// in the next call.
const MAX_BATCH: usize = 256;

pub type Answer = oneshot::Receiver<Result<Visit, StoreError>>;

/// One view waiting for its batch.
pub struct Waiting {
    pub arrived: Instant,
    reply: oneshot::Sender<Result<Visit, StoreError>>,
}

/// A worker's views not yet sent, and whether a sender is at work. One thread only: a
/// worker's requests and its sender run on the same one.
pub struct Queue {
    views: RefCell<VecDeque<Waiting>>,
    sending: Cell<bool>,
    sizes: Histogram,
}

impl Queue {
    pub fn new(sizes: Histogram) -> Self {
        Self {
            views: RefCell::new(VecDeque::new()),
            sending: Cell::new(false),
            sizes,
        }
    }

    /// Queues a view; the answer comes when its batch is counted.
    pub fn join(&self) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.views.borrow_mut().push_back(Waiting {
            arrived: Instant::now(),
            reply,
        });
        answer
    }

    /// True when the caller must start a sender: none is at work.
    pub fn start_sending(&self) -> bool {
        !self.sending.replace(true)
    }

    /// The next batch, oldest first, or `None` (and the sender stops) when none is waiting.
    /// A view whose request is gone is dropped; one that waited out its `patience` (given
    /// its arrival) in the queue is answered at once: it was never sent, so it was not
    /// counted.
    pub fn next_batch(
        &self,
        patience: impl Fn(Instant) -> Duration,
        address: &str,
    ) -> Option<Vec<Waiting>> {
        let mut views = self.views.borrow_mut();
        let now = Instant::now();
        let mut batch = Vec::with_capacity(views.len().min(MAX_BATCH));
        while batch.len() < MAX_BATCH {
            let Some(view) = views.pop_front() else { break };
            if view.reply.is_closed() {
                continue;
            }
            let patience = patience(view.arrived);
            if now >= view.arrived + patience {
                let _ = view
                    .reply
                    .send(Err(StoreError::timed_out(address, patience)));
                continue;
            }
            batch.push(view);
        }
        if batch.is_empty() {
            self.sending.set(false);
            return None;
        }
        #[allow(clippy::cast_precision_loss)] // at most MAX_BATCH
        self.sizes.observe(batch.len() as f64);
        Some(batch)
    }
}

/// Each view of a counted batch gets its own count; a failed batch's error goes to all.
pub fn answer(batch: Vec<Waiting>, outcome: Result<Vec<Visit>, StoreError>) {
    match outcome {
        Ok(visits) => {
            for (view, visit) in batch.into_iter().zip(visits) {
                let _ = view.reply.send(Ok(visit));
            }
        }
        Err(error) => {
            for view in batch {
                let _ = view.reply.send(Err(error.clone()));
            }
        }
    }
}
