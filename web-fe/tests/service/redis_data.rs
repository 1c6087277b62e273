//! What web-fe finds in Redis and what it says about it: foreign values never stop counting
//! or make an answer false, a long history keeps a view small, and a view that may have
//! been counted is never called uncounted.

use serde_json::Value;

use crate::support::{FlakyProxy, Redis, WebFe, client, get_json, text};

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[tokio::test]
async fn a_reply_lost_then_a_refused_connection_still_says_maybe_counted() {
    let redis = Redis::start();
    let proxy = FlakyProxy::start(redis.port);
    let web = WebFe::start(
        &proxy.url(),
        &[("WORKERS", "1"), ("REDIS_RESTART_GRACE", "1s")],
    );
    let http = client();
    assert_eq!(
        http.get(web.url("/api")).send().await.unwrap().status(),
        200
    );
    // Redis runs the next view, its reply is lost, then every reconnect is refused.
    proxy.fail_next_reply();
    let response = http.get(web.url("/api")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let json: Value = response.json().await.unwrap();
    assert_eq!(redis.hits(), 2, "Redis counted the second view");
    assert!(
        json["detail"]
            .as_str()
            .unwrap()
            .ends_with("This view may have been counted."),
        "a counted view was called uncounted: {json}"
    );
}

#[tokio::test]
async fn foreign_values_in_the_replica_keys_are_repaired_and_counting_goes_on() {
    let redis = Redis::start();
    let me = hostname();
    redis
        .command(&["HSET", "replicas:served", &me, "not-a-number"])
        .unwrap();
    redis
        .command(&["HSET", "replicas:served", "other", "12abc"])
        .unwrap();
    redis
        .command(&["ZADD", "replicas:last-seen", &now_ms().to_string(), "other"])
        .unwrap();
    redis
        .command(&["SET", "replicas:placement", "a string"])
        .unwrap();
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    for expected in 1..=3 {
        let response = http.get(web.url("/api")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["count"], expected);
        assert_eq!(json["replicas"][0]["served"], expected, "{json}");
    }
    assert_eq!(redis.hits(), 3);
    let logs = web.logs();
    // Each repair is logged once, naming what was found.
    for found in [
        "replicas:served field other held",
        "replicas:placement was a string, moved to replicas:placement:unexpected:",
    ] {
        assert_eq!(logs.matches(found).count(), 1, "{found}:\n{logs}");
    }
    assert_eq!(
        logs.matches(&format!("replicas:served field {me} held"))
            .count(),
        1,
        "{logs}"
    );
    // What was moved aside is kept for a person to look at.
    let kept = redis
        .command(&["KEYS", "replicas:placement:unexpected:*"])
        .unwrap();
    assert!(kept.starts_with("*1"), "{kept}");
    assert_eq!(
        text(&http, &web.url("/readyz")).await,
        "ready\n",
        "readiness after repairs"
    );
}

#[tokio::test]
async fn a_hits_key_that_is_not_a_number_is_refused_truthfully() {
    let redis = Redis::start();
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    for (setup, kind) in [
        (vec!["SET", "hits", "forty-two"], "string"),
        (vec!["RPUSH", "hits", "1"], "list"),
    ] {
        redis.command(&["DEL", "hits"]).unwrap();
        redis.command(&setup).unwrap();
        let served_before = redis.command(&["HGETALL", "replicas:served"]).unwrap();
        let response = http.get(web.url("/api")).send().await.unwrap();
        assert_eq!(response.status(), 503);
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["error"], "Redis holds data web-fe does not expect");
        assert!(
            json["detail"]
                .as_str()
                .unwrap()
                .ends_with("This view was not counted."),
            "{json}"
        );
        // Nothing was written: the statement is true.
        assert_eq!(
            redis.command(&["HGETALL", "replicas:served"]).unwrap(),
            served_before
        );
        assert!(redis.command(&["TYPE", "hits"]).unwrap().contains(kind));
        let ready = http.get(web.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503);
        assert_eq!(
            ready.text().await.unwrap(),
            "not ready: Redis holds data web-fe does not expect\n"
        );
    }
    let logs = web.logs();
    assert!(logs.contains(r#"key hits holds "forty-two""#), "{logs}");
    assert!(logs.contains("key hits is a list"), "{logs}");
    // Fixed by a person, counting carries on without a restart.
    redis.command(&["DEL", "hits"]).unwrap();
    redis.command(&["SET", "hits", "41"]).unwrap();
    let json: Value = get_json(&http, &web.url("/api")).await;
    assert_eq!(json["count"], 42);
}

#[tokio::test]
async fn a_view_stays_small_whatever_the_history() {
    const HISTORY: usize = 10_000;
    let redis = Redis::start();
    let now = now_ms();
    let mut zadd = vec!["ZADD".to_owned(), "replicas:last-seen".to_owned()];
    let mut hset = vec!["HSET".to_owned(), "replicas:served".to_owned()];
    for i in 0..HISTORY {
        zadd.extend([(now - i as u128).to_string(), format!("old-replica-{i:05}")]);
        hset.extend([format!("old-replica-{i:05}"), "7".to_owned()]);
    }
    for command in [&zadd, &hset] {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        redis.command(&args).unwrap();
    }
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    let page = text(&http, &web.url("/")).await;
    let json: Value = get_json(&http, &web.url("/api")).await;
    let listed = json["replicas"].as_array().unwrap().len();
    println!(
        "history of {HISTORY}: page {} bytes, {listed} rows",
        page.len()
    );
    assert_eq!(listed, 24, "the most recent replicas only");
    assert_eq!(json["replicas"][0]["hostname"], hostname().as_str());
    assert_eq!(json["replicas_not_shown"], HISTORY + 1 - 24);
    assert!(page.len() < 32 * 1024, "page of {} bytes", page.len());
    assert!(page.contains(&format!("and {} more", HISTORY + 1 - 24)));
}
