//! Start-up refuses bad settings with a message naming the variable and exit code 2.

use crate::support::{Redis, WebFe, run_to_exit};

#[test]
fn invalid_settings_stop_start_up_with_exit_code_2() {
    for (var, value) in [
        ("PORT", "http"),
        ("PORT", "65536"),
        ("REDIS_URL", "localhost:6379"),
        ("REDIS_TIMEOUT", "1000"),
        ("KEEP_ALIVE", "yes"),
        ("WORKERS", "many"),
        ("LOG_FORMAT", "yaml"),
        ("RUST_LOG", "web_fe=loud"),
        ("SHUTDOWN_DRAIN", "-1s"),
        ("REDIS_PASSWORD_FILE", "/run/secrets/none"),
        // Every duration has an upper bound, so none can overflow once running.
        ("HEARTBEAT", "9999999999999999m"),
        ("REPLICA_FORGET", "1s"),
        ("REPLICA_NAME", "no spaces"),
        ("REDIS_RESTART_GRACE", "99999999m"),
        ("KEEP_ALIVE", "9999999999m"),
        ("REQUEST_TIMEOUT", "2m"),
        ("MAX_CONNECTIONS", "1000000"),
        ("HEALTH_PORT", "70000"),
    ] {
        let (status, output) = run_to_exit(&[], &[(var, value)]);
        assert_eq!(status.code(), Some(2), "{var}={value}: {output}");
        assert!(
            output.contains(var) && output.contains(value),
            "the message must name {var} and what it held: {output}"
        );
        assert!(!output.contains("panicked"), "{output}");
    }
}

#[test]
fn help_lists_every_setting_with_its_variable_default_and_range() {
    let (status, help) = run_to_exit(&["--help"], &[]);
    assert_eq!(status.code(), Some(0), "{help}");
    for (var, default, range) in [
        ("HOST", "0.0.0.0", ""),
        ("PORT", "8080", "0-65535; 0 takes a free one"),
        ("HEALTH_PORT", "8081", "0-65535"),
        ("WORKERS", "", "1-256"),
        ("KEEP_ALIVE", "off", "1s to 10m"),
        ("REQUEST_TIMEOUT", "5s", "1s-1m"),
        ("MAX_CONNECTIONS", "256", "16-65536"),
        (
            "MAX_BOARD_STREAMS",
            "64",
            "1-32768 and at most half of MAX_CONNECTIONS",
        ),
        ("SHUTDOWN_DRAIN", "0", "0-10m"),
        ("SHUTDOWN_TIMEOUT", "5s", "0-10m"),
        ("REDIS_URL", "redis://redis:6379", ""),
        ("REDIS_PASSWORD_FILE", "", "4096 bytes"),
        ("REDIS_TIMEOUT", "500ms", "10ms-1m"),
        ("REDIS_RESTART_GRACE", "3s", "0-1m"),
        ("TASK_SLOT", "", ""),
        ("NODE_NAME", "", ""),
        ("REPLICA_NAME", "", "64 letters"),
        ("HEARTBEAT", "1s", "200ms-10s"),
        ("REPLICA_FORGET", "30s", "5s-1h"),
        ("LOG_FORMAT", "text", ""),
        ("RUST_LOG", "info", ""),
    ] {
        assert!(help.contains(&format!("[env: {var}")), "{var}:\n{help}");
        // Some have none, and WORKERS's is this machine's number of CPUs.
        if !default.is_empty() {
            assert!(
                help.contains(&format!("[default: {default}]")),
                "{var}:\n{help}"
            );
        }
        assert!(help.contains(range), "{var} range {range}:\n{help}");
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
    assert!(output.contains("Usage: web-fe"), "{output}");
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
