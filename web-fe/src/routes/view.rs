//! What a view shows, computed once and rendered as HTML or JSON.

use std::time::Duration;

use serde::Serialize;

use crate::build_info;
use crate::state::AppState;
use crate::store::{ReplicaRecord, Visit};

/// The count, who answered, and how requests spread over replicas.
#[derive(Debug, Serialize)]
pub struct VisitView {
    pub count: i64,
    pub hostname: String,
    pub slot: Option<String>,
    pub node: Option<String>,
    pub colour: String,
    pub version: &'static str,
    /// The most recently seen replicas, at most [`crate::store::RECENT_REPLICAS`].
    pub replicas: Vec<ReplicaView>,
    /// Replicas Redis remembers beyond those listed.
    pub replicas_not_shown: u64,
}

#[derive(Debug, Serialize)]
pub struct ReplicaView {
    pub hostname: String,
    pub slot: Option<String>,
    pub node: Option<String>,
    pub colour: String,
    pub served: u64,
    /// Share of the requests the listed replicas served, in percent.
    pub share: f64,
    pub last_seen_ms: u64,
    pub age_ms: u64,
    /// Unseen for longer than the stale threshold: shown fading.
    pub stale: bool,
    /// 1.0 while active, falling to 0.3 as the replica goes unseen.
    pub opacity: f64,
    /// This is the replica that answered this request.
    pub current: bool,
}

impl VisitView {
    pub fn new(state: &AppState, visit: Visit, now_ms: u64) -> Self {
        let me = &state.replica;
        let total: u64 = visit.replicas.iter().map(|r| r.served).sum();
        let listed = visit.replicas.len() as u64;
        let replicas = visit
            .replicas
            .into_iter()
            .map(|r| ReplicaView::new(r, total, now_ms, state.replica_stale, &me.hostname))
            .collect();
        Self {
            count: visit.count,
            hostname: me.hostname.clone(),
            slot: me.slot.clone(),
            node: me.node.clone(),
            colour: me.colour.css(),
            version: build_info::VERSION,
            replicas,
            replicas_not_shown: visit.replicas_known.saturating_sub(listed),
        }
    }
}

impl ReplicaView {
    fn new(r: ReplicaRecord, total: u64, now_ms: u64, stale: Duration, me: &str) -> Self {
        let age_ms = now_ms.saturating_sub(r.last_seen_ms);
        // In tenths of a percent, rounded, in whole numbers: no precision lost to floats.
        let tenths = (u128::from(r.served) * 1000 + u128::from(total) / 2)
            .checked_div(u128::from(total))
            .unwrap_or(0);
        let share = f64::from(u16::try_from(tenths).unwrap_or(1000)) / 10.0;
        Self {
            colour: crate::replica::Colour::for_name(&r.hostname).css(),
            current: r.hostname == me,
            stale: Duration::from_millis(age_ms) > stale,
            opacity: fade(age_ms, stale),
            hostname: r.hostname,
            slot: r.slot,
            node: r.node,
            served: r.served,
            share,
            last_seen_ms: r.last_seen_ms,
            age_ms,
        }
    }

    /// "now", "12 s ago", "3 min ago": short enough for a phone.
    pub fn last_seen(&self) -> String {
        match self.age_ms / 1000 {
            0..=1 => "now".into(),
            s @ 2..=119 => format!("{s} s ago"),
            s => format!("{} min ago", s / 60),
        }
    }

    /// "slot 3 · node-a", or empty outside swarm.
    pub fn placement(&self) -> String {
        placement(self.slot.as_deref(), self.node.as_deref())
    }
}

pub fn placement(slot: Option<&str>, node: Option<&str>) -> String {
    match (slot, node) {
        (Some(s), Some(n)) => format!("task slot {s} · node {n}"),
        (Some(s), None) => format!("task slot {s}"),
        (None, Some(n)) => format!("node {n}"),
        (None, None) => String::new(),
    }
}

/// Full opacity until `stale`, then a linear fade to 0.3 at four times `stale`.
fn fade(age_ms: u64, stale: Duration) -> f64 {
    let stale_secs = stale.as_secs_f64().max(0.001);
    let age_secs = Duration::from_millis(age_ms).as_secs_f64();
    let over = (age_secs - stale_secs) / (3.0 * stale_secs);
    let opacity = 1.0 - 0.7 * over.clamp(0.0, 1.0);
    (opacity * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_fade_after_the_stale_threshold() {
        let stale = Duration::from_secs(30);
        let near = |age, expected: f64| {
            let opacity = fade(age, stale);
            assert!((opacity - expected).abs() < 1e-9, "{age} ms: {opacity}");
        };
        near(0, 1.0);
        near(30_000, 1.0);
        near(75_000, 0.65);
        near(120_000, 0.3);
        near(999_000, 0.3);
    }

    #[test]
    fn placement_names_what_is_known() {
        assert_eq!(placement(Some("3"), Some("n1")), "task slot 3 · node n1");
        assert_eq!(placement(None, None), "");
    }
}
