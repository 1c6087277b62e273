//! SIGTERM and SIGINT: in-flight requests finish, the drain delay keeps serving, exit 0.

use std::time::Duration;

use crate::support::{Redis, WebFe, client, get_status, signal, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let redis = Redis::start();
    let mut web = WebFe::start(&redis.url(), &[("REDIS_TIMEOUT", "5s")]);
    let http = client();

    // Hold Redis so requests stay in flight, then stop web-fe under them.
    signal(redis.pid(), "STOP");
    let in_flight: Vec<_> = (0..10)
        .map(|_| tokio::spawn(http.get(web.url("/api")).send()))
        .collect();
    let metrics = web.url("/metrics");
    wait_for("10 views in flight", Duration::from_secs(5), || {
        let text = ureq::get(&metrics)
            .call()
            .ok()?
            .into_body()
            .read_to_string()
            .ok()?;
        // The scrape counts itself.
        text.contains("\nhttp_requests_in_flight 11\n")
            .then_some(())
    });
    signal(web.pid(), "TERM");
    web.logs_once_they_contain("signal=\"SIGTERM\"");
    assert!(web.is_running(), "must wait for in-flight requests");
    signal(redis.pid(), "CONT");

    for request in in_flight {
        let response = request.await.unwrap().expect("in-flight request answered");
        assert_eq!(response.status(), 200);
    }
    let status = web.wait_for_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", web.logs());
    assert_eq!(redis.hits(), 10);
    web.logs_once_they_contain("signal=\"SIGTERM\"");
}

#[tokio::test]
async fn drain_delay_keeps_serving_but_fails_readiness() {
    let redis = Redis::start();
    let mut web = WebFe::start(&redis.url(), &[("SHUTDOWN_DRAIN", "1s")]);
    signal(web.pid(), "TERM");
    wait_for("readiness to fail", Duration::from_secs(1), || {
        (get_status(web.port, "/readyz") == Some(503)).then_some(())
    });
    assert_eq!(get_status(web.port, "/healthz"), Some(200));
    assert_eq!(get_status(web.port, "/api"), Some(200));
    assert_eq!(web.wait_for_exit(Duration::from_secs(5)).code(), Some(0));
    assert_eq!(get_status(web.port, "/healthz"), None);
}

#[tokio::test]
async fn sigint_exits_zero() {
    let redis = Redis::start();
    let mut web = WebFe::start(&redis.url(), &[]);
    let _ = client().get(web.url("/api")).send().await.unwrap();
    signal(web.pid(), "INT");
    assert_eq!(web.wait_for_exit(Duration::from_secs(5)).code(), Some(0));
}

#[tokio::test]
async fn healthcheck_command_reports_the_local_server() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let port = web.health_port.to_string();
    let env = [("HEALTH_PORT", port.as_str())];
    let (status, _) = crate::support::run_to_exit(&["healthcheck"], &env);
    assert_eq!(status.code(), Some(0));
    drop(web);
    let (status, output) = crate::support::run_to_exit(&["healthcheck"], &env);
    assert_eq!(status.code(), Some(1));
    assert!(
        output.contains("unhealthy: cannot connect to 127.0.0.1:"),
        "{output}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_server_process_cannot_gain_privileges() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", web.pid())).unwrap();
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
}
