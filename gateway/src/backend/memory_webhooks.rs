//! Webhook state in this process (embedded: the process is the cluster). The same operations
//! as Redis keeps for a cluster (`backend/redis/webhooks.rs`, which says what each key holds),
//! with the same meaning.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use protocol::PresenceMessage;

use crate::backend::{Debounced, Reply, WebhookState};

/// Reads a channel's presence members (the hub's: it holds the whole cluster's).
pub(crate) type Members = Box<dyn Fn(&str) -> Vec<PresenceMessage> + Send + Sync>;

pub(crate) struct MemoryState {
    /// Pending key -> the event it holds.
    pending: Mutex<HashMap<String, String>>,
    /// (due ms, event), unordered; short (one per channel or member in its debounce).
    due: Mutex<Vec<(u64, String)>>,
    /// Per webhook: (sequence, item JSON), oldest first, bounded by the webhook's bound.
    queues: Mutex<HashMap<String, VecDeque<(u64, String)>>>,
    next_item: Mutex<u64>,
    members: Members,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn ready<'a, T: Send + 'a>(value: T) -> Reply<'a, T> {
    Box::pin(std::future::ready(Ok(value)))
}

impl MemoryState {
    pub(crate) fn new(members: Members) -> MemoryState {
        MemoryState {
            pending: Mutex::default(),
            due: Mutex::default(),
            queues: Mutex::default(),
            next_item: Mutex::default(),
            members,
        }
    }

    fn store_pending(&self, pending: Debounced<'_>) {
        lock(&self.pending).insert(pending.key.to_owned(), pending.event.to_owned());
        lock(&self.due).push((pending.due_ms, pending.event.to_owned()));
    }
}

impl WebhookState for MemoryState {
    fn occupy<'a>(&'a self, _channel: &'a str, pending_key: &'a str) -> Reply<'a, bool> {
        ready(lock(&self.pending).remove(pending_key).is_none())
    }

    fn vacate<'a>(
        &'a self,
        _node: &'a str,
        _channel: &'a str,
        closed: Debounced<'a>,
    ) -> Reply<'a, bool> {
        self.store_pending(closed);
        ready(true)
    }

    fn pend<'a>(&'a self, event: Debounced<'a>) -> Reply<'a, ()> {
        self.store_pending(event);
        ready(())
    }

    fn cancel<'a>(&'a self, key: &'a str) -> Reply<'a, bool> {
        ready(lock(&self.pending).remove(key).is_some())
    }

    fn due(&self, now_ms: u64) -> Reply<'_, Vec<String>> {
        let mut due = lock(&self.due);
        let (mut ready_now, later): (Vec<_>, Vec<_>) =
            due.drain(..).partition(|(at, _)| *at <= now_ms);
        *due = later;
        ready_now.sort_by_key(|(at, _)| *at);
        ready(ready_now.into_iter().map(|(_, pending)| pending).collect())
    }

    fn fire<'a>(&'a self, key: &'a str, pending: &'a str) -> Reply<'a, bool> {
        let mut map = lock(&self.pending);
        let still = map.get(key).map(String::as_str) == Some(pending);
        if still {
            map.remove(key);
        }
        ready(still)
    }

    /// No other node: nobody else's occupancy to take out.
    fn occupied_by<'a>(&'a self, _node: &'a str) -> Reply<'a, Vec<String>> {
        ready(Vec::new())
    }

    fn push<'a>(&'a self, webhook: &'a str, max: usize, items: Vec<String>) -> Reply<'a, u64> {
        let mut queues = lock(&self.queues);
        let queue = queues.entry(webhook.to_owned()).or_default();
        let mut next = lock(&self.next_item);
        for item in items {
            *next += 1;
            queue.push_back((*next, item));
        }
        let mut dropped = 0;
        while queue.len() > max {
            queue.pop_front();
            dropped += 1;
        }
        ready(dropped)
    }

    fn peek<'a>(&'a self, webhook: &'a str, n: usize) -> Reply<'a, Vec<(String, String)>> {
        let items = lock(&self.queues)
            .get(webhook)
            .map(|queue| {
                queue
                    .iter()
                    .take(n)
                    .map(|(id, item)| (id.to_string(), item.clone()))
                    .collect()
            })
            .unwrap_or_default();
        ready(items)
    }

    fn ack<'a>(&'a self, webhook: &'a str, ids: Vec<String>) -> Reply<'a, ()> {
        if let Some(queue) = lock(&self.queues).get_mut(webhook) {
            queue.retain(|(id, _)| !ids.contains(&id.to_string()));
        }
        ready(())
    }

    /// Always: one process delivers.
    fn may_deliver<'a>(&'a self, _webhook: &'a str, _ttl_ms: u64) -> Reply<'a, bool> {
        ready(true)
    }

    fn members<'a>(&'a self, channel: &'a str) -> Reply<'a, Vec<PresenceMessage>> {
        ready((self.members)(channel))
    }
}
