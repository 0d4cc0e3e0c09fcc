//! Lifecycle, presence and message webhooks: what the backend bills by.
//!
//! Events are shaped like Ably's webhooks (`{"items":[{webhookId, source, id, name, timestamp,
//! serial, data}]}`), signed (`X-Ably-Signature`: base64 HMAC-SHA256 of the body under the
//! webhook's secret), queued per webhook and delivered at least once, in queue order, by
//! `delivery.rs`.
//!
//! Where events come from, once per cluster:
//! - `channel.opened` / `channel.closed`: the hub reports when this node's attachment count on a
//!   channel goes 0→1 or 1→0; the store (the back-end's `WebhookState`: this process
//!   (`store.rs`), or Redis shared by every node)
//!   turns that into the cluster's transitions. A `channel.closed` waits the debounce: a
//!   re-occupy within it cancels it (and the `channel.opened` it would have caused).
//! - presence: the node that accepted the change (or the one that swept a dead node's orphaned
//!   member, whose client did not resume within its grace),
//!   per clientId as Pusher does: an enter while the client is present through another
//!   connection is not one; a leave waits the debounce keyed by (channel, clientId), an enter by
//!   the same clientId within it cancels both, and it is dropped if the client is present
//!   through another connection when it falls due. A quick reconnect bills nothing.
//! - messages: the node that accepted the publish.
//!
//! Every event carries the time of the transition, not of the send. The hub reports on a
//! bounded channel (`try_send`, never blocking under its lock) to one task per node that
//! handles reports in order, so a channel's events enter the queues in the order they happened
//! here.

mod delivery;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protocol::{Message, PresenceMessage};
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use crate::backend::{Debounced, WebhookState};

use crate::config::{Source, WebhookConfig, WebhooksConfig};
pub use delivery::signature;

impl WebhookConfig {
    fn wants(&self, source: Source, channel: &str) -> bool {
        self.sources.contains(&source) && glob_matches(&self.channels, channel)
    }
}

/// `*` matches any run of characters, everything else itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// What the rest of the gateway reports.
pub(crate) enum Report {
    /// This node's attachment count on `channel` went 0→1 (`occupied`) or 1→0, at `at` ms.
    Occupancy {
        channel: String,
        occupied: bool,
        at: u64,
    },
    /// Presence events this node accepted (or swept: a dead node's orphans), stamped.
    Presence {
        channel: String,
        events: Vec<PresenceMessage>,
    },
    /// Messages this node accepted, serials assigned.
    Messages {
        channel: String,
        messages: Vec<Message>,
    },
    /// A dead node's share of occupancy, to take out.
    NodeDied { node: String },
}

/// Reports waiting for the webhook task at most; beyond it a report is lost, counted and
/// logged (the hub never waits under its lock).
const REPORT_QUEUE: usize = 65_536;

/// How often pending debounced events are checked for being due.
const SWEEP_INTERVAL: Duration = Duration::from_millis(200);

/// The lease name of the node sweeping due events, and how long it holds it unrenewed.
const SWEEPER: &str = "~sweeper";
const SWEEP_LEASE_MS: u64 = 5_000;

pub(crate) struct Webhooks {
    config: WebhooksConfig,
    store: Arc<dyn WebhookState>,
    node: String,
    reports: mpsc::Sender<Report>,
    /// Woken when items are queued, so delivery starts without polling (embedded).
    queued: Notify,
    serial: AtomicU64,
}

/// A debounced event, as stored while pending (its JSON is its identity: a nonce makes each
/// unique).
#[derive(Serialize, Deserialize)]
struct Pending {
    key: String,
    channel: String,
    at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leave: Option<PresenceMessage>,
    nonce: String,
}

impl Webhooks {
    /// Starts the webhook tasks; None when no webhook is configured. State and queues live in
    /// `store` (Redis when clustered, else this process); `node` is this node's id there.
    pub(crate) fn start(
        config: &WebhooksConfig,
        store: Arc<dyn WebhookState>,
        node: &str,
    ) -> Option<Arc<Webhooks>> {
        if config.rules.is_empty() {
            return None;
        }
        let (reports, incoming) = mpsc::channel(REPORT_QUEUE);
        let webhooks = Arc::new(Webhooks {
            config: config.clone(),
            node: node.to_owned(),
            store,
            reports,
            queued: Notify::new(),
            serial: AtomicU64::new(0),
        });
        tokio::spawn(handle_reports(Arc::downgrade(&webhooks), incoming));
        for rule in &config.rules {
            tokio::spawn(delivery::run(Arc::downgrade(&webhooks), rule.clone()));
        }
        Some(webhooks)
    }

    /// Whether any webhook wants `source` events of `channel` (a hub key: channels of sandbox
    /// apps never go to webhooks).
    pub(crate) fn wanted(&self, source: Source, channel: &str) -> bool {
        !channel.contains(crate::auth::APP_SEPARATOR)
            && self.config.rules.iter().any(|r| r.wants(source, channel))
    }

    /// Reports without waiting; a full queue loses the report, loudly.
    pub(crate) fn report(&self, report: Report) {
        let (source, channel) = match &report {
            Report::Occupancy { channel, .. } => (Source::Lifecycle, channel.as_str()),
            Report::Presence { channel, .. } => (Source::Presence, channel.as_str()),
            Report::Messages { channel, .. } => (Source::Message, channel.as_str()),
            Report::NodeDied { .. } => (Source::Lifecycle, ""),
        };
        let relevant = matches!(report, Report::NodeDied { .. }) || self.wanted(source, channel);
        if !relevant {
            return;
        }
        if self.reports.try_send(report).is_err() {
            ::metrics::counter!("realtime_webhook_events_lost_total", "reason" => "report_queue_full")
                .increment(1);
            tracing::error!(
                source = source.name(),
                "webhook report queue full: an event was lost"
            );
        }
    }

    async fn handle(&self, report: Report) {
        match report {
            Report::Occupancy {
                channel,
                occupied: true,
                at,
            } => {
                let key = vacate_key(&channel);
                match self.store.occupy(&channel, &key).await {
                    Ok(true) => self.emit_lifecycle(&channel, true, at).await,
                    Ok(false) => {}
                    Err(error) => lost("occupancy", &channel, &error),
                }
            }
            Report::Occupancy {
                channel,
                occupied: false,
                at,
            } => self.vacate(&self.node.clone(), &channel, at).await,
            Report::Presence { channel, events } => self.presence(&channel, events).await,
            Report::Messages { channel, messages } => {
                let mut safe = messages;
                for message in &mut safe {
                    message.make_json_safe();
                }
                let at = safe
                    .first()
                    .and_then(|m| m.timestamp)
                    .unwrap_or_else(protocol::now_ms);
                let data = self.batch_data(&channel, "messages", &safe);
                self.emit(
                    Source::Message,
                    &channel,
                    "channel.message",
                    at,
                    data,
                    // A summary carries its message's serial: the item needs one of its own.
                    safe.first()
                        .filter(|m| m.action != Some(protocol::message::message_action::SUMMARY))
                        .and_then(|m| m.serial.clone()),
                )
                .await;
            }
            Report::NodeDied { node } => match self.store.occupied_by(&node).await {
                Ok(channels) => {
                    let now = protocol::now_ms();
                    for channel in channels {
                        self.vacate(&node, &channel, now).await;
                    }
                }
                Err(error) => lost("occupancy", &node, &error),
            },
        }
    }

    async fn vacate(&self, node: &str, channel: &str, at: u64) {
        let key = vacate_key(channel);
        let pending = self.pending(&key, channel, at, None);
        let closed = self.debounced(&key, &pending);
        if let Err(error) = self.store.vacate(node, channel, closed).await {
            lost("occupancy", channel, &error);
        }
    }

    async fn presence(&self, channel: &str, events: Vec<PresenceMessage>) {
        let mut now_out = Vec::new();
        for event in events {
            let client_id = event.client_id.clone().unwrap_or_default();
            let key = leave_key(channel, &client_id);
            match event.action {
                ENTER => {
                    // A leave was pending: the client never really went.
                    let cancelled = self.store.cancel(&key).await.unwrap_or_else(|error| {
                        lost("presence", channel, &error);
                        false
                    });
                    // Present through another connection already (a reconnect whose old
                    // connection has not left yet): not an enter of the client.
                    let present = !cancelled
                        && self
                            .client_present(channel, &client_id, event.connection_id.as_deref())
                            .await
                            .unwrap_or(false);
                    if !cancelled && !present {
                        now_out.push(event);
                    }
                }
                LEAVE => {
                    let at = event.timestamp.unwrap_or_else(protocol::now_ms);
                    let pending = self.pending(&key, channel, at, Some(event));
                    if let Err(error) = self.store.pend(self.debounced(&key, &pending)).await {
                        lost("presence", channel, &error);
                    }
                }
                _ => now_out.push(event),
            }
        }
        if !now_out.is_empty() {
            self.emit_presence(channel, now_out).await;
        }
    }

    /// Whether `client_id` is present on `channel` through a connection other than `except`.
    async fn client_present(
        &self,
        channel: &str,
        client_id: &str,
        except: Option<&str>,
    ) -> Result<bool, crate::backend::BackendError> {
        let members = self.store.members(channel).await?;
        Ok(members.iter().any(|member| {
            member.client_id.as_deref() == Some(client_id)
                && (except.is_none() || member.connection_id.as_deref() != except)
        }))
    }

    fn pending(&self, key: &str, channel: &str, at: u64, leave: Option<PresenceMessage>) -> String {
        serde_json::to_string(&Pending {
            key: key.to_owned(),
            channel: channel.to_owned(),
            at,
            leave,
            nonce: Alphanumeric.sample_string(&mut rand::thread_rng(), 12),
        })
        .unwrap_or_default()
    }

    /// `pending`, stored under `key`, due one debounce from now.
    fn debounced<'a>(&self, key: &'a str, pending: &'a str) -> Debounced<'a> {
        Debounced {
            key,
            event: pending,
            due_ms: protocol::now_ms() + self.config.debounce.as_millis() as u64,
        }
    }

    /// Emits the debounced events that are due and were not cancelled.
    async fn fire_due(&self) {
        // One node at a time (clustered), so due events are queued in the order they fell due.
        if !self
            .store
            .may_deliver(SWEEPER, SWEEP_LEASE_MS)
            .await
            .unwrap_or(false)
        {
            return;
        }
        let due = match self.store.due(protocol::now_ms()).await {
            Ok(due) => due,
            Err(error) => {
                tracing::debug!(%error, "pending webhook events not read");
                return;
            }
        };
        for raw in due {
            let Ok(pending) = serde_json::from_str::<Pending>(&raw) else {
                continue;
            };
            match self.store.fire(&pending.key, &raw).await {
                Ok(true) => match pending.leave {
                    Some(leave) => {
                        // Still present through another connection: the client did not leave.
                        let client_id = leave.client_id.clone().unwrap_or_default();
                        let present = self
                            .client_present(&pending.channel, &client_id, None)
                            .await
                            .unwrap_or(false);
                        if !present {
                            self.emit_presence(&pending.channel, vec![leave]).await;
                        }
                    }
                    None => {
                        self.emit_lifecycle(&pending.channel, false, pending.at)
                            .await
                    }
                },
                Ok(false) => {}
                Err(error) => tracing::debug!(%error, "pending webhook event not taken"),
            }
        }
    }

    async fn emit_lifecycle(&self, channel: &str, opened: bool, at: u64) {
        let name = if opened {
            "channel.opened"
        } else {
            "channel.closed"
        };
        let data = serde_json::json!({
            "channelId": channel,
            "name": channel,
            "status": { "isActive": opened },
        });
        self.emit(Source::Lifecycle, channel, name, at, data, None)
            .await;
    }

    async fn emit_presence(&self, channel: &str, mut events: Vec<PresenceMessage>) {
        for event in &mut events {
            event.make_json_safe();
        }
        let at = events
            .iter()
            .filter_map(|e| e.timestamp)
            .min()
            .unwrap_or_else(protocol::now_ms);
        let data = self.batch_data(channel, "presence", &events);
        self.emit(
            Source::Presence,
            channel,
            "presence.message",
            at,
            data,
            None,
        )
        .await;
    }

    /// A batch item's `data`: the channel, this node, and the batch under `key`.
    fn batch_data(&self, channel: &str, key: &str, batch: &impl Serialize) -> serde_json::Value {
        serde_json::json!({
            "channelId": channel,
            "site": self.node,
            key: batch,
        })
    }

    /// Queues one item for every webhook that wants it.
    async fn emit(
        &self,
        source: Source,
        channel: &str,
        name: &str,
        at: u64,
        data: serde_json::Value,
        serial: Option<String>,
    ) {
        let serial = serial.unwrap_or_else(|| {
            format!(
                "{at:013}:{}:{}",
                self.node,
                self.serial.fetch_add(1, Ordering::Relaxed)
            )
        });
        let id = Alphanumeric.sample_string(&mut rand::thread_rng(), 20);
        for rule in self
            .config
            .rules
            .iter()
            .filter(|r| r.wants(source, channel))
        {
            let item = serde_json::json!({
                "webhookId": rule.id,
                "source": source.name(),
                "id": id,
                "name": name,
                "timestamp": at,
                "serial": serial,
                "data": data,
            });
            ::metrics::counter!("realtime_webhook_events_total", "webhook" => rule.id.clone(), "source" => source.name())
                .increment(1);
            match self
                .store
                .push(&rule.id, rule.queue_max_items, vec![item.to_string()])
                .await
            {
                Ok(0) => {}
                Ok(dropped) => {
                    ::metrics::counter!("realtime_webhook_items_dropped_total", "webhook" => rule.id.clone())
                        .increment(dropped);
                    tracing::error!(
                        webhook = %rule.id,
                        dropped,
                        bound = rule.queue_max_items,
                        "webhook queue full: the oldest items were dropped"
                    );
                }
                Err(error) => lost("queue", channel, &error),
            }
        }
        self.queued.notify_waiters();
    }
}

const ENTER: u8 = 2;
const LEAVE: u8 = 3;

fn vacate_key(channel: &str) -> String {
    format!("rt:{{{channel}}}:wh:vacate")
}

fn leave_key(channel: &str, client_id: &str) -> String {
    format!("rt:{{{channel}}}:wh:leave:{client_id}")
}

fn lost(what: &'static str, channel: &str, error: &crate::backend::BackendError) {
    ::metrics::counter!("realtime_webhook_events_lost_total", "reason" => what).increment(1);
    tracing::error!(%channel, %error, what, "a webhook event could not be recorded");
}

/// Handles reports one at a time, in arrival order, and fires due debounced events from the
/// same task, so a channel's events are queued in the order they were decided.
async fn handle_reports(webhooks: std::sync::Weak<Webhooks>, mut incoming: mpsc::Receiver<Report>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let report = tokio::select! {
            report = incoming.recv() => match report {
                Some(report) => Some(report),
                None => return,
            },
            _ = tick.tick() => None,
        };
        let Some(webhooks) = webhooks.upgrade() else {
            return;
        };
        match report {
            Some(report) => webhooks.handle(report).await,
            None => webhooks.fire_due().await,
        }
    }
}

#[cfg(test)]
mod tests;
