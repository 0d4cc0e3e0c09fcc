//! What webhooks keep in Redis, so they are right across nodes and survive a restart.
//!
//! - Cluster occupancy of a channel: a hash of the nodes with local attachments
//!   (`rt:{channel}:wh:nodes`); a node adds itself when its count goes 0→1 and removes itself at
//!   1→0, and the script that makes the hash empty (or non-empty) is the one that tells the
//!   caller the whole cluster changed. Each node lists its channels (`rt:node:{node}:occupied`)
//!   so the lease reaper can take a dead node's share out.
//! - Debounced events (`channel.closed`, presence leaves): a key holding the pending event
//!   (`rt:{channel}:wh:vacate`, `rt:{channel}:wh:leave:{clientId}`) plus an entry in one sorted
//!   set by due time that every node sweeps. Whoever deletes the key while it still holds that
//!   event emits it; a re-occupy or re-enter deletes it first and so cancels it. The due entry
//!   is written before the key, so a node dying after storing an event does not lose it: any
//!   other node sweeps it.
//! - Delivery queues: one stream per webhook (`rt:webhook:{id}:queue`), capped at its bound
//!   (the trimmed are counted), read oldest first and `XDEL`ed only after a 2xx; one node at a
//!   time delivers a webhook (a lease key), so delivery order is stream order.
//!
//! On a Redis Cluster a channel's keys share its hash tag; the node set, sorted set, queues and
//! locks are written one key per command.

use protocol::PresenceMessage;

use super::RedisBackend;
use crate::backend::{BackendError, Debounced, Reply, WebhookState};

/// KEYS: nodes hash, pending-vacate key. ARGV: node. Returns 1 when the cluster went from no
/// attachment to one and no pending `channel.closed` was cancelled by it (emit `opened`).
const OCCUPY_SCRIPT: &str = include_str!("scripts/webhook_occupy.lua");

/// KEYS: nodes hash, pending-vacate key. ARGV: node, pending event, its ttl ms. Returns 1 when
/// the cluster has no attachment left (the pending `channel.closed` is set).
const VACATE_SCRIPT: &str = include_str!("scripts/webhook_vacate.lua");

/// KEYS: pending key. ARGV: the event it must still hold. Deletes it and returns 1 if so.
const FIRE_SCRIPT: &str = include_str!("scripts/webhook_fire.lua");

/// KEYS: queue stream. ARGV: max length, then items. Returns how many old items the cap
/// trimmed.
const PUSH_SCRIPT: &str = include_str!("scripts/webhook_push.lua");

/// KEYS: lock. ARGV: node, ttl ms. Takes or extends the lock; 1 when this node holds it.
const LOCK_SCRIPT: &str = include_str!("scripts/webhook_lock.lua");

/// All pending debounced events, scored by when they are due.
const PENDING_KEY: &str = "rt:webhook:pending";

fn nodes_key(channel: &str) -> String {
    format!("rt:{{{channel}}}:wh:nodes")
}

fn occupied_key(node: &str) -> String {
    format!("rt:node:{node}:occupied")
}

fn queue_key(webhook: &str) -> String {
    format!("rt:webhook:{webhook}:queue")
}

fn lock_key(webhook: &str) -> String {
    format!("rt:webhook:{webhook}:lock")
}

/// Pending keys live much longer than the debounce, so a cluster that stopped sweeping for a
/// while (every node down) still fires them when it comes back.
const PENDING_TTL_MS: u64 = 24 * 60 * 60 * 1000;

impl RedisBackend {
    async fn invoke<T: redis::FromRedisValue + Send + 'static>(
        &self,
        script: &'static str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> redis::RedisResult<T> {
        self.commands
            .invoke(redis::Script::new(script), keys, args)
            .await
    }

    /// This node's attachment count on `channel` went 0→1; true when the cluster's did too and
    /// no pending `channel.closed` was cancelled (so `channel.opened` is due).
    async fn webhook_occupy(&self, channel: &str, pending_key: &str) -> redis::RedisResult<bool> {
        let mut add = redis::cmd("SADD");
        add.arg(occupied_key(&self.node)).arg(channel);
        self.commands.query::<()>(add).await?;
        self.occupy_as(&self.node.clone(), channel, pending_key)
            .await
    }

    async fn occupy_as(
        &self,
        node: &str,
        channel: &str,
        pending_key: &str,
    ) -> redis::RedisResult<bool> {
        let emit: i64 = self
            .invoke(
                OCCUPY_SCRIPT,
                vec![nodes_key(channel), pending_key.to_owned()],
                vec![node.to_owned()],
            )
            .await?;
        Ok(emit == 1)
    }

    /// `node`'s attachment count on `channel` went 1→0 (or `node` died); true when the cluster
    /// has none left, the pending `channel.closed` stored (the caller schedules it).
    async fn webhook_vacate(
        &self,
        node: &str,
        channel: &str,
        closed: Debounced<'_>,
    ) -> redis::RedisResult<bool> {
        let Debounced {
            key: pending_key,
            event: pending,
            due_ms,
        } = closed;
        // Scheduled first, so a stored pending event always has its due entry (an entry whose
        // key never held it is dropped by the sweeper).
        self.schedule(pending, due_ms).await?;
        let scheduled: i64 = self
            .invoke(
                VACATE_SCRIPT,
                vec![nodes_key(channel), pending_key.to_owned()],
                vec![
                    node.to_owned(),
                    pending.to_owned(),
                    PENDING_TTL_MS.to_string(),
                ],
            )
            .await?;
        let mut remove = redis::cmd("SREM");
        remove.arg(occupied_key(node)).arg(channel);
        self.commands.query::<()>(remove).await?;
        Ok(scheduled == 1)
    }

    /// Stores a debounced event under `key` (replacing one pending there) and schedules it.
    async fn webhook_pend(&self, pending: Debounced<'_>) -> redis::RedisResult<()> {
        self.schedule(pending.event, pending.due_ms).await?;
        let mut set = redis::cmd("SET");
        set.arg(pending.key)
            .arg(pending.event)
            .arg("PX")
            .arg(PENDING_TTL_MS);
        self.commands.query(set).await
    }

    async fn schedule(&self, pending: &str, due_ms: u64) -> redis::RedisResult<()> {
        let mut add = redis::cmd("ZADD");
        add.arg(PENDING_KEY).arg(due_ms).arg(pending);
        self.commands.query(add).await
    }

    /// Cancels the event pending under `key`; true if there was one.
    async fn webhook_cancel(&self, key: &str) -> redis::RedisResult<bool> {
        let mut del = redis::cmd("DEL");
        del.arg(key);
        Ok(self.commands.query::<i64>(del).await? == 1)
    }

    /// Pending events due by `now_ms`, oldest first.
    async fn webhook_due(&self, now_ms: u64, limit: usize) -> redis::RedisResult<Vec<String>> {
        let mut range = redis::cmd("ZRANGEBYSCORE");
        range
            .arg(PENDING_KEY)
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        self.commands.query(range).await
    }

    /// Takes a due event: true if it was still pending under `key` (not cancelled, not taken
    /// by another node), so this caller emits it.
    async fn webhook_fire(&self, key: &str, pending: &str) -> redis::RedisResult<bool> {
        let fired: i64 = self
            .invoke(FIRE_SCRIPT, vec![key.to_owned()], vec![pending.to_owned()])
            .await?;
        let mut remove = redis::cmd("ZREM");
        remove.arg(PENDING_KEY).arg(pending);
        self.commands.query::<()>(remove).await?;
        Ok(fired == 1)
    }

    /// The channels a dead node had attachments on.
    async fn webhook_occupied_by(&self, node: &str) -> redis::RedisResult<Vec<String>> {
        let mut members = redis::cmd("SMEMBERS");
        members.arg(occupied_key(node));
        self.commands.query(members).await
    }

    /// Appends items to a webhook's queue; returns how many of the oldest the bound dropped.
    async fn webhook_push(
        &self,
        webhook: &str,
        max_items: usize,
        items: Vec<String>,
    ) -> redis::RedisResult<u64> {
        let mut args = vec![max_items.to_string()];
        args.extend(items);
        self.invoke(PUSH_SCRIPT, vec![queue_key(webhook)], args)
            .await
    }

    /// The oldest `n` queued items: (stream id, item JSON).
    async fn webhook_peek(
        &self,
        webhook: &str,
        n: usize,
    ) -> redis::RedisResult<Vec<(String, String)>> {
        let mut range = redis::cmd("XRANGE");
        range
            .arg(queue_key(webhook))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(n);
        let entries: Vec<(String, Vec<(String, String)>)> = self.commands.query(range).await?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let item = fields.into_iter().find(|(name, _)| name == "i")?.1;
                Some((id, item))
            })
            .collect())
    }

    /// Removes delivered items.
    async fn webhook_ack(&self, webhook: &str, ids: Vec<String>) -> redis::RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut del = redis::cmd("XDEL");
        del.arg(queue_key(webhook)).arg(ids);
        self.commands.query(del).await
    }

    /// Takes or keeps the right to deliver `webhook` for `ttl_ms`; false while another node
    /// holds it.
    async fn webhook_lock(&self, webhook: &str, ttl_ms: u64) -> redis::RedisResult<bool> {
        let held: i64 = self
            .invoke(
                LOCK_SCRIPT,
                vec![lock_key(webhook)],
                vec![self.node.clone(), ttl_ms.to_string()],
            )
            .await?;
        Ok(held == 1)
    }

    /// The presence members of `channel` as the shared store has them.
    async fn webhook_members(&self, channel: &str) -> redis::RedisResult<Vec<PresenceMessage>> {
        let mut all = redis::cmd("HGETALL");
        all.arg(super::presence::members_key(channel));
        let flat: Vec<String> = self.commands.query(all).await?;
        Ok(super::presence::parse_members(&flat)
            .into_iter()
            .map(|(_, member)| member)
            .collect())
    }
}

/// Webhook state is polled: a failure is logged quietly here, the event lost loudly by the
/// caller.
fn failed(error: redis::RedisError) -> BackendError {
    tracing::debug!(%error, "webhook state through Redis failed");
    BackendError::Unavailable {
        store: "webhook state",
        then: "try again",
    }
}

impl WebhookState for RedisBackend {
    fn occupy<'a>(&'a self, channel: &'a str, pending_key: &'a str) -> Reply<'a, bool> {
        Box::pin(async move {
            self.webhook_occupy(channel, pending_key)
                .await
                .map_err(failed)
        })
    }

    fn vacate<'a>(
        &'a self,
        node: &'a str,
        channel: &'a str,
        closed: Debounced<'a>,
    ) -> Reply<'a, bool> {
        Box::pin(async move {
            self.webhook_vacate(node, channel, closed)
                .await
                .map_err(failed)
        })
    }

    fn pend<'a>(&'a self, event: Debounced<'a>) -> Reply<'a, ()> {
        Box::pin(async move { self.webhook_pend(event).await.map_err(failed) })
    }

    fn cancel<'a>(&'a self, key: &'a str) -> Reply<'a, bool> {
        Box::pin(async move { self.webhook_cancel(key).await.map_err(failed) })
    }

    fn due(&self, now_ms: u64) -> Reply<'_, Vec<String>> {
        Box::pin(async move { self.webhook_due(now_ms, 100).await.map_err(failed) })
    }

    fn fire<'a>(&'a self, key: &'a str, pending: &'a str) -> Reply<'a, bool> {
        Box::pin(async move { self.webhook_fire(key, pending).await.map_err(failed) })
    }

    fn occupied_by<'a>(&'a self, node: &'a str) -> Reply<'a, Vec<String>> {
        Box::pin(async move { self.webhook_occupied_by(node).await.map_err(failed) })
    }

    fn push<'a>(&'a self, webhook: &'a str, max: usize, items: Vec<String>) -> Reply<'a, u64> {
        Box::pin(async move { self.webhook_push(webhook, max, items).await.map_err(failed) })
    }

    fn peek<'a>(&'a self, webhook: &'a str, n: usize) -> Reply<'a, Vec<(String, String)>> {
        Box::pin(async move { self.webhook_peek(webhook, n).await.map_err(failed) })
    }

    fn ack<'a>(&'a self, webhook: &'a str, ids: Vec<String>) -> Reply<'a, ()> {
        Box::pin(async move { self.webhook_ack(webhook, ids).await.map_err(failed) })
    }

    fn may_deliver<'a>(&'a self, webhook: &'a str, ttl_ms: u64) -> Reply<'a, bool> {
        Box::pin(async move { self.webhook_lock(webhook, ttl_ms).await.map_err(failed) })
    }

    fn members<'a>(&'a self, channel: &'a str) -> Reply<'a, Vec<PresenceMessage>> {
        Box::pin(async move { self.webhook_members(channel).await.map_err(failed) })
    }
}
