//! A channel's presence set, its event log, and the events waiting to be broadcast.
//!
//! Members are keyed by (clientId, connectionId). Events are not sent one by one: they collect in
//! `pending` and go out in one PRESENCE frame per subscriber per flush, so N members joining a
//! channel with N presence subscribers cost about N frames per flush interval, not N².

use std::collections::{HashMap, VecDeque};

use protocol::PresenceMessage;

pub(super) const ABSENT: u8 = 0;
pub(super) const PRESENT: u8 = 1;
pub(super) const ENTER: u8 = 2;
pub(super) const LEAVE: u8 = 3;
pub(super) const UPDATE: u8 = 4;

/// Presence events kept for `/presence/history`.
const MAX_PRESENCE_LOG: usize = 1000;

#[derive(Default)]
pub(super) struct PresenceSet {
    members: HashMap<(String, String), PresenceMessage>,
    log: VecDeque<PresenceMessage>,
    pub(super) pending: Vec<PresenceMessage>,
}

pub(super) enum Applied {
    Changed,
    /// A leave for someone not present: nothing to tell anyone.
    Ignored,
}

impl PresenceSet {
    pub(super) fn len(&self) -> usize {
        self.members.len()
    }

    /// Room for members (the shrink tests').
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.members.capacity()
    }

    pub(super) fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// Nothing worth keeping the channel for: no members, nothing to send, no history.
    pub(super) fn is_idle(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty() && self.log.is_empty()
    }

    pub(super) fn contains(&self, client_id: &str, connection_id: &str) -> bool {
        self.members
            .contains_key(&(client_id.to_owned(), connection_id.to_owned()))
    }

    /// Whether the member is present exactly as `event` would make it (same message id, data
    /// and extras): a repeat of that message. A changed payload under an old id is no repeat.
    pub(super) fn holds(
        &self,
        client_id: &str,
        connection_id: &str,
        event: &PresenceMessage,
    ) -> bool {
        self.members
            .get(&(client_id.to_owned(), connection_id.to_owned()))
            .is_some_and(|member| {
                member.id.is_some()
                    && member.id == event.id
                    && member.data == event.data
                    && member.extras == event.extras
            })
    }

    /// Applies one stamped event (clientId, connectionId, id, timestamp set).
    pub(super) fn apply(&mut self, mut event: PresenceMessage) -> Applied {
        let key = (
            event.client_id.clone().unwrap_or_default(),
            event.connection_id.clone().unwrap_or_default(),
        );
        match event.action {
            ENTER | UPDATE | PRESENT => {
                let mut member = event.clone();
                member.action = PRESENT;
                if self.members.insert(key, member).is_none() {
                    ::metrics::gauge!("realtime_presence_members").increment(1.0);
                }
            }
            LEAVE => match self.members.remove(&key) {
                Some(member) => {
                    crate::shrink::hash_map(&mut self.members);
                    ::metrics::gauge!("realtime_presence_members").decrement(1.0);
                    if event.data.is_none() {
                        event.data = member.data;
                        event.encoding = member.encoding;
                    }
                }
                None => return Applied::Ignored,
            },
            _ => return Applied::Ignored,
        }
        if self.log.len() >= MAX_PRESENCE_LOG {
            self.log.pop_front();
        }
        self.log.push_back(event.clone());
        self.pending.push(event);
        Applied::Changed
    }

    /// The members a connection holds, as LEAVE events to apply.
    pub(super) fn leaves_for(&self, connection_id: &str) -> Vec<PresenceMessage> {
        self.members
            .iter()
            .filter(|((_, conn), _)| conn == connection_id)
            .map(|(_, member)| member.clone())
            .collect()
    }

    pub(super) fn member(&self, key: &(String, String)) -> Option<&PresenceMessage> {
        self.members.get(key)
    }

    pub(super) fn members(&self) -> impl Iterator<Item = &PresenceMessage> {
        self.members.values()
    }

    pub(super) fn history(&self) -> impl DoubleEndedIterator<Item = &PresenceMessage> {
        self.log.iter()
    }

    pub(super) fn expire_log(&mut self, before_ms: u64) {
        while self
            .log
            .front()
            .is_some_and(|e| e.timestamp.unwrap_or(0) < before_ms)
        {
            self.log.pop_front();
        }
    }
}

pub(super) fn is_valid_client_action(action: u8) -> bool {
    matches!(action, ENTER | UPDATE | LEAVE) && action != ABSENT
}
