//! Presence: several web-fe processes on one redis-server, each under its own replica
//! name, see each other on the board (before serving anyone), see one drain and stop, and
//! see one that was killed go silent. The stream of board updates counts nothing and ends
//! when its replica drains.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    Redis, WebFe, board, board_states, get_status, raw_request, signal, wait_for,
};
use test_support::reliability_row;

/// A replica named `name` on `node` that forgets stopped replicas after 5 s.
fn replica(redis: &Redis, name: &str, node: &str) -> WebFe {
    WebFe::start(
        &redis.url(),
        &[
            ("REPLICA_NAME", name),
            ("NODE_NAME", node),
            ("SHUTDOWN_DRAIN", "1s"),
            ("REPLICA_FORGET", "5s"),
        ],
    )
}

fn state_of(web: &WebFe, name: &str) -> Option<String> {
    let board = board(web)?;
    board_states(&board)
        .into_iter()
        .find_map(|(host, state)| (host == name).then_some(state))
}

/// Waits until `watcher`'s board shows `name` in `state` (None: not listed) and returns
/// how long that took.
fn until_shown(watcher: &WebFe, name: &str, state: Option<&str>, limit: Duration) -> Duration {
    let start = Instant::now();
    wait_for(&format!("{name} shown as {state:?}"), limit, || {
        (state_of(watcher, name).as_deref() == state).then_some(())
    });
    start.elapsed()
}

#[test]
fn replicas_appear_without_views_then_drain_stop_and_drop_off() {
    let redis = Redis::start();
    let watcher = replica(&redis, "web-1", "node-a");
    let mut leaving = replica(&redis, "web-2", "node-a");
    let _other = replica(&redis, "web-3", "node-b");
    for name in ["web-1", "web-2", "web-3"] {
        until_shown(&watcher, name, Some("serving"), Duration::from_secs(5));
    }
    let nodes: Vec<Value> = board(&watcher).unwrap()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].clone())
        .collect();
    assert_eq!(nodes, ["node-a", "node-b"]);
    assert_eq!(redis.hits(), 0, "nobody loaded a counting page");

    signal(leaving.pid(), "TERM");
    let draining = until_shown(&watcher, "web-2", Some("draining"), Duration::from_secs(2));
    let stopped = until_shown(&watcher, "web-2", Some("stopped"), Duration::from_secs(5));
    assert_eq!(
        leaving.wait_for_exit(Duration::from_secs(5)).code(),
        Some(0)
    );
    let gone = until_shown(&watcher, "web-2", None, Duration::from_secs(10));
    println!(
        "SIGTERM: draining after {draining:?}, stopped after {stopped:?} more, dropped after {gone:?} more"
    );
    assert_eq!(state_of(&watcher, "web-3").as_deref(), Some("serving"));
}

#[test]
fn a_killed_replica_is_marked_within_five_seconds() {
    let redis = Redis::start();
    let watcher = replica(&redis, "web-1", "node-a");
    let killed = replica(&redis, "web-2", "node-b");
    until_shown(&watcher, "web-2", Some("serving"), Duration::from_secs(5));
    signal(killed.pid(), "KILL");
    let marked = until_shown(&watcher, "web-2", Some("silent"), Duration::from_secs(5));
    println!("SIGKILL: marked silent after {marked:?}");
}

/// A stream of board events read over HTTP/1.0, so the body is not chunked.
struct Events(BufReader<TcpStream>);

impl Events {
    fn open(web: &WebFe) -> Self {
        let mut socket = TcpStream::connect(("127.0.0.1", web.port)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        socket
            .write_all(b"GET /api/board/stream HTTP/1.0\r\n\r\n")
            .unwrap();
        let mut events = Self(BufReader::new(socket));
        let status = events.line().expect("a status line");
        assert!(status.starts_with("HTTP/1.0 200"), "{status}");
        events
    }

    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.0.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end().to_owned()),
        }
    }

    /// The next board event's data, or None when the stream ended.
    fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(json) = self.line()?.strip_prefix("data: ") {
                return Some(serde_json::from_str(json).expect("event data is JSON"));
            }
        }
    }
}

#[test]
fn the_stream_shows_newcomers_counts_nothing_and_ends_when_its_replica_drains() {
    let redis = Redis::start();
    // A drain long enough that the replica is still up once its stream has ended.
    let mut streamer = WebFe::start(
        &redis.url(),
        &[
            ("REPLICA_NAME", "web-1"),
            ("NODE_NAME", "node-a"),
            ("SHUTDOWN_DRAIN", "3s"),
        ],
    );
    let mut events = Events::open(&streamer);
    let first = events.next().expect("a first event at once");
    assert_eq!(first["read_by"], "web-1");

    let _newcomer = replica(&redis, "web-2", "node-b");
    let start = Instant::now();
    while !events.next().expect("events keep coming")["html"]
        .as_str()
        .unwrap()
        .contains(r#"data-hostname="web-2""#)
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "web-2 not streamed"
        );
    }
    assert_eq!(redis.hits(), 0, "watching counted views");

    signal(streamer.pid(), "TERM");
    let mut last = None;
    while let Some(event) = events.next() {
        last = Some(event);
    }
    let last = last.expect("a closing event");
    assert!(
        last["html"]
            .as_str()
            .unwrap()
            .contains(r#"data-hostname="web-1" data-state="draining""#),
        "{last}"
    );
    // Draining: new streams are refused so the page reconnects elsewhere.
    assert_eq!(get_status(streamer.port, "/api/board/stream"), Some(503));
    assert_eq!(
        streamer.wait_for_exit(Duration::from_secs(10)).code(),
        Some(0)
    );
}

/// `name`'s value on `/metrics`.
fn metric(web: &WebFe, name: &str) -> Option<f64> {
    let mut response = ureq::get(web.url("/metrics")).call().ok()?;
    let text = response.body_mut().read_to_string().ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn streams_beyond_the_bound_are_refused_and_views_still_answered() {
    const BOUND: usize = 4;
    let redis = Redis::start();
    let web = WebFe::start(
        &redis.url(),
        &[("MAX_BOARD_STREAMS", "4"), ("MAX_CONNECTIONS", "16")],
    );
    let mut open: Vec<Events> = (0..BOUND).map(|_| Events::open(&web)).collect();
    assert_eq!(metric(&web, "web_fe_board_streams"), Some(BOUND as f64));

    for _ in 0..2 * BOUND {
        let reply = raw_request(web.port, b"GET /api/board/stream HTTP/1.0\r\n\r\n").unwrap();
        assert!(reply.starts_with("HTTP/1.0 503"), "{reply}");
        assert!(reply.contains("\r\nretry-after: 10\r\n"), "{reply}");
        assert!(reply.contains("MAX_BOARD_STREAMS"), "{reply}");
    }
    // The refused ones took no place, and views find a connection.
    assert_eq!(metric(&web, "web_fe_board_streams"), Some(BOUND as f64));
    let asked = Instant::now();
    let view = raw_request(web.port, b"GET /api HTTP/1.0\r\n\r\n").unwrap();
    let answered = asked.elapsed();
    assert!(view.starts_with("HTTP/1.0 200"), "{view}");
    assert_eq!(redis.hits(), 1);
    reliability_row(&format!(
        "Board streams beyond the bound (service test) | {BOUND} streams held \
         (`MAX_BOARD_STREAMS={BOUND}`), {} more asked | {} | {} (503, `Retry-After: 10`) | 0 | \
         a view answered 200 in {} ms meanwhile",
        2 * BOUND,
        2 * BOUND,
        2 * BOUND,
        answered.as_millis()
    ));

    // What the refused page reads meanwhile: the board, drawn, with the view once the
    // heartbeat has read it.
    let board = wait_for("the view on the board", Duration::from_secs(5), || {
        let mut answer = ureq::get(web.url("/api/board?html")).call().ok()?;
        let board: Value = serde_json::from_str(&answer.body_mut().read_to_string().ok()?).ok()?;
        (board["hits"] == 1).then_some(board)
    });
    assert!(
        board["html"].as_str().unwrap().contains("data-hostname="),
        "{board}"
    );

    // A watcher leaves: its place is free again.
    for events in &mut open {
        events.next().expect("the held streams still get events");
    }
    drop(open.pop());
    wait_for("a freed stream place", Duration::from_secs(5), || {
        (metric(&web, "web_fe_board_streams") == Some((BOUND - 1) as f64)).then_some(())
    });
    open.push(Events::open(&web));
}
