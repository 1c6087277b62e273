//! Presence in Redis: each replica's heartbeat, and the board read back with it.

use std::time::Duration;

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, AsyncConnectionConfig};

use super::{BEATS, HITS, PRESENCE, SERVED, StoreError};
use crate::configuration::RedisSettings;

/// Reads back this many replicas at most, the most recently heard from: a beat's cost stays
/// flat however many replicas have come and gone.
pub const BOARD_ROWS: usize = 64;

/// Writes a beat, forgets a few long-gone replicas, and reads the board, atomically.
const PRESENCE_SCRIPT: &str = concat!(include_str!("prelude.lua"), include_str!("presence.lua"));

/// The heartbeat's own connection: one per replica, used once a second by one task.
pub struct PresenceStore {
    client: redis::Client,
    config: AsyncConnectionConfig,
    conn: Option<MultiplexedConnection>,
    script: redis::Script,
    address: String,
    timeout: Duration,
}

/// Every replica Redis heard from lately, as one beat read it.
#[derive(Debug, Default)]
pub struct Roll {
    /// Redis's clock when the beat ran: ages are measured against it.
    pub now_ms: u64,
    /// Most recently heard from first, at most [`BOARD_ROWS`].
    pub entries: Vec<RollEntry>,
    /// Replicas Redis remembers, listed or not.
    pub known: u64,
    /// The count, when `hits` holds a number.
    pub hits: Option<i64>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RollEntry {
    pub hostname: String,
    pub last_beat_ms: u64,
    /// What the replica said in its last beat (JSON), if Redis still has it.
    pub beat: Option<String>,
    pub served: u64,
}

/// now, hostnames, beat times, beats, views served, known, hits, repairs.
type PresenceReply = (
    u64,
    Vec<String>,
    Vec<String>,
    Vec<Option<String>>,
    Vec<Option<String>>,
    u64,
    Option<String>,
    Vec<String>,
);

impl PresenceStore {
    pub fn new(settings: &RedisSettings) -> Self {
        let info = settings.info().clone();
        let address = info.addr().to_string();
        let timeout = settings.timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Self {
            client: redis::Client::open(info).expect("the URL was checked at start-up"),
            config,
            conn: None,
            script: redis::Script::new(PRESENCE_SCRIPT),
            address,
            timeout,
        }
    }

    /// Stores `beat` for `hostname` and reads the board. After a failure the next call
    /// opens a new connection.
    pub async fn beat(
        &mut self,
        hostname: &str,
        beat: &str,
        forget_after: Duration,
    ) -> Result<Roll, StoreError> {
        let result = tokio::time::timeout(self.timeout, self.call(hostname, beat, forget_after))
            .await
            .unwrap_or_else(|_| Err(StoreError::timed_out(&self.address, self.timeout)));
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn call(
        &mut self,
        hostname: &str,
        beat: &str,
        forget_after: Duration,
    ) -> Result<Roll, StoreError> {
        let error = |e: &redis::RedisError| StoreError::from_redis(&self.address, e);
        if self.conn.is_none() {
            let conn = self
                .client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
                .map_err(|e| error(&e))?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("opened above");
        let reply: PresenceReply = self
            .script
            .key(PRESENCE)
            .key(BEATS)
            .key(SERVED)
            .key(HITS)
            .arg(hostname)
            .arg(beat)
            .arg(u64::try_from(forget_after.as_millis()).unwrap_or(u64::MAX))
            .arg(BOARD_ROWS)
            .invoke_async(conn)
            .await
            .map_err(|e| error(&e))?;
        let (now_ms, hosts, times, beats, served, known, hits, repairs) = reply;
        super::log_repairs(repairs);
        Ok(Roll {
            now_ms,
            entries: entries(hosts, &times, beats, served),
            known,
            hits: hits.and_then(|h| h.parse().ok()),
        })
    }
}

/// Zips the script's parallel lists, in the order given (most recent first).
fn entries(
    hosts: Vec<String>,
    times: &[String],
    beats: Vec<Option<String>>,
    served: Vec<Option<String>>,
) -> Vec<RollEntry> {
    let mut beats = beats.into_iter();
    let mut served = served.into_iter();
    hosts
        .into_iter()
        .zip(times)
        .map(|(hostname, time)| RollEntry {
            hostname,
            last_beat_ms: time.parse().unwrap_or(0),
            beat: beats.next().flatten(),
            served: served
                .next()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_join_the_lists_in_order_and_tolerate_missing_values() {
        let joined = entries(
            vec!["b".into(), "a".into()],
            &["2000".into(), "1000".into()],
            vec![Some("{}".into())],
            vec![Some("5".into()), Some("x".into())],
        );
        assert_eq!(
            joined,
            vec![
                RollEntry {
                    hostname: "b".into(),
                    last_beat_ms: 2000,
                    beat: Some("{}".into()),
                    served: 5,
                },
                RollEntry {
                    hostname: "a".into(),
                    last_beat_ms: 1000,
                    beat: None,
                    served: 0,
                },
            ]
        );
    }
}
