//! A channel's local subscribers, indexed by connection, with the counts occupancy reports kept
//! as they change: an attach, a detach or a mode change costs O(1) however big the channel is,
//! so a join storm on a large channel is linear, not quadratic.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use protocol::message::Modes;

use super::Subscriber;

#[derive(Default)]
pub(super) struct Subscribers {
    list: Vec<Subscriber>,
    /// Connection id → position in `list`.
    index: HashMap<Arc<str>, usize>,
    counts: Counts,
}

/// Subscribers holding each mode occupancy reports, and those that asked for its events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) publishers: usize,
    pub(super) subscribers: usize,
    pub(super) presence_subscribers: usize,
    pub(super) occupancy_watchers: usize,
}

impl Counts {
    fn count(&mut self, subscriber: &Subscriber, added: bool) {
        let modes = subscriber.modes;
        for (count, holds) in [
            (&mut self.publishers, modes.contains(Modes::PUBLISH)),
            (&mut self.subscribers, modes.contains(Modes::SUBSCRIBE)),
            (
                &mut self.presence_subscribers,
                modes.contains(Modes::PRESENCE_SUBSCRIBE),
            ),
            (&mut self.occupancy_watchers, subscriber.occupancy_events),
        ] {
            match (holds, added) {
                (true, true) => *count += 1,
                (true, false) => *count -= 1,
                (false, _) => {}
            }
        }
    }
}

impl Subscribers {
    /// Adds `subscriber`, or replaces the one its connection had; true if it is new here.
    pub(super) fn insert(&mut self, subscriber: Subscriber) -> bool {
        self.counts.count(&subscriber, true);
        match self.index.get(&subscriber.connection_id) {
            Some(&position) => {
                let old = std::mem::replace(&mut self.list[position], subscriber);
                self.counts.count(&old, false);
                false
            }
            None => {
                self.index
                    .insert(subscriber.connection_id.clone(), self.list.len());
                self.list.push(subscriber);
                true
            }
        }
    }

    /// Removes the connection's subscriber; true if there was one.
    pub(super) fn remove(&mut self, connection_id: &str) -> bool {
        let Some(position) = self.index.remove(connection_id) else {
            return false;
        };
        let removed = self.list.swap_remove(position);
        self.counts.count(&removed, false);
        if let Some(moved) = self.list.get(position) {
            self.index.insert(moved.connection_id.clone(), position);
        }
        crate::shrink::vec(&mut self.list);
        crate::shrink::hash_map(&mut self.index);
        true
    }

    pub(super) fn get(&self, connection_id: &str) -> Option<&Subscriber> {
        self.index
            .get(connection_id)
            .map(|&position| &self.list[position])
    }

    pub(super) fn set_modes(&mut self, connection_id: &str, modes: Modes) {
        if let Some(&position) = self.index.get(connection_id) {
            let subscriber = &mut self.list[position];
            self.counts.count(subscriber, false);
            subscriber.modes = modes;
            self.counts.count(subscriber, true);
        }
    }

    pub(super) fn counts(&self) -> Counts {
        self.counts
    }

    /// Room for subscribers (the shrink tests').
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.list.capacity().max(self.index.capacity())
    }
}

/// Read-only, so the counts cannot drift from the list.
impl Deref for Subscribers {
    type Target = [Subscriber];

    fn deref(&self) -> &[Subscriber] {
        &self.list
    }
}
