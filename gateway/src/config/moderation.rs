//! Before-publish moderation rules (`[[moderation]]`): which channels, where to ask, how long to
//! wait and what an unanswered question means.

use std::time::Duration;

/// The longest a rule may hold a publish (Ably Chat's 0–5000 ms "retry timeout").
pub const MAX_MODERATION_TIMEOUT: Duration = Duration::from_millis(5000);

/// What a publish becomes when its moderator does not answer (timeout, error, a bad answer)
/// within the rule's budget, retries included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Published unmoderated (Ably's "publish anyway").
    Open,
    /// Refused (NACK / 503, 50003): a moderation outage never lets content through.
    Closed,
}

/// One before-publish moderation rule.
#[derive(Debug, Clone)]
pub struct ModerationRule {
    /// A capability-style resource pattern (`chat:*`, `room-*`); a chat room's pattern covers its
    /// `<room>::$chat` channel.
    pub channels: String,
    /// Where the JSON question is POSTed.
    pub url: String,
    /// The whole budget of one publish's question, retries included.
    pub timeout: Duration,
    /// Further attempts after a failed one, while the budget lasts.
    pub retries: u32,
    pub fail: FailMode,
    /// Signs the body (`X-Ably-Signature`, base64 HMAC-SHA256) when set.
    pub secret: Option<String>,
    /// Ephemeral publishes (typing, room reactions) are asked about too; by default they pass.
    pub ephemeral: bool,
    /// Questions in flight at once on this node; a publish beyond it is refused (503, 50003)
    /// rather than queued, so a slow moderator cannot pile up requests.
    pub max_in_flight: usize,
}

impl ModerationRule {
    /// A rule with the defaults: 1 s, no retry, fail closed, unsigned, 256 in flight.
    pub fn new(channels: &str, url: &str) -> ModerationRule {
        ModerationRule {
            channels: channels.to_owned(),
            url: url.to_owned(),
            timeout: Duration::from_millis(1000),
            retries: 0,
            fail: FailMode::Closed,
            secret: None,
            ephemeral: false,
            max_in_flight: 256,
        }
    }
}
