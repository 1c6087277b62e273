//! A real headless Chromium (Debian's `chromium`), driven over WebDriver by Debian's
//! `chromedriver`, for tests that look at the page the way a person does. Only 127.0.0.1
//! addresses are opened.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{repo_root, wait_for};

/// The element key of the W3C WebDriver protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a Chromium session with a fresh profile.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromedriver ({e}). Install Chromium and its driver: \
                     `sudo apt-get install chromium chromium-driver`."
                )
            });
        let profile = std::env::temp_dir().join(format!("counter-chromium-{port}"));
        let _ = std::fs::remove_dir_all(&profile);
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
            profile,
        };
        wait_for("chromedriver", Duration::from_secs(20), || {
            browser.call("GET", "/status", None).ok()
        });
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1100,900",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", browser.profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let session = browser.command("POST", "/session", Some(capabilities));
        browser.session = session["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser
    }

    pub fn open(&self, url: &str) {
        assert!(url.starts_with("http://127.0.0.1:"), "only loopback: {url}");
        self.session_command("POST", "/url", json!({ "url": url }));
    }

    pub fn reload(&self) {
        self.session_command("POST", "/refresh", json!({}));
    }

    /// The visible text of the first element matching `css`, or None if there is none.
    pub fn text(&self, css: &str) -> Option<String> {
        let found = self.call(
            "POST",
            &format!("/session/{}/element", self.session),
            Some(json!({"using": "css selector", "value": css})),
        );
        let id = found.ok()?[ELEMENT].as_str()?.to_owned();
        let text = self.session_command("GET", &format!("/element/{id}/text"), Value::Null);
        text.as_str().map(str::to_owned)
    }

    /// Runs JavaScript in the page (for reading, never for driving the app).
    pub fn script(&self, source: &str) -> Value {
        self.session_command(
            "POST",
            "/execute/sync",
            json!({"script": source, "args": []}),
        )
    }

    pub fn click(&self, css: &str) {
        let found = self.session_command(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        let id = found[ELEMENT].as_str().expect("element id").to_owned();
        self.session_command("POST", &format!("/element/{id}/click"), json!({}));
    }

    pub fn set_window(&self, width: u32, height: u32) {
        self.session_command(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        );
    }

    /// Emulates the operating system's light or dark preference.
    pub fn colour_scheme(&self, scheme: &str) {
        self.session_command(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.setEmulatedMedia", "params": {
                "features": [{"name": "prefers-color-scheme", "value": scheme}]
            }}),
        );
    }

    /// Saves a PNG of the window under target/screenshots/ and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.session_command("GET", "/screenshot", Value::Null);
        let png = decode_base64(encoded.as_str().expect("base64 screenshot"));
        let dir = repo_root().join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    fn session_command(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (!body.is_null()).then_some(body);
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// One WebDriver call: its `value`, or the error WebDriver reported.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let reply = read_response(&mut stream).map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
        match value["value"].get("error") {
            Some(error) => Err(format!("{error}: {}", value["value"]["message"])),
            None => Ok(value["value"].clone()),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The body of one HTTP response, by its Content-Length: chromedriver keeps the
/// connection open even when asked to close it.
fn read_response(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    let length = String::from_utf8_lossy(&head)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(body)
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        .map(value)
        .collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, d)| n | u32::from(*d) << (18 - 6 * i));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(chunk.len().saturating_sub(1))
        })
        .collect()
}

/// Spreads each new connection on 127.0.0.1:`port()` over `backends` (loopback ports),
/// as swarm's routing mesh spreads connections over replicas, for machines without one.
pub struct Balancer {
    port: u16,
}

impl Balancer {
    pub fn start(backends: Vec<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("balancer port");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            // A fixed-seed sequence: varied like a real balancer, the same on every run.
            let mut state = 0x9e37_79b9_7f4a_7c15_u64;
            for client in listener.incoming().map_while(Result::ok) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let backend = backends[(state % backends.len() as u64) as usize];
                std::thread::spawn(move || relay(client, backend));
            }
        });
        Self { port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

fn relay(client: TcpStream, backend: u16) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", backend)) else {
        return;
    };
    let (Ok(mut client_in), Ok(mut server_in)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (mut client_out, mut server_out) = (client, server);
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut server_in, &mut client_out);
    let _ = client_out.shutdown(std::net::Shutdown::Write);
    let _ = upstream.join();
}

/// True if `path` is a PNG file.
pub fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n"))
}
