//! MESSAGE from a client: publish, then ACK or NACK by msgSerial.

use protocol::message::Modes;
use protocol::{Action, ChannelName, ErrorInfo, ProtocolMessage};
use std::ops::ControlFlow;

use super::pipeline::result_of;
use super::Connection;
use crate::error::Error;
use crate::hub::versions::is_operation;
use crate::limits::Pace;
use crate::publish::Origin;

impl Connection {
    /// Accepted whether or not this connection attached the channel: ably-js publishes on
    /// channels it has not attached, and after a reconnect sends queued publishes first.
    pub(super) async fn on_publish(&mut self, message: ProtocolMessage) -> ControlFlow<()> {
        let Some(msg_serial) = message.msg_serial else {
            return self.fatal(Error::NoMsgSerial { action: "MESSAGE" });
        };
        let channel = match self.parse_channel(&message).and_then(|channel| {
            self.require_mode(&channel, Modes::PUBLISH, "publish")?;
            self.take_pace(&channel)?;
            Ok(channel)
        }) {
            Ok(channel) => channel,
            Err(error) => {
                self.drain_pipeline().await;
                self.nack(msg_serial, error);
                return ControlFlow::Continue(());
            }
        };
        let mut messages = message.messages.unwrap_or_default();
        // An update, delete or append comes alone (RTL32); mixed in, publish refuses it.
        if messages.len() == 1 && is_operation(&messages[0]) {
            let op = messages.remove(0);
            // Not pipelined: it reads the message's latest view, which pending publishes
            // may make or change.
            self.drain_pipeline().await;
            let origin = Origin::Connection {
                id: &self.id,
                msg_serial,
                rate: &self.publish_rate,
            };
            let result = self
                .gateway
                .mutate(&self.principal, &channel, op, origin)
                .await;
            match result {
                Ok(receipt) => self.ack(msg_serial, vec![result_of(receipt)]),
                Err(error) => self.nack(msg_serial, error),
            }
            return ControlFlow::Continue(());
        }
        // Handed to the bus here, in frame order (the order of the channel's serials); the
        // ACK waits in the pipeline.
        let origin = Origin::Connection {
            id: &self.id,
            msg_serial,
            rate: &self.publish_rate,
        };
        match self
            .gateway
            .submit(&self.principal, &channel, messages, origin)
            .await
        {
            Ok((ticket, submitted)) => self.pipeline_publish(msg_serial, ticket, submitted),
            Err(error) => {
                self.drain_pipeline().await;
                self.nack(msg_serial, error);
            }
        }
        ControlFlow::Continue(())
    }

    /// One message from this attachment's publish pace, where the principal's claims limit it
    /// (Ably's `ably.limits.publish.perAttachment.maxRate.*`); other channels are not paced.
    fn take_pace(&mut self, channel: &ChannelName) -> Result<(), Error> {
        let Some(per_sec) = self.principal.attachment_rate(channel) else {
            return Ok(());
        };
        let key = self.principal.channel_key(channel);
        let Some(attachment) = self.attached.get_mut(key.as_ref()) else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        let pace = attachment
            .pace
            .get_or_insert_with(|| Pace::new(per_sec, now));
        if pace.per_sec() != per_sec {
            // The claims changed (a re-auth): the new limit starts afresh.
            *pace = Pace::new(per_sec, now);
        }
        if pace.take(now) {
            return Ok(());
        }
        crate::limits::count_refusal("rate_attachment", "realtime");
        Err(Error::AttachmentRateLimited {
            channel: channel.as_str().to_owned(),
            per_sec,
        })
    }

    pub(super) fn nack(&self, msg_serial: u64, error: impl Into<ErrorInfo>) {
        let error = error.into();
        tracing::debug!(connection_id = %self.id, code = error.code, message = %error.message, "nack");
        self.outbox.reply(&ProtocolMessage {
            msg_serial: Some(msg_serial),
            count: Some(1),
            ..ProtocolMessage::error(Action::Nack, error)
        });
    }
}
