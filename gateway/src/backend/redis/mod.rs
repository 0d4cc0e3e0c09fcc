//! The Redis back-end (`--redis`): how several processes act as one.
//!
//! Publications are stored and announced by one Lua script per batch (`batch.rs`): each message
//! is appended to its channel's stream (`XADD`, capped) and each channel's publications are
//! `PUBLISH`ed with their stream ids, so pub/sub order is stream order and the stream id is the
//! message serial on every node. Only after the script returns does the publisher get its ACK
//! or 201; if Redis is unreachable the publish fails loudly. Idempotency claims are keys set in
//! the same script, so idempotency holds across nodes.
//!
//! A node subscribes to a channel's pub/sub topic only while it has local subscribers
//! (reference counted), on one dedicated connection, and delivers what arrives through
//! `BackendEvents::deliver` — the publishing node included, so there is one delivery path.
//!
//! When the pub/sub link drops, the node reconnects, resubscribes and back-fills every channel
//! from its stream; a self-probe through Redis drives readiness.
//!
//! Files: `batch.rs` (publishing in batches), `stream.rs` (a channel's stream: load, catch-up), `subscriber.rs` (interest
//! and the pub/sub task), `link.rs` (the link and its probe), `commands.rs` (the command
//! connection), `shards.rs` (sharded pub/sub on a cluster), `sentinel.rs` (following a master through
//! Sentinel), `ephemeral.rs` (publications
//! announced but not stored), `presence.rs`, `nodes.rs` (leases, reaping, dashboard numbers),
//! `sessions.rs` (resume records), `events.rs`, `webhooks.rs`, `auth.rs`, `push.rs` (push
//! registrations and subscriptions); the Lua scripts in
//! `scripts/`.

mod annotations;
mod auth;
mod batch;
mod commands;
mod ephemeral;
mod events;
mod link;
mod nodes;
mod presence;
mod push;
mod sentinel;
mod sessions;
mod shards;
mod stream;
mod subscriber;
mod tls;
#[cfg(test)]
pub(crate) use stream::failing_loads;
mod webhooks;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use protocol::{Annotation, PresenceMessage};
use tokio::sync::mpsc;

use super::{BackendError, BackendEvents, Bus, Reply, Result, Ticket};
use crate::config::Retention;
use crate::config::{MinReplicas, RedisTarget, RedisTls};
use crate::hub::{Annotating, Hub, Publication, Serials};
use commands::Commands;
use link::{LinkSource, Probe};
use stream::StreamLoader;
use subscriber::{Interests, Topics};

/// Longest a Redis connect or command may take before the caller is told it failed.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) struct RedisBackend {
    commands: Commands,
    /// Stores and announces publications in batches (`batch.rs`).
    batcher: batch::Batcher,
    annotate_script: redis::Script,
    interests: Interests,
    probe: Probe,
    /// This process in the cluster (unique per start): holds a lease, tags its members.
    node: String,
    timing: crate::config::Timing,
    presence_script: redis::Script,
    rehome_script: redis::Script,
    /// Resume-record writes, applied in order by one task.
    records: mpsc::Sender<sessions::RecordOp>,
    /// The node, told what arrives and asked what it holds.
    events: Arc<dyn BackendEvents>,
    /// This node has held its lease at least once: finding it gone after that means Redis lost
    /// the node's state.
    leased: AtomicBool,
}

/// A failed Redis command as the caller's error, logged once here with what failed.
fn unavailable(
    what: &'static str,
    store: &'static str,
    then: &'static str,
) -> impl FnOnce(redis::RedisError) -> BackendError {
    move |error| {
        tracing::warn!(%error, "{what} through Redis failed");
        BackendError::Unavailable { store, then }
    }
}

fn start_error(what: &'static str) -> impl FnOnce(redis::RedisError) -> BackendError {
    move |error| BackendError::Start {
        what,
        source: Box::new(error),
    }
}

impl RedisBackend {
    /// Connects (commands and pub/sub) and starts the back-end's tasks: the pub/sub link,
    /// which hands what arrives to `events`, the probe, the record writer and the lease.
    pub(crate) async fn connect(
        target: &RedisTarget,
        tls: Option<&RedisTls>,
        min_replicas: MinReplicas,
        server_id: &str,
        timing: crate::config::Timing,
        events: Arc<dyn BackendEvents>,
    ) -> Result<Arc<RedisBackend>> {
        let node = format!("{server_id}-{:08x}", rand::random::<u32>());
        // Bounded everywhere: a publish fails fast (NACK / 503) rather than wait on a dead Redis.
        let commands = Commands::connect(target, tls, min_replicas).await?;
        let mut links = match target {
            RedisTarget::Node(url) => {
                LinkSource::Node(tls::client_for(url, tls).map_err(start_error("redis URL"))?)
            }
            RedisTarget::Cluster(seeds) => LinkSource::Cluster(
                shards::Shards::new(seeds, tls).map_err(start_error("redis cluster URL"))?,
            ),
            RedisTarget::Sentinel(_) => match commands.master() {
                Some(master) => LinkSource::Sentinel {
                    changes: master.changes(),
                    master,
                },
                None => unreachable!("a Sentinel target's commands follow a master"),
            },
        };
        let pubsub = links
            .open()
            .await
            .map_err(start_error("cannot open the Redis pub/sub link"))?;
        let (interests, requests) = Interests::new();
        let probe = Probe::new();
        tokio::spawn(link::send_probes(
            commands.clone(),
            probe.clone(),
            events.clone(),
        ));
        let store = StreamLoader {
            commands: commands.clone(),
            load: redis::Script::new(stream::LOAD_SCRIPT),
            roll: redis::Script::new(stream::ROLL_SCRIPT),
            events: events.clone(),
            node_lease: timing.node_lease,
            node: node.as_str().into(),
        };
        let topics = Topics {
            probe: probe.clone(),
            control: sessions::control_topic(&node),
        };
        tokio::spawn(subscriber::run_pubsub(
            links,
            pubsub,
            requests,
            interests.clone(),
            store,
            topics,
        ));
        let lease = timing.node_lease;
        let sharded = commands.sharded();
        let (records, record_ops) = mpsc::channel(sessions::RECORD_QUEUE);
        tokio::spawn(sessions::write_records(commands.clone(), record_ops));
        let batcher = batch::Batcher::start(
            commands.clone(),
            announcing(batch::PUBLISH_BATCH_SCRIPT, sharded),
        );
        let backend = Arc::new(RedisBackend {
            records,
            commands,
            batcher,
            annotate_script: announcing(annotations::ANNOTATE_SCRIPT, sharded),
            interests,
            probe,
            node,
            timing,
            presence_script: announcing(presence::PRESENCE_SCRIPT, sharded),
            rehome_script: redis::Script::new(presence::REHOME_SCRIPT),
            events,
            leased: AtomicBool::new(false),
        });
        tokio::spawn(nodes::keep_lease(Arc::downgrade(&backend), lease));
        Ok(backend)
    }
}

impl Bus for RedisBackend {
    fn submit<'a>(
        &'a self,
        _hub: &'a Hub,
        publication: Publication<'a>,
        retention: Retention,
    ) -> Reply<'a, Ticket> {
        Box::pin(self.batcher.submit(publication, Some(retention)))
    }

    fn submit_ephemeral<'a>(
        &'a self,
        _hub: &'a Hub,
        publication: Publication<'a>,
    ) -> Reply<'a, Ticket> {
        // Claims and a marked announcement, no stream entry (`ephemeral.rs`).
        Box::pin(self.batcher.submit(publication, None))
    }

    fn presence<'a>(
        &'a self,
        _hub: &'a Hub,
        channel: &'a str,
        events: &'a [PresenceMessage],
    ) -> Reply<'a, ()> {
        Box::pin(async move { self.presence_write(channel, events)?.await })
    }

    fn annotate<'a>(&'a self, hub: &'a Hub, batch: Annotating<'a>) -> Reply<'a, Serials> {
        // Applied here as on every node: when the announcement comes back through pub/sub.
        let retention = hub.rules_for(batch.channel).retention;
        Box::pin(async move { self.store_annotations(batch, retention).await })
    }

    fn annotations<'a>(
        &'a self,
        hub: &'a Hub,
        channel: &'a str,
        message_serial: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> Reply<'a, Option<Vec<Arc<Annotation>>>> {
        Box::pin(async move {
            let stored = self
                .stored_annotations(channel, message_serial, after, limit)
                .await?;
            // None of its own: the message may still be unknown (the caller joined, so the
            // hub's log is caught up with the stream).
            if stored.is_empty() && hub.message(channel, message_serial).is_none() {
                return Ok(None);
            }
            Ok(Some(stored))
        })
    }

    fn announce(&self, channel: &str, events: &[PresenceMessage]) {
        let write = self.presence_write(channel, events);
        let channel = channel.to_owned();
        let shared = move |error: BackendError| {
            tracing::warn!(%channel, %error, "presence leave not shared");
        };
        match write {
            Ok(write) => {
                tokio::spawn(async move { write.await.unwrap_or_else(shared) });
            }
            Err(error) => shared(error),
        }
    }

    fn join<'a>(&'a self, channel: &'a str) -> Reply<'a, ()> {
        Box::pin(self.interests.join(channel))
    }

    fn leave(&self, channel: &str) {
        self.interests.leave(channel)
    }

    /// Whether this node's last probe was a write a master took, and it heard the probe
    /// through Redis recently: Redis reachable, a master there, and the pub/sub link alive.
    fn healthy(&self) -> bool {
        self.probe.healthy()
    }
}

/// A script announcing on a channel's topic: `PUBLISH` on one Redis, `SPUBLISH` on a cluster
/// (the topic shares the channel's slot, so the shard storing it is the one announcing it).
fn announcing(script: &str, sharded: bool) -> redis::Script {
    if sharded {
        redis::Script::new(&script.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'"))
    } else {
        redis::Script::new(script)
    }
}
