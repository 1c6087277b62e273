//! The page as a person sees it, in a real headless Chromium: count and replica first,
//! a reload counts one more, reloads over new connections reach other replicas and the
//! panel lists them, Redis down is said in plain words, light, dark and phone layouts.
//! Screenshots of each state are left in target/screenshots/.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::browser::{Balancer, Browser, is_png};
use e2e::{Compose, PORT, build_web_fe_image, docker_ok, exclusive, http_get, wait_for};

fn count(browser: &Browser) -> u64 {
    let text = browser.text("#count").expect("the count is on the page");
    text.parse().unwrap_or_else(|_| panic!("count {text:?}"))
}

fn replica_rows(browser: &Browser) -> BTreeSet<String> {
    let rows = browser.script(
        "return [...document.querySelectorAll('#replicas tbody tr')].map(r => r.dataset.hostname)",
    );
    rows.as_array()
        .expect("rows")
        .iter()
        .filter_map(|h| h.as_str().map(str::to_owned))
        .collect()
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
    assert_eq!(replica_rows(&browser), BTreeSet::from([hostname.clone()]));
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
    // Everything came from web-fe itself: no other origin, no script.
    let loaded = browser.script("return performance.getEntriesByType('resource').map(e => e.name)");
    assert!(
        loaded
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u.as_str().unwrap().starts_with(&url)),
        "{loaded}"
    );
    assert_eq!(browser.script("return document.scripts.length"), 0);
    // Basic accessibility: language, title, labelled count, header cells with scope.
    assert_eq!(browser.script("return document.documentElement.lang"), "en");
    let unlabelled = browser.script(
        "return [...document.querySelectorAll('th')].filter(t => !t.getAttribute('scope')).length",
    );
    assert_eq!(unlabelled, 0);
    assert_eq!(
        browser.script("return document.getElementById('count').getAttribute('aria-labelledby')"),
        "count-label"
    );
    assert!(is_png(&browser.screenshot("compose-light")));

    browser.reload();
    assert_eq!(count(&browser), first + 1, "a reload counts one more");

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
    build_web_fe_image();
    let compose = Compose::v2("replicas").with_override("scaled.yml");
    let _cleanup = compose.cleanup();
    compose.run(&["up", "-d", "--scale", "web-fe=3"]);
    let containers: Vec<String> = compose
        .run(&["ps", "-q", "web-fe"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(containers.len(), 3);
    let mut replicas = BTreeSet::new();
    let mut ports = Vec::new();
    for container in &containers {
        replicas.insert(docker_ok(&[
            "inspect",
            "-f",
            "{{.Config.Hostname}}",
            container,
        ]));
        let published = docker_ok(&["port", container, "8080"]);
        let port: u16 = published
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .expect("port");
        ready(port);
        ports.push(port);
    }
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
    assert!(
        replica_rows(&browser).is_superset(&seen),
        "the panel lists every replica seen"
    );
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
