//! Domain events (`POST /events`) published as ordinary Ably messages, once per event id.
//!
//! An event checked against the `Catalog` (`protocol::event`) goes to each of its channels as
//! one message: `name` = the type, `data` = the event data (JSON), id `evt:<event id>:<n>` for
//! the `n`th channel. Those ids are idempotency keys, so the existing per-message dedupe (2 min)
//! absorbs concurrent repeats; what makes a repeat hours later safe is the event's record
//! (`backend/records.rs`): which channels already took it, and once all did, the answer given. A repeat
//! of a completed event returns that answer and publishes nothing; a repeat of a partly
//! published one publishes only to the channels still missing. Records last at least
//! `EVENT_RECORD_TTL` in the back-end's `EventRecords`: in Redis when clustered (so they
//! survive restarts), in memory (bounded) otherwise.
//!
//! An event with `ephemeral: true` goes out as ephemeral messages (`hub::ephemeral`): live
//! only, no serial in its outcome (recorded as an empty serial), no history, no webhook.

use std::sync::Arc;

use protocol::event::Event;
use protocol::{Data, ErrorInfo, Message};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::publish::{Origin, Publisher};
use crate::wiring::Wiring;

pub use crate::backend::records::EVENT_RECORD_TTL;

/// What one channel did with an event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelOutcome {
    pub channel: String,
    pub message_id: String,
    /// The message's serial; absent when a concurrent repeat published it, or the event is
    /// ephemeral.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// The answer for one event: every channel's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventReceipt {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub channels: Vec<ChannelOutcome>,
}

impl EventReceipt {
    /// The first channel error, when the event is not yet on every channel.
    pub fn error(&self) -> Option<&ErrorInfo> {
        self.channels.iter().find_map(|c| c.error.as_ref())
    }
}

/// The outcome of publishing one event.
pub struct EventResult {
    pub receipt: EventReceipt,
    /// A repeat of a completed event: the first answer, nothing published.
    pub replayed: bool,
}

/// Events go through the publish path; their records through the back-end's `EventRecords`.
pub(crate) struct Events {
    publisher: Arc<Publisher>,
    wiring: Arc<Wiring>,
}

impl Events {
    pub(crate) fn new(publisher: Arc<Publisher>, wiring: Arc<Wiring>) -> Events {
        Events { publisher, wiring }
    }

    /// Publishes a checked event to its channels, at most once per event id (per app). The
    /// caller has checked the publisher's capability on every channel. Channels fail
    /// independently; the receipt says which, and a retry with the same id completes the rest.
    pub(crate) async fn publish(&self, principal: &Principal, event: &Event) -> EventResult {
        let key = format!("{}/{}", crate::stats::app_of(principal), event.id);
        let outcome = |n: usize, channel: &protocol::ChannelName| ChannelOutcome {
            channel: channel.as_str().to_owned(),
            message_id: format!("evt:{}:{n}", event.id),
            serial: None,
            error: None,
        };
        let records = self.wiring.backend().events.clone();
        let record = match records.get(&key).await.map_err(ErrorInfo::from) {
            Ok(record) => record,
            Err(error) => {
                let channels = event
                    .channels
                    .iter()
                    .enumerate()
                    .map(|(n, channel)| ChannelOutcome {
                        error: Some(error.clone()),
                        ..outcome(n, channel)
                    })
                    .collect();
                return EventResult {
                    receipt: receipt(event, channels),
                    replayed: false,
                };
            }
        };
        if let Some(answer) = record.answer.as_deref() {
            if let Ok(receipt) = serde_json::from_str::<EventReceipt>(answer) {
                return EventResult {
                    receipt,
                    replayed: true,
                };
            }
        }
        let data = event.data.to_string();
        let mut channels = Vec::with_capacity(event.channels.len());
        for (n, channel) in event.channels.iter().enumerate() {
            let mut outcome = outcome(n, channel);
            if let Some(serial) = record.channels.get(&n) {
                outcome.serial = Some(serial.clone()).filter(|s| !s.is_empty());
                channels.push(outcome);
                continue;
            }
            let mut message = Message {
                id: Some(outcome.message_id.clone()),
                name: Some(event.event_type.clone()),
                data: Some(Data::String(data.clone())),
                encoding: Some("json".into()),
                ..Message::default()
            };
            if let Some((push, on)) = &event.push {
                if on.contains(channel) {
                    message.extras = Some(serde_json::json!({ "push": push }));
                }
            }
            if event.ephemeral {
                crate::hub::mark_ephemeral(&mut message);
            }
            match self
                .publisher
                .publish(principal, channel, vec![message], Origin::Rest)
                .await
            {
                Ok(published) => {
                    outcome.serial = published.serials.into_iter().next().flatten();
                    let serial = outcome.serial.clone().unwrap_or_default();
                    if let Err(error) = records.record_channel(&key, n, &serial).await {
                        // Published all the same; within the message-id window a retry is
                        // still deduped.
                        tracing::warn!(event = %event.id, message = %error, "event channel not recorded");
                    }
                }
                Err(error) => outcome.error = Some(error.into()),
            }
            channels.push(outcome);
        }
        let mut receipt = receipt(event, channels);
        if receipt.error().is_none() {
            let answer = serde_json::to_string(&receipt).unwrap_or_default();
            match records.record_answer(&key, answer).await {
                // A concurrent first attempt may have answered first: its answer stands.
                Ok(first) => {
                    if let Ok(first) = serde_json::from_str(&first) {
                        receipt = first;
                    }
                }
                Err(error) => {
                    tracing::warn!(event = %event.id, message = %error, "event answer not recorded")
                }
            }
        }
        EventResult {
            receipt,
            replayed: false,
        }
    }
}

fn receipt(event: &Event, channels: Vec<ChannelOutcome>) -> EventReceipt {
    EventReceipt {
        id: event.id.clone(),
        event_type: event.event_type.clone(),
        channels,
    }
}
