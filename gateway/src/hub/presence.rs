//! A channel's presence set, its event log, and the events waiting to be broadcast.
//!
//! Members are keyed by (clientId, connectionId). Events are not sent one by one: they collect in
//! `pending` and go out in one PRESENCE frame per subscriber per flush, so N members joining a
//! channel with N presence subscribers cost about N frames per flush interval, not N².
//! The `Hub`'s presence methods (check, apply, sync with the store, flush, reads) come first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use protocol::message::Modes;
use protocol::{Action, ErrorCode, ErrorInfo, PresenceMessage, ProtocolMessage};
use rand::distributions::{Alphanumeric, DistString};

use super::fan_out::fan_out;
use super::{lock_list, Channel, ChannelState, HistoryQuery, Hub};

pub(super) const ABSENT: u8 = 0;
pub(super) const PRESENT: u8 = 1;
pub(super) const ENTER: u8 = 2;
pub(super) const LEAVE: u8 = 3;
pub(super) const UPDATE: u8 = 4;

impl Hub {
    /// Applies stamped presence events (ENTER/UPDATE/LEAVE with clientId, connectionId, id and
    /// timestamp set); they go out at the next `flush_presence`. Checked and applied in one
    /// critical section, so two enters racing for the last place cannot both pass the cap.
    pub fn presence(&self, channel: &str, events: Vec<PresenceMessage>) -> Result<(), ErrorInfo> {
        check_actions(&events)?;
        self.with_channel(channel, |state| {
            self.check_room(state, &events)?;
            self.apply_locked(channel, state, events);
            Ok(())
        })
    }

    /// Whether a client's presence events may be applied: actions a client may send, and the
    /// member cap as it is now (`presence` checks it again as it applies).
    pub fn check_presence(
        &self,
        channel: &str,
        events: &[PresenceMessage],
    ) -> Result<(), ErrorInfo> {
        check_actions(events)?;
        match self.existing(channel) {
            Some(entry) => self.check_room(&entry.lock(), events),
            None => Ok(()),
        }
    }

    /// The member cap: refused if `events` would make more members than it allows.
    fn check_room(
        &self,
        state: &ChannelState,
        events: &[PresenceMessage],
    ) -> Result<(), ErrorInfo> {
        let max_members = self.config.max_presence_members;
        let entering = events
            .iter()
            .filter(|e| {
                matches!(e.action, ENTER | UPDATE)
                    && !state.presence.contains(
                        e.client_id.as_deref().unwrap_or_default(),
                        e.connection_id.as_deref().unwrap_or_default(),
                    )
            })
            .count();
        if state.presence.len() + entering > max_members {
            return Err(ErrorCode::TooManyPresenceMembers.info(format!(
                "at most {max_members} presence members per channel"
            )));
        }
        Ok(())
    }

    /// Applies presence events already accepted (checked here, or by the node that published
    /// them through the bus).
    pub fn apply_presence(&self, channel: &str, events: Vec<PresenceMessage>) {
        self.with_channel(channel, |state| self.apply_locked(channel, state, events));
    }

    /// Applies `events` to the locked state: sent at once if the channel is quiet, else queued
    /// for the next flush.
    fn apply_locked(&self, channel: &str, state: &mut ChannelState, events: Vec<PresenceMessage>) {
        let was_clean = state.presence.pending.is_empty();
        for event in events {
            state.presence.apply(event);
        }
        if self.send_presence_if_quiet(state) && was_clean {
            self.mark_presence_dirty(channel);
        }
        self.occupancy_changed(channel, state);
    }

    /// Removes every member `connection_id` holds on `channel`, announcing LEAVEs.
    pub fn leave_all(&self, channel: &str, connection_id: &str) {
        let leaves = self.leave_events(channel, connection_id);
        if !leaves.is_empty() {
            self.apply_presence(channel, leaves);
        }
    }

    /// Whether `event` is what made `client_id` present on `channel` through `connection_id`
    /// (same id and payload): ably-js re-sends its members' ENTERs with their ids on every
    /// re-attach, resumed ones included, and a repeat changes nothing, so nobody must see it.
    pub fn present_by(
        &self,
        channel: &str,
        client_id: &str,
        connection_id: &str,
        event: &PresenceMessage,
    ) -> bool {
        self.existing(channel)
            .is_some_and(|entry| entry.lock().presence.holds(client_id, connection_id, event))
    }

    /// LEAVE events for every member `connection_id` holds on `channel`, not applied. Server-made
    /// leaves get ids that do not start with the connectionId, so clients order them by time.
    pub fn leave_events(&self, channel: &str, connection_id: &str) -> Vec<PresenceMessage> {
        let Some(entry) = self.existing(channel) else {
            return Vec::new();
        };
        let now = protocol::now_ms();
        let members = entry.lock().presence.leaves_for(connection_id);
        members
            .into_iter()
            .map(|member| server_leave(member, now))
            .collect()
    }

    /// Every channel's members held by one of `connections` (by connection id): what this node
    /// writes back when Redis lost it. One pass over the channels, each locked briefly.
    pub fn members_held_by(
        &self,
        connections: &HashSet<&str>,
    ) -> Vec<(String, Vec<PresenceMessage>)> {
        let channels: Vec<(String, Arc<Channel>)> = self
            .channels
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().clone()))
            .collect();
        channels
            .into_iter()
            .filter_map(|(name, channel)| {
                let state = channel.lock();
                let held: Vec<PresenceMessage> = state
                    .presence
                    .members()
                    .filter(|m| {
                        m.connection_id
                            .as_deref()
                            .is_some_and(|id| connections.contains(id))
                    })
                    .cloned()
                    .collect();
                (!held.is_empty()).then_some((name, held))
            })
            .collect()
    }

    /// Makes the member set equal to `members` (the shared store's), announcing the difference:
    /// ENTER or UPDATE for members new or changed here, LEAVE for members gone. With
    /// `leave_missing` false, members missing from the store stay (the store may have just come
    /// back empty and their nodes not yet written them back); returns whether any did.
    pub fn sync_members(
        &self,
        channel: &str,
        members: Vec<PresenceMessage>,
        leave_missing: bool,
    ) -> bool {
        let now = protocol::now_ms();
        let mut kept = false;
        let events = match self.existing(channel) {
            None => members
                .into_iter()
                .map(|m| PresenceMessage { action: ENTER, ..m })
                .collect(),
            Some(entry) => {
                let state = entry.lock();
                let key = |m: &PresenceMessage| {
                    (
                        m.client_id.clone().unwrap_or_default(),
                        m.connection_id.clone().unwrap_or_default(),
                    )
                };
                let wanted: HashMap<(String, String), &PresenceMessage> =
                    members.iter().map(|m| (key(m), m)).collect();
                let mut events: Vec<PresenceMessage> = Vec::new();
                for missing in state
                    .presence
                    .members()
                    .filter(|m| !wanted.contains_key(&key(m)))
                {
                    kept = true;
                    if leave_missing {
                        events.push(server_leave(missing.clone(), now));
                    }
                }
                for member in &members {
                    let held = state.presence.member(&key(member));
                    let action = match held {
                        None => ENTER,
                        Some(held) if held.id != member.id => UPDATE,
                        Some(_) => continue,
                    };
                    events.push(PresenceMessage {
                        action,
                        ..member.clone()
                    });
                }
                events
            }
        };
        if !events.is_empty() {
            self.apply_presence(channel, events);
        }
        kept && !leave_missing
    }

    fn send_presence_if_quiet(&self, state: &mut ChannelState) -> bool {
        if state.presence.pending.is_empty() {
            return false;
        }
        let now = protocol::now_ms();
        let window = self.config.presence_batch_window.as_millis() as u64;
        if now.saturating_sub(state.presence_sent_at) < window {
            return true;
        }
        send_presence(state, now);
        false
    }

    fn mark_presence_dirty(&self, channel: &str) {
        lock_list(&self.presence_dirty).push(channel.to_owned());
    }

    /// Sends every channel's waiting presence events: one PRESENCE frame per channel, encoded
    /// once per format, to every presence subscriber (the members' own connections included).
    pub fn flush_presence(&self) {
        self.flush_listed(&self.presence_dirty, |_, state| {
            send_presence(state, protocol::now_ms())
        });
    }

    pub fn presence_members(&self, channel: &str) -> Vec<PresenceMessage> {
        self.existing(channel)
            .map(|entry| entry.lock().presence.members().cloned().collect())
            .unwrap_or_default()
    }

    /// Presence events newest first (or oldest first with `forwards`), paged like history.
    pub fn presence_history(&self, channel: &str, query: &HistoryQuery) -> Vec<PresenceMessage> {
        let Some(entry) = self.existing(channel) else {
            return Vec::new();
        };
        let state = entry.lock();
        let matches = |e: &&PresenceMessage| {
            let ts = e.timestamp.unwrap_or(0);
            query.start.is_none_or(|s| ts >= s) && query.end.is_none_or(|end| ts <= end)
        };
        let events: Box<dyn Iterator<Item = &PresenceMessage>> = if query.forwards {
            Box::new(state.presence.history())
        } else {
            Box::new(state.presence.history().rev())
        };
        events
            .filter(matches)
            .skip(
                query
                    .cursor
                    .as_deref()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
            )
            .take(query.limit)
            .cloned()
            .collect()
    }
}

/// Only what a client may send: ENTER, UPDATE and LEAVE.
fn check_actions(events: &[PresenceMessage]) -> Result<(), ErrorInfo> {
    match events.iter().find(|e| !is_valid_client_action(e.action)) {
        Some(bad) => Err(ErrorCode::BadRequest.info(format!(
            "presence action {} cannot be sent by a client",
            bad.action
        ))),
        None => Ok(()),
    }
}

/// A LEAVE the server makes for `member` (its connection went away).
pub(crate) fn server_leave(member: PresenceMessage, now: u64) -> PresenceMessage {
    PresenceMessage {
        action: LEAVE,
        id: Some(format!(
            "leave-{}:0:0",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 10)
        )),
        timestamp: Some(now),
        ..member
    }
}

/// One PRESENCE frame with every waiting event, encoded once per format, to every presence
/// subscriber (the members' own connections included).
fn send_presence(state: &mut ChannelState, now: u64) {
    let events = std::mem::take(&mut state.presence.pending);
    if events.is_empty() {
        return;
    }
    state.presence_sent_at = now;
    let mut outgoing = ProtocolMessage {
        timestamp: Some(now),
        presence: Some(events),
        ..ProtocolMessage::new(Action::Presence)
    };
    if let Err(error) = fan_out(&state.subscribers, &mut outgoing, None, |subscriber| {
        subscriber.modes.contains(Modes::PRESENCE_SUBSCRIBE)
    }) {
        tracing::warn!(message = %error.message, "presence broadcast failed");
    }
}

/// Presence events kept for `/presence/history`.
const MAX_PRESENCE_LOG: usize = 1000;

#[derive(Default)]
pub(super) struct PresenceSet {
    members: HashMap<(String, String), PresenceMessage>,
    /// Members per connection id, so occupancy counts connections in O(1).
    connections: HashMap<String, usize>,
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

    /// Connections with at least one member here.
    pub(super) fn connections(&self) -> usize {
        self.connections.len()
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
                    if let Some(connection_id) = &event.connection_id {
                        *self.connections.entry(connection_id.clone()).or_default() += 1;
                    }
                }
            }
            LEAVE => match self.members.remove(&key) {
                Some(member) => {
                    if let Some(connection_id) = &member.connection_id {
                        self.forget_connection(connection_id);
                    }
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

    fn forget_connection(&mut self, connection_id: &str) {
        if let Some(members) = self.connections.get_mut(connection_id) {
            *members -= 1;
            if *members == 0 {
                self.connections.remove(connection_id);
                crate::shrink::hash_map(&mut self.connections);
            }
        }
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
