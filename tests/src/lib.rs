//! Harness for the end-to-end tests: they drive a real Docker engine with the repository's
//! own Dockerfile, compose and stack files. Everything a test creates is registered with a
//! [`Cleanup`] guard and removed when the test ends, passed or failed.

pub mod browser;
pub mod client;
pub mod fuzz;
pub mod lab;

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

pub(crate) fn image_setting(var: &str, default: &str) -> String {
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

/// Builds a second web-fe that looks different (version and accent), for rolling updates.
pub fn build_web_fe_variant(tag: &str, version: &str, accent: &str) {
    checked(
        Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", tag])
            .args(["--build-arg", &format!("BUILDER_IMAGE={}", builder_image())])
            .args(["--build-arg", &format!("COUNTER_VERSION={version}")])
            .args(["--build-arg", &format!("COUNTER_ACCENT={accent}")])
            .arg(repo_root()),
    );
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

/// What a load run saw: each request's outcome, by kind.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Requests answered 200.
    pub ok: u64,
    /// Other answers and transport errors, by status code or error kind.
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Time from the first failure to the first success after it, if anything failed.
    pub recovery: Option<Duration>,
}

impl LoadReport {
    pub fn sent(&self) -> u64 {
        self.ok + self.failed()
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// When a request finished, and its status or the kind of transport failure.
type Outcome = (Instant, Result<u16, String>);

/// Background clients sending GETs to 127.0.0.1:`port`, one new connection per request,
/// until [`Load::finish`], `max_requests` in all or `max_time`, whichever comes first.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    pub fn start(
        port: u16,
        path: &str,
        clients: usize,
        max_requests: u64,
        max_time: Duration,
    ) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let budget = Arc::new(AtomicU64::new(max_requests));
        let deadline = Instant::now() + max_time;
        let clients = (0..clients)
            .map(|_| {
                let (stop, budget, path) =
                    (Arc::clone(&stop), Arc::clone(&budget), path.to_owned());
                std::thread::spawn(move || {
                    let mut outcomes = Vec::new();
                    while !stop.load(Ordering::Relaxed)
                        && Instant::now() < deadline
                        && budget
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_ok()
                    {
                        outcomes.push((Instant::now(), request_status(port, &path)));
                        // A gentle pace: continuous, but leaves the 2 cores to the servers.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    outcomes
                })
            })
            .collect();
        Self { stop, clients }
    }

    pub fn finish(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut outcomes: Vec<Outcome> = self
            .clients
            .into_iter()
            .flat_map(|c| c.join().expect("load client panicked"))
            .collect();
        outcomes.sort_by_key(|(at, _)| *at);
        summarise(
            outcomes
                .iter()
                .map(|(at, r)| (*at, r.as_ref().map(|s| *s).map_err(String::as_str))),
        )
    }
}

/// Counts outcomes and the recovery time, from results in time order.
pub fn summarise<'a>(
    outcomes: impl Iterator<Item = (Instant, Result<u16, &'a str>)>,
) -> LoadReport {
    let mut report = LoadReport::default();
    let mut first_failure: Option<Instant> = None;
    for (at, outcome) in outcomes {
        match outcome {
            Ok(200) => {
                report.ok += 1;
                if let (Some(failed_at), None) = (first_failure, report.recovery) {
                    report.recovery = Some(at - failed_at);
                }
            }
            other => {
                first_failure.get_or_insert(at);
                let kind = match other {
                    Ok(status) => status.to_string(),
                    Err(e) => e.to_owned(),
                };
                *report.failures.entry(kind).or_default() += 1;
            }
        }
    }
    report
}

/// One GET on a new connection: the status, or the kind of transport failure.
fn request_status(port: u16, path: &str) -> Result<u16, String> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .map_err(|e| format!("connect: {:?}", e.kind()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {:?}", e.kind()))?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("read: {:?}", e.kind()))?;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "garbled".to_owned())
}

/// The `hits` key, read inside the Redis container with the password from its secret.
pub fn redis_hits(redis_container: &str) -> u64 {
    let value = docker_ok(&[
        "exec",
        redis_container,
        "sh",
        "-c",
        "REDISCLI_AUTH=\"$(cat /run/secrets/redis-password)\" redis-cli get hits",
    ]);
    match value.as_str() {
        "" => 0,
        text => text
            .parse()
            .unwrap_or_else(|_| panic!("redis-cli get hits answered {text:?}")),
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

/// Non-root, read-only root, no capabilities, no new privileges: on the running process.
pub fn check_web_fe_hardening(container: &str) {
    let inspect = |f: &str| docker_ok(&["inspect", "-f", f, container]);
    assert_eq!(inspect("{{.Config.User}}"), "65532:65532");
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(inspect("{{json .HostConfig.CapDrop}}"), r#"["ALL"]"#);
    let pid = inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for line in [
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
    ] {
        assert!(
            status.lines().any(|l| l == line),
            "{line:?} missing:\n{status}"
        );
    }
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t65532\t")),
        "{status}"
    );
    let env = inspect("{{json .Config.Env}}");
    assert!(
        env.contains("REDIS_PASSWORD_FILE=/run/secrets/redis-password"),
        "{env}"
    );
}

/// Redis answers nobody without the password, and the password is in no environment
/// or command line.
pub fn check_redis_locked(redis: &str, web: &str) {
    let anonymous = docker_ok(&["exec", redis, "redis-cli", "ping"]);
    assert!(
        anonymous.contains("NOAUTH"),
        "Redis answered without a password: {anonymous}"
    );
    let password = std::fs::read_to_string(repo_root().join("secrets/redis-password")).unwrap();
    let password = password.trim();
    for container in [redis, web] {
        let env = docker_ok(&[
            "inspect",
            "-f",
            "{{json .Config.Env}} {{json .Config.Cmd}}",
            container,
        ]);
        assert!(
            !env.contains(password),
            "password visible in {container}'s config"
        );
    }
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", redis]);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(password),
        "password in redis argv"
    );
}

/// How long swarm may take to converge after a change.
pub const CONVERGE: Duration = Duration::from_secs(120);

/// Uses the node's swarm if it has one; otherwise starts one and leaves it afterwards.
pub fn join_swarm() -> Cleanup {
    let mut cleanup = Cleanup::new();
    if docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]) == "active" {
        return cleanup;
    }
    // With several interfaces swarm wants an address; loopback is enough for one node.
    if !docker(&["swarm", "init"]).status.success() {
        docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    }
    cleanup.docker(&["swarm", "leave", "--force"]);
    cleanup
}

/// `docker stack rm` and what it leaves behind on purpose: the data volume.
pub fn remove_stack(stack: &str) {
    let _ = docker(&["stack", "rm", stack]);
    let label = format!("label=com.docker.stack.namespace={stack}");
    wait_for("the stack's containers and network to go", CONVERGE, || {
        let containers = docker_ok(&["ps", "-aq", "--filter", &label]);
        let networks = docker_ok(&["network", "ls", "-q", "--filter", &label]);
        (containers.is_empty() && networks.is_empty()).then_some(())
    });
    let _ = docker(&["volume", "rm", &format!("{stack}_redis-data")]);
}

pub fn running_tasks(service: &str) -> usize {
    docker_ok(&[
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.CurrentState}}",
    ])
    .lines()
    .filter(|s| s.starts_with("Running"))
    .count()
}

pub fn service_containers(service: &str) -> Vec<String> {
    docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Deploys stack.yml as `stack` with the given web-fe image and waits for 10/10 replicas.
/// Redis goes to the node labelled for it, as the README's walkthrough labels it.
pub fn deploy_stack(stack: &str, web_fe_image: &str) {
    let node = docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
    docker_ok(&["node", "update", "--label-add", "counter-redis=true", &node]);
    checked(
        Command::new("docker")
            .current_dir(repo_root())
            .args(["stack", "deploy", "-c", "stack.yml", stack])
            .env("WEB_FE_IMAGE", web_fe_image)
            .env("REDIS_IMAGE", redis_image()),
    );
    let web = format!("{stack}_web-fe");
    wait_for("10/10 web-fe replicas", CONVERGE, || {
        let filter = format!("name={web}");
        let replicas = docker_ok(&[
            "service",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Replicas}}",
        ]);
        (replicas == "10/10" && running_tasks(&web) == 10).then_some(())
    });
}

/// Records one row of the RELIABILITY.md fault table (cells separated by ` | `): printed,
/// and appended to `target/reliability.md`, where a whole run's rows can be collected.
pub fn reliability_row(cells: &str) {
    let row = format!("| {cells} |");
    println!("RELIABILITY {row}");
    let dir = repo_root().join("target");
    let _ = std::fs::create_dir_all(&dir);
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("reliability.md"))
        .and_then(|mut file| writeln!(file, "{row}"));
    if let Err(e) = appended {
        eprintln!("could not record the reliability row: {e}");
    }
}
