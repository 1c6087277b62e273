//! A real headless Chromium (Debian's `chromium`), driven over WebDriver by Debian's
//! `chromedriver`, for tests that look at the page the way a person does. Only 127.0.0.1
//! addresses are opened.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::collections::BTreeSet;

use crate::{repo_root, wait_for};

/// A WebDriver session in Chromium through `fantoccini`; its async calls run to completion
/// on a runtime of its own, so the tests stay plain sequential code.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        wait_for("chromedriver", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let args: Vec<String> = [
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
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect();
        let mut capabilities = Capabilities::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": args}),
        );
        let client = runtime
            .block_on(
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .unwrap_or_else(|e| panic!("no Chromium session: {e}"));
        Self {
            runtime,
            client: Some(client),
            driver,
            profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    pub fn open(&self, url: &str) {
        assert!(url.starts_with("http://127.0.0.1:"), "only loopback: {url}");
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub fn reload(&self) {
        self.runtime
            .block_on(self.client().refresh())
            .unwrap_or_else(|e| panic!("reload: {e}"));
    }

    /// The visible text of the first element matching `css`, or None if there is none.
    pub fn text(&self, css: &str) -> Option<String> {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(css)).await.ok()?;
            element.text().await.ok()
        })
    }

    /// Runs JavaScript in the page (for reading, never for driving the app).
    pub fn script(&self, source: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(source, vec![]))
            .unwrap_or_else(|e| panic!("script {source}: {e}"))
    }

    pub fn click(&self, css: &str) {
        self.runtime
            .block_on(async {
                let element = self.client().find(Locator::Css(css)).await?;
                element.click().await
            })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub fn set_window(&self, width: u32, height: u32) {
        self.runtime
            .block_on(self.client().set_window_size(width, height))
            .unwrap_or_else(|e| panic!("window {width}x{height}: {e}"));
    }

    /// Emulates the operating system's light or dark preference (a Chromium DevTools
    /// command, which WebDriver passes through).
    pub fn colour_scheme(&self, scheme: &str) {
        let command = DevTools(json!({"cmd": "Emulation.setEmulatedMedia", "params": {
            "features": [{"name": "prefers-color-scheme", "value": scheme}]
        }}));
        self.runtime
            .block_on(self.client().issue_cmd(command))
            .unwrap_or_else(|e| panic!("colour scheme {scheme}: {e}"));
    }

    /// Every replica on the page's board with its state, as the page shows it now.
    pub fn board(&self) -> Vec<(String, String)> {
        let tiles = self.script(
            "return [...document.querySelectorAll('#board [data-hostname]')]
                      .map(t => [t.dataset.hostname, t.dataset.state])",
        );
        tiles
            .as_array()
            .expect("tiles")
            .iter()
            .map(|t| {
                let text = |i: usize| t[i].as_str().unwrap_or_default().to_owned();
                (text(0), text(1))
            })
            .collect()
    }

    /// Replicas the page's board shows serving.
    pub fn serving(&self) -> BTreeSet<String> {
        self.board()
            .into_iter()
            .filter_map(|(host, state)| (state == "serving").then_some(host))
            .collect()
    }

    /// Watches the page, without reloading it, until `done` holds; returns how long that
    /// took, or panics with the board after `limit`.
    pub fn until(&self, what: &str, limit: Duration, done: impl Fn(&Self) -> bool) -> Duration {
        self.within(what, limit, done)
            .unwrap_or_else(|shown| panic!("{shown}"))
    }

    /// The same, but after `limit` returns what the page shows, for a caller that has more
    /// to tell before it fails.
    pub fn within(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        while !done(self) {
            if start.elapsed() >= limit {
                return Err(format!(
                    "the page did not show {what} within {limit:?}: board {:?}, Redis copies {:?}, stream {:?}",
                    self.board(),
                    self.text("#redis-copies"),
                    self.text("#stream-status")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(start.elapsed())
    }

    /// Saves a PNG of the window under target/screenshots/ and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        let dir = repo_root().join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Chromium's `goog/cdp/execute`: a DevTools command through the WebDriver session.
#[derive(Debug)]
struct DevTools(Value);

impl WebDriverCompatibleCommand for DevTools {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.0.to_string()))
    }
}

/// Spreads each new connection on 127.0.0.1:`port()` over `backends`, as swarm's routing
/// mesh spreads connections over replicas, for machines without one.
pub struct Balancer {
    port: u16,
}

impl Balancer {
    /// Over loopback ports.
    pub fn start(ports: Vec<u16>) -> Self {
        Self::to(
            ports
                .into_iter()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                .collect(),
        )
    }

    fn to(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("balancer port");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            // A fixed seed: varied like a real balancer, the same on every run.
            let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
            for client in listener.incoming().map_while(Result::ok) {
                let backend = backends[rng.usize(..backends.len())];
                if let Ok(server) = TcpStream::connect(backend) {
                    test_support::relay(client, server);
                }
            }
        });
        Self { port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

/// True if `path` is a PNG file.
pub fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n"))
}
