//! Every route, in process: what it answers, with which headers, and what it counts.

use reqwest::StatusCode;
use reqwest::header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};

use crate::support::spawn_app;

#[actix_web::test]
async fn a_view_counts_once_as_json_or_as_a_page_and_head_counts_nothing() {
    let app = spawn_app(&[]).await;
    let answer = app.get("/api").await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()[CACHE_CONTROL], "no-store");
    let view: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(view["count"], 1);
    assert_eq!(view["served"], 1);
    assert_eq!(view["hostname"], "fast-1");

    let page = app.get("/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(page.headers()[CACHE_CONTROL], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"aria-labelledby="count-label">2<"#),
        "{html}"
    );

    for path in ["/", "/api"] {
        let head = app.http.head(app.url(path)).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "HEAD {path}");
    }
    assert_eq!(app.redis.hits(), 2, "HEAD counted a view");
}

#[actix_web::test]
async fn close_is_asked_by_the_query() {
    let app = spawn_app(&["--keep-alive", "on"]).await;
    let kept = app.get("/api").await;
    assert_ne!(
        kept.headers().get(CONNECTION).map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let closed = app.get("/api?close").await;
    assert_eq!(closed.headers()[CONNECTION], "close");
}

#[actix_web::test]
async fn the_board_as_json_and_drawn_counts_nothing() {
    let app = spawn_app(&[]).await;
    app.get("/api").await;
    let board = app.board_where(|b| b["hits"] == 1).await;
    assert_eq!(board["read_by"], "fast-1");
    assert_eq!(board["live"], 1);
    assert_eq!(board["nodes"][0]["replicas"][0]["hostname"], "fast-1");
    assert!(board.get("html").is_none(), "html only on ?html");

    let (status, drawn) = app.json("/api/board?html").await;
    assert_eq!(status, 200);
    assert!(
        drawn["html"]
            .as_str()
            .unwrap()
            .contains(r#"data-hostname="fast-1""#),
        "{drawn}"
    );
    assert_eq!(app.redis.hits(), 1);
}

#[actix_web::test]
async fn a_page_draws_the_latest_board_with_its_replica_highlighted() {
    let app = spawn_app(&[]).await;
    app.get("/api").await;
    app.board_where(|b| b["hits"] == 1).await;
    let first = app.get("/").await.text().await.unwrap();
    assert!(
        first.contains(r#"<li class="replica serving current""#),
        "{first}"
    );
    assert!(first.contains("1 view ·"), "{first}");
    // The tiles are drawn once per heartbeat: the next board shows on the next page.
    app.board_where(|b| b["hits"] == 2).await;
    let second = app.get("/").await.text().await.unwrap();
    assert!(second.contains("2 views ·"), "{second}");
    // A stream's tiles highlight none: the page's script marks its own replica.
    let (_, drawn) = app.json("/api/board?html").await;
    let tiles = drawn["html"].as_str().unwrap();
    assert!(tiles.contains("2 views ·"), "{drawn}");
    assert!(!tiles.contains(" current"), "{drawn}");
}

#[actix_web::test]
async fn a_stream_beyond_the_bound_is_refused_with_retry_after() {
    let app = spawn_app(&["--max-board-streams", "1", "--max-connections", "16"]).await;
    let mut held = app.get("/api/board/stream").await;
    assert_eq!(held.status(), StatusCode::OK);
    assert_eq!(held.headers()[CONTENT_TYPE], "text/event-stream");
    let first = held.chunk().await.unwrap().expect("a first event");
    assert!(first.starts_with(b"event: board\ndata: {"));

    let refused = app.get("/api/board/stream").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()[RETRY_AFTER], "10");
    assert!(refused.text().await.unwrap().contains("MAX_BOARD_STREAMS"));
    assert_eq!(app.metric("web_fe_board_streams").await, Some(1.0));
}

/// A page takes a stream quiet for longer than this for one whose replica died unheard.
#[actix_web::test]
async fn a_stream_event_says_when_the_next_is_due() {
    let app = spawn_app(&["--heartbeat", "2s", "--redis-timeout", "300ms"]).await;
    let mut stream = app.get("/api/board/stream").await;
    let first = stream.chunk().await.unwrap().expect("a first event");
    let text = std::str::from_utf8(&first).unwrap();
    let json = text
        .strip_prefix("event: board\ndata: ")
        .and_then(|t| t.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("one board event: {text:?}"));
    let event: serde_json::Value = serde_json::from_str(json).unwrap();
    // A beat every 2 s, each waiting at most 300 ms for Redis.
    assert_eq!(event["next_within_ms"], 2300, "{event}");
}

#[actix_web::test]
async fn probes_and_metrics_answer_without_counting() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    app.get("/api").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for family in [
        "http_requests_total{route=\"/api\",status=\"200\"} 1",
        "http_request_duration_seconds_bucket",
        "redis_errors_total{kind=\"unreachable\"} 0",
        "redis_visit_batch_size_count 1",
        "web_fe_board_streams 0",
        "web_fe_build_info{version=",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(family), "{family} not in:\n{metrics}");
    }
    assert_eq!(app.redis.hits(), 1);
}

#[actix_web::test]
async fn unknown_paths_and_methods_get_404_and_405_in_the_right_shape() {
    let app = spawn_app(&[]).await;
    let page = app.get("/nope").await;
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    assert!(
        page.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let (status, json) = app.json("/api/nope").await;
    assert_eq!(status, 404);
    assert!(json["detail"].is_string(), "{json}");

    for path in ["/", "/api", "/api/board", "/healthz", "/assets/style.0.css"] {
        let answer = app.http.post(app.url(path)).send().await.unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "POST {path}"
        );
        assert_eq!(answer.headers()[ALLOW], "GET, HEAD", "POST {path}");
    }
    assert_eq!(app.redis.hits(), 0);
}

#[actix_web::test]
async fn the_pages_assets_are_kept_by_browsers_served_without_redis_and_count_nothing() {
    let mut app = spawn_app(&["--redis-timeout", "200ms", "--redis-restart-grace", "0"]).await;
    let page = app.get("/").await.text().await.unwrap();
    let style = linked(&page, r#"<link rel="stylesheet" href=""#);
    let script = linked(&page, r#"<script src=""#);
    for (href, kind) in [(&style, "text/css"), (&script, "text/javascript")] {
        let answer = app.get(href).await;
        assert_eq!(answer.status(), StatusCode::OK, "{href}");
        assert!(
            answer.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert_eq!(
            answer.headers()[CACHE_CONTROL],
            "public, max-age=31536000, immutable",
            "{href}"
        );
        let head = app.http.head(app.url(href)).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "HEAD {href}");
    }
    // Another build's name (a rolling update's other page) gets this build's file, not kept.
    let other = app.get("/assets/style.0000000000000000.css").await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(other.headers()[CACHE_CONTROL], "no-store");
    assert!(other.text().await.unwrap().contains("color-scheme"));
    for missing in ["/assets/style.css", "/assets/page.0000000000000000.html"] {
        assert_eq!(
            app.get(missing).await.status(),
            StatusCode::NOT_FOUND,
            "{missing}"
        );
    }
    assert_eq!(app.redis.hits(), 1, "only the page counted");

    // Without Redis, the error page links the same stylesheet, which still answers.
    app.redis.stop();
    let problem = app.get("/").await;
    assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem = problem.text().await.unwrap();
    assert_eq!(linked(&problem, r#"<link rel="stylesheet" href=""#), style);
    assert_eq!(app.get(&style).await.status(), StatusCode::OK);
}

/// The address that follows `prefix` in `html`, up to its closing quote.
fn linked(html: &str, prefix: &str) -> String {
    let (_, rest) = html
        .split_once(prefix)
        .unwrap_or_else(|| panic!("{prefix} in {html}"));
    rest.split('"').next().unwrap().to_owned()
}

#[actix_web::test]
async fn redis_gone_is_a_503_in_words_and_readiness_fails() {
    let mut app = spawn_app(&["--redis-timeout", "200ms", "--redis-restart-grace", "0"]).await;
    app.redis.stop();
    let (status, json) = app.json("/api").await;
    assert_eq!(status, 503);
    let detail = json["detail"].as_str().unwrap();
    assert!(detail.contains("Redis cannot be reached"), "{json}");
    assert!(detail.contains("fast-1"), "{json}");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready
            .text()
            .await
            .unwrap()
            .contains("Redis cannot be reached")
    );
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn every_answer_is_fresh_and_names_its_request() {
    let mut app = spawn_app(&["--redis-timeout", "200ms", "--redis-restart-grace", "0"]).await;
    let post = app.http.post(app.url("/api")).send().await.unwrap();
    let mut answers = vec![("POST /api".to_owned(), post)];
    for path in [
        "/",
        "/api",
        "/api/board",
        "/healthz",
        "/readyz",
        "/metrics",
        "/nope",
    ] {
        answers.push((format!("GET {path}"), app.get(path).await));
    }
    app.redis.stop();
    answers.push(("GET /api without Redis".into(), app.get("/api").await));
    let mut ids = std::collections::HashSet::new();
    for (what, answer) in &answers {
        assert_eq!(answer.headers()[CACHE_CONTROL], "no-store", "{what}");
        let id = answer.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ids.insert(id), "{what}: an id given twice");
    }

    // A proxy's own id is kept when it is plain, replaced when it is not.
    let asked = |id: &'static str| {
        app.http
            .get(app.url("/healthz"))
            .header("x-request-id", id)
            .send()
    };
    let kept = asked("edge-7f3a.1").await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "edge-7f3a.1");
    let replaced = asked("two words").await.unwrap();
    assert_ne!(replaced.headers()["x-request-id"], "two words");
}
