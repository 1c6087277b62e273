//! What rests on actix-http internals, pinned in Cargo.toml: the parser's refusals are
//! counted from its own log events (`rejections.rs`), and a request pipelined after a
//! `Connection: close` answer is dropped, not served, while keep-alive connections, HTTP/1.0
//! ones included, are served to the end (`guard.rs`). A new actix-http that changes either
//! fails here first.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::spawn_app;

/// Sends raw bytes and reads until the app closes the connection.
fn exchange(port: u16, bytes: &[u8]) -> String {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.write_all(bytes).unwrap();
    let mut reply = Vec::new();
    let _ = socket.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[actix_web::test]
async fn a_malformed_request_is_refused_and_counted() {
    let app = spawn_app(&[]).await;
    let series = "http_requests_rejected_total{status=\"400\"}";
    let before = app.metric(series).await.unwrap_or(0.0);
    let port = app.port;
    let reply = actix_web::rt::task::spawn_blocking(move || {
        exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // Other tests in this process may refuse requests too: at least this one.
    let after = app.metric(series).await.unwrap_or(0.0);
    assert!(after > before, "{series}: {before} -> {after}");
}

#[actix_web::test]
async fn a_request_pipelined_after_close_is_not_served() {
    let app = spawn_app(&["--keep-alive", "on"]).await;
    let port = app.port;
    let reply = actix_web::rt::task::spawn_blocking(move || {
        exchange(
            port,
            b"GET /api?close HTTP/1.1\r\nHost: x\r\n\r\nGET /api HTTP/1.1\r\nHost: x\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert_eq!(reply.matches("HTTP/1.1 200").count(), 1, "{reply}");
    assert_eq!(app.redis.hits(), 1, "the pipelined view was counted");
    assert_eq!(app.metric("http_requests_dropped_total").await, Some(1.0));
}

#[actix_web::test]
async fn http_1_0_keep_alive_clients_are_served_request_after_request() {
    let app = spawn_app(&["--keep-alive", "on"]).await;
    let port = app.port;
    let (old, new) = actix_web::rt::task::spawn_blocking(move || {
        // ab -k speaks HTTP/1.0 with Connection: Keep-Alive; the last request closes.
        let keep = b"GET /healthz HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: x\r\n\r\n";
        let mut old = keep.repeat(3);
        old.extend_from_slice(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n");
        // Then an HTTP/1.1 client on the same worker.
        let mut new = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2);
        new.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        (exchange(port, &old), exchange(port, &new))
    })
    .await
    .unwrap();
    assert_eq!(old.matches("HTTP/1.0 200").count(), 4, "{old}");
    assert_eq!(new.matches("HTTP/1.1 200").count(), 3, "{new}");
    assert_eq!(app.metric("http_requests_dropped_total").await, Some(0.0));
}
