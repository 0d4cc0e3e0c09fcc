//! ANNOTATION (action 21) from a client: annotate messages, then ACK with the annotations'
//! serials or NACK, by msgSerial like a publish.

use std::ops::ControlFlow;

use protocol::message::{Modes, PublishResult};
use protocol::{Action, ProtocolMessage};

use super::Connection;
use crate::error::Error;
use crate::publish::Origin;

impl Connection {
    /// Like a publish, accepted on channels this connection has not attached; an attachment
    /// must have the `ANNOTATION_PUBLISH` mode.
    pub(super) async fn on_annotation(&mut self, message: ProtocolMessage) -> ControlFlow<()> {
        let Some(msg_serial) = message.msg_serial else {
            return self.fatal(Error::NoMsgSerial {
                action: "ANNOTATION",
            });
        };
        // Awaited in the read loop, so ACKs stay in msgSerial order.
        let result = match self.parse_channel(&message).and_then(|channel| {
            self.require_mode(&channel, Modes::ANNOTATION_PUBLISH, "annotation publish")?;
            Ok(channel)
        }) {
            Ok(channel) => {
                self.gateway
                    .annotate(
                        &self.principal,
                        &channel,
                        message.annotations.unwrap_or_default(),
                        Origin::Connection {
                            id: &self.id,
                            msg_serial,
                            rate: &self.publish_rate,
                        },
                    )
                    .await
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(serials) => {
                self.outbox.reply(&ProtocolMessage {
                    msg_serial: Some(msg_serial),
                    count: Some(1),
                    res: Some(vec![PublishResult { serials }]),
                    ..ProtocolMessage::new(Action::Ack)
                });
            }
            Err(error) => self.nack(msg_serial, error),
        }
        ControlFlow::Continue(())
    }
}
