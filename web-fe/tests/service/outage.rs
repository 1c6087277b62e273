//! Redis stopped, hung or behind a password: 503 fast, readiness fails, liveness holds,
//! and service comes back without a restart.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Redis, WebFe, client, get_json, signal, text};

#[tokio::test]
async fn stopped_redis_gives_503_then_recovers_without_restart() {
    let mut redis = Redis::start();
    let mut web = WebFe::start(&redis.url(), &[]);
    let http = client();
    assert_eq!(
        http.get(web.url("/api")).send().await.unwrap().status(),
        200
    );

    redis.stop();
    let started = Instant::now();
    let response = http.get(web.url("/api")).send().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let json: Value = response.json().await.unwrap();
    assert_eq!(
        json["hostname"],
        gethostname::gethostname().to_string_lossy().as_ref()
    );
    assert!(
        json["detail"]
            .as_str()
            .unwrap()
            .contains("could not count this view: Redis cannot be reached."),
        "{json}"
    );
    // Bounded by the 500 ms default timeout, with room for a loaded machine.
    assert!(elapsed < Duration::from_secs(1), "503 took {elapsed:?}");

    let page = http.get(web.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 503);
    let body = page.text().await.unwrap();
    assert!(body.contains("Redis cannot be reached"), "{body}");
    assert!(
        !body.contains("127.0.0.1"),
        "the address is for the log: {body}"
    );
    // Which one depends on whether this worker's connection had noticed Redis was gone
    // before the call; either way the page must say what became of the view.
    assert!(
        body.contains("This view was not counted.")
            || body.contains("This view may have been counted."),
        "{body}"
    );

    redis.restart();
    let response = http.get(web.url("/api")).send().await.unwrap();
    assert_eq!(response.status(), 200, "first request after Redis returned");
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["count"], 1, "the restarted test Redis starts empty");
    assert!(web.is_running());
}

#[tokio::test]
async fn first_request_after_a_quiet_redis_restart_succeeds() {
    let mut redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    for _ in 0..3 {
        assert_eq!(
            http.get(web.url("/api")).send().await.unwrap().status(),
            200
        );
    }
    // No request reaches web-fe while Redis is away: the dead connection must be noticed
    // without a visitor paying for it with a 503.
    redis.restart();
    for expected in 1..=3 {
        let response = http.get(web.url("/api")).send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "request {expected} after the restart"
        );
        assert_eq!(response.json::<Value>().await.unwrap()["count"], expected);
    }
}

#[tokio::test]
async fn hung_redis_gives_503_within_the_configured_timeout() {
    let redis = Redis::start();
    // One worker, so the request below goes out on the connection the first one opened.
    let web = WebFe::start(
        &redis.url(),
        &[("REDIS_TIMEOUT", "300ms"), ("WORKERS", "1")],
    );
    let http = client();
    assert_eq!(
        http.get(web.url("/api")).send().await.unwrap().status(),
        200
    );

    // A stopped process still accepts TCP connections but never answers.
    signal(redis.pid(), "STOP");
    let started = Instant::now();
    let response = http.get(web.url("/api")).send().await.unwrap();
    let elapsed = started.elapsed();
    signal(redis.pid(), "CONT");
    assert_eq!(response.status(), 503);
    // The call reached Redis and no answer came: the page must not claim it was not counted.
    let json: Value = response.json().await.unwrap();
    let detail = json["detail"].as_str().unwrap();
    assert!(
        detail.ends_with("This view may have been counted."),
        "{detail}"
    );
    assert!(
        // It waits out the hang (giving up at most one 25 ms retry pause early).
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(1),
        "answered after {elapsed:?}, timeout is 300ms"
    );
    let metrics = text(&http, &web.url("/metrics")).await;
    assert!(
        metrics.contains("redis_errors_total{kind=\"timeout\"} 1\n"),
        "{metrics}"
    );

    let response = http.get(web.url("/api")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_view_that_never_reached_redis_says_it_was_not_counted() {
    // Stopped before web-fe's first connection: each new connection hangs in its
    // handshake, so the view runs out of time while connecting, its call never sent.
    let redis = Redis::start();
    signal(redis.pid(), "STOP");
    let web = WebFe::start(&redis.url(), &[("WORKERS", "1")]);
    let http = client();
    let json = get_json(&http, &web.url("/api")).await;
    signal(redis.pid(), "CONT");
    let detail = json["detail"].as_str().unwrap();
    assert!(
        detail.ends_with("Redis did not answer in time. This view was not counted."),
        "{detail}"
    );

    // And it was not: the next view is the first.
    let json = get_json(&http, &web.url("/api")).await;
    assert_eq!(json["count"], 1, "{json}");
}

#[tokio::test]
async fn readiness_follows_redis_while_liveness_stays_up() {
    let mut redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    let status = |path: &'static str| {
        let request = http.get(web.url(path)).send();
        async move { request.await.unwrap().status().as_u16() }
    };
    assert_eq!(
        (status("/readyz").await, status("/healthz").await),
        (200, 200)
    );

    redis.stop();
    assert_eq!(
        (status("/readyz").await, status("/healthz").await),
        (503, 200)
    );
    let reason = text(&http, &web.url("/readyz")).await;
    // The public answer names the kind of problem; the address is for the log only.
    assert_eq!(
        reason,
        "not ready: Redis cannot be reached (docker compose ps shows its state)\n"
    );

    redis.restart();
    assert_eq!(
        (status("/readyz").await, status("/healthz").await),
        (200, 200)
    );
}

#[tokio::test]
async fn a_swarm_task_names_the_swarm_tools_when_redis_is_down() {
    let mut redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[("TASK_SLOT", "3")]);
    let http = client();
    redis.stop();

    let ready = text(&http, &web.url("/readyz")).await;
    assert_eq!(
        ready,
        "not ready: Redis cannot be reached (docker service ps <stack>_redis shows the copies)\n"
    );
    let page = http.get(web.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 503);
    let page = page.text().await.unwrap();
    assert!(page.contains("docker service ls"), "{page}");
    assert!(!page.contains("docker compose"), "{page}");
}

#[tokio::test]
async fn password_comes_from_a_file_and_a_wrong_one_is_reported() {
    let redis = Redis::start_with_password("correct horse");
    let dir = std::env::temp_dir().join(format!("web-fe-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good");
    let bad = dir.join("bad");
    std::fs::write(&good, "correct horse\n").unwrap();
    std::fs::write(&bad, "battery staple\n").unwrap();

    let web = WebFe::start(
        &redis.url(),
        &[("REDIS_PASSWORD_FILE", good.to_str().unwrap())],
    );
    let wrong = WebFe::start(
        &redis.url(),
        &[("REDIS_PASSWORD_FILE", bad.to_str().unwrap())],
    );
    let http = client();
    assert_eq!(
        http.get(web.url("/api")).send().await.unwrap().status(),
        200
    );
    let refused = http.get(wrong.url("/api")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    let json: Value = refused.json().await.unwrap();
    assert!(
        !json.to_string().contains("battery"),
        "the password must not leak: {json}"
    );
    // Named for what it is, without the address or Redis's raw words.
    assert_eq!(json["error"], "Redis refused our password");
    assert!(!json.to_string().contains("127.0.0.1"), "{json}");
    assert!(!json.to_string().contains("WRONGPASS"), "{json}");
    let ready = text(&http, &wrong.url("/readyz")).await;
    assert_eq!(
        ready,
        "not ready: Redis refused our password (docker compose ps shows its state)\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
