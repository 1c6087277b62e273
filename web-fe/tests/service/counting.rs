//! Exact counting under concurrency.

use futures::StreamExt;

use crate::support::{Redis, WebFe, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_requests_from_fifty_clients_add_exactly_five_hundred() {
    let redis = Redis::start();
    redis.command(&["SET", "hits", "1000"]).unwrap();
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
    let served = redis.command(&["HVALS", "replicas:served"]).unwrap();
    assert!(served.ends_with("$3\r\n500\r\n"), "{served:?}");
}
