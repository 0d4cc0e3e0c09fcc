//! ATTACH and DETACH.

use std::sync::Arc;

use protocol::message::flags;
use protocol::{Action, ErrorCode, ProtocolMessage};

use super::{Attachment, Connection, Flow};
use crate::hub::Subscriber;

impl Connection {
    pub(super) fn on_attach(&mut self, message: ProtocolMessage) -> Flow {
        let channel = match self.parse_channel(&message) {
            Ok(channel) => channel,
            Err(error) => {
                self.channel_error(message.channel.as_deref().unwrap_or_default(), error);
                return Flow::Continue;
            }
        };
        let requested = match message.flags.map(|f| f & flags::ALL_MODES) {
            Some(modes) if modes != 0 => modes,
            _ => flags::DEFAULT_MODES,
        };
        let modes = requested & self.principal.capability.modes(&channel);
        if modes == 0 {
            self.channel_error(
                channel.as_str(),
                ErrorCode::CapabilityDenied.info(format!(
                    "attach to channel {:?} is not permitted by the capability",
                    channel.as_str()
                )),
            );
            return Flow::Continue;
        }
        let base = channel.base().to_owned();
        let max_channels = self.gateway.config().limits.max_channels_per_connection;
        if !self.attached.contains_key(&base) && self.attached.len() >= max_channels {
            self.channel_error(
                channel.as_str(),
                ErrorCode::TooManyChannels
                    .info(format!("at most {max_channels} channels per connection")),
            );
            return Flow::Continue;
        }
        let name: Arc<str> = channel.as_str().into();
        let subscriber = Subscriber {
            connection_id: self.id.clone(),
            channel_name: name.clone(),
            modes,
            echo: self.echo,
            outbox: self.outbox.clone(),
        };
        self.gateway
            .hub()
            .attach(&base, subscriber, |channel_serial| ProtocolMessage {
                channel: Some(name.to_string()),
                flags: Some(modes),
                channel_serial,
                ..ProtocolMessage::new(Action::Attached)
            });
        self.attached.insert(base, Attachment { name, modes });
        Flow::Continue
    }

    pub(super) fn on_detach(&mut self, message: ProtocolMessage) -> Flow {
        let channel = match self.parse_channel(&message) {
            Ok(channel) => channel,
            Err(error) => {
                self.channel_error(message.channel.as_deref().unwrap_or_default(), error);
                return Flow::Continue;
            }
        };
        if self.attached.remove(channel.base()).is_some() {
            self.gateway.hub().detach(channel.base(), &self.id);
        }
        self.outbox.reply(&ProtocolMessage {
            channel: Some(channel.as_str().to_owned()),
            ..ProtocolMessage::new(Action::Detached)
        });
        Flow::Continue
    }

    /// After a re-auth: channels the new capability no longer allows fail; others get the new
    /// modes.
    pub(super) fn apply_capability(&mut self) {
        let hub = self.gateway.hub();
        let mut refused = Vec::new();
        for (base, attachment) in self.attached.iter_mut() {
            let Ok(channel) = protocol::ChannelName::parse(&attachment.name) else {
                continue;
            };
            let modes = attachment.modes & self.principal.capability.modes(&channel);
            if modes == 0 {
                refused.push(base.clone());
            } else if modes != attachment.modes {
                attachment.modes = modes;
                hub.set_modes(base, &self.id, modes);
            }
        }
        for base in refused {
            if let Some(attachment) = self.attached.remove(&base) {
                hub.detach(&base, &self.id);
                self.channel_error(
                    &attachment.name,
                    ErrorCode::CapabilityDenied
                        .info("the renewed token no longer permits this channel"),
                );
            }
        }
    }
}
