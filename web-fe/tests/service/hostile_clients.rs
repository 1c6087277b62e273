//! What a hostile or broken client can do: hold sockets, flood slow connections, pipeline
//! past a close, send malformed requests. Each must cost bounded resources and count nothing
//! it should not.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{
    Redis, WebFe, client, exchange, open_fds, raw_request, rss_kib, run_to_exit, text,
};
use test_support::reliability_row;

/// Sends `bytes`, which never finish a request: the reply and how long the server kept the
/// connection open.
fn unfinished_request(port: u16, bytes: &[u8], patience: Duration) -> (String, Duration) {
    exchange(port, bytes, patience).expect("web-fe accepts connections")
}

#[test]
fn a_body_that_never_finishes_does_not_hold_the_socket() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    for path in ["/", "/api", "/healthz", "/missing"] {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        );
        let (reply, open_for) =
            unfinished_request(web.port, head.as_bytes(), Duration::from_secs(10));
        assert!(reply.starts_with("HTTP/1.1 "), "{path}: {reply}");
        assert!(
            open_for < Duration::from_secs(3),
            "{path}: the server held the socket for {open_for:?} waiting for the body"
        );
    }
}

#[test]
fn thousands_of_slow_clients_cost_bounded_memory_and_descriptors() {
    const CLIENTS: usize = 2_000;
    let redis = Redis::start();
    // The defaults: 256 connections at most, 5 s to send a request's head.
    let web = WebFe::start(&redis.url(), &[]);
    let (rss_before, fds_before) = (rss_kib(web.pid()), open_fds(web.pid()));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
        "a".repeat(120_000)
    );
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", web.port)) else {
            break;
        };
        stream.set_nonblocking(true).unwrap();
        // Idle, a head that never ends, a near-limit head that never ends, a body that never ends.
        let start: &[u8] = match i % 4 {
            0 => b"",
            1 => b"GET / HTTP/1.1\r\nHost: x\r\n",
            2 => big_head.as_bytes(),
            _ => {
                b"GET /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            }
        };
        let _ = stream.write(start);
        clients.push(stream);
    }
    assert!(
        clients.len() >= CLIENTS / 2,
        "only {} connected",
        clients.len()
    );

    let mut peak_rss = 0;
    let mut peak_fds = 0;
    let mut slowest_probe = Duration::ZERO;
    let health_port = web.health_port.to_string();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        peak_rss = peak_rss.max(rss_kib(web.pid()));
        peak_fds = peak_fds.max(open_fds(web.pid()));
        let asked = Instant::now();
        let (status, output) =
            run_to_exit(&["healthcheck"], &[("HEALTH_PORT", health_port.as_str())]);
        slowest_probe = slowest_probe.max(asked.elapsed());
        assert_eq!(
            status.code(),
            Some(0),
            "health check under attack: {output}"
        );
    }
    drop(clients);
    println!(
        "slow clients: RSS {rss_before} -> peak {peak_rss} KiB, fds {fds_before} -> peak {peak_fds}, slowest health probe {slowest_probe:?}"
    );
    reliability_row(&format!(
        "Slow clients | {CLIENTS} connections: idle, endless heads, 120 KB heads, endless bodies | {CLIENTS} | health check: 0 failed, slowest {} ms | 0 | RSS {rss_before} → {peak_rss} KiB, fds {fds_before} → {peak_fds}",
        slowest_probe.as_millis()
    ));
    assert!(
        slowest_probe < Duration::from_secs(1),
        "health check took {slowest_probe:?}"
    );
    assert!(
        peak_fds <= fds_before + 256 + 16,
        "connections are not bounded: {peak_fds} descriptors"
    );
    assert!(
        peak_rss < 48 * 1024,
        "RSS {peak_rss} KiB leaves too little of a 64 MiB limit"
    );
    // Once they leave, the public port serves again.
    let deadline = Instant::now() + Duration::from_secs(15);
    while raw_request(web.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .is_none_or(|r| !r.starts_with("HTTP/1.1 200"))
    {
        assert!(Instant::now() < deadline, "the public port did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn requests_pipelined_after_a_close_are_not_served() {
    let redis = Redis::start();
    // Keep-alive off (the default): every answer closes.
    let web = WebFe::start(&redis.url(), &[]);
    let two = b"GET /api HTTP/1.1\r\nHost: x\r\n\r\nGET /api HTTP/1.1\r\nHost: x\r\n\r\n";
    let reply = raw_request(web.port, two).unwrap();
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");
    assert_eq!(redis.hits(), 1);

    // Keep-alive on, but the client asked to close after the first.
    let web = WebFe::start(&redis.url(), &[("KEEP_ALIVE", "on")]);
    let two = b"GET /api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /api HTTP/1.1\r\nHost: x\r\n\r\n";
    let reply = raw_request(web.port, two).unwrap();
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");
    assert_eq!(redis.hits(), 2);
    // Without a close, pipelining is served as HTTP/1.1 allows.
    let reply = raw_request(
        web.port,
        b"GET /api HTTP/1.1\r\nHost: x\r\n\r\nGET /api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(reply.matches("HTTP/1.1 200").count(), 2, "{reply}");
    assert_eq!(redis.hits(), 4);
}

#[tokio::test]
async fn head_answers_like_get_without_a_body_and_counts_nothing() {
    let mut redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/api", "application/json"),
    ] {
        let head = http.head(web.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(head.headers()["content-type"], content_type);
        assert_eq!(head.headers()["cache-control"], "no-store");
        assert!(head.bytes().await.unwrap().is_empty());
    }
    assert_eq!(redis.hits(), 0);
    redis.stop();
    let head = http.head(web.url("/api")).send().await.unwrap();
    assert_eq!(head.status(), 503, "HEAD follows Redis as GET does");
}

#[tokio::test]
async fn an_echoed_refresh_value_is_clipped() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let long = "9".repeat(5_000);
    let body = text(&client(), &web.url(&format!("/?refresh={long}"))).await;
    assert!(
        body.contains(&format!("refresh={}…", &long[..80])),
        "{body}"
    );
    assert!(!body.contains(&long[..81]), "the value came back whole");
}

#[tokio::test]
async fn requests_the_parser_refuses_are_counted_and_logged_sparingly() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[("REQUEST_TIMEOUT", "1s")]);
    for _ in 0..50 {
        raw_request(web.port, b"NOT HTTP\r\n\r\n");
    }
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(140_000));
    raw_request(web.port, huge.as_bytes());
    let (reply, _) = unfinished_request(web.port, b"GET / HTTP/1.1\r\n", Duration::from_secs(5));
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");

    let metrics = text(&client(), &web.url("/metrics")).await;
    for line in [
        "http_requests_rejected_total{status=\"400\"} 50\n",
        "http_requests_rejected_total{status=\"408\"} 1\n",
        "http_requests_rejected_total{status=\"431\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert_eq!(redis.hits(), 0);
    let logs = web.logs_once_they_contain("requests refused before routing");
    let summaries = logs.matches("requests refused before routing").count();
    assert!(
        (1..=2).contains(&summaries),
        "{summaries} summary lines for 52 refusals:\n{logs}"
    );
    assert!(!logs.contains("stream error"), "{logs}");
}
