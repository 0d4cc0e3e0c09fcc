//! Attach (ATTACHED, replay, presence SYNC, registration in one critical section), detach and
//! mode changes.

use protocol::message::{flags, Modes};
use protocol::{Action, ErrorCode, Message, PresenceMessage, ProtocolMessage};
use rand::distributions::{Alphanumeric, DistString};

use super::fan_out::{encode_split, MAX_DELIVERY_FRAME_BYTES};
use super::log;
use super::types::SeenFrom;
use super::versions::position as position_of;
use super::views;
use super::{AttachOutcome, AttachRequest, ChannelState, Hub, Rewind, Subscriber};

/// Replayed messages per MESSAGE frame: a full log (500 by default) is a handful of frames.
pub(super) const REPLAY_MESSAGES_PER_FRAME: usize = 50;

impl Hub {
    /// Adds (or updates) a subscriber. In one critical section: the ATTACHED, then any replay
    /// (resume from `channel_serial`, or rewind), then the presence SYNC, then registration, so
    /// nothing live can overtake or duplicate them.
    pub fn attach(
        &self,
        channel: &str,
        mut subscriber: Subscriber,
        request: &AttachRequest,
        attached: impl FnOnce(&AttachOutcome) -> ProtocolMessage,
    ) {
        let now = protocol::now_ms();
        self.with_channel(channel, |state| {
            state.log.expire(now);
            // What the others are due goes first: the replay below covers it for this one.
            super::batch::send_pending(state, &self.pulse);
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
            let live_from = log::next(&outcome.channel_serial).unwrap_or(outcome.channel_serial.clone());
            let seen_from = match (request.rewind.is_some(), replay.first()) {
                (true, Some(first)) => first.serial.clone().unwrap_or(live_from),
                _ => live_from,
            };
            subscriber.seen_from = SeenFrom(Some(seen_from.into()));
            let position = state.position();
            let wants_presence = subscriber.modes.contains(Modes::PRESENCE_SUBSCRIBE);
            if wants_presence && state.presence.has_members() {
                outcome.flags |= flags::HAS_PRESENCE;
            }
            subscriber.outbox.reply(&attached(&outcome));
            if subscriber.modes.contains(Modes::SUBSCRIBE) {
                let wanted: Vec<Message> = replay
                    .iter()
                    .filter(|m| {
                        subscriber.echo
                            || m.connection_id.as_deref() != Some(&*subscriber.connection_id)
                    })
                    .map(|m| Message::clone(m))
                    .collect();
                // Its filter applied and, with deltas, patched after the first.
                let wanted = if subscriber.view.is_plain() {
                    wanted
                } else {
                    views::replay(wanted, &subscriber.view, &mut state.subscribers.chains())
                };
                // Several messages per frame, so a long replay fits the bounded queue, and no
                // frame over the write buffer's share.
                // With deltas the first (whole) message goes alone: a client that fails to decode
                // a patch re-attaches from the frame before, and must not be sent the same
                // whole-then-patches frame again.
                let alone = usize::from(subscriber.view.delta.is_some()).min(wanted.len());
                let (first, rest) = wanted.split_at(alone);
                let batches: Vec<&[Message]> = std::iter::once(first)
                    .filter(|first| !first.is_empty())
                    .chain(rest.chunks(REPLAY_MESSAGES_PER_FRAME))
                    .collect();
                let n_batches = batches.len();
                for (index, batch) in batches.into_iter().enumerate() {
                    // A rewind shows latest views, older than the operations that made them: its
                    // last frame leaves the client at the channel's position.
                    let last = batch.last();
                    let channel_serial = match (request.rewind.is_some(), index + 1 == n_batches) {
                        (true, true) => Some(position.clone()),
                        (true, false) => last.and_then(|m| m.serial.clone()),
                        (false, _) => last.and_then(|m| position_of(m)).map(str::to_owned),
                    };
                    let mut replay = ProtocolMessage {
                        channel: Some(subscriber.channel_name.to_string()),
                        channel_serial,
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
            let first = state.subscribers.is_empty();
            state.subscribers.insert(subscriber);
            if first {
                self.occupancy_transition(channel, true, now);
            }
            self.occupancy_changed(channel, state);
        });
    }

    /// The current members, in pages; the last page has an empty cursor.
    fn send_sync(&self, state: &ChannelState, subscriber: &Subscriber) {
        let sync_id = Alphanumeric.sample_string(&mut rand::thread_rng(), 8);
        let members: Vec<&PresenceMessage> = state.presence.members().collect();
        let mut pages: Vec<&[&PresenceMessage]> = members
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
                presence: Some(page.iter().map(|&member| member.clone()).collect()),
                ..ProtocolMessage::new(Action::Sync)
            });
        }
    }

    /// Sends a subscriber the whole member set again (a client-requested SYNC). `slot`: the
    /// subscriber's (`Subscriber::slot`), here and below.
    pub fn resync(&self, channel: &str, slot: &str) {
        if let Some(entry) = self.existing(channel) {
            let state = entry.lock();
            if let Some(subscriber) = state.subscribers.get(slot) {
                self.send_sync(&state, subscriber);
            }
        }
    }

    /// Changes a subscriber's granted modes (after a re-auth changed its capability).
    pub fn set_modes(&self, channel: &str, slot: &str, modes: Modes) {
        if let Some(entry) = self.existing(channel) {
            let mut state = entry.lock();
            state.subscribers.set_modes(slot, modes);
            // Publishers and subscribers are counted by mode: watchers hear the change.
            self.occupancy_changed(channel, &mut state);
        }
    }

    pub fn detach(&self, channel: &str, slot: &str) {
        if let Some(entry) = self.existing(channel) {
            let mut state = entry.lock();
            if state.subscribers.remove(slot) && state.subscribers.is_empty() {
                self.occupancy_transition(channel, false, protocol::now_ms());
            }
            self.occupancy_changed(channel, &mut state);
        }
    }
}
