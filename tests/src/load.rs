//! Bounded background load on a published port, and what it saw.

use std::time::{Duration, Instant};

use crate::http::request_status;

/// What a load run saw: each request's outcome, by kind.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Requests answered 200.
    pub ok: u64,
    /// Other answers and transport errors, by status code or error kind.
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Failures by the replica address they went to (from a client inside a Docker
    /// network, which sees replicas' own addresses; `none` when none was reached).
    pub failed_addresses: std::collections::BTreeMap<String, u64>,
    /// Time from the first failure to the first success after it, if anything failed.
    pub recovery: Option<Duration>,
}

impl LoadReport {
    pub fn sent(&self) -> u64 {
        self.ok + self.failed()
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// When a request finished, and its status or the kind of transport failure.
type Outcome = (Instant, Result<u16, String>);

/// Background clients sending GETs to 127.0.0.1:`port`, one new connection per request,
/// until [`Load::finish`], `max_requests` in all or `max_time`, whichever comes first.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    pub fn start(
        port: u16,
        path: &str,
        clients: usize,
        max_requests: u64,
        max_time: Duration,
    ) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let budget = Arc::new(AtomicU64::new(max_requests));
        let deadline = Instant::now() + max_time;
        let clients = (0..clients)
            .map(|_| {
                let (stop, budget, path) =
                    (Arc::clone(&stop), Arc::clone(&budget), path.to_owned());
                std::thread::spawn(move || {
                    let mut outcomes = Vec::new();
                    while !stop.load(Ordering::Relaxed)
                        && Instant::now() < deadline
                        && budget
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_ok()
                    {
                        outcomes.push((Instant::now(), request_status(port, &path)));
                        // A gentle pace: continuous, but leaves the 2 cores to the servers.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    outcomes
                })
            })
            .collect();
        Self { stop, clients }
    }

    pub fn finish(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut outcomes: Vec<Outcome> = self
            .clients
            .into_iter()
            .flat_map(|c| c.join().expect("load client panicked"))
            .collect();
        outcomes.sort_by_key(|(at, _)| *at);
        summarise(
            outcomes
                .iter()
                .map(|(at, r)| (*at, r.as_ref().map(|s| *s).map_err(String::as_str))),
        )
    }
}

/// Counts outcomes and the recovery time, from results in time order.
pub fn summarise<'a>(
    outcomes: impl Iterator<Item = (Instant, Result<u16, &'a str>)>,
) -> LoadReport {
    let mut report = LoadReport::default();
    let mut first_failure: Option<Instant> = None;
    for (at, outcome) in outcomes {
        match outcome {
            Ok(200) => {
                report.ok += 1;
                if let (Some(failed_at), None) = (first_failure, report.recovery) {
                    report.recovery = Some(at - failed_at);
                }
            }
            other => {
                first_failure.get_or_insert(at);
                let kind = match other {
                    Ok(status) => status.to_string(),
                    Err(e) => e.to_owned(),
                };
                *report.failures.entry(kind).or_default() += 1;
            }
        }
    }
    report
}
