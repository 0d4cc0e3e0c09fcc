//! A soak client's frames: encoding and decoding them, naming what the server said, and reading
//! when the backend sent what arrived.

use anyhow::{bail, Context as _};
use futures_util::SinkExt as _;
use protocol::{codec, Data, Format, ProtocolMessage};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::payload::Stamp;
use crate::target::Ws;

pub(super) async fn send(
    ws: &mut Ws,
    message: &ProtocolMessage,
    format: Format,
) -> anyhow::Result<()> {
    let bytes = codec::encode_message(message, format)?;
    let frame = match format {
        Format::Json => WsMessage::Text(String::from_utf8(bytes)?.into()),
        Format::Msgpack => WsMessage::Binary(bytes.into()),
    };
    ws.send(frame).await.context("sending")
}

pub(super) fn decode(frame: WsMessage) -> anyhow::Result<Option<ProtocolMessage>> {
    Ok(match frame {
        WsMessage::Text(text) => Some(codec::decode(text.as_bytes(), Format::Json)?),
        WsMessage::Binary(bytes) => Some(codec::decode(&bytes, Format::Msgpack)?),
        WsMessage::Close(close) => bail!("WebSocket closed: {close:?}"),
        _ => None,
    })
}

pub(super) fn describe(message: &ProtocolMessage) -> String {
    let action = message.action().map_or_else(
        || message.action.to_string(),
        |a| format!("{a:?}").to_uppercase(),
    );
    match &message.error {
        Some(error) => format!("{action} {} ({})", error.code, error.message),
        None => action,
    }
}

/// A reason's name without the details that make every instance different.
pub(super) fn reason_of(why: &str) -> String {
    why.split(" (").next().unwrap_or(why).to_owned()
}

/// When the backend sent it: a publication's stamp (only if meant for channel `number`), or an
/// event's `sent_us`. `None` for a publication meant for another channel.
pub(super) fn sent_us_of(
    data: &Option<Data>,
    encoding: Option<&str>,
    number: usize,
) -> Option<u64> {
    match data {
        Some(Data::String(text)) if encoding.is_some_and(|e| e.contains("json")) => {
            serde_json::from_str::<serde_json::Value>(text).ok()?["sent_us"].as_u64()
        }
        Some(Data::String(text)) => {
            let stamp = Stamp::parse(text.as_bytes())?;
            (stamp.publisher as usize == number).then_some(stamp.sent_us)
        }
        Some(Data::Other(value)) => value["sent_us"].as_u64(),
        _ => None,
    }
}
