//! Why Redis could not count a view: a kind a visitor can read, and details for the log.

use std::fmt;
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

/// A view Redis could not count, and whether it may have been counted all the same.
/// Cloned for each view of a batch that failed.
#[derive(Debug, Clone)]
pub struct StoreError {
    pub trouble: Trouble,
    /// Set once any attempt of the visit may have reached Redis; never cleared.
    pub maybe_counted: bool,
    /// For the log only: the address and the raw error.
    detail: String,
}

impl StoreError {
    pub fn new(trouble: Trouble, address: &str, detail: impl fmt::Display) -> Self {
        Self {
            trouble,
            maybe_counted: false,
            detail: format!("Redis at {address}: {detail}"),
        }
    }

    pub fn from_redis(address: &str, error: &RedisError) -> Self {
        Self::new(Trouble::of(error), address, error)
    }

    pub fn timed_out(address: &str, after: Duration) -> Self {
        Self::new(
            Trouble::TimedOut,
            address,
            format_args!("no answer within {after:?}"),
        )
    }
}

impl fmt::Display for StoreError {
    /// The log line's text: address and raw error. Public answers use [`Trouble::phrase`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)?;
        if self.maybe_counted {
            f.write_str(" (the view may have been counted)")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {}
