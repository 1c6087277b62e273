//! The counter in Redis: the `hits` key (the same key as the Flask original, so a count
//! carries over), the views each replica served, and (in [`presence`]) which replicas are
//! alive.

mod error;
mod link;
mod presence;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};

pub use error::{StoreError, Trouble};
pub use presence::{Copy, PresenceStore, Roll, RollEntry};

use crate::configuration::RedisSettings;
use link::Link;

const HITS: &str = "hits";
const SERVED: &str = "replicas:served";
const PRESENCE: &str = "replicas:presence";
const BEATS: &str = "replicas:heartbeat";
/// Redis copy name -> the swarm node it runs on, which each copy of the stack writes to
/// the master (redis/copy.sh): Redis itself does not know its node.
const COPY_NODES: &str = "redis:copies";

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

/// How many replicas the master had at the heartbeat's last look: a view waits for one of
/// them to hold it (`WAIT`) only where there is one.
#[derive(Clone, Default)]
pub struct Replication(Arc<AtomicU32>);

impl Replication {
    fn set(&self, replicas: u32) {
        self.0.store(replicas, Ordering::Relaxed);
    }

    fn replicas(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One worker's way to Redis. Its requests share one multiplexed connection; a PING per
/// request would halve the throughput.
pub struct Store {
    link: Link,
    timeout: Duration,
    /// How long a visit that may already be counted keeps retrying (see `record_visit`).
    restart_grace: Duration,
    replica_wait: Duration,
    replication: Replication,
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
    /// Connections open lazily, so start-up never waits for Redis.
    pub fn new(settings: &RedisSettings, hostname: &str, replication: Replication) -> Self {
        let started = crate::clock::unix_millis();
        Self {
            link: Link::new(settings.target().clone(), settings.timeout),
            timeout: settings.timeout,
            restart_grace: settings.restart_grace,
            replica_wait: settings.replica_wait,
            replication,
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
                    self.link.forget();
                    // The call may have been sent before the clock ran out.
                    let mut error = StoreError::timed_out(&self.link.address(), self.timeout);
                    error.maybe_counted = true;
                    return Err(error);
                }
            };
            self.link.forget();
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
        let mut conn = self
            .link
            .connection()
            .await
            .map_err(|e| self.attempt_failed(&e))?;
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
        self.wait_for_a_replica(&mut conn).await?;
        Ok(Visit { count, served })
    }

    /// Where the master has replicas, a view is answered only once one of them holds it
    /// too, so that it survives the loss of the master's machine. A view no replica
    /// confirms in time is counted on the master but not answered 200: it is reported as
    /// maybe counted (another wait would outlast `REDIS_TIMEOUT` with the defaults).
    async fn wait_for_a_replica(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), FailedAttempt> {
        if self.replication.replicas() == 0 {
            return Ok(());
        }
        let wait_ms = u64::try_from(self.replica_wait.as_millis()).unwrap_or(u64::MAX);
        let acked: u32 = redis::cmd("WAIT")
            .arg(1)
            .arg(wait_ms)
            .query_async(conn)
            .await
            .map_err(|e| FailedAttempt {
                maybe_counted: true,
                ..self.attempt_failed(&e)
            })?;
        if acked > 0 {
            return Ok(());
        }
        Err(FailedAttempt {
            error: StoreError::new(
                Trouble::NoReplica,
                &self.link.address(),
                format_args!(
                    "no replica confirmed the view within {:?}",
                    self.replica_wait
                ),
            ),
            retryable: false,
            maybe_counted: true,
            broke_mid_call: false,
        })
    }

    /// Checks that Redis answers and that `hits` can be counted, for readiness.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        let work = async {
            let mut conn = self.link.connection().await?;
            self.ready
                .key(HITS)
                .invoke_async::<String>(&mut conn)
                .await
                .map(drop)
        };
        self.link.bounded(work).await
    }

    fn attempt_failed(&self, error: &RedisError) -> FailedAttempt {
        FailedAttempt {
            error: StoreError::from_redis(&self.link.address(), error),
            retryable: is_retryable(error),
            maybe_counted: false,
            broke_mid_call: false,
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

/// Connection trouble, a Redis still loading its data, and a master that was demoted or
/// lost its replicas (a failover under way) may pass; a wrong password will not.
fn is_retryable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.code() == Some(error::NO_REPLICAS)
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
            )
        )
}
