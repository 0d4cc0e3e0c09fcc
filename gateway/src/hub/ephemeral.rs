//! Ephemeral messages (`extras.ephemeral: true`): delivered live like any publish, never stored.
//!
//! They get no serial and leave the channel untouched: no log entry (so no history, rewind or
//! resume replay), no move of `last_serial`, and a frame without `channelSerial`, so a client's
//! resume point stays at the last stored message. A consecutive serial would leave a hole in
//! the stored sequence, and every catch-up or resume across it would report 90003. Message ids
//! still suppress repeats (the same `RecentIds` window as stored messages).
//!
//! A frame without `channelSerial` gets channel tag 0 in `fan_out`, so a lagging subscriber's
//! writer never merges it with stored ones (`outbox::coalesce`): it goes out on its own, in order.

use protocol::message::Modes;
use protocol::{Action, ErrorInfo, Message, ProtocolMessage};
use serde_json::Value;

use super::fan_out::fan_out;
use super::{ChannelState, Hub, Publication, Serials, IDEMPOTENCY_WINDOW_MS};
use crate::error::Error;
use crate::pulse::Pulse;

/// Whether a message asks not to be stored: `extras.ephemeral` is `true`.
pub fn is_ephemeral(message: &Message) -> bool {
    message
        .extras
        .as_ref()
        .and_then(|extras| extras.get("ephemeral"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// Marks a message ephemeral (REST `?ephemeral=true`, an event with `ephemeral: true`), keeping
/// its other extras. Extras that are not an object (which Ably refuses anyway) are replaced.
pub fn mark_ephemeral(message: &mut Message) {
    match &mut message.extras {
        Some(Value::Object(extras)) => {
            extras.insert("ephemeral".into(), Value::Bool(true));
        }
        extras => *extras = Some(serde_json::json!({"ephemeral": true})),
    }
}

/// Whether a publish is ephemeral: all of its messages or none of them. A mix is refused
/// (40030), as Ably refuses it.
pub fn is_ephemeral_publish(messages: &[Message]) -> Result<bool, Error> {
    let ephemeral = messages.iter().filter(|m| is_ephemeral(m)).count();
    match ephemeral {
        0 => Ok(false),
        n if n == messages.len() => Ok(true),
        n => Err(Error::MixedEphemeral {
            ephemeral: n,
            stored: messages.len() - n,
        }),
    }
}

impl Hub {
    /// Delivers an ephemeral publication to this node's subscribers: repeats of a message id
    /// dropped, then fanned out without serials. Every serial is `None`.
    pub fn publish_ephemeral(&self, publication: Publication<'_>) -> Result<Serials, ErrorInfo> {
        let n_messages = publication.messages.len();
        let now = publication.timestamp;
        let keyed = publication.client_ids.iter().any(|keyed| *keyed);
        let Publication {
            channel,
            messages,
            client_ids,
            connection_id,
            id,
            ..
        } = publication;
        let send = |state: &mut ChannelState| {
            state.recent_ids.forget_before(now);
            let keys = client_ids.iter().chain(std::iter::repeat(&false));
            let fresh: Vec<Message> = messages
                .into_iter()
                .zip(keys)
                .filter(|(message, keyed)| match (keyed, &message.id) {
                    (true, Some(id)) => state.recent_ids.insert(id, now + IDEMPOTENCY_WINDOW_MS),
                    _ => true,
                })
                .map(|(message, _)| message)
                .collect();
            if state.batching.is_some() {
                self.batch(channel, state, fresh, now);
                return Ok(());
            }
            send_live(state, &self.pulse, fresh, connection_id, id, now)
        };
        if keyed {
            // The ids must be remembered even with nobody listening yet.
            self.with_channel(channel, send)?;
        } else if let Some(entry) = self.existing(channel) {
            send(&mut entry.lock())?;
        }
        Ok(vec![None; n_messages])
    }

    /// An ephemeral publication the bus carried (any node's, repeats already dropped by the
    /// shared store): fanned out to this node's subscribers, nothing else.
    pub fn deliver_ephemeral(
        &self,
        channel: &str,
        messages: Vec<Message>,
        connection_id: Option<&str>,
        id: Option<String>,
    ) -> Result<(), ErrorInfo> {
        let Some(entry) = self.existing(channel) else {
            return Ok(());
        };
        let mut state = entry.lock();
        if state.batching.is_some() {
            self.batch(channel, &mut state, messages, protocol::now_ms());
            return Ok(());
        }
        send_live(
            &mut state,
            &self.pulse,
            messages,
            connection_id,
            id,
            protocol::now_ms(),
        )
    }
}

/// One MESSAGE without `channelSerial` to every subscriber that wants it, echo rules as for a
/// stored publish; the channel's log and position are not touched.
fn send_live(
    state: &mut ChannelState,
    pulse: &Pulse,
    mut messages: Vec<Message>,
    publisher: Option<&str>,
    id: Option<String>,
    now: u64,
) -> Result<(), ErrorInfo> {
    if messages.is_empty() || state.removed || state.subscribers.is_empty() {
        return Ok(());
    }
    for message in &mut messages {
        // A publisher's own `serial` never passes for one of ours.
        message.serial = None;
    }
    if let Some(published) = messages.first().and_then(|m| m.timestamp) {
        ::metrics::histogram!("realtime_publish_delivery_seconds")
            .record(now.saturating_sub(published) as f64 / 1000.0);
        pulse.latency_ms(now.saturating_sub(published));
    }
    let mut outgoing = ProtocolMessage {
        id,
        connection_id: publisher.map(str::to_owned),
        timestamp: Some(now),
        messages: Some(messages),
        ..ProtocolMessage::new(Action::Message)
    };
    let delivered = fan_out(&state.subscribers, &mut outgoing, publisher, |subscriber| {
        subscriber.modes.contains(Modes::SUBSCRIBE)
            && (subscriber.echo || Some(&*subscriber.connection_id) != publisher)
    })?;
    pulse.messages_out(delivered);
    Ok(())
}
