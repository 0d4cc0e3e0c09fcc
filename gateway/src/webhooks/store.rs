//! Where webhook state lives: in this process (embedded: the process is the cluster) or in
//! Redis (`bus/webhooks.rs`: shared by every node, surviving restarts). Same operations, same
//! meaning; see `bus/webhooks.rs` for what each key holds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::bus::RedisBus;

pub(super) enum Store {
    Memory(Memory),
    Redis(Arc<RedisBus>),
}

#[derive(Default)]
pub(super) struct Memory {
    /// Pending key -> the event it holds.
    pending: Mutex<HashMap<String, String>>,
    /// (due ms, event), unordered; short (one per channel or member in its debounce).
    due: Mutex<Vec<(u64, String)>>,
    /// Per webhook: (sequence, item JSON), oldest first, bounded by the webhook's bound.
    queues: Mutex<HashMap<String, VecDeque<(u64, String)>>>,
    next_item: Mutex<u64>,
}

type Result<T> = std::result::Result<T, String>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// This node's attachments on `channel` went 0→1: true when `channel.opened` is due (the
    /// cluster's went 0→1 and no pending `channel.closed` was cancelled).
    pub(super) async fn occupy(&self, channel: &str, pending_key: &str) -> Result<bool> {
        match self {
            Store::Memory(memory) => Ok(lock(&memory.pending).remove(pending_key).is_none()),
            Store::Redis(redis) => redis
                .webhook_occupy(channel, pending_key)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// `node`'s attachments on `channel` went 1→0: true when the cluster has none left and
    /// `pending` (the `channel.closed`) is now scheduled.
    pub(super) async fn vacate(
        &self,
        node: &str,
        channel: &str,
        pending_key: &str,
        pending: &str,
        due_ms: u64,
    ) -> Result<bool> {
        match self {
            Store::Memory(_) => self.pend(pending_key, pending, due_ms).await.map(|()| true),
            Store::Redis(redis) => redis
                .webhook_vacate(node, channel, pending_key, pending, due_ms)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub(super) async fn pend(&self, key: &str, pending: &str, due_ms: u64) -> Result<()> {
        match self {
            Store::Memory(memory) => {
                lock(&memory.pending).insert(key.to_owned(), pending.to_owned());
                lock(&memory.due).push((due_ms, pending.to_owned()));
                Ok(())
            }
            Store::Redis(redis) => redis
                .webhook_pend(key, pending, due_ms)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// True if an event was pending under `key` (now cancelled).
    pub(super) async fn cancel(&self, key: &str) -> Result<bool> {
        match self {
            Store::Memory(memory) => Ok(lock(&memory.pending).remove(key).is_some()),
            Store::Redis(redis) => redis.webhook_cancel(key).await.map_err(|e| e.to_string()),
        }
    }

    /// Pending events due by `now_ms`.
    pub(super) async fn due(&self, now_ms: u64) -> Result<Vec<String>> {
        match self {
            Store::Memory(memory) => {
                let mut due = lock(&memory.due);
                let (ready, later): (Vec<_>, Vec<_>) =
                    due.drain(..).partition(|(at, _)| *at <= now_ms);
                *due = later;
                let mut ready = ready;
                ready.sort_by_key(|(at, _)| *at);
                Ok(ready.into_iter().map(|(_, pending)| pending).collect())
            }
            Store::Redis(redis) => redis
                .webhook_due(now_ms, 100)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// True if `pending` was still pending under `key`; it is taken (emit it).
    pub(super) async fn fire(&self, key: &str, pending: &str) -> Result<bool> {
        match self {
            Store::Memory(memory) => {
                let mut map = lock(&memory.pending);
                if map.get(key).map(String::as_str) == Some(pending) {
                    map.remove(key);
                    return Ok(true);
                }
                Ok(false)
            }
            Store::Redis(redis) => redis
                .webhook_fire(key, pending)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Appends to a webhook's queue; returns how many of the oldest items the bound dropped.
    pub(super) async fn push(&self, webhook: &str, max: usize, items: Vec<String>) -> Result<u64> {
        match self {
            Store::Memory(memory) => {
                let mut queues = lock(&memory.queues);
                let queue = queues.entry(webhook.to_owned()).or_default();
                let mut next = lock(&memory.next_item);
                for item in items {
                    *next += 1;
                    queue.push_back((*next, item));
                }
                let mut dropped = 0;
                while queue.len() > max {
                    queue.pop_front();
                    dropped += 1;
                }
                Ok(dropped)
            }
            Store::Redis(redis) => redis
                .webhook_push(webhook, max, items)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// The oldest `n` items: (queue id, item JSON).
    pub(super) async fn peek(&self, webhook: &str, n: usize) -> Result<Vec<(String, String)>> {
        match self {
            Store::Memory(memory) => Ok(lock(&memory.queues)
                .get(webhook)
                .map(|queue| {
                    queue
                        .iter()
                        .take(n)
                        .map(|(id, item)| (id.to_string(), item.clone()))
                        .collect()
                })
                .unwrap_or_default()),
            Store::Redis(redis) => redis
                .webhook_peek(webhook, n)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Removes delivered items.
    pub(super) async fn ack(&self, webhook: &str, ids: Vec<String>) -> Result<()> {
        match self {
            Store::Memory(memory) => {
                if let Some(queue) = lock(&memory.queues).get_mut(webhook) {
                    queue.retain(|(id, _)| !ids.contains(&id.to_string()));
                }
                Ok(())
            }
            Store::Redis(redis) => redis
                .webhook_ack(webhook, ids)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Whether this node may deliver `webhook` now (always, embedded).
    pub(super) async fn may_deliver(&self, webhook: &str, ttl_ms: u64) -> Result<bool> {
        match self {
            Store::Memory(_) => Ok(true),
            Store::Redis(redis) => redis
                .webhook_lock(webhook, ttl_ms)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Whether `client_id` is present on `channel` through a connection other than `except`.
    pub(super) async fn client_present(
        &self,
        gateway: &std::sync::Weak<crate::Inner>,
        channel: &str,
        client_id: &str,
        except: Option<&str>,
    ) -> Result<bool> {
        let members = match self {
            Store::Memory(_) => gateway
                .upgrade()
                .map(|inner| inner.hub.presence_members(channel))
                .unwrap_or_default(),
            Store::Redis(redis) => redis
                .webhook_members(channel)
                .await
                .map_err(|e| e.to_string())?,
        };
        Ok(members.iter().any(|member| {
            member.client_id.as_deref() == Some(client_id)
                && (except.is_none() || member.connection_id.as_deref() != except)
        }))
    }
}
