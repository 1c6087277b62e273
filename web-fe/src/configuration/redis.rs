//! The Redis settings, checked: where to connect (one address, or the master that the
//! Sentinels name), with the password read from its file; errors and logs never show it.

use std::fmt;
use std::io::Read;
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use super::ConfigError;
use super::cli::RedisArgs;
use super::values::SentinelList;

/// How web-fe talks to Redis, every field set.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Where to connect, password included.
    pub target: RedisTarget,
    pub replica_wait: Duration,
    pub timeout: Duration,
    pub restart_grace: Duration,
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

impl TryFrom<RedisArgs> for RedisSettings {
    type Error = ConfigError;

    fn try_from(args: RedisArgs) -> Result<Self, ConfigError> {
        Ok(Self {
            target: target(&args)?,
            replica_wait: args.replica_wait,
            timeout: args.timeout,
            restart_grace: args.restart_grace,
        })
    }
}

/// Where to connect: the URL's address and database, the password from its file, and the
/// Sentinels (with the same password) when they are given.
fn target(args: &RedisArgs) -> Result<RedisTarget, ConfigError> {
    let mut info = parse_redis_url(&args.url).map_err(|expected| ConfigError {
        var: "REDIS_URL".into(),
        value: redact_url(&args.url),
        expected,
    })?;
    if let Some(path) = &args.password_file {
        let password = read_password(path)?;
        let auth = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(auth);
    }
    let Some(SentinelList(hosts)) = &args.sentinels else {
        return Ok(RedisTarget::Direct(info));
    };
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
    Ok(RedisTarget::Sentinels {
        sentinels,
        master: args.master_name.clone(),
        redis: info.redis_settings().clone(),
    })
}

/// Longest password file read; Redis passwords are short, and a huge file is a mistake.
const MAX_PASSWORD_BYTES: u64 = 4096;

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
