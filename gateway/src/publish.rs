//! The checks and stamping every publish goes through, realtime or REST, before the hub.

use base64::Engine as _;
use protocol::{ChannelName, ErrorCode, ErrorInfo, Message, Operation};

use crate::auth::Principal;
use crate::hub::{Publication, Serials};
use crate::stats::{self, Transport};
use crate::Gateway;

/// What an accepted publish got.
pub struct Receipt {
    /// One per message, in order; `None` for an idempotent duplicate that was not delivered again.
    pub serials: Serials,
    /// The publish's id base (`<base>:<index>` ids), as REST reports it in `messageId`.
    pub message_id: Option<String>,
}

/// Where a publish came from; decides the default message ids.
pub enum Origin<'a> {
    /// A realtime MESSAGE: ids are `connectionId:msgSerial:index`.
    Connection { id: &'a str, msg_serial: u64 },
    /// A REST publish: ids are `<random>:index` unless the client gave its own.
    Rest,
}

impl Gateway {
    /// Checks capability, size and clientId, stamps ids and timestamps, then hands the messages
    /// to the hub. Returns each message's serial (`None` for an idempotent duplicate).
    pub async fn publish(
        &self,
        principal: &Principal,
        channel: &ChannelName,
        mut messages: Vec<Message>,
        origin: Origin<'_>,
    ) -> Result<Receipt, ErrorInfo> {
        if messages.is_empty() {
            return Err(ErrorCode::BadRequest.info("no messages to publish"));
        }
        if !principal.allows(channel, Operation::Publish) {
            return Err(ErrorCode::CapabilityDenied.info(format!(
                "publish on channel {:?} is not permitted by the capability",
                channel.as_str()
            )));
        }
        let max_bytes = self.config().limits.max_message_bytes;
        let now = protocol::now_ms();
        let mut random_base: Option<String> = None;
        let mut total_bytes = 0;
        // Realtime ids (`connectionId:msgSerial:index`) are idempotency keys too: a client
        // resends unacknowledged publishes with the same msgSerial after a resume.
        let realtime = matches!(origin, Origin::Connection { .. });
        let client_ids: Vec<bool> = messages
            .iter()
            .map(|m| realtime || m.id.is_some())
            .collect();
        for (index, message) in messages.iter_mut().enumerate() {
            match message.client_id.as_deref() {
                Some(claimed) if !principal.may_act_as(claimed) => {
                    return Err(ErrorCode::InvalidClientId.info(format!(
                        "message clientId {claimed:?} does not match the connection's clientId {:?}",
                        principal.identity().unwrap_or("(anonymous)")
                    )));
                }
                Some("*") => {
                    return Err(ErrorCode::InvalidClientId.info("clientId \"*\" is reserved"));
                }
                Some(_) => {}
                None => message.client_id = principal.identity().map(str::to_owned),
            }
            let size = message.size();
            if size > max_bytes {
                return Err(ErrorCode::MessageTooLarge.info(format!(
                    "message of {size} bytes exceeds the {max_bytes}-byte limit"
                )));
            }
            total_bytes += size;
            // REST "publish on behalf of a realtime connection": the key names a live one.
            if let (Origin::Rest, Some(key)) = (&origin, message.connection_key.take()) {
                let live = self.connection_id_for_key(&key).ok_or_else(|| {
                    ErrorCode::InvalidConnectionIdMessage
                        .info("connectionKey does not name a live connection")
                })?;
                message.connection_id = Some(live);
            }
            message.connection_key = None;
            message.timestamp = Some(now);
            message.action.get_or_insert(0);
            if message.id.is_none() {
                message.id = Some(match origin {
                    Origin::Connection { id, msg_serial } => format!("{id}:{msg_serial}:{index}"),
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
        let first_id = messages.first().and_then(|m| m.id.clone());
        let n_messages = messages.len();
        let (connection_id, id) = match origin {
            Origin::Connection { id, msg_serial } => (Some(id), Some(format!("{id}:{msg_serial}"))),
            Origin::Rest => (None, None),
        };
        let channel_key = principal.channel_key(channel);
        let retention = self.hub().retention_for(&channel_key);
        let publication = Publication {
            channel: &channel_key,
            messages,
            client_ids,
            connection_id,
            id,
            timestamp: now,
        };
        let webhook_copy = self
            .webhooks_want(crate::webhooks::Source::Message, &channel_key)
            .then(|| publication.messages.clone());
        let serials = self
            .bus()
            .publish(self.hub(), publication, retention)
            .await?;
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
                self.report_webhook(crate::webhooks::Report::Messages {
                    channel: channel_key.to_string(),
                    messages: accepted,
                });
            }
        }
        self.count_publish(principal, &origin, n_messages, total_bytes);
        self.hub().pulse().messages_in(n_messages as u64);
        ::metrics::counter!(
            "realtime_messages_published_total",
            "source" => match origin { Origin::Connection { .. } => "realtime", Origin::Rest => "rest" },
            "namespace" => crate::telemetry::namespace(channel.as_str())
        )
        .increment(n_messages as u64);
        Ok(Receipt {
            serials,
            message_id: first_id
                .and_then(|id| id.rsplit_once(':').map(|(base, _)| base.to_owned())),
        })
    }

    /// Adds an accepted publish to its app's live stats.
    fn count_publish(&self, principal: &Principal, origin: &Origin<'_>, n: usize, bytes: usize) {
        let transport = match origin {
            Origin::Connection { .. } => Transport::Realtime,
            Origin::Rest => Transport::Rest,
        };
        let app = stats::app_of(principal);
        self.stats()
            .record_publish(app, transport, n, bytes, protocol::now_ms());
    }
}

fn random_id_base() -> String {
    let bytes: [u8; 9] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
