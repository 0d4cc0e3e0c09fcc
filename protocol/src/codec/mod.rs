//! The two wire formats. Every connection and REST request picks one; a publication is encoded at
//! most once per format and the bytes are shared by every recipient.

mod json;
mod msgpack;
pub mod shape;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::message::{Data, Message, PresenceMessage, ProtocolMessage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON in WebSocket text frames; binary payloads travel as base64 with `encoding` saying so.
    Json,
    /// msgpack in binary frames, with payload bytes as `bin`.
    Msgpack,
}

impl Format {
    /// The `format=` query value; absent means JSON (ably-python relies on that).
    pub fn from_param(value: Option<&str>) -> Option<Format> {
        match value {
            None | Some("json") => Some(Format::Json),
            Some("msgpack") => Some(Format::Msgpack),
            Some(_) => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Msgpack => "application/x-msgpack",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed msgpack: {0}")]
    Msgpack(#[from] rmp_serde::decode::Error),
}

#[derive(Debug, thiserror::Error)]
#[error("could not encode: {0}")]
pub struct EncodeError(String);

/// Decodes any wire value (a ProtocolMessage, a REST body) in the given format.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], format: Format) -> Result<T, DecodeError> {
    match format {
        Format::Json => json::decode(bytes),
        Format::Msgpack => msgpack::decode(bytes),
    }
}

/// Encodes any wire value in the given format. Payloads must already suit the format: use
/// `encode_message` for ProtocolMessages and `json_safe` for REST bodies that carry messages.
pub fn encode<T: Serialize>(value: &T, format: Format) -> Result<Vec<u8>, EncodeError> {
    match format {
        Format::Json => json::encode(value),
        Format::Msgpack => msgpack::encode(value),
    }
}

/// Encodes a ProtocolMessage, first turning binary payloads into base64 text for JSON.
pub fn encode_message(message: &ProtocolMessage, format: Format) -> Result<Vec<u8>, EncodeError> {
    if format == Format::Json && has_binary(message) {
        let mut copy = message.clone();
        for m in copy.messages.iter_mut().flatten() {
            m.make_json_safe();
        }
        for p in copy.presence.iter_mut().flatten() {
            base64_binary(&mut p.data, &mut p.encoding);
        }
        for a in copy.annotations.iter_mut().flatten() {
            a.make_json_safe();
        }
        return encode(&copy, format);
    }
    encode(message, format)
}

fn has_binary(message: &ProtocolMessage) -> bool {
    let binary = |data: &Option<Data>| matches!(data, Some(Data::Binary(_)));
    message.messages.iter().flatten().any(|m| binary(&m.data))
        || message.presence.iter().flatten().any(|p| binary(&p.data))
        || message
            .annotations
            .iter()
            .flatten()
            .any(|a| binary(&a.data))
}

impl Message {
    /// JSON cannot carry bytes: base64 them and append the `base64` step to `encoding`.
    pub fn make_json_safe(&mut self) {
        base64_binary(&mut self.data, &mut self.encoding);
    }
}

impl crate::message::Annotation {
    pub fn make_json_safe(&mut self) {
        base64_binary(&mut self.data, &mut self.encoding);
    }
}

impl PresenceMessage {
    pub fn make_json_safe(&mut self) {
        base64_binary(&mut self.data, &mut self.encoding);
    }
}

fn base64_binary(data: &mut Option<Data>, encoding: &mut Option<String>) {
    use base64::Engine as _;
    if let Some(Data::Binary(bytes)) = data {
        *data = Some(Data::String(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ));
        *encoding = Some(match encoding.take() {
            Some(previous) if !previous.is_empty() => format!("{previous}/base64"),
            _ => "base64".to_owned(),
        });
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
