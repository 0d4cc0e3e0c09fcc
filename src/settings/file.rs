//! The optional TOML file (`--config`): the same settings as the flags, which win over it.

use std::path::Path;

use serde::Deserialize;

use super::cli::{PublishArgs, SocketArgs};

/// Reads and parses `--config`.
pub(super) fn read(path: &Path) -> Result<FileConfig, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("--config {}: {e}", path.display()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) listen: Option<String>,
    #[serde(default)]
    pub(super) keys: Vec<FileKey>,
    pub(super) history: Option<FileHistory>,
    pub(super) presence: Option<FilePresence>,
    pub(super) events: Option<FileEvents>,
    /// How long `channel.closed` and presence leaves wait for a re-occupy / re-enter (ms).
    pub(super) webhook_debounce_ms: Option<u64>,
    /// Same as `--max-idle-interval-ms`, `--connection-state-ttl-ms`, `--presence-grace-ms`.
    pub(super) max_idle_interval_ms: Option<u64>,
    pub(super) connection_state_ttl_ms: Option<u64>,
    pub(super) presence_grace_ms: Option<u64>,
    #[serde(default)]
    pub(super) webhooks: Vec<FileWebhook>,
    #[serde(default)]
    pub(super) moderation: Vec<FileModeration>,
    /// Same as `--cors-origins`; the flag, when given, replaces the file's list.
    #[serde(default)]
    pub(super) cors_origins: Vec<String>,
    /// `[sockets]`: the same as the socket flags.
    pub(super) sockets: Option<SocketArgs>,
    /// Same as `--supabase-revoke-keys`; the flag, when given, replaces the file's list.
    #[serde(default)]
    pub(super) supabase_revoke_keys: Vec<String>,
    /// `[publish]`: the same settings as the `--publish-*` flags.
    pub(super) publish: Option<PublishArgs>,
    /// Same as `--outbound-queue-bytes` and `--outbound-queue-age-ms`.
    pub(super) outbound_queue_bytes: Option<usize>,
    pub(super) outbound_queue_age_ms: Option<u64>,
}

/// `[events]`: the types `POST /events` accepts. `[[events.types]]` add to the built-in Digis
/// types (one with a built-in's name replaces it); `builtin = false` starts from none.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileEvents {
    pub(super) builtin: Option<bool>,
    #[serde(default)]
    pub(super) types: Vec<protocol::event::EventType>,
}

/// `[[webhooks]]`: one webhook rule; only `url`, `channels`, `events` and `secret` are needed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileWebhook {
    /// Names the webhook's queue (and `webhookId`); default: derived from url and channels.
    pub(super) id: Option<String>,
    pub(super) url: String,
    pub(super) channels: String,
    pub(super) events: Vec<String>,
    pub(super) secret: String,
    pub(super) batch_max_items: Option<usize>,
    pub(super) batch_ms: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) retry_initial_ms: Option<u64>,
    pub(super) retry_max_ms: Option<u64>,
    pub(super) queue_max_items: Option<usize>,
    pub(super) breaker_failures: Option<u32>,
    pub(super) breaker_cooldown_ms: Option<u64>,
}

/// `[[moderation]]`: one before-publish moderation rule; only `channels` and `url` are needed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileModeration {
    /// A capability-style pattern; a chat room's covers its `::$chat` channel.
    pub(super) channels: String,
    pub(super) url: String,
    /// The budget of one question, retries included: default 1000, at most 5000.
    pub(super) timeout_ms: Option<u64>,
    /// Further attempts after a failed one (default 0).
    pub(super) retries: Option<u32>,
    /// `"open"` or `"closed"` (default): what an unanswered question does to the publish.
    pub(super) fail: Option<String>,
    pub(super) secret: Option<String>,
    /// Ask about ephemeral messages (typing, room reactions) too.
    #[serde(default)]
    pub(super) ephemeral: bool,
    /// Questions in flight at once on a node (default 256).
    pub(super) max_in_flight: Option<usize>,
}

/// `[history]`: retention per channel, and rules per namespace (`[[history.namespace]]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHistory {
    pub(super) max_messages: Option<usize>,
    pub(super) max_age_secs: Option<u64>,
    /// Most messages a `rewind` replays.
    pub(super) max_rewind: Option<usize>,
    #[serde(default)]
    pub(super) namespace: Vec<FileNamespace>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileNamespace {
    /// The part of a channel name before the first `:` (`user` for `user:42`).
    pub(super) name: String,
    pub(super) max_messages: Option<usize>,
    pub(super) max_age_secs: Option<u64>,
    /// Updates, deletes, appends and annotations allowed; the limits then default to a day.
    #[serde(default)]
    pub(super) mutable_messages: bool,
    /// Push subscriptions allowed on the namespace's channels (Ably's `pushEnabled`).
    #[serde(default)]
    pub(super) push_enabled: bool,
    /// Server-side batching: delivery at most once per this many ms per channel.
    pub(super) batching_interval_ms: Option<u64>,
    /// Conflation: per interval, only the latest message per `conflation_key` (`name` or
    /// `headers.<header>`).
    pub(super) conflation_interval_ms: Option<u64>,
    pub(super) conflation_key: Option<String>,
}

/// `[presence]`: members per channel.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePresence {
    pub(super) max_members: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileKey {
    pub(super) key: String,
    pub(super) capability: Option<String>,
}
