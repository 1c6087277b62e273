use super::values::{ZERO, keep_alive, ms, secs, show};
use super::*;

/// Parses flags only: the process environment is shared by every test.
fn parse(args: &[&str]) -> Result<Settings, String> {
    let cli = Cli::try_parse_from(std::iter::once("web-fe").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    Settings::try_from(cli.settings).map_err(|e| e.to_string())
}

#[test]
fn defaults_match_the_documented_values() {
    let s = parse(&[]).unwrap();
    assert_eq!(s.server.port, 8080);
    assert_eq!(s.server.host.to_string(), "0.0.0.0");
    assert_eq!(s.server.health_port, 8081);
    let RedisTarget::Direct(info) = &s.redis.target else {
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
        ("--health-port", "HEALTH_PORT", "-1"),
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
        "--port=0",
        "--health-port=0",
    ])
    .unwrap();
    assert_eq!(
        (s.server.port, s.server.health_port),
        (0, 0),
        "0: a free port"
    );
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
    } = &s.redis.target
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
    let RedisTarget::Direct(info) = &s.redis.target else {
        panic!("no REDIS_SENTINELS means one address");
    };
    assert_eq!(info.redis_settings().password(), Some("s3cret"));
}
