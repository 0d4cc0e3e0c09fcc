//! `[[moderation]]`: each before-publish rule checked and turned into a `ModerationRule`.

use std::time::Duration;

use gateway::config::{FailMode, ModerationRule, MAX_MODERATION_TIMEOUT};

use super::file::FileModeration;
use super::{http_host, positive};

pub(super) fn moderation_rules(rules: Vec<FileModeration>) -> Result<Vec<ModerationRule>, String> {
    let mut checked = Vec::with_capacity(rules.len());
    for (index, rule) in rules.into_iter().enumerate() {
        let at = format!("--config moderation[{index}]");
        let url = rule.url.trim();
        if http_host(url).is_none_or(|host| host.starts_with('/')) {
            return Err(format!("{at}.url {url:?}: expected an http(s) URL"));
        }
        let channels = rule.channels.trim();
        if channels.is_empty() {
            return Err(format!(
                "{at}.channels: empty (a capability pattern: \"chat:*\", or \"*\" for every channel)"
            ));
        }
        // Capability matching: `*` stands for whole `:`-segments only (`room:*`, not `room-*`,
        // which would match only itself and moderate nothing).
        let segments = channels.strip_prefix("[meta]").unwrap_or(channels);
        if channels != "[*]*" && segments.split(':').any(|s| s.contains('*') && s != "*") {
            return Err(format!(
                "{at}.channels {channels:?}: `*` stands for whole `:`-separated segments (\"room:*\", \"*\")"
            ));
        }
        let mut checked_rule = ModerationRule::new(channels, url);
        if let Some(ms) = rule.timeout_ms {
            let timeout = Duration::from_millis(positive(ms, format!("{at}.timeout_ms"))?);
            if timeout > MAX_MODERATION_TIMEOUT {
                return Err(format!(
                    "{at}.timeout_ms {ms}: at most {} (a publish waits this long, retries included)",
                    MAX_MODERATION_TIMEOUT.as_millis()
                ));
            }
            checked_rule.timeout = timeout;
        }
        if let Some(retries) = rule.retries {
            checked_rule.retries = retries;
        }
        checked_rule.fail = match rule.fail.as_deref() {
            None | Some("closed") => FailMode::Closed,
            Some("open") => FailMode::Open,
            Some(other) => {
                return Err(format!(
                    "{at}.fail {other:?}: expected \"open\" or \"closed\""
                ))
            }
        };
        if let Some(secret) = rule.secret {
            if secret.is_empty() {
                return Err(format!(
                    "{at}.secret: empty (leave it out for unsigned questions)"
                ));
            }
            checked_rule.secret = Some(secret);
        }
        checked_rule.ephemeral = rule.ephemeral;
        if let Some(n) = rule.max_in_flight {
            checked_rule.max_in_flight = positive(n, format!("{at}.max_in_flight"))?;
        }
        checked.push(checked_rule);
    }
    Ok(checked)
}
