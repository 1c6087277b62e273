//! Harness for the end-to-end tests: they drive a real Docker engine with the repository's
//! own Dockerfile, compose and stack files. Everything a test creates is registered with a
//! [`Cleanup`] guard and removed when the test ends, passed or failed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The image the tests build from the Dockerfile and run everywhere.
pub const WEB_FE_IMAGE: &str = "counter-web-fe:e2e";

/// Base images. No registry is needed: by default these are the local stand-ins that
/// `scripts/offline-images.sh` builds; set the variables to use the official images.
pub fn builder_image() -> String {
    image_setting("BUILDER_IMAGE", "counter-offline/rust:bookworm")
}

pub fn redis_image() -> String {
    image_setting("REDIS_IMAGE", "counter-offline/redis:bookworm")
}

/// A Debian image with curl, for clients inside Docker networks.
pub fn client_image() -> String {
    image_setting("CLIENT_IMAGE", "counter-offline/debian:bookworm")
}

fn image_setting(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The repository root, which is the Docker build context.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// Serialises the tests of one binary: they share port 5000, the swarm and image tags.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    check_prerequisites();
    guard
}

/// Fails once, clearly, when Docker or the base images are missing.
fn check_prerequisites() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let info = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        match info {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(format!(
                    "no Docker engine answers ({}). Start one (`sudo dockerd &` on Debian, \
                     or Docker Desktop), or run `bash .ci/run`, which installs and starts it.",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "the docker CLI cannot run ({e}). Install Docker \
                     (`sudo apt-get install docker.io docker-compose` on Debian)."
                ));
            }
        }
        for image in [builder_image(), redis_image(), client_image()] {
            if !docker(&["image", "inspect", &image]).status.success() {
                return Err(format!(
                    "base image {image} is missing. Build the offline stand-ins with \
                     `sudo scripts/offline-images.sh`, or set BUILDER_IMAGE / REDIS_IMAGE / \
                     CLIENT_IMAGE to images you have."
                ));
            }
        }
        Ok(())
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}

pub fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

/// Runs docker and returns its trimmed stdout; panics with stderr if it fails.
pub fn docker_ok(args: &[&str]) -> String {
    checked(Command::new("docker").args(args))
}

/// Runs a command and returns its trimmed stdout; panics with its output if it fails.
pub fn checked(command: &mut Command) -> String {
    let out = run(command);
    if !out.status.success() {
        panic!(
            "{command:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Builds the web-fe image from the repository's Dockerfile (cached after the first time).
pub fn build_web_fe_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = repo_root();
        let builder = builder_image();
        checked(
            Command::new("docker")
                .env("DOCKER_BUILDKIT", "0")
                .args(["build", "-q", "-t", WEB_FE_IMAGE])
                .args(["--build-arg", &format!("BUILDER_IMAGE={builder}")])
                .arg(&root),
        );
    });
}

/// Polls `ready` every 250 ms until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Commands that undo what a test created, run in reverse order when the guard drops.
#[derive(Default)]
pub struct Cleanup {
    steps: Vec<Box<dyn FnOnce()>>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a docker command; its failure is ignored (the thing may be gone already).
    pub fn docker(&mut self, args: &[&str]) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.steps.push(Box::new(move || {
            let _ = Command::new("docker")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }));
    }

    pub fn run(&mut self, step: impl FnOnce() + 'static) {
        self.steps.push(Box::new(step));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        while let Some(step) = self.steps.pop() {
            step();
        }
    }
}

/// A plain HTTP/1.1 GET on a new connection: status and body, or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let status = reply.get(9..12)?.parse().ok()?;
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

/// The text between `start` and the next `end` in `text`.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// The count and hostname shown on the HTML page.
pub fn page_count_and_host(html: &str) -> (u64, String) {
    let count = between(html, r#"aria-labelledby="count-label">"#, "<")
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no count on the page:\n{html}"));
    let host = between(html, r#"<span class="badge" id="hostname">"#, "<")
        .unwrap_or_else(|| panic!("no hostname on the page:\n{html}"));
    (count, host.to_owned())
}

/// Runs a shell script in a throwaway client container on `network` and returns stdout.
pub fn in_client_container(network: &str, script: &str) -> String {
    docker_ok(&[
        "run",
        "--rm",
        "--network",
        network,
        &client_image(),
        "sh",
        "-c",
        script,
    ])
}
