//! The hub: channel -> local subscribers, and the publish path.
//!
//! A publish takes the channel's lock once, briefly and never across `.await`: it drops
//! duplicates by message id, assigns serials, encodes the outgoing frame once per (wire format,
//! name the subscriber used), and `try_send`s the same buffer to every subscriber. Doing the
//! fan-out under that lock is what makes delivery order equal serial order for every subscriber.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use protocol::message::flags;
use protocol::{Action, ErrorCode, ErrorInfo, Format, Message, ProtocolMessage};

use crate::connection::Outbox;
use crate::frame::Frame;

/// How long a client-supplied message id suppresses a repeat (Ably's idempotency window).
pub const IDEMPOTENCY_WINDOW_MS: u64 = 2 * 60 * 1000;
/// Ids remembered per channel at most; beyond it the oldest are forgotten early, so a flood of
/// unique ids costs bounded memory.
const MAX_REMEMBERED_IDS: usize = 20_000;

pub struct Hub {
    channels: DashMap<String, Arc<Channel>>,
    /// The last channel epoch handed out, so no two channel incarnations share one.
    last_epoch_ms: AtomicU64,
}

/// One local subscriber (an attached connection) of a channel.
pub struct Subscriber {
    pub connection_id: Arc<str>,
    /// The name the client attached with (qualifier included): deliveries must carry it.
    pub channel_name: Arc<str>,
    /// Granted mode flags; only `MODE_SUBSCRIBE` holders get messages.
    pub modes: u64,
    /// False when the connection asked not to hear its own publishes.
    pub echo: bool,
    pub outbox: Arc<Outbox>,
}

/// A publish, stamped and checked by the caller (ids, clientId, connectionId, timestamp).
pub struct Publication<'a> {
    pub channel: &'a str,
    pub messages: Vec<Message>,
    /// Per message: whether the client chose its id. Only those are remembered for idempotency;
    /// ids we generated cannot repeat, and remembering them would cost memory for nothing.
    pub client_ids: Vec<bool>,
    /// The publishing connection, for `echo=false` and the frame's `connectionId`.
    pub connection_id: Option<&'a str>,
    /// The ProtocolMessage id (`connectionId:msgSerial`) for realtime publishes.
    pub id: Option<String>,
    pub timestamp: u64,
}

/// Serial per message, in order; `None` for a duplicate that was not delivered again.
pub type Serials = Vec<Option<String>>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Occupancy {
    pub connections: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub presence_connections: usize,
    pub presence_members: usize,
    pub presence_subscribers: usize,
}

struct Channel {
    state: Mutex<ChannelState>,
}

struct ChannelState {
    /// When this incarnation of the channel began (ms, unique per hub): the serial prefix, so
    /// serials stay unique and ordered after the channel is swept and made again, or the
    /// process restarts.
    epoch_ms: u64,
    subscribers: Vec<Subscriber>,
    /// Serials within the epoch are consecutive.
    next_serial: u64,
    last_serial: Option<String>,
    recent_ids: RecentIds,
    /// Set when the sweeper dropped this channel from the map; a late holder must look it up again.
    removed: bool,
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that matters
        // more than losing the channel, so recover the guard rather than poison every caller.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        Hub {
            channels: DashMap::new(),
            last_epoch_ms: AtomicU64::new(0),
        }
    }

    fn new_channel(&self) -> Arc<Channel> {
        let now = protocol::now_ms();
        let previous = self
            .last_epoch_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        Arc::new(Channel {
            state: Mutex::new(ChannelState {
                epoch_ms: now.max(previous + 1),
                subscribers: Vec::new(),
                next_serial: 0,
                last_serial: None,
                recent_ids: RecentIds::default(),
                removed: false,
            }),
        })
    }

    /// Runs `f` on the live state of `channel`, creating it if needed.
    fn with_channel<R>(&self, channel: &str, f: impl FnOnce(&mut ChannelState) -> R) -> R {
        let mut f = Some(f);
        loop {
            let existing = self.channels.get(channel).map(|e| e.clone());
            let entry = existing.unwrap_or_else(|| {
                self.channels
                    .entry(channel.to_owned())
                    .or_insert_with(|| self.new_channel())
                    .clone()
            });
            let mut state = entry.lock();
            if !state.removed {
                let f = f.take().expect("runs once");
                return f(&mut state);
            }
        }
    }

    /// Adds (or updates) a subscriber and queues its ATTACHED in the same critical section, so
    /// no delivery can overtake the ATTACHED. `attached` gets the channel's current serial.
    pub fn attach(
        &self,
        channel: &str,
        subscriber: Subscriber,
        attached: impl FnOnce(Option<String>) -> ProtocolMessage,
    ) {
        self.with_channel(channel, |state| {
            let reply = attached(state.last_serial.clone());
            subscriber.outbox.reply(&reply);
            state
                .subscribers
                .retain(|s| s.connection_id != subscriber.connection_id);
            state.subscribers.push(subscriber);
        });
    }

    /// Changes a subscriber's granted modes (after a re-auth changed its capability).
    pub fn set_modes(&self, channel: &str, connection_id: &str, modes: u64) {
        if let Some(entry) = self.channels.get(channel).map(|e| e.clone()) {
            for subscriber in entry.lock().subscribers.iter_mut() {
                if &*subscriber.connection_id == connection_id {
                    subscriber.modes = modes;
                }
            }
        }
    }

    pub fn detach(&self, channel: &str, connection_id: &str) {
        if let Some(entry) = self.channels.get(channel).map(|e| e.clone()) {
            entry
                .lock()
                .subscribers
                .retain(|s| &*s.connection_id != connection_id);
        }
    }

    pub fn publish(&self, publication: Publication<'_>) -> Result<Serials, ErrorInfo> {
        let now = publication.timestamp;
        self.with_channel(publication.channel, |state| {
            state.recent_ids.forget_before(now);
            let mut serials = Vec::with_capacity(publication.messages.len());
            let mut fresh = Vec::with_capacity(publication.messages.len());
            let client_ids = publication
                .client_ids
                .iter()
                .chain(std::iter::repeat(&false));
            for (mut message, client_id) in publication.messages.into_iter().zip(client_ids) {
                if let (true, Some(id)) = (*client_id, &message.id) {
                    if !state.recent_ids.insert(id, now + IDEMPOTENCY_WINDOW_MS) {
                        serials.push(None);
                        continue;
                    }
                }
                state.next_serial += 1;
                let serial = format!("{:012x}-{:010x}", state.epoch_ms, state.next_serial);
                message.serial = Some(serial.clone());
                serials.push(Some(serial));
                fresh.push(message);
            }
            let Some(last) = fresh.last().and_then(|m| m.serial.clone()) else {
                return Ok(serials);
            };
            state.last_serial = Some(last.clone());
            let mut outgoing = ProtocolMessage {
                id: publication.id,
                connection_id: publication.connection_id.map(str::to_owned),
                timestamp: Some(now),
                channel_serial: Some(last),
                messages: Some(fresh),
                ..ProtocolMessage::new(Action::Message)
            };
            fan_out(&state.subscribers, &mut outgoing, publication.connection_id)?;
            Ok(serials)
        })
    }

    pub fn occupancy(&self, channel: &str) -> Occupancy {
        let Some(entry) = self.channels.get(channel).map(|e| e.clone()) else {
            return Occupancy::default();
        };
        let state = entry.lock();
        let count = |mode: u64| {
            state
                .subscribers
                .iter()
                .filter(|s| s.modes & mode != 0)
                .count()
        };
        Occupancy {
            connections: state.subscribers.len(),
            publishers: count(flags::MODE_PUBLISH),
            subscribers: count(flags::MODE_SUBSCRIBE),
            presence_connections: count(flags::MODE_PRESENCE),
            presence_members: 0,
            presence_subscribers: count(flags::MODE_PRESENCE_SUBSCRIBE),
        }
    }

    /// Drops channels with no subscribers and no live idempotency ids; call periodically.
    pub fn sweep(&self, now_ms: u64) {
        self.channels.retain(|_, channel| {
            let mut state = channel.lock();
            state.recent_ids.forget_before(now_ms);
            let idle = state.subscribers.is_empty() && state.recent_ids.is_empty();
            if idle {
                state.removed = true;
            }
            !idle
        });
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
}

/// Encodes once per (format, channel name as subscribed) and queues the shared bytes.
fn fan_out(
    subscribers: &[Subscriber],
    outgoing: &mut ProtocolMessage,
    publisher: Option<&str>,
) -> Result<(), ErrorInfo> {
    let mut frames: Vec<(Arc<str>, Format, Frame)> = Vec::with_capacity(2);
    for subscriber in subscribers {
        if subscriber.modes & flags::MODE_SUBSCRIBE == 0
            || (!subscriber.echo && Some(&*subscriber.connection_id) == publisher)
        {
            continue;
        }
        let format = subscriber.outbox.format;
        let cached = frames
            .iter()
            .find(|(name, f, _)| *f == format && **name == *subscriber.channel_name);
        let frame = match cached {
            Some((_, _, frame)) => frame.clone(),
            None => {
                outgoing.channel = Some(subscriber.channel_name.to_string());
                let frame = Frame::encode(outgoing, format).map_err(|error| {
                    ErrorCode::InternalChannel.info(format!("could not encode message: {error}"))
                })?;
                frames.push((subscriber.channel_name.clone(), format, frame.clone()));
                frame
            }
        };
        subscriber.outbox.push(frame);
    }
    Ok(())
}

/// Message ids seen recently on one channel, oldest first.
#[derive(Default)]
struct RecentIds {
    expiry: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl RecentIds {
    /// False if the id is already known (a duplicate).
    fn insert(&mut self, id: &str, forget_at: u64) -> bool {
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

    fn forget_before(&mut self, now_ms: u64) {
        while let Some((forget_at, _)) = self.order.front() {
            if *forget_at > now_ms {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.expiry.remove(&id);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests;
