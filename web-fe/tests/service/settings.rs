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
            "expected a duration such as 500ms, 2s or 0",
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
