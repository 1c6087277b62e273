//! The counter in Redis: the `hits` key (the same key as the Flask original, so a count
//! carries over) and two hashes with what each replica served and when it was last seen.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, ErrorKind, ProtocolVersion, PushInfo, PushKind, RedisError,
    ServerErrorKind,
};
use deadpool_redis::{Manager, Pool, PoolError};
use serde::Serialize;

use crate::configuration::Settings;
use crate::replica::Replica;

const HITS: &str = "hits";
const SERVED: &str = "replicas:served";
const SEEN: &str = "replicas:seen";

/// Counts a view once per visit key, atomically, and reads back the totals. A retry of the
/// same visit (after a connection broke with the outcome unknown) finds the key and gets
/// the first call's count instead of counting again.
const VISIT_SCRIPT: &str = r"
local count = redis.call('GET', KEYS[4])
if count then
  count = tonumber(count)
else
  count = redis.call('INCR', KEYS[1])
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  redis.call('SET', KEYS[4], count, 'PX', ARGV[3])
end
return {count, redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3])}
";

/// Pause between attempts while Redis restarts (a graceful restart takes ~100 ms).
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Numbers visits within this process; with the hostname and start time it names each one.
static VISITS: AtomicU64 = AtomicU64::new(0);

/// One worker's way to Redis. Its requests share one multiplexed connection, taken from a
/// pool that checks it with a PING; a PING per request would halve the throughput.
pub struct Store {
    pool: Pool,
    timeout: Duration,
    /// How long a visit that may already be counted keeps retrying (see `record_visit`).
    restart_grace: Duration,
    /// Shown in errors; never includes the password.
    address: String,
    /// The connection this worker's requests share, until it fails or Redis closes it.
    shared: RefCell<Option<MultiplexedConnection>>,
    /// Set by a connection of this pool when its socket closes (Redis stopped or restarted),
    /// so the next request takes a checked connection instead of failing on a dead one.
    dropped: Arc<AtomicBool>,
    visit: redis::Script,
    /// `visit:<hostname>:<start time>:`, to which each visit adds its number.
    visit_prefix: String,
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
    /// Redis refused, could not be reached, or sent an error: nothing was counted.
    Failed { address: String, reason: String },
    /// The connection broke after the view was sent and did not come back in time.
    Interrupted { address: String, reason: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { address, after } => {
                write!(f, "Redis at {address} did not answer within {after:?}")
            }
            Self::Failed { address, reason } => write!(f, "Redis at {address}: {reason}"),
            Self::Interrupted { address, reason } => {
                write!(f, "Redis at {address} went away mid-call: {reason}")
            }
        }
    }
}

impl StoreError {
    /// Whether Redis may have counted the view before the failure: it was sent (or may
    /// have been) and no answer came back.
    pub fn maybe_counted(&self) -> bool {
        !matches!(self, Self::Failed { .. })
    }
}

impl Store {
    /// Builds the pool; connections open lazily, so start-up never waits for Redis.
    pub fn new(settings: &Settings, hostname: &str) -> Self {
        let (info, timeout) = (settings.redis.clone(), settings.redis_timeout);
        let address = info.addr().to_string();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&dropped);
        // A restarting Redis container drops packets for a while; short connect attempts
        // leave room to retry within the budget.
        let connect_timeout = (timeout / 4).max(Duration::from_millis(50)).min(timeout);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
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
        let started = crate::state::unix_millis();
        Self {
            pool,
            timeout,
            restart_grace: settings.redis_restart_grace,
            address,
            shared: RefCell::new(None),
            dropped,
            visit: redis::Script::new(VISIT_SCRIPT),
            visit_prefix: format!("visit:{hostname}:{started}:{}:", std::process::id()),
        }
    }

    /// Counts one page view for `replica` exactly once and reads back the totals.
    ///
    /// Failed attempts are tried again on a new connection with the same visit key, which
    /// makes that safe, until the timeout. When a connection broke after the call was sent
    /// (Redis restarting), the view may already be counted: that visit keeps trying for the
    /// restart grace, so a restart neither loses a counted view nor answers 503 for one.
    pub async fn record_visit(
        &self,
        replica: &Replica,
        now_ms: u64,
        forget_after: Duration,
    ) -> Result<Visit, StoreError> {
        let key = format!(
            "{}{}",
            self.visit_prefix,
            VISITS.fetch_add(1, Ordering::Relaxed)
        );
        let started = tokio::time::Instant::now();
        let mut deadline = started + self.timeout;
        loop {
            let attempt = self.visit_once(&key, replica, now_ms, forget_after);
            let failure = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(visit)) => return Ok(visit),
                Ok(Err(failure)) => failure,
                Err(_) => {
                    self.shared.take();
                    return Err(self.timed_out());
                }
            };
            self.shared.take();
            if failure.maybe_counted {
                deadline = deadline.max(started + self.restart_grace);
            }
            if !failure.retry || tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                return Err(match failure.error {
                    StoreError::Failed { address, reason } if failure.maybe_counted => {
                        StoreError::Interrupted { address, reason }
                    }
                    error => error,
                });
            }
            tracing::debug!(error = %failure.error, "retrying the visit on a new connection");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn visit_once(
        &self,
        key: &str,
        replica: &Replica,
        now_ms: u64,
        forget_after: Duration,
    ) -> Result<Visit, Attempt> {
        let mut conn = self.connection().await?;
        // The key must outlive every retry of its visit.
        let key_ttl_ms = (self.timeout + self.restart_grace).as_millis() + 1000;
        let (count, served, seen): (i64, HashMap<String, u64>, HashMap<String, String>) = self
            .visit
            .key(HITS)
            .key(SERVED)
            .key(SEEN)
            .key(key)
            .arg(&replica.hostname)
            .arg(seen_value(replica, now_ms))
            .arg(key_ttl_ms.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Attempt {
                // Sent, then the connection broke: Redis may have run it.
                maybe_counted: e.is_connection_dropped(),
                ..self.attempt_failed(&e)
            })?;
        let (replicas, forgotten) = merge_records(served, &seen, now_ms, forget_after);
        if !forgotten.is_empty() {
            // Keeps the hashes small across many deploys; the total stays in `hits`.
            redis::pipe()
                .hdel(SERVED, &forgotten)
                .hdel(SEEN, &forgotten)
                .exec_async(&mut conn)
                .await
                .map_err(|e| self.attempt_failed(&e))?;
        }
        Ok(Visit { count, replicas })
    }

    /// Checks that Redis answers, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.connection().await.map_err(|a| a.error)?;
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
    async fn connection(&self) -> Result<MultiplexedConnection, Attempt> {
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
            .unwrap_or_else(|_| Err(self.timed_out()));
        // After any failure the next request takes a checked connection.
        if result.is_err() {
            self.shared.take();
        }
        result
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Timeout {
            address: self.address.clone(),
            after: self.timeout,
        }
    }

    fn failed(&self, error: &RedisError) -> StoreError {
        if error.is_timeout() {
            return self.timed_out();
        }
        StoreError::Failed {
            address: self.address.clone(),
            reason: error.to_string(),
        }
    }

    fn attempt_failed(&self, error: &RedisError) -> Attempt {
        Attempt {
            error: self.failed(error),
            retry: passes(error),
            maybe_counted: false,
        }
    }

    fn pool_failed(&self, error: PoolError) -> Attempt {
        match error {
            PoolError::Backend(e) => self.attempt_failed(&e),
            other => Attempt {
                error: StoreError::Failed {
                    address: self.address.clone(),
                    reason: other.to_string(),
                },
                retry: false,
                maybe_counted: false,
            },
        }
    }
}

/// One try's failure: whether another try of the same visit may succeed, and whether this
/// one may have counted the view before failing.
struct Attempt {
    error: StoreError,
    retry: bool,
    maybe_counted: bool,
}

/// Connection trouble and a Redis still loading its data pass; a wrong password does not.
fn passes(error: &RedisError) -> bool {
    error.is_io_error() || error.kind() == ErrorKind::Server(ServerErrorKind::BusyLoading)
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
