//! A channel's local subscribers, indexed by connection, with the counts occupancy reports kept
//! as they change: an attach, a detach or a mode change costs O(1) however big the channel is,
//! so a join storm on a large channel is linear, not quadratic.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use protocol::message::Modes;

use super::views::Chains;
use super::Subscriber;

#[derive(Default)]
pub(super) struct Subscribers {
    list: Vec<Subscriber>,
    /// Slot (`Subscriber::slot`) → position in `list`.
    index: HashMap<Arc<str>, usize>,
    counts: Counts,
    /// Subscribers with a filter or deltas: without any, a fan-out takes the plain path.
    viewers: usize,
    /// The delta chains of its views; only touched under the channel's lock.
    chains: Mutex<Chains>,
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
    /// Adds `subscriber`, or replaces the one in its slot; true if it is new here.
    pub(super) fn insert(&mut self, subscriber: Subscriber) -> bool {
        self.counts.count(&subscriber, true);
        self.count_viewer(&subscriber, true);
        let slot = subscriber.slot();
        match self.index.get(&slot) {
            Some(&position) => {
                let old = std::mem::replace(&mut self.list[position], subscriber);
                self.counts.count(&old, false);
                self.count_viewer(&old, false);
                false
            }
            None => {
                self.index.insert(slot, self.list.len());
                self.list.push(subscriber);
                true
            }
        }
    }

    /// Removes the subscriber in `slot`; true if there was one.
    pub(super) fn remove(&mut self, slot: &str) -> bool {
        let Some(position) = self.index.remove(slot) else {
            return false;
        };
        let removed = self.list.swap_remove(position);
        self.counts.count(&removed, false);
        self.count_viewer(&removed, false);
        if let Some(moved) = self.list.get(position) {
            self.index.insert(moved.slot(), position);
        }
        crate::shrink::vec(&mut self.list);
        crate::shrink::hash_map(&mut self.index);
        true
    }

    pub(super) fn get(&self, slot: &str) -> Option<&Subscriber> {
        self.index.get(slot).map(|&position| &self.list[position])
    }

    pub(super) fn set_modes(&mut self, slot: &str, modes: Modes) {
        if let Some(&position) = self.index.get(slot) {
            let subscriber = &mut self.list[position];
            self.counts.count(subscriber, false);
            subscriber.modes = modes;
            self.counts.count(subscriber, true);
        }
    }

    pub(super) fn counts(&self) -> Counts {
        self.counts
    }

    pub(super) fn viewers(&self) -> usize {
        self.viewers
    }

    pub(super) fn chains(&self) -> MutexGuard<'_, Chains> {
        self.chains
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count_viewer(&mut self, subscriber: &Subscriber, added: bool) {
        if subscriber.view.is_plain() {
            return;
        }
        if added {
            self.viewers += 1;
        } else {
            self.viewers -= 1;
            if self.viewers == 0 {
                self.chains().clear();
            }
        }
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
