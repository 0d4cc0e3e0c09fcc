//! Server-side batching and conflation (a namespace's `Batching`): storing, ACKs, history and
//! resume happen at publish time as always; only live delivery waits. What a channel's
//! subscribers are due collects in `Pending` for the interval, then goes to each of them as one
//! MESSAGE (up to `MAX_BATCH` messages per frame), encoded once per format.
//!
//! Conflation keeps, per interval, only the latest message per key (its name, or a header);
//! under either, an operation replaces a pending operation on the same message, and an append
//! is sent as the whole message, so what goes out is the message's latest view.

use std::collections::HashMap;
use std::sync::Arc;

use protocol::message::{message_action, Modes};
use protocol::{Action, Message, ProtocolMessage};

use super::fan_out::fan_out;
use super::versions::{is_operation, position};
use super::{lock_list, ChannelState, Hub};
use crate::config::ConflationKey;
use crate::pulse::Pulse;

/// Messages per batched frame at most (Ably's batch size).
const MAX_BATCH: usize = 200;

/// What a channel's subscribers are due at the end of the interval.
pub(super) struct Pending {
    /// In publish order; `None` where a later message conflated one away.
    messages: Vec<Option<Message>>,
    /// Conflation key (or operated-on serial) -> index in `messages`.
    by_key: HashMap<String, usize>,
    /// The channel's position after the newest stored message in the batch.
    position: Option<String>,
    pub(super) due_ms: u64,
}

impl Pending {
    fn new(due_ms: u64) -> Pending {
        Pending {
            messages: Vec::new(),
            by_key: HashMap::new(),
            position: None,
            due_ms,
        }
    }

    fn add(&mut self, message: Message, conflate: Option<&ConflationKey>) {
        if let Some(at) = position(&message) {
            self.position = Some(at.to_owned());
        }
        let key = if is_operation(&message) {
            // An update after an update (or appends) of the same message: only the latest.
            message
                .serial
                .as_ref()
                .map(|serial| format!("\u{1}{serial}"))
        } else {
            conflate.and_then(|key| key_of(&message, key))
        };
        if let Some(key) = key {
            if let Some(previous) = self.by_key.insert(key, self.messages.len()) {
                self.messages[previous] = None;
            }
        }
        self.messages.push(Some(message));
    }
}

/// The value a message is conflated by; messages without one are all kept.
fn key_of(message: &Message, key: &ConflationKey) -> Option<String> {
    match key {
        ConflationKey::Name => message.name.clone(),
        ConflationKey::Header(header) => {
            message
                .extras
                .as_ref()?
                .get("headers")?
                .get(header)
                .map(|value| match value.as_str() {
                    Some(text) => text.to_owned(),
                    None => value.to_string(),
                })
        }
    }
}

impl Hub {
    /// Queues messages for `channel`'s subscribers until its batch is due (the channel has a
    /// `Batching` rule). An append goes as `full`, the message's whole latest view.
    pub(super) fn batch(
        &self,
        channel: &str,
        state: &mut ChannelState,
        messages: impl IntoIterator<Item = Message>,
        now: u64,
    ) {
        let Some(batching) = state.batching.clone() else {
            return;
        };
        if state.subscribers.is_empty() {
            return;
        }
        let pending = state.pending.get_or_insert_with(|| {
            lock_list(&self.batch_dirty).push(channel.to_owned());
            Pending::new(now + batching.interval.as_millis() as u64)
        });
        for message in messages {
            pending.add(message, batching.conflate.as_ref());
        }
    }

    /// Sends every batch that is due. Call every few milliseconds.
    pub fn flush_batches(&self) {
        let now = protocol::now_ms();
        let listed = std::mem::take(&mut *lock_list(&self.batch_dirty));
        let mut waiting = Vec::new();
        for channel in listed {
            let Some(entry) = self.existing(&channel) else {
                continue;
            };
            let mut state = entry.lock();
            match &state.pending {
                Some(pending) if pending.due_ms > now => waiting.push(channel.clone()),
                Some(_) => send_pending(&mut state, &self.pulse),
                None => {}
            }
        }
        lock_list(&self.batch_dirty).extend(waiting);
    }
}

/// Sends a channel's pending batch now (it is due, or an attach must not overtake it).
pub(super) fn send_pending(state: &mut ChannelState, pulse: &Pulse) {
    let Some(pending) = state.pending.take() else {
        return;
    };
    let messages: Vec<Message> = pending.messages.into_iter().flatten().collect();
    let n_frames = messages.len().div_ceil(MAX_BATCH);
    let mut messages = messages.into_iter();
    for index in 0..n_frames {
        let batch: Vec<Message> = messages.by_ref().take(MAX_BATCH).collect();
        let channel_serial = if index + 1 == n_frames {
            pending.position.clone()
        } else {
            batch.iter().rev().find_map(position).map(str::to_owned)
        };
        send(state, pulse, batch, channel_serial);
    }
}

/// One batched frame to every subscriber. A connection that asked not to hear its own publishes
/// gets its own copy without them (only such publishers cost a second encode).
fn send(state: &ChannelState, pulse: &Pulse, batch: Vec<Message>, channel_serial: Option<String>) {
    let publishers: Vec<Arc<str>> = state
        .subscribers
        .iter()
        .filter(|s| !s.echo)
        .filter(|s| {
            batch
                .iter()
                .any(|m| m.connection_id.as_deref() == Some(&*s.connection_id))
        })
        .map(|s| s.connection_id.clone())
        .collect();
    let frame = |messages: Vec<Message>| ProtocolMessage {
        timestamp: Some(protocol::now_ms()),
        channel_serial: channel_serial.clone(),
        messages: Some(messages),
        ..ProtocolMessage::new(Action::Message)
    };
    let wants = |s: &super::Subscriber| s.modes.contains(Modes::SUBSCRIBE);
    for publisher in &publishers {
        let others: Vec<Message> = batch
            .iter()
            .filter(|m| m.connection_id.as_deref() != Some(&**publisher))
            .cloned()
            .collect();
        if others.is_empty() {
            continue;
        }
        let mut outgoing = frame(others);
        match fan_out(&state.subscribers, &mut outgoing, None, |s| {
            wants(s) && s.connection_id == *publisher
        }) {
            Ok(delivered) => pulse.messages_out(delivered),
            Err(error) => tracing::warn!(message = %error.message, "batch delivery failed"),
        }
    }
    let mut outgoing = frame(batch);
    match fan_out(&state.subscribers, &mut outgoing, None, |s| {
        wants(s) && !publishers.contains(&s.connection_id)
    }) {
        Ok(delivered) => pulse.messages_out(delivered),
        Err(error) => tracing::warn!(message = %error.message, "batch delivery failed"),
    }
}

/// What a batch holds of a stored publish: each message as subscribers would have had it, an
/// append as the whole message.
pub(super) fn batched_form(delivered: &Message, full: Option<&Message>) -> Message {
    match full {
        Some(full) if delivered.action == Some(message_action::APPEND) => full.clone(),
        _ => delivered.clone(),
    }
}
