//! Publish (idempotency window, serials, log, fan-out), delivery of what the bus carried, and
//! catch-up from the shared store.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use protocol::message::Modes;
use protocol::{Action, ErrorCode, ErrorInfo, Message, ProtocolMessage};

use super::attach::REPLAY_MESSAGES_PER_FRAME;
use super::batch;
use super::fan_out::fan_out;
use super::log::{self, MessageLog};
use super::versions::{self, is_operation, position};
use super::{ChannelState, Hub, Publication, Serials, Subscriber};

/// How long a client-supplied message id suppresses a repeat (Ably's idempotency window).
pub const IDEMPOTENCY_WINDOW_MS: u64 = 2 * 60 * 1000;
/// Ids remembered per channel at most; beyond it the oldest are forgotten early, so a flood of
/// unique ids costs bounded memory.
const MAX_REMEMBERED_IDS: usize = 20_000;

impl Hub {
    /// The serial of the newest message this node has on a channel, with that message's id
    /// when the log still holds it (the bus checks the store still has the same message there).
    pub fn last_serial(&self, channel: &str) -> Option<(String, Option<String>)> {
        let entry = self.existing(channel)?;
        let state = entry.lock();
        let serial = state.last_serial.clone()?;
        // An operation's entry carries its message's id, not the operation's own.
        let id = state
            .log
            .newest()
            .filter(|m| !is_operation(m) && m.serial.as_deref() == Some(serial.as_str()))
            .and_then(|m| m.id.clone());
        Some((serial, id))
    }

    pub fn publish(&self, publication: Publication<'_>) -> Result<Serials, ErrorInfo> {
        let now = publication.timestamp;
        self.with_channel(publication.channel, |state| {
            state.recent_ids.forget_before(now);
            state.log.expire(now);
            let mut serials = Vec::with_capacity(publication.messages.len());
            let mut fresh = Vec::with_capacity(publication.messages.len());
            let client_ids = publication
                .client_ids
                .iter()
                .chain(std::iter::repeat(&false));
            // Refused before anything is stored: an operation on a message not held here.
            for op in publication.messages.iter().filter(|m| is_operation(m)) {
                let original = op.serial.as_deref().and_then(|s| state.log.find(s));
                let Some(original) = original else {
                    return Err(ErrorCode::NotFound.info(format!(
                        "no message with serial {} on this channel",
                        op.serial.as_deref().unwrap_or_default()
                    )));
                };
                versions::check(&original, op)
                    .map_err(|refusal| ErrorCode::InvalidParameterValue.info(refusal.message()))?;
            }
            for (mut message, client_id) in publication.messages.into_iter().zip(client_ids) {
                if let (true, Some(id)) = (*client_id, &message.id) {
                    if !state.recent_ids.insert(id, now + IDEMPOTENCY_WINDOW_MS) {
                        serials.push(None);
                        continue;
                    }
                }
                state.next_serial += 1;
                let serial = log::serial(state.epoch_ms, state.next_serial);
                if is_operation(&message) {
                    message.version.get_or_insert_with(Default::default).serial =
                        Some(serial.clone());
                } else {
                    message.serial = Some(serial.clone());
                }
                serials.push(Some(serial));
                fresh.push(message);
            }
            self.log_and_fan_out(
                publication.channel,
                state,
                fresh,
                publication.connection_id,
                publication.id,
                now,
            )?;
            Ok(serials)
        })
    }

    /// Messages published through the bus (by any node), serials already assigned in order:
    /// logged and fanned out here exactly as a local publish would be. Returns `Ok(false)`,
    /// delivering nothing, when they do not follow on from the last serial here (a pub/sub
    /// message was lost): the caller catches up from the store instead.
    pub fn deliver(
        &self,
        channel: &str,
        messages: Vec<Message>,
        connection_id: Option<&str>,
        id: Option<String>,
    ) -> Result<bool, ErrorInfo> {
        let now = protocol::now_ms();
        self.with_channel(channel, |state| {
            state.log.expire(now);
            // A serial at or below what we have is a repeat (a catch-up overlapping live),
            // unless the log holds another message there: the store lost what this node
            // delivered and handed its serials out again. Caught up instead, so the store's
            // roll-back is found and subscribers are told, never dropped as repeats.
            let newest = state.last_serial.clone();
            let reused = messages.iter().any(|m| {
                let (Some(serial), Some(newest)) = (position(m), &newest) else {
                    return false;
                };
                serial <= newest.as_str()
                    && !is_operation(m)
                    && state
                        .log
                        .find(serial)
                        .is_some_and(|held| held.id.is_some() && held.id != m.id)
            });
            if reused {
                return Ok(false);
            }
            let fresh: Vec<Message> = messages
                .into_iter()
                .filter(|m| match (position(m), &newest) {
                    (Some(serial), Some(newest)) => serial > newest.as_str(),
                    _ => true,
                })
                .collect();
            let follows_on = match (&newest, fresh.first().and_then(|m| position(m))) {
                (Some(newest), Some(first)) => log::next(newest).as_deref() == Some(first),
                _ => true,
            };
            if !follows_on {
                return Ok(false);
            }
            self.log_and_fan_out(channel, state, fresh, connection_id, id, now)?;
            Ok(true)
        })
    }

    /// Brings a channel in line with the shared store. `floor`: the serial at or below which
    /// the store no longer knows everything; `stored`: what it holds of the channel's current
    /// epoch, oldest first (any at or below the floor come before a hole). `old_epoch_complete`:
    /// the bus knows this node heard every message of the epoch it last saw (its pub/sub link
    /// was live until Redis lost the channel), so a new epoch stored whole from its first serial
    /// continues this log rather than replacing it.
    ///
    /// When the store continues from the last serial delivered here, what this node had not
    /// delivered yet goes out and the log keeps its entries (a client resuming from an older
    /// serial still resumes). Otherwise messages were lost: what is stored before the hole goes
    /// out, then subscribers are told (ATTACHED with 90003, not RESUMED), never left with a
    /// silent gap, then the rest; the log restarts at the floor.
    pub fn catch_up(
        &self,
        channel: &str,
        floor: String,
        stored: Vec<Message>,
        old_epoch_complete: bool,
    ) {
        let now = protocol::now_ms();
        self.with_channel(channel, |state| {
            let known = state.last_serial.clone();
            let fresh: Vec<Message> = stored
                .into_iter()
                .filter(|m| known.is_none() || position(m) > known.as_deref())
                .collect();
            let continues = known.as_deref().is_some_and(|known| {
                floor.as_str() <= known
                    || (old_epoch_complete && log::starts_a_later_epoch(&floor, known))
            });
            if continues {
                self.deliver_caught_up(state, fresh, now, true);
                state.log.expire(now);
            } else {
                let (before, after): (Vec<Message>, Vec<Message>) = fresh
                    .into_iter()
                    .partition(|m| position(m) <= Some(floor.as_str()));
                self.deliver_caught_up(state, before, now, false);
                if known.is_some() {
                    tell_continuity_lost(state, &floor);
                }
                state.log = MessageLog::new(floor.clone(), state.log.retention());
                self.deliver_caught_up(state, after, now, true);
                state.log.expire(now);
            }
            if state.last_serial.as_deref() < Some(floor.as_str()) {
                state.last_serial = Some(floor);
            }
        })
    }

    /// Sends messages a catch-up found to every subscriber, several per frame (a long gap fits
    /// the bounded queues), and moves the channel's position past them; with `log`, logs them
    /// (operations applied) first.
    fn deliver_caught_up(
        &self,
        state: &mut ChannelState,
        messages: Vec<Message>,
        now: u64,
        log: bool,
    ) {
        // A batch waiting goes first: these come after it.
        batch::send_pending(state, &self.pulse);
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let mut batch: Vec<Message> =
                messages.by_ref().take(REPLAY_MESSAGES_PER_FRAME).collect();
            if log {
                batch = batch
                    .into_iter()
                    .map(|m| Message::clone(&state.log.record(m).delivered))
                    .collect();
            }
            let Some(last) = batch.last().and_then(|m| position(m)).map(str::to_owned) else {
                continue;
            };
            state.last_serial = Some(last.clone());
            let mut outgoing = ProtocolMessage {
                timestamp: Some(now),
                channel_serial: Some(last),
                messages: Some(batch),
                ..ProtocolMessage::new(Action::Message)
            };
            match fan_out(&state.subscribers, &mut outgoing, None, |s| {
                s.modes.contains(Modes::SUBSCRIBE)
            }) {
                Ok(delivered) => self.pulse.messages_out(delivered),
                Err(error) => {
                    tracing::warn!(message = %error.message, "catch-up delivery failed");
                }
            }
        }
    }
}

impl Hub {
    /// The tail of every publish: log the fresh messages, move the channel's position, and send
    /// one MESSAGE (encoded once per format) to every subscriber that wants it.
    fn log_and_fan_out(
        &self,
        channel: &str,
        state: &mut ChannelState,
        fresh: Vec<Message>,
        publisher: Option<&str>,
        id: Option<String>,
        now: u64,
    ) -> Result<(), ErrorInfo> {
        let pulse = &self.pulse;
        let Some(last) = fresh.last().and_then(|m| position(m)).map(str::to_owned) else {
            return Ok(());
        };
        state.last_serial = Some(last.clone());
        if let Some(published) = fresh.first().and_then(|m| m.timestamp) {
            ::metrics::histogram!("realtime_publish_delivery_seconds")
                .record(now.saturating_sub(published) as f64 / 1000.0);
            pulse.latency_ms(now.saturating_sub(published));
        }
        if state.batching.is_some() {
            // Stored now, delivered when the batch is due.
            let mut batched = Vec::with_capacity(fresh.len());
            for message in fresh {
                let recorded = state.log.record(message);
                batched.push(batch::batched_form(
                    &recorded.delivered,
                    recorded.full.as_ref(),
                ));
            }
            self.batch(channel, state, batched, now);
            return Ok(());
        }
        let wants = |subscriber: &Subscriber| {
            subscriber.modes.contains(Modes::SUBSCRIBE)
                && (subscriber.echo || Some(&*subscriber.connection_id) != publisher)
        };
        let mut outgoing = ProtocolMessage {
            id,
            connection_id: publisher.map(str::to_owned),
            timestamp: Some(now),
            channel_serial: Some(last),
            ..ProtocolMessage::new(Action::Message)
        };
        if !fresh.iter().any(is_operation) {
            outgoing.messages = Some(fresh);
            let delivered = fan_out(&state.subscribers, &mut outgoing, publisher, wants);
            // The log keeps the messages the frame was made from: moved into their `Arc`, not copied.
            log_all(&mut state.log, outgoing.messages.take().unwrap_or_default());
            pulse.messages_out(delivered?);
            return Ok(());
        }
        // Operations: logged first (applied to the latest views), then what they became goes out.
        let mut full = None;
        let mut delivered = Vec::with_capacity(fresh.len());
        for message in fresh {
            let recorded = state.log.record(message);
            full = recorded.full;
            delivered.push(recorded.delivered);
        }
        let original = delivered.first().and_then(|m| m.serial.clone());
        outgoing.messages = Some(delivered.iter().map(|m| Message::clone(m)).collect());
        let (full, original) = match (full, original) {
            (Some(full), Some(original)) if delivered.len() == 1 => (full, original),
            _ => {
                pulse.messages_out(fan_out(
                    &state.subscribers,
                    &mut outgoing,
                    publisher,
                    wants,
                )?);
                return Ok(());
            }
        };
        // An append goes as itself to those who have the message in full, and as the whole
        // message to the rest (`appendMode=full`, or attached after it was published).
        let increments = fan_out(&state.subscribers, &mut outgoing, publisher, |s| {
            wants(s) && s.has_in_full(&original)
        })?;
        outgoing.messages = Some(vec![full]);
        let wholes = fan_out(&state.subscribers, &mut outgoing, publisher, |s| {
            wants(s) && !s.has_in_full(&original)
        })?;
        pulse.messages_out(increments + wholes);
        Ok(())
    }
}

fn log_all(log: &mut MessageLog, messages: Vec<Message>) {
    for message in messages {
        log.push(Arc::new(message));
    }
}

/// Every subscriber hears that messages may have been missed: an ATTACHED without RESUMED,
/// carrying 90003, which ably-js surfaces as an `update` event with `resumed: false`.
fn tell_continuity_lost(state: &ChannelState, position: &str) {
    for subscriber in state.subscribers.iter() {
        subscriber.outbox.reply(&ProtocolMessage {
            channel: Some(subscriber.channel_name.to_string()),
            flags: Some(subscriber.modes.bits()),
            channel_serial: Some(position.to_owned()),
            error: Some(ErrorCode::ContinuityNotGuaranteed.info(
                "messages on this channel may have been missed (the message store lost them)",
            )),
            ..ProtocolMessage::new(Action::Attached)
        });
    }
}

/// Message ids seen recently on one channel, oldest first.
#[derive(Default)]
pub(super) struct RecentIds {
    expiry: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl RecentIds {
    /// False if the id is already known (a duplicate).
    pub(super) fn insert(&mut self, id: &str, forget_at: u64) -> bool {
        if self.expiry.contains_key(id) {
            return false;
        }
        if self.order.len() >= MAX_REMEMBERED_IDS {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.expiry.remove(&oldest);
            }
        }
        self.expiry.insert(id.to_owned(), forget_at);
        self.order.push_back((forget_at, id.to_owned()));
        true
    }

    pub(super) fn forget_before(&mut self, now_ms: u64) {
        while let Some((forget_at, _)) = self.order.front() {
            if *forget_at > now_ms {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.expiry.remove(&id);
            }
        }
        crate::shrink::hash_map(&mut self.expiry);
        crate::shrink::vec_deque(&mut self.order);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
