//! Redis copies with Sentinel: a real master, a real replica and three real Sentinels
//! (`redis-server --sentinel`) on loopback; web-fe finds the master through them.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{
    FlakyProxy, Redis, WebFe, board, client, free_port, query_at, signal, wait_for, wait_for_count,
};
use test_support::reliability_row;

const PASSWORD: &str = "copies-secret";
const MASTER: &str = "counter";

/// A real Sentinel with its own config file, which it rewrites as it learns.
struct Sentinel {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

impl Sentinel {
    fn start(master_port: u16) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("web-fe-sentinel-{port}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nrequirepass {PASSWORD}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                 sentinel auth-pass {MASTER} {PASSWORD}\n\
                 sentinel sentinel-pass {PASSWORD}\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 5000\n",
                dir = dir.display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs as a Sentinel");
        Self { port, dir, child }
    }

    fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        query_at(self.port, Some(PASSWORD), args)
    }

    /// The master's port as this Sentinel names it.
    fn master_port(&self) -> Option<u16> {
        let named = self
            .query(&["SENTINEL", "get-master-addr-by-name", MASTER])
            .ok()?;
        let (_, port): (String, u16) = redis::from_redis_value(named).ok()?;
        Some(port)
    }

    /// What this Sentinel knows of the master: `num-slaves`, `num-other-sentinels`, ...
    fn master_field(&self, field: &str) -> Option<String> {
        let info = self.query(&["SENTINEL", "master", MASTER]).ok()?;
        let map: std::collections::HashMap<String, String> = redis::from_redis_value(info).ok()?;
        map.get(field).cloned()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, one replica of it, three Sentinels that know both and each other, and
/// web-fe pointed at the Sentinels only.
struct Copies {
    master: Redis,
    replica: Redis,
    sentinels: Vec<Sentinel>,
    web: WebFe,
    _secret: Secret,
}

/// The password as a file, as the Docker secret hands it to web-fe.
struct Secret(std::path::PathBuf);

impl Drop for Secret {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Copies {
    fn start() -> Self {
        let auth = ["--masterauth", PASSWORD];
        let master = Redis::start_with_args(Some(PASSWORD.into()), &auth);
        let master_port = master.port.to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", &master_port];
        replica_args.extend(auth);
        let replica = Redis::start_with_args(Some(PASSWORD.into()), &replica_args);
        let sentinels: Vec<_> = (0..3).map(|_| Sentinel::start(master.port)).collect();
        wait_for(
            "the Sentinels to know the replica and each other",
            Duration::from_secs(20),
            || {
                sentinels
                    .iter()
                    .all(|s| {
                        s.master_field("num-slaves").as_deref() == Some("1")
                            && s.master_field("num-other-sentinels").as_deref() == Some("2")
                    })
                    .then_some(())
            },
        );
        let secret = Secret(std::env::temp_dir().join(format!("web-fe-copies-{}", master.port)));
        std::fs::write(&secret.0, PASSWORD).expect("write the secret");
        let list: Vec<_> = sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let web = WebFe::start(
            "redis://unused:6379",
            &[
                ("REDIS_SENTINELS", &list.join(",")),
                (
                    "REDIS_PASSWORD_FILE",
                    secret.0.to_str().expect("UTF-8 path"),
                ),
                ("HEARTBEAT", "200ms"),
            ],
        );
        Self {
            master,
            replica,
            sentinels,
            web,
            _secret: secret,
        }
    }

    /// The board's Redis copies once it lists `n` of them.
    fn copies_on_board(&self, n: usize) -> Vec<serde_json::Value> {
        wait_for(
            &format!("{n} Redis copies on the board"),
            Duration::from_secs(10),
            || {
                let copies = board(&self.web)?["redis_copies"].as_array()?.clone();
                (copies.len() == n).then_some(copies)
            },
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_fe_counts_on_the_master_the_sentinels_name_and_the_replica_holds_each_view() {
    let copies = Copies::start();
    let shown = copies.copies_on_board(2);
    assert_eq!(
        shown[0]["address"],
        format!("127.0.0.1:{}", copies.master.port)
    );
    assert_eq!(shown[0]["master"], true);
    assert_eq!(shown[1]["master"], false);
    let http = client();
    for _ in 0..20 {
        let status = http
            .get(copies.web.url("/api"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{}", copies.web.logs());
    }
    assert_eq!(copies.master.hits(), 20);
    // Each view was answered after WAIT: the replica holds all of them already.
    assert_eq!(copies.replica.hits(), 20);
    let page = http.get(copies.web.url("/")).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("id=\"redis-copies\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_view_no_replica_confirms_is_not_answered_200_and_counts_once_it_is() {
    let copies = Copies::start();
    copies.copies_on_board(2);
    let http = client();
    let get = || http.get(copies.web.url("/api")).send();
    assert_eq!(get().await.unwrap().status(), 200);

    // A replica that stops reading: the master counts, but WAIT gets no confirmation.
    signal(copies.replica.pid(), "STOP");
    let refused = get().await.unwrap();
    let status = refused.status();
    let body: serde_json::Value = refused.json().await.unwrap();
    signal(copies.replica.pid(), "CONT");
    assert_eq!(status, 503, "{body}");
    let error = body["detail"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("could not copy the view to a replica"),
        "{body}"
    );
    assert!(error.contains("may have been counted"), "{body}");

    // Counted once on the master despite the retries; the replica catches up.
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(copies.master.hits(), 3);
    assert_eq!(copies.replica.hits(), 3);
}

/// Eight clients asking `/api` in a loop until stopped: how many were answered 200, how
/// many not, and when the last failure was.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<(u64, u64, Option<Instant>)>>,
}

impl Load {
    fn start(web: &WebFe) -> Self {
        let http = client();
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..8)
            .map(|_| {
                let (http, url, stop) = (http.clone(), web.url("/api"), Arc::clone(&stop));
                tokio::spawn(async move {
                    let (mut ok, mut failed, mut last_failure) = (0u64, 0u64, None);
                    // Bounded: at most 5,000 requests per client, and stopped by the test.
                    for _ in 0..5_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match http.get(&url).send().await.map(|r| r.status()) {
                            Ok(s) if s == 200 => ok += 1,
                            _ => {
                                failed += 1;
                                last_failure = Some(Instant::now());
                            }
                        }
                    }
                    (ok, failed, last_failure)
                })
            })
            .collect();
        Self { stop, clients }
    }

    async fn finish(self) -> (u64, u64, Option<Instant>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed, mut last_failure) = (0u64, 0u64, None::<Instant>);
        for client in self.clients {
            let (o, f, last) = client.await.unwrap();
            ok += o;
            failed += f;
            last_failure = last_failure.max(last);
        }
        (ok, failed, last_failure)
    }
}

fn hits_on(copy: &Redis) -> Option<u64> {
    u64::try_from(copy.hits()).ok()
}

impl Copies {
    /// The copies with web-fe under load, once 100 views are counted on the master.
    fn start_under_load() -> (Self, Load) {
        let copies = Self::start();
        copies.copies_on_board(2);
        let load = Load::start(&copies.web);
        copies.wait_for_views_on(&copies.master, "views on the first master", 100);
        (copies, load)
    }

    /// Stops the master (`stop` says how) and holds its port from then on. Keep the
    /// listener until the Sentinels are gone, or they would make another test's new Redis
    /// on that port a replica of this one's master.
    fn stop_master(&mut self, stop: impl FnOnce(&mut Redis)) -> std::net::TcpListener {
        stop(&mut self.master);
        std::net::TcpListener::bind(("127.0.0.1", self.master.port))
            .expect("the stopped master's port is free")
    }

    /// Waits for `views` more views on `copy` than it holds now.
    fn wait_for_views_on(&self, copy: &Redis, what: &str, views: u64) {
        let mark = hits_on(copy).expect("the copy answers");
        wait_for_count(what, Duration::from_secs(20), || hits_on(copy), mark, views);
    }

    /// Waits for the first Sentinel to name the replica as the master.
    fn wait_for_the_replica_named(&self) -> u16 {
        wait_for(
            "a Sentinel to name the replica",
            Duration::from_secs(20),
            || {
                self.sentinels[0]
                    .master_port()
                    .filter(|&port| port == self.replica.port)
            },
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_master_killed_under_load_fails_over_and_every_200_is_counted_once() {
    // Dropped last (see `stop_master`).
    let _tombstone;
    let (mut copies, load) = Copies::start_under_load();
    let killed_at = Instant::now();
    _tombstone = copies.stop_master(Redis::stop);
    let new_master = copies.wait_for_the_replica_named();
    let named_after = killed_at.elapsed();
    // Views on the new master, then the load stops.
    copies.wait_for_views_on(&copies.replica, "views on the new master", 100);
    let (ok, failed, last_failure) = load.finish().await;
    let hits = u64::try_from(copies.replica.hits()).unwrap();
    let recovered = last_failure.map_or(Duration::ZERO, |t| t.saturating_duration_since(killed_at));
    assert_eq!(new_master, copies.replica.port);
    assert!(ok > 100, "too little load to mean anything: {ok}");
    // Every 200 is on the new master once; a failed view may or may not have been counted.
    assert!(hits >= ok, "views answered 200 were lost: {hits} < {ok}");
    assert!(
        hits <= ok + failed,
        "views counted twice: {hits} > {ok} + {failed}"
    );
    assert!(
        recovered < Duration::from_secs(10),
        "200s came back only after {recovered:?}"
    );
    reliability_row(&format!(
        "Redis master killed (service test, 3 Sentinels) | SIGKILL to the master | {} | {failed} | 0 | replica named master {:.1} s after the kill, last failure {:.1} s after it",
        ok + failed,
        named_after.as_secs_f64(),
        recovered.as_secs_f64(),
    ));
}

/// A master told to stop hands its role over first, as the stack's copies do
/// (redis/copy.sh): it refuses new views (`NOREPLICAS`), a Sentinel promotes the replica,
/// then it stops. web-fe keeps trying through the handover, within `REDIS_RESTART_GRACE`,
/// and counts on the new master: no view fails, none is lost or counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_that_hands_over_before_it_stops_fails_no_view() {
    let _tombstone;
    let (mut copies, load) = Copies::start_under_load();
    let started = Instant::now();
    let master = copies.master.port;
    let _: () = query_at(
        master,
        Some(PASSWORD),
        &["CONFIG", "SET", "min-replicas-to-write", "1000"],
    )
    .expect("the master takes the setting");
    let _: () = query_at(
        copies.sentinels[0].port,
        Some(PASSWORD),
        &["SENTINEL", "FAILOVER", MASTER],
    )
    .expect("the Sentinel starts a failover");
    copies.wait_for_the_replica_named();
    let handed_over = started.elapsed();
    _tombstone = copies.stop_master(Redis::stop_gracefully);
    copies.wait_for_views_on(&copies.replica, "views on the new master", 100);
    let (ok, failed, _) = load.finish().await;
    let hits = hits_on(&copies.replica).expect("the new master answers");
    assert!(ok > 100, "too little load to mean anything: {ok}");
    assert_eq!(failed, 0, "views failed during the handover");
    assert_eq!(hits, ok, "views lost or counted twice");
    reliability_row(&format!(
        "Redis master stopped after handing over (service test, 3 Sentinels) | writes refused, `SENTINEL FAILOVER`, then SIGTERM | {ok} | 0 | 0 | replica named master {:.1} s after the handover began",
        handed_over.as_secs_f64(),
    ));
}

/// A view whose first call counted it on the master but lost its reply is asked again;
/// the retry finds the count and, like any view, is answered 200 only once a replica
/// holds it. (`WAIT` covers only what its own connection wrote, and the retry runs on a
/// new connection, which may have written nothing yet.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_view_waits_for_a_replica_like_any_other() {
    let (master, replica) = master_and_replica();
    let proxy = FlakyProxy::start(master.port);
    let web = WebFe::start(&proxy.url(), &[("WORKERS", "1")]);
    until_the_replica_is_seen(&web);
    let http = client();
    assert_eq!(
        http.get(web.url("/api")).send().await.unwrap().status(),
        200
    );

    // The replica stops reading; the next view is counted on the master, its reply lost.
    signal(replica.pid(), "STOP");
    proxy.lose_next_visit_reply();
    let answer = http.get(web.url("/api")).send().await.unwrap();
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap();
    signal(replica.pid(), "CONT");
    assert_eq!(proxy.lost(), 1, "no reply was lost");
    assert_eq!(status, 503, "answered before a replica held it: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("may have been counted"), "{body}");
    assert_eq!(master.hits(), 2, "counted once");
}

#[tokio::test]
async fn a_master_that_lost_its_scripts_still_counts_each_view_once_and_waits_for_its_replica() {
    let (master, replica) = master_and_replica();
    let web = WebFe::start(&master.url(), &[("WORKERS", "1")]);
    until_the_replica_is_seen(&web);
    let http = client();
    assert_eq!(
        http.get(web.url("/api")).send().await.unwrap().status(),
        200
    );

    // As after a restart or a failover to a copy that never ran the script: the script
    // and the WAIT go out together, the script is refused, and both are sent again.
    let _: String = master.query(&["SCRIPT", "FLUSH"]);
    let answer = http.get(web.url("/api")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["count"], 2, "{body}");
    assert_eq!(master.hits(), 2, "counted once");

    // The WAIT still holds the answer until the replica has the view.
    signal(replica.pid(), "STOP");
    let answer = http.get(web.url("/api")).send().await.unwrap();
    let status = answer.status();
    signal(replica.pid(), "CONT");
    assert_eq!(status, 503, "answered before a replica held it");
    assert_eq!(master.hits(), 3, "counted once");
}

/// A master and one replica of it, without Sentinels.
fn master_and_replica() -> (Redis, Redis) {
    let master = Redis::start();
    let master_port = master.port.to_string();
    let replica = Redis::start_with_args(None, &["--replicaof", "127.0.0.1", &master_port]);
    (master, replica)
}

/// web-fe waits for a replica once its heartbeat has seen one.
fn until_the_replica_is_seen(web: &WebFe) {
    wait_for("the replica on the board", Duration::from_secs(10), || {
        let copies = board(web)?["redis_copies"].as_array()?.len();
        (copies == 2).then_some(())
    });
}
