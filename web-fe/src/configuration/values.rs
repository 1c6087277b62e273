//! Value parsers for the command line: durations within a range, keep-alive, replica
//! names and Sentinel lists, each with the words an error shows.

use std::ops::RangeInclusive;
use std::time::Duration;

/// `REDIS_SENTINELS` as given: host and port of each.
#[derive(Debug, Clone)]
pub struct SentinelList(pub Vec<(String, u16)>);

pub fn default_workers() -> u16 {
    std::thread::available_parallelism()
        .map_or(1, |n| u16::try_from(n.get().min(256)).unwrap_or(256))
}

pub const ZERO: Duration = Duration::ZERO;

pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A clap value parser for a duration within `range`: every duration is bounded, so none
/// can overflow once running.
pub fn duration_in(
    range: RangeInclusive<Duration>,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        parse_duration(text)
            .filter(|d| range.contains(d))
            .ok_or_else(|| {
                format!(
                    "a duration from {} to {}, such as 500ms, 2s or 1m",
                    show(*range.start()),
                    show(*range.end())
                )
            })
    }
}

/// `None` closes every connection after one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive(pub Option<Duration>);

pub fn keep_alive(text: &str) -> Result<KeepAlive, String> {
    match text.trim() {
        "off" | "0" => Ok(KeepAlive(None)),
        "on" => Ok(KeepAlive(Some(secs(5)))),
        other => duration_in(secs(1)..=secs(600))(other)
            .map(|d| KeepAlive(Some(d)))
            .map_err(|_| "off, on, or an idle timeout from 1s to 10m such as 30s".into()),
    }
}

/// Shown on pages and stored in Redis as a hash field: short and printable.
pub fn replica_name(text: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then(|| text.to_owned())
        .ok_or_else(|| "1 to 64 letters, digits, '-', '_' or '.'".to_owned())
}

/// `0`, or a number with a unit (`250ms`, `2s`, `1m`), by humantime; `5` alone is
/// rejected rather than guessed.
pub fn parse_duration(text: &str) -> Option<Duration> {
    match text.trim() {
        "0" => Some(ZERO),
        t if t.ends_with(|c: char| c.is_ascii_digit()) => None,
        t => humantime::parse_duration(t).ok(),
    }
}

/// `host:port,host:port`: at least one, each with its port.
pub fn sentinel_list(text: &str) -> Result<SentinelList, String> {
    let expected =
        || "Sentinels as host:port, comma-separated, such as sentinel-1:26379".to_owned();
    text.split(',')
        .map(|entry| {
            let (host, port) = entry.trim().rsplit_once(':').ok_or_else(expected)?;
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(expected)?;
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            host_ok
                .then(|| (host.to_owned(), port))
                .ok_or_else(expected)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(SentinelList)
}

/// `1m`, `2s`, `500ms` or `0`, as the settings are written.
pub fn show(d: Duration) -> String {
    match (d.as_millis(), d.subsec_millis()) {
        (0, _) => "0".into(),
        (_, 0) if d.as_secs().is_multiple_of(60) => format!("{}m", d.as_secs() / 60),
        (_, 0) => format!("{}s", d.as_secs()),
        (n, _) => format!("{n}ms"),
    }
}
