//! A real `redis-server` on a free loopback port, private to one test, stopped by PID when
//! dropped even if the test fails.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::{FromRedisValue, RedisResult};

use crate::{signal, wait_for};

/// Long enough for a loaded 2-core CI machine; the wait polls and returns early.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A port nothing listened on a moment ago. Another test may take it before it is bound:
/// a server started on it must check that the one answering is its own (as
/// `Redis::launch` does).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A real redis-server, private to one test.
pub struct Redis {
    pub port: u16,
    password: Option<String>,
    /// With an append-only file in this folder, data survives restarts.
    data_dir: Option<std::path::PathBuf>,
    /// More arguments for redis-server, such as `--replicaof`.
    extra: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_owned()))
    }

    /// A Redis that keeps its data across [`Redis::restart`], in an append-only file.
    pub fn start_persistent() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("web-fe-redis-{port}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut redis = Self {
            port,
            password: None,
            data_dir: Some(dir),
            extra: Vec::new(),
            child: None,
        };
        redis.launch();
        redis
    }

    fn start_with(password: Option<String>) -> Self {
        Self::start_with_args(password, &[])
    }

    /// A Redis started with `extra` redis-server arguments on top of the test defaults.
    pub fn start_with_args(password: Option<String>, extra: &[&str]) -> Self {
        let mut redis = Self {
            port: free_port(),
            password,
            data_dir: None,
            extra: extra.iter().map(|&a| a.to_owned()).collect(),
            child: None,
        };
        redis.launch();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis is running").id()
    }

    /// Stops the server; the port stays reserved for [`Redis::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port: empty, or with its data if persistent.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Stops with SIGTERM, as `docker restart` does: Redis finishes and saves, then exits.
    pub fn stop_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    fn launch(&mut self) {
        let port = self.port.to_string();
        let dir = self
            .data_dir
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned());
        let appendonly = if dir.is_some() { "yes" } else { "no" };
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            appendonly,
        ];
        // A replica writes the RDB it syncs even with saving off: never into the working
        // folder, where every later Redis of the suite would load it.
        let scratch = std::env::temp_dir().to_string_lossy().into_owned();
        let dbfilename = format!("web-fe-test-{}.rdb", self.port);
        args.extend(["--dir", dir.as_deref().unwrap_or(&scratch)]);
        args.extend(["--dbfilename", &dbfilename]);
        if let Some(password) = &self.password {
            args.extend(["--requirepass", password]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}). The tests need a real Redis: \
                     install it with `sudo apt-get install redis-server` (Debian/Ubuntu) \
                     or `brew install redis` (macOS), then run the tests again."
                )
            });
        let pid = child.id();
        self.child = Some(child);
        // Another test's server may have taken this port between `free_port` and the bind:
        // then ours exits, and the one answering is not ours. Start again on a new port.
        let own = wait_for("redis-server to answer", START_TIMEOUT, || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return Some(false);
            }
            let info = self.try_query::<String>(&["INFO", "server"]).ok()?;
            Some(info.contains(&format!("process_id:{pid}\r\n")))
        });
        if !own {
            self.stop();
            self.port = free_port();
            self.launch();
        }
    }

    /// Runs one command, for a test's own set-up and checks; panics if Redis refuses it.
    pub fn query<T: FromRedisValue>(&self, args: &[impl AsRef<str>]) -> T {
        self.try_query(args)
            .unwrap_or_else(|e| panic!("redis {:?}: {e}", args[0].as_ref()))
    }

    /// Runs one command; an error if Redis is down or refuses it.
    fn try_query<T: FromRedisValue>(&self, args: &[impl AsRef<str>]) -> RedisResult<T> {
        query_at(self.port, self.password.as_deref(), args)
    }

    /// The `hits` counter as Redis holds it; 0 while the key does not exist.
    pub fn hits(&self) -> i64 {
        self.query::<Option<i64>>(&["GET", "hits"]).unwrap_or(0)
    }
}

/// One command to the Redis (or Sentinel) on a loopback port, for a test's own set-up and
/// checks: it gives up after 2 s rather than hang the test.
pub fn query_at<T: FromRedisValue>(
    port: u16,
    password: Option<&str>,
    args: &[impl AsRef<str>],
) -> RedisResult<T> {
    let auth = password.map_or(String::new(), |p| format!(":{p}@"));
    let url = format!("redis://{auth}127.0.0.1:{port}");
    let patience = Duration::from_secs(2);
    let mut connection = redis::Client::open(url)?.get_connection_with_timeout(patience)?;
    connection.set_read_timeout(Some(patience))?;
    let mut command = redis::cmd(args[0].as_ref());
    for arg in &args[1..] {
        command.arg(arg.as_ref());
    }
    command.query(&mut connection)
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(
            std::env::temp_dir().join(format!("web-fe-test-{}.rdb", self.port)),
        );
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
