//! Bounded background load on a published port, and what it saw.

use std::time::{Duration, Instant};

use crate::http::request_status;
use crate::{reliability_row, wait_for, wait_for_count};

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

    /// Adds another client's requests (a probe sent during a fault) to this tally.
    pub fn add(&mut self, other: LoadReport) {
        self.ok += other.ok;
        for (code, n) in other.failures {
            *self.failures.entry(code).or_default() += n;
        }
        for (address, n) in other.failed_addresses {
            *self.failed_addresses.entry(address).or_default() += n;
        }
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

/// Load that runs until it is finished, then says what it saw: from this machine
/// ([`Load`]) or from a client container ([`crate::client::ClientLoad`]).
pub trait RunningLoad {
    fn finish(self) -> LoadReport;
}

impl RunningLoad for Load {
    fn finish(self) -> LoadReport {
        Load::finish(self)
    }
}

/// Views counted before a fault is injected, and again after it, so that both sides of
/// the fault carry load (half a second to a few seconds of it, by the set-up's speed).
const SETTLING_VIEWS: u64 = 500;
/// Longest wait for the count to move by [`SETTLING_VIEWS`].
const SETTLING: Duration = Duration::from_secs(90);

/// One fault under load: what the load saw, how far `hits` moved, how long the fault
/// took, and what `inject` said of its outcome.
#[derive(Debug)]
pub struct FaultRun {
    pub report: LoadReport,
    pub counted: u64,
    pub took: Duration,
    pub outcome: String,
}

/// Starts `load`, waits until it is counted, injects the fault, waits until views are
/// counted again, then finishes the load. `hits` reads the count, `None` while it cannot.
pub fn under_fault<L: RunningLoad>(
    hits: impl Fn() -> Option<u64>,
    load: impl FnOnce() -> L,
    inject: impl FnOnce() -> String,
) -> FaultRun {
    let before = wait_for("the count before the fault", SETTLING, &hits);
    let load = load();
    counted_past(&hits, before);
    let started = Instant::now();
    let outcome = inject();
    let took = started.elapsed();
    counted_past(
        &hits,
        wait_for("the count after the fault", SETTLING, &hits),
    );
    let report = load.finish();
    // Without the append-only file a killed Redis may come back with fewer.
    let counted = wait_for("the count after the load", SETTLING, &hits).saturating_sub(before);
    FaultRun {
        report,
        counted,
        took,
        outcome,
    }
}

/// Waits until load has moved the count a little past `mark`: it is reaching Redis.
pub fn counted_past(hits: &impl Fn() -> Option<u64>, mark: u64) -> u64 {
    let what = "the load's views to be counted";
    wait_for_count(what, SETTLING, hits, mark, SETTLING_VIEWS)
}

impl FaultRun {
    /// Views answered 200 but not counted; negative when views were counted that were
    /// not answered 200 (a failed request that reached Redis).
    pub fn lost(&self) -> i64 {
        i64::try_from(self.report.ok).unwrap_or(i64::MAX)
            - i64::try_from(self.counted).unwrap_or(i64::MAX)
    }

    /// Its RELIABILITY.md row: fault, injection, requests, failures, lost, outcome.
    pub fn record(&self, fault: &str, injection: &str) {
        let report = &self.report;
        let failing = report.recovery.map_or(String::new(), |d| {
            format!("; failing for {:.2} s", d.as_secs_f64())
        });
        println!("{fault}: {self:?}");
        reliability_row(&format!(
            "{fault} | {injection} | {} | {} {:?} | {} | {} in {:.0} s{failing}",
            report.sent(),
            report.failed(),
            report.failures,
            self.lost(),
            self.outcome,
            self.took.as_secs_f64()
        ));
    }

    /// Every view answered 200 was counted, and only failed requests may have added
    /// views that nobody was told of.
    pub fn assert_nothing_lost(&self, fault: &str) {
        let report = &self.report;
        assert!(report.ok > 0, "nothing was served during {fault}: {self:?}");
        assert!(
            self.lost() <= 0,
            "views answered 200 were not counted during {fault}: {self:?}"
        );
        assert!(
            self.counted - report.ok <= report.failed(),
            "more views counted than were answered or failed during {fault}: {self:?}"
        );
    }
}
