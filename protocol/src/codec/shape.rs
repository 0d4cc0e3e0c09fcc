//! Sizing a publish without decoding it: how many messages a frame or REST body holds, read
//! by skipping over them (`IgnoredAny`), so a 200,000 × `{}` body is refused without building
//! 200,000 `Message`s. The full decode stays the authority; these only let a caller refuse early.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::Format;

/// How many items a value holds as a list: an array's length, 1 for any other value (a lone
/// object), 0 for null or absent. Read without building the items.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counted(pub usize);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Counted;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counted, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(Counted(n))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counted, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Counted(1))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Counted, E> {
        Ok(Counted(0))
    }

    fn visit_none<E: de::Error>(self) -> Result<Counted, E> {
        Ok(Counted(0))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Counted, D::Error> {
        deserializer.deserialize_any(CountVisitor)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Counted, E> {
        Ok(Counted(1))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Counted, E> {
        Ok(Counted(1))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Counted, E> {
        Ok(Counted(1))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Counted, E> {
        Ok(Counted(1))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Counted, E> {
        Ok(Counted(1))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Counted, E> {
        Ok(Counted(1))
    }
}

/// The parts of a ProtocolMessage that decide whether a publish is refused unread.
///
/// Its fields are ProtocolMessage's, in the same order, the rest skipped unread: serde also
/// reads a struct from an array of its fields (rmp-serde's default encoding) and from a msgpack
/// map keyed by field number, both by position, so a skim with only these four fields read such
/// a frame differently from the full decode (`[15, 0, 0]` had a msgSerial of 0).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FrameShape {
    /// Read as ProtocolMessage reads its plain `u8`, not as an `Option` (which a bare byte
    /// from a msgpack bin is not).
    #[serde(deserialize_with = "present")]
    pub action: Option<u8>,
    #[serde(rename = "flags")]
    _flags: IgnoredAny,
    #[serde(rename = "id")]
    _id: IgnoredAny,
    #[serde(rename = "timestamp")]
    _timestamp: IgnoredAny,
    #[serde(rename = "count")]
    _count: IgnoredAny,
    #[serde(rename = "error")]
    _error: IgnoredAny,
    #[serde(rename = "connectionId")]
    _connection_id: IgnoredAny,
    #[serde(rename = "channel")]
    _channel: IgnoredAny,
    #[serde(rename = "channelSerial")]
    _channel_serial: IgnoredAny,
    pub msg_serial: Option<u64>,
    pub messages: Counted,
    pub presence: Counted,
    #[serde(rename = "auth")]
    _auth: IgnoredAny,
    #[serde(rename = "connectionDetails")]
    _connection_details: IgnoredAny,
    #[serde(rename = "params")]
    _params: IgnoredAny,
    #[serde(rename = "res")]
    _res: IgnoredAny,
    pub annotations: Counted,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u8>, D::Error> {
    u8::deserialize(deserializer).map(Some)
}

/// One batch publish spec, sized.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SpecShape {
    channels: Counted,
    messages: Counted,
}

/// What a batch publish body (`POST /messages`: one spec or an array of them) asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape {
    /// The most messages any one spec publishes (to each of its channels).
    pub most_messages: usize,
    /// Messages times channels, summed over the specs: the publishes the batch makes.
    pub total: usize,
}

impl BatchShape {
    fn add(&mut self, spec: SpecShape) {
        self.most_messages = self.most_messages.max(spec.messages.0);
        self.total = self
            .total
            .saturating_add(spec.messages.0.saturating_mul(spec.channels.0));
    }
}

impl<'de> Deserialize<'de> for BatchShape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BatchVisitor;
        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = BatchShape;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a publish spec or an array of them")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BatchShape, A::Error> {
                let spec = SpecShape::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let mut shape = BatchShape::default();
                shape.add(spec);
                Ok(shape)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BatchShape, A::Error> {
                let mut shape = BatchShape::default();
                while let Some(spec) = seq.next_element::<SpecShape>()? {
                    shape.add(spec);
                }
                Ok(shape)
            }
        }
        deserializer.deserialize_any(BatchVisitor)
    }
}

/// The action, msgSerial and message and presence counts of a ProtocolMessage; `None` if it
/// does not parse as one (the full decode then reports why).
pub fn frame_shape(bytes: &[u8], format: Format) -> Option<FrameShape> {
    super::decode(bytes, format).ok()
}

/// How many messages a REST publish body holds (an array's length, 1 for a lone message);
/// `None` if it does not parse.
pub fn list_len(bytes: &[u8], format: Format) -> Option<usize> {
    super::decode::<Counted>(bytes, format).ok().map(|c| c.0)
}

/// The size of a batch publish body; `None` if it does not parse.
pub fn batch_shape(bytes: &[u8], format: Format) -> Option<BatchShape> {
    super::decode(bytes, format).ok()
}
