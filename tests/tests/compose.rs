//! `docker compose up` as the walkthrough runs it: the page on 127.0.0.1:5000 counts and
//! names its container; the count survives down/up; `down -v` removes the volume.
//! Run with Compose v2 and with docker-compose 1.29.

use std::process::Command;
use std::time::Duration;

use e2e::{
    Cleanup, WEB_FE_IMAGE, build_web_fe_image, builder_image, checked, docker, docker_ok,
    exclusive, http_get, page_count_and_host, redis_image, repo_root, wait_for,
};

const PORT: u16 = 5000;

/// One compose tool (v2 plugin or 1.29) bound to a throwaway project name.
struct Compose {
    program: &'static str,
    prefix: &'static [&'static str],
    project: String,
}

impl Compose {
    fn v2() -> Self {
        Self::new("docker", &["compose"], "v2")
    }

    fn v1() -> Self {
        Self::new("docker-compose", &[], "v1")
    }

    fn new(program: &'static str, prefix: &'static [&'static str], tag: &str) -> Self {
        let project = format!("counter-e2e-{tag}-{}", std::process::id());
        Self {
            program,
            prefix,
            project,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.program);
        command
            .current_dir(repo_root())
            .args(self.prefix)
            .args(["-p", &self.project])
            .args(args)
            .env("BUILDER_IMAGE", builder_image())
            .env("REDIS_IMAGE", redis_image())
            .env("WEB_FE_IMAGE", WEB_FE_IMAGE)
            .env("PUBLISH_ADDR", "127.0.0.1")
            .env("PUBLISH_PORT", PORT.to_string());
        command
    }

    fn run(&self, args: &[&str]) -> String {
        checked(&mut self.command(args))
    }

    /// Removes containers, network and volume whatever state the test left them in.
    fn cleanup(&self) -> Cleanup {
        let mut cleanup = Cleanup::new();
        let mut down = self.command(&["down", "-v", "--remove-orphans"]);
        cleanup.run(move || {
            let _ = down.output();
        });
        cleanup
    }

    fn container(&self, service: &str) -> String {
        let id = self.run(&["ps", "-q", service]);
        assert!(!id.is_empty(), "no {service} container in {}", self.project);
        id
    }

    fn volume(&self) -> String {
        format!("{}_redis-data", self.project.replace('.', ""))
    }
}

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
    let compose = Compose::v2();
    let _cleanup = compose.cleanup();

    compose.run(&["up", "-d"]);
    let web = compose.container("web-fe");
    let hostname = docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", &web]);
    let (first, host) = page();
    assert_eq!(host, hostname, "the page names the container that answered");
    for expected in first + 1..first + 4 {
        assert_eq!(page(), (expected, hostname.clone()));
    }

    // The web-fe container keeps no state; Redis is not published on the host.
    assert_eq!(docker_ok(&["inspect", "-f", "{{len .Mounts}}", &web]), "0");
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
    let compose = Compose::v1();
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
