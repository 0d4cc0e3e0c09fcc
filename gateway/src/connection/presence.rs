//! PRESENCE from a client: enter, update, leave; ACK or NACK by msgSerial.

use protocol::message::Modes;
use protocol::{Action, ChannelName, ErrorInfo, Operation, ProtocolMessage};
use std::ops::ControlFlow;

use super::Connection;
use crate::error::Error;

/// The LEAVE presence action.
const LEAVE: u8 = 3;

impl Connection {
    pub(super) async fn on_presence(&mut self, message: ProtocolMessage) -> ControlFlow<()> {
        let Some(msg_serial) = message.msg_serial else {
            return self.fatal(Error::NoMsgSerial { action: "PRESENCE" });
        };
        let result = match self.parse_channel(&message) {
            Ok(channel) => self.presence(&channel, message, msg_serial).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(_) => {
                self.outbox.reply(&ProtocolMessage {
                    msg_serial: Some(msg_serial),
                    count: Some(1),
                    ..ProtocolMessage::new(Action::Ack)
                });
            }
            Err(error) => self.nack(msg_serial, error),
        }
        ControlFlow::Continue(())
    }

    async fn presence(
        &mut self,
        channel: &ChannelName,
        message: ProtocolMessage,
        msg_serial: u64,
    ) -> Result<(), Error> {
        crate::publish::refuse_filtered(channel)?;
        if !self.principal.allows(channel, Operation::Presence) {
            return Err(Error::PresenceDenied {
                channel: channel.as_str().to_owned(),
            });
        }
        let channel_key = self.principal.channel_key(channel).into_owned();
        self.require_mode(channel, Modes::PRESENCE, "presence")?;
        if !self.attached.contains_key(&channel_key) {
            return Err(Error::PresenceNotAttached);
        }
        let now = protocol::now_ms();
        let mut events = message.presence.unwrap_or_default();
        if events.is_empty() {
            return Err(Error::NoPresenceMessages);
        }
        let max = self.gateway.config().limits.max_messages_per_publish;
        if events.len() > max {
            crate::limits::count_refusal("too_many_messages", "realtime");
            return Err(Error::TooManyMessages {
                n: events.len(),
                max,
            });
        }
        let hub = self.gateway.hub();
        let mut repeats = Vec::with_capacity(events.len());
        for (index, event) in events.iter_mut().enumerate() {
            let client_id = match event.client_id.as_deref() {
                Some(claimed) if !self.principal.may_act_as(claimed) || claimed == "*" => {
                    return Err(Error::PresenceClientIdMismatch(claimed.to_owned()));
                }
                Some(claimed) => claimed.to_owned(),
                None => self
                    .principal
                    .identity()
                    .map(str::to_owned)
                    .ok_or(Error::PresenceNoClientId)?,
            };
            self.principal.stamp_user_claim(channel, &mut event.extras);
            repeats.push(
                event.action != LEAVE
                    && event.id.is_some()
                    && hub.present_by(&channel_key, &client_id, &self.id, event),
            );
            event.client_id = Some(client_id);
            event.connection_id = Some(self.id.to_string());
            event.id = Some(format!("{}:{msg_serial}:{index}", self.id));
            event.timestamp = Some(now);
            let max_bytes = self.gateway.config().limits.max_message_bytes;
            let size = event.data.as_ref().map_or(0, |_| {
                protocol::codec::encode(&event.data, protocol::Format::Json).map_or(0, |b| b.len())
            });
            if size > max_bytes {
                return Err(Error::PresenceTooLarge {
                    size,
                    max: max_bytes,
                });
            }
        }
        // A re-entry of a member still present (after a resume) is acknowledged, not repeated.
        let events: Vec<_> = events
            .into_iter()
            .zip(repeats)
            .filter_map(|(event, repeat)| (!repeat).then_some(event))
            .collect();
        let first_here = !self.present_on.contains_key(&channel_key);
        if !events.is_empty() {
            hub.check_presence(&channel_key, &events)?;
            // Clustered, stored and announced through Redis; this node applies it as it hears
            // it back, like every other node.
            self.gateway
                .bus()
                .presence(hub, &channel_key, &events)
                .await
                .map_err(ErrorInfo::from)?;
            let entered = self.present_on.entry(channel_key.clone()).or_default();
            for event in &events {
                let client_id = event.client_id.as_deref().unwrap_or_default();
                if event.action == LEAVE {
                    entered.retain(|c| c != client_id);
                } else if !entered.iter().any(|c| c == client_id) {
                    entered.push(client_id.to_owned());
                }
            }
            self.gateway
                .report_webhook(crate::webhooks::Report::Presence {
                    channel: channel_key.clone(),
                    events,
                });
        }
        self.present_on.entry(channel_key).or_default();
        if first_here {
            self.record_for_resume();
        }
        Ok(())
    }
}
