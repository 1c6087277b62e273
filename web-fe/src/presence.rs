//! The heartbeat: about once a second this replica tells Redis it is alive and what it is
//! doing, and reads the board back for every page and stream it serves. One task per
//! replica, so watching costs Redis the same however many people watch.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Data;
use tokio::sync::{oneshot, watch};

use crate::board::{Activity, Beat, Board, Published};
use crate::build_info;
use crate::clock::unix_millis;
use crate::configuration::ReplicaSettings;
use crate::state::AppState;
use crate::store::PresenceStore;

/// A replica that missed this many beats is shown as gone.
const MISSED_BEATS: u32 = 3;

pub struct Presence {
    store: PresenceStore,
    state: Data<AppState>,
    publish: watch::Sender<Arc<Published>>,
    interval: Duration,
    forget: Duration,
    started_ms: u64,
}

impl Presence {
    pub fn new(
        store: PresenceStore,
        state: Data<AppState>,
        publish: watch::Sender<Arc<Published>>,
        settings: &ReplicaSettings,
    ) -> Self {
        Self {
            store,
            state,
            publish,
            interval: settings.heartbeat,
            forget: settings.forget,
            started_ms: unix_millis(),
        }
    }

    /// A replica unheard for this long is marked as gone.
    fn silent_after(interval: Duration) -> Duration {
        interval * MISSED_BEATS
    }

    /// Beats until `stop`, at once when draining starts, and a last time to say goodbye.
    pub async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.state.drain_started() => {}
                _ = &mut stop => break,
            }
            let activity = if self.state.is_draining() {
                Activity::Draining
            } else {
                Activity::Serving
            };
            self.beat(activity).await;
        }
        self.beat(Activity::Stopped).await;
    }

    async fn beat(&mut self, activity: Activity) {
        let me = &self.state.replica;
        let beat = Beat {
            slot: me.slot.clone(),
            node: me.node.clone(),
            version: build_info::VERSION.to_owned(),
            started_ms: self.started_ms,
            activity,
            last_view_ms: self.state.last_view_ms(),
        };
        let json = serde_json::to_string(&beat).expect("a Beat always serialises");
        let board = match self.store.beat(&me.hostname, &json, self.forget).await {
            Ok(roll) => Board::from_roll(&me.hostname, roll, Self::silent_after(self.interval)),
            // What is published is the last board read (marked again if a beat failed before).
            Err(e) => {
                self.state.redis_failed(&e, "heartbeat failed");
                let trouble = format!("Redis {}", e.trouble.phrase());
                self.publish.borrow().board.unreachable(trouble)
            }
        };
        let closing = activity != Activity::Serving;
        self.publish
            .send_replace(Arc::new(Published::new(board, closing)));
    }
}
