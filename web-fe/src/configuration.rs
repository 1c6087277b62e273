//! The command line and the settings, declared once with clap: each setting is read from
//! its environment variable (or the matching flag), checked against its range at start-up,
//! and listed with its variable, default and range by `web-fe --help`. A bad value stops
//! the process with exit code 2 and a message naming the variable.

use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

/// Counts page views in Redis and shows which replica served each one.
#[derive(Debug, Parser)]
#[command(
    name = "web-fe",
    version = crate::build_info::VERSION,
    after_help = "Every setting is read from the environment variable shown, or the flag. \
                  Durations are written 500ms, 2s, 1m or 0."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 if this replica's /healthz answers 200 on HEALTH_PORT, else 1 (the image's
    /// HEALTHCHECK: there is no shell or curl in it).
    Healthcheck,
}

/// Everything web-fe reads at start-up, by the part of the service it is for.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerSettings,
    #[command(flatten, next_help_heading = "Redis")]
    pub redis: RedisSettings,
    #[command(flatten, next_help_heading = "Replica")]
    pub replica: ReplicaSettings,
    #[command(flatten, next_help_heading = "Logs")]
    pub log: LogSettings,
}

#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on (1-65535).
    #[arg(long, env = "PORT", default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Loopback-only port answering /healthz for `web-fe healthcheck` (1-65535).
    #[arg(long, env = "HEALTH_PORT", default_value_t = 8081, value_parser = clap::value_parser!(u16).range(1..))]
    pub health_port: u16,
    /// Worker threads (1-256; default: the number of CPUs).
    #[arg(long, env = "WORKERS", default_value_t = default_workers(), value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// `off` closes each connection after one response, so every refresh can reach another
    /// replica; `on` (5s) or an idle timeout from 1s to 10m.
    #[arg(long, env = "KEEP_ALIVE", default_value = "off", value_parser = keep_alive)]
    pub keep_alive: KeepAlive,
    /// How long a client may take to send a request's head, 1s-1m (408 after that).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "5s", value_parser = duration_in(secs(1)..=secs(60)))]
    pub request_timeout: Duration,
    /// Open connections per replica, 16-65536; more wait in the kernel's queue.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=65_536))]
    pub max_connections: u32,
    /// Board streams (/api/board/stream) served at once, 1-32768 and at most half of
    /// MAX_CONNECTIONS; more get a 503 with Retry-After, so watchers never take the
    /// connections that views need.
    #[arg(long, env = "MAX_BOARD_STREAMS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=32_768))]
    pub max_board_streams: u32,
    /// After SIGTERM/SIGINT, keep serving this long (readiness fails), 0-10m.
    #[arg(long, env = "SHUTDOWN_DRAIN", default_value = "0", value_parser = duration_in(ZERO..=secs(600)))]
    pub shutdown_drain: Duration,
    /// Then stop accepting and give in-flight requests this long, 0-10m.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = duration_in(ZERO..=secs(600)))]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct RedisSettings {
    /// Redis to count in: redis://[user:password@]host:port[/db] or unix://.
    #[arg(
        long = "redis-url",
        env = "REDIS_URL",
        value_name = "REDIS_URL",
        default_value = "redis://redis:6379",
        hide_env_values = true
    )]
    url: String,
    /// File holding the Redis password (a Docker secret), at most 4096 bytes.
    #[arg(
        long = "redis-password-file",
        env = "REDIS_PASSWORD_FILE",
        value_name = "REDIS_PASSWORD_FILE"
    )]
    password_file: Option<PathBuf>,
    /// Sentinels that name the master, as host:port,host:port (when set, REDIS_URL only
    /// gives the database and user); a failover is followed by asking them again.
    #[arg(
        long = "redis-sentinels",
        env = "REDIS_SENTINELS",
        value_name = "REDIS_SENTINELS",
        value_parser = sentinel_list
    )]
    sentinels: Option<SentinelList>,
    /// The name the Sentinels monitor the master under.
    #[arg(
        long = "redis-master-name",
        env = "REDIS_MASTER_NAME",
        value_name = "REDIS_MASTER_NAME",
        default_value = "counter"
    )]
    master_name: String,
    /// How long a view waits for a replica to hold it too (WAIT) before it is answered on
    /// the master's copy alone, 10ms-10s; only where the master has replicas.
    #[arg(long = "redis-replica-wait", env = "REDIS_REPLICA_WAIT", value_name = "REDIS_REPLICA_WAIT", default_value = "250ms", value_parser = duration_in(ms(10)..=secs(10)))]
    pub replica_wait: Duration,
    /// How long a request may wait for Redis before it gets a 503, 10ms-1m.
    #[arg(long = "redis-timeout", env = "REDIS_TIMEOUT", value_name = "REDIS_TIMEOUT", default_value = "500ms", value_parser = duration_in(ms(10)..=secs(60)))]
    pub timeout: Duration,
    /// How long a view whose connection broke mid-call keeps trying, 0-1m.
    #[arg(long = "redis-restart-grace", env = "REDIS_RESTART_GRACE", value_name = "REDIS_RESTART_GRACE", default_value = "3s", value_parser = duration_in(ZERO..=secs(60)))]
    pub restart_grace: Duration,
    /// Where to connect, with the password: set by [`Cli::from_env`].
    #[arg(skip)]
    target: Option<RedisTarget>,
}

/// Where the counting Redis is.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One address (`REDIS_URL`).
    Direct(ConnectionInfo),
    /// The master the Sentinels name; `redis` holds the password and database for it.
    Sentinels {
        sentinels: Vec<ConnectionInfo>,
        master: String,
        redis: RedisConnectionInfo,
    },
}

impl fmt::Display for RedisTarget {
    /// For the start-up log: addresses only, never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct(info) => write!(f, "{}", info.addr()),
            Self::Sentinels {
                sentinels, master, ..
            } => {
                write!(f, "the master {master:?} named by the Sentinels at ")?;
                let addrs: Vec<_> = sentinels.iter().map(|s| s.addr().to_string()).collect();
                f.write_str(&addrs.join(", "))
            }
        }
    }
}

/// `REDIS_SENTINELS` as given: host and port of each.
#[derive(Debug, Clone)]
pub struct SentinelList(Vec<(String, u16)>);

#[derive(Debug, Clone, Args)]
pub struct ReplicaSettings {
    /// Swarm task slot shown under the hostname (stack.yml sets it).
    #[arg(long, env = "TASK_SLOT")]
    pub task_slot: Option<String>,
    /// Swarm node shown under the hostname (stack.yml sets it).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Name on the page and the board, 1-64 letters, digits, '-', '_' or '.' (default: the
    /// hostname, which Docker sets to the container id); for processes sharing one host.
    #[arg(long = "replica-name", env = "REPLICA_NAME", value_name = "REPLICA_NAME", value_parser = replica_name)]
    pub name: Option<String>,
    /// How often this replica tells Redis it is alive, 200ms-10s; it is shown as gone
    /// after three missed beats.
    #[arg(long = "heartbeat", env = "HEARTBEAT", value_name = "HEARTBEAT", default_value = "1s", value_parser = duration_in(ms(200)..=secs(10)))]
    pub heartbeat: Duration,
    /// How long a stopped replica stays on the board, marked, before it drops off, 5s-1h.
    #[arg(long = "replica-forget", env = "REPLICA_FORGET", value_name = "REPLICA_FORGET", default_value = "30s", value_parser = duration_in(secs(5)..=secs(3600)))]
    pub forget: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// One line per request, as text or JSON.
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        default_value = "text"
    )]
    pub format: LogFormat,
    /// Log filter, such as info or web_fe=debug.
    #[arg(
        long = "log-filter",
        env = "RUST_LOG",
        value_name = "RUST_LOG",
        default_value = "info"
    )]
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `None` closes every connection after one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive(pub Option<Duration>);

/// A setting that could not be used: which variable, what it held, what was expected.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub var: String,
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

/// Why start-up stops: clap's own message (it names the variable), or ours.
#[derive(Debug)]
pub enum StartError {
    /// Bad or missing input, help or version: clap prints it and picks the exit code.
    Cli(clap::Error),
    Config(ConfigError),
}

impl Cli {
    /// Reads the command line and the environment, and checks what clap cannot: values
    /// that are not UTF-8 (clap would not say which), the Redis URL (whose password an
    /// error must not echo) and the password file.
    pub fn from_env() -> Result<Self, StartError> {
        reject_non_utf8()?;
        let mut cli = Self::try_parse().map_err(StartError::Cli)?;
        cli.settings.complete().map_err(StartError::Config)?;
        Ok(cli)
    }
}

impl Settings {
    /// What clap checks one value at a time cannot: rules between values, and the Redis
    /// target.
    fn complete(&mut self) -> Result<(), ConfigError> {
        self.server.check()?;
        self.redis.resolve()
    }
}

impl ServerSettings {
    fn check(&self) -> Result<(), ConfigError> {
        if self.max_board_streams > self.max_connections / 2 {
            return Err(ConfigError {
                var: "MAX_BOARD_STREAMS".into(),
                value: self.max_board_streams.to_string(),
                expected: format!(
                    "at most half of MAX_CONNECTIONS ({}), so views always find a connection",
                    self.max_connections
                ),
            });
        }
        Ok(())
    }
}

impl RedisSettings {
    /// Where to connect, password included.
    pub fn target(&self) -> &RedisTarget {
        self.target
            .as_ref()
            .expect("Cli::from_env resolves the Redis settings before anything runs")
    }

    fn resolve(&mut self) -> Result<(), ConfigError> {
        let mut info = parse_redis_url(&self.url).map_err(|expected| ConfigError {
            var: "REDIS_URL".into(),
            value: redact_url(&self.url),
            expected,
        })?;
        if let Some(path) = &self.password_file {
            let password = read_password(path)?;
            let auth = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(auth);
        }
        self.target = Some(match &self.sentinels {
            None => RedisTarget::Direct(info),
            Some(SentinelList(hosts)) => {
                // The Sentinels take the same password as the copies they watch.
                let auth = match info.redis_settings().password() {
                    Some(password) => RedisConnectionInfo::default().set_password(password),
                    None => RedisConnectionInfo::default(),
                };
                let sentinels = hosts
                    .iter()
                    .map(|(host, port)| {
                        (host.as_str(), *port)
                            .into_connection_info()
                            .map(|i| i.set_redis_settings(auth.clone()))
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|e| ConfigError {
                        var: "REDIS_SENTINELS".into(),
                        value: format!("{hosts:?}"),
                        expected: e.to_string(),
                    })?;
                RedisTarget::Sentinels {
                    sentinels,
                    master: self.master_name.clone(),
                    redis: info.redis_settings().clone(),
                }
            }
        });
        Ok(())
    }
}

fn default_workers() -> u16 {
    std::thread::available_parallelism()
        .map_or(1, |n| u16::try_from(n.get().min(256)).unwrap_or(256))
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

/// A clap value parser for a duration within `range`: every duration is bounded, so none
/// can overflow once running.
fn duration_in(
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

fn keep_alive(text: &str) -> Result<KeepAlive, String> {
    match text.trim() {
        "off" | "0" => Ok(KeepAlive(None)),
        "on" => Ok(KeepAlive(Some(secs(5)))),
        other => duration_in(secs(1)..=secs(600))(other)
            .map(|d| KeepAlive(Some(d)))
            .map_err(|_| "off, on, or an idle timeout from 1s to 10m such as 30s".into()),
    }
}

/// Shown on pages and stored in Redis as a hash field: short and printable.
fn replica_name(text: &str) -> Result<String, String> {
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

fn parse_redis_url(url: &str) -> Result<ConnectionInfo, String> {
    let info = url
        .trim()
        .into_connection_info()
        .map_err(|_| "a URL such as redis://redis:6379".to_owned())?;
    // Also rejects schemes this build cannot open (rediss:// needs TLS support).
    redis::Client::open(info.clone())
        .map_err(|_| "a redis:// or unix:// URL (TLS is not built in)".to_owned())?;
    Ok(info)
}

/// `host:port,host:port`: at least one, each with its port.
fn sentinel_list(text: &str) -> Result<SentinelList, String> {
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

/// Docker secrets arrive as files; the password never sits in the environment.
fn read_password(path: &std::path::Path) -> Result<String, ConfigError> {
    let error = |expected: String| ConfigError {
        var: "REDIS_PASSWORD_FILE".into(),
        value: path.display().to_string(),
        expected,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_PASSWORD_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| error(format!("a readable file ({e})")))?;
    if bytes.len() as u64 > MAX_PASSWORD_BYTES {
        return Err(error(format!(
            "a file holding the Redis password, at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| error("a file holding the Redis password as UTF-8 text".into()))?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(error(
            "a file holding the Redis password, but it is empty".into(),
        ));
    }
    Ok(password.to_owned())
}

/// Every variable the command line declares must hold UTF-8; clap would reject one that
/// does not without naming it.
fn reject_non_utf8() -> Result<(), StartError> {
    let command = Cli::command();
    let vars = command
        .get_arguments()
        .chain(
            command
                .get_subcommands()
                .flat_map(clap::Command::get_arguments),
        )
        .filter_map(clap::Arg::get_env);
    for var in vars {
        if let Some(value) = std::env::var_os(var)
            && value.to_str().is_none()
        {
            return Err(StartError::Config(ConfigError {
                var: var.to_string_lossy().into_owned(),
                value: value.to_string_lossy().into_owned(),
                expected: "text in UTF-8".into(),
            }));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses flags only: the process environment is shared by every test.
    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut cli = Cli::try_parse_from(std::iter::once("web-fe").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.settings.complete().map_err(|e| e.to_string())?;
        Ok(cli.settings)
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.server.host.to_string(), "0.0.0.0");
        assert_eq!(s.server.health_port, 8081);
        let RedisTarget::Direct(info) = s.redis.target() else {
            panic!("no REDIS_SENTINELS means one address");
        };
        assert_eq!(info.addr().to_string(), "redis:6379");
        assert_eq!(s.redis.timeout, ms(500));
        assert_eq!(s.redis.restart_grace, secs(3));
        assert_eq!(s.server.keep_alive, KeepAlive(None));
        assert_eq!(s.server.request_timeout, secs(5));
        assert_eq!(s.server.max_connections, 256);
        assert_eq!(s.server.max_board_streams, 64);
        assert_eq!(s.log.format, LogFormat::Text);
        assert_eq!(s.server.shutdown_timeout, secs(5));
        assert_eq!(s.server.shutdown_drain, ZERO);
        assert_eq!(s.replica.heartbeat, secs(1));
        assert_eq!(s.replica.forget, secs(30));
        assert_eq!(s.replica.name, None);
        assert!(s.server.workers >= 1);
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        for (flag, var, value) in [
            ("--port", "PORT", "eighty"),
            ("--port", "PORT", "0"),
            ("--port", "PORT", "70000"),
            ("--host", "HOST", "localhost:1"),
            ("--redis-timeout", "REDIS_TIMEOUT", "0"),
            ("--redis-timeout", "REDIS_TIMEOUT", "500"),
            ("--redis-timeout", "REDIS_TIMEOUT", "61s"),
            ("--redis-timeout", "REDIS_TIMEOUT", "99999999999999999m"),
            ("--redis-restart-grace", "REDIS_RESTART_GRACE", "2m"),
            ("--heartbeat", "HEARTBEAT", "100ms"),
            ("--heartbeat", "HEARTBEAT", "2000000000000m"),
            ("--replica-forget", "REPLICA_FORGET", "2h"),
            ("--replica-name", "REPLICA_NAME", "two words"),
            ("--keep-alive", "KEEP_ALIVE", "sometimes"),
            ("--keep-alive", "KEEP_ALIVE", "11m"),
            ("--workers", "WORKERS", "0"),
            ("--workers", "WORKERS", "-3"),
            ("--log-format", "LOG_FORMAT", "xml"),
            ("--shutdown-timeout", "SHUTDOWN_TIMEOUT", "5 fortnights"),
            ("--shutdown-timeout", "SHUTDOWN_TIMEOUT", "11m"),
            ("--shutdown-drain", "SHUTDOWN_DRAIN", "11m"),
            ("--request-timeout", "REQUEST_TIMEOUT", "500ms"),
            ("--max-connections", "MAX_CONNECTIONS", "8"),
            ("--max-board-streams", "MAX_BOARD_STREAMS", "0"),
            ("--max-board-streams", "MAX_BOARD_STREAMS", "129"),
            ("--health-port", "HEALTH_PORT", "0"),
            ("--redis-url", "REDIS_URL", "http://redis"),
            ("--redis-sentinels", "REDIS_SENTINELS", "sentinel-1"),
            ("--redis-sentinels", "REDIS_SENTINELS", "a:26379,b:0"),
            ("--redis-sentinels", "REDIS_SENTINELS", ""),
            ("--redis-replica-wait", "REDIS_REPLICA_WAIT", "11s"),
            ("--redis-url", "REDIS_URL", "rediss://redis:6379"),
            (
                "--redis-password-file",
                "REDIS_PASSWORD_FILE",
                "/nonexistent/secret",
            ),
        ] {
            let Err(err) = parse(&[&format!("{flag}={value}")]) else {
                panic!("{flag}={value} was accepted");
            };
            assert!(err.contains(var), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn range_limits_are_accepted() {
        let s = parse(&[
            "--redis-timeout=1m",
            "--redis-restart-grace=0",
            "--replica-forget=1h",
            "--heartbeat=10s",
            "--keep-alive=10m",
            "--shutdown-timeout=10m",
            "--max-connections=65536",
            "--max-board-streams=32768",
        ])
        .unwrap();
        assert_eq!(s.replica.forget, secs(3600));
        assert_eq!(s.replica.heartbeat, secs(10));
        assert_eq!(s.server.max_connections, 65_536);
        assert_eq!(s.server.max_board_streams, 32_768);
        assert_eq!(s.server.keep_alive, KeepAlive(Some(secs(600))));
    }

    #[test]
    fn keep_alive_accepts_off_on_and_durations() {
        assert_eq!(keep_alive("off"), Ok(KeepAlive(None)));
        assert_eq!(keep_alive("on"), Ok(KeepAlive(Some(secs(5)))));
        assert_eq!(keep_alive("30s"), Ok(KeepAlive(Some(secs(30)))));
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Some(ms(250)));
        assert_eq!(parse_duration("2s"), Some(secs(2)));
        assert_eq!(parse_duration("1m"), Some(secs(60)));
        assert_eq!(parse_duration("0"), Some(ZERO));
        for bad in ["5", "ms", "-1s", "soon", ""] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_rejected_url_never_shows_its_password() {
        let err = parse(&["--redis-url", "http://admin:hunter2@redis:6379"]).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("admin:***@redis"), "{err}");
        assert_eq!(redact_url("redis://:p@ss@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn sentinels_carry_the_password_and_the_master_name() {
        let path = std::env::temp_dir().join(format!("web-fe-sentinel-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let s = parse(&[
            "--redis-password-file",
            path.to_str().unwrap(),
            "--redis-sentinels",
            "sentinel-1:26379, sentinel-2:26380",
            "--redis-master-name",
            "count",
        ])
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        let RedisTarget::Sentinels {
            sentinels,
            master,
            redis,
        } = s.redis.target()
        else {
            panic!("REDIS_SENTINELS was set");
        };
        let addrs: Vec<_> = sentinels.iter().map(|i| i.addr().to_string()).collect();
        assert_eq!(addrs, ["sentinel-1:26379", "sentinel-2:26380"]);
        assert!(
            sentinels
                .iter()
                .all(|i| i.redis_settings().password() == Some("s3cret"))
        );
        assert_eq!(master, "count");
        assert_eq!(redis.password(), Some("s3cret"));
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
        let s = parse(&["--redis-password-file", path.to_str().unwrap()]).unwrap();
        std::fs::remove_file(&path).unwrap();
        let RedisTarget::Direct(info) = s.redis.target() else {
            panic!("no REDIS_SENTINELS means one address");
        };
        assert_eq!(info.redis_settings().password(), Some("s3cret"));
    }
}
