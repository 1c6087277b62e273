//! Why Redis could not count a view: a kind a visitor can read, and details for the log.

use std::sync::Arc;
use std::time::Duration;

use redis::{ErrorKind, RedisError};

/// A master with `min-replicas-to-write` and too few replicas refuses writes with this;
/// redis-rs has no kind of its own for it.
pub const NO_REPLICAS: &str = "NOREPLICAS";

/// The kind of problem, in words fit for a public page: no address, no raw error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// No connection: refused, unresolvable, or broken.
    Unreachable,
    /// No answer within `REDIS_TIMEOUT`.
    TimedOut,
    /// Redis wants another password (or one, or none).
    PasswordRefused,
    /// A key holds something web-fe did not write in the shape it expects.
    UnexpectedData,
    /// Redis answered with an error of its own (out of memory, read-only replica, ...).
    Refused,
    /// The master counted the view, but no replica confirmed a copy of it in time (or the
    /// master refuses writes, having had no replica for a while).
    NoReplica,
}

impl Trouble {
    pub const ALL: [Self; 6] = [
        Self::Unreachable,
        Self::TimedOut,
        Self::PasswordRefused,
        Self::UnexpectedData,
        Self::Refused,
        Self::NoReplica,
    ];

    /// Completes "Redis ...".
    pub fn phrase(self) -> &'static str {
        match self {
            Self::Unreachable => "cannot be reached",
            Self::TimedOut => "did not answer in time",
            Self::PasswordRefused => "refused our password",
            Self::UnexpectedData => "holds data web-fe does not expect",
            Self::Refused => "refused the command",
            Self::NoReplica => "could not copy the view to a replica",
        }
    }

    /// A page's heading.
    pub fn title(self) -> &'static str {
        match self {
            Self::Unreachable => "Redis cannot be reached",
            Self::TimedOut => "Redis did not answer in time",
            Self::PasswordRefused => "Redis refused our password",
            Self::UnexpectedData => "Redis holds data web-fe does not expect",
            Self::Refused => "Redis refused the command",
            Self::NoReplica => "No Redis replica holds a copy of this view",
        }
    }

    /// What to do, in the words of where this replica runs: a swarm task or Compose.
    pub fn hint(self, on_swarm: bool) -> &'static str {
        match (self, on_swarm) {
            (Self::Unreachable | Self::TimedOut, false) => {
                "Nothing is lost: the count lives in Redis. Refresh once Redis is back \
                 (docker compose ps shows its state); no restart of web-fe is needed."
            }
            (Self::Unreachable | Self::TimedOut, true) => {
                "Nothing answered 200 is lost: the count lives in the Redis copies. Refresh once \
                 a master is back (docker service ls shows the stack's redis and sentinel \
                 services, docker service ps <stack>_redis why a copy is not running); no \
                 restart of web-fe is needed."
            }
            (Self::NoReplica, true) => {
                "The master answers but no replica confirmed a copy, so this view was not \
                 promised. Refresh once a replica is back (docker service ps <stack>_redis \
                 shows the copies); views count again by themselves."
            }
            (Self::NoReplica, false) => {
                "The master answers but no replica confirmed a copy, so this view was not \
                 promised. Refresh once a replica is back; views count again by themselves."
            }
            (Self::PasswordRefused, _) => {
                "web-fe and Redis must use the same password: check the redis-password secret \
                 (REDIS_PASSWORD_FILE), then restart web-fe."
            }
            (Self::UnexpectedData, _) => {
                "This replica's log names the key and what it holds; fix or delete it with redis-cli."
            }
            (Self::Refused, _) => {
                "This replica's log has Redis's own message; check Redis's log and memory."
            }
        }
    }

    /// The label in `redis_errors_total{kind}`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::TimedOut => "timeout",
            Self::PasswordRefused => "password",
            Self::UnexpectedData => "unexpected_data",
            Self::Refused => "refused",
            Self::NoReplica => "no_replica",
        }
    }

    fn of(error: &RedisError) -> Self {
        if error.is_timeout() {
            return Self::TimedOut;
        }
        if error.kind() == ErrorKind::AuthenticationFailed
            || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
        {
            return Self::PasswordRefused;
        }
        if matches!(error.code(), Some("UNEXPECTED" | "WRONGTYPE"))
            || matches!(
                error.kind(),
                ErrorKind::Parse | ErrorKind::UnexpectedReturnType
            )
        {
            return Self::UnexpectedData;
        }
        if error.code() == Some(NO_REPLICAS) {
            return Self::NoReplica;
        }
        if error.is_io_error() || error.kind() == ErrorKind::Io {
            return Self::Unreachable;
        }
        Self::Refused
    }
}

/// What failed beneath a [`StoreError`]: kept as a typed cause for the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Cause {
    /// Shared so that each view of a failed batch carries the same error.
    #[error(transparent)]
    Redis(Arc<RedisError>),
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    #[error("no replica confirmed the view within {0:?}")]
    NoReplicaConfirmed(Duration),
    #[error("the batch holding this view was dropped")]
    BatchDropped,
}

/// A view Redis could not count, and whether it may have been counted all the same.
/// Cloned for each view of a batch that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "Redis at {address} {}{}",
    trouble.phrase(),
    if *maybe_counted { " (the view may have been counted)" } else { "" }
)]
pub struct StoreError {
    pub trouble: Trouble,
    /// Set once any attempt of the visit may have reached Redis; never cleared.
    pub maybe_counted: bool,
    /// For the log only, with the cause: public answers use [`Trouble::phrase`].
    address: String,
    #[source]
    cause: Cause,
}

impl StoreError {
    pub fn new(trouble: Trouble, address: &str, cause: Cause) -> Self {
        Self {
            trouble,
            maybe_counted: false,
            address: address.to_owned(),
            cause,
        }
    }

    pub fn from_redis(address: &str, error: RedisError) -> Self {
        Self::new(Trouble::of(&error), address, Cause::Redis(Arc::new(error)))
    }

    pub fn timed_out(address: &str, after: Duration) -> Self {
        Self::new(Trouble::TimedOut, address, Cause::NoAnswer(after))
    }

    /// The error and what redis-rs (or the store) said beneath it, for a log line.
    pub fn report(&self) -> String {
        format!("{self}: {}", self.cause)
    }
}
