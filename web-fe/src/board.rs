//! The board: every replica Redis heard from lately, grouped by node, with what each one
//! is doing. Built from one heartbeat's read and shared by every page and stream until the
//! next one.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::web::Bytes;
use serde::{Deserialize, Serialize};

use crate::replica::Colour;
use crate::store::{Copy, Roll, RollEntry};

/// What a replica says about itself in each heartbeat (stored as JSON in Redis).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub slot: Option<String>,
    pub node: Option<String>,
    pub version: String,
    pub started_ms: u64,
    pub activity: Activity,
    /// When it last counted a view, if it has.
    pub last_view_ms: Option<u64>,
}

/// What a replica is doing, in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activity {
    Serving,
    /// Got SIGTERM: finishing, no longer wanted by the orchestrator.
    Draining,
    /// Said goodbye on its way out.
    Stopped,
}

/// What the board shows for a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Serving,
    Draining,
    Stopped,
    /// No heartbeat for three intervals: killed, frozen, or cut off from Redis.
    Silent,
    /// This replica, whose own heartbeat just failed.
    CannotReachRedis,
}

impl Shown {
    /// Its name in the JSON and as the page's CSS class.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Draining => "draining",
            Self::Stopped => "stopped",
            Self::Silent => "silent",
            Self::CannotReachRedis => "cannot-reach-redis",
        }
    }

    fn is_live(self) -> bool {
        matches!(
            self,
            Self::Serving | Self::Draining | Self::CannotReachRedis
        )
    }
}

impl Serialize for Shown {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub hostname: String,
    pub slot: Option<String>,
    pub node: Option<String>,
    pub version: Option<String>,
    pub colour: String,
    pub state: Shown,
    pub served: u64,
    /// Share of the views the listed replicas served, in percent.
    pub share: f64,
    pub started_ms: Option<u64>,
    pub last_view_ms: Option<u64>,
    pub last_beat_ms: u64,
    /// Milliseconds since its last heartbeat, by Redis's clock.
    pub beat_age_ms: u64,
    /// Milliseconds since its last counted view.
    pub view_age_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeGroup {
    /// The swarm node, when replicas report one.
    pub node: Option<String>,
    pub replicas: Vec<Member>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Board {
    /// The replica whose heartbeat read this board.
    pub read_by: String,
    /// Redis's clock when it was read (0 before the first read).
    pub read_at_ms: u64,
    /// The count, when known.
    pub hits: Option<i64>,
    /// Replicas alive now (serving or draining).
    pub live: usize,
    pub nodes: Vec<NodeGroup>,
    /// Replicas Redis remembers beyond those listed.
    pub not_shown: u64,
    /// Set when this replica's last heartbeat failed: the rest is as last read.
    pub redis_trouble: Option<String>,
    /// The Redis copies as the master saw them: the master first, then its replicas.
    pub redis_copies: Vec<Copy>,
}

impl Board {
    /// Before the first heartbeat has been answered.
    pub fn empty(read_by: &str) -> Self {
        Self {
            read_by: read_by.to_owned(),
            read_at_ms: 0,
            hits: None,
            live: 0,
            nodes: Vec::new(),
            not_shown: 0,
            redis_trouble: None,
            redis_copies: Vec::new(),
        }
    }

    /// `silent_after`: a replica unheard for this long is marked as gone.
    pub fn from_roll(read_by: &str, roll: Roll, silent_after: Duration) -> Self {
        let total: u64 = roll.entries.iter().map(|e| e.served).sum();
        let listed = roll.entries.len() as u64;
        let members = roll
            .entries
            .into_iter()
            .map(|e| Member::new(e, roll.now_ms, total, silent_after));
        let mut board = Self {
            read_by: read_by.to_owned(),
            read_at_ms: roll.now_ms,
            hits: roll.hits,
            live: 0,
            nodes: group_by_node(members),
            not_shown: roll.known.saturating_sub(listed),
            redis_trouble: None,
            redis_copies: roll.copies,
        };
        board.live = board.members().filter(|m| m.state.is_live()).count();
        board
    }

    /// The last board read, marked as old: this replica's heartbeat failed with `trouble`.
    pub fn unreachable(&self, trouble: String) -> Self {
        let mut board = self.clone();
        let me = board.read_by.clone();
        for member in board.nodes.iter_mut().flat_map(|n| n.replicas.iter_mut()) {
            if member.hostname == me {
                member.state = Shown::CannotReachRedis;
            }
        }
        board.redis_trouble = Some(trouble);
        board
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.nodes.iter().flat_map(|n| n.replicas.iter())
    }
}

impl Member {
    fn new(entry: RollEntry, now_ms: u64, total: u64, silent_after: Duration) -> Self {
        let beat: Option<Beat> = entry.beat.and_then(|b| serde_json::from_str(&b).ok());
        let beat_age_ms = now_ms.saturating_sub(entry.last_beat_ms);
        let silent = u128::from(beat_age_ms) > silent_after.as_millis();
        let state = match beat.as_ref().map(|b| b.activity) {
            Some(Activity::Stopped) => Shown::Stopped,
            _ if silent => Shown::Silent,
            Some(Activity::Draining) => Shown::Draining,
            _ => Shown::Serving,
        };
        let last_view_ms = beat.as_ref().and_then(|b| b.last_view_ms);
        Self {
            colour: Colour::for_name(&entry.hostname).css(),
            share: share(entry.served, total),
            slot: beat.as_ref().and_then(|b| b.slot.clone()),
            node: beat.as_ref().and_then(|b| b.node.clone()),
            version: beat.as_ref().map(|b| b.version.clone()),
            started_ms: beat.as_ref().map(|b| b.started_ms),
            hostname: entry.hostname,
            state,
            served: entry.served,
            last_view_ms,
            last_beat_ms: entry.last_beat_ms,
            beat_age_ms,
            view_age_ms: last_view_ms.map(|v| now_ms.saturating_sub(v)),
        }
    }

    /// Slot order, as swarm numbers tasks; then by name.
    fn order_key(&self) -> (u64, &str) {
        let slot = self.slot.as_deref().and_then(|s| s.parse().ok());
        (slot.unwrap_or(u64::MAX), &self.hostname)
    }
}

/// In tenths of a percent, rounded, in whole numbers: no precision lost to floats.
fn share(served: u64, total: u64) -> f64 {
    let tenths = (u128::from(served) * 1000 + u128::from(total) / 2)
        .checked_div(u128::from(total))
        .unwrap_or(0);
    f64::from(u16::try_from(tenths).unwrap_or(1000)) / 10.0
}

/// Nodes by name (replicas without one last), replicas by slot within each.
fn group_by_node(members: impl Iterator<Item = Member>) -> Vec<NodeGroup> {
    let mut groups: BTreeMap<(bool, Option<String>), Vec<Member>> = BTreeMap::new();
    for member in members {
        let key = (member.node.is_none(), member.node.clone());
        groups.entry(key).or_default().push(member);
    }
    groups
        .into_iter()
        .map(|((_, node), mut replicas)| {
            replicas.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
            NodeGroup { node, replicas }
        })
        .collect()
}

/// A board as published to pages and streams. Its Server-Sent Event and the tiles a page
/// shows are each drawn once, by the first stream or page that needs them, and shared by
/// the rest until the next heartbeat.
pub struct Published {
    pub board: Board,
    /// This replica is shutting down: streams send this board, then end.
    pub closing: bool,
    pub event: OnceLock<Bytes>,
    pub page_tiles: OnceLock<String>,
}

impl Published {
    pub fn new(board: Board, closing: bool) -> Self {
        Self {
            board,
            closing,
            event: OnceLock::new(),
            page_tiles: OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str, beat_ms: u64, activity: Activity, node: &str, slot: &str) -> RollEntry {
        let beat = Beat {
            slot: Some(slot.into()),
            node: Some(node.into()),
            version: "1.0.0".into(),
            started_ms: 1,
            activity,
            last_view_ms: None,
        };
        RollEntry {
            hostname: host.into(),
            last_beat_ms: beat_ms,
            beat: Some(serde_json::to_string(&beat).unwrap()),
            served: 1,
        }
    }

    #[test]
    fn replicas_are_grouped_by_node_and_ordered_by_slot() {
        let roll = Roll {
            now_ms: 10_000,
            entries: vec![
                entry("c", 9_900, Activity::Serving, "node-b", "10"),
                entry("a", 9_900, Activity::Serving, "node-a", "2"),
                entry("b", 9_900, Activity::Serving, "node-b", "3"),
            ],
            known: 5,
            hits: Some(7),
            copies: Vec::new(),
        };
        let board = Board::from_roll("a", roll, Duration::from_secs(3));
        let layout: Vec<(Option<&str>, Vec<&str>)> = board
            .nodes
            .iter()
            .map(|n| {
                let hosts = n.replicas.iter().map(|m| m.hostname.as_str()).collect();
                (n.node.as_deref(), hosts)
            })
            .collect();
        assert_eq!(
            layout,
            vec![
                (Some("node-a"), vec!["a"]),
                (Some("node-b"), vec!["b", "c"])
            ]
        );
        assert_eq!(board.not_shown, 2);
        assert_eq!(board.live, 3);
    }

    #[test]
    fn silence_and_goodbyes_are_marked() {
        let roll = Roll {
            now_ms: 10_000,
            entries: vec![
                entry("fresh", 9_500, Activity::Serving, "n", "1"),
                entry("quiet", 6_000, Activity::Serving, "n", "2"),
                entry("leaving", 9_500, Activity::Draining, "n", "3"),
                entry("left", 9_500, Activity::Stopped, "n", "4"),
                entry("left-quiet", 1_000, Activity::Draining, "n", "5"),
            ],
            known: 5,
            hits: None,
            copies: Vec::new(),
        };
        let board = Board::from_roll("fresh", roll, Duration::from_secs(3));
        let states: Vec<Shown> = board.members().map(|m| m.state).collect();
        assert_eq!(
            states,
            [
                Shown::Serving,
                Shown::Silent,
                Shown::Draining,
                Shown::Stopped,
                Shown::Silent
            ]
        );
        assert_eq!(board.live, 2);
        let failed = board.unreachable("Redis cannot be reached".into());
        assert_eq!(
            failed.members().next().unwrap().state,
            Shown::CannotReachRedis
        );
    }

    #[test]
    fn shares_are_rounded_to_tenths() {
        assert!((share(1, 3) - 33.3).abs() < 1e-9);
        assert!((share(2, 3) - 66.7).abs() < 1e-9);
        assert!((share(0, 0)).abs() < 1e-9);
    }
}
