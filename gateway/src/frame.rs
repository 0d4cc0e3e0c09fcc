//! An encoded outgoing frame, shared by reference between every recipient.

use axum::extract::ws::{Message as WsMessage, Utf8Bytes};
use bytes::Bytes;
use protocol::codec::{encode_message, EncodeError};
use protocol::{Format, ProtocolMessage};

/// A ProtocolMessage encoded once for one wire format. Cloning shares the buffer (a refcount),
/// which is what lets one publication reach many subscribers without copying.
#[derive(Debug, Clone)]
pub struct Frame(WsMessage);

impl Frame {
    pub fn encode(message: &ProtocolMessage, format: Format) -> Result<Frame, EncodeError> {
        let bytes = encode_message(message, format)?;
        Ok(Frame(match format {
            // serde_json writes UTF-8; the check runs once per frame, not per recipient.
            Format::Json => WsMessage::Text(Utf8Bytes::from(
                String::from_utf8(bytes).expect("serde_json emits UTF-8"),
            )),
            Format::Msgpack => WsMessage::Binary(Bytes::from(bytes)),
        }))
    }

    pub(crate) fn close() -> Frame {
        Frame(WsMessage::Close(None))
    }

    /// A close frame with a WebSocket status code (RFC 6455 §7.4), e.g. 1007 for a text frame
    /// that is not UTF-8.
    pub(crate) fn close_with(code: u16, reason: &'static str) -> Frame {
        Frame(WsMessage::Close(Some(axum::extract::ws::CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
    }

    pub(crate) fn into_ws(self) -> WsMessage {
        self.0
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// The encoded ProtocolMessage (empty for a close frame).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            WsMessage::Text(text) => text.as_bytes(),
            WsMessage::Binary(bytes) => bytes,
            _ => &[],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
