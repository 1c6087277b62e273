//! What `/`, `/api`, the probes and `/metrics` answer.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Redis, WebFe, board, client, text, wait_for};

#[tokio::test]
async fn page_shows_count_hostname_version_and_the_board() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[("TASK_SLOT", "3"), ("NODE_NAME", "node-a")]);
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let http = client();

    let first = http.get(web.url("/")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(first.headers()["cache-control"], "no-store");
    let body = first.text().await.unwrap();
    assert!(
        body.contains(r#"<p class="count" id="count" aria-labelledby="count-label">1</p>"#),
        "{body}"
    );
    assert!(body.contains(&format!(
        r#"<span class="badge" id="hostname">{hostname}</span>"#
    )));
    assert!(body.contains(&format!("v{}", env!("CARGO_PKG_VERSION"))));
    assert!(body.contains("task slot 3 · node node-a"));
    // The board highlights the replica that answered, under its node.
    assert!(
        body.contains(r#"<div class="node" data-node="node-a">"#),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            r#"<li class="replica serving current"
            data-hostname="{hostname}""#
        )),
        "{body}"
    );
    // Everything the page needs comes from this replica: no scripts, styles or images from
    // elsewhere, and no inline script.
    for link in ["src=\"", "href=\""] {
        for address in body.split(link).skip(1) {
            assert!(
                (address.starts_with('/') && !address.starts_with("//"))
                    || address.starts_with("data:,\""),
                "{link}{address}"
            );
        }
    }
    assert_eq!(body.matches("<script").count(), 1, "{body}");
    assert!(body.contains(r#"<script src="/assets/live."#), "{body}");
    // Without JavaScript, the views control stays hidden and the refresh option remains.
    assert!(
        body.contains(r#"<section class="card" id="spread" hidden"#),
        "{body}"
    );
    assert!(body.contains(r#"href="/?refresh=2""#), "{body}");
    // One view, in the singular; two, in the plural.
    assert!(
        body.contains(&format!("<title>1 view · served by {hostname}</title>")),
        "{body}"
    );

    let second = text(&http, &web.url("/")).await;
    assert!(second.contains(r#"aria-labelledby="count-label">2</p>"#));
    assert!(second.contains(&format!("<title>2 views · served by {hostname}</title>")));
    assert_eq!(redis.hits(), 2);
}

#[tokio::test]
async fn api_returns_the_count_and_the_board_as_json_without_counting() {
    let redis = Redis::start();
    redis.query::<()>(&["SET", "hits", "41"]);
    let web = WebFe::start(
        &redis.url(),
        &[
            ("TASK_SLOT", "2"),
            ("NODE_NAME", "node-b"),
            ("REPLICA_NAME", "web-2"),
        ],
    );
    let http = client();

    let response = http.get(web.url("/api")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let json: Value = response.json().await.unwrap();
    // The count carries on from the existing `hits` key.
    assert_eq!(json["count"], 42);
    assert_eq!(json["hostname"], "web-2");
    assert_eq!(json["served"], 1);
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));

    // The board comes from the heartbeat: wait for one after the view (a beat between
    // Redis counting it and the answer shows it served but not yet its age).
    let board = wait_for("a board with the view", Duration::from_secs(5), || {
        board(&web).filter(|b| {
            let me = &b["nodes"][0]["replicas"][0];
            me["served"] == 1 && me["view_age_ms"].is_u64()
        })
    });
    assert_eq!(board["read_by"], "web-2");
    assert_eq!(board["hits"], 42);
    assert_eq!(board["live"], 1);
    assert_eq!(board["nodes"][0]["node"], "node-b");
    let me = &board["nodes"][0]["replicas"][0];
    assert_eq!(me["hostname"], "web-2");
    assert_eq!(me["slot"], "2");
    assert_eq!(me["state"], "serving");
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(me["colour"], json["colour"]);
    assert!(me["view_age_ms"].as_u64().unwrap() < 5_000, "{board}");
    // Reading the board counted nothing.
    assert_eq!(redis.hits(), 42);
}

#[tokio::test]
async fn probes_and_metrics_do_not_count() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = http.get(web.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let head = http.head(web.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
    }
    assert_eq!(redis.hits(), 0);

    http.get(web.url("/api")).send().await.unwrap();
    http.get(web.url("/missing")).send().await.unwrap();
    let metrics = http.get(web.url("/metrics")).send().await.unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("http_requests_total{route=\"/api\",status=\"200\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("http_requests_total{route=\"other\",status=\"404\"} 1\n"),
        "{text}"
    );
    // GET and HEAD here, plus the harness's own probe while waiting for start-up.
    assert!(
        text.contains("http_requests_total{route=\"/healthz\",status=\"200\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_count"),
        "{text}"
    );
    assert!(
        text.contains("redis_errors_total{kind=\"timeout\"} 0\n"),
        "{text}"
    );
}

#[tokio::test]
async fn every_request_writes_one_log_line_naming_the_replica() {
    let mut redis = Redis::start();
    let web = WebFe::start(
        &redis.url(),
        &[("LOG_FORMAT", "json"), ("REDIS_RESTART_GRACE", "0")],
    );
    let http = client();
    let viewed = http.get(web.url("/api")).send().await.unwrap();
    http.get(web.url("/nothing-here")).send().await.unwrap();
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    crate::support::wait_for("two log lines", std::time::Duration::from_secs(5), || {
        (web.logs().matches("\"message\":\"request\"").count() >= 3).then_some(())
    });
    let lines: Vec<Value> = web
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "request" && l["path"] != "/healthz")
        .collect();
    assert_eq!(lines.len(), 2, "{}", web.logs());
    assert_eq!(lines[0]["replica"], hostname.as_str());
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["path"], "/api");
    assert_eq!(lines[0]["status"], 200);
    assert!(lines[0]["latency_us"].as_u64().is_some());
    assert_eq!(
        lines[0]["span"]["id"],
        viewed.headers()["x-request-id"].to_str().unwrap()
    );
    assert_eq!(lines[1]["status"], 404);

    // A warning written while serving a request carries that request's id.
    redis.stop();
    let failed = http.get(web.url("/api")).send().await.unwrap();
    assert_eq!(failed.status(), 503);
    let id = failed.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let logs = web.logs_once_they_contain("could not count the view");
    let warning: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "could not count the view")
        .unwrap();
    assert_eq!(warning["span"]["id"], id.as_str(), "{logs}");
    // Refused, or cut mid-call: the log line names the address and the cause either way.
    let error = warning["error"].as_str().unwrap();
    assert!(error.starts_with("Redis at 127.0.0.1:"), "{warning}");
}

#[tokio::test]
async fn connections_close_after_each_response_unless_keep_alive_is_on() {
    let redis = Redis::start();
    let default = WebFe::start(&redis.url(), &[]);
    let response = client().get(default.url("/api")).send().await.unwrap();
    assert_eq!(response.headers()["connection"], "close");

    let kept = WebFe::start(&redis.url(), &[("KEEP_ALIVE", "5s")]);
    let response = client().get(kept.url("/api")).send().await.unwrap();
    assert!(
        response
            .headers()
            .get("connection")
            .is_none_or(|v| v != "close")
    );
}

#[tokio::test]
async fn metrics_pass_promtool_with_process_metrics_and_a_histogram_per_route() {
    use std::io::Write as _;
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    for path in ["/api", "/", "/missing", "/readyz"] {
        http.get(web.url(path)).send().await.unwrap();
    }
    let metrics = text(&http, &web.url("/metrics")).await;
    for family in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "http_request_duration_seconds_count{route=\"/\"} 1\n",
        "http_request_duration_seconds_count{route=\"/api\"} 1\n",
        "http_request_duration_seconds_count{route=\"other\"} 1\n",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed ({e}): it comes with Debian's prometheus package; .ci/run installs it")
        });
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
