//! Updates, deletes and appends (`Publisher::mutate`): checked against the message's latest
//! view and the caller's capability, stamped with a version, then stored and delivered through
//! the bus like any publish. The bus gives the operation the channel's next serial, which is
//! its version serial (see `hub::versions`).

use protocol::message::{message_action, MessageVersion};
use protocol::{ChannelName, Message, Operation};

use super::{random_id_base, Origin, Publisher, Receipt};
use crate::auth::Principal;
use crate::error::Error;
use crate::hub::versions;
use crate::hub::Publication;

/// What an operation is, for its capability and its errors.
struct Kind {
    what: &'static str,
    own: Operation,
    any: Operation,
}

impl Kind {
    fn of(action: u8) -> Kind {
        if action == message_action::DELETE {
            Kind {
                what: "delete",
                own: Operation::MessageDeleteOwn,
                any: Operation::MessageDeleteAny,
            }
        } else {
            Kind {
                what: if action == message_action::APPEND {
                    "append"
                } else {
                    "update"
                },
                own: Operation::MessageUpdateOwn,
                any: Operation::MessageUpdateAny,
            }
        }
    }

    fn denied(&self, channel: &ChannelName, operation: Operation) -> Error {
        Error::OperationDenied {
            what: self.what,
            channel: channel.as_str().to_owned(),
            operation: operation.as_str(),
        }
    }
}

impl Publisher {
    /// An update (action 1), delete (2) or append (5) of the message `op.serial` names. Given
    /// `data`, `name` and `extras` replace the stored ones (an append's data is added to it);
    /// `op.version` may carry the operation's clientId, description and metadata. Returns the
    /// version serial. A refusal happens before anything is stored or delivered.
    pub(crate) async fn mutate(
        &self,
        principal: &Principal,
        channel: &ChannelName,
        op: Message,
        origin: Origin<'_>,
    ) -> Result<Receipt, Error> {
        super::refuse_filtered(channel)?;
        let action = op.action.unwrap_or(message_action::UPDATE);
        let kind = Kind::of(action);
        let serial = op
            .serial
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(Error::OperationWithoutSerial)?;
        let key = principal.channel_key(channel);
        let rules = self.hub.rules_for(&key);
        if !rules.mutable_messages {
            return Err(Error::MutableMessagesOff {
                channel: channel.as_str().to_owned(),
            });
        }
        let any = principal.allows(channel, kind.any);
        if !any && !principal.allows(channel, kind.own) {
            return Err(kind.denied(channel, kind.any));
        }
        let latest = self
            .latest(&key, &serial)
            .await?
            .ok_or_else(|| Error::NoSuchMessage {
                serial: serial.clone(),
            })?;
        if !any {
            // "Own": the message's clientId is the caller's, and both are identified.
            let Some(identity) = principal.identity() else {
                return Err(Error::OwnNeedsClientId { what: kind.what });
            };
            if latest.client_id.as_deref() != Some(identity) {
                return Err(kind.denied(channel, kind.any));
            }
        }
        versions::check(&latest, &op).map_err(|refusal| Error::NotAppendable(refusal.message()))?;
        let size = op.size();
        let max = self.limits.max_message_bytes;
        if size > max {
            return Err(Error::MessageTooLarge { size, max });
        }
        let now = protocol::now_ms();
        let mut version = op.version.unwrap_or_default();
        principal.stamp_client_id(&mut version.client_id)?;
        // Strictly later than the version it replaces, even within one millisecond.
        let after = latest
            .version
            .as_ref()
            .and_then(|v| v.timestamp)
            .or(latest.timestamp)
            .unwrap_or(0);
        let id = match origin {
            Origin::Connection { id, msg_serial, .. } => format!("{id}:{msg_serial}:0"),
            Origin::Rest => format!("{}:0", random_id_base()),
        };
        // A changed message carries its editor's userClaim (Ably Chat's rule); a client's own is
        // dropped. Extras left out keep the message's, the claim too, unless the editor has one.
        let mut extras = op.extras.or_else(|| {
            principal
                .user_claim(channel)
                .and_then(|_| latest.extras.clone())
        });
        if extras.is_some() {
            principal.stamp_user_claim(channel, &mut extras);
        }
        // Only what an operation may change travels: identity stays the original's.
        let op = Message {
            id: Some(id),
            action: Some(action),
            serial: Some(serial),
            name: op.name,
            data: op.data,
            encoding: op.encoding,
            extras,
            timestamp: Some(now),
            version: Some(MessageVersion {
                serial: None,
                timestamp: Some(now.max(after + 1)),
                ..version
            }),
            ..Message::default()
        };
        self.charge_rate(principal, &origin, 1, size)?;
        // An edit or append brings new content; a delete does not.
        if action != message_action::DELETE {
            self.moderate(
                principal,
                channel,
                &origin,
                std::slice::from_ref(&op),
                false,
            )
            .await?;
        }
        let (connection_id, frame_id) = match origin {
            Origin::Connection { id, msg_serial, .. } => {
                (Some(id), Some(format!("{id}:{msg_serial}")))
            }
            Origin::Rest => (None, None),
        };
        let applied = versions::apply(&latest, &op).ok();
        let serials = self
            .wiring
            .bus()
            .publish(
                &self.hub,
                Publication {
                    channel: &key,
                    messages: vec![op],
                    client_ids: vec![true],
                    connection_id,
                    id: frame_id,
                    timestamp: now,
                },
                rules.retention,
            )
            .await
            .map_err(protocol::ErrorInfo::from)?;
        let changed = match (applied, serials.first()) {
            (Some(mut applied), Some(Some(serial))) => {
                let version = applied.latest.version.get_or_insert_with(Default::default);
                version.serial = Some(serial.clone());
                applied.delivered.version = applied.latest.version.clone();
                if self
                    .wiring
                    .webhooks_want(crate::config::Source::Message, &key)
                {
                    self.wiring
                        .report_webhook(crate::webhooks::Report::Messages {
                            channel: key.to_string(),
                            messages: vec![applied.delivered],
                        });
                }
                Some(applied.latest)
            }
            _ => None,
        };
        self.count_publish(principal, origin.transport(), 1, size);
        ::metrics::counter!(
            "realtime_message_operations_total",
            "action" => kind.what,
            "namespace" => crate::telemetry::namespace(channel.as_str())
        )
        .increment(1);
        Ok(Receipt {
            serials,
            message_id: None,
            timestamp: now,
            changed,
        })
    }

    /// The latest view of a message, read while joined to its channel (with a bus: subscribed
    /// and caught up from the shared store).
    async fn latest(
        &self,
        channel: &str,
        serial: &str,
    ) -> Result<Option<std::sync::Arc<Message>>, Error> {
        let bus = self.wiring.bus();
        let joined = bus.join(channel).await;
        let latest = joined.map(|()| self.hub.message(channel, serial));
        bus.leave(channel);
        Ok(latest.map_err(protocol::ErrorInfo::from)?)
    }
}
