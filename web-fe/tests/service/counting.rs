//! Exact counting under concurrency.

use futures::StreamExt;

use std::time::Duration;

use crate::support::{Redis, WebFe, client, text, wait_for_count};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_requests_from_fifty_clients_add_exactly_five_hundred() {
    let redis = Redis::start();
    redis.query::<()>(&["SET", "hits", "1000"]);
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    let paths = (0..500).map(|i| if i % 2 == 0 { "/" } else { "/api" });
    let statuses: Vec<u16> = futures::stream::iter(paths)
        .map(|path| {
            let request = http.get(web.url(path)).send();
            async move { request.await.map_or(0, |r| r.status().as_u16()) }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(redis.hits(), 1500);
    let served: Vec<u64> = redis.query(&["HVALS", "replicas:served"]);
    assert_eq!(served, [500]);
    // Views that arrived together went to Redis together: fewer calls than views.
    let metrics = text(&http, &web.url("/metrics")).await;
    let figure = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    let (calls, views) = (
        figure("redis_visit_batch_size_count"),
        figure("redis_visit_batch_size_sum"),
    );
    println!("500 views from 50 clients: {calls} calls to Redis");
    assert!(
        (views - 500.0).abs() < f64::EPSILON,
        "{views} views in batches"
    );
    assert!(calls < 500.0, "{calls} calls for 500 views");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_redis_restart_under_load_counts_every_200_exactly_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut redis = Redis::start_persistent();
    let web = WebFe::start(&redis.url(), &[]);
    let http = client();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, stop) = (http.clone(), web.url("/api"), Arc::clone(&stop));
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                // Bounded: at most 2,000 requests per client.
                for _ in 0..2_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match http.get(&url).send().await.map(|r| r.status()) {
                        Ok(s) if s == 200 => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    // Load on both sides of the restart: views counted before it, and again after it.
    let counted_past = |redis: &Redis, mark: u64| {
        let hits = || u64::try_from(redis.hits()).ok();
        wait_for_count(
            "views to be counted",
            Duration::from_secs(10),
            hits,
            mark,
            100,
        );
    };
    counted_past(&redis, 0);
    redis.stop_gracefully();
    redis.restart();
    counted_past(&redis, u64::try_from(redis.hits()).unwrap());
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for client in clients {
        let (o, f) = client.await.unwrap();
        ok += o;
        failed += f;
    }
    assert!(ok > 100, "too little load to mean anything: {ok}");
    // Requests caught by the restart are retried with their batch's key: none fails, and
    // no view is counted twice or lost.
    assert_eq!(failed, 0, "{}", web.logs());
    assert_eq!(redis.hits(), i64::try_from(ok).unwrap());
}
