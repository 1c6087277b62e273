//! `spawn_app`: the application built from settings as `main` builds it, on port 0, with
//! its own redis-server.

use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use test_support::Redis;
use web_fe::configuration::{Cli, LogFormat, LogSettings, Settings};
use web_fe::startup::Application;
use web_fe::telemetry;

/// One application and its Redis, both gone when the test ends.
pub struct TestApp {
    pub port: u16,
    pub redis: Redis,
    pub http: reqwest::Client,
}

/// Starts the application in this process with `flags` on top of the defaults below.
pub async fn spawn_app(flags: &[&str]) -> TestApp {
    // The rejections layer counts what actix's parser refuses; it lives in the subscriber.
    let _ = telemetry::init_subscriber(&LogSettings {
        format: LogFormat::Text,
        filter: "warn".into(),
    });
    let redis = Redis::start();
    let url = redis.url();
    let mut args = vec![
        "web-fe",
        "--redis-url",
        &url,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--health-port",
        "0",
        "--workers",
        "1",
        "--replica-name",
        "fast-1",
    ];
    args.extend_from_slice(flags);
    let cli = Cli::try_parse_from(args).expect("the test's flags parse");
    let settings = Settings::try_from(cli.settings).expect("the test's settings hold");
    let app = Application::build(&settings).expect("the application binds port 0");
    let port = app.port();
    actix_web::rt::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client");
    TestApp { port, redis, http }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("the app answers")
    }

    pub async fn json(&self, path: &str) -> (u16, Value) {
        let answer = self.get(path).await;
        let status = answer.status().as_u16();
        (status, answer.json().await.expect("a JSON body"))
    }

    /// The board once the heartbeat has read one that `done` accepts.
    pub async fn board_where(&self, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let (_, board) = self.json("/api/board").await;
            if done(&board) {
                return board;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no such board within 5 s")
    }

    /// A value on /metrics, for the line that starts with `series`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").await.text().await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}
