//! Fan-out: encode once per (format, channel name as subscribed), queue the shared bytes for
//! every subscriber that wants them, and count deliveries and bytes per format.

use std::collections::HashMap;
use std::sync::Arc;

use protocol::{Action, ErrorCode, ErrorInfo, Format, Message, PresenceMessage, ProtocolMessage};

use super::subscribers::Subscribers;
use super::views::{FanOutViews, Form};
use super::Subscriber;
use crate::frame::Frame;
use crate::outbox::Delivery;

/// Channels with at least this many subscribers deliver in bulk: their writers may gather a
/// few milliseconds of frames into one write (see `Limits::min_flush_interval`), which is where
/// one syscall per subscriber per message costs most. Smaller channels are written at once.
const BULK_FAN_OUT: usize = 64;

/// Encodes once per (format, channel name as subscribed, view share) and queues the shared
/// bytes for every subscriber `wanted` accepts; `publisher`'s own copy (an echo) is queued as
/// one of its replies (see `Outbox`). Attachments with a filter or deltas get their view's share
/// (`views.rs`), worked out once per view. Returns the deliveries (messages or presence events
/// times subscribers).
pub(super) fn fan_out(
    subscribers: &Subscribers,
    outgoing: &mut ProtocolMessage,
    publisher: Option<&str>,
    wanted: impl Fn(&Subscriber) -> bool,
) -> Result<u64, ErrorInfo> {
    let viewed = subscribers.viewers() > 0
        && outgoing.action == Action::Message as u8
        && outgoing.messages.as_ref().is_some_and(|m| !m.is_empty());
    let mut views = viewed.then(|| {
        let messages = outgoing.messages.take().unwrap_or_default();
        FanOutViews::new(messages, outgoing.id.clone())
    });
    let delivered = deliver(subscribers, outgoing, &mut views, publisher, wanted);
    if let Some(views) = views {
        outgoing.messages = Some(views.messages);
    }
    delivered
}

/// A frame made for a fan-out: the name it carries, its format, which view share in which form
/// (None: the messages as they are), its encoding and its channel tag.
type Made = (Arc<str>, Format, Option<(usize, Form)>, Vec<Frame>, u64);

/// What tells the frames of one fan-out apart: name, format, share and form.
type FrameKey = (Arc<str>, Format, Option<(usize, Form)>);

fn deliver(
    subscribers: &Subscribers,
    outgoing: &mut ProtocolMessage,
    views: &mut Option<FanOutViews>,
    publisher: Option<&str>,
    wanted: impl Fn(&Subscriber) -> bool,
) -> Result<u64, ErrorInfo> {
    let mut frames: Vec<Made> = Vec::with_capacity(2);
    // (items, bytes) per format.
    let mut sent = [(0u64, 0u64); 2];
    let bulk = subscribers.len() >= BULK_FAN_OUT;
    // Only MESSAGE frames that move the channel's position may be merged for a lagging
    // subscriber (`outbox::coalesce`); `[meta]occupancy` events do not.
    let mergeable = outgoing.action == Action::Message as u8 && outgoing.channel_serial.is_some();
    let per_frame = match views {
        Some(views) => views.messages.len(),
        None => outgoing
            .messages
            .as_ref()
            .map(Vec::len)
            .or(outgoing.presence.as_ref().map(Vec::len))
            .unwrap_or(1),
    } as u64;
    let mut chains = views.as_ref().map(|_| subscribers.chains());
    // With views, names and shares can be as many as subscribers (a filter each): frames are
    // found through an index, not by scanning them.
    let mut index_of: Option<HashMap<FrameKey, usize>> = views.as_ref().map(|_| HashMap::new());
    let at = tokio::time::Instant::now();
    for subscriber in subscribers.iter().filter(|s| wanted(s)) {
        let format = subscriber.outbox.format;
        let shape = match (views.as_mut(), chains.as_deref_mut()) {
            (Some(views), Some(chains)) if !subscriber.view.is_plain() => {
                match views.share_for(&subscriber.view, chains) {
                    None => continue,
                    Some((share, form)) if views.is_everything(share, form) => None,
                    Some(shape) => Some(shape),
                }
            }
            _ => None,
        };
        let found = match &index_of {
            Some(index_of) => index_of
                .get(&(subscriber.channel_name.clone(), format, shape))
                .copied(),
            None => frames.iter().position(|(name, f, s, _, _)| {
                *f == format && *s == shape && **name == *subscriber.channel_name
            }),
        };
        let index = match found {
            Some(index) => index,
            None => {
                outgoing.channel = Some(subscriber.channel_name.to_string());
                let encoded = encode_view(outgoing, views.as_mut(), shape, format)?;
                let tag = if mergeable {
                    crate::outbox::coalesce::channel_tag(&subscriber.channel_name)
                } else {
                    0
                };
                frames.push((subscriber.channel_name.clone(), format, shape, encoded, tag));
                if let Some(index_of) = &mut index_of {
                    let key = (subscriber.channel_name.clone(), format, shape);
                    index_of.insert(key, frames.len() - 1);
                }
                frames.len() - 1
            }
        };
        let items = match (shape, views.as_ref()) {
            (Some((share, _)), Some(views)) => views.selected(share) as u64,
            _ => per_frame,
        };
        let slot = &mut sent[usize::from(format == Format::Msgpack)];
        slot.0 += items;
        let (_, _, _, encoded, channel_tag) = &frames[index];
        let delivery = Delivery {
            at,
            bulk,
            own: publisher == Some(&*subscriber.connection_id),
            channel_tag: *channel_tag,
        };
        for frame in encoded {
            slot.1 += frame.len() as u64;
            subscriber.outbox.deliver(frame.clone(), delivery);
        }
    }
    let kind = if outgoing.action == Action::Presence as u8 {
        "presence"
    } else {
        "message"
    };
    let namespace = crate::telemetry::namespace(outgoing.channel.as_deref().unwrap_or_default());
    for (format, (count, bytes)) in ["json", "msgpack"].into_iter().zip(sent) {
        if count == 0 {
            continue;
        }
        ::metrics::counter!("realtime_bytes_total", "direction" => "out", "format" => format)
            .increment(bytes);
        ::metrics::counter!("realtime_deliveries_total", "format" => format, "kind" => kind, "namespace" => namespace)
            .increment(count);
    }
    Ok(sent.iter().map(|(count, _)| count).sum())
}

/// Encodes `outgoing` for one format: all its messages, or one view share's.
fn encode_view(
    outgoing: &mut ProtocolMessage,
    views: Option<&mut FanOutViews>,
    shape: Option<(usize, Form)>,
    format: Format,
) -> Result<Vec<Frame>, ErrorInfo> {
    let encoded = match (views, shape) {
        (None, _) => encode_split(outgoing, format, MAX_DELIVERY_FRAME_BYTES),
        (Some(views), None) => {
            // Lent to the frame and taken back: the caller keeps them (the log does).
            outgoing.messages = Some(std::mem::take(&mut views.messages));
            let encoded = encode_split(outgoing, format, MAX_DELIVERY_FRAME_BYTES);
            views.messages = outgoing.messages.take().unwrap_or_default();
            encoded
        }
        (Some(views), Some((share, form))) => {
            let mut shell = ProtocolMessage {
                messages: Some(views.messages(share, form)),
                ..outgoing.clone()
            };
            encode_split(&mut shell, format, MAX_DELIVERY_FRAME_BYTES)
        }
    };
    encoded.map_err(|error| {
        ErrorCode::InternalChannel.info(format!("could not encode message: {error}"))
    })
}

/// Largest MESSAGE frame a delivery is encoded into, unless one message alone is bigger: a
/// frame has to fit the socket's write buffer (`Limits::ws_max_write_buffer_bytes`, 1 MiB)
/// or the subscriber is dropped, and 1,000 small messages carry ~200 KB of ids and serials.
pub const MAX_DELIVERY_FRAME_BYTES: usize = 256 * 1024;

/// Encodes a MESSAGE (or PRESENCE) for one format as one frame or, when that is over `max`
/// bytes, as several frames of consecutive messages (halved until each fits or holds one
/// message), each MESSAGE frame with the `channelSerial` of its last message, so a client that
/// resumes after any of them resumes right. Messages without an id get the one ably-js would
/// give them from the whole frame (`<id>:<index>`), so splitting changes no message's id.
/// Frames with one message go as they are.
pub fn encode_split(
    outgoing: &mut ProtocolMessage,
    format: Format,
    max: usize,
) -> Result<Vec<Frame>, protocol::codec::EncodeError> {
    let whole = Frame::encode(outgoing, format)?;
    if whole.len() <= max {
        return Ok(vec![whole]);
    }
    let mut frames = Vec::new();
    let serial = outgoing.channel_serial.clone();
    let split = if outgoing.messages.as_ref().is_some_and(|m| m.len() > 1) {
        let mut messages = outgoing.messages.take().unwrap_or_default();
        let mut given = Vec::new();
        if let Some(id) = &outgoing.id {
            for (index, message) in messages.iter_mut().enumerate() {
                if message.id.is_none() {
                    message.id = Some(format!("{id}:{index}"));
                    given.push(index);
                }
            }
        }
        let split = split_into(outgoing, &messages, format, max, &mut frames);
        // Left as the caller gave them: the log keeps these messages after the fan-out.
        for index in given {
            messages[index].id = None;
        }
        outgoing.messages = Some(messages);
        split
    } else if outgoing.presence.as_ref().is_some_and(|p| p.len() > 1) {
        let events = outgoing.presence.take().unwrap_or_default();
        let split = split_into(outgoing, &events, format, max, &mut frames);
        outgoing.presence = Some(events);
        split
    } else {
        return Ok(vec![whole]);
    };
    outgoing.channel_serial = serial;
    split?;
    Ok(frames)
}

/// What a frame carries a list of: messages or presence events.
trait Item: Clone {
    fn put(shell: &mut ProtocolMessage, items: Vec<Self>);
    /// Where a frame ending with it leaves the channel.
    fn serial(&self) -> Option<&str>;
}

impl Item for Message {
    fn put(shell: &mut ProtocolMessage, items: Vec<Self>) {
        shell.messages = Some(items);
    }
    fn serial(&self) -> Option<&str> {
        super::versions::position(self)
    }
}

impl Item for PresenceMessage {
    fn put(shell: &mut ProtocolMessage, items: Vec<Self>) {
        shell.presence = Some(items);
    }
    fn serial(&self) -> Option<&str> {
        None
    }
}

/// Halves `items` (known not to fit one frame) until each part fits, in order.
fn split_into<T: Item>(
    shell: &mut ProtocolMessage,
    items: &[T],
    format: Format,
    max: usize,
    frames: &mut Vec<Frame>,
) -> Result<(), protocol::codec::EncodeError> {
    let (first, second) = items.split_at(items.len() / 2);
    for half in [first, second] {
        T::put(shell, half.to_vec());
        if let Some(serial) = half.last().and_then(T::serial) {
            shell.channel_serial = Some(serial.to_owned());
        }
        let frame = Frame::encode(shell, format)?;
        if frame.len() <= max || half.len() <= 1 {
            frames.push(frame);
        } else {
            drop(frame);
            split_into(shell, half, format, max, frames)?;
        }
    }
    Ok(())
}
