//! The board as a test reads it: a client container on a stack's network asks
//! `tasks.web-fe` for `/api/board` (which counts nothing), on one engine or in the lab.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{Engine, this_machine};

/// A long-lived client container that reads the board on demand; removed on drop.
pub struct BoardWatcher<'a> {
    engine: Engine<'a>,
    container: String,
}

/// One replica on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    pub hostname: String,
    pub state: String,
    pub version: String,
    pub node: String,
    pub slot: String,
}

/// A board as one replica read it.
#[derive(Debug, Clone, Default)]
pub struct BoardView {
    pub read_by: String,
    pub hits: Option<u64>,
    pub tiles: Vec<Tile>,
}

impl BoardView {
    pub fn parse(json: &Value) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let tiles = json["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|n| n["replicas"].as_array().into_iter().flatten())
            .map(|m| Tile {
                hostname: text(&m["hostname"]),
                state: text(&m["state"]),
                version: text(&m["version"]),
                node: text(&m["node"]),
                slot: text(&m["slot"]),
            })
            .collect();
        Self {
            read_by: text(&json["read_by"]),
            hits: json["hits"].as_u64(),
            tiles,
        }
    }

    /// Replicas serving or draining.
    pub fn live(&self) -> Vec<&Tile> {
        self.tiles
            .iter()
            .filter(|t| t.state == "serving" || t.state == "draining")
            .collect()
    }

    pub fn state_of(&self, hostname: &str) -> Option<&str> {
        self.tiles
            .iter()
            .find(|t| t.hostname == hostname)
            .map(|t| t.state.as_str())
    }

    /// Live replicas running `version`.
    pub fn live_on(&self, version: &str) -> usize {
        self.live().iter().filter(|t| t.version == version).count()
    }
}

impl<'a> BoardWatcher<'a> {
    /// On the local engine.
    pub fn on_host(network: &str, client_image: &str) -> Self {
        Self::start(this_machine(), network, client_image)
    }

    /// On any engine, through `engine` (the lab passes its manager's).
    pub fn start(engine: Engine<'a>, network: &str, client_image: &str) -> Self {
        let container = format!("counter-board-watch-{}", std::process::id());
        let _ = engine(&["rm", "-f", &container]);
        let (ok, out) = engine(&[
            "run",
            "-d",
            "--name",
            &container,
            "--network",
            network,
            client_image,
            // Bounded: the container ends by itself if a test never removes it.
            "sleep",
            "900",
        ]);
        assert!(ok, "board watcher did not start: {out}");
        Self { engine, container }
    }

    /// The board from whichever replica `tasks.web-fe` gives first, if one answers.
    pub fn read(&self) -> Option<BoardView> {
        let (ok, out) = (self.engine)(&[
            "exec",
            &self.container,
            "curl",
            "-s",
            "--connect-timeout",
            "1",
            "--max-time",
            "2",
            "http://tasks.web-fe:8080/api/board",
        ]);
        let json: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
        Some(BoardView::parse(&json))
    }

    /// Polls until `done` holds and returns how long that took and the board; panics with
    /// the last board read after `limit`.
    pub fn wait(
        &self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&BoardView) -> bool,
    ) -> (Duration, BoardView) {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < limit {
            if let Some(board) = self.read() {
                if done(&board) {
                    return (start.elapsed(), board);
                }
                last = Some(board);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the board did not show {what} within {limit:?}; last read: {last:#?}");
    }
}

impl Drop for BoardWatcher<'_> {
    fn drop(&mut self) {
        let _ = (self.engine)(&["rm", "-f", &self.container]);
    }
}
