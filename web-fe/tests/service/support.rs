//! The harness: a real `redis-server` on a free loopback port and the real `web-fe`
//! binary pointed at it. Both are stopped by PID when dropped, even if a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Long enough for a loaded 2-core CI machine; every wait polls and returns early.
const START_TIMEOUT: Duration = Duration::from_secs(10);

use test_support::pump;
pub use test_support::{
    Redis, free_port, open_fds, query_at, rss_kib, signal, wait_for, wait_for_count,
};

/// A port the start-up line names: ` port=8080` in the text log, `"port":8080` in JSON.
fn logged_port(line: &str, field: &str) -> u16 {
    [format!(" {field}="), format!("\"{field}\":")]
        .iter()
        .find_map(|key| {
            let rest = line.split(key.as_str()).nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in the start-up line {line:?}"))
}

/// The real web-fe binary, with its stdout collected line by line.
pub struct WebFe {
    pub port: u16,
    /// The loopback listener for the container health check.
    pub health_port: u16,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl WebFe {
    /// Starts web-fe against `redis_url` with `env` on top of test defaults, and waits
    /// until `/healthz` answers. It takes free ports itself (`PORT=0`, `HEALTH_PORT=0`) and
    /// names them in its start-up line, so no other test can take them first.
    pub fn start(redis_url: &str, env: &[(&str, &str)]) -> Self {
        let mut web = Self::spawn(redis_url, env);
        let line = web.logs_once_they_contain("web-fe listening");
        let listening = line
            .lines()
            .find(|l| l.contains("web-fe listening"))
            .unwrap_or_default();
        web.port = logged_port(listening, "port");
        web.health_port = logged_port(listening, "health_port");
        wait_for("web-fe's /healthz", START_TIMEOUT, || {
            if let Ok(Some(status)) = web.child.try_wait() {
                panic!("web-fe exited with {status} at start:\n{}", web.logs());
            }
            get_status(web.port, "/healthz")
        });
        web
    }

    fn spawn(redis_url: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_web-fe"));
        command
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("HEALTH_PORT", "0")
            .env("REDIS_URL", redis_url)
            .env("WORKERS", "2")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("web-fe binary runs");
        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        Self {
            port: 0,
            health_port: 0,
            child,
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The logs once they hold `needle`. Lines reach the test through reader threads, a
    /// moment after the process wrote them, so a test that checks the log right after an
    /// answer must wait for it.
    pub fn logs_once_they_contain(&self, needle: &str) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself and returns its status.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait on web-fe") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "web-fe still running after {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for WebFe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs web-fe with `env` and returns its exit status and output, for start-up failures.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_web-fe"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("web-fe binary runs");
    // A setting that is wrongly accepted starts a server: stop it rather than hang the suite.
    let deadline = Instant::now() + START_TIMEOUT;
    while child
        .try_wait()
        .expect("web-fe can be waited for")
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("killed web-fe is reaped");
            panic!(
                "web-fe {args:?} with {env:?} was still running after {START_TIMEOUT:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("web-fe's output is read");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}

/// Status of a GET on a new connection, or None if nothing answers.
pub fn get_status(port: u16, path: &str) -> Option<u16> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let response = agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    Some(response.status().as_u16())
}

/// Sends raw bytes (malformed ones are the point of some tests) and reads until the server
/// closes or 2 s pass; None if it cannot connect.
pub fn raw_request(port: u16, bytes: &[u8]) -> Option<String> {
    exchange(port, bytes, Duration::from_secs(2)).map(|(reply, _)| reply)
}

/// Sends raw bytes and reads until the server closes or `patience` passes: the reply, and
/// how long the server kept the connection open after the bytes went out.
pub fn exchange(port: u16, bytes: &[u8], patience: Duration) -> Option<(String, Duration)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(patience)).ok()?;
    // A server may answer and close before reading everything; that is not a failure here.
    let _ = stream.write_all(bytes);
    let sent = Instant::now();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    Some((String::from_utf8_lossy(&reply).into_owned(), sent.elapsed()))
}

/// The board a replica serves at `/api/board`, or None if it does not answer.
pub fn board(web: &WebFe) -> Option<serde_json::Value> {
    let mut response = ureq::get(web.url("/api/board")).call().ok()?;
    serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
}

/// Every replica on a board with its state, node by node.
pub fn board_states(board: &serde_json::Value) -> Vec<(String, String)> {
    let nodes = board["nodes"].as_array().map_or(&[][..], Vec::as_slice);
    nodes
        .iter()
        .flat_map(|n| n["replicas"].as_array().map_or(&[][..], Vec::as_slice))
        .map(|m| {
            let text = |key: &str| m[key].as_str().unwrap_or_default().to_owned();
            (text("hostname"), text("state"))
        })
        .collect()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

/// GETs `url` and reads the body as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = http.get(url).send().await.expect("request sent");
    response.json().await.expect("a JSON body")
}

/// GETs `url` and returns the body, for assertions on what a page or probe says.
pub async fn text(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.expect("request sent");
    response.text().await.expect("body read")
}

/// A TCP proxy in front of a real Redis that fails the way a crash mid-call does: Redis
/// runs the next visit, and its reply is lost with the connection; or the visit itself is
/// held back and its connection dropped before Redis gets it, to be delivered late or never.
/// Other calls (the heartbeat's) pass untouched.
pub struct FlakyProxy {
    pub port: u16,
    redis_port: u16,
    state: Arc<ProxyState>,
    accept: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct ProxyState {
    /// The reply to the next call counting at least this many views is to be lost;
    /// 0: none.
    lose_next_visit: AtomicUsize,
    /// The next call counting views is to be held back, its connection dropped.
    hold_next_visit: AtomicBool,
    /// The call held back, not yet delivered.
    held: Mutex<Option<Vec<u8>>>,
    /// No more connections are accepted.
    refusing: AtomicBool,
    /// Replies and visits lost so far.
    lost: AtomicUsize,
}

impl FlakyProxy {
    pub fn start(redis_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(ProxyState::default());
        let shared = Arc::clone(&state);
        let accept = std::thread::spawn(move || {
            // Once refusing, the listener is dropped: connections are refused.
            while !shared.refusing.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => relay(client, redis_port, &shared),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            port,
            redis_port,
            state,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Redis runs the next visit; its reply is dropped with its connection.
    pub fn lose_next_visit_reply(&self) {
        self.lose_next_batch_reply(1);
    }

    /// Redis runs the next batch of at least `views` views; its reply is dropped with its
    /// connection.
    pub fn lose_next_batch_reply(&self, views: usize) {
        self.state.lose_next_visit.store(views, Ordering::SeqCst);
    }

    /// The next visit is held back and its connection dropped before Redis gets it.
    pub fn hold_next_visit(&self) {
        self.state.hold_next_visit.store(true, Ordering::SeqCst);
    }

    /// Sends the visit held back to Redis now, on a connection of its own, as a packet of a
    /// connection web-fe gave up on may arrive late; returns Redis's reply.
    pub fn deliver_held(&self) -> String {
        let call = self
            .state
            .held
            .lock()
            .unwrap()
            .take()
            .expect("a visit held back");
        let mut redis = TcpStream::connect(("127.0.0.1", self.redis_port)).unwrap();
        redis.set_read_timeout(Some(START_TIMEOUT)).unwrap();
        redis.write_all(&call).unwrap();
        let mut reply = String::new();
        BufReader::new(redis).read_line(&mut reply).unwrap();
        reply
    }

    /// As [`Self::lose_next_visit_reply`], and from now on nothing connects.
    pub fn fail_next_visit_reply(&self) {
        self.lose_next_visit_reply();
        self.state.refusing.store(true, Ordering::SeqCst);
    }

    /// Replies and visits lost so far.
    pub fn lost(&self) -> usize {
        self.state.lost.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.state.refusing.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// How many views a call to the visit script counts; 0 for other calls. The call is a RESP
/// array of bulk strings (`*10\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n...`): the script,
/// 3 keys (`hits` first), then host, expiry, time and the number of views.
fn views_counted(call: &[u8]) -> usize {
    let text = String::from_utf8_lossy(call);
    let elements: Vec<&str> = text.split("\r\n").skip(2).step_by(2).take(10).collect();
    match elements[..] {
        ["EVALSHA", _, "3", "hits", _, _, _, _, _, views] => views.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Relays one client connection to Redis. A call that counts views while a loss is
/// armed dooms its connection: Redis runs it, and the reply is dropped with both sockets;
/// or, while a hold is armed, the call is kept back and both sockets dropped.
fn relay(client: TcpStream, redis_port: u16, state: &Arc<ProxyState>) {
    client.set_nonblocking(false).unwrap();
    let upstream =
        TcpStream::connect(("127.0.0.1", redis_port)).expect("redis answers behind the proxy");
    let doomed = Arc::new(AtomicBool::new(false));
    let (state, dooming) = (Arc::clone(state), Arc::clone(&doomed));
    pump(
        client.try_clone().unwrap(),
        upstream.try_clone().unwrap(),
        move |call| {
            let views = views_counted(call);
            if views > 0 && state.hold_next_visit.swap(false, Ordering::SeqCst) {
                *state.held.lock().unwrap() = Some(call.to_vec());
                state.lost.fetch_add(1, Ordering::SeqCst);
                return false;
            }
            let armed = state.lose_next_visit.load(Ordering::SeqCst);
            if armed > 0
                && views >= armed
                && state
                    .lose_next_visit
                    .compare_exchange(armed, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                state.lost.fetch_add(1, Ordering::SeqCst);
                dooming.store(true, Ordering::SeqCst);
            }
            true
        },
    );
    pump(upstream, client, move |_| !doomed.load(Ordering::SeqCst));
}
