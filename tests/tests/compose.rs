//! `docker compose up` as the walkthrough runs it: the page on 127.0.0.1:5000 counts and
//! names its container; the count survives down/up; `down -v` removes the volume.
//! Run with Compose v2 and with docker-compose 1.29.

use std::time::Duration;

use e2e::{
    Compose, PORT, build_web_fe_image, docker, docker_ok, exclusive, http_get, page_count_and_host,
    wait_for,
};

/// Waits until the page answers 200 and returns its count and hostname.
fn page() -> (u64, String) {
    let (_, html) = wait_for(
        "the page on 127.0.0.1:5000",
        Duration::from_secs(60),
        || http_get(PORT, "/").filter(|(status, _)| *status == 200),
    );
    page_count_and_host(&html)
}

#[test]
fn compose_v2_walkthrough_keeps_the_count_across_down_and_up() {
    let _lock = exclusive();
    build_web_fe_image();
    let compose = Compose::v2("walk");
    let _cleanup = compose.cleanup();

    compose.run(&["up", "-d"]);
    let web = compose.container("web-fe");
    let hostname = docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", &web]);
    let (first, host) = page();
    assert_eq!(host, hostname, "the page names the container that answered");
    for expected in first + 1..first + 4 {
        assert_eq!(page(), (expected, hostname.clone()));
    }

    // The web-fe container keeps no state: its only mount is the read-only secret.
    let mounts = docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Type}} {{.Destination}} {{.RW}};{{end}}",
        &web,
    ]);
    assert_eq!(mounts, "bind /run/secrets/redis-password false;");
    // Redis is not published on the host.
    let redis = compose.container("redis");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{json .NetworkSettings.Ports}}", &redis]),
        r#"{"6379/tcp":null}"#
    );
    let status = compose.run(&["ps"]);
    assert!(
        status.contains("web-fe") && status.contains("redis"),
        "{status}"
    );

    compose.run(&["down"]);
    assert!(http_get(PORT, "/").is_none(), "still answering after down");
    compose.run(&["up", "-d"]);
    let (after, _) = page();
    assert_eq!(after, first + 4, "the count must survive down and up");

    compose.run(&["down", "-v"]);
    let volume = docker(&["volume", "inspect", &compose.volume()]);
    assert!(
        !volume.status.success(),
        "down -v must remove {}",
        compose.volume()
    );
}

#[test]
fn docker_compose_1_29_runs_the_same_file() {
    let _lock = exclusive();
    build_web_fe_image();
    let compose = Compose::v1("walk");
    let _cleanup = compose.cleanup();

    compose.run(&["up", "-d"]);
    let web = compose.container("web-fe");
    let hostname = docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", &web]);
    let (first, host) = page();
    assert_eq!((first, host), (1, hostname.clone()));
    assert_eq!(page(), (2, hostname));
    compose.run(&["down", "-v"]);
    assert!(
        !docker(&["volume", "inspect", &compose.volume()])
            .status
            .success()
    );
}
