//! Occupancy: the 0↔1 attachment transitions (webhooks), the counts occupancy reports, and the
//! `[meta]occupancy` events, at most one per channel per flush.

use std::sync::Arc;

use protocol::{Action, Message, ProtocolMessage};

use super::fan_out::fan_out;
use super::{lock_list, Channel, ChannelState, Hub, Occupancy};

/// See `Hub::on_occupancy_transition`.
pub(crate) type OccupancyHook = Box<dyn Fn(&str, bool, u64) + Send + Sync>;

impl Hub {
    /// Calls `hook` whenever a channel's local attachments go 0→1 (`true`) or 1→0, with the
    /// time (ms), under the channel's lock, so a channel's transitions are reported in order.
    /// The hook must not block.
    pub(crate) fn on_occupancy_transition(&self, hook: OccupancyHook) {
        let _ = self.occupancy_hook.set(hook);
    }

    pub(super) fn occupancy_transition(&self, channel: &str, occupied: bool, at: u64) {
        if let Some(hook) = self.occupancy_hook.get() {
            hook(channel, occupied, at);
        }
    }

    /// Called under the channel's lock after anything occupancy counts changed: O(1).
    pub(super) fn occupancy_changed(&self, channel: &str, state: &mut ChannelState) {
        if state.subscribers.counts().occupancy_watchers > 0 && !state.occupancy_dirty {
            state.occupancy_dirty = true;
            lock_list(&self.occupancy_dirty).insert(channel.to_owned());
        }
    }

    /// Sends `[meta]occupancy` to the subscribers that asked, for channels whose occupancy
    /// changed; called once a second, so a stream of joins costs one event per second.
    pub fn flush_occupancy(&self) {
        self.flush_listed(&self.occupancy_dirty, |channel, state| {
            state.occupancy_dirty = false;
            let metrics = occupancy_of(state);
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
                subscriber.occupancy_events
            }) {
                tracing::warn!(%channel, message = %error.message, "occupancy event failed");
            }
        });
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
}

/// From the counts the channel keeps: O(1).
fn occupancy_of(state: &ChannelState) -> Occupancy {
    let counts = state.subscribers.counts();
    Occupancy {
        connections: state.subscribers.len(),
        publishers: counts.publishers,
        subscribers: counts.subscribers,
        presence_connections: state.presence.connections(),
        presence_members: state.presence.len(),
        presence_subscribers: counts.presence_subscribers,
    }
}
