//! Requests that actix's HTTP parser answers by itself (400 malformed, 408 head too slow,
//! 431 head too large) never reach the app, so no middleware sees them. actix reports
//! each one as a tracing event; this layer counts them for `/metrics` and replaces actix's
//! own error lines with one summary line at most every [`LOG_EVERY`], so a flood of bad
//! requests cannot flood the log.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write};
use std::sync::{LazyLock, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, Opts};
use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Filter, Layer};

/// The error `guard` fails a body with to drop a connection instead of serving a request
/// pipelined after a close; actix logs it, and it is no connection error.
pub const PIPELINED: &str = "request pipelined after Connection: close";

/// Where actix reports parse errors, slow heads and broken connections.
pub const ACTIX_DISPATCHER: &str = "actix_http::h1::dispatcher";

const LOG_EVERY: Duration = Duration::from_secs(10);

/// What actix did, from the words it uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    HeadTimeout,
    HeadTooLarge,
    /// Any other error actix logs for a connection (a broken stream, a failed body).
    ConnectionError,
}

impl Rejection {
    const ALL: [Self; 4] = [
        Self::Malformed,
        Self::HeadTimeout,
        Self::HeadTooLarge,
        Self::ConnectionError,
    ];

    /// The status actix answered with, as the metric's label.
    pub fn status(self) -> &'static str {
        match self {
            Self::Malformed => "400",
            Self::HeadTimeout => "408",
            Self::HeadTooLarge => "431",
            Self::ConnectionError => "none",
        }
    }

    fn of(level: Level, message: &str) -> Option<Self> {
        if message.starts_with("parse error") {
            Some(Self::Malformed)
        } else if message.starts_with("timed out on slow request") {
            Some(Self::HeadTimeout)
        } else if message.starts_with("request head was too big") {
            Some(Self::HeadTooLarge)
        } else if level == Level::ERROR
            && !message.starts_with("stream error: request parse")
            && !message.contains(PIPELINED)
        {
            // "stream error" repeats a parse error counted above; other errors count here.
            Some(Self::ConnectionError)
        } else {
            None
        }
    }
}

/// Process-wide counts: the tracing subscriber is process-wide too.
pub static REJECTED: LazyLock<Counts> = LazyLock::new(Counts::new);

pub struct Counts {
    counter: IntCounterVec,
    log: Mutex<Summary>,
}

struct Summary {
    last_line: Option<Instant>,
    since: [u64; 4],
    last_message: String,
}

impl Counts {
    fn new() -> Self {
        let counter = IntCounterVec::new(
            Opts::new(
                "http_requests_rejected_total",
                "Requests the HTTP parser answered itself, by status (none: a connection error).",
            ),
            &["status"],
        )
        .expect("valid metric");
        for rejection in Rejection::ALL {
            counter.with_label_values(&[rejection.status()]);
        }
        Self {
            counter,
            log: Mutex::new(Summary {
                last_line: None,
                since: [0; 4],
                last_message: String::new(),
            }),
        }
    }

    /// For `/metrics`.
    pub fn counter(&self) -> &IntCounterVec {
        &self.counter
    }

    fn record(&self, rejection: Rejection, message: &str) {
        self.counter.with_label_values(&[rejection.status()]).inc();
        let i = Rejection::ALL
            .iter()
            .position(|r| *r == rejection)
            .unwrap_or(0);
        let mut summary = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        summary.since[i] += 1;
        crate::echo::clip(message, 200).clone_into(&mut summary.last_message);
        let due = summary.last_line.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            let line = summary.line();
            summary.last_line = Some(Instant::now());
            summary.since = [0; 4];
            drop(summary);
            tracing::warn!(target: "web_fe::rejections", rejected = %line, "requests refused before routing (counted in /metrics; at most one line per 10 s)");
        }
    }
}

impl Summary {
    /// "400×12 408×3 (last: parse error ...)"
    fn line(&self) -> String {
        let mut line = String::new();
        for (r, n) in Rejection::ALL.iter().zip(self.since) {
            if n > 0 {
                let _ = write!(line, "{}×{n} ", r.status());
            }
        }
        let _ = write!(line, "(last: {})", self.last_message);
        line
    }
}

/// The layer; install it with [`layer`].
pub struct ParserRejections;

/// Sees only actix's dispatcher events, at every level (the 400/408/431 are at TRACE).
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    ParserRejections.with_filter(DispatcherEvents(
        Targets::new().with_target(ACTIX_DISPATCHER, Level::TRACE),
    ))
}

/// actix's TRACE call sites whose first event showed that they never mean a rejection.
/// Several fire on every request (flags, timers); once one is known here, tracing skips it
/// for good instead of dispatching each event to this layer: that cost about a sixth of a
/// health check's instructions.
static SILENT: LazyLock<RwLock<HashSet<Identifier>>> = LazyLock::new(RwLock::default);

/// The dispatcher's events, but for the call sites known to be [`SILENT`].
struct DispatcherEvents(Targets);

impl<S> Filter<S> for DispatcherEvents {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        Filter::<S>::enabled(&self.0, meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let silent = SILENT
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&meta.callsite());
        if silent {
            Interest::never()
        } else {
            Filter::<S>::callsite_enabled(&self.0, meta)
        }
    }
}

/// Marks a call site silent and has tracing ask every filter about it again.
fn silence(site: Identifier) {
    let added = SILENT
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(site);
    // The lock is released first: the rebuild asks `DispatcherEvents` again.
    if added {
        tracing::callsite::rebuild_interest_cache();
    }
}

thread_local! {
    /// Per call site: which rejection its events mean, once read. actix's dispatcher has
    /// many TRACE call sites that fire on every request; after the first time each costs
    /// one lookup instead of formatting its message.
    static KINDS: RefCell<HashMap<Identifier, Option<Rejection>>> = RefCell::new(HashMap::new());
}

impl<S: Subscriber> Layer<S> for ParserRejections {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let id = meta.callsite();
        let known = KINDS.with(|k| k.borrow().get(&id).copied());
        let kind = known.unwrap_or_else(|| {
            let kind = Rejection::of(*meta.level(), &message_of(event));
            // A TRACE site's text starts the same every time, so its kind is known for good;
            // an ERROR site's text is its argument, read on each (rare) event.
            if *meta.level() != Level::ERROR {
                KINDS.with(|k| k.borrow_mut().insert(id.clone(), kind));
                if kind.is_none() {
                    silence(id);
                }
            }
            kind
        });
        if let Some(kind) = kind {
            REJECTED.record(kind, &message_of(event));
        }
    }
}

fn message_of(event: &Event<'_>) -> String {
    struct Message(String);
    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, "{value:?}");
            }
        }
    }
    let mut message = Message(String::new());
    event.record(&mut message);
    message.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actix_messages_map_to_the_status_it_answered() {
        let of = |m| Rejection::of(Level::TRACE, m);
        assert_eq!(
            of("parse error invalid Header provided"),
            Some(Rejection::Malformed)
        );
        assert_eq!(
            of("timed out on slow request; replying with 408 and closing connection"),
            Some(Rejection::HeadTimeout)
        );
        assert_eq!(
            of("request head was too big; returning 431 response"),
            Some(Rejection::HeadTooLarge)
        );
        assert_eq!(of("start flags: Flags(STARTED)"), None);
        assert_eq!(
            Rejection::of(Level::ERROR, "stream error: request parse error: x"),
            None
        );
        assert_eq!(
            Rejection::of(Level::ERROR, "Response payload stream error: x"),
            Some(Rejection::ConnectionError)
        );
    }
}
