//! The counter in Redis: the `hits` key (the same key as the Flask original, so a count
//! carries over) and two hashes with what each replica served and when it was last seen.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, ConnectionInfo, ProtocolVersion, PushInfo, PushKind, RedisError,
};
use deadpool_redis::{Manager, Pool, PoolError};
use serde::Serialize;

use crate::replica::Replica;

const HITS: &str = "hits";
const SERVED: &str = "replicas:served";
const SEEN: &str = "replicas:seen";

/// One worker's way to Redis. Its requests share one multiplexed connection, taken from a
/// pool that checks it with a PING; a PING per request would halve the throughput.
pub struct Store {
    pool: Pool,
    timeout: Duration,
    /// Shown in errors; never includes the password.
    address: String,
    /// The connection this worker's requests share, until it fails or Redis closes it.
    shared: RefCell<Option<MultiplexedConnection>>,
    /// Set by a connection of this pool when its socket closes (Redis stopped or restarted),
    /// so the next request takes a checked connection instead of failing on a dead one.
    dropped: Arc<AtomicBool>,
}

/// What one page view returns: the new count and every replica's share of it.
#[derive(Debug, Serialize)]
pub struct Visit {
    pub count: i64,
    pub replicas: Vec<ReplicaRecord>,
}

/// One replica as Redis remembers it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub hostname: String,
    pub served: u64,
    /// Unix time in milliseconds of the replica's last answered request.
    pub last_seen_ms: u64,
    pub slot: Option<String>,
    pub node: Option<String>,
}

#[derive(Debug)]
pub enum StoreError {
    /// Redis did not answer within the configured bound.
    Timeout { address: String, after: Duration },
    /// Redis refused, dropped the connection or sent an error.
    Failed { address: String, reason: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { address, after } => {
                write!(f, "Redis at {address} did not answer within {after:?}")
            }
            Self::Failed { address, reason } => write!(f, "Redis at {address}: {reason}"),
        }
    }
}

impl Store {
    /// Builds the pool; connections open lazily, so start-up never waits for Redis.
    pub fn new(info: ConnectionInfo, timeout: Duration) -> Self {
        let address = info.addr().to_string();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&dropped);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_push_sender(move |push: PushInfo| {
                if push.kind == PushKind::Disconnection {
                    flag.store(true, Ordering::Relaxed);
                }
                Ok::<(), Infallible>(())
            });
        // Disconnect notices come as RESP3 pushes (Redis 6 and newer).
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let manager = Manager::new_with_config(info.set_redis_settings(resp3), config)
            .expect("a ConnectionInfo always makes a client");
        // One connection: after an outage, one reconnect is tried at a time, not one per request.
        let pool = Pool::builder(manager)
            .max_size(1)
            .build()
            .expect("no runtime-dependent timeouts are set");
        Self {
            pool,
            timeout,
            address,
            shared: RefCell::new(None),
            dropped,
        }
    }

    /// Counts one page view for `replica` and reads back the totals, in one atomic round trip.
    pub async fn record_visit(
        &self,
        replica: &Replica,
        now_ms: u64,
        forget_after: Duration,
    ) -> Result<Visit, StoreError> {
        self.bounded(async {
            let mut conn = self.connection().await?;
            let (count, served, seen): (i64, HashMap<String, u64>, HashMap<String, String>) =
                redis::pipe()
                    .atomic()
                    .incr(HITS, 1)
                    .hincr(SERVED, &replica.hostname, 1)
                    .ignore()
                    .hset(SEEN, &replica.hostname, seen_value(replica, now_ms))
                    .ignore()
                    .hgetall(SERVED)
                    .hgetall(SEEN)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.failed(&e))?;
            let (replicas, forgotten) = merge_records(served, &seen, now_ms, forget_after);
            if !forgotten.is_empty() {
                // Keeps the hashes small across many deploys; the total stays in `hits`.
                redis::pipe()
                    .hdel(SERVED, &forgotten)
                    .hdel(SEEN, &forgotten)
                    .exec_async(&mut conn)
                    .await
                    .map_err(|e| self.failed(&e))?;
            }
            Ok(Visit { count, replicas })
        })
        .await
    }

    /// Checks that Redis answers, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| self.failed(&e))
        })
        .await
    }

    /// The shared connection, or a fresh one from the pool (checked with a PING) when there
    /// is none yet or Redis closed the last one. Requests pipeline over it concurrently.
    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        if self.dropped.swap(false, Ordering::Relaxed) {
            self.shared.take();
        }
        if let Some(conn) = self.shared.borrow().as_ref() {
            return Ok(conn.clone());
        }
        let pooled = self.pool.get().await.map_err(|e| self.pool_failed(e))?;
        let conn = MultiplexedConnection::clone(&pooled);
        self.shared.replace(Some(conn.clone()));
        Ok(conn)
    }

    /// Caps the whole exchange, pool wait and DNS included, at the configured timeout.
    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Timeout {
                    address: self.address.clone(),
                    after: self.timeout,
                })
            });
        // After any failure the next request takes a checked connection.
        if result.is_err() {
            self.shared.take();
        }
        result
    }

    fn failed(&self, error: &RedisError) -> StoreError {
        if error.is_timeout() {
            return StoreError::Timeout {
                address: self.address.clone(),
                after: self.timeout,
            };
        }
        StoreError::Failed {
            address: self.address.clone(),
            reason: error.to_string(),
        }
    }

    fn pool_failed(&self, error: PoolError) -> StoreError {
        match error {
            PoolError::Backend(e) => self.failed(&e),
            other => StoreError::Failed {
                address: self.address.clone(),
                reason: other.to_string(),
            },
        }
    }
}

/// `<unix ms>|<slot>|<node>`: one field per replica keeps each visit to a single HSET.
fn seen_value(replica: &Replica, now_ms: u64) -> String {
    format!(
        "{now_ms}|{}|{}",
        replica.slot.as_deref().unwrap_or(""),
        replica.node.as_deref().unwrap_or("")
    )
}

/// Joins the two hashes into records, most recently seen first, and returns apart the
/// hostnames not seen for longer than `forget_after`.
fn merge_records(
    served: HashMap<String, u64>,
    seen: &HashMap<String, String>,
    now_ms: u64,
    forget_after: Duration,
) -> (Vec<ReplicaRecord>, Vec<String>) {
    let forget_ms = u64::try_from(forget_after.as_millis()).unwrap_or(u64::MAX);
    let (mut keep, gone): (Vec<_>, Vec<_>) = served
        .into_iter()
        .map(|(hostname, served)| {
            let mut parts = seen.get(&hostname).map_or("", String::as_str).split('|');
            let last_seen_ms = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
            let mut text = || parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
            let (slot, node) = (text(), text());
            ReplicaRecord {
                hostname,
                served,
                last_seen_ms,
                slot,
                node,
            }
        })
        .partition(|r| now_ms.saturating_sub(r.last_seen_ms) <= forget_ms);
    keep.sort_by(|a, b| {
        b.last_seen_ms
            .cmp(&a.last_seen_ms)
            .then_with(|| a.hostname.cmp(&b.hostname))
    });
    (keep, gone.into_iter().map(|r| r.hostname).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_join_counts_with_last_seen_and_forget_old_ones() {
        let served = HashMap::from([("a".into(), 3), ("b".into(), 5), ("old".into(), 9)]);
        let seen = HashMap::from([
            ("a".into(), "1000|2|node-1".into()),
            ("b".into(), "2000||".into()),
            ("old".into(), "10".into()),
        ]);
        let (records, gone) = merge_records(served, &seen, 2500, Duration::from_secs(2));
        assert_eq!(gone, vec!["old".to_string()]);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].hostname, "b");
        assert_eq!(
            (records[0].slot.clone(), records[0].node.clone()),
            (None, None)
        );
        assert_eq!(records[1].served, 3);
        assert_eq!(records[1].slot.as_deref(), Some("2"));
        assert_eq!(records[1].node.as_deref(), Some("node-1"));
    }

    #[test]
    fn a_garbled_seen_value_is_treated_as_long_ago() {
        let served = HashMap::from([("x".into(), 1)]);
        let seen = HashMap::from([("x".into(), "not-a-time".into())]);
        let (records, gone) =
            merge_records(served, &seen, 1_800_000_000_000, Duration::from_secs(60));
        assert!(records.is_empty());
        assert_eq!(gone, vec!["x".to_string()]);
    }
}
