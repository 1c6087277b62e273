//! Start-up refuses bad settings with a message naming the variable and exit code 2.

use crate::support::{Redis, WebFe, run_to_exit};

#[test]
fn invalid_settings_stop_start_up_with_exit_code_2() {
    for (var, value, expected) in [
        (
            "PORT",
            "http",
            "invalid PORT=\"http\": expected a port number from 1 to 65535",
        ),
        (
            "REDIS_URL",
            "localhost:6379",
            "invalid REDIS_URL=\"localhost:6379\"",
        ),
        (
            "REDIS_TIMEOUT",
            "1000",
            "expected a duration from 10ms to 1m, such as 500ms, 2s or 1m",
        ),
        (
            "KEEP_ALIVE",
            "yes",
            "invalid KEEP_ALIVE=\"yes\": expected off, on",
        ),
        ("WORKERS", "many", "invalid WORKERS=\"many\""),
        (
            "LOG_FORMAT",
            "yaml",
            "invalid LOG_FORMAT=\"yaml\": expected text or json",
        ),
        (
            "RUST_LOG",
            "web_fe=loud",
            "invalid RUST_LOG=\"web_fe=loud\"",
        ),
        ("SHUTDOWN_DRAIN", "-1s", "invalid SHUTDOWN_DRAIN"),
        // Every duration has an upper bound, so none can overflow once running.
        (
            "REPLICA_STALE",
            "9999999999999999m",
            "invalid REPLICA_STALE=\"9999999999999999m\": expected a duration from 1s to 60m",
        ),
        (
            "REDIS_RESTART_GRACE",
            "99999999m",
            "invalid REDIS_RESTART_GRACE",
        ),
        ("KEEP_ALIVE", "9999999999m", "invalid KEEP_ALIVE"),
        ("REQUEST_TIMEOUT", "2m", "invalid REQUEST_TIMEOUT"),
        ("MAX_CONNECTIONS", "1000000", "invalid MAX_CONNECTIONS"),
        ("HEALTH_PORT", "0", "invalid HEALTH_PORT"),
        (
            "REDIS_PASSWORD_FILE",
            "/run/secrets/none",
            "invalid REDIS_PASSWORD_FILE",
        ),
    ] {
        let (status, output) = run_to_exit(&[], &[(var, value)]);
        assert_eq!(status.code(), Some(2), "{var}={value}: {output}");
        assert!(output.contains(expected), "{var}={value}: {output}");
        assert!(!output.contains("panicked"), "{output}");
    }
}

#[test]
fn a_value_that_is_not_utf8_stops_start_up_naming_it() {
    use std::os::unix::ffi::OsStrExt;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_web-fe"))
        .env_clear()
        .env("REDIS_TIMEOUT", std::ffi::OsStr::from_bytes(b"5\xffs"))
        .output()
        .expect("web-fe runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid REDIS_TIMEOUT=") && stderr.contains("expected text in UTF-8"),
        "{stderr}"
    );
}

#[test]
fn secrets_are_never_echoed_and_the_password_file_is_bounded() {
    let (status, output) = run_to_exit(&[], &[("REDIS_URL", "http://admin:hunter2@redis:6379")]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(!output.contains("hunter2"), "{output}");
    assert!(output.contains("admin:***@redis:6379"), "{output}");

    let path = std::env::temp_dir().join(format!("web-fe-big-secret-{}", std::process::id()));
    std::fs::write(&path, vec![b'x'; 1 << 20]).unwrap();
    let (status, output) = run_to_exit(&[], &[("REDIS_PASSWORD_FILE", path.to_str().unwrap())]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("at most 4096 bytes"), "{output}");
    assert!(!output.contains("xxxx"), "{output}");
}

#[test]
fn unknown_commands_print_usage_with_exit_code_2() {
    let (status, output) = run_to_exit(&["serve-please"], &[]);
    assert_eq!(status.code(), Some(2));
    assert!(output.contains("usage: web-fe"), "{output}");
    let (status, output) = run_to_exit(&["--version"], &[]);
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        output.trim(),
        format!("web-fe {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_port_in_use_is_reported_with_exit_code_1() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let port = web.port.to_string();
    let (status, output) = run_to_exit(&[], &[("HOST", "127.0.0.1"), ("PORT", &port)]);
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{output}"
    );
}
