//! The checks and stamping every publish goes through, realtime or REST, before the hub;
//! `mutate` does the same for updates, deletes and appends.

mod mutate;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use dashmap::DashMap;
use protocol::message::message_action;
use protocol::{ChannelName, ErrorInfo, Message, Operation};

use crate::auth::Principal;
use crate::backend::Ticket;
use crate::config::{Limits, PublishRate};
use crate::error::Error;
use crate::hub::{Hub, Publication, Serials};
use crate::limits::{count_refusal, Exceeded, RateBucket};
use crate::moderation::{Moderation, Question};
use crate::sessions::Sessions;
use crate::stats::{self, Stats, Transport};
use crate::wiring::Wiring;

/// What an accepted publish got.
pub struct Receipt {
    /// One per message, in order; `None` for an idempotent duplicate that was not delivered again,
    /// and for every message of an ephemeral publish (never stored).
    pub serials: Serials,
    /// The publish's id base (`<base>:<index>` ids), as REST reports it in `messageId`.
    pub message_id: Option<String>,
    /// When the messages were stamped (their `timestamp`).
    pub timestamp: u64,
    /// An update, delete or append: the message's latest view it made, with the version serial
    /// the operation got (applied to the view the caller's check read; a concurrent edit that
    /// another node stored first is not in it).
    pub changed: Option<Message>,
}

/// A publish handed to the bus, waiting for its ticket (`Publisher::submit`).
pub(crate) struct Submitted {
    channel: String,
    namespace: &'static str,
    /// The messages, for webhooks that want the channel.
    webhook_copy: Option<Vec<Message>>,
    /// The app scope, channel name and `extras.push` payloads, for the push dispatcher.
    push_copy: Option<PushCopy>,
    n_messages: usize,
    total_bytes: usize,
    transport: Transport,
    source: &'static str,
    first_id: Option<String>,
    timestamp: u64,
}

/// A publish's `extras.push` objects (with their message's index), its app scope and channel.
struct PushCopy {
    scope: String,
    channel: String,
    payloads: Vec<(usize, serde_json::Value)>,
}

/// The push copy of a publish; `None` when it carries no `extras.push` (the common case costs
/// one look at each message's extras) or is ephemeral.
fn push_payloads(
    principal: &Principal,
    channel: &ChannelName,
    messages: &[Message],
    ephemeral: bool,
) -> Option<PushCopy> {
    if ephemeral {
        return None;
    }
    let payloads: Vec<(usize, serde_json::Value)> = messages
        .iter()
        .enumerate()
        .filter_map(|(index, m)| {
            let push = m.extras.as_ref()?.get("push").filter(|p| p.is_object())?;
            Some((index, push.clone()))
        })
        .collect();
    (!payloads.is_empty()).then(|| PushCopy {
        scope: principal.scope.as_deref().unwrap_or_default().to_owned(),
        channel: channel.base().to_owned(),
        payloads,
    })
}

/// Where a publish came from; decides the default message ids.
pub enum Origin<'a> {
    /// A realtime MESSAGE: ids are `connectionId:msgSerial:index`; `rate` is the connection's
    /// publish budget (`Limits::connection_publish_rate`).
    Connection {
        id: &'a str,
        msg_serial: u64,
        rate: &'a Mutex<RateBucket>,
    },
    /// A REST publish: ids are `<random>:index` unless the client gave its own.
    Rest,
}

/// The publish path shared by REST, realtime and events, with the REST publish budgets.
pub(crate) struct Publisher {
    limits: Limits,
    /// REST publish budgets by key (Supabase users by clientId), this node's share; full ones
    /// are forgotten by the sweep, so it holds only recent publishers.
    rates: DashMap<String, RateBucket>,
    hub: Arc<Hub>,
    /// For REST publishes on behalf of a live connection (`connectionKey`).
    sessions: Arc<Sessions>,
    stats: Arc<Stats>,
    wiring: Arc<Wiring>,
    /// Before-publish moderation rules, asked after every other check.
    moderation: Moderation,
}

impl Publisher {
    pub(crate) fn new(
        limits: Limits,
        hub: Arc<Hub>,
        sessions: Arc<Sessions>,
        stats: Arc<Stats>,
        wiring: Arc<Wiring>,
        moderation: Moderation,
    ) -> Publisher {
        Publisher {
            limits,
            rates: DashMap::new(),
            hub,
            sessions,
            stats,
            wiring,
            moderation,
        }
    }

    /// A publish creates messages. An update, delete or append (actions 1, 2, 5) is refused with
    /// 93002 where the channel's rule does not allow them, and where it does it goes alone
    /// (`mutate`); meta and summary (3, 4) are the server's, and unknown actions are refused too.
    fn check_actions(
        &self,
        principal: &Principal,
        channel: &ChannelName,
        messages: &[Message],
    ) -> Result<(), Error> {
        let Some(action) = messages
            .iter()
            .filter_map(|m| m.action)
            .find(|a| *a != message_action::CREATE)
        else {
            return Ok(());
        };
        match action {
            message_action::UPDATE | message_action::DELETE | message_action::APPEND => {
                let key = principal.channel_key(channel);
                if self.hub.rules_for(&key).mutable_messages {
                    Err(Error::OperationInPublish { action })
                } else {
                    Err(Error::MutableMessagesOff {
                        channel: channel.as_str().to_owned(),
                    })
                }
            }
            _ => Err(Error::UnpublishableAction(action)),
        }
    }

    /// Checks the message count, capability, clientId, the publish's size and the publisher's
    /// rate, stamps ids and timestamps, then hands the messages to the hub. Returns each
    /// message's serial (`None` for an idempotent duplicate). A refusal happens before anything
    /// is stored or delivered.
    pub(crate) async fn publish(
        &self,
        principal: &Principal,
        channel: &ChannelName,
        messages: Vec<Message>,
        origin: Origin<'_>,
    ) -> Result<Receipt, Error> {
        let (ticket, submitted) = self.submit(principal, channel, messages, origin).await?;
        self.settle(principal, submitted, ticket.await)
    }

    /// `publish` up to handing the messages to the bus, which takes them in the order of these
    /// calls (a connection pipelines its publishes on it). The ticket resolves once they are
    /// stored; `settle` then makes the receipt.
    pub(crate) async fn submit(
        &self,
        principal: &Principal,
        channel: &ChannelName,
        mut messages: Vec<Message>,
        origin: Origin<'_>,
    ) -> Result<(Ticket, Submitted), Error> {
        if messages.is_empty() {
            return Err(Error::NoMessages);
        }
        refuse_filtered(channel)?;
        let source = origin.source();
        let limits = &self.limits;
        if messages.len() > limits.max_messages_per_publish {
            count_refusal("too_many_messages", source);
            return Err(Error::TooManyMessages {
                n: messages.len(),
                max: limits.max_messages_per_publish,
            });
        }
        if !principal.allows(channel, Operation::Publish) {
            return Err(Error::PublishDenied {
                channel: channel.as_str().to_owned(),
            });
        }
        self.check_actions(principal, channel, &messages)?;
        // Ephemeral publishes are delivered but never stored (`hub::ephemeral`).
        let ephemeral = crate::hub::is_ephemeral_publish(&messages)?;
        let max_bytes = limits.max_message_bytes;
        let now = protocol::now_ms();
        let mut random_base: Option<String> = None;
        let mut total_bytes = 0;
        let n_total = messages.len();
        // Realtime ids (`connectionId:msgSerial:index`) are idempotency keys too: a client
        // resends unacknowledged publishes with the same msgSerial after a resume.
        let realtime = matches!(origin, Origin::Connection { .. });
        let client_ids: Vec<bool> = messages
            .iter()
            .map(|m| realtime || m.id.is_some())
            .collect();
        for (index, message) in messages.iter_mut().enumerate() {
            principal.stamp_client_id(&mut message.client_id)?;
            principal.stamp_user_claim(channel, &mut message.extras);
            // Ably's maxMessageSize applies to the whole publish: the sum of its messages.
            let size = message.size();
            total_bytes += size;
            if total_bytes > max_bytes {
                count_refusal("too_large", source);
                return Err(if index == 0 {
                    Error::MessageTooLarge {
                        size,
                        max: max_bytes,
                    }
                } else {
                    Error::PublishTooLarge {
                        n: n_total,
                        max: max_bytes,
                    }
                });
            }
            // REST "publish on behalf of a realtime connection": the key names a live one.
            if let (Origin::Rest, Some(key)) = (&origin, message.connection_key.take()) {
                let live = self
                    .sessions
                    .live_connection_id(&key)
                    .ok_or(Error::UnknownConnectionKey)?;
                message.connection_id = Some(live);
            }
            message.connection_key = None;
            message.timestamp = Some(now);
            message.action.get_or_insert(0);
            // Versions and summaries are the server's to give, never a publisher's.
            message.version = None;
            message.annotations = None;
            if message.id.is_none() {
                message.id = Some(match origin {
                    Origin::Connection { id, msg_serial, .. } => {
                        format!("{id}:{msg_serial}:{index}")
                    }
                    Origin::Rest => {
                        let base = random_base.get_or_insert_with(random_id_base);
                        format!("{base}:{index}")
                    }
                });
            }
            if let Origin::Connection { id, .. } = origin {
                message.connection_id = Some(id.to_owned());
            }
        }
        self.charge_rate(principal, &origin, messages.len(), total_bytes)?;
        self.moderate(principal, channel, &origin, &messages, ephemeral)
            .await?;
        let first_id = messages.first().and_then(|m| m.id.clone());
        let n_messages = messages.len();
        let push_copy = push_payloads(principal, channel, &messages, ephemeral);
        let (connection_id, id) = match origin {
            Origin::Connection { id, msg_serial, .. } => {
                (Some(id), Some(format!("{id}:{msg_serial}")))
            }
            Origin::Rest => (None, None),
        };
        let channel_key = principal.channel_key(channel);
        let retention = self.hub.rules_for(&channel_key).retention;
        let publication = Publication {
            channel: &channel_key,
            messages,
            client_ids,
            connection_id,
            id,
            timestamp: now,
        };
        let webhook_copy = (!ephemeral
            && self
                .wiring
                .webhooks_want(crate::config::Source::Message, &channel_key))
        .then(|| publication.messages.clone());
        let bus = self.wiring.bus();
        let ticket = if ephemeral {
            bus.submit_ephemeral(&self.hub, publication).await
        } else {
            bus.submit(&self.hub, publication, retention).await
        }
        .map_err(ErrorInfo::from)?;
        let submitted = Submitted {
            channel: channel_key.to_string(),
            namespace: crate::telemetry::namespace(channel.as_str()),
            webhook_copy,
            push_copy,
            n_messages,
            total_bytes,
            transport: origin.transport(),
            source,
            first_id,
            timestamp: now,
        };
        Ok((ticket, submitted))
    }

    /// The receipt of a submitted publish once the bus answered, and what follows a stored
    /// publish (webhooks, counts).
    pub(crate) fn settle(
        &self,
        principal: &Principal,
        submitted: Submitted,
        stored: crate::backend::Result<Serials>,
    ) -> Result<Receipt, Error> {
        let serials = stored.map_err(ErrorInfo::from)?;
        let Submitted {
            channel,
            namespace,
            webhook_copy,
            push_copy,
            n_messages,
            total_bytes,
            transport,
            source,
            first_id,
            timestamp,
        } = submitted;
        // Stored: the push notifications it carries go out (best effort, after the ACK).
        // An idempotent repeat (no serial) was pushed the first time.
        if let Some(copy) = push_copy {
            let payloads: Vec<serde_json::Value> = copy
                .payloads
                .into_iter()
                .filter(|(index, _)| serials.get(*index).is_some_and(Option::is_some))
                .map(|(_, payload)| payload)
                .collect();
            if !payloads.is_empty() {
                self.wiring
                    .report_push(&copy.scope, &copy.channel, payloads);
            }
        }
        if let Some(messages) = webhook_copy {
            let accepted: Vec<Message> = messages
                .into_iter()
                .zip(&serials)
                .filter_map(|(mut message, serial)| {
                    message.serial = Some(serial.clone()?);
                    Some(message)
                })
                .collect();
            if !accepted.is_empty() {
                self.wiring
                    .report_webhook(crate::webhooks::Report::Messages {
                        channel,
                        messages: accepted,
                    });
            }
        }
        self.count_publish(principal, transport, n_messages, total_bytes);
        self.hub.pulse().messages_in(n_messages as u64);
        ::metrics::counter!(
            "realtime_messages_published_total",
            "source" => source,
            "namespace" => namespace
        )
        .increment(n_messages as u64);
        Ok(Receipt {
            serials,
            message_id: first_id
                .and_then(|id| id.rsplit_once(':').map(|(base, _)| base.to_owned())),
            timestamp,
            changed: None,
        })
    }

    /// Asks the moderation rules covering the channel (`moderation`), counting a refusal.
    async fn moderate(
        &self,
        principal: &Principal,
        channel: &ChannelName,
        origin: &Origin<'_>,
        messages: &[Message],
        ephemeral: bool,
    ) -> Result<(), Error> {
        if !self.moderation.covers(channel, ephemeral) {
            return Ok(());
        }
        let connection_id = match origin {
            Origin::Connection { id, .. } => Some(*id),
            Origin::Rest => None,
        };
        let question = Question {
            channel,
            client_id: principal.identity(),
            connection_id,
            messages,
            ephemeral,
        };
        // Boxed, and made only for a covered channel: the HTTP request's future would otherwise
        // enlarge every publish's future (and the read loop's per frame).
        Box::pin(self.moderation.check(question))
            .await
            .inspect_err(|_| count_refusal("moderation", origin.source()))
    }

    /// Takes a publish from its publisher's rate budget: the connection's for realtime (NACK
    /// 42911), the key's on this node for REST (429, 42910; Supabase users one budget each).
    fn charge_rate(
        &self,
        principal: &Principal,
        origin: &Origin<'_>,
        messages: usize,
        bytes: usize,
    ) -> Result<(), Error> {
        let limits = &self.limits;
        let now = Instant::now();
        let (rate, outcome) = match origin {
            Origin::Connection { rate: bucket, .. } => {
                let rate = &limits.connection_publish_rate;
                let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
                (rate, bucket.take(rate, messages, bytes, now))
            }
            Origin::Rest => {
                let rate = &limits.key_publish_rate;
                if rate.is_unlimited() {
                    return Ok(());
                }
                let owner = match principal.key_name.as_str() {
                    "supabase" => format!("supabase:{}", principal.identity().unwrap_or("")),
                    key => key.to_owned(),
                };
                let mut bucket = self
                    .rates
                    .entry(owner)
                    .or_insert_with(|| RateBucket::new(rate, now));
                (rate, bucket.take(rate, messages, bytes, now))
            }
        };
        let Err(exceeded) = outcome else {
            return Ok(());
        };
        let source = origin.source();
        let (reason, allowed) = match exceeded {
            Exceeded::Messages => (
                "rate_messages",
                format!(
                    "{} messages/s (burst {})",
                    rate.messages_per_sec, rate.burst_messages
                ),
            ),
            Exceeded::Bytes => (
                "rate_bytes",
                format!(
                    "{} bytes/s (burst {})",
                    rate.bytes_per_sec, rate.burst_bytes
                ),
            ),
        };
        count_refusal(reason, source);
        Err(match origin {
            Origin::Connection { .. } => Error::ConnectionRateLimited { allowed },
            Origin::Rest => Error::KeyRateLimited { allowed },
        })
    }

    /// Forgets REST publish budgets that have refilled, and gives back the room they held.
    pub(crate) fn sweep(&self) {
        let rate: PublishRate = self.limits.key_publish_rate;
        let now = Instant::now();
        self.rates.retain(|_, bucket| !bucket.is_full(&rate, now));
        crate::shrink::dash_map(&self.rates);
    }

    /// Adds an accepted publish to its app's live stats.
    fn count_publish(&self, principal: &Principal, transport: Transport, n: usize, bytes: usize) {
        let app = stats::app_of(principal);
        self.stats
            .record_publish(app, transport, n, bytes, protocol::now_ms());
    }
}

impl Origin<'_> {
    /// The stats' transport.
    fn transport(&self) -> Transport {
        match self {
            Origin::Connection { .. } => Transport::Realtime,
            Origin::Rest => Transport::Rest,
        }
    }

    /// The metrics label.
    pub(crate) fn source(&self) -> &'static str {
        match self {
            Origin::Connection { .. } => "realtime",
            Origin::Rest => "rest",
        }
    }
}

fn random_id_base() -> String {
    let bytes: [u8; 9] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Only subscribers see a channel through a filter; anything sent goes to the channel itself.
pub(crate) fn refuse_filtered(channel: &ChannelName) -> Result<(), Error> {
    if channel.is_filtered() {
        return Err(Error::FilteredChannel {
            channel: channel.as_str().to_owned(),
        });
    }
    Ok(())
}
