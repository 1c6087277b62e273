//! What web-fe finds in Redis and what it says about it: foreign values never stop counting
//! or make an answer false, a long history keeps a view small, and a view that may have
//! been counted is never called uncounted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    FlakyProxy, Redis, WebFe, board, board_states, client, get_json, text, wait_for,
};

/// `replicas:served`: views per replica.
type Served = BTreeMap<String, String>;

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Redis behind a [`FlakyProxy`], and web-fe with one worker: one sender, one batch at a
/// time.
fn one_worker_behind_a_proxy() -> (Redis, FlakyProxy, WebFe, reqwest::Client) {
    let redis = Redis::start();
    let proxy = FlakyProxy::start(redis.port);
    let web = WebFe::start(&proxy.url(), &[("WORKERS", "1")]);
    (redis, proxy, web, client())
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
    proxy.fail_next_visit_reply();
    let response = http.get(web.url("/api")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let json: Value = response.json().await.unwrap();
    assert_eq!(proxy.lost(), 1);
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
async fn a_lost_reply_is_asked_again_and_the_view_counted_once() {
    let (redis, proxy, web, http) = one_worker_behind_a_proxy();
    let first = get_json(&http, &web.url("/api")).await;
    // Redis counts the next view but its reply is lost with the connection, so web-fe
    // cannot tell whether it counted: it asks again with the same batch number.
    proxy.lose_next_visit_reply();
    let response = http.get(web.url("/api")).send().await.unwrap();
    assert_eq!(response.status(), 200, "the retry answers");
    let second: Value = response.json().await.unwrap();
    assert_eq!(proxy.lost(), 1, "a reply was lost");
    assert_eq!(redis.hits(), 2, "counted once, not once per attempt");
    assert_eq!(
        second["count"], 2,
        "the first attempt's count: {first} then {second}"
    );
    assert_eq!(second["served"], 2);
}

#[tokio::test]
async fn a_view_lost_on_its_way_to_redis_is_counted_by_its_retry() {
    let (redis, proxy, web, http) = one_worker_behind_a_proxy();
    // Each counted batch leaves its outcome under the worker's record key: the retry of a
    // batch Redis never ran must not take an earlier batch's outcome for its own.
    for expected in 1..=2 {
        assert_eq!(get_json(&http, &web.url("/api")).await["count"], expected);
    }
    proxy.hold_next_visit();
    let third = get_json(&http, &web.url("/api")).await;
    assert_eq!(proxy.lost(), 1, "a visit was lost");
    assert_eq!(redis.hits(), 3, "counted by the retry, once");
    assert_eq!(third["count"], 3, "{third}");
    assert_eq!(third["served"], 3, "{third}");
}

#[tokio::test]
async fn a_visit_that_reaches_redis_late_counts_nothing() {
    let (redis, proxy, web, http) = one_worker_behind_a_proxy();
    let url = web.url("/api");
    assert_eq!(get_json(&http, &url).await["count"], 1);
    // The first try of a view is held back and its connection dropped; the retry counts
    // it. The first try then arrives: its batch is already counted.
    proxy.hold_next_visit();
    assert_eq!(get_json(&http, &url).await["count"], 2);
    let late = proxy.deliver_held();
    assert_eq!(redis.hits(), 2, "a late first try counted again: {late}");
    // Likewise when the worker's next batch ran before it arrived.
    proxy.hold_next_visit();
    assert_eq!(get_json(&http, &url).await["count"], 3);
    assert_eq!(get_json(&http, &url).await["count"], 4);
    let late = proxy.deliver_held();
    assert!(late.starts_with("-STALE"), "{late}");
    assert_eq!(redis.hits(), 4, "a late first try counted again: {late}");
    assert_eq!(get_json(&http, &url).await["count"], 5);
    // The record outlasts the time Linux keeps sending a call given up on (about 100 s).
    let records: Vec<String> = redis.query(&["KEYS", "visits:*"]);
    assert_eq!(
        records.len(),
        1,
        "one record for the one worker: {records:?}"
    );
    let ttl_ms: i64 = redis.query(&["PTTL", &records[0]]);
    assert!(ttl_ms > 120_000, "the record expires in {ttl_ms} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_batch_reply_is_asked_again_and_each_view_in_it_counted_once() {
    const ROUNDS: usize = 20;
    const CONCURRENT: usize = 40;
    let (redis, proxy, web, http) = one_worker_behind_a_proxy();
    // Views that arrive while a call is in flight go together in the next one: the reply
    // to the first such batch is lost with its connection, after Redis ran it.
    proxy.lose_next_batch_reply(2);
    let (url, mut counts) = (web.url("/api"), Vec::new());
    for _ in 0..ROUNDS {
        let answers =
            futures::future::join_all((0..CONCURRENT).map(|_| get_json(&http, &url))).await;
        counts.extend(
            answers
                .iter()
                .map(|a| a["count"].as_i64().expect("a count")),
        );
        if proxy.lost() > 0 {
            break;
        }
    }
    assert_eq!(proxy.lost(), 1, "no batch of two or more views formed");
    // Every view answered with a count (a 503 carries none), each a count of its own, and
    // Redis counted each once.
    counts.sort_unstable();
    let expected: Vec<i64> = (1..=i64::try_from(counts.len()).unwrap()).collect();
    assert_eq!(counts, expected);
    assert_eq!(redis.hits(), i64::try_from(counts.len()).unwrap());
}

#[tokio::test]
async fn foreign_values_in_the_replica_keys_are_repaired_and_counting_goes_on() {
    let redis = Redis::start();
    let me = hostname();
    redis.query::<()>(&["HSET", "replicas:served", &me, "not-a-number"]);
    redis.query::<()>(&["SET", "replicas:presence", "a string"]);
    redis.query::<()>(&["HSET", "replicas:heartbeat", "a", "hash"]);
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    for expected in 1..=3 {
        let response = http.get(web.url("/api")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["count"], expected);
        assert_eq!(json["served"], expected, "{json}");
    }
    assert_eq!(redis.hits(), 3);
    // The heartbeat repaired its keys: the board lists this replica.
    let listed = wait_for(
        "a board listing this replica",
        Duration::from_secs(5),
        || board(&web).filter(|b| board_states(b).contains(&(me.clone(), "serving".into()))),
    );
    assert_eq!(listed["live"], 1, "{listed}");
    // Each repair is logged once, naming what was found.
    for found in [
        format!("replicas:served field {me} held"),
        "replicas:presence was a string, moved to replicas:presence:unexpected:".into(),
        "replicas:heartbeat was a hash, moved to replicas:heartbeat:unexpected:".into(),
    ] {
        let logs = web.logs_once_they_contain(&found);
        assert_eq!(logs.matches(&found).count(), 1, "{found}:\n{logs}");
    }
    // What was moved aside is kept for a person to look at.
    for pattern in [
        "replicas:presence:unexpected:*",
        "replicas:heartbeat:unexpected:*",
    ] {
        let kept: Vec<String> = redis.query(&["KEYS", pattern]);
        assert_eq!(kept.len(), 1, "{pattern}: {kept:?}");
    }
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
        redis.query::<()>(&["DEL", "hits"]);
        redis.query::<()>(&setup);
        let served_before: Served = redis.query(&["HGETALL", "replicas:served"]);
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
            redis.query::<Served>(&["HGETALL", "replicas:served"]),
            served_before
        );
        assert_eq!(redis.query::<String>(&["TYPE", "hits"]), kind);
        let ready = http.get(web.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503);
        assert_eq!(
            ready.text().await.unwrap(),
            "not ready: Redis holds data web-fe does not expect (docker compose ps shows its state)\n"
        );
    }
    web.logs_once_they_contain(r#"key hits holds "forty-two""#);
    web.logs_once_they_contain("key hits is a list");
    // Fixed by a person, counting carries on without a restart.
    redis.query::<()>(&["DEL", "hits"]);
    redis.query::<()>(&["SET", "hits", "41"]);
    let json: Value = get_json(&http, &web.url("/api")).await;
    assert_eq!(json["count"], 42);
}

/// Replicas that beat recently, as after a big deploy: each with a beat and views served.
fn seed_history(redis: &Redis, replicas: usize) {
    let now = now_ms();
    let mut zadd = vec!["ZADD".to_owned(), "replicas:heartbeat".to_owned()];
    let mut served = vec!["HSET".to_owned(), "replicas:served".to_owned()];
    let mut presence = vec!["HSET".to_owned(), "replicas:presence".to_owned()];
    let beat = r#"{"slot":"1","node":"n1","version":"0.9","started_ms":1,"activity":"serving","last_view_ms":null}"#;
    for i in 0..replicas {
        let name = format!("old-replica-{i:05}");
        zadd.extend([(now - i as u128).to_string(), name.clone()]);
        served.extend([name.clone(), "7".to_owned()]);
        presence.extend([name, beat.to_owned()]);
    }
    for command in [zadd, served, presence] {
        redis.query::<()>(&command);
    }
}

#[tokio::test]
async fn a_page_and_a_board_stay_small_whatever_the_history() {
    const HISTORY: usize = 10_000;
    let redis = Redis::start();
    seed_history(&redis, HISTORY);
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    let json = wait_for("a board", Duration::from_secs(5), || {
        board(&web).filter(|b| b["read_at_ms"].as_u64() > Some(0))
    });
    let page = text(&http, &web.url("/")).await;
    let listed = board_states(&json).len();
    println!(
        "history of {HISTORY}: page {} bytes, {listed} replicas listed",
        page.len()
    );
    assert_eq!(listed, 64, "the most recently heard from only");
    assert!(board_states(&json).contains(&(hostname(), "serving".into())));
    assert_eq!(json["not_shown"], HISTORY + 1 - 64);
    assert!(page.len() < 64 * 1024, "page of {} bytes", page.len());
    assert!(page.contains(&format!("and {} more not shown", HISTORY + 1 - 64)));
}

/// Calls of one command in Redis's `INFO commandstats`; scripts' calls count too.
fn calls(redis: &Redis, command: &str) -> u64 {
    let stats: String = redis.query(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_counted_view_never_reads_the_board() {
    const VIEWS: u64 = 200;
    let redis = Redis::start();
    seed_history(&redis, 1_000);
    // One heartbeat at start, then none for a minute: what remains is the views' work.
    let web = WebFe::start(&redis.url(), &[("HEARTBEAT", "10s"), ("KEEP_ALIVE", "on")]);
    wait_for("the first heartbeat", Duration::from_secs(5), || {
        board(&web).filter(|b| b["read_at_ms"].as_u64() > Some(0))
    });
    let board_reads = ["zrevrange", "hmget", "zrangebyscore", "zcard", "zadd"];
    let before: Vec<u64> = board_reads.iter().map(|c| calls(&redis, c)).collect();
    let (incrby, hincrby, set, hset) = (
        calls(&redis, "incrby"),
        calls(&redis, "hincrby"),
        calls(&redis, "set"),
        calls(&redis, "hset"),
    );
    let http = client();
    for _ in 0..VIEWS {
        assert_eq!(
            http.get(web.url("/api")).send().await.unwrap().status(),
            200
        );
    }
    let after: Vec<u64> = board_reads.iter().map(|c| calls(&redis, c)).collect();
    // One after the other, each view is a batch of its own.
    assert_eq!(calls(&redis, "incrby") - incrby, VIEWS);
    assert_eq!(calls(&redis, "hincrby") - hincrby, VIEWS);
    // Each batch keeps its record with one SET; only a heartbeat writes a hash.
    assert_eq!(calls(&redis, "set") - set, VIEWS);
    assert!(calls(&redis, "hset") - hset <= 1);
    // At most one heartbeat can fall inside the loop.
    for ((command, b), a) in board_reads.iter().zip(before).zip(after) {
        assert!(
            a - b <= 1,
            "{command}: {} calls during {VIEWS} views",
            a - b
        );
    }
}
