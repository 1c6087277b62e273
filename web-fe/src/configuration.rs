//! Settings read from the environment. Every value is checked at start-up so a typo
//! stops the process with a message naming the variable, instead of failing later.

use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use deadpool_redis::redis::{self, ConnectionInfo, IntoConnectionInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where and how the service runs; built once by [`Settings::from_env`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: IpAddr,
    pub port: u16,
    pub redis: ConnectionInfo,
    pub redis_timeout: Duration,
    /// How long a view caught by a broken Redis connection keeps retrying, so that a Redis
    /// restart neither loses nor double-counts it.
    pub redis_restart_grace: Duration,
    /// `None` closes every connection after one response, so each browser refresh opens a
    /// new one and swarm's per-connection balancing can pick another replica.
    pub keep_alive: Option<Duration>,
    pub workers: usize,
    pub log_format: LogFormat,
    pub log_filter: String,
    /// How long in-flight requests may run on after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// How long to keep serving after the signal, while the orchestrator stops routing here.
    pub shutdown_drain: Duration,
    /// After this long without a request, a replica starts fading on the page.
    pub replica_stale: Duration,
    pub task_slot: Option<String>,
    pub node_name: Option<String>,
    /// How long a client may take to send a request's head; a request body is never waited for.
    pub request_timeout: Duration,
    /// Open connections this replica holds at most; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Loopback port answering `/healthz` for the container health check only.
    pub health_port: u16,
}

/// A setting that could not be used: which variable, what it held, what was expected.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(raw)) => Err(raw.to_string_lossy().into_owned()),
        })
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    /// `lookup` gives `Err` with a lossy copy of a value that is not UTF-8.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Result<Option<String>, String>,
    ) -> Result<Self, ConfigError> {
        let var = |name: &'static str| match lookup(name) {
            Ok(value) => Ok(Var {
                name,
                value: value.filter(|v| !v.trim().is_empty()),
            }),
            Err(lossy) => Err(ConfigError {
                var: name,
                value: lossy,
                expected: "text in UTF-8".into(),
            }),
        };
        let mut redis = var("REDIS_URL")?.redis_url("redis://redis:6379")?;
        if let Some(password) = var("REDIS_PASSWORD_FILE")?.password_file()? {
            let auth = redis.redis_settings().clone().set_password(password);
            redis = redis.set_redis_settings(auth);
        }
        Ok(Self {
            host: var("HOST")?.parse_or("0.0.0.0".parse().expect("literal"), "an IP address")?,
            port: var("PORT")?.port(8080)?,
            redis,
            redis_timeout: var("REDIS_TIMEOUT")?.duration(ms(500), ms(10)..=secs(60))?,
            redis_restart_grace: var("REDIS_RESTART_GRACE")?.duration(secs(3), ZERO..=secs(60))?,
            keep_alive: var("KEEP_ALIVE")?.keep_alive()?,
            workers: var("WORKERS")?.count(default_workers(), 1..=256)?,
            log_format: var("LOG_FORMAT")?.log_format()?,
            log_filter: var("RUST_LOG")?.value.unwrap_or_else(|| "info".into()),
            shutdown_timeout: var("SHUTDOWN_TIMEOUT")?.duration(secs(5), ZERO..=secs(600))?,
            shutdown_drain: var("SHUTDOWN_DRAIN")?.duration(ZERO, ZERO..=secs(600))?,
            replica_stale: var("REPLICA_STALE")?.duration(secs(30), secs(1)..=secs(3600))?,
            task_slot: var("TASK_SLOT")?.value,
            node_name: var("NODE_NAME")?.value,
            // actix times heads from a clock it updates every 500 ms: below 1 s would cut good ones.
            request_timeout: var("REQUEST_TIMEOUT")?.duration(secs(5), secs(1)..=secs(60))?,
            max_connections: var("MAX_CONNECTIONS")?.count(256, 16..=65_536)?,
            health_port: var("HEALTH_PORT")?.port(8081)?,
        })
    }
}

const ZERO: Duration = Duration::ZERO;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Longest password file read; Redis passwords are short, and a huge file is a mistake.
const MAX_PASSWORD_BYTES: u64 = 4096;

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// One environment variable, with the parsers the settings need.
struct Var {
    name: &'static str,
    value: Option<String>,
}

impl Var {
    fn error(&self, expected: &str) -> ConfigError {
        ConfigError {
            var: self.name,
            value: self.value.clone().unwrap_or_default(),
            expected: expected.into(),
        }
    }

    fn parse_or<T: std::str::FromStr>(&self, default: T, expected: &str) -> Result<T, ConfigError> {
        match &self.value {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| self.error(expected)),
        }
    }

    fn port(&self, default: u16) -> Result<u16, ConfigError> {
        let port = self.parse_or(default, "a port number from 1 to 65535")?;
        if port == 0 {
            return Err(self.error("a port number from 1 to 65535"));
        }
        Ok(port)
    }

    fn count(&self, default: usize, range: RangeInclusive<usize>) -> Result<usize, ConfigError> {
        let expected = format!("a whole number from {} to {}", range.start(), range.end());
        match self.parse_or(default, &expected)? {
            n if range.contains(&n) => Ok(n),
            _ => Err(self.error(&expected)),
        }
    }

    /// A duration within `range`: every duration is bounded, so none can overflow later.
    fn duration(
        &self,
        default: Duration,
        range: RangeInclusive<Duration>,
    ) -> Result<Duration, ConfigError> {
        let expected = format!(
            "a duration from {} to {}, such as 500ms, 2s or 1m",
            show(*range.start()),
            show(*range.end())
        );
        match &self.value {
            None => Ok(default),
            Some(v) => parse_duration(v)
                .filter(|d| range.contains(d))
                .ok_or_else(|| self.error(&expected)),
        }
    }

    fn keep_alive(&self) -> Result<Option<Duration>, ConfigError> {
        const EXPECTED: &str = "off, on, or an idle timeout from 1s to 10m such as 30s";
        match self.value.as_deref().map(str::trim) {
            None | Some("off" | "0") => Ok(None),
            Some("on") => Ok(Some(secs(5))),
            Some(v) => parse_duration(v)
                .filter(|d| (secs(1)..=secs(600)).contains(d))
                .map(Some)
                .ok_or_else(|| self.error(EXPECTED)),
        }
    }

    fn log_format(&self) -> Result<LogFormat, ConfigError> {
        match self.value.as_deref().map(str::trim) {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(_) => Err(self.error("text or json")),
        }
    }

    fn redis_url(&self, default: &str) -> Result<ConnectionInfo, ConfigError> {
        let url = self.value.as_deref().unwrap_or(default).trim();
        // The URL may hold a password: an error shows it redacted.
        let error = |expected: &str| ConfigError {
            value: redact_url(url),
            ..self.error(expected)
        };
        let info = url
            .into_connection_info()
            .map_err(|_| error("a URL such as redis://redis:6379"))?;
        // Also rejects schemes this build cannot open (rediss:// needs TLS support).
        redis::Client::open(info.clone())
            .map_err(|_| error("a redis:// or unix:// URL (TLS is not built in)"))?;
        Ok(info)
    }

    /// Docker secrets arrive as files; the password never sits in the environment.
    fn password_file(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.value else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path.trim())
            .and_then(|file| file.take(MAX_PASSWORD_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| self.error(&format!("a readable file ({e})")))?;
        if bytes.len() as u64 > MAX_PASSWORD_BYTES {
            return Err(self.error(&format!(
                "a file holding the Redis password, at most {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| self.error("a file holding the Redis password as UTF-8 text"))?;
        let password = text.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            return Err(self.error("a file holding the Redis password, but it is empty"));
        }
        Ok(Some(password.to_owned()))
    }
}

/// `redis://user:secret@host` as `redis://user:***@host`: anything between `//` and the
/// last `@` may be a password. Errors and logs show this, never the URL as given.
pub fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let Some(at) = url[start..].rfind('@').map(|i| i + start) else {
        return url.to_owned();
    };
    let user = url[start..at].split(':').next().unwrap_or("");
    format!("{}{user}:***{}", &url[..start], &url[at..])
}

/// `1m`, `2s`, `500ms` or `0`, as the settings are written.
fn show(d: Duration) -> String {
    match (d.as_millis(), d.subsec_millis()) {
        (0, _) => "0".into(),
        (_, 0) if d.as_secs().is_multiple_of(60) => format!("{}m", d.as_secs() / 60),
        (_, 0) => format!("{}s", d.as_secs()),
        (n, _) => format!("{n}ms"),
    }
}

/// Parses `0`, `250ms`, `2s` or `1m`: whole numbers with a unit, so `5` alone is rejected
/// rather than guessed.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| {
            Ok(pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string()))
        })
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.host.to_string(), "0.0.0.0");
        assert_eq!(s.redis.addr().to_string(), "redis:6379");
        assert_eq!(s.redis_timeout, Duration::from_millis(500));
        assert_eq!(s.redis_restart_grace, Duration::from_secs(3));
        assert_eq!(s.keep_alive, None);
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(s.shutdown_drain, Duration::ZERO);
        assert!(s.workers >= 1);
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        for (var, value) in [
            ("PORT", "eighty"),
            ("PORT", "0"),
            ("PORT", "70000"),
            ("HOST", "localhost:1"),
            ("REDIS_URL", "http://redis"),
            ("REDIS_URL", "rediss://redis:6379"),
            ("REDIS_TIMEOUT", "0"),
            ("REDIS_TIMEOUT", "500"),
            ("KEEP_ALIVE", "sometimes"),
            ("WORKERS", "0"),
            ("WORKERS", "-3"),
            ("LOG_FORMAT", "xml"),
            ("SHUTDOWN_TIMEOUT", "5 seconds"),
            ("REDIS_PASSWORD_FILE", "/nonexistent/secret"),
            ("REDIS_TIMEOUT", "61s"),
            ("REDIS_TIMEOUT", "99999999999999999m"),
            ("REDIS_RESTART_GRACE", "2m"),
            ("REPLICA_STALE", "0"),
            ("REPLICA_STALE", "2000000000000m"),
            ("KEEP_ALIVE", "11m"),
            ("SHUTDOWN_TIMEOUT", "11m"),
            ("SHUTDOWN_DRAIN", "11m"),
            ("REQUEST_TIMEOUT", "500ms"),
            ("MAX_CONNECTIONS", "8"),
        ] {
            let err = settings(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{value}");
            assert!(
                err.to_string().starts_with(&format!("invalid {var}=")),
                "{err}"
            );
        }
    }

    #[test]
    fn keep_alive_accepts_off_on_and_durations() {
        assert_eq!(settings(&[("KEEP_ALIVE", "off")]).unwrap().keep_alive, None);
        assert_eq!(
            settings(&[("KEEP_ALIVE", "on")]).unwrap().keep_alive,
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            settings(&[("KEEP_ALIVE", "30s")]).unwrap().keep_alive,
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_mins(1)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["5", "ms", "-1s", "1.5s", "1h", ""] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn range_limits_are_accepted() {
        let s = settings(&[
            ("REDIS_TIMEOUT", "1m"),
            ("REDIS_RESTART_GRACE", "0"),
            ("REPLICA_STALE", "60m"),
            ("KEEP_ALIVE", "10m"),
            ("SHUTDOWN_TIMEOUT", "10m"),
            ("MAX_CONNECTIONS", "65536"),
        ])
        .unwrap();
        assert_eq!(s.replica_stale, secs(3600));
        assert_eq!(s.max_connections, 65_536);
    }

    #[test]
    fn a_value_that_is_not_utf8_names_its_variable() {
        let err = Settings::from_lookup(|name| {
            if name == "REDIS_TIMEOUT" {
                Err("5\u{fffd}s".into())
            } else {
                Ok(None)
            }
        })
        .unwrap_err();
        assert_eq!(err.var, "REDIS_TIMEOUT");
        assert_eq!(err.expected, "text in UTF-8");
    }

    #[test]
    fn a_rejected_url_never_shows_its_password() {
        let err = settings(&[("REDIS_URL", "http://admin:hunter2@redis:6379")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("admin:***@redis"), "{err}");
        assert_eq!(redact_url("redis://:p@ss@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn range_bounds_are_written_as_settings_are() {
        assert_eq!(show(ms(500)), "500ms");
        assert_eq!(show(secs(5)), "5s");
        assert_eq!(show(secs(600)), "10m");
        assert_eq!(show(ZERO), "0");
    }

    #[test]
    fn password_file_is_read_without_its_newline() {
        let path = std::env::temp_dir().join(format!("web-fe-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let s = settings(&[("REDIS_PASSWORD_FILE", path.to_str().unwrap())]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(s.redis.redis_settings().password(), Some("s3cret"));
    }
}
