//! Nodes: each holds a lease (`rt:node:<id>`, in the node set `rt:nodes`), renewed every third
//! of it; a node finding another's lapsed reaps it (`presence::reap`), and one finding its own
//! gone (Redis came back empty) writes back what it holds (`reseed`).
//!
//! Every node's dashboard numbers, shared through Redis: each node writes its `NodePulse` as
//! JSON to `rt:node:<id>:pulse` once a second with a TTL of a few seconds, so a node that stops
//! (or loses Redis) drops out on its own; the dashboard on any node reads the node set the leases
//! keep (`rt:nodes`) and each node's lease and snapshot. Node-level keys, one key per command.

use std::sync::atomic::Ordering;

use super::presence::{self, field, members_key, node_channels_key, MEMBERS_TTL_MS};
use super::RedisBackend;
use crate::backend::{BackendError, NodeReading, Nodes, Reply};
use crate::pulse::NodePulse;

pub(super) fn lease_key(node: &str) -> String {
    format!("rt:node:{node}")
}

pub(super) const NODES_KEY: &str = "rt:nodes";

/// A snapshot outlives a few missed writes, not more: older numbers would mislead.
const PULSE_TTL_MS: u64 = 5_000;

fn pulse_key(node: &str) -> String {
    format!("rt:node:{node}:pulse")
}

impl RedisBackend {
    /// Stores this node's snapshot for the others' dashboards.
    async fn write_pulse(&self, pulse: &NodePulse) -> redis::RedisResult<()> {
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
    async fn node_readings(&self) -> redis::RedisResult<Vec<NodeReading>> {
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

impl Nodes for RedisBackend {
    fn node(&self) -> Option<&str> {
        Some(&self.node)
    }

    fn share_pulse<'a>(&'a self, pulse: &'a NodePulse) -> Reply<'a, ()> {
        Box::pin(async move { self.write_pulse(pulse).await.map_err(not_read) })
    }

    fn readings(&self) -> Reply<'_, Vec<NodeReading>> {
        Box::pin(async move { self.node_readings().await.map_err(not_read) })
    }
}

/// The dashboard's numbers are best effort: a failure is logged quietly.
fn not_read(error: redis::RedisError) -> BackendError {
    tracing::debug!(%error, "node numbers through Redis failed");
    BackendError::bus_down("try again")
}

/// Renews this node's lease every third of it, reaps nodes whose lease lapsed, and sweeps the
/// orphans whose grace passed.
pub(super) async fn keep_lease(bus: std::sync::Weak<RedisBackend>, lease: std::time::Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(bus) = bus.upgrade() else { return };
        if let Err(error) = renew_and_reap(&bus, lease).await {
            tracing::debug!(%error, "node lease renewal or reaping failed");
        }
        if let Err(error) = presence::sweep_orphans(&bus).await {
            tracing::debug!(%error, "orphaned members not swept");
        }
    }
}

async fn renew_and_reap(bus: &RedisBackend, lease: std::time::Duration) -> redis::RedisResult<()> {
    let node = bus.node.clone();
    let ms = lease.as_millis() as u64;
    let (held, others): (bool, Vec<(String, bool)>) = bus
        .commands
        .run(move |mut connection| {
            Box::pin(async move {
                let (held, _, nodes): (Option<String>, (), Vec<String>) = connection
                    .query_pipeline(
                        redis::pipe()
                            .cmd("SET")
                            .arg(lease_key(&node))
                            .arg(1)
                            .arg("PX")
                            .arg(ms)
                            .arg("GET")
                            .cmd("SADD")
                            .arg(NODES_KEY)
                            .arg(&node)
                            .cmd("SMEMBERS")
                            .arg(NODES_KEY),
                    )
                    .await?;
                let others: Vec<String> = nodes.into_iter().filter(|n| *n != node).collect();
                let mut exists = redis::pipe();
                for other in &others {
                    exists.cmd("EXISTS").arg(lease_key(other));
                }
                let alive: Vec<bool> = if others.is_empty() {
                    Vec::new()
                } else {
                    connection.query_pipeline(&exists).await?
                };
                Ok((held.is_some(), others.into_iter().zip(alive).collect()))
            })
        })
        .await?;
    // The lease was gone though this node renewed it in time: Redis came back empty (or this
    // node was cut off past its lease and reaped). Put back what the node holds.
    if !held && bus.leased.swap(true, Ordering::AcqRel) {
        tracing::warn!("Redis lost this node's state (restarted empty?); writing it back");
        ::metrics::counter!("realtime_bus_reseeds_total").increment(1);
        reseed(bus).await?;
    }
    for (dead, _) in others.into_iter().filter(|(_, alive)| !alive) {
        presence::reap(bus, &dead, lease).await?;
    }
    Ok(())
}

/// Writes back what this node holds: its connections' resume records and their presence
/// members, quietly (every node already has the members; only the store lost them). A member
/// that left meanwhile is removed again, so the store never keeps one nobody holds.
async fn reseed(bus: &RedisBackend) -> redis::RedisResult<()> {
    let Some(held) = bus.events.held_here() else {
        return Ok(());
    };
    bus.rewrite_records(&held.records).await?;
    for (channel, members) in &held.members {
        let mut pipe = redis::pipe();
        let hash = members_key(channel);
        for member in members {
            let mut member = member.clone();
            member.make_json_safe();
            member.action = 1;
            let value = format!(
                "{}\n{}",
                bus.node,
                serde_json::to_string(&member).unwrap_or_default()
            );
            pipe.cmd("HSET")
                .arg(&hash)
                .arg(field(&member))
                .arg(value)
                .ignore();
        }
        pipe.cmd("PEXPIRE").arg(&hash).arg(MEMBERS_TTL_MS).ignore();
        let node_channels = node_channels_key(&bus.node);
        let channel = channel.clone();
        bus.commands
            .run(move |mut connection| {
                Box::pin(async move {
                    connection.query_pipeline::<()>(&pipe).await?;
                    redis::cmd("SADD")
                        .arg(&node_channels)
                        .arg(&channel)
                        .query_async::<()>(&mut connection)
                        .await
                })
            })
            .await?;
    }
    // Members that left while they were written back.
    let Some(now) = bus.events.held_here().map(|held| held.members) else {
        return Ok(());
    };
    let still: std::collections::HashSet<(String, String)> = now
        .iter()
        .flat_map(|(channel, members)| members.iter().map(move |m| (channel.clone(), field(m))))
        .collect();
    for (channel, members) in &held.members {
        let gone: Vec<String> = members
            .iter()
            .map(field)
            .filter(|f| !still.contains(&(channel.clone(), f.clone())))
            .collect();
        if !gone.is_empty() {
            let mut delete = redis::cmd("HDEL");
            delete.arg(members_key(channel)).arg(gone);
            bus.commands.query::<()>(delete).await?;
        }
    }
    Ok(())
}
