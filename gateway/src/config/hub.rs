//! What the hub keeps and allows per channel.

use std::time::Duration;

/// How much of a channel's history its log keeps: by count and by age.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    pub max_messages: usize,
    pub max_age: Duration,
}

impl Retention {
    /// What a namespace with mutable messages (or a sandbox app's `persisted` namespace) keeps
    /// unless told otherwise: Ably persists such channels for 24 hours, and an edit must find its
    /// original in the log, so the log keeps a day of a busy channel.
    pub const PERSISTED: Retention = Retention {
        max_messages: 10_000,
        max_age: Duration::from_secs(24 * 60 * 60),
    };
}

/// What a channel's namespace turns on: Ably's channel rules, for the part we implement.
#[derive(Debug, Clone, Default)]
pub struct ChannelRules {
    pub retention: Retention,
    /// Updates, deletes, appends and annotations are allowed (Ably's "Message annotations,
    /// updates, deletes, and appends" rule); off, they are refused with 93002.
    pub mutable_messages: bool,
    /// Server-side batching (or conflation) of what subscribers are sent.
    pub batching: Option<Batching>,
    /// Devices and clientIds may subscribe to the channel's push notifications (Ably's
    /// `pushEnabled` namespace rule); off, a push subscription is refused with 40000.
    pub push_enabled: bool,
}

/// Server-side batching (Ably's `batchingInterval`): what is published on a channel within
/// `interval` goes to each subscriber as one frame. With `conflate`, only the latest message per
/// key in each interval goes (Ably's conflation). Storing, ACKs, history and resume are not
/// delayed; only live delivery is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batching {
    pub interval: Duration,
    pub conflate: Option<ConflationKey>,
}

/// What conflation groups messages by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflationKey {
    /// The message name.
    Name,
    /// A header in `extras.headers` (e.g. `market`).
    Header(String),
}

impl ConflationKey {
    /// `name` or `headers.<header>`.
    pub fn parse(text: &str) -> Option<ConflationKey> {
        match text.split_once('.') {
            None if text == "name" => Some(ConflationKey::Name),
            Some(("headers", header)) if !header.is_empty() => {
                Some(ConflationKey::Header(header.to_owned()))
            }
            _ => None,
        }
    }
}

/// What the hub keeps and allows per channel.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// History kept per channel unless a namespace says otherwise.
    pub retention: Retention,
    /// Per-namespace rules (`user` for `user:*` channels), e.g. payment events kept longer;
    /// channels in no listed namespace get `retention` and no mutable messages.
    pub namespace_rules: Vec<(String, ChannelRules)>,
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
    /// Largest summary event (`Limits::max_message_bytes`, which the gateway copies here):
    /// longer `clientIds` lists are clipped.
    pub max_summary_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            // Covers the 2-minute resume window with room to spare.
            retention: Retention {
                max_messages: 500,
                max_age: Duration::from_secs(10 * 60),
            },
            namespace_rules: Vec::new(),
            max_rewind: 100,
            max_presence_members: 20_000,
            sync_page_members: 100,
            presence_batch_window: Duration::from_millis(50),
            max_summary_bytes: 64 * 1024,
        }
    }
}
