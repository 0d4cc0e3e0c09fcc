//! Every node's dashboard numbers, shared through Redis: each node writes its `NodePulse` as
//! JSON to `rt:node:<id>:pulse` once a second with a TTL of a few seconds, so a node that stops
//! (or loses Redis) drops out on its own; the dashboard on any node reads the node set the leases
//! keep (`rt:nodes`) and each node's lease and snapshot. Node-level keys, one key per command.

use crate::pulse::NodePulse;

use super::presence::{lease_key, NODES_KEY};
use super::RedisBus;

/// A snapshot outlives a few missed writes, not more: older numbers would mislead.
const PULSE_TTL_MS: u64 = 5_000;

fn pulse_key(node: &str) -> String {
    format!("rt:node:{node}:pulse")
}

/// One member of the node set as the dashboard sees it.
pub(crate) struct NodeReading {
    pub(crate) node: String,
    pub(crate) lease_held: bool,
    pub(crate) pulse: Option<NodePulse>,
}

impl RedisBus {
    /// Stores this node's snapshot for the others' dashboards.
    pub(crate) async fn share_pulse(&self, pulse: &NodePulse) -> redis::RedisResult<()> {
        let key = pulse_key(&self.node);
        let json = serde_json::to_string(pulse).unwrap_or_default();
        self.commands
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(json)
                    .arg("PX")
                    .arg(PULSE_TTL_MS)
                    .to_owned(),
            )
            .await
    }

    /// Every node in the node set, sorted by id, with whether its lease holds and its latest
    /// snapshot (none once it stopped writing).
    pub(crate) async fn node_readings(&self) -> redis::RedisResult<Vec<NodeReading>> {
        let mut nodes: Vec<String> = self
            .commands
            .query(redis::cmd("SMEMBERS").arg(NODES_KEY).to_owned())
            .await?;
        nodes.sort();
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for node in &nodes {
            pipe.cmd("EXISTS").arg(lease_key(node));
            pipe.cmd("GET").arg(pulse_key(node));
        }
        let replies: Vec<redis::Value> = self
            .commands
            .run(move |mut connection| {
                Box::pin(async move { connection.query_pipeline(&pipe).await })
            })
            .await?;
        Ok(nodes
            .into_iter()
            .zip(replies.chunks(2))
            .map(|(node, pair)| {
                let lease_held = matches!(pair.first(), Some(redis::Value::Int(n)) if *n > 0);
                let pulse = match pair.get(1) {
                    Some(redis::Value::BulkString(bytes)) => serde_json::from_slice(bytes).ok(),
                    _ => None,
                };
                NodeReading {
                    node,
                    lease_held,
                    pulse,
                }
            })
            .collect())
    }
}
