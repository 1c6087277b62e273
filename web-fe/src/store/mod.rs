//! The counter in Redis: the `hits` key (the same key as the Flask original, so a count
//! carries over) and what each replica served, when it was last seen, and where it runs.

mod error;

use std::cell::RefCell;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, ErrorKind, ProtocolVersion, PushInfo, PushKind, RedisError,
    ServerErrorKind,
};
use deadpool_redis::{Manager, Pool, PoolError};

pub use error::{StoreError, Trouble};

use crate::configuration::RedisSettings;
use crate::replica::Replica;

const HITS: &str = "hits";
const SERVED: &str = "replicas:served";
const SEEN: &str = "replicas:last-seen";
const PLACEMENT: &str = "replicas:placement";

/// At most this many replicas, the most recently seen, come back with a view: a page's
/// size and Redis work stay flat however many replicas have come and gone.
pub const RECENT_REPLICAS: usize = 24;

/// Counts a view once per visit key, atomically, and reads back the recent replicas. A
/// retry of the same visit (after a connection broke with the outcome unknown) finds the
/// key and gets the first call's count instead of counting again.
const VISIT_SCRIPT: &str = include_str!("visit.lua");

/// Readiness: Redis answers and `hits` holds a number that can be counted on.
const READY_SCRIPT: &str = include_str!("ready.lua");

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
    /// Shown in logs; never includes the password.
    address: String,
    /// The connection this worker's requests share, until it fails or Redis closes it.
    shared: RefCell<Option<MultiplexedConnection>>,
    /// Set by a connection of this pool when its socket closes (Redis stopped or restarted),
    /// so the next request takes a checked connection instead of failing on a dead one.
    dropped: Arc<AtomicBool>,
    visit: redis::Script,
    ready: redis::Script,
    /// `visit:<hostname>:<start ms>:<pid>:`, to which each visit adds its number.
    visit_prefix: String,
}

/// What one page view returns: the new count and the replicas seen most recently.
#[derive(Debug)]
pub struct Visit {
    pub count: i64,
    /// At most [`RECENT_REPLICAS`], most recently seen first.
    pub replicas: Vec<ReplicaRecord>,
    /// Every replica Redis remembers, listed or not.
    pub replicas_known: u64,
}

/// One replica as Redis remembers it.
#[derive(Debug, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub hostname: String,
    pub served: u64,
    /// Unix time in milliseconds of the replica's last answered request.
    pub last_seen_ms: u64,
    pub slot: Option<String>,
    pub node: Option<String>,
}

/// The script's reply: count, hostnames, last-seen times, views served, placements, how
/// many replicas are known, and what was repaired.
type VisitReply = (
    i64,
    Vec<String>,
    Vec<String>,
    Vec<Option<String>>,
    Vec<Option<String>>,
    u64,
    Vec<String>,
);

impl Store {
    /// Builds the pool; connections open lazily, so start-up never waits for Redis.
    pub fn new(settings: &RedisSettings, hostname: &str) -> Self {
        let (info, timeout) = (settings.info().clone(), settings.timeout);
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
        let started = crate::clock::unix_millis();
        Self {
            pool,
            timeout,
            restart_grace: settings.restart_grace,
            address,
            shared: RefCell::new(None),
            dropped,
            visit: redis::Script::new(VISIT_SCRIPT),
            ready: redis::Script::new(READY_SCRIPT),
            visit_prefix: format!("visit:{hostname}:{started}:{}:", std::process::id()),
        }
    }

    /// Counts one page view for `replica` exactly once and reads back the recent replicas.
    ///
    /// Failed attempts are tried again on a new connection with the same visit key, which
    /// makes that safe, until the timeout. When a connection broke after the call was sent
    /// (Redis restarting), the view may already be counted: that visit keeps trying for the
    /// restart grace, so a restart neither loses a counted view nor answers 503 for one.
    /// Once any attempt may have counted, the error says so, whatever later attempts saw.
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
        let mut maybe_counted = false;
        loop {
            let attempt = self.visit_once(&key, replica, now_ms, forget_after);
            let failure = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(visit)) => return Ok(visit),
                Ok(Err(failure)) => failure,
                Err(_) => {
                    self.shared.take();
                    // The call may have been sent before the clock ran out.
                    let mut error = StoreError::timed_out(&self.address, self.timeout);
                    error.maybe_counted = true;
                    return Err(error);
                }
            };
            self.shared.take();
            maybe_counted |= failure.maybe_counted;
            if failure.broke_mid_call {
                deadline = deadline.max(started + self.restart_grace);
            }
            if !failure.retryable || tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                let mut error = failure.error;
                error.maybe_counted |= maybe_counted;
                return Err(error);
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
    ) -> Result<Visit, FailedAttempt> {
        let mut conn = self.connection().await?;
        // The key must outlive every retry of its visit.
        let key_ttl_ms = (self.timeout + self.restart_grace).as_millis() + 1000;
        let forget_ms = u64::try_from(forget_after.as_millis()).unwrap_or(u64::MAX);
        let reply: VisitReply = self
            .visit
            .key(HITS)
            .key(SERVED)
            .key(SEEN)
            .key(PLACEMENT)
            .key(key)
            .arg(&replica.hostname)
            .arg(now_ms)
            .arg(placement_value(replica))
            .arg(key_ttl_ms.to_string())
            .arg(now_ms.saturating_sub(forget_ms))
            .arg(RECENT_REPLICAS)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| FailedAttempt {
                // Sent, then the connection broke or no answer came: Redis may have run it.
                // A reply that arrived but could not be read means it did.
                maybe_counted: e.is_connection_dropped()
                    || e.is_timeout()
                    || matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType),
                broke_mid_call: e.is_connection_dropped(),
                ..self.attempt_failed(&e)
            })?;
        let (count, hosts, times, served, places, known, repairs) = reply;
        for repair in repairs {
            tracing::warn!(repair = %repair, "Redis held data web-fe did not write; repaired");
        }
        Ok(Visit {
            count,
            replicas: records(hosts, &times, served, places),
            replicas_known: known,
        })
    }

    /// Checks that Redis answers and that `hits` can be counted, for readiness.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        let work = async {
            let mut conn = self.connection().await.map_err(|a| a.error)?;
            self.ready
                .key(HITS)
                .invoke_async::<String>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| StoreError::from_redis(&self.address, &e))
        };
        let result = tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(StoreError::timed_out(&self.address, self.timeout)));
        // After any failure the next request takes a checked connection.
        if result.is_err() {
            self.shared.take();
        }
        result
    }

    /// The shared connection, or a fresh one from the pool (checked with a PING) when there
    /// is none yet or Redis closed the last one. Requests pipeline over it concurrently.
    async fn connection(&self) -> Result<MultiplexedConnection, FailedAttempt> {
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

    fn attempt_failed(&self, error: &RedisError) -> FailedAttempt {
        FailedAttempt {
            error: StoreError::from_redis(&self.address, error),
            retryable: is_retryable(error),
            maybe_counted: false,
            broke_mid_call: false,
        }
    }

    fn pool_failed(&self, error: PoolError) -> FailedAttempt {
        match error {
            PoolError::Backend(e) => self.attempt_failed(&e),
            other => FailedAttempt {
                error: StoreError::new(Trouble::Unreachable, &self.address, other),
                retryable: false,
                maybe_counted: false,
                broke_mid_call: false,
            },
        }
    }
}

/// Why one try failed: whether another try of the same visit may succeed, and whether
/// this one may have counted the view before failing.
struct FailedAttempt {
    error: StoreError,
    retryable: bool,
    maybe_counted: bool,
    /// The connection broke after the call was sent, as when Redis restarts: worth waiting
    /// for the restart grace to learn the outcome.
    broke_mid_call: bool,
}

/// Connection trouble and a Redis still loading its data may pass; a wrong password will not.
fn is_retryable(error: &RedisError) -> bool {
    error.is_io_error() || error.kind() == ErrorKind::Server(ServerErrorKind::BusyLoading)
}

/// `<slot>|<node>`: one field per replica keeps each visit to a single HSET.
fn placement_value(replica: &Replica) -> String {
    format!(
        "{}|{}",
        replica.slot.as_deref().unwrap_or(""),
        replica.node.as_deref().unwrap_or("")
    )
}

/// Zips the script's parallel lists into records, in the order given (most recent first).
fn records(
    hosts: Vec<String>,
    times: &[String],
    served: Vec<Option<String>>,
    places: Vec<Option<String>>,
) -> Vec<ReplicaRecord> {
    hosts
        .into_iter()
        .zip(times)
        .zip(served.into_iter().zip(places))
        .map(|((hostname, time), (served, place))| {
            let place = place.unwrap_or_default();
            let mut parts = place.split('|');
            let mut text = || parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
            let (slot, node) = (text(), text());
            ReplicaRecord {
                hostname,
                served: served.and_then(|v| v.parse().ok()).unwrap_or(0),
                last_seen_ms: time.parse().unwrap_or(0),
                slot,
                node,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_join_the_lists_in_order() {
        let records = records(
            vec!["b".into(), "a".into()],
            &["2000".into(), "1000".into()],
            vec![Some("5".into()), None],
            vec![Some("|".into()), Some("2|node-1".into())],
        );
        assert_eq!(
            records,
            vec![
                ReplicaRecord {
                    hostname: "b".into(),
                    served: 5,
                    last_seen_ms: 2000,
                    slot: None,
                    node: None,
                },
                ReplicaRecord {
                    hostname: "a".into(),
                    served: 0,
                    last_seen_ms: 1000,
                    slot: Some("2".into()),
                    node: Some("node-1".into()),
                },
            ]
        );
    }
}
