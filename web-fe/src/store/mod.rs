//! The counter in Redis: the `hits` key (the same key as the Flask original, so a count
//! carries over), the views each replica served, and (in [`presence`]) which replicas are
//! alive.

mod error;
mod presence;

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
pub use presence::{PresenceStore, Roll, RollEntry};

use crate::configuration::RedisSettings;

const HITS: &str = "hits";
const SERVED: &str = "replicas:served";
const PRESENCE: &str = "replicas:presence";
const BEATS: &str = "replicas:heartbeat";

/// Counts a view once per visit key, atomically, with the views its replica served. A
/// retry of the same visit (after a connection broke with the outcome unknown) finds the
/// key and gets the first call's count instead of counting again.
const VISIT_SCRIPT: &str = concat!(include_str!("prelude.lua"), include_str!("visit.lua"));

/// Readiness: Redis answers and `hits` holds a number that can be counted on.
const READY_SCRIPT: &str = concat!(include_str!("prelude.lua"), include_str!("ready.lua"));

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

/// What one page view returns.
#[derive(Debug)]
pub struct Visit {
    /// The count after this view.
    pub count: i64,
    /// Views this replica has served, this one included.
    pub served: u64,
}

/// The script's reply: count, views served by this replica, and what was repaired.
type VisitReply = (i64, u64, Vec<String>);

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

    /// Counts one page view for the replica named `replica` exactly once.
    ///
    /// Failed attempts are tried again on a new connection with the same visit key, which
    /// makes that safe, until the timeout. When a connection broke after the call was sent
    /// (Redis restarting), the view may already be counted: that visit keeps trying for the
    /// restart grace, so a restart neither loses a counted view nor answers 503 for one.
    /// Once any attempt may have counted, the error says so, whatever later attempts saw.
    pub async fn record_visit(&self, replica: &str, now_ms: u64) -> Result<Visit, StoreError> {
        let key = format!(
            "{}{}",
            self.visit_prefix,
            VISITS.fetch_add(1, Ordering::Relaxed)
        );
        let started = tokio::time::Instant::now();
        let mut deadline = started + self.timeout;
        let (mut maybe_counted, mut retry) = (false, false);
        loop {
            let attempt = self.visit_once(&key, replica, now_ms, retry);
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
            retry = true;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn visit_once(
        &self,
        key: &str,
        replica: &str,
        now_ms: u64,
        retry: bool,
    ) -> Result<Visit, FailedAttempt> {
        let mut conn = self.connection().await?;
        // The key must outlive every retry of its visit.
        let key_ttl_ms = (self.timeout + self.restart_grace).as_millis() + 1000;
        let reply: VisitReply = self
            .visit
            .key(HITS)
            .key(SERVED)
            .key(key)
            .arg(replica)
            .arg(key_ttl_ms.to_string())
            .arg(now_ms)
            .arg(if retry { "retry" } else { "first" })
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
        let (count, served, repairs) = reply;
        log_repairs(repairs);
        Ok(Visit { count, served })
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

/// What a script found in Redis that web-fe did not write, and put right: each is logged.
fn log_repairs(repairs: Vec<String>) {
    for repair in repairs {
        tracing::warn!(repair = %repair, "Redis held data web-fe did not write; repaired");
    }
}

/// Connection trouble and a Redis still loading its data may pass; a wrong password will not.
fn is_retryable(error: &RedisError) -> bool {
    error.is_io_error() || error.kind() == ErrorKind::Server(ServerErrorKind::BusyLoading)
}
