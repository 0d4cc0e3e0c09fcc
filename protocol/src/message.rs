//! `ProtocolMessage`, the one frame type of the realtime protocol, and the messages it carries.
//!
//! One struct serves both directions, with every field optional, because that is how Ably defines
//! it: the action says which fields matter. Unknown fields are ignored, as clients do.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::ErrorInfo;

/// Wire actions. Kept as a raw `u8` in `ProtocolMessage` so an unknown action decodes and can be
/// answered with an error instead of failing the whole frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Action {
    Heartbeat = 0,
    Ack = 1,
    Nack = 2,
    Connect = 3,
    Connected = 4,
    Disconnect = 5,
    Disconnected = 6,
    Close = 7,
    Closed = 8,
    Error = 9,
    Attach = 10,
    Attached = 11,
    Detach = 12,
    Detached = 13,
    Presence = 14,
    Message = 15,
    Sync = 16,
    Auth = 17,
    /// Annotations on messages (reactions), with `annotations` (TR2).
    Annotation = 21,
}

impl Action {
    pub fn from_u8(action: u8) -> Option<Self> {
        use Action::*;
        Some(match action {
            0 => Heartbeat,
            1 => Ack,
            2 => Nack,
            3 => Connect,
            4 => Connected,
            5 => Disconnect,
            6 => Disconnected,
            7 => Close,
            8 => Closed,
            9 => Error,
            10 => Attach,
            11 => Attached,
            12 => Detach,
            13 => Detached,
            14 => Presence,
            15 => Message,
            16 => Sync,
            17 => Auth,
            21 => Annotation,
            _ => return None,
        })
    }
}

/// ATTACH/ATTACHED flag bits below the modes (protocol §2.3).
pub mod flags {
    pub const HAS_PRESENCE: u64 = 1;
    pub const HAS_BACKLOG: u64 = 2;
    /// On ATTACH (deprecated but still sent by some clients): a re-attach, not a fresh one.
    pub const ATTACH_RESUME: u64 = 32;
    pub const RESUMED: u64 = 4;
}

bitflags::bitflags! {
    /// Channel modes: bits 16–31 of the ATTACH/ATTACHED `flags` word, what an attachment may do.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Modes: u64 {
        const PRESENCE = 1 << 16;
        const PUBLISH = 1 << 17;
        const SUBSCRIBE = 1 << 18;
        const PRESENCE_SUBSCRIBE = 1 << 19;
        const ANNOTATION_PUBLISH = 1 << 21;
        const ANNOTATION_SUBSCRIBE = 1 << 22;
        const OBJECT_SUBSCRIBE = 1 << 24;
        const OBJECT_PUBLISH = 1 << 25;
        /// The rest of the mode bits, unnamed: `from_bits_truncate` keeps all 16 and drops the
        /// flags below them.
        const _ = 0xFFFF_0000;
    }
}

impl Modes {
    /// What a plain attach is granted when the capability allows it (Ably adds
    /// annotation_publish to the classic four).
    pub const DEFAULT: Modes = Modes::PRESENCE
        .union(Modes::PUBLISH)
        .union(Modes::SUBSCRIBE)
        .union(Modes::PRESENCE_SUBSCRIBE)
        .union(Modes::ANNOTATION_PUBLISH);
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolMessage {
    pub action: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_serial: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Vec<PresenceMessage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_details: Option<ConnectionDetails>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "loose_params"
    )]
    pub params: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub res: Option<Vec<PublishResult>>,
    /// Last, so the positional (array) spelling of the older fields keeps their places.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<Annotation>>,
}

impl ProtocolMessage {
    pub fn new(action: Action) -> Self {
        ProtocolMessage {
            action: action as u8,
            ..Default::default()
        }
    }

    pub fn action(&self) -> Option<Action> {
        Action::from_u8(self.action)
    }

    pub fn error(action: Action, error: ErrorInfo) -> Self {
        ProtocolMessage {
            error: Some(error),
            ..ProtocolMessage::new(action)
        }
    }
}

/// Channel params as strings, whatever scalar the client sent (`{ rewind: 1 }` is a number).
fn loose_params<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let raw: Option<BTreeMap<String, serde_json::Value>> = Option::deserialize(deserializer)?;
    Ok(raw.map(|params| {
        params
            .into_iter()
            .filter_map(|(name, value)| match value {
                serde_json::Value::String(text) => Some((name, text)),
                serde_json::Value::Null => None,
                other => Some((name, other.to_string())),
            })
            .collect()
    }))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthDetails {
    #[serde(default)]
    pub access_token: Option<String>,
}

/// ACK `res` entry: the serials given to the messages of one acknowledged ProtocolMessage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResult {
    pub serials: Vec<Option<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionDetails {
    pub connection_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub max_message_size: u64,
    pub max_frame_size: u64,
    pub max_inbound_rate: u64,
    pub max_idle_interval: u64,
    pub connection_state_ttl: u64,
    pub server_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// Client to server only ("publish on behalf of"); never forwarded.
    #[serde(default, skip_serializing)]
    pub connection_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Which version this is (an update, delete or append of the message `serial` names), or
    /// from a client, the operation's who and why (TM2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<MessageVersion>,
    /// The roll-up of the message's annotations (TM2u).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<MessageAnnotations>,
}

/// `Message.action` values (TM5).
pub mod message_action {
    pub const CREATE: u8 = 0;
    pub const UPDATE: u8 = 1;
    pub const DELETE: u8 = 2;
    pub const META: u8 = 3;
    pub const SUMMARY: u8 = 4;
    pub const APPEND: u8 = 5;
}

/// A message version (TM2s): its own serial and time, and who made it, why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A message's annotations as the server rolls them up: per annotation type, its summary
/// (TM2u, TM7).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageAnnotations {
    #[serde(default)]
    pub summary: BTreeMap<String, serde_json::Value>,
}

/// An annotation of a message (TAN2): a reaction, a flag, a read receipt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// 0 create, 1 delete; always sent (ably-js reads a missing one as undefined).
    #[serde(default)]
    pub action: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// The annotation's own serial, given by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The serial of the message it annotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_serial: Option<String>,
    /// `namespace:summarization.version`, e.g. `reaction:distinct.v1`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub annotation_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<serde_json::Value>,
}

impl Message {
    /// Size as Ably counts it against `maxMessageSize`: name, clientId, data and extras.
    pub fn size(&self) -> usize {
        let extras = self
            .extras
            .as_ref()
            .map(|extras| serde_json::to_string(extras).map(|s| s.len()).unwrap_or(0))
            .unwrap_or(0);
        self.name.as_ref().map_or(0, String::len)
            + self.client_id.as_ref().map_or(0, String::len)
            + self.data.as_ref().map_or(0, Data::size)
            + extras
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub action: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
}

/// A message payload, passed through untouched. Clients send strings and binary (msgpack `bin`, or
/// base64 text in JSON with an `encoding` saying so); anything else a client sent (a raw JSON
/// object from a hand-written REST call) is kept as it came.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    String(String),
    Binary(Bytes),
    Other(serde_json::Value),
}

impl Data {
    fn size(&self) -> usize {
        match self {
            Data::String(s) => s.len(),
            Data::Binary(b) => b.len(),
            Data::Other(v) => serde_json::to_string(v).map(|s| s.len()).unwrap_or(0),
        }
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::String(s) => serializer.serialize_str(s),
            Data::Binary(b) => serializer.serialize_bytes(b),
            Data::Other(v) => v.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DataVisitor)
    }
}

struct DataVisitor;

impl<'de> Visitor<'de> for DataVisitor {
    type Value = Data;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("message data")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Data, E> {
        Ok(Data::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Data, E> {
        Ok(Data::String(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Data, E> {
        Ok(Data::Binary(Bytes::copy_from_slice(v)))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Data, E> {
        Ok(Data::Binary(Bytes::from(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Data, E> {
        Ok(Data::Other(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Data, E> {
        Ok(Data::Other(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Data, E> {
        Ok(Data::Other(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Data, E> {
        Ok(Data::Other(v.into()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Data, E> {
        Ok(Data::Other(serde_json::Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Data, A::Error> {
        serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Data::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Data, A::Error> {
        serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Data::Other)
    }
}
