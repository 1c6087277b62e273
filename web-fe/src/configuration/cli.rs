//! The command line, declared once with clap: each setting is read from its environment
//! variable (or the matching flag), checked against its range, and listed with its
//! variable, default and range by `web-fe --help`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::values::{
    KeepAlive, SentinelList, ZERO, default_workers, duration_in, keep_alive, ms, replica_name,
    secs, sentinel_list,
};

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
    pub settings: SettingsArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 if this replica's /healthz answers 200 on HEALTH_PORT, else 1 (the image's
    /// HEALTHCHECK: there is no shell or curl in it).
    Healthcheck,
}

/// Everything web-fe reads at start-up, by the part of the service it is for, as given;
/// [`super::Settings`] is the checked form.
#[derive(Debug, Clone, Args)]
pub struct SettingsArgs {
    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerSettings,
    #[command(flatten, next_help_heading = "Redis")]
    pub redis: RedisArgs,
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
    /// Port to listen on (0-65535; 0 takes a free one, named in the start-up log).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Loopback-only port answering /healthz for `web-fe healthcheck` (0-65535; 0 takes a
    /// free one, named in the start-up log, which `healthcheck` cannot then ask).
    #[arg(long, env = "HEALTH_PORT", default_value_t = 8081)]
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

/// The Redis settings as given; [`super::RedisSettings`] is what they mean.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis to count in: redis://[user:password@]host:port[/db] or unix://.
    #[arg(
        long = "redis-url",
        env = "REDIS_URL",
        value_name = "REDIS_URL",
        default_value = "redis://redis:6379",
        hide_env_values = true
    )]
    pub url: String,
    /// File holding the Redis password (a Docker secret), at most 4096 bytes.
    #[arg(
        long = "redis-password-file",
        env = "REDIS_PASSWORD_FILE",
        value_name = "REDIS_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// Sentinels that name the master, as host:port,host:port (when set, REDIS_URL only
    /// gives the database and user); a failover is followed by asking them again.
    #[arg(
        long = "redis-sentinels",
        env = "REDIS_SENTINELS",
        value_name = "REDIS_SENTINELS",
        value_parser = sentinel_list
    )]
    pub sentinels: Option<SentinelList>,
    /// The name the Sentinels monitor the master under.
    #[arg(
        long = "redis-master-name",
        env = "REDIS_MASTER_NAME",
        value_name = "REDIS_MASTER_NAME",
        default_value = "counter"
    )]
    pub master_name: String,
    /// How long a view waits for a replica to hold it too (WAIT) before it is answered on
    /// the master's copy alone, 10ms-10s; only where the master has replicas.
    #[arg(long = "redis-replica-wait", env = "REDIS_REPLICA_WAIT", value_name = "REDIS_REPLICA_WAIT", default_value = "250ms", value_parser = duration_in(ms(10)..=secs(10)))]
    pub replica_wait: Duration,
    /// How long a request may wait for Redis before it gets a 503, 10ms-1m.
    #[arg(long = "redis-timeout", env = "REDIS_TIMEOUT", value_name = "REDIS_TIMEOUT", default_value = "500ms", value_parser = duration_in(ms(10)..=secs(60)))]
    pub timeout: Duration,
    /// How long a view keeps trying while Redis restarts or hands the master role over, 0-1m.
    #[arg(long = "redis-restart-grace", env = "REDIS_RESTART_GRACE", value_name = "REDIS_RESTART_GRACE", default_value = "3s", value_parser = duration_in(ZERO..=secs(60)))]
    pub restart_grace: Duration,
}

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
