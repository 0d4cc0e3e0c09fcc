//! ATTACH and DETACH.

use std::ops::ControlFlow;
use std::sync::Arc;

use protocol::message::{flags, Modes};
use protocol::{Action, ErrorInfo, ProtocolMessage};

use super::{Attachment, Connection};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::Error;
use crate::hub::{AttachRequest, DeltaCursor, Rewind, Subscriber, View};

impl Connection {
    pub(super) async fn on_attach(&mut self, message: ProtocolMessage) -> ControlFlow<()> {
        let channel = match self.parse_channel(&message) {
            Ok(channel) => channel,
            Err(error) => {
                self.channel_error(message.channel.as_deref().unwrap_or_default(), error);
                return ControlFlow::Continue(());
            }
        };
        // A filtered attachment's filter, parsed once here.
        let filter = match protocol::filter::split_qualifier(channel.as_str()) {
            Ok(qualifier) => qualifier,
            Err(error) => {
                self.channel_error(channel.as_str(), ErrorInfo::from(error));
                return ControlFlow::Continue(());
            }
        };
        // Params from the qualifier (`[?rewind=1]chat`, `[filter=…?rewind=1]chat`) or the
        // ATTACH, the latter winning.
        let mut params: BTreeMap<String, String> = channel.params().into_iter().collect();
        params.extend(message.params.clone().unwrap_or_default());
        let filter = filter.map(|qualifier| Arc::new(qualifier.filter));
        let accepted = match AttachParams::parse(&params) {
            Ok(accepted) => accepted,
            Err(error) => {
                self.channel_error(channel.as_str(), error);
                return ControlFlow::Continue(());
            }
        };
        // Requested modes: the `modes` param, else the ATTACH flags, else the defaults.
        let requested = match (accepted.modes, message.flags.map(Modes::from_bits_truncate)) {
            (Some(modes), _) => modes,
            (None, Some(modes)) if !modes.is_empty() => modes,
            _ => Modes::DEFAULT,
        };
        let modes = requested & self.principal.capability.modes(&channel);
        if modes.is_empty() {
            self.channel_error(
                channel.as_str(),
                Error::AttachDenied {
                    channel: channel.as_str().to_owned(),
                },
            );
            return ControlFlow::Continue(());
        }
        let base = self.principal.channel_key(&channel).into_owned();
        let key = self.attachment_key(&channel);
        let max_channels = self.gateway.config().limits.max_channels_per_connection;
        if !self.attached.contains_key(&key) && self.attached.len() >= max_channels {
            self.channel_error(
                channel.as_str(),
                Error::TooManyChannels { max: max_channels },
            );
            return ControlFlow::Continue(());
        }
        // ATTACH_RESUME: the client is re-attaching, so a rewind must not replay again.
        let attach_resume = message.flags.unwrap_or(0) & flags::ATTACH_RESUME != 0;
        let request = AttachRequest {
            channel_serial: message.channel_serial.clone().filter(|s| !s.is_empty()),
            rewind: accepted.rewind.filter(|_| !attach_resume),
            resume_allowed: !self.resume_failed,
            presence_lost: filter.is_none() && self.presence_lost.remove(&base),
        };
        let name: Arc<str> = channel.as_str().into();
        let subscriber = Subscriber {
            connection_id: self.id.clone(),
            channel_name: name.clone(),
            modes,
            occupancy_events: accepted.occupancy,
            echo: self.echo,
            append_full: accepted.append_full,
            seen_from: Default::default(),
            view: View {
                filter,
                delta: accepted.delta.then(DeltaCursor::default),
            },
            outbox: self.outbox.clone(),
        };
        let slot = subscriber.slot();
        let echoed = (!accepted.echoed.is_empty()).then_some(accepted.echoed);
        if !self.attached.contains_key(&key) {
            // Clustered: subscribed and caught up before the attach reads the log.
            if let Err(error) = self.gateway.join_channel(&base).await {
                self.gateway.leave_channel(&base);
                self.channel_error(channel.as_str(), error);
                return ControlFlow::Continue(());
            }
        }
        self.gateway
            .hub()
            .attach(&base, subscriber, &request, |outcome| ProtocolMessage {
                channel: Some(name.to_string()),
                flags: Some(modes.bits() | outcome.flags),
                channel_serial: Some(outcome.channel_serial.clone()),
                params: echoed,
                error: outcome.error.clone(),
                ..ProtocolMessage::new(Action::Attached)
            });
        if !self.attached.contains_key(&key) {
            ::metrics::gauge!("realtime_channels_attached").increment(1.0);
            self.gateway.hub().pulse().attachments_changed(1);
        }
        self.attached.insert(
            key,
            Attachment {
                name,
                base,
                slot,
                requested,
                modes,
                pace: None,
            },
        );
        ControlFlow::Continue(())
    }

    pub(super) fn on_detach(&mut self, message: ProtocolMessage) -> ControlFlow<()> {
        let channel = match self.parse_channel(&message) {
            Ok(channel) => channel,
            Err(error) => {
                self.channel_error(message.channel.as_deref().unwrap_or_default(), error);
                return ControlFlow::Continue(());
            }
        };
        if let Some(attachment) = self.attached.remove(&self.attachment_key(&channel)) {
            ::metrics::gauge!("realtime_channels_attached").decrement(1.0);
            self.gateway.hub().pulse().attachments_changed(-1);
            self.gateway
                .hub()
                .detach(&attachment.base, &attachment.slot);
            self.gateway.leave_channel(&attachment.base);
        }
        self.outbox.reply(&ProtocolMessage {
            channel: Some(channel.as_str().to_owned()),
            ..ProtocolMessage::new(Action::Detached)
        });
        ControlFlow::Continue(())
    }

    /// After a re-auth: channels the new capability no longer allows fail; others get the new
    /// modes.
    pub(super) fn apply_capability(&mut self) {
        let hub = self.gateway.hub();
        let mut refused = Vec::new();
        for (key, attachment) in self.attached.iter_mut() {
            let Ok(channel) = protocol::ChannelName::parse(&attachment.name) else {
                continue;
            };
            let modes = attachment.requested & self.principal.capability.modes(&channel);
            if modes.is_empty() {
                refused.push(key.clone());
            } else if modes != attachment.modes {
                attachment.modes = modes;
                hub.set_modes(&attachment.base, &attachment.slot, modes);
            }
        }
        for key in refused {
            if let Some(attachment) = self.attached.remove(&key) {
                ::metrics::gauge!("realtime_channels_attached").decrement(1.0);
                hub.pulse().attachments_changed(-1);
                hub.detach(&attachment.base, &attachment.slot);
                self.gateway.leave_channel(&attachment.base);
                self.channel_error(&attachment.name, Error::NoLongerPermitted);
            }
        }
    }
}

/// The channel params we act on; everything else is dropped (and not echoed), as Ably does.
struct AttachParams {
    rewind: Option<Rewind>,
    /// `modes=presence,subscribe`: overrides the ATTACH flags.
    modes: Option<Modes>,
    /// `occupancy=metrics`: `[meta]occupancy` events.
    occupancy: bool,
    /// `appendMode=full`: appends come as whole messages.
    append_full: bool,
    /// `delta=vcdiff`: payloads come as patches against the previous message's.
    delta: bool,
    /// What goes back in ATTACHED `params`.
    echoed: BTreeMap<String, String>,
}

impl AttachParams {
    fn parse(params: &BTreeMap<String, String>) -> Result<AttachParams, Error> {
        let mut accepted = AttachParams {
            rewind: None,
            modes: None,
            occupancy: false,
            append_full: false,
            delta: false,
            echoed: BTreeMap::new(),
        };
        for (name, value) in params {
            let keep = match name.as_str() {
                "rewind" => {
                    accepted.rewind = Some(parse_rewind(value)?);
                    true
                }
                "modes" => {
                    accepted.modes = Some(parse_modes(value)?);
                    true
                }
                "occupancy" => {
                    accepted.occupancy = value == "metrics";
                    accepted.occupancy
                }
                "appendMode" => {
                    accepted.append_full = value == "full";
                    true
                }
                "delta" => {
                    accepted.delta = value == "vcdiff";
                    accepted.delta
                }
                _ => false,
            };
            if keep {
                accepted.echoed.insert(name.clone(), value.clone());
            }
        }
        Ok(accepted)
    }
}

/// `modes=presence,publish,subscribe,presence_subscribe,...` to flag bits.
fn parse_modes(value: &str) -> Result<Modes, Error> {
    value
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .try_fold(Modes::empty(), |modes, mode| {
            let bit = match mode {
                "presence" => Modes::PRESENCE,
                "publish" => Modes::PUBLISH,
                "subscribe" => Modes::SUBSCRIBE,
                "presence_subscribe" => Modes::PRESENCE_SUBSCRIBE,
                "annotation_publish" => Modes::ANNOTATION_PUBLISH,
                "annotation_subscribe" => Modes::ANNOTATION_SUBSCRIBE,
                "object_subscribe" => Modes::OBJECT_SUBSCRIBE,
                "object_publish" => Modes::OBJECT_PUBLISH,
                _ => return Err(Error::UnknownMode(mode.to_owned())),
            };
            Ok(modes | bit)
        })
}

/// `rewind=N` (messages) or `rewind=30s` / `2m` / `1h` (a time span), as Ably accepts.
fn parse_rewind(value: &str) -> Result<Rewind, Error> {
    let invalid = || Error::BadRewind(value.to_owned());
    if let Ok(count) = value.parse::<usize>() {
        return Ok(Rewind::Messages(count));
    }
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let amount: u64 = value[..split].parse().map_err(|_| invalid())?;
    let seconds = match &value[split..] {
        "s" => amount,
        "m" => amount * 60,
        "h" => amount * 3600,
        _ => return Err(invalid()),
    };
    Ok(Rewind::Duration(Duration::from_secs(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewind_takes_counts_and_durations() {
        assert_eq!(parse_rewind("10").unwrap(), Rewind::Messages(10));
        assert_eq!(
            parse_rewind("30s").unwrap(),
            Rewind::Duration(Duration::from_secs(30))
        );
        assert_eq!(
            parse_rewind("2m").unwrap(),
            Rewind::Duration(Duration::from_secs(120))
        );
        assert_eq!(
            parse_rewind("1h").unwrap(),
            Rewind::Duration(Duration::from_secs(3600))
        );
        for bad in ["", "x", "10d", "-1", "m"] {
            assert_eq!(parse_rewind(bad).unwrap_err().code().code(), 40003, "{bad}");
        }
    }
}
