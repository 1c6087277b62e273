//! What a counted view shows, computed once and rendered as HTML or JSON.

use serde::Serialize;

use crate::build_info;
use crate::state::AppState;
use crate::store::Visit;

/// The count and who answered; borrowed from the replica, so a view copies no names.
#[derive(Debug, Serialize)]
pub struct VisitView<'a> {
    pub count: i64,
    pub hostname: &'a str,
    pub slot: Option<&'a str>,
    pub node: Option<&'a str>,
    pub colour: &'a str,
    pub version: &'static str,
    /// Views this replica has served, this one included.
    pub served: u64,
}

impl<'a> VisitView<'a> {
    pub fn new(state: &'a AppState, visit: Visit) -> Self {
        let me = &state.replica;
        Self {
            count: visit.count,
            hostname: &me.hostname,
            slot: me.slot.as_deref(),
            node: me.node.as_deref(),
            colour: &me.colour,
            version: build_info::VERSION,
            served: visit.served,
        }
    }
}

/// "task slot 3 · node node-a", or empty outside swarm.
pub fn placement(slot: Option<&str>, node: Option<&str>) -> String {
    match (slot, node) {
        (Some(s), Some(n)) => format!("task slot {s} · node {n}"),
        (Some(s), None) => format!("task slot {s}"),
        (None, Some(n)) => format!("node {n}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_names_what_is_known() {
        assert_eq!(placement(Some("3"), Some("n1")), "task slot 3 · node n1");
        assert_eq!(placement(None, Some("n1")), "node n1");
        assert_eq!(placement(None, None), "");
    }
}
