//! Presence in Redis: each replica's heartbeat, and the board read back with it.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::link::Link;
use super::{BEATS, COPY_NODES, HITS, PRESENCE, Replication, SERVED, StoreError};
use crate::configuration::RedisSettings;

/// Reads back this many replicas at most, the most recently heard from: a beat's cost stays
/// flat however many replicas have come and gone.
pub const BOARD_ROWS: usize = 64;

/// Writes a beat, forgets a few long-gone replicas, and reads the board, atomically.
const PRESENCE_SCRIPT: &str = concat!(include_str!("prelude.lua"), include_str!("presence.lua"));

/// The heartbeat's own connection: one per replica, used once a second by one task.
pub struct PresenceStore {
    link: Link,
    script: redis::Script,
    /// What the beat learns of the master's replicas, for every worker's `WAIT`.
    replication: Replication,
}

/// Every replica Redis heard from lately, as one beat read it.
#[derive(Debug, Default)]
pub struct Roll {
    /// Redis's clock when the beat ran: ages are measured against it.
    pub now_ms: u64,
    /// Most recently heard from first, at most [`BOARD_ROWS`].
    pub entries: Vec<RollEntry>,
    /// Replicas Redis remembers, listed or not.
    pub known: u64,
    /// The count, when `hits` holds a number.
    pub hits: Option<i64>,
    /// The Redis copies: the master first, then the replicas connected to it.
    pub copies: Vec<Copy>,
}

/// One Redis copy as the master sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Copy {
    /// Its address as it announces itself (`redis-2:6379` on the stack).
    pub address: String,
    pub master: bool,
    /// Bytes of the master's stream this replica has not confirmed; 0 for the master.
    pub behind: u64,
    /// The swarm node it runs on, when the copy said so.
    pub node: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RollEntry {
    pub hostname: String,
    pub last_beat_ms: u64,
    /// What the replica said in its last beat (JSON), if Redis still has it.
    pub beat: Option<String>,
    pub served: u64,
}

/// now, hostnames, beat times, beats, views served, known, hits, repairs.
type PresenceReply = (
    u64,
    Vec<String>,
    Vec<String>,
    Vec<Option<String>>,
    Vec<Option<String>>,
    u64,
    Option<String>,
    Vec<String>,
);

impl PresenceStore {
    pub fn new(settings: &RedisSettings, replication: Replication) -> Self {
        Self {
            link: Link::new(settings.target.clone(), settings.timeout),
            script: redis::Script::new(PRESENCE_SCRIPT),
            replication,
        }
    }

    /// Stores `beat` for `hostname` and reads the board and the copies. After a failure the
    /// next call opens a new connection (to the master the Sentinels name, if any).
    pub async fn beat(
        &self,
        hostname: &str,
        beat: &str,
        forget_after: Duration,
    ) -> Result<Roll, StoreError> {
        self.link
            .bounded(self.call(hostname, beat, forget_after))
            .await
    }

    async fn call(
        &self,
        hostname: &str,
        beat: &str,
        forget_after: Duration,
    ) -> Result<Roll, redis::RedisError> {
        let mut conn = self.link.connection().await?;
        let reply: PresenceReply = self
            .script
            .key(PRESENCE)
            .key(BEATS)
            .key(SERVED)
            .key(HITS)
            .arg(hostname)
            .arg(beat)
            .arg(u64::try_from(forget_after.as_millis()).unwrap_or(u64::MAX))
            .arg(BOARD_ROWS)
            .invoke_async(&mut conn)
            .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
        // Only a name on the board: a key someone else filled differently just leaves it out.
        let nodes: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(COPY_NODES)
            .query_async(&mut conn)
            .await
            .or_else(|e| match e.code() {
                Some("WRONGTYPE") => Ok(HashMap::new()),
                _ => Err(e),
            })?;
        let copies = with_nodes(copies(&self.link.address(), &role), &nodes);
        self.replication
            .set(u32::try_from(copies.len().saturating_sub(1)).unwrap_or(u32::MAX));
        let (now_ms, hosts, times, beats, served, known, hits, repairs) = reply;
        super::log_repairs(repairs);
        Ok(Roll {
            now_ms,
            entries: entries(hosts, &times, beats, served),
            known,
            hits: hits.and_then(|h| h.parse().ok()),
            copies,
        })
    }
}

/// The copies from the master's `ROLE` reply: `master`, its offset, and per replica its
/// address, port and confirmed offset. Anything else (a replica's reply) lists none.
fn copies(master: &str, role: &[Value]) -> Vec<Copy> {
    let text = |v: &Value| redis::from_redis_value_ref::<String>(v).ok();
    let number = |v: &Value| redis::from_redis_value_ref::<u64>(v).ok();
    let (Some("master"), Some(offset), Some(Value::Array(replicas))) = (
        role.first().and_then(text).as_deref(),
        role.get(1).and_then(number),
        role.get(2),
    ) else {
        return Vec::new();
    };
    let mut copies = vec![Copy {
        address: master.to_owned(),
        master: true,
        behind: 0,
        node: None,
    }];
    copies.extend(replicas.iter().filter_map(|replica| {
        let Value::Array(fields) = replica else {
            return None;
        };
        let (host, port) = (text(fields.first()?)?, text(fields.get(1)?)?);
        let confirmed = fields.get(2).and_then(text)?.parse::<u64>().ok()?;
        Some(Copy {
            address: format!("{host}:{port}"),
            master: false,
            behind: offset.saturating_sub(confirmed),
            node: None,
        })
    }));
    copies
}

/// Names each copy's node, looked up by its host name (`redis-2` of `redis-2:6379`).
fn with_nodes(mut copies: Vec<Copy>, nodes: &HashMap<String, String>) -> Vec<Copy> {
    for copy in &mut copies {
        let host = copy
            .address
            .rsplit_once(':')
            .map_or(copy.address.as_str(), |(h, _)| h);
        copy.node = nodes.get(host).cloned();
    }
    copies
}

/// Zips the script's parallel lists, in the order given (most recent first).
fn entries(
    hosts: Vec<String>,
    times: &[String],
    beats: Vec<Option<String>>,
    served: Vec<Option<String>>,
) -> Vec<RollEntry> {
    let mut beats = beats.into_iter();
    let mut served = served.into_iter();
    hosts
        .into_iter()
        .zip(times)
        .map(|(hostname, time)| RollEntry {
            hostname,
            last_beat_ms: time.parse().unwrap_or(0),
            beat: beats.next().flatten(),
            served: served
                .next()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_list_the_master_then_its_replicas_with_their_lag() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let role = [
            bulk("master"),
            Value::Int(300),
            Value::Array(vec![
                Value::Array(vec![bulk("redis-2"), bulk("6379"), bulk("300")]),
                Value::Array(vec![bulk("redis-3"), bulk("6379"), bulk("260")]),
            ]),
        ];
        let found = copies("redis-1:6379", &role);
        let shown: Vec<_> = found
            .iter()
            .map(|c| (c.address.as_str(), c.master, c.behind))
            .collect();
        assert_eq!(
            shown,
            [
                ("redis-1:6379", true, 0),
                ("redis-2:6379", false, 0),
                ("redis-3:6379", false, 40)
            ]
        );
        assert!(copies("redis-2:6379", &[bulk("slave"), bulk("redis-1")]).is_empty());

        let nodes = HashMap::from([("redis-3".to_owned(), "worker1".to_owned())]);
        let named: Vec<_> = with_nodes(found, &nodes)
            .into_iter()
            .map(|c| c.node)
            .collect();
        assert_eq!(named, [None, None, Some("worker1".to_owned())]);
    }

    #[test]
    fn entries_join_the_lists_in_order_and_tolerate_missing_values() {
        let joined = entries(
            vec!["b".into(), "a".into()],
            &["2000".into(), "1000".into()],
            vec![Some("{}".into())],
            vec![Some("5".into()), Some("x".into())],
        );
        assert_eq!(
            joined,
            vec![
                RollEntry {
                    hostname: "b".into(),
                    last_beat_ms: 2000,
                    beat: Some("{}".into()),
                    served: 5,
                },
                RollEntry {
                    hostname: "a".into(),
                    last_beat_ms: 1000,
                    beat: None,
                    served: 0,
                },
            ]
        );
    }
}
