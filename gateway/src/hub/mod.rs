//! The hub: channel -> local subscribers, each channel's log and presence set, and the publish
//! path. This file holds the channel map (epochs, tombstones, `with_channel`, sweep); the rest
//! is one idea per file: `attach`, `publish`, `ephemeral` (delivered live, never logged),
//! `fan_out`, `presence`, `subscribers` (with the counts occupancy reports), `occupancy`, `log`,
//! `rules` (what a channel's namespace turns on), and the public `types`.
//!
//! A publish takes the channel's lock once, briefly and never across `.await`: it drops
//! duplicates by message id, assigns serials, appends to the log, encodes the outgoing frame once
//! per (wire format, name the subscriber used), and `try_send`s the same buffer to every
//! subscriber. Doing all of it under that lock is what makes delivery order equal serial order,
//! and what lets an attach replay history and switch to live with no gap and no duplicate.

mod annotations;
mod attach;
mod batch;
mod ephemeral;
mod fan_out;
pub(crate) mod log;
mod occupancy;
mod presence;
mod publish;
mod rules;
mod subscribers;
mod types;
pub(crate) mod versions;
mod views;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use protocol::Message;

use crate::config::{Batching, ChannelRules, HubConfig};
use crate::pulse::Pulse;

pub(crate) use annotations::Kind as AnnotationKind;
pub use annotations::{Annotating, Contribution, MAX_ANNOTATIONS_PER_MESSAGE};
pub use ephemeral::{is_ephemeral, is_ephemeral_publish, mark_ephemeral};
pub use fan_out::{encode_split, MAX_DELIVERY_FRAME_BYTES};
pub use log::HistoryQuery;
use log::MessageLog;
pub(crate) use occupancy::OccupancyHook;
pub(crate) use presence::server_leave;
use presence::PresenceSet;
use publish::RecentIds;
pub use publish::IDEMPOTENCY_WINDOW_MS;
use subscribers::Subscribers;
pub use types::{
    AttachOutcome, AttachRequest, DeltaCursor, Occupancy, Publication, Rewind, Serials, Subscriber,
    View,
};

pub struct Hub {
    channels: DashMap<String, Arc<Channel>>,
    config: HubConfig,
    /// The last channel epoch handed out, so no two channel incarnations share one.
    last_epoch_ms: AtomicU64,
    /// Channels with presence events waiting for the next flush.
    presence_dirty: Mutex<Vec<String>>,
    /// Channels with a batch of messages waiting (`batch.rs`).
    batch_dirty: Mutex<Vec<String>>,
    /// Channels with summary events held back by the throttle.
    summary_dirty: Mutex<Vec<String>>,
    /// Channels whose occupancy changed since the last occupancy flush.
    occupancy_dirty: Mutex<HashSet<String>>,
    /// Swept channels' log floors (and when they were swept), so a channel made again still
    /// knows that nothing after that floor was lost: a client away while its quiet channel was
    /// swept can still resume it.
    tombstones: DashMap<String, (String, u64)>,
    /// Told about local occupancy transitions (webhooks).
    occupancy_hook: std::sync::OnceLock<OccupancyHook>,
    /// Told the summaries annotations stored through this node made (webhooks).
    summary_hook: std::sync::OnceLock<annotations::SummaryHook>,
    /// Sandbox app scope -> its namespace rules, consulted before the configured ones.
    app_rules: DashMap<String, Vec<(String, ChannelRules)>>,
    pulse: Pulse,
}

/// How long a swept channel's floor is remembered; longer than any connection stays resumable.
const TOMBSTONE_TTL_MS: u64 = 10 * 60 * 1000;

struct Channel {
    state: Mutex<ChannelState>,
}

struct ChannelState {
    /// When this incarnation of the channel began (ms, unique per hub): the serial prefix, so
    /// serials stay unique and ordered after the channel is swept and made again, or the
    /// process restarts.
    epoch_ms: u64,
    subscribers: Subscribers,
    /// Serials within the epoch are consecutive.
    next_serial: u64,
    last_serial: Option<String>,
    recent_ids: RecentIds,
    log: MessageLog,
    /// The namespace's batching rule, and what waits for the batch to be due.
    batching: Option<Batching>,
    pending: Option<batch::Pending>,
    presence: PresenceSet,
    /// Its messages' annotations and summaries.
    annotations: annotations::Annotated,
    /// When presence events last went out (ms).
    presence_sent_at: u64,
    /// Queued in `Hub::occupancy_dirty` for the next occupancy flush.
    occupancy_dirty: bool,
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

/// A hub-wide list of channels waiting for a flush; a panic elsewhere leaves it usable.
fn lock_list<T>(list: &Mutex<T>) -> MutexGuard<'_, T> {
    list.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
            batch_dirty: Mutex::new(Vec::new()),
            summary_dirty: Mutex::new(Vec::new()),
            occupancy_dirty: Mutex::new(HashSet::new()),
            tombstones: DashMap::new(),
            occupancy_hook: std::sync::OnceLock::new(),
            summary_hook: std::sync::OnceLock::new(),
            app_rules: DashMap::new(),
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
        let rules = self.rules_for(channel);
        Arc::new(Channel {
            state: Mutex::new(ChannelState {
                epoch_ms,
                subscribers: Subscribers::default(),
                next_serial,
                last_serial: None,
                recent_ids: RecentIds::default(),
                log: MessageLog::new(floor, rules.retention),
                batching: rules.batching,
                pending: None,
                presence: PresenceSet::default(),
                annotations: annotations::Annotated::default(),
                presence_sent_at: 0,
                occupancy_dirty: false,
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

    /// Empties a list of channels waiting for a flush and runs `flush` on each one still held.
    fn flush_listed<L>(&self, list: &Mutex<L>, mut flush: impl FnMut(&str, &mut ChannelState))
    where
        L: Default + IntoIterator<Item = String>,
    {
        let listed = std::mem::take(&mut *lock_list(list));
        for channel in listed {
            if let Some(entry) = self.existing(&channel) {
                flush(&channel, &mut entry.lock());
            }
        }
    }

    /// Whether the hub has state for `channel` (it has not been swept as idle).
    pub fn is_held(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    /// Messages for REST history.
    pub fn history(&self, channel: &str, query: &HistoryQuery) -> Vec<Arc<Message>> {
        let Some(entry) = self.existing(channel) else {
            return Vec::new();
        };
        let mut state = entry.lock();
        state.log.expire(protocol::now_ms());
        let messages = state.log.query(query);
        let max_bytes = self.config.max_summary_bytes;
        messages
            .into_iter()
            .map(|m| state.annotations.with_summary(m, max_bytes))
            .collect()
    }

    /// One message of the history, by its serial, as its latest version (`None` if it is not,
    /// or no longer, held).
    pub fn message(&self, channel: &str, serial: &str) -> Option<Arc<Message>> {
        let entry = self.existing(channel)?;
        let mut state = entry.lock();
        state.log.expire(protocol::now_ms());
        let found = state.log.find(serial)?;
        Some(
            state
                .annotations
                .with_summary(found, self.config.max_summary_bytes),
        )
    }

    /// Every version of one message of the history, oldest first.
    pub fn versions(&self, channel: &str, serial: &str) -> Option<Vec<Arc<Message>>> {
        let entry = self.existing(channel)?;
        let mut state = entry.lock();
        state.log.expire(protocol::now_ms());
        state.log.versions(serial)
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
            let floor = state.log.floor().to_owned();
            state.annotations.forget_through(&floor);
            let max_age = state.log.retention().max_age.as_millis() as u64;
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
        crate::shrink::dash_map(&self.app_rules);
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
}

#[cfg(test)]
mod tests;
