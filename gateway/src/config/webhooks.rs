//! Webhook rules: where, for which channels and events, and how hard to try.

use std::time::Duration;

use sha2::Digest;

/// Webhook rules and the debounce they share.
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    pub rules: Vec<WebhookConfig>,
    /// How long `channel.closed` and presence leaves wait for a re-occupy / re-enter that
    /// cancels them (Pusher's 3 s: a reconnect is not a leave).
    pub debounce: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            rules: Vec::new(),
            debounce: Duration::from_secs(3),
        }
    }
}

/// What a webhook listens to (Ably's rule source types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `channel.lifecycle`: `channel.opened` / `channel.closed`.
    Lifecycle,
    /// `channel.presence`: enter, update, leave.
    Presence,
    /// `channel.message`: every published message.
    Message,
}

impl Source {
    pub fn parse(name: &str) -> Option<Source> {
        match name {
            "channel.lifecycle" => Some(Source::Lifecycle),
            "channel.presence" => Some(Source::Presence),
            "channel.message" => Some(Source::Message),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Source::Lifecycle => "channel.lifecycle",
            Source::Presence => "channel.presence",
            Source::Message => "channel.message",
        }
    }
}

/// One webhook: where, for which channels and events, signed with what, and how hard to try.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Stable across restarts (names its queue): by default derived from the URL and channels.
    pub id: String,
    pub url: String,
    /// Channel names, `*` matching any run of characters (`call:*`).
    pub channels: String,
    pub sources: Vec<Source>,
    pub secret: String,
    /// Items per request at most.
    pub batch_max_items: usize,
    /// How long the first item waits for company before a request goes.
    pub batch_window: Duration,
    /// Per attempt.
    pub attempt_timeout: Duration,
    /// First retry delay; doubles per failure up to `retry_max`, each with full jitter.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Items queued at most; beyond it the oldest are dropped (counted and logged).
    pub queue_max_items: usize,
    /// Consecutive failed attempts that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before the next attempt.
    pub breaker_cooldown: Duration,
}

impl WebhookConfig {
    /// A webhook with the default delivery settings.
    pub fn new(url: &str, channels: &str, sources: Vec<Source>, secret: &str) -> WebhookConfig {
        let digest = sha2::Sha256::digest(format!("{url}\n{channels}").as_bytes());
        let id: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        WebhookConfig {
            id,
            url: url.to_owned(),
            channels: channels.to_owned(),
            sources,
            secret: secret.to_owned(),
            batch_max_items: 100,
            batch_window: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(10),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            queue_max_items: 100_000,
            breaker_failures: 10,
            breaker_cooldown: Duration::from_secs(60),
        }
    }
}
