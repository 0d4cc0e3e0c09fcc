//! The hub's configuration and the values its callers pass in and get back.

use std::sync::Arc;
use std::time::Duration;

use protocol::message::Modes;
use protocol::{ErrorInfo, Message};

pub use super::views::{DeltaCursor, View};
use crate::outbox::Outbox;

/// One local subscriber (an attached connection) of a channel.
pub struct Subscriber {
    pub connection_id: Arc<str>,
    /// The name the client attached with (qualifier included): deliveries must carry it.
    pub channel_name: Arc<str>,
    /// Granted modes: `SUBSCRIBE` holders get messages, `PRESENCE_SUBSCRIBE` holders presence
    /// events.
    pub modes: Modes,
    /// Attached with `occupancy=metrics`: gets `[meta]occupancy` events. Kept apart from
    /// `modes`, which go on the wire.
    pub occupancy_events: bool,
    /// False when the connection asked not to hear its own publishes.
    pub echo: bool,
    /// Attached with `appendMode=full`: every append comes as the whole message.
    pub append_full: bool,
    /// Set by the hub at attach: the messages this attachment has in full (see `has_in_full`).
    pub seen_from: SeenFrom,
    /// Its filter and deltas.
    pub view: View,
    pub outbox: Arc<Outbox>,
}

/// The first serial of the messages an attachment got in full: live from its attach, or
/// replayed by a rewind or resume. An append to an older message goes to it as the whole
/// message ("the first append you receive for a message on an attachment is a full
/// `message.update`"; every one is, here, which Ably allows).
#[derive(Debug, Clone, Default)]
pub struct SeenFrom(pub(super) Option<Arc<str>>);

impl Subscriber {
    /// Where its channel keeps it: its connection's id or, for a filtered attachment (which a
    /// connection may hold beside a plain one), the id and the filter.
    pub fn slot(&self) -> Arc<str> {
        match &self.view.filter {
            None => self.connection_id.clone(),
            Some(filter) => format!("{}\u{0}{}", self.connection_id, filter.source()).into(),
        }
    }

    /// Whether this attachment has the message `serial` in full, so an append to it can go as
    /// just the appended part.
    pub(super) fn has_in_full(&self, serial: &str) -> bool {
        !self.append_full
            && self
                .seen_from
                .0
                .as_deref()
                .is_some_and(|from| serial >= from)
    }
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
