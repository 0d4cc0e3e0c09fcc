//! The hub: channel -> local subscribers, each channel's log and presence set, and the publish
//! path.
//!
//! A publish takes the channel's lock once, briefly and never across `.await`: it drops
//! duplicates by message id, assigns serials, appends to the log, encodes the outgoing frame once
//! per (wire format, name the subscriber used), and `try_send`s the same buffer to every
//! subscriber. Doing all of it under that lock is what makes delivery order equal serial order,
//! and what lets an attach replay history and switch to live with no gap and no duplicate.

pub(crate) mod log;
mod presence;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dashmap::DashMap;
use protocol::message::flags;
use protocol::{Action, ErrorCode, ErrorInfo, Format, Message, PresenceMessage, ProtocolMessage};
use rand::distributions::{Alphanumeric, DistString};

use crate::connection::{Delivery, Outbox};
use crate::frame::Frame;
use crate::pulse::Pulse;

use log::MessageLog;
pub use log::{HistoryQuery, Retention};
use presence::PresenceSet;

/// A hub-internal subscriber bit (never on the wire, outside `flags::ALL_MODES`): the
/// subscriber attached with `occupancy=metrics` and gets `[meta]occupancy` events.
pub const OCCUPANCY_EVENTS: u64 = 1 << 48;

/// How long a client-supplied message id suppresses a repeat (Ably's idempotency window).
pub const IDEMPOTENCY_WINDOW_MS: u64 = 2 * 60 * 1000;
/// Ids remembered per channel at most; beyond it the oldest are forgotten early, so a flood of
/// unique ids costs bounded memory.
const MAX_REMEMBERED_IDS: usize = 20_000;

/// What the hub keeps and allows per channel.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// History kept per channel unless a namespace says otherwise.
    pub retention: Retention,
    /// Per-namespace retention (`user` for `user:*` channels), e.g. payment events kept longer.
    pub namespace_retention: Vec<(String, Retention)>,
    /// Most messages a `rewind` may replay (Ably caps at 100).
    pub max_rewind: usize,
    /// Presence members per channel (91003 beyond). Ably's 200 is too low for a live stream.
    pub max_presence_members: usize,
    /// Members per SYNC page.
    pub sync_page_members: usize,
    /// Presence events on a channel go out at once unless the channel broadcast within this
    /// window; then they wait for the next flush, so a join storm costs one frame per
    /// subscriber per window instead of one per join.
    pub presence_batch_window: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            // Covers the 2-minute resume window with room to spare.
            retention: Retention {
                max_messages: 500,
                max_age: Duration::from_secs(10 * 60),
            },
            namespace_retention: Vec::new(),
            max_rewind: 100,
            max_presence_members: 20_000,
            sync_page_members: 100,
            presence_batch_window: Duration::from_millis(50),
        }
    }
}

pub struct Hub {
    channels: DashMap<String, Arc<Channel>>,
    config: HubConfig,
    /// The last channel epoch handed out, so no two channel incarnations share one.
    last_epoch_ms: AtomicU64,
    /// Channels with presence events waiting for the next flush.
    presence_dirty: Mutex<Vec<String>>,
    /// Channels whose occupancy changed since the last occupancy flush.
    occupancy_dirty: Mutex<HashSet<String>>,
    /// Swept channels' log floors (and when they were swept), so a channel made again still
    /// knows that nothing after that floor was lost: a client away while its quiet channel was
    /// swept can still resume it.
    tombstones: DashMap<String, (String, u64)>,
    /// Told about local occupancy transitions (webhooks).
    occupancy_hook: std::sync::OnceLock<OccupancyHook>,
    pulse: Pulse,
}

/// See `Hub::on_occupancy_transition`.
pub(crate) type OccupancyHook = Box<dyn Fn(&str, bool, u64) + Send + Sync>;

/// Replayed messages per MESSAGE frame: a full log (500 by default) is a handful of frames.
const REPLAY_MESSAGES_PER_FRAME: usize = 50;

/// How long a swept channel's floor is remembered; longer than any connection stays resumable.
const TOMBSTONE_TTL_MS: u64 = 10 * 60 * 1000;

/// One local subscriber (an attached connection) of a channel.
pub struct Subscriber {
    pub connection_id: Arc<str>,
    /// The name the client attached with (qualifier included): deliveries must carry it.
    pub channel_name: Arc<str>,
    /// Granted mode flags: `MODE_SUBSCRIBE` holders get messages, `MODE_PRESENCE_SUBSCRIBE`
    /// holders presence events.
    pub modes: u64,
    /// False when the connection asked not to hear its own publishes.
    pub echo: bool,
    pub outbox: Arc<Outbox>,
}

/// A publish, stamped and checked by the caller (ids, clientId, connectionId, timestamp).
pub struct Publication<'a> {
    pub channel: &'a str,
    pub messages: Vec<Message>,
    /// Per message: whether its id is an idempotency key (client-chosen, or the
    /// `connectionId:msgSerial:index` a resent realtime publish repeats).
    pub client_ids: Vec<bool>,
    /// The publishing connection, for `echo=false` and the frame's `connectionId`.
    pub connection_id: Option<&'a str>,
    /// The ProtocolMessage id (`connectionId:msgSerial`) for realtime publishes.
    pub id: Option<String>,
    pub timestamp: u64,
}

/// Serial per message, in order; `None` for a duplicate that was not delivered again.
pub type Serials = Vec<Option<String>>;

/// How an attach wants to start.
#[derive(Debug, Clone, Default)]
pub struct AttachRequest {
    /// The last serial the client saw: resume from there if the log covers it.
    pub channel_serial: Option<String>,
    /// Messages to replay on a fresh attach.
    pub rewind: Option<Rewind>,
    /// False after a connection resume failed: the client must learn continuity was lost.
    pub resume_allowed: bool,
    /// The connection's presence members left while it was away: replay what it missed, but
    /// not as RESUMED, so the client enters again (ably-js re-enters on a non-resumed attach).
    pub presence_lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewind {
    Messages(usize),
    Duration(Duration),
}

/// What an attach got, for its ATTACHED.
#[derive(Debug, Clone, Default)]
pub struct AttachOutcome {
    /// HAS_PRESENCE, HAS_BACKLOG and RESUMED bits to add to the granted modes.
    pub flags: u64,
    /// The channel's current position.
    pub channel_serial: String,
    /// Why continuity could not be kept, when a resume was asked for and refused.
    pub error: Option<ErrorInfo>,
}

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
    log: MessageLog,
    presence: PresenceSet,
    /// When presence events last went out (ms).
    presence_sent_at: u64,
    /// Set when the sweeper dropped this channel from the map; a late holder must look it up again.
    removed: bool,
}

impl ChannelState {
    fn position(&self) -> String {
        self.last_serial
            .clone()
            .unwrap_or_else(|| self.log.floor().to_owned())
    }
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
        Hub::new(HubConfig::default())
    }
}

impl Hub {
    pub fn new(config: HubConfig) -> Hub {
        Hub {
            channels: DashMap::new(),
            config,
            last_epoch_ms: AtomicU64::new(0),
            presence_dirty: Mutex::new(Vec::new()),
            occupancy_dirty: Mutex::new(HashSet::new()),
            tombstones: DashMap::new(),
            occupancy_hook: std::sync::OnceLock::new(),
            pulse: Pulse::default(),
        }
    }

    /// The dashboard's live numbers for this hub's gateway.
    pub fn pulse(&self) -> &Pulse {
        &self.pulse
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    pub(crate) fn retention_for(&self, channel: &str) -> Retention {
        let name = channel
            .split_once(crate::auth::APP_SEPARATOR)
            .map_or(channel, |(_, name)| name);
        let namespace = name.split(':').next().unwrap_or(name);
        self.config
            .namespace_retention
            .iter()
            .find(|(name, _)| name == namespace)
            .map_or(self.config.retention, |(_, retention)| *retention)
    }

    fn new_channel(&self, channel: &str) -> Arc<Channel> {
        let now = protocol::now_ms();
        let previous = self
            .last_epoch_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        let fresh_epoch_ms = now.max(previous + 1);
        // A swept channel that comes back within its tombstone's life goes on where it left
        // off (same epoch, the next serial), so a client resuming it sees no new incarnation.
        let (epoch_ms, next_serial, floor) =
            match self.tombstones.remove(channel).map(|(_, (floor, _))| floor) {
                Some(floor) => match log::parts(&floor) {
                    Some((epoch_ms, n)) => (epoch_ms, n, floor),
                    None => (fresh_epoch_ms, 0, floor),
                },
                None => (fresh_epoch_ms, 0, log::first_serial(fresh_epoch_ms)),
            };
        Arc::new(Channel {
            state: Mutex::new(ChannelState {
                epoch_ms,
                subscribers: Vec::new(),
                next_serial,
                last_serial: None,
                recent_ids: RecentIds::default(),
                log: MessageLog::new(floor, self.retention_for(channel)),
                presence: PresenceSet::default(),
                presence_sent_at: 0,
                removed: false,
            }),
        })
    }

    fn existing(&self, channel: &str) -> Option<Arc<Channel>> {
        self.channels.get(channel).map(|e| e.clone())
    }

    /// Runs `f` on the live state of `channel`, creating it if needed.
    fn with_channel<R>(&self, channel: &str, f: impl FnOnce(&mut ChannelState) -> R) -> R {
        let mut f = Some(f);
        loop {
            let entry = self.existing(channel).unwrap_or_else(|| {
                self.channels
                    .entry(channel.to_owned())
                    .or_insert_with(|| self.new_channel(channel))
                    .clone()
            });
            let mut state = entry.lock();
            if !state.removed {
                let f = f.take().expect("runs once");
                return f(&mut state);
            }
        }
    }

    /// Adds (or updates) a subscriber. In one critical section: the ATTACHED, then any replay
    /// (resume from `channel_serial`, or rewind), then the presence SYNC, then registration, so
    /// nothing live can overtake or duplicate them.
    pub fn attach(
        &self,
        channel: &str,
        subscriber: Subscriber,
        request: &AttachRequest,
        attached: impl FnOnce(&AttachOutcome) -> ProtocolMessage,
    ) {
        let now = protocol::now_ms();
        self.with_channel(channel, |state| {
            state.log.expire(now);
            let mut outcome = AttachOutcome {
                channel_serial: state.position(),
                ..Default::default()
            };
            let replay = match (&request.channel_serial, request.rewind) {
                (Some(serial), _) => {
                    let covered = request
                        .resume_allowed
                        .then(|| state.log.after(serial, state.last_serial.as_deref()))
                        .flatten();
                    match covered {
                        Some(missed) => {
                            if !request.presence_lost {
                                outcome.flags |= flags::RESUMED;
                            }
                            // ATTACHED says where the replay starts, not where it ends: a client
                            // whose transport dies before reading the replay resumes from here
                            // again instead of skipping what it never saw.
                            outcome.channel_serial = serial.clone();
                            missed
                        }
                        None => {
                            outcome.error = Some(ErrorCode::ContinuityNotGuaranteed.info(
                                "could not resume from the given channelSerial; messages may have been missed",
                            ));
                            Vec::new()
                        }
                    }
                }
                (None, Some(Rewind::Messages(n))) => state.log.last_n(n.min(self.config.max_rewind)),
                (None, Some(Rewind::Duration(duration))) => {
                    let from = now.saturating_sub(duration.as_millis() as u64);
                    let mut since = state.log.since(from);
                    let excess = since.len().saturating_sub(self.config.max_rewind);
                    since.drain(..excess);
                    since
                }
                (None, None) => Vec::new(),
            };
            if request.rewind.is_some() && !replay.is_empty() {
                outcome.flags |= flags::HAS_BACKLOG;
            }
            let wants_presence = subscriber.modes & flags::MODE_PRESENCE_SUBSCRIBE != 0;
            if wants_presence && state.presence.has_members() {
                outcome.flags |= flags::HAS_PRESENCE;
            }
            subscriber.outbox.reply(&attached(&outcome));
            if subscriber.modes & flags::MODE_SUBSCRIBE != 0 {
                let wanted: Vec<Message> = replay
                    .iter()
                    .filter(|m| {
                        subscriber.echo
                            || m.connection_id.as_deref() != Some(&*subscriber.connection_id)
                    })
                    .map(|m| (**m).clone())
                    .collect();
                // Several messages per frame, so a long replay fits the bounded queue, and no
                // frame over the write buffer's share.
                for batch in wanted.chunks(REPLAY_MESSAGES_PER_FRAME) {
                    let mut replay = ProtocolMessage {
                        channel: Some(subscriber.channel_name.to_string()),
                        channel_serial: batch.last().and_then(|m| m.serial.clone()),
                        messages: Some(batch.to_vec()),
                        ..ProtocolMessage::new(Action::Message)
                    };
                    let format = subscriber.outbox.format;
                    match encode_split(&mut replay, format, MAX_DELIVERY_FRAME_BYTES) {
                        Ok(frames) => frames.into_iter().for_each(|frame| {
                            subscriber.outbox.push(frame);
                        }),
                        Err(error) => tracing::warn!(%error, "could not encode a replay"),
                    }
                }
            }
            if outcome.flags & flags::HAS_PRESENCE != 0 {
                self.send_sync(state, &subscriber);
            }
            let before = state.subscribers.len();
            state
                .subscribers
                .retain(|s| s.connection_id != subscriber.connection_id);
            state.subscribers.push(subscriber);
            if before == 0 {
                self.occupancy_transition(channel, true, now);
            }
        });
        self.occupancy_changed(channel);
    }

    /// The current members, in pages; the last page has an empty cursor.
    fn send_sync(&self, state: &ChannelState, subscriber: &Subscriber) {
        let sync_id = Alphanumeric.sample_string(&mut rand::thread_rng(), 8);
        let members: Vec<PresenceMessage> = state.presence.members().cloned().collect();
        let mut pages: Vec<&[PresenceMessage]> = members
            .chunks(self.config.sync_page_members.max(1))
            .collect();
        if pages.is_empty() {
            // Nobody present is an answer too: one empty, final page.
            pages.push(&[]);
        }
        for (index, page) in pages.iter().enumerate() {
            let cursor = if index + 1 == pages.len() {
                String::new()
            } else {
                (index + 1).to_string()
            };
            subscriber.outbox.reply(&ProtocolMessage {
                channel: Some(subscriber.channel_name.to_string()),
                channel_serial: Some(format!("{sync_id}:{cursor}")),
                presence: Some(page.to_vec()),
                ..ProtocolMessage::new(Action::Sync)
            });
        }
    }

    /// The serial of the newest message this node has on a channel, with that message's id
    /// when the log still holds it (the bus checks the store still has the same message there).
    pub fn last_serial(&self, channel: &str) -> Option<(String, Option<String>)> {
        let entry = self.existing(channel)?;
        let state = entry.lock();
        let serial = state.last_serial.clone()?;
        let id = state
            .log
            .newest()
            .filter(|m| m.serial.as_deref() == Some(serial.as_str()))
            .and_then(|m| m.id.clone());
        Some((serial, id))
    }

    /// Sends a subscriber the whole member set again (a client-requested SYNC).
    pub fn resync(&self, channel: &str, connection_id: &str) {
        if let Some(entry) = self.existing(channel) {
            let state = entry.lock();
            if let Some(subscriber) = state
                .subscribers
                .iter()
                .find(|s| &*s.connection_id == connection_id)
            {
                self.send_sync(&state, subscriber);
            }
        }
    }

    /// Changes a subscriber's granted modes (after a re-auth changed its capability).
    pub fn set_modes(&self, channel: &str, connection_id: &str, modes: u64) {
        if let Some(entry) = self.existing(channel) {
            for subscriber in entry.lock().subscribers.iter_mut() {
                if &*subscriber.connection_id == connection_id {
                    subscriber.modes = modes | (subscriber.modes & OCCUPANCY_EVENTS);
                }
            }
        }
    }

    pub fn detach(&self, channel: &str, connection_id: &str) {
        if let Some(entry) = self.existing(channel) {
            let mut state = entry.lock();
            let before = state.subscribers.len();
            state
                .subscribers
                .retain(|s| &*s.connection_id != connection_id);
            crate::shrink::vec(&mut state.subscribers);
            if before > 0 && state.subscribers.is_empty() {
                self.occupancy_transition(channel, false, protocol::now_ms());
            }
            drop(state);
            self.occupancy_changed(channel);
        }
    }

    /// Calls `hook` whenever a channel's local attachments go 0→1 (`true`) or 1→0, with the
    /// time (ms), under the channel's lock, so a channel's transitions are reported in order.
    /// The hook must not block.
    pub(crate) fn on_occupancy_transition(&self, hook: OccupancyHook) {
        let _ = self.occupancy_hook.set(hook);
    }

    fn occupancy_transition(&self, channel: &str, occupied: bool, at: u64) {
        if let Some(hook) = self.occupancy_hook.get() {
            hook(channel, occupied, at);
        }
    }

    fn occupancy_changed(&self, channel: &str) {
        let watched = self.existing(channel).is_some_and(|entry| {
            entry
                .lock()
                .subscribers
                .iter()
                .any(|s| s.modes & OCCUPANCY_EVENTS != 0)
        });
        if watched {
            self.occupancy_dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(channel.to_owned());
        }
    }

    /// Sends `[meta]occupancy` to the subscribers that asked, for channels whose occupancy
    /// changed; called once a second, so a stream of joins costs one event per second.
    pub fn flush_occupancy(&self) {
        let dirty = std::mem::take(
            &mut *self
                .occupancy_dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for channel in dirty {
            let metrics = self.occupancy(&channel);
            let Some(entry) = self.existing(&channel) else {
                continue;
            };
            let state = entry.lock();
            let mut outgoing = ProtocolMessage {
                timestamp: Some(protocol::now_ms()),
                messages: Some(vec![Message {
                    name: Some("[meta]occupancy".to_owned()),
                    data: Some(protocol::Data::Other(
                        serde_json::json!({ "metrics": metrics }),
                    )),
                    timestamp: Some(protocol::now_ms()),
                    ..Default::default()
                }]),
                ..ProtocolMessage::new(Action::Message)
            };
            if let Err(error) = fan_out(&state.subscribers, &mut outgoing, None, |subscriber| {
                subscriber.modes & OCCUPANCY_EVENTS != 0
            }) {
                tracing::warn!(%channel, message = %error.message, "occupancy event failed");
            }
        }
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
            for (mut message, client_id) in publication.messages.into_iter().zip(client_ids) {
                if let (true, Some(id)) = (*client_id, &message.id) {
                    if !state.recent_ids.insert(id, now + IDEMPOTENCY_WINDOW_MS) {
                        serials.push(None);
                        continue;
                    }
                }
                state.next_serial += 1;
                let serial = log::serial(state.epoch_ms, state.next_serial);
                message.serial = Some(serial.clone());
                serials.push(Some(serial));
                fresh.push(message);
            }
            log_and_fan_out(
                state,
                &self.pulse,
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
            // A serial at or below what we have is a repeat (a catch-up overlapping live).
            let newest = state.last_serial.clone();
            let fresh: Vec<Message> = messages
                .into_iter()
                .filter(|m| match (&m.serial, &newest) {
                    (Some(serial), Some(newest)) => serial > newest,
                    _ => true,
                })
                .collect();
            let follows_on = match (&newest, fresh.first().and_then(|m| m.serial.as_deref())) {
                (Some(newest), Some(first)) => log::next(newest).as_deref() == Some(first),
                _ => true,
            };
            if !follows_on {
                return Ok(false);
            }
            log_and_fan_out(state, &self.pulse, fresh, connection_id, id, now)?;
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
                .filter(|m| known.is_none() || m.serial > known)
                .collect();
            let continues = known.as_deref().is_some_and(|known| {
                floor.as_str() <= known
                    || (old_epoch_complete && log::starts_a_later_epoch(&floor, known))
            });
            if continues {
                for message in &fresh {
                    state.log.push(Arc::new(message.clone()));
                }
                state.log.expire(now);
                self.deliver_caught_up(state, fresh, now);
            } else {
                let (before, after): (Vec<Message>, Vec<Message>) = fresh
                    .into_iter()
                    .partition(|m| m.serial.as_deref() <= Some(floor.as_str()));
                self.deliver_caught_up(state, before, now);
                if known.is_some() {
                    tell_continuity_lost(state, &floor);
                }
                let mut log = MessageLog::new(floor.clone(), state.log.retention());
                for message in &after {
                    log.push(Arc::new(message.clone()));
                }
                log.expire(now);
                state.log = log;
                self.deliver_caught_up(state, after, now);
            }
            if state.last_serial.as_deref() < Some(floor.as_str()) {
                state.last_serial = Some(floor);
            }
        })
    }

    /// Sends messages a catch-up found to every subscriber, several per frame (a long gap fits
    /// the bounded queues), and moves the channel's position past them. They are logged by the
    /// caller.
    fn deliver_caught_up(&self, state: &mut ChannelState, messages: Vec<Message>, now: u64) {
        for batch in messages.chunks(REPLAY_MESSAGES_PER_FRAME) {
            let Some(last) = batch.last().and_then(|m| m.serial.clone()) else {
                continue;
            };
            state.last_serial = Some(last.clone());
            let mut outgoing = ProtocolMessage {
                timestamp: Some(now),
                channel_serial: Some(last),
                messages: Some(batch.to_vec()),
                ..ProtocolMessage::new(Action::Message)
            };
            match fan_out(&state.subscribers, &mut outgoing, None, |s| {
                s.modes & flags::MODE_SUBSCRIBE != 0
            }) {
                Ok(delivered) => self.pulse.messages_out(delivered),
                Err(error) => {
                    tracing::warn!(message = %error.message, "catch-up delivery failed");
                }
            }
        }
    }

    /// Applies stamped presence events (ENTER/UPDATE/LEAVE with clientId, connectionId, id and
    /// timestamp set); they go out at the next `flush_presence`.
    pub fn presence(&self, channel: &str, events: Vec<PresenceMessage>) -> Result<(), ErrorInfo> {
        self.check_presence(channel, &events)?;
        self.apply_presence(channel, events);
        Ok(())
    }

    /// Whether a client's presence events may be applied: actions a client may send, and the
    /// member cap.
    pub fn check_presence(
        &self,
        channel: &str,
        events: &[PresenceMessage],
    ) -> Result<(), ErrorInfo> {
        if let Some(bad) = events
            .iter()
            .find(|e| !presence::is_valid_client_action(e.action))
        {
            return Err(ErrorCode::BadRequest.info(format!(
                "presence action {} cannot be sent by a client",
                bad.action
            )));
        }
        let max_members = self.config.max_presence_members;
        let Some(entry) = self.existing(channel) else {
            return Ok(());
        };
        let state = entry.lock();
        let entering = events
            .iter()
            .filter(|e| {
                matches!(e.action, presence::ENTER | presence::UPDATE)
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
        let became_dirty = self.with_channel(channel, |state| {
            let was_clean = state.presence.pending.is_empty();
            for event in events {
                state.presence.apply(event);
            }
            self.send_presence_if_quiet(state) && was_clean
        });
        if became_dirty {
            self.mark_presence_dirty(channel);
        }
        self.occupancy_changed(channel);
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

    /// Whether the hub has state for `channel` (it has not been swept as idle).
    pub fn is_held(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
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
                .map(|m| PresenceMessage {
                    action: presence::ENTER,
                    ..m
                })
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
                        None => presence::ENTER,
                        Some(held) if held.id != member.id => presence::UPDATE,
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
        self.presence_dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(channel.to_owned());
    }

    /// Sends every channel's waiting presence events: one PRESENCE frame per channel, encoded
    /// once per format, to every presence subscriber (the members' own connections included).
    pub fn flush_presence(&self) {
        let dirty = std::mem::take(
            &mut *self
                .presence_dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for channel in dirty {
            let Some(entry) = self.existing(&channel) else {
                continue;
            };
            send_presence(&mut entry.lock(), protocol::now_ms());
        }
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

    /// Messages for REST history.
    pub fn history(&self, channel: &str, query: &HistoryQuery) -> Vec<Arc<Message>> {
        let Some(entry) = self.existing(channel) else {
            return Vec::new();
        };
        let mut state = entry.lock();
        state.log.expire(protocol::now_ms());
        state.log.query(query)
    }

    pub fn occupancy(&self, channel: &str) -> Occupancy {
        let Some(entry) = self.existing(channel) else {
            return Occupancy::default();
        };
        let state = entry.lock();
        occupancy_of(&state)
    }

    /// How many channels `keep` accepts, and the busiest of them (most connections, then most
    /// presence members, then by name), at most `limit`. Locks each channel briefly in turn;
    /// for a dashboard, not for the publish path.
    pub fn busiest_channels(
        &self,
        keep: impl Fn(&str) -> bool,
        limit: usize,
    ) -> (usize, Vec<(String, Occupancy)>) {
        let channels: Vec<(String, Arc<Channel>)> = self
            .channels
            .iter()
            .filter(|entry| keep(entry.key()))
            .map(|entry| (entry.key().clone(), entry.value().clone()))
            .collect();
        let total = channels.len();
        let mut busiest: Vec<(String, Occupancy)> = channels
            .into_iter()
            .map(|(name, channel)| {
                let occupancy = occupancy_of(&channel.lock());
                (name, occupancy)
            })
            .collect();
        busiest.sort_by(|(a_name, a), (b_name, b)| {
            (b.connections, b.presence_members, a_name).cmp(&(
                a.connections,
                a.presence_members,
                b_name,
            ))
        });
        busiest.truncate(limit);
        (total, busiest)
    }

    /// Drops channels with nothing left: no subscribers, members, history or live idempotency
    /// ids. Call periodically.
    pub fn sweep(&self, now_ms: u64) {
        self.tombstones
            .retain(|_, (_, swept_at)| *swept_at + TOMBSTONE_TTL_MS > now_ms);
        self.channels.retain(|name, channel| {
            let mut state = channel.lock();
            state.recent_ids.forget_before(now_ms);
            state.log.expire(now_ms);
            let max_age = state_max_age(&state);
            state.presence.expire_log(now_ms.saturating_sub(max_age));
            let idle = state.subscribers.is_empty()
                && state.recent_ids.is_empty()
                && state.log.is_empty()
                && state.presence.is_idle();
            if idle {
                state.removed = true;
                self.tombstones
                    .insert(name.clone(), (state.log.floor().to_owned(), now_ms));
            }
            !idle
        });
        crate::shrink::dash_map(&self.channels);
        crate::shrink::dash_map(&self.tombstones);
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
}

/// The tail of every publish: log the fresh messages, move the channel's position, and send
/// one MESSAGE (encoded once per format) to every subscriber that wants it.
fn log_and_fan_out(
    state: &mut ChannelState,
    pulse: &Pulse,
    fresh: Vec<Message>,
    publisher: Option<&str>,
    id: Option<String>,
    now: u64,
) -> Result<(), ErrorInfo> {
    let Some(last) = fresh.last().and_then(|m| m.serial.clone()) else {
        return Ok(());
    };
    state.last_serial = Some(last.clone());
    for message in &fresh {
        state.log.push(Arc::new(message.clone()));
    }
    if let Some(published) = fresh.first().and_then(|m| m.timestamp) {
        ::metrics::histogram!("realtime_publish_delivery_seconds")
            .record(now.saturating_sub(published) as f64 / 1000.0);
        pulse.latency_ms(now.saturating_sub(published));
    }
    let mut outgoing = ProtocolMessage {
        id,
        connection_id: publisher.map(str::to_owned),
        timestamp: Some(now),
        channel_serial: Some(last),
        messages: Some(fresh),
        ..ProtocolMessage::new(Action::Message)
    };
    let delivered = fan_out(&state.subscribers, &mut outgoing, publisher, |subscriber| {
        subscriber.modes & flags::MODE_SUBSCRIBE != 0
            && (subscriber.echo || Some(&*subscriber.connection_id) != publisher)
    })?;
    pulse.messages_out(delivered);
    Ok(())
}

/// A LEAVE the server makes for `member` (its connection went away).
pub(crate) fn server_leave(member: PresenceMessage, now: u64) -> PresenceMessage {
    PresenceMessage {
        action: presence::LEAVE,
        id: Some(format!(
            "leave-{}:0:0",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 10)
        )),
        timestamp: Some(now),
        ..member
    }
}

/// Every subscriber hears that messages may have been missed: an ATTACHED without RESUMED,
/// carrying 90003, which ably-js surfaces as an `update` event with `resumed: false`.
fn tell_continuity_lost(state: &ChannelState, position: &str) {
    for subscriber in &state.subscribers {
        subscriber.outbox.reply(&ProtocolMessage {
            channel: Some(subscriber.channel_name.to_string()),
            flags: Some(subscriber.modes & flags::ALL_MODES),
            channel_serial: Some(position.to_owned()),
            error: Some(ErrorCode::ContinuityNotGuaranteed.info(
                "messages on this channel may have been missed (the message store lost them)",
            )),
            ..ProtocolMessage::new(Action::Attached)
        });
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
        subscriber.modes & flags::MODE_PRESENCE_SUBSCRIBE != 0
    }) {
        tracing::warn!(message = %error.message, "presence broadcast failed");
    }
}

fn occupancy_of(state: &ChannelState) -> Occupancy {
    let count = |mode: u64| {
        state
            .subscribers
            .iter()
            .filter(|s| s.modes & mode != 0)
            .count()
    };
    let presence_connections: HashSet<&str> = state
        .presence
        .members()
        .filter_map(|m| m.connection_id.as_deref())
        .collect();
    Occupancy {
        connections: state.subscribers.len(),
        publishers: count(flags::MODE_PUBLISH),
        subscribers: count(flags::MODE_SUBSCRIBE),
        presence_connections: presence_connections.len(),
        presence_members: state.presence.len(),
        presence_subscribers: count(flags::MODE_PRESENCE_SUBSCRIBE),
    }
}

fn state_max_age(state: &ChannelState) -> u64 {
    state.log_retention().max_age.as_millis() as u64
}

impl ChannelState {
    fn log_retention(&self) -> Retention {
        self.log.retention()
    }
}

/// Channels with at least this many subscribers deliver in bulk: their writers may gather a
/// few milliseconds of frames into one write (see `Limits::min_flush_interval`), which is where
/// one syscall per subscriber per message costs most. Smaller channels are written at once.
const BULK_FAN_OUT: usize = 64;

/// Encodes once per (format, channel name as subscribed) and queues the shared bytes for every
/// subscriber `wanted` accepts; `publisher`'s own copy (an echo) is queued as one of its replies
/// (see `Outbox`). Returns the deliveries (messages or presence events times subscribers).
fn fan_out(
    subscribers: &[Subscriber],
    outgoing: &mut ProtocolMessage,
    publisher: Option<&str>,
    wanted: impl Fn(&Subscriber) -> bool,
) -> Result<u64, ErrorInfo> {
    // (channel name, format, frames, channel tag)
    let mut frames: Vec<(Arc<str>, Format, Vec<Frame>, u64)> = Vec::with_capacity(2);
    // (frames, bytes) per format, counted once per fan-out rather than per subscriber.
    let mut sent = [(0u64, 0u64); 2];
    let bulk = subscribers.len() >= BULK_FAN_OUT;
    // Only MESSAGE frames that move the channel's position may be merged for a lagging
    // subscriber (`connection::coalesce`); `[meta]occupancy` events do not.
    let mergeable = outgoing.action == Action::Message as u8 && outgoing.channel_serial.is_some();
    let at = tokio::time::Instant::now();
    for subscriber in subscribers.iter().filter(|s| wanted(s)) {
        let format = subscriber.outbox.format;
        let index = match frames
            .iter()
            .position(|(name, f, _, _)| *f == format && **name == *subscriber.channel_name)
        {
            Some(index) => index,
            None => {
                outgoing.channel = Some(subscriber.channel_name.to_string());
                let encoded =
                    encode_split(outgoing, format, MAX_DELIVERY_FRAME_BYTES).map_err(|error| {
                        ErrorCode::InternalChannel
                            .info(format!("could not encode message: {error}"))
                    })?;
                let tag = if mergeable {
                    crate::connection::channel_tag(&subscriber.channel_name)
                } else {
                    0
                };
                frames.push((subscriber.channel_name.clone(), format, encoded, tag));
                frames.len() - 1
            }
        };
        let slot = &mut sent[usize::from(format == Format::Msgpack)];
        slot.0 += 1;
        let (_, _, encoded, channel_tag) = &frames[index];
        let delivery = Delivery {
            at,
            bulk,
            own: publisher == Some(&*subscriber.connection_id),
            channel_tag: *channel_tag,
        };
        for frame in encoded {
            slot.1 += frame.len() as u64;
            subscriber.outbox.deliver(frame.clone(), delivery);
        }
    }
    let kind = if outgoing.action == Action::Presence as u8 {
        "presence"
    } else {
        "message"
    };
    let namespace = crate::telemetry::namespace(outgoing.channel.as_deref().unwrap_or_default());
    let per_frame = outgoing
        .messages
        .as_ref()
        .map(Vec::len)
        .or(outgoing.presence.as_ref().map(Vec::len))
        .unwrap_or(1) as u64;
    for (format, (count, bytes)) in ["json", "msgpack"].into_iter().zip(sent) {
        if count == 0 {
            continue;
        }
        ::metrics::counter!("realtime_bytes_total", "direction" => "out", "format" => format)
            .increment(bytes);
        ::metrics::counter!("realtime_deliveries_total", "format" => format, "kind" => kind, "namespace" => namespace)
            .increment(count * per_frame);
    }
    Ok(sent.iter().map(|(count, _)| count * per_frame).sum())
}

/// Largest MESSAGE frame a delivery is encoded into, unless one message alone is bigger: a
/// frame has to fit the socket's write buffer (`Limits::ws_max_write_buffer_bytes`, 1 MiB)
/// or the subscriber is dropped, and 1,000 small messages carry ~200 KB of ids and serials.
pub const MAX_DELIVERY_FRAME_BYTES: usize = 256 * 1024;

/// Encodes a MESSAGE (or PRESENCE) for one format as one frame or, when that is over `max`
/// bytes, as several frames of consecutive messages (halved until each fits or holds one
/// message), each MESSAGE frame with the `channelSerial` of its last message, so a client that
/// resumes after any of them resumes right. Messages without an id get the one ably-js would
/// give them from the whole frame (`<id>:<index>`), so splitting changes no message's id.
/// Frames with one message go as they are.
pub fn encode_split(
    outgoing: &mut ProtocolMessage,
    format: Format,
    max: usize,
) -> Result<Vec<Frame>, protocol::codec::EncodeError> {
    let whole = Frame::encode(outgoing, format)?;
    if whole.len() <= max {
        return Ok(vec![whole]);
    }
    let mut frames = Vec::new();
    let serial = outgoing.channel_serial.clone();
    let split = if outgoing.messages.as_ref().is_some_and(|m| m.len() > 1) {
        let mut messages = outgoing.messages.take().unwrap_or_default();
        if let Some(id) = &outgoing.id {
            for (index, message) in messages.iter_mut().enumerate() {
                message.id.get_or_insert_with(|| format!("{id}:{index}"));
            }
        }
        let split = split_into(outgoing, &messages, format, max, &mut frames);
        outgoing.messages = Some(messages);
        split
    } else if outgoing.presence.as_ref().is_some_and(|p| p.len() > 1) {
        let events = outgoing.presence.take().unwrap_or_default();
        let split = split_into(outgoing, &events, format, max, &mut frames);
        outgoing.presence = Some(events);
        split
    } else {
        return Ok(vec![whole]);
    };
    outgoing.channel_serial = serial;
    split?;
    Ok(frames)
}

/// What a frame carries a list of: messages or presence events.
trait Item: Clone {
    fn put(shell: &mut ProtocolMessage, items: Vec<Self>);
    fn serial(&self) -> Option<&String>;
}

impl Item for Message {
    fn put(shell: &mut ProtocolMessage, items: Vec<Self>) {
        shell.messages = Some(items);
    }
    fn serial(&self) -> Option<&String> {
        self.serial.as_ref()
    }
}

impl Item for PresenceMessage {
    fn put(shell: &mut ProtocolMessage, items: Vec<Self>) {
        shell.presence = Some(items);
    }
    fn serial(&self) -> Option<&String> {
        None
    }
}

/// Halves `items` (known not to fit one frame) until each part fits, in order.
fn split_into<T: Item>(
    shell: &mut ProtocolMessage,
    items: &[T],
    format: Format,
    max: usize,
    frames: &mut Vec<Frame>,
) -> Result<(), protocol::codec::EncodeError> {
    let (first, second) = items.split_at(items.len() / 2);
    for half in [first, second] {
        T::put(shell, half.to_vec());
        if let Some(serial) = half.last().and_then(T::serial) {
            shell.channel_serial = Some(serial.clone());
        }
        let frame = Frame::encode(shell, format)?;
        if frame.len() <= max || half.len() <= 1 {
            frames.push(frame);
        } else {
            drop(frame);
            split_into(shell, half, format, max, frames)?;
        }
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
        crate::shrink::hash_map(&mut self.expiry);
        crate::shrink::vec_deque(&mut self.order);
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests;
