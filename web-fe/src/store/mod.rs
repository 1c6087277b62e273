//! The counter in Redis: the `hits` key (the same key as the Flask original, so a count
//! carries over), the views each replica served, and (in [`presence`]) which replicas are
//! alive.

mod batch;
mod error;
mod link;
mod presence;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::Histogram;
use redis::aio::MultiplexedConnection;
use redis::{
    ErrorKind, FromRedisValue, RedisError, RedisResult, ScriptInvocation, ServerErrorKind, Value,
};
use tokio::time::Instant;

use error::Cause;
pub use error::{StoreError, Trouble};
pub use presence::{Copy, PresenceStore, Roll, RollEntry};

use crate::configuration::RedisSettings;
use batch::Queue;
use link::Link;

const HITS: &str = "hits";
const SERVED: &str = "replicas:served";
const PRESENCE: &str = "replicas:presence";
const BEATS: &str = "replicas:heartbeat";
/// Redis copy name -> the swarm node it runs on, which each copy of the stack writes to
/// the master (redis/copy.sh): Redis itself does not know its node.
const COPY_NODES: &str = "redis:copies";

/// Counts a batch of views atomically, with the views its replica served, and keeps the
/// outcome under its sender's record key with the batch's number: a retry of the same
/// batch (after a connection broke with the outcome unknown) finds it and gets the first
/// call's counts instead of counting again, and a call that arrives late counts nothing.
const VISIT_SCRIPT: &str = concat!(include_str!("prelude.lua"), include_str!("visit.lua"));

/// Readiness: Redis answers and `hits` holds a number that can be counted on.
const READY_SCRIPT: &str = concat!(include_str!("prelude.lua"), include_str!("ready.lua"));

/// Pause between attempts while Redis restarts (a graceful restart takes ~100 ms).
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// How long a worker's record outlives its latest batch: longer than any retry of that
/// batch (`REDIS_TIMEOUT` and `REDIS_RESTART_GRACE`, a minute each at most), and longer than
/// Linux keeps sending the call of a connection web-fe gave up on (8 tries for an orphaned
/// socket's data, about 100 s from a first timeout of 200 ms): a call that arrives late
/// still finds the record and counts nothing.
const RECORD_TTL_MS: u64 = 10 * 60 * 1000;

/// Numbers the senders (one per worker) within this process; with the hostname and start
/// time it names each one's record.
static SENDERS: AtomicU64 = AtomicU64::new(0);

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

/// One worker's way to Redis. Views go in batches (see [`batch`]) over one multiplexed
/// connection; a PING per request would halve the throughput. Cloning is cheap: the clone
/// a batch's sender holds is the same store.
#[derive(Clone)]
pub struct Store(Rc<Counter>);

struct Counter {
    link: Link,
    timeout: Duration,
    /// How long a view keeps trying while Redis restarts or hands the master's role over
    /// (see `count_batch`).
    restart_grace: Duration,
    /// When a try last found Redis in such a transition.
    transition_seen: Cell<Option<Instant>>,
    replica_wait: Duration,
    replication: Replication,
    visit: redis::Script,
    ready: redis::Script,
    hostname: String,
    /// `visits:<hostname>:<start ms>:<pid>:<sender>`: the outcome of this sender's latest
    /// batch, which every attempt looks up first (see visit.lua).
    record_key: String,
    /// Batches sent so far: each one's number.
    batches: Cell<u64>,
    queue: Queue,
}

/// What one page view returns.
#[derive(Debug, Clone, Copy)]
pub struct Visit {
    /// The count after this view.
    pub count: i64,
    /// Views this replica has served, this one included.
    pub served: u64,
}

/// The script's reply: `hits` and the views served by this replica after the batch's last
/// view, and what was repaired.
type VisitReply = (i64, u64, Vec<String>);

impl Store {
    /// Connections open lazily, so start-up never waits for Redis. `batch_sizes` observes
    /// how many views each script call counts.
    pub fn new(
        settings: &RedisSettings,
        hostname: &str,
        replication: Replication,
        batch_sizes: Histogram,
    ) -> Self {
        let started = crate::clock::unix_millis();
        Self(Rc::new(Counter {
            link: Link::new(settings.target.clone(), settings.timeout),
            timeout: settings.timeout,
            restart_grace: settings.restart_grace,
            transition_seen: Cell::new(None),
            replica_wait: settings.replica_wait,
            replication,
            visit: redis::Script::new(VISIT_SCRIPT),
            ready: redis::Script::new(READY_SCRIPT),
            hostname: hostname.to_owned(),
            record_key: format!(
                "visits:{hostname}:{started}:{}:{}",
                std::process::id(),
                SENDERS.fetch_add(1, Ordering::Relaxed)
            ),
            batches: Cell::new(0),
            queue: Queue::new(batch_sizes),
        }))
    }

    /// Counts one page view for this replica exactly once: it joins the next batch.
    pub async fn record_visit(&self) -> Result<Visit, StoreError> {
        let answer = self.0.queue.join();
        if self.0.queue.start_sending() {
            actix_web::rt::spawn(Rc::clone(&self.0).send_batches());
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::new(
                Trouble::Unreachable,
                &self.0.link.address(),
                Cause::BatchDropped,
            ))
        })
    }

    /// Checks that Redis answers and that `hits` can be counted, for readiness.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        let counter = &self.0;
        let work = async {
            let mut conn = counter.link.connection().await?;
            counter
                .ready
                .key(HITS)
                .invoke_async::<String>(&mut conn)
                .await
                .map(drop)
        };
        counter.link.bounded(work).await
    }
}

impl Counter {
    /// Sends batch after batch until no view is waiting.
    async fn send_batches(self: Rc<Self>) {
        let patience = |arrived| self.patience(arrived);
        while let Some(batch) = self.queue.next_batch(patience, &self.link.address()) {
            let number = self.batches.replace(self.batches.get() + 1);
            let outcome = self
                .count_batch(number, batch.len(), batch[0].arrived)
                .await;
            batch::answer(batch, outcome);
        }
    }

    /// How long a view that arrived at `arrived` may wait for its count: `REDIS_TIMEOUT`,
    /// or the restart grace if Redis was seen restarting or failing over since it arrived.
    fn patience(&self, arrived: Instant) -> Duration {
        match self.transition_seen.get() {
            Some(seen) if seen >= arrived => self.timeout.max(self.restart_grace),
            _ => self.timeout,
        }
    }

    /// Counts a batch's views exactly once.
    ///
    /// Failed attempts are tried again on a new connection with the same batch number,
    /// which makes that safe (the next batch is sent only once this one is settled), until
    /// the batch's patience runs out (counted from its oldest view).
    /// While Redis restarts (a connection broke after the call was sent: the views may
    /// already be counted) or hands the master's role over (`NOREPLICAS`, `READONLY`),
    /// the batch, and the views queued behind it, keep trying for the restart grace: a
    /// restart or a planned failover neither loses a counted view nor answers 503 for one.
    /// Once any attempt may have counted, the error says so, whatever later attempts saw.
    async fn count_batch(
        &self,
        batch: u64,
        views: usize,
        oldest: Instant,
    ) -> Result<Vec<Visit>, StoreError> {
        let mut deadline = oldest + self.patience(oldest);
        let mut maybe_counted = false;
        let mut last_error: Option<StoreError> = None;
        loop {
            let sent = Cell::new(false);
            let attempt = self.visit_once(batch, views, &sent);
            let failure = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(visits)) => return Ok(visits),
                Ok(Err(failure)) => failure,
                Err(_) => {
                    self.link.forget();
                    let waited = deadline.saturating_duration_since(oldest);
                    let address = self.link.address();
                    let mut error = out_of_time(sent.get(), last_error, &address, waited);
                    error.maybe_counted |= maybe_counted;
                    return Err(error);
                }
            };
            self.link.forget();
            maybe_counted |= failure.maybe_counted;
            if failure.in_transition {
                self.transition_seen.set(Some(Instant::now()));
                deadline = oldest + self.patience(oldest);
            }
            if !failure.retryable || Instant::now() + RETRY_PAUSE >= deadline {
                let mut error = failure.error;
                error.maybe_counted |= maybe_counted;
                return Err(error);
            }
            tracing::debug!(error = %failure.error, "retrying the batch on a new connection");
            last_error = Some(failure.error);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// One try of the batch on the shared connection; `sent` is set once the call goes out.
    async fn visit_once(
        &self,
        batch: u64,
        views: usize,
        sent: &Cell<bool>,
    ) -> Result<Vec<Visit>, FailedAttempt> {
        let mut conn = self
            .link
            .connection()
            .await
            .map_err(|e| self.attempt_failed(e))?;
        let mut invocation = self.visit.key(HITS);
        invocation
            .key(SERVED)
            .key(&self.record_key)
            .arg(&self.hostname)
            .arg(RECORD_TTL_MS)
            .arg(crate::clock::unix_millis())
            .arg(views)
            .arg(batch);
        sent.set(true);
        let (reply, acked) = self.run_visit(&mut conn, &invocation).await;
        let (last, mine, repairs) = reply.map_err(|e| FailedAttempt {
            // Sent, then the connection broke or no answer came: Redis may have run it.
            // A reply that arrived but could not be read means it did.
            maybe_counted: e.is_connection_dropped()
                || e.is_timeout()
                || matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType),
            in_transition: e.is_connection_dropped() || in_transition(&e),
            ..self.attempt_failed(e)
        })?;
        log_repairs(repairs);
        self.held_by_a_replica(acked)?;
        Ok(batch_visits(last, mine, views))
    }

    /// Runs the visit script and, where the master has replicas, `WAIT` for one of them
    /// sent in the same write: one round trip per batch, not two. `WAIT` holds the answer
    /// until a replica has everything this connection wrote, the script's writes included.
    /// Returns the script's reply, and `WAIT`'s where it was sent.
    async fn run_visit(
        &self,
        conn: &mut MultiplexedConnection,
        invocation: &ScriptInvocation<'_>,
    ) -> (RedisResult<VisitReply>, Option<RedisResult<u32>>) {
        if self.replication.replicas() == 0 {
            return (invocation.invoke_async(conn).await, None);
        }
        let wait_ms = u64::try_from(self.replica_wait.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .invoke_script(invocation)
            .cmd("WAIT")
            .arg(1)
            .arg(wait_ms);
        match send(&pipe, conn).await {
            // Redis restarted and lost its scripts: load it and send both again. The script
            // did not run, so nothing was counted.
            (Err(e), _) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                if let Err(e) = invocation.load_async(conn).await {
                    return (Err(e), None);
                }
                send(&pipe, conn).await
            }
            answers => answers,
        }
    }

    /// Where the master has replicas, a batch is answered only once one of them holds it
    /// too, so that it survives the loss of the master's machine. A batch no replica
    /// confirms in time is counted on the master but not answered 200: it is reported as
    /// maybe counted (another wait would outlast `REDIS_TIMEOUT` with the defaults).
    fn held_by_a_replica(&self, acked: Option<RedisResult<u32>>) -> Result<(), FailedAttempt> {
        match acked {
            None | Some(Ok(1..)) => Ok(()),
            Some(Err(e)) => Err(FailedAttempt {
                maybe_counted: true,
                ..self.attempt_failed(e)
            }),
            Some(Ok(0)) => Err(FailedAttempt {
                error: StoreError::new(
                    Trouble::NoReplica,
                    &self.link.address(),
                    Cause::NoReplicaConfirmed(self.replica_wait),
                ),
                retryable: false,
                maybe_counted: true,
                in_transition: false,
            }),
        }
    }

    fn attempt_failed(&self, error: RedisError) -> FailedAttempt {
        FailedAttempt {
            retryable: is_retryable(&error),
            in_transition: in_transition(&error),
            error: StoreError::from_redis(&self.link.address(), error),
            maybe_counted: false,
        }
    }
}

/// The error of a batch whose patience ran out during an attempt. A call sent and not
/// answered may have counted; an attempt cut while it was still connecting sent nothing,
/// and the attempt before it (refused, say) tells better why Redis was not reached.
fn out_of_time(
    sent: bool,
    last: Option<StoreError>,
    address: &str,
    waited: Duration,
) -> StoreError {
    match last {
        Some(last) if !sent => last,
        _ => {
            let mut error = StoreError::timed_out(address, waited);
            error.maybe_counted = sent;
            error
        }
    }
}

/// Each view of a batch, in order: the batch's views are the last ones counted, so the
/// first of `views` had `last - views + 1`.
fn batch_visits(last: i64, mine: u64, views: usize) -> Vec<Visit> {
    (0..views)
        .rev()
        .map(|before_last| Visit {
            count: last.saturating_sub(i64::try_from(before_last).unwrap_or(i64::MAX)),
            served: mine.saturating_sub(u64::try_from(before_last).unwrap_or(u64::MAX)),
        })
        .collect()
}

/// Why one try failed: whether another try of the same visit may succeed, and whether
/// this one may have counted the view before failing.
struct FailedAttempt {
    error: StoreError,
    retryable: bool,
    maybe_counted: bool,
    /// Redis is restarting (the connection broke after the call was sent) or handing the
    /// master's role over: worth waiting for the restart grace.
    in_transition: bool,
}

/// Sends the script and its `WAIT` (a pipeline with `ignore_errors`): each one's answer,
/// or the connection's error for the script and no answer for `WAIT`.
async fn send(
    pipe: &redis::Pipeline,
    conn: &mut MultiplexedConnection,
) -> (RedisResult<VisitReply>, Option<RedisResult<u32>>) {
    match pipe.query_async::<Vec<Value>>(conn).await {
        Ok(answers) => {
            let mut answers = answers.into_iter();
            (read(answers.next()), Some(read(answers.next())))
        }
        Err(e) => (Err(e), None),
    }
}

/// One answer of a pipeline sent with `ignore_errors`: Redis's error, or the value read as `T`.
fn read<T: FromRedisValue>(answer: Option<Value>) -> RedisResult<T> {
    let value = answer.ok_or((ErrorKind::Parse, "the pipeline's answer was short"))?;
    Ok(redis::from_redis_value(value.extract_error()?)?)
}

/// What a script found in Redis that web-fe did not write, and put right: each is logged.
fn log_repairs(repairs: Vec<String>) {
    for repair in repairs {
        tracing::warn!(repair = %repair, "Redis held data web-fe did not write; repaired");
    }
}

/// Connection trouble and Redis in transition may pass; a wrong password will not.
fn is_retryable(error: &RedisError) -> bool {
    error.is_io_error() || in_transition(error)
}

/// A Redis still loading its data, and a master that was demoted, lost its replicas or
/// refuses writes while it hands its role over (redis/copy.sh): a failover under way.
fn in_transition(error: &RedisError) -> bool {
    error.code() == Some(error::NO_REPLICAS)
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
            )
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batchs_views_get_the_last_counts_in_order() {
        let visits = batch_visits(42, 7, 3);
        let counts: Vec<_> = visits.iter().map(|v| (v.count, v.served)).collect();
        assert_eq!(counts, [(40, 5), (41, 6), (42, 7)]);
    }

    #[test]
    fn a_batch_cut_while_connecting_keeps_the_last_reason_and_was_not_counted() {
        let refused = || {
            let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
            Some(StoreError::from_redis("127.0.0.1:6379", io.into()))
        };
        let waited = Duration::from_millis(500);
        let cut = |sent, last| {
            let error = out_of_time(sent, last, "127.0.0.1:6379", waited);
            (error.trouble, error.maybe_counted)
        };
        assert_eq!(cut(false, refused()), (Trouble::Unreachable, false));
        assert_eq!(cut(false, None), (Trouble::TimedOut, false));
        // Sent and unanswered: Redis may have run it, whatever the attempt before saw.
        assert_eq!(cut(true, refused()), (Trouble::TimedOut, true));
    }

    #[test]
    fn a_served_figure_below_the_batch_stops_at_zero() {
        // `served` held a foreign negative number before this batch.
        let visits = batch_visits(5, 1, 3);
        let served: Vec<_> = visits.iter().map(|v| v.served).collect();
        assert_eq!(served, [0, 0, 1]);
    }
}
