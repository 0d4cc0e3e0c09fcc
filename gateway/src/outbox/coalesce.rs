//! Merging a lagging subscriber's queued MESSAGE frames.
//!
//! A delivery is encoded once per fan-out and the same bytes are queued for every subscriber
//! (`hub::fan_out`), so merging frames means decoding and encoding again. The writer does it
//! only for a connection that is behind (its last socket write blocked, or deliveries of
//! `LAGGING_BACKLOG_BYTES` or more queued) and only when the frame it takes is followed by
//! another MESSAGE on the same channel (`Popped::run`): a client that keeps up is never
//! re-encoded for, and one that fell behind catches up in fewer, bigger frames (up to
//! `MAX_MERGED_FRAME_BYTES`), each a WebSocket message and a dispatch less on its side.
//!
//! A merged frame is what the client would have made of the frames one by one: every message
//! gets the `id`, `connectionId` and `timestamp` it would have inherited from its own frame
//! (ably-js fills `<frame id>:<index>`, the frame's connectionId and timestamp into messages
//! without them), messages stay in order, and the frame carries the `channelSerial` of the last
//! frame merged, which is its last message's serial: a client that resumes after it (ATTACH
//! with that channelSerial) gets exactly the messages after it.

use protocol::{Action, Format, Message, ProtocolMessage};

use crate::frame::Frame;

/// Largest merged frame (from the encoded sizes of the frames merged; the merged frame can be a
/// little bigger, each message now carrying its own id): big enough that a backlog of small
/// messages goes out hundreds at a time, small enough for any client's reassembly.
pub(crate) const MAX_MERGED_FRAME_BYTES: usize = 64 * 1024;

/// Deliveries queued from which a connection counts as behind even though its socket took the
/// last write: a fast reader never holds this much (a bulk delivery hold gathers 10 ms).
pub(crate) const LAGGING_BACKLOG_BYTES: usize = 64 * 1024;

/// A cheap tag for a channel name (as the subscriber wrote it), never 0, so the queue can tell
/// runs of one channel's MESSAGE frames without decoding them. Equal tags are only a hint:
/// `Run::push` compares the decoded channel names.
pub(crate) fn channel_tag(channel: &str) -> u64 {
    // FNV-1a: one pass over a short name, once per fan-out.
    let hash = channel
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    hash | 1
}

/// MESSAGE frames of one channel being merged.
pub(crate) struct Run {
    format: Format,
    /// The first frame as it was, sent unchanged if nothing joins it.
    first: Frame,
    /// The merged message: the channel, the last frame's channelSerial and timestamp, and
    /// every message with its inherited fields made explicit.
    merged: ProtocolMessage,
    frames: usize,
    bytes: usize,
}

impl Run {
    /// Starts a run with a MESSAGE frame; gives the frame back if it is not one.
    pub(crate) fn start(first: Frame, format: Format) -> Result<Run, Frame> {
        let Some(mut merged) = decode(&first, format) else {
            return Err(first);
        };
        let messages = explicit(&mut merged);
        merged.messages = Some(messages);
        Ok(Run {
            format,
            bytes: first.len(),
            first,
            merged,
            frames: 1,
        })
    }

    /// Encoded bytes of the frames in the run.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds the next queued frame if it is a MESSAGE on the same channel; false leaves it to be
    /// sent on its own.
    pub(crate) fn push(&mut self, frame: &Frame) -> bool {
        let Some(mut next) = decode(frame, self.format) else {
            return false;
        };
        if next.channel != self.merged.channel {
            return false;
        }
        let messages = explicit(&mut next);
        self.merged
            .messages
            .get_or_insert_with(Vec::new)
            .extend(messages);
        // The client keeps the last channelSerial it was given.
        if next.channel_serial.is_some() {
            self.merged.channel_serial = next.channel_serial;
        }
        self.merged.timestamp = next.timestamp.or(self.merged.timestamp);
        self.frames += 1;
        self.bytes += frame.len();
        true
    }

    /// The frame to send: the first one untouched if nothing joined it, else the merged one.
    pub(crate) fn finish(self) -> Result<Frame, protocol::codec::EncodeError> {
        if self.frames == 1 {
            return Ok(self.first);
        }
        ::metrics::counter!("realtime_coalesced_frames_total").increment(self.frames as u64);
        Frame::encode(&self.merged, self.format)
    }
}

/// A MESSAGE frame with a channel and messages, decoded.
fn decode(frame: &Frame, format: Format) -> Option<ProtocolMessage> {
    let message: ProtocolMessage = protocol::codec::decode(frame.as_bytes(), format).ok()?;
    let usable = message.action() == Some(Action::Message)
        && message.channel.is_some()
        && message.messages.as_ref().is_some_and(|m| !m.is_empty());
    usable.then_some(message)
}

/// Takes the frame's messages, each with what it inherits from the frame made explicit, as
/// ably-js would fill it in (`populateFieldsFromParent`); the frame keeps no id or connectionId
/// of its own, which would be wrong for messages from other frames.
fn explicit(frame: &mut ProtocolMessage) -> Vec<Message> {
    let mut messages = frame.messages.take().unwrap_or_default();
    let id = frame.id.take();
    let connection_id = frame.connection_id.take();
    for (index, message) in messages.iter_mut().enumerate() {
        if message.id.is_none() {
            message.id = id.as_ref().map(|id| format!("{id}:{index}"));
        }
        if message.connection_id.is_none() {
            message.connection_id = connection_id.clone();
        }
        if message.timestamp.is_none() {
            message.timestamp = frame.timestamp;
        }
    }
    messages
}

#[cfg(test)]
mod tests;
