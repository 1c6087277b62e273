//! The Compose deployment: both compose tools, bound to throwaway project names.

use std::process::Command;

use crate::images::{WEB_FE_IMAGE, builder_image, redis_image};
use crate::runner::{Cleanup, checked, docker, repo_root};

/// A shell command for a Redis container: `redis-cli <args>` with the password from the
/// redis-password secret, kept out of the command line.
pub fn redis_cli(args: &str) -> String {
    format!("REDISCLI_AUTH=\"$(cat /run/secrets/redis-password)\" redis-cli {args}")
}

/// The `hits` key, read inside the Redis container with the password from its secret.
pub fn redis_hits(redis_container: &str) -> u64 {
    try_redis_hits(redis_container)
        .unwrap_or_else(|| panic!("redis-cli get hits failed in {redis_container}"))
}

/// The same, `None` while Redis does not answer (restarting, or its container gone).
pub fn try_redis_hits(redis_container: &str) -> Option<u64> {
    match redis_cli_in(redis_container, "get hits")?.trim() {
        "" => Some(0),
        text => text.parse().ok(),
    }
}

/// What `redis-cli <command>` printed in `redis_container`, `None` if it failed.
pub fn redis_cli_in(redis_container: &str, command: &str) -> Option<String> {
    let out = docker(&["exec", redis_container, "sh", "-c", &redis_cli(command)]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A setting of the Redis in `redis_container` (`CONFIG GET`), `None` if it did not answer.
fn redis_config(redis_container: &str, name: &str) -> Option<String> {
    let text = redis_cli_in(redis_container, &format!("config get {name}"))?;
    // redis-cli prints the name, then the value.
    text.lines().nth(1).map(str::to_owned)
}

/// Each acknowledged write is in the append-only file: `appendonly yes` and Redis writing
/// it before it answers (`appendfsync no`). With `everysec`, Redis answers without writing
/// while its background fsync runs, and a SIGKILL then loses acknowledged views.
pub fn assert_writes_before_answering(redis_container: &str) {
    for (name, value) in [("appendonly", "yes"), ("appendfsync", "no")] {
        assert_eq!(
            redis_config(redis_container, name).as_deref(),
            Some(value),
            "{redis_container}: Redis's {name}"
        );
    }
}

/// The host port the compose file publishes web-fe on (on 127.0.0.1).
pub const PORT: u16 = 5000;

/// One compose tool (v2 plugin or 1.29) bound to a throwaway project name.
pub struct Compose {
    program: &'static str,
    prefix: &'static [&'static str],
    pub project: String,
    files: Vec<String>,
}

impl Compose {
    /// Compose v2 (`docker compose`), on a project named after `tag`.
    pub fn v2(tag: &str) -> Self {
        Self::new("docker", &["compose"], tag)
    }

    /// docker-compose 1.29.
    pub fn v1(tag: &str) -> Self {
        Self::new("docker-compose", &[], tag)
    }

    fn new(program: &'static str, prefix: &'static [&'static str], tag: &str) -> Self {
        let project = format!("counter-e2e-{tag}-{}", std::process::id());
        Self {
            program,
            prefix,
            project,
            files: vec!["docker-compose.yml".into()],
        }
    }

    /// Layers a compose file from tests/fixtures over docker-compose.yml.
    pub fn with_override(mut self, fixture: &str) -> Self {
        self.files.push(format!("tests/fixtures/{fixture}"));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.program);
        command
            .current_dir(repo_root())
            .args(self.prefix)
            .args(self.files.iter().flat_map(|f| ["-f", f.as_str()]))
            .args(["-p", &self.project])
            .args(args)
            .env("BUILDER_IMAGE", builder_image())
            .env("REDIS_IMAGE", redis_image())
            .env("WEB_FE_IMAGE", WEB_FE_IMAGE)
            .env("PUBLISH_ADDR", "127.0.0.1")
            .env("PUBLISH_PORT", PORT.to_string());
        command
    }

    pub fn run(&self, args: &[&str]) -> String {
        checked(&mut self.command(args))
    }

    /// Removes containers, network and volume whatever state the test left them in.
    pub fn cleanup(&self) -> Cleanup {
        let mut cleanup = Cleanup::new();
        let mut down = self.command(&["down", "-v", "--remove-orphans"]);
        cleanup.run(move || {
            let _ = down.output();
        });
        cleanup
    }

    pub fn container(&self, service: &str) -> String {
        let id = self.run(&["ps", "-q", service]);
        assert!(!id.is_empty(), "no {service} container in {}", self.project);
        id
    }

    pub fn volume(&self) -> String {
        format!("{}_redis-data", self.project.replace('.', ""))
    }
}
