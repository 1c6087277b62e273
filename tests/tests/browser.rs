//! The page as a person sees it, in a real headless Chromium: count and replica first,
//! a reload counts one more, reloads over new connections reach other replicas and the
//! board lists them, Redis down is said in plain words, light, dark and phone layouts, and
//! the board follows replicas as they come and go without a reload, and a page whose
//! stream is refused reads the board instead until a stream is free.
//! Screenshots of each state are left in target/screenshots/.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use e2e::browser::{Balancer, Browser, is_png};
use e2e::{Cleanup, Compose, PORT, build_web_fe_image, docker_ok, exclusive, http_get, wait_for};

fn count(browser: &Browser) -> u64 {
    let text = browser.text("#count").expect("the count is on the page");
    text.parse().unwrap_or_else(|_| panic!("count {text:?}"))
}

fn board_hosts(browser: &Browser) -> BTreeSet<String> {
    browser.board().into_iter().map(|(host, _)| host).collect()
}

/// One web-fe container of a scaled compose project.
struct Replica {
    container: String,
    hostname: String,
    port: u16,
}

/// The project's web-fe containers, each ready on its own loopback port.
fn replicas(compose: &Compose) -> Vec<Replica> {
    compose
        .run(&["ps", "-q", "web-fe"])
        .lines()
        .map(|container| {
            let hostname = docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", container]);
            let published = docker_ok(&["port", container, "8080"]);
            let port: u16 = published
                .lines()
                .next()
                .and_then(|l| l.rsplit(':').next())
                .and_then(|p| p.trim().parse().ok())
                .expect("port");
            ready(port);
            Replica {
                container: container.to_owned(),
                hostname,
                port,
            }
        })
        .collect()
}

/// A compose project of `n` web-fe replicas, each ready on its own loopback port; the
/// project is removed when the returned guard drops.
fn scaled_project(tag: &str, n: usize) -> (Compose, Cleanup, Vec<Replica>) {
    project(Compose::v2(tag).with_override("scaled.yml"), n)
}

fn project(compose: Compose, n: usize) -> (Compose, Cleanup, Vec<Replica>) {
    build_web_fe_image();
    let cleanup = compose.cleanup();
    compose.run(&["up", "-d", "--scale", &format!("web-fe={n}")]);
    let started = replicas(&compose);
    assert_eq!(started.len(), n, "replicas of {}", compose.project);
    (compose, cleanup, started)
}

fn ready(port: u16) {
    wait_for("web-fe ready", Duration::from_secs(60), || {
        http_get(port, "/readyz").filter(|(status, _)| *status == 200)
    });
}

#[test]
fn compose_page_counts_names_its_replica_and_explains_an_outage() {
    let _lock = exclusive();
    build_web_fe_image();
    let compose = Compose::v2("browser");
    let _cleanup = compose.cleanup();
    compose.run(&["up", "-d"]);
    ready(PORT);
    let hostname = docker_ok(&[
        "inspect",
        "-f",
        "{{.Config.Hostname}}",
        &compose.container("web-fe"),
    ]);
    let browser = Browser::start();
    let url = format!("http://127.0.0.1:{PORT}/");

    browser.open(&url);
    let first = count(&browser);
    assert_eq!(
        browser.text("#hostname").as_deref(),
        Some(hostname.as_str())
    );
    browser.until("this replica on the board", Duration::from_secs(5), |b| {
        board_hosts(b) == BTreeSet::from([hostname.clone()])
    });
    // The count and the replica are the first things on screen, above the fold.
    let top = browser.script(
        "return ['#count', '#hostname'].map(s => document.querySelector(s).getBoundingClientRect().bottom)",
    );
    assert!(
        top.as_array()
            .unwrap()
            .iter()
            .all(|b| b.as_f64().unwrap() < 400.0),
        "{top}"
    );
    // Everything came from web-fe itself: no other origin, its stylesheet and one script.
    let loaded = browser.script("return performance.getEntriesByType('resource').map(e => e.name)");
    let loaded: Vec<&str> = loaded
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(loaded.iter().all(|u| u.starts_with(&url)), "{loaded:?}");
    assert!(loaded.iter().any(|u| u.ends_with(".css")), "{loaded:?}");
    assert_eq!(
        browser.script("return [...document.scripts].filter(s => !s.src).length"),
        0,
        "no inline script"
    );
    assert_eq!(browser.script("return document.scripts.length"), 1);
    // Basic accessibility: language, labelled count and sections.
    assert_eq!(browser.script("return document.documentElement.lang"), "en");
    let unlabelled = browser.script(
        "return [...document.querySelectorAll('section')].filter(s => !s.getAttribute('aria-labelledby') && !s.getAttribute('aria-label')).length",
    );
    assert_eq!(unlabelled, 0);
    assert_eq!(
        browser.script("return document.getElementById('count').getAttribute('aria-labelledby')"),
        "count-label"
    );
    assert!(is_png(&browser.screenshot("compose-light")));

    browser.reload();
    assert_eq!(count(&browser), first + 1, "a reload counts one more");
    // The reload fetched the page alone: the browser kept its stylesheet and script.
    let assets = browser.script(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/assets/')).map(e => e.transferSize)",
    );
    assert_eq!(
        assets,
        serde_json::json!([0, 0]),
        "bytes fetched per asset on reload"
    );

    browser.colour_scheme("dark");
    browser.reload();
    assert_eq!(count(&browser), first + 2);
    let background = browser.script("return getComputedStyle(document.body).backgroundColor");
    assert_eq!(
        background, "rgb(15, 18, 22)",
        "dark theme follows the system"
    );
    browser.screenshot("compose-dark");
    browser.colour_scheme("light");

    browser.set_window(390, 844);
    browser.reload();
    assert_eq!(count(&browser), first + 3);
    let fits = browser.script("return document.documentElement.scrollWidth <= window.innerWidth");
    assert_eq!(fits, true, "no sideways scrolling on a phone");
    browser.screenshot("compose-phone");
    browser.set_window(1100, 900);

    compose.run(&["stop", "redis"]);
    browser.reload();
    let title = browser.text("#problem-title").unwrap_or_default();
    assert!(
        ["Redis cannot be reached", "Redis did not answer in time"].contains(&title.as_str()),
        "{title}"
    );
    let detail = browser.text("#problem-detail").unwrap_or_default();
    assert!(
        detail.contains(&format!(
            "Replica {hostname} could not count this view: Redis"
        )),
        "{detail}"
    );
    assert!(
        detail.contains("This view was not counted.")
            || detail.contains("This view may have been counted."),
        "{detail}"
    );
    browser.screenshot("redis-down");

    compose.run(&["start", "redis"]);
    ready(PORT);
    browser.reload();
    assert_eq!(count(&browser), first + 4, "the count resumes where it was");
}

#[test]
fn reloads_reach_other_replicas_and_the_panel_shows_them() {
    let _lock = exclusive();
    let (_compose, _cleanup, started) = scaled_project("replicas", 3);
    let replicas: BTreeSet<String> = started.iter().map(|r| r.hostname.clone()).collect();
    let ports = started.iter().map(|r| r.port).collect();
    let balancer = Balancer::start(ports);
    let browser = Browser::start();

    browser.open(&balancer.url());
    let mut seen = BTreeSet::new();
    let mut last = count(&browser);
    seen.insert(browser.text("#hostname").unwrap());
    for _ in 0..9 {
        browser.reload();
        let now = count(&browser);
        assert_eq!(
            now,
            last + 1,
            "each reload counts once, whichever replica answers"
        );
        last = now;
        seen.insert(browser.text("#hostname").unwrap());
    }
    assert!(seen.len() >= 2, "10 reloads all reached {seen:?}");
    assert!(seen.is_subset(&replicas), "{seen:?} not in {replicas:?}");
    // The board lists every replica, whether it answered a reload or not.
    browser.until("all 3 replicas", Duration::from_secs(5), |b| {
        board_hosts(b) == replicas
    });
    browser.screenshot("replicas");

    // Auto-refresh: off by default; on, the page reloads itself over new connections.
    assert_eq!(
        browser.text("a.toggle").as_deref(),
        Some("Auto-refresh: off")
    );
    browser.click("a.toggle");
    let before = count(&browser);
    std::thread::sleep(Duration::from_millis(4_500));
    let after = count(&browser);
    assert!(
        after >= before + 2,
        "auto-refresh every 2 s: {before} → {after}"
    );
    assert!(browser.text("a.toggle").unwrap().ends_with(": on"));
    browser.screenshot("auto-refresh");
}

#[test]
fn the_board_follows_replicas_coming_and_going_without_a_reload() {
    let _lock = exclusive();
    let (compose, _cleanup, first) = scaled_project("board", 2);
    let first_hosts: BTreeSet<String> = first.iter().map(|r| r.hostname.clone()).collect();
    let balancer = Balancer::start(first.iter().map(|r| r.port).collect());
    let browser = Browser::start();
    browser.open(&balancer.url());
    // Gone if the page reloads: everything below must happen in this one page.
    browser.script("window.sameDocument = true; return null");
    let same_page = |b: &Browser| b.script("return window.sameDocument === true") == true;
    browser.until("both replicas, live", Duration::from_secs(5), |b| {
        b.serving() == first_hosts
            && b.script("return document.getElementById('stream-status').dataset.state") == "live"
    });
    browser.screenshot("board-two-replicas");

    // The views control: 20 counted views, each on a new connection, spread by the balancer.
    let before = count(&browser);
    browser.click("#spread-form button");
    browser.until("20 views made", Duration::from_secs(20), |b| {
        b.text("#spread-result")
            .is_some_and(|t| t.starts_with("20 views answered by 2 replica(s)"))
    });
    browser.until("the count, streamed", Duration::from_secs(5), |b| {
        count(b) >= before + 20
    });
    browser.screenshot("board-views-spread");

    // Scaled up: the newcomers appear without a reload and without serving anyone.
    compose.run(&["up", "-d", "--scale", "web-fe=4", "--no-recreate"]);
    let all = replicas(&compose);
    let hosts: BTreeSet<String> = all.iter().map(|r| r.hostname.clone()).collect();
    let appeared = browser.until("4 serving replicas", Duration::from_secs(5), |b| {
        b.serving() == hosts
    });
    assert!(same_page(&browser), "the page reloaded");
    println!("scaled 2 -> 4: shown {appeared:?} after compose returned");
    browser.screenshot("board-four-replicas");

    // One killed, one stopped: each is marked, with no reload.
    let newcomers: Vec<&Replica> = all
        .iter()
        .filter(|r| !first_hosts.contains(&r.hostname))
        .collect();
    let (killed, stopped) = (newcomers[0], newcomers[1]);
    docker_ok(&["rm", "-f", &killed.container]);
    docker_ok(&["stop", &stopped.container]);
    let marked = browser.until("both marked", Duration::from_secs(5), |b| {
        let tiles = b.board();
        tiles.contains(&(killed.hostname.clone(), "silent".into()))
            && tiles.contains(&(stopped.hostname.clone(), "stopped".into()))
    });
    println!("rm -f and stop: both marked {marked:?} after");
    browser.screenshot("board-replicas-leaving");

    // The replica streaming to the page freezes, as one does whose machine dies: its
    // connection stays open and says nothing. The page notices the silence and reconnects
    // through the balancer to the other one.
    let streamer = streaming_replica(&browser, &first);
    docker_ok(&["pause", &streamer.container]);
    let quiet = browser.until(
        "a stream from the other replica after a silent one",
        Duration::from_secs(30),
        |b| streams_from_another(b, streamer),
    );
    println!("streaming replica frozen: the page streamed from another after {quiet:?}");
    docker_ok(&["unpause", &streamer.container]);
    // The replica streaming now dies outright: the page reconnects as its stream ends.
    let streamer = streaming_replica(&browser, &first);
    docker_ok(&["rm", "-f", &streamer.container]);
    browser.until(
        "a stream from the other replica after one ended",
        Duration::from_secs(15),
        |b| streams_from_another(b, streamer),
    );
    assert!(same_page(&browser), "the page reloaded");
    browser.screenshot("board-stream-reconnected");
}

/// The replica the page says it streams from, while its stream is live.
fn live_from(browser: &Browser) -> Option<String> {
    browser
        .text("#stream-status")
        .and_then(|t| t.strip_prefix("live from ").map(str::to_owned))
}

/// The replica among `replicas` that streams to the page.
fn streaming_replica<'a>(browser: &Browser, replicas: &'a [Replica]) -> &'a Replica {
    let host = live_from(browser).expect("a live stream");
    replicas
        .iter()
        .find(|r| r.hostname == host)
        .unwrap_or_else(|| panic!("{host} streams, but is none of the replicas"))
}

fn streams_from_another(browser: &Browser, streamer: &Replica) -> bool {
    live_from(browser).is_some_and(|host| host != streamer.hostname)
}

#[test]
fn a_page_whose_stream_is_refused_still_follows_the_count() {
    let _lock = exclusive();
    let (_compose, _cleanup, replicas) = project(
        Compose::v2("refused")
            .with_override("scaled.yml")
            .with_override("few-streams.yml"),
        1,
    );
    let port = replicas[0].port;
    // Another watcher holds the replica's only stream.
    let mut holder = TcpStream::connect(("127.0.0.1", port)).unwrap();
    holder
        .write_all(b"GET /api/board/stream HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut first = [0; 12];
    holder.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.0 200");

    let browser = Browser::start();
    browser.open(&format!("http://127.0.0.1:{port}/"));
    let state =
        |b: &Browser| b.script("return document.getElementById('stream-status').dataset.state");
    browser.until("the page polling", Duration::from_secs(5), |b| {
        state(b) == "polling"
    });
    let before = count(&browser);
    for _ in 0..3 {
        assert_eq!(http_get(port, "/api").map(|(s, _)| s), Some(200));
    }
    let followed = browser.until("the count, read", Duration::from_secs(10), |b| {
        count(b) == before + 3
    });
    println!("stream refused: the page showed 3 more views {followed:?} after");
    browser.screenshot("board-stream-refused");

    // The watcher leaves: after Retry-After, the page streams again.
    drop(holder);
    browser.until("the page live again", Duration::from_secs(20), |b| {
        state(b) == "live"
    });
}
