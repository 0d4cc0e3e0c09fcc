//! Annotations of a channel's messages (reactions, flags, receipts): each message's raw
//! annotations (capped, for `GET …/annotations`) and its aggregates (`summary.rs`), the raw
//! fan-out to `ANNOTATION_SUBSCRIBE` holders and the summary events to `SUBSCRIBE` holders.
//!
//! An annotation takes no channel position (a reaction storm would evict the chat from the
//! log): its serial is `{position}:{a:010x}`, the channel's position when it was applied and a
//! per-channel counter, so it sorts after the message it annotates and before later messages,
//! and is never mistaken for a position (`log::is_serial`). Neither frame carries a
//! `channelSerial` for the same reason.
//!
//! Summary events are throttled per message: the first goes at once, later ones at most one
//! per `SUMMARY_INTERVAL_MS`, the rest by the housekeeping flush (`Hub::flush_summaries`), so a
//! storm costs each subscriber one frame per message per interval.

mod summary;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use protocol::message::{message_action, Modes};
use protocol::ProtocolMessage;
use protocol::{Action, Annotation, ErrorCode, ErrorInfo, Message, MessageAnnotations};

use super::fan_out::fan_out;
use super::publish::IDEMPOTENCY_WINDOW_MS;
use super::{lock_list, ChannelState, Hub};
pub use summary::Contribution;
pub(crate) use summary::Kind;
use summary::{Aggregates, Delta};

/// Raw annotations kept per message for `GET …/annotations`; the oldest go first beyond it.
/// Summaries are kept whole whatever this drops.
pub const MAX_ANNOTATIONS_PER_MESSAGE: usize = 10_000;
/// Least time between two summary events of one message.
const SUMMARY_INTERVAL_MS: u64 = 50;

/// A channel's annotations, by the serial of the message they annotate.
#[derive(Default)]
pub(super) struct Annotated {
    messages: HashMap<String, MessageState>,
    /// The last annotation counter given (`a` of the serials).
    last_a: u64,
    /// Messages whose summary event waits for the flush.
    pending: Vec<String>,
}

#[derive(Default)]
struct MessageState {
    raw: VecDeque<Arc<Annotation>>,
    aggregates: Aggregates,
    /// The rendered summary, until the next annotation changes it.
    summary: Option<Arc<BTreeMap<String, serde_json::Value>>>,
    summary_sent_at: u64,
    summary_pending: bool,
}

impl MessageState {
    fn summary(
        &mut self,
        serial: &str,
        max_bytes: usize,
    ) -> Arc<BTreeMap<String, serde_json::Value>> {
        self.summary
            .get_or_insert_with(|| Arc::new(self.aggregates.summary(serial, max_bytes)))
            .clone()
    }
}

impl Annotated {
    /// Forgets the annotations of messages the log no longer holds (serial at or below `floor`).
    pub(super) fn forget_through(&mut self, floor: &str) {
        self.messages.retain(|serial, _| serial.as_str() > floor);
        crate::shrink::hash_map(&mut self.messages);
    }

    /// `message` with its current summary, if it has one.
    pub(super) fn with_summary(&mut self, message: Arc<Message>, max_bytes: usize) -> Arc<Message> {
        let Some(serial) = message.serial.as_deref() else {
            return message;
        };
        let Some(state) = self.messages.get_mut(serial) else {
            return message;
        };
        if state.aggregates.is_empty() {
            return message;
        }
        let summary = state.summary(serial, max_bytes);
        if summary.is_empty() {
            return message;
        }
        let mut message = Message::clone(&message);
        message.annotations = Some(MessageAnnotations {
            summary: (*summary).clone(),
        });
        Arc::new(message)
    }
}

/// Annotations of one channel's messages, checked and stamped by the caller (`Annotator`).
pub struct Annotating<'a> {
    pub channel: &'a str,
    pub annotations: Vec<Annotation>,
    /// Per annotation: whether its id is an idempotency key (every realtime one, whose id a
    /// resend after a resume repeats; a REST one whose id the client chose).
    pub keyed: Vec<bool>,
    /// The annotating connection, for `echo=false`.
    pub publisher: Option<&'a str>,
}

/// Prefixes annotation ids among a channel's recent ids, apart from message ids.
const ANNOTATION_ID_PREFIX: &str = "annotation:";

impl Hub {
    /// Applies annotations to messages of their channel: each gets its serial (`None`: a repeat
    /// of a keyed id within the idempotency window, not applied again), then they are fanned
    /// out and summarized. Refused whole with 40400 when one names a message the log does not
    /// hold.
    pub fn annotate(&self, batch: Annotating<'_>) -> Result<Vec<Option<String>>, ErrorInfo> {
        let now = protocol::now_ms();
        let Annotating {
            channel,
            annotations,
            keyed,
            publisher,
        } = batch;
        self.with_channel(channel, |state| {
            state.log.expire(now);
            state.recent_ids.forget_before(now);
            for annotation in &annotations {
                let serial = annotation.message_serial.as_deref().unwrap_or_default();
                if state.log.find(serial).is_none() {
                    return Err(ErrorCode::NotFound.info(format!(
                        "no message with serial {serial:?} in this channel's history"
                    )));
                }
            }
            let position = state.position();
            let mut serials = Vec::with_capacity(annotations.len());
            let mut fresh = Vec::with_capacity(annotations.len());
            let keyed = keyed.iter().chain(std::iter::repeat(&false));
            for (mut annotation, keyed) in annotations.into_iter().zip(keyed) {
                if let (true, Some(id)) = (*keyed, &annotation.id) {
                    let key = format!("{ANNOTATION_ID_PREFIX}{id}");
                    if !state.recent_ids.insert(&key, now + IDEMPOTENCY_WINDOW_MS) {
                        serials.push(None);
                        continue;
                    }
                }
                state.annotations.last_a += 1;
                let serial = format!("{position}:{:010x}", state.annotations.last_a);
                annotation.serial = Some(serial.clone());
                serials.push(Some(serial));
                fresh.push(annotation);
            }
            if !fresh.is_empty() {
                let applying = Applying {
                    keep_raw: true,
                    report: true,
                };
                self.apply_annotations(channel, state, fresh, publisher, now, applying);
            }
            Ok(serials)
        })
    }

    /// The raw annotations of one message, oldest first: up to `limit` after the annotation
    /// serial `after`. `None` when neither the log nor the annotations know the message.
    pub fn annotations(
        &self,
        channel: &str,
        message_serial: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Option<Vec<Arc<Annotation>>> {
        let entry = self.existing(channel)?;
        let mut state = entry.lock();
        state.log.expire(protocol::now_ms());
        let Some(message) = state.annotations.messages.get(message_serial) else {
            return state.log.find(message_serial).map(|_| Vec::new());
        };
        let start = after.map_or(0, |after| {
            message
                .raw
                .partition_point(|a| a.serial.as_deref().unwrap_or_default() <= after)
        });
        Some(
            message
                .raw
                .iter()
                .skip(start)
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// Annotations the shared store applied (any node's), each with its counter `a`: applied
    /// here in `a` order, repeats skipped. False, applying nothing, when they do not follow on
    /// from the last one here (a pub/sub message was lost, or the node just started to listen):
    /// the caller reloads the aggregates (`load_annotations`).
    pub fn deliver_annotations(
        &self,
        channel: &str,
        annotations: Vec<(u64, Annotation)>,
        publisher: Option<&str>,
        report: bool,
    ) -> bool {
        let now = protocol::now_ms();
        self.with_channel(channel, |state| {
            let last_a = state.annotations.last_a;
            let fresh: Vec<(u64, Annotation)> = annotations
                .into_iter()
                .filter(|(a, _)| *a > last_a)
                .collect();
            let Some(&(first, _)) = fresh.first() else {
                return true;
            };
            if first != last_a + 1 {
                return false;
            }
            state.annotations.last_a = fresh.last().map_or(last_a, |(a, _)| *a);
            let annotations = fresh.into_iter().map(|(_, a)| a).collect();
            // The shared store keeps the raw annotations (and answers GET).
            let applying = Applying {
                keep_raw: false,
                report,
            };
            self.apply_annotations(channel, state, annotations, publisher, now, applying);
            true
        })
    }

    /// Replaces `channel`'s aggregates with the shared store's (`last_a`: its annotation counter).
    /// `announce`: annotations may have been missed, so every reloaded message's summary goes
    /// out (throttled); a node that just started listening has nobody to tell.
    pub fn load_annotations(
        &self,
        channel: &str,
        last_a: u64,
        mut stored: Vec<Contribution>,
        announce: bool,
    ) {
        stored.sort_by_key(|c| c.arrival);
        self.with_channel(channel, |state| {
            let annotated = &mut state.annotations;
            annotated.last_a = last_a;
            for message in annotated.messages.values_mut() {
                message.aggregates = Aggregates::default();
                message.summary = None;
            }
            for contribution in &stored {
                let Some(kind) = Kind::of(&contribution.annotation_type) else {
                    continue;
                };
                let message = annotated
                    .messages
                    .entry(contribution.message_serial.clone())
                    .or_default();
                message
                    .aggregates
                    .restore(&contribution.annotation_type, kind, contribution);
            }
            if !announce {
                return;
            }
            let mut newly_pending = false;
            for (serial, message) in &mut annotated.messages {
                if !message.summary_pending && !message.aggregates.is_empty() {
                    message.summary_pending = true;
                    newly_pending |= annotated.pending.is_empty();
                    annotated.pending.push(serial.clone());
                }
            }
            if newly_pending {
                lock_list(&self.summary_dirty).push(channel.to_owned());
            }
        });
    }

    /// Sends the summary events held back by the throttle that are due now.
    pub fn flush_summaries(&self) {
        let now = protocol::now_ms();
        self.flush_listed(&self.summary_dirty, |channel, state| {
            let max_bytes = self.config.max_summary_bytes;
            let pending = std::mem::take(&mut state.annotations.pending);
            for serial in pending {
                let Some(message) = state.annotations.messages.get_mut(&serial) else {
                    continue;
                };
                if !message.summary_pending {
                    continue;
                }
                if now < message.summary_sent_at + SUMMARY_INTERVAL_MS {
                    state.annotations.pending.push(serial);
                    continue;
                }
                send_summary(state, &serial, max_bytes, now);
            }
            if !state.annotations.pending.is_empty() {
                lock_list(&self.summary_dirty).push(channel.to_owned());
            }
        });
    }

    /// The tail of every annotation, local or from the bus: keep (`keep_raw`), aggregate, fan
    /// out the raw annotations, and send (or schedule) each touched message's summary.
    fn apply_annotations(
        &self,
        channel: &str,
        state: &mut ChannelState,
        annotations: Vec<Annotation>,
        publisher: Option<&str>,
        now: u64,
        Applying { keep_raw, report }: Applying,
    ) {
        let mut touched: Vec<String> = Vec::new();
        for annotation in &annotations {
            let Some(serial) = annotation.message_serial.clone() else {
                continue;
            };
            let message = state
                .annotations
                .messages
                .entry(serial.clone())
                .or_default();
            if let Some(kind) = annotation.annotation_type.as_deref().and_then(Kind::of) {
                let delta = Delta {
                    delete: annotation.action == ANNOTATION_DELETE,
                    client_id: annotation.client_id.as_deref(),
                    name: annotation.name.as_deref(),
                    count: annotation.count,
                };
                let annotation_type = annotation.annotation_type.as_deref().unwrap_or_default();
                message.aggregates.apply(annotation_type, kind, delta);
                message.summary = None;
            }
            if keep_raw {
                if message.raw.len() >= MAX_ANNOTATIONS_PER_MESSAGE {
                    message.raw.pop_front();
                }
                message.raw.push_back(Arc::new(annotation.clone()));
            }
            if !touched.contains(&serial) {
                touched.push(serial);
            }
        }
        let mut outgoing = ProtocolMessage {
            timestamp: Some(now),
            annotations: Some(annotations),
            ..ProtocolMessage::new(Action::Annotation)
        };
        if let Err(error) = fan_out(&state.subscribers, &mut outgoing, publisher, |subscriber| {
            subscriber.modes.contains(Modes::ANNOTATION_SUBSCRIBE)
                && (subscriber.echo || Some(&*subscriber.connection_id) != publisher)
        }) {
            tracing::warn!(message = %error.message, "annotation fan-out failed");
        }
        let max_bytes = self.config.max_summary_bytes;
        if report {
            self.report_summaries(channel, state, &touched, max_bytes);
        }
        let mut newly_pending = false;
        for serial in touched {
            let Some(message) = state.annotations.messages.get_mut(&serial) else {
                continue;
            };
            if now >= message.summary_sent_at + SUMMARY_INTERVAL_MS {
                send_summary(state, &serial, max_bytes, now);
            } else if !message.summary_pending {
                message.summary_pending = true;
                newly_pending |= state.annotations.pending.is_empty();
                state.annotations.pending.push(serial);
            }
        }
        if newly_pending {
            lock_list(&self.summary_dirty).push(channel.to_owned());
        }
    }
}

/// How `apply_annotations` treats a batch.
struct Applying {
    /// Keep the raw annotations (memory holds them; with Redis the shared store does).
    keep_raw: bool,
    /// This node stored them: it reports the summaries they make to the summary hook.
    report: bool,
}

/// Told each summary an annotation stored through this node made (the webhooks' `channel.message`
/// items): the channel and `{action: 4, serial, annotations: {summary}}` per message touched.
pub(crate) type SummaryHook = Box<dyn Fn(&str, Vec<Message>) + Send + Sync>;

impl Hub {
    pub(crate) fn on_summary(&self, hook: SummaryHook) {
        let _ = self.summary_hook.set(hook);
    }

    /// Every summary the touched messages now have, unthrottled (each annotation stored through
    /// this node reported once, by this node only).
    fn report_summaries(
        &self,
        channel: &str,
        state: &mut ChannelState,
        touched: &[String],
        max_bytes: usize,
    ) {
        let Some(hook) = self.summary_hook.get() else {
            return;
        };
        let summaries: Vec<Message> = touched
            .iter()
            .filter_map(|serial| {
                let message = state.annotations.messages.get_mut(serial)?;
                Some(summary_message(serial, &message.summary(serial, max_bytes)))
            })
            .collect();
        if !summaries.is_empty() {
            hook(channel, summaries);
        }
    }
}

/// `Annotation.action` of a delete (0 is a create).
pub(crate) const ANNOTATION_DELETE: u8 = 1;

/// The message that carries a summary: `{action: 4, serial, annotations: {summary}}`.
fn summary_message(serial: &str, summary: &BTreeMap<String, serde_json::Value>) -> Message {
    Message {
        action: Some(message_action::SUMMARY),
        serial: Some(serial.to_owned()),
        annotations: Some(MessageAnnotations {
            summary: summary.clone(),
        }),
        ..Message::default()
    }
}

/// One MESSAGE `{action: 4, serial, annotations: {summary}}` to every `SUBSCRIBE` holder.
fn send_summary(state: &mut ChannelState, serial: &str, max_bytes: usize, now: u64) {
    let Some(message) = state.annotations.messages.get_mut(serial) else {
        return;
    };
    message.summary_pending = false;
    message.summary_sent_at = now;
    let summary = message.summary(serial, max_bytes);
    let mut outgoing = ProtocolMessage {
        timestamp: Some(now),
        messages: Some(vec![summary_message(serial, &summary)]),
        ..ProtocolMessage::new(Action::Message)
    };
    if let Err(error) = fan_out(&state.subscribers, &mut outgoing, None, |subscriber| {
        subscriber.modes.contains(Modes::SUBSCRIBE)
    }) {
        tracing::warn!(message = %error.message, "summary fan-out failed");
    }
}
