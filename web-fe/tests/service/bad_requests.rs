//! Unknown paths, wrong methods, malformed and oversized requests: clear answers, and the
//! server keeps serving.

use serde_json::Value;

use crate::support::{Redis, WebFe, client, get_status, raw_request};

#[tokio::test]
async fn unknown_paths_are_404_as_html_or_json() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();

    let page = http.get(web.url("/no/such/page")).send().await.unwrap();
    assert_eq!(page.status(), 404);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Nothing is served at /no/such/page.")
    );

    let api = http.get(web.url("/api/v2/things")).send().await.unwrap();
    assert_eq!(api.status(), 404);
    let json: Value = api.json().await.unwrap();
    assert_eq!(json["status"], 404);
    assert_eq!(redis.hits(), 0);
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();

    let post = http.post(web.url("/")).body("x=1").send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    assert!(
        post.text()
            .await
            .unwrap()
            .contains("POST is not accepted here.")
    );

    let delete = http.delete(web.url("/api")).send().await.unwrap();
    assert_eq!(delete.status(), 405);
    assert_eq!(
        delete.json::<Value>().await.unwrap()["error"],
        "Method not allowed"
    );

    let put = http.put(web.url("/healthz")).send().await.unwrap();
    assert_eq!(put.status(), 405);
    assert_eq!(put.headers()["allow"], "GET, HEAD");
    assert_eq!(redis.hits(), 0);
}

#[tokio::test]
async fn bad_refresh_values_get_a_clear_400() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    let response = http.get(web.url("/?refresh=999")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("refresh=999 is not a number of seconds from 1 to 60."),
        "{body}"
    );
    assert_eq!(redis.hits(), 0);

    let refreshing = http.get(web.url("/?refresh=2")).send().await.unwrap();
    assert_eq!(refreshing.status(), 200);
    assert!(
        refreshing
            .text()
            .await
            .unwrap()
            .contains(r#"<meta http-equiv="refresh" content="2">"#)
    );
}

#[tokio::test]
async fn malformed_and_oversized_requests_do_not_stop_the_server() {
    let redis = Redis::start();
    let mut web = WebFe::start(&redis.url(), &[]);
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(64 * 1024));
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(128 * 1024)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..500)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\x01\x02 not http at all\r\n\r\n".to_vec()),
        ("bad version", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_vec()),
        (
            "bad method",
            b"G\x7fT / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("no path", b"GET HTTP/1.1\r\n\r\n".to_vec()),
        ("bad header", b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec()),
        ("long path", long_path.into_bytes()),
        ("huge header", huge_header.into_bytes()),
        ("many headers", many_headers.into_bytes()),
        (
            "bad length",
            b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec(),
        ),
        (
            "bad chunking",
            b"GET /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        ),
        ("truncated", b"GET /api HTTP/1.1\r\nHost:".to_vec()),
        (
            "invalid utf-8 path",
            b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (name, bytes) in cases {
        let reply = raw_request(web.port, &bytes).unwrap_or_default();
        // Either a 4xx answer or a closed connection; never a 5xx or a 200 that counts.
        let status = reply.get(9..12).unwrap_or("");
        assert!(
            status.is_empty() || status.starts_with('4'),
            "{name}: {:?}",
            reply.lines().next()
        );
        assert_eq!(get_status(web.port, "/healthz"), Some(200), "after {name}");
    }
    assert!(web.is_running());
    assert_eq!(get_status(web.port, "/api"), Some(200));
    assert_eq!(redis.hits(), 1);
}
