//! The node's pub/sub link to Redis and its self-probe: where links come from (one Redis, or
//! the masters of a cluster), what a link is, and how the probe echoes tell readiness.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;

use tokio::sync::watch;

use super::commands::Commands;
use super::sentinel::Master;
use super::shards;
use super::subscriber::topic;
use super::REDIS_TIMEOUT;
use crate::backend::BackendEvents;

/// The node's own probe topic: published every `PROBE_INTERVAL` through the command
/// connection, heard on the pub/sub link. Hearing it recently is what "the bus works" means.
#[derive(Clone)]
pub(super) struct Probe {
    pub(super) topic: String,
    pub(super) seen_at_ms: Arc<AtomicU64>,
    /// The last probe was refused or not answered: no master takes writes right now (killed,
    /// failing over, demoted), so the node is not ready even before its echo goes stale.
    pub(super) failing: Arc<AtomicBool>,
}

impl Probe {
    pub(super) fn new() -> Probe {
        Probe {
            topic: format!("rt:probe:{}", rand::random::<u64>()),
            seen_at_ms: Arc::new(AtomicU64::new(protocol::now_ms())),
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A write reached a master and its echo came back on the link recently.
    pub(super) fn healthy(&self) -> bool {
        let seen = self.seen_at_ms.load(Ordering::Acquire);
        !self.failing.load(Ordering::Acquire)
            && protocol::now_ms().saturating_sub(seen) < PROBE_STALE_MS
    }
}

/// How often the bus probes itself, and how stale the last echo may be for the node to count
/// as ready.
pub(super) const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
pub(super) const PROBE_STALE_MS: u64 = 3_000;

/// The probe: `SET` the topic's key, then `PUBLISH` on it. A plain `PUBLISH` would not do: a
/// replica accepts it, so a node left on a demoted master would hear its probe and say ready
/// while every publish fails with `READONLY`.
const PROBE_SCRIPT: &str = include_str!("scripts/probe.lua");

pub(super) async fn send_probes(commands: Commands, probe: Probe, events: Arc<dyn BackendEvents>) {
    let script = redis::Script::new(PROBE_SCRIPT);
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tick.tick().await;
        if !events.running() {
            return;
        }
        let sent: redis::RedisResult<i64> = commands
            .invoke(
                script.clone(),
                vec![probe.topic.clone()],
                vec![protocol::now_ms().to_string()],
            )
            .await;
        probe.failing.store(sent.is_err(), Ordering::Release);
        if let Err(error) = sent {
            tracing::debug!(%error, "bus probe not sent");
        }
    }
}

/// Where pub/sub links come from: one Redis, the master Sentinel names, or the masters of a
/// cluster.
pub(super) enum LinkSource {
    Node(redis::Client),
    Sentinel {
        master: Master,
        /// Seen up to the master the link was opened on.
        changes: watch::Receiver<redis::Client>,
    },
    Cluster(shards::Shards),
}

impl LinkSource {
    /// A fresh link, bounded (a cluster's takes reading the slot map and a connection per
    /// master, each bounded, so the whole is allowed a few bounds).
    pub(super) async fn open(&mut self) -> redis::RedisResult<Link> {
        let timed_out = || redis::RedisError::from((redis::ErrorKind::Io, "timed out"));
        match self {
            LinkSource::Node(client) => {
                let pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
                    .await
                    .map_err(|_| timed_out())??;
                let (sink, stream) = pubsub.split();
                Ok(Link::Node { sink, stream })
            }
            LinkSource::Sentinel { master, changes } => {
                let client = changes.borrow_and_update().clone();
                let opened = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
                    .await
                    .map_err(|_| timed_out())
                    .and_then(|opened| opened);
                let pubsub = opened.inspect_err(|_| master.ask())?;
                let (sink, stream) = pubsub.split();
                Ok(Link::Node { sink, stream })
            }
            LinkSource::Cluster(shards) => tokio::time::timeout(3 * REDIS_TIMEOUT, shards.open())
                .await
                .map_err(|_| timed_out())?
                .map(Link::Sharded),
        }
    }
}

impl LinkSource {
    /// Resolves when the link's server stops being the one to use (Sentinel named another
    /// master: a demoted one keeps the link's socket open); never for one Redis or a cluster.
    pub(super) async fn moved(&mut self) {
        match self {
            LinkSource::Sentinel { changes, .. } => {
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            LinkSource::Node(_) | LinkSource::Cluster(_) => std::future::pending().await,
        }
    }
}

/// The node's pub/sub link: one connection (`SUBSCRIBE`), or one per cluster master with
/// channel topics on their shard (`SSUBSCRIBE`).
pub(super) enum Link {
    Node {
        sink: redis::aio::PubSubSink,
        stream: redis::aio::PubSubStream,
    },
    Sharded(shards::Links),
}

impl Link {
    /// How many connections the link has; each must hear the probe.
    pub(super) fn count(&self) -> usize {
        match self {
            Link::Node { .. } => 1,
            Link::Sharded(links) => links.count(),
        }
    }

    /// A node-level topic (probe, control), on every connection or on one.
    pub(super) async fn listen(&mut self, topic: &str, everywhere: bool) -> redis::RedisResult<()> {
        match self {
            Link::Node { sink, .. } => sink.subscribe(topic).await,
            Link::Sharded(links) => links.listen(topic, everywhere).await,
        }
    }

    /// One SUBSCRIBE for all of `channels` on a single server; on a cluster, one SSUBSCRIBE
    /// each (a sharded subscribe cannot span slots).
    pub(super) async fn subscribe_all(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        self.change_all(channels, true).await
    }

    pub(super) async fn unsubscribe_all(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        self.change_all(channels, false).await
    }

    async fn change_all(&mut self, channels: &[String], join: bool) -> redis::RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        match self {
            Link::Node { sink, .. } => {
                let topics: Vec<String> = channels.iter().map(|c| topic(c)).collect();
                if join {
                    sink.subscribe(topics).await
                } else {
                    sink.unsubscribe(topics).await
                }
            }
            Link::Sharded(links) => {
                for channel in channels {
                    if join {
                        links.subscribe(&topic(channel)).await?;
                    } else {
                        links.unsubscribe(&topic(channel)).await?;
                    }
                }
                Ok(())
            }
        }
    }

    /// The next message and the connection it came on; `None`: the link is lost.
    pub(super) async fn next(&mut self) -> Option<(usize, redis::Msg)> {
        match self {
            Link::Node { stream, .. } => stream.next().await.map(|message| (0, message)),
            Link::Sharded(links) => links.next().await,
        }
    }
}

/// When each of the link's connections last heard the probe; the node's probe time is the
/// oldest of them, once every one has heard it.
pub(super) struct ProbeEchoes {
    heard_at_ms: Vec<u64>,
    /// Since when the link is up.
    up_at_ms: u64,
    /// A sharded link is watched (`stale`); a single connection's loss shows as its stream
    /// ending.
    watched: bool,
}

impl ProbeEchoes {
    pub(super) fn new(link: &Link) -> ProbeEchoes {
        ProbeEchoes {
            heard_at_ms: vec![0; link.count()],
            up_at_ms: protocol::now_ms(),
            watched: matches!(link, Link::Sharded(_)),
        }
    }

    pub(super) fn heard(&mut self, connection: usize, probe: &Probe) {
        if let Some(at) = self.heard_at_ms.get_mut(connection) {
            *at = protocol::now_ms();
        }
        if self.heard_at_ms.iter().all(|at| *at > 0) {
            let oldest = self.heard_at_ms.iter().copied().min().unwrap_or_default();
            probe.seen_at_ms.store(oldest, Ordering::Release);
        }
    }

    /// Whether every connection heard the probe recently, or came up (its SUBSCRIBE confirmed)
    /// too recently to have missed one: the link was carrying everything. Redis dying within
    /// a probe interval of the link coming up is no reason to doubt it.
    pub(super) fn fresh(&self) -> bool {
        let now = protocol::now_ms();
        self.heard_at_ms
            .iter()
            .all(|at| now.saturating_sub((*at).max(self.up_at_ms)) < PROBE_STALE_MS)
    }

    /// Whether some connection of a sharded link has not heard the probe for a while (it may
    /// be silently dead, or its master gone).
    pub(super) fn stale(&self) -> bool {
        let now = protocol::now_ms();
        self.watched
            && self
                .heard_at_ms
                .iter()
                .any(|at| now.saturating_sub((*at).max(self.up_at_ms)) > LINK_STALE_MS)
    }
}

/// How long a sharded link's connection may go without hearing the probe before the link is
/// rebuilt.
pub(super) const LINK_STALE_MS: u64 = 2 * PROBE_STALE_MS;

#[cfg(test)]
mod tests;
