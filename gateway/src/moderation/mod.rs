//! Before-publish moderation (`[[moderation]]`, Ably Chat's "before publish" rules): a publish
//! on a channel a rule covers is POSTed to the rule's URL and stored only once the moderator
//! accepts it. `Publisher::publish` and `Publisher::mutate` (updates, appends) ask here, after
//! every other check and before the bus, so a refusal stores and delivers nothing.
//!
//! The question, `Content-Type: application/json`, signed (`X-Ably-Signature`, as webhooks) when
//! the rule has a secret:
//! `{"channel", "room"?, "clientId", "connectionId"?, "messages": [Ably messages]}`.
//! The answer, a 2xx with `{"action": "accept"}` or `{"action": "reject", "reason"?: string,
//! "rejectionDetail"?: {string: string}}`; a rejection is 42213 with `detail` = the
//! rejectionDetail plus `reason`. Anything else (another status, another body, no answer within
//! the budget) is a failure: tried again while `retries` and the budget (`timeout`, retries
//! included, at most 5 s) last, then the rule's `fail` mode decides: open publishes, closed
//! refuses with 50003 (503: our dependency is down, the client should retry; a 4xx would tell it
//! to change a message nobody judged).
//!
//! Bounded: each rule allows `max_in_flight` questions at once on a node and refuses the
//! publish past that (50003) rather than queueing it, whatever its fail mode: the bound is ours,
//! and letting a burst through unmoderated would make bursting a way around the moderator. No
//! lock is held while asking: the permit is a semaphore's.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protocol::capability::resource_matches;
use protocol::{ChannelName, Message};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::{FailMode, ModerationRule};
use crate::error::Error;

/// The most of an answer read: a verdict is a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Pause before a retry, so a moderator that fails fast is not hammered within the budget.
const RETRY_PAUSE: Duration = Duration::from_millis(25);
/// At most one warning per rule this often: an outage fails every publish.
const WARN_EVERY_MS: u64 = 10_000;

/// Every configured rule, with the HTTP client they share.
pub(crate) struct Moderation {
    hooks: Vec<Hook>,
    /// `None` when it could not be built (logged once): every question then fails.
    client: Option<reqwest::Client>,
}

/// What a moderator is asked about: one publish, or one update or append.
pub(crate) struct Question<'a> {
    pub(crate) channel: &'a ChannelName,
    pub(crate) client_id: Option<&'a str>,
    /// A realtime publisher's connection.
    pub(crate) connection_id: Option<&'a str>,
    pub(crate) messages: &'a [Message],
    pub(crate) ephemeral: bool,
}

struct Hook {
    /// Names the rule in metrics and logs: its position in the file.
    label: String,
    rule: ModerationRule,
    in_flight: Semaphore,
    last_warned_ms: AtomicU64,
}

/// A moderator's decision.
#[derive(Debug, PartialEq)]
enum Verdict {
    Accept,
    Reject(BTreeMap<String, String>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    channel: &'a str,
    /// The chat room a `<room>::$chat` channel belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_id: Option<&'a str>,
    messages: Vec<Message>,
}

impl Moderation {
    pub(crate) fn new(rules: Vec<ModerationRule>) -> Moderation {
        let client = if rules.is_empty() {
            None
        } else {
            match reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
            {
                Ok(client) => Some(client),
                Err(error) => {
                    tracing::error!(%error, "moderation HTTP client not built; moderated publishes fail");
                    None
                }
            }
        };
        let hooks = rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| Hook {
                label: index.to_string(),
                in_flight: Semaphore::new(rule.max_in_flight.min(Semaphore::MAX_PERMITS)),
                rule,
                last_warned_ms: AtomicU64::new(0),
            })
            .collect();
        Moderation { hooks, client }
    }

    /// Whether any rule asks about a publish on `channel` (`check` would ask nobody otherwise).
    pub(crate) fn covers(&self, channel: &ChannelName, ephemeral: bool) -> bool {
        self.hooks
            .iter()
            .any(|hook| hook.covers(channel, ephemeral))
    }

    /// Asks every rule covering the channel, in file order; the first refusal stops.
    pub(crate) async fn check(&self, question: Question<'_>) -> Result<(), Error> {
        let mut body: Option<Vec<u8>> = None;
        for hook in &self.hooks {
            if !hook.covers(question.channel, question.ephemeral) {
                continue;
            }
            let body = body.get_or_insert_with(|| question.body());
            hook.ask(self.client.as_ref(), body).await?;
        }
        Ok(())
    }
}

impl Question<'_> {
    fn body(&self) -> Vec<u8> {
        let base = self.channel.base();
        let messages = self
            .messages
            .iter()
            .map(|message| {
                let mut message = message.clone();
                message.make_json_safe();
                message
            })
            .collect();
        let body = Body {
            channel: self.channel.as_str(),
            room: base.split_once("::$").map(|(room, _)| room),
            client_id: self.client_id,
            connection_id: self.connection_id,
            messages,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl Hook {
    fn covers(&self, channel: &ChannelName, ephemeral: bool) -> bool {
        (self.rule.ephemeral || !ephemeral) && resource_matches(&self.rule.channels, channel)
    }

    async fn ask(&self, client: Option<&reqwest::Client>, body: &[u8]) -> Result<(), Error> {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            self.count("busy");
            return Err(Error::ModerationBusy {
                max: self.rule.max_in_flight,
            });
        };
        let deadline = Instant::now() + self.rule.timeout;
        let mut attempts = 0;
        let why = loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = match client {
                None => Err("no HTTP client".to_owned()),
                Some(client) => tokio::time::timeout(remaining, self.attempt(client, body))
                    .await
                    .unwrap_or_else(|_| Err("timed out".to_owned())),
            };
            match outcome {
                Ok(Verdict::Accept) => {
                    self.count("accept");
                    return Ok(());
                }
                Ok(Verdict::Reject(detail)) => {
                    self.count("reject");
                    return Err(Error::ModerationRejected { detail });
                }
                Err(why) => {
                    let pause_until = Instant::now() + RETRY_PAUSE;
                    if attempts > self.rule.retries || pause_until >= deadline {
                        break why;
                    }
                    tokio::time::sleep_until(pause_until).await;
                }
            }
        };
        self.warn(&why, attempts);
        match self.rule.fail {
            FailMode::Open => {
                self.count("failed_open");
                Ok(())
            }
            FailMode::Closed => {
                self.count("failed_closed");
                Err(Error::ModerationUnavailable { why })
            }
        }
    }

    async fn attempt(&self, client: &reqwest::Client, body: &[u8]) -> Result<Verdict, String> {
        let mut request = client
            .post(&self.rule.url)
            .header("content-type", "application/json");
        if let Some(secret) = &self.rule.secret {
            request = request.header("x-ably-signature", crate::webhooks::signature(secret, body));
        }
        let mut response = request
            .body(body.to_vec())
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!("answer over {MAX_ANSWER_BYTES} bytes"));
            }
            answer.extend_from_slice(&chunk);
        }
        verdict(&answer)
    }

    fn count(&self, outcome: &'static str) {
        ::metrics::counter!("realtime_moderation_total", "rule" => self.label.clone(), "outcome" => outcome)
            .increment(1);
    }

    fn warn(&self, why: &str, attempts: u32) {
        let now = protocol::now_ms();
        let last = self.last_warned_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && self
                .last_warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(rule = %self.label, url = %self.rule.url, fail = ?self.rule.fail, attempts, %why, "moderation gave no answer");
        }
    }
}

/// Reads a 2xx answer: `{"action": "accept"}` or `{"action": "reject", "reason"?,
/// "rejectionDetail"?}` (non-string detail values are kept as their JSON text).
fn verdict(answer: &[u8]) -> Result<Verdict, String> {
    let answer: Value =
        serde_json::from_slice(answer).map_err(|e| format!("answer is not JSON: {e}"))?;
    match answer.get("action").and_then(Value::as_str) {
        Some("accept") => Ok(Verdict::Accept),
        Some("reject") => {
            let mut detail = BTreeMap::new();
            if let Some(Value::Object(map)) = answer.get("rejectionDetail") {
                for (key, value) in map {
                    let value = match value {
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    detail.insert(key.clone(), value);
                }
            }
            if let Some(reason) = answer.get("reason").and_then(Value::as_str) {
                detail.insert("reason".to_owned(), reason.to_owned());
            }
            Ok(Verdict::Reject(detail))
        }
        _ => Err("answer has no action \"accept\" or \"reject\"".to_owned()),
    }
}
