//! Property tests standing in for a fuzzer: every decoder entry point (full decode and the
//! skims, in both formats) is fed arbitrary bytes, generated ProtocolMessages and mutations of
//! their encodings. None may panic, what is encoded must decode back, and whenever the full
//! decode accepts a frame the skim must have read the same action, msgSerial and counts.
//!
//! Case counts keep the set to a few seconds in a debug `cargo test`; `PROPTEST_CASES=100000`
//! runs each property that many times instead. Failures are not persisted: a minimal failing
//! input found here becomes a plain unit test in `tests.rs`.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;

use super::shape::{batch_shape, frame_shape, list_len};
use super::*;
use crate::error::ErrorInfo;
use crate::fuzzing::{config, json_value, text};
use crate::message::{
    Annotation, AuthDetails, ConnectionDetails, MessageAnnotations, MessageVersion, PublishResult,
};

const FORMATS: [Format; 2] = [Format::Json, Format::Msgpack];

/// Runs every decoder entry point on `bytes`; each must return, and the skim must agree with
/// a successful full decode.
fn decode_everything(bytes: &[u8], format: Format) -> Result<(), TestCaseError> {
    let full = decode::<ProtocolMessage>(bytes, format);
    let shape = frame_shape(bytes, format);
    let _ = list_len(bytes, format);
    let _ = batch_shape(bytes, format);
    let _ = decode::<Value>(bytes, format);
    if let Ok(message) = full {
        let shape = shape.ok_or_else(|| {
            TestCaseError::fail(format!("decoded {message:?} but the skim read nothing"))
        })?;
        prop_assert_eq!(shape.action, Some(message.action));
        prop_assert_eq!(shape.msg_serial, message.msg_serial);
        prop_assert_eq!(
            shape.messages.0,
            message.messages.as_ref().map_or(0, Vec::len)
        );
        prop_assert_eq!(
            shape.presence.0,
            message.presence.as_ref().map_or(0, Vec::len)
        );
    }
    Ok(())
}

fn opt<T: std::fmt::Debug>(strategy: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    prop::option::of(strategy)
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(text(), json_value(), 0..4)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

/// Payloads as they travel: text, bytes, or a raw JSON value that is neither null (which
/// decodes as no data) nor a string (which decodes as text).
fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        text().prop_map(Data::String),
        prop::collection::vec(any::<u8>(), 0..24)
            .prop_map(|bytes| Data::Binary(Bytes::from(bytes))),
        json_value()
            .prop_filter("null or text", |v| !v.is_null() && !v.is_string())
            .prop_map(Data::Other),
    ]
}

fn encoding() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "json",
        "utf-8",
        "base64",
        "json/utf-8/cipher+aes-128-cbc",
    ])
    .prop_map(str::to_owned)
}

fn message() -> impl Strategy<Value = Message> {
    (
        (opt(text()), opt(text()), opt(data()), opt(encoding())),
        (opt(text()), opt(text()), opt(any::<u64>())),
        (opt(json_object()), opt(any::<u8>()), opt(text())),
        (opt(message_version()), opt(message_annotations())),
    )
        .prop_map(
            |(
                (id, name, data, encoding),
                (client_id, connection_id, timestamp),
                (extras, action, serial),
                (version, annotations),
            )| Message {
                id,
                name,
                data,
                encoding,
                client_id,
                connection_id,
                connection_key: None,
                timestamp,
                extras,
                action,
                serial,
                version,
                annotations,
            },
        )
}

fn message_version() -> impl Strategy<Value = MessageVersion> {
    (
        (opt(text()), opt(any::<u64>()), opt(text()), opt(text())),
        opt(prop::collection::btree_map(text(), text(), 0..3)),
    )
        .prop_map(
            |((serial, timestamp, client_id, description), metadata)| MessageVersion {
                serial,
                timestamp,
                client_id,
                description,
                metadata,
            },
        )
}

fn message_annotations() -> impl Strategy<Value = MessageAnnotations> {
    prop::collection::btree_map(text(), json_object(), 0..3)
        .prop_map(|summary| MessageAnnotations { summary })
}

fn annotation() -> impl Strategy<Value = Annotation> {
    (
        (opt(text()), any::<u8>(), opt(text()), opt(text())),
        (opt(text()), opt(any::<u64>()), opt(data()), opt(encoding())),
        (opt(any::<u64>()), opt(text()), opt(text()), opt(text())),
        opt(json_object()),
    )
        .prop_map(
            |(
                (id, action, client_id, connection_id),
                (name, count, data, encoding),
                (timestamp, serial, message_serial, annotation_type),
                extras,
            )| Annotation {
                id,
                action,
                client_id,
                connection_id,
                name,
                count,
                data,
                encoding,
                timestamp,
                serial,
                message_serial,
                annotation_type,
                extras,
            },
        )
}

fn presence_message() -> impl Strategy<Value = PresenceMessage> {
    (
        (opt(text()), any::<u8>(), opt(text()), opt(text())),
        (
            opt(data()),
            opt(encoding()),
            opt(json_object()),
            opt(any::<u64>()),
        ),
    )
        .prop_map(
            |((id, action, client_id, connection_id), (data, encoding, extras, timestamp))| {
                PresenceMessage {
                    id,
                    action,
                    client_id,
                    connection_id,
                    data,
                    encoding,
                    extras,
                    timestamp,
                }
            },
        )
}

fn error_info() -> impl Strategy<Value = ErrorInfo> {
    (
        text(),
        any::<u32>(),
        any::<u16>(),
        opt(text()),
        opt(proptest::collection::btree_map(text(), text(), 0..3)),
    )
        .prop_map(|(message, code, status_code, href, detail)| ErrorInfo {
            message,
            code,
            status_code,
            href,
            detail,
        })
}

fn connection_details() -> impl Strategy<Value = ConnectionDetails> {
    (text(), opt(text()), any::<[u64; 5]>(), text()).prop_map(
        |(connection_key, client_id, numbers, server_id)| ConnectionDetails {
            connection_key,
            client_id,
            max_message_size: numbers[0],
            max_frame_size: numbers[1],
            max_inbound_rate: numbers[2],
            max_idle_interval: numbers[3],
            connection_state_ttl: numbers[4],
            server_id,
        },
    )
}

/// Any action (known or not) with any of the fields a frame may carry.
fn protocol_message() -> impl Strategy<Value = ProtocolMessage> {
    let list = |n| 0..n;
    (
        (
            prop_oneof![0u8..=21, any::<u8>()],
            opt(any::<u64>()),
            opt(text()),
            opt(any::<u64>()),
            opt(any::<u64>()),
            opt(error_info()),
        ),
        (opt(text()), opt(text()), opt(text()), opt(any::<u64>())),
        (
            opt(prop::collection::vec(message(), list(5))),
            opt(prop::collection::vec(presence_message(), list(4))),
            opt(opt(text()).prop_map(|access_token| AuthDetails { access_token })),
            opt(connection_details()),
            opt(prop::collection::btree_map(text(), text(), list(3))),
            opt(prop::collection::vec(
                prop::collection::vec(opt(text()), list(3))
                    .prop_map(|serials| PublishResult { serials }),
                list(3),
            )),
        ),
        opt(prop::collection::vec(annotation(), list(3))),
    )
        .prop_map(
            |(
                (action, flags, id, timestamp, count, error),
                (connection_id, channel, channel_serial, msg_serial),
                (messages, presence, auth, connection_details, params, res),
                annotations,
            )| ProtocolMessage {
                action,
                flags,
                id,
                timestamp,
                count,
                error,
                connection_id,
                channel,
                channel_serial,
                msg_serial,
                messages,
                presence,
                auth,
                connection_details,
                params,
                res,
                annotations,
            },
        )
}

/// What a JSON encoding decodes to: binary payloads come back as base64 text.
fn as_json_decodes(message: &ProtocolMessage) -> ProtocolMessage {
    let mut copy = message.clone();
    for m in copy.messages.iter_mut().flatten() {
        m.make_json_safe();
    }
    for p in copy.presence.iter_mut().flatten() {
        p.make_json_safe();
    }
    for a in copy.annotations.iter_mut().flatten() {
        a.make_json_safe();
    }
    copy
}

/// Other spellings of the same frame that serde accepts: a struct as an array of its fields
/// in order (rmp-serde's default `to_vec`, or the same array in JSON), and a msgpack map keyed
/// by field index.
fn other_spellings(message: &ProtocolMessage) -> Vec<(Vec<u8>, Format)> {
    let positional = rmp_serde::to_vec(message).expect("encodes");
    let mut spellings = vec![(positional.clone(), Format::Msgpack)];
    if let Ok(array) = rmp_serde::from_slice::<Value>(&positional) {
        spellings.push((serde_json::to_vec(&array).expect("encodes"), Format::Json));
    }
    if let Ok(Value::Object(fields)) = serde_json::to_value(as_json_decodes(message)) {
        let by_index: BTreeMap<u64, Value> = fields
            .into_iter()
            .filter_map(|(name, value)| {
                let index = PROTOCOL_MESSAGE_FIELDS.iter().position(|f| *f == name)?;
                Some((index as u64, value))
            })
            .collect();
        spellings.push((
            rmp_serde::to_vec(&by_index).expect("encodes"),
            Format::Msgpack,
        ));
    }
    spellings
}

/// ProtocolMessage's fields in declaration order, which is how serde numbers them.
const PROTOCOL_MESSAGE_FIELDS: [&str; 17] = [
    "action",
    "flags",
    "id",
    "timestamp",
    "count",
    "error",
    "connectionId",
    "channel",
    "channelSerial",
    "msgSerial",
    "messages",
    "presence",
    "auth",
    "connectionDetails",
    "params",
    "res",
    "annotations",
];

/// msgpack headers that declare far more than follows: arrays, maps, bins and strings of
/// 2^32 - 1, and an ext of the same size.
const HUGE_HEADERS: [&[u8]; 6] = [
    &[0xdd, 0xff, 0xff, 0xff, 0xff],
    &[0xdf, 0xff, 0xff, 0xff, 0xff],
    &[0xc6, 0xff, 0xff, 0xff, 0xff],
    &[0xdb, 0xff, 0xff, 0xff, 0xff],
    &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0xdc, 0xff, 0xff],
];

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, prop::sample::Index),
    HugeHeader(prop::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 1u8..).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<Index>(), any::<Index>()).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<Index>(), 0..HUGE_HEADERS.len()).prop_map(|(at, h)| Mutation::HugeHeader(at, h)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    let at = |index: &prop::sample::Index| if len == 0 { 0 } else { index.index(len + 1) };
    match mutation {
        Mutation::Truncate(index) => bytes.truncate(at(index)),
        Mutation::Flip(index, bits) if len > 0 => bytes[index.index(len)] ^= bits,
        Mutation::Flip(..) => {}
        Mutation::Insert(index, inserted) => {
            let at = at(index);
            bytes.splice(at..at, inserted.iter().copied());
        }
        Mutation::Delete(index, n) => {
            let at = at(index);
            let end = (at + n.index(9)).min(len);
            bytes.drain(at..end);
        }
        Mutation::HugeHeader(index, header) => {
            let at = at(index);
            bytes.splice(at..at, HUGE_HEADERS[*header].iter().copied());
        }
    }
}

/// Pieces JSON is made of, so arbitrary sequences of them get past the first byte.
fn json_tokens() -> impl Strategy<Value = Vec<u8>> {
    let token = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"action\"",
        "\"messages\"",
        "\"presence\"",
        "\"msgSerial\"",
        "\"channels\"",
        "\"data\"",
        "15",
        "14",
        "0",
        "-1",
        "1e999",
        "18446744073709551616",
        "null",
        "true",
        "\"x\"",
        "\"\\ud800\"",
        "\"\\u0000\"",
        " ",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat().into_bytes())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_are_refused_or_read(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        for format in FORMATS {
            decode_everything(&bytes, format)?;
        }
    }

    #[test]
    fn json_token_soup_is_refused_or_read(bytes in json_tokens()) {
        decode_everything(&bytes, Format::Json)?;
    }

    #[test]
    fn generated_frames_round_trip(message in protocol_message()) {
        let packed = encode_message(&message, Format::Msgpack).expect("encodes");
        prop_assert_eq!(&decode::<ProtocolMessage>(&packed, Format::Msgpack).expect("decodes"), &message);
        let text = encode_message(&message, Format::Json).expect("encodes");
        prop_assert_eq!(decode::<ProtocolMessage>(&text, Format::Json).expect("decodes"), as_json_decodes(&message));
    }

    #[test]
    fn the_skim_reads_what_the_decode_reads(message in protocol_message()) {
        for format in FORMATS {
            decode_everything(&encode_message(&message, format).expect("encodes"), format)?;
        }
        for (bytes, format) in other_spellings(&message) {
            decode_everything(&bytes, format)?;
        }
    }

    #[test]
    fn mutated_frames_are_refused_or_read(
        message in protocol_message(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        for format in FORMATS {
            let mut bytes = encode_message(&message, format).expect("encodes");
            for mutation in &mutations {
                mutate(&mut bytes, mutation);
            }
            decode_everything(&bytes, format)?;
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Nesting past every depth limit, in a payload, in extras and at the top.
    #[test]
    fn deep_nesting_is_refused_or_read(depth in 1usize..3000, open in 0usize..3) {
        let (json_open, json_close, msgpack_open): (&str, &str, &[u8]) = match open {
            0 => ("[", "]", &[0x91]),
            1 => ("{\"a\":", "}", &[0x81, 0xa1, b'a']),
            _ => ("[1,", "]", &[0x92, 0x01]),
        };
        let nested = format!("{}1{}", json_open.repeat(depth), json_close.repeat(depth));
        for frame in [
            format!(r#"{{"action":15,"msgSerial":1,"messages":[{{"data":{nested}}}]}}"#),
            format!(r#"{{"action":15,"messages":[{{"extras":{nested}}}]}}"#),
            nested.clone(),
        ] {
            decode_everything(frame.as_bytes(), Format::Json)?;
        }
        let mut packed = rmp_serde::to_vec_named(&serde_json::json!({"action": 15, "msgSerial": 1})).expect("encodes");
        packed[0] += 1; // one more field: "messages"
        packed.extend_from_slice(&[0xa8]);
        packed.extend_from_slice(b"messages");
        packed.extend_from_slice(&[0x91, 0x81, 0xa4]);
        packed.extend_from_slice(b"data");
        packed.extend(msgpack_open.repeat(depth));
        packed.push(0x01);
        decode_everything(&packed, Format::Msgpack)?;
        decode_everything(&msgpack_open.repeat(depth), Format::Msgpack)?;
    }
}

/// Found by `arbitrary_bytes_are_refused_or_read`: msgpack bin `[0]` decoded as a ProtocolMessage
/// (rmp-serde reads a struct from a bin's bytes as from an array) while the skim refused it.
#[test]
fn a_msgpack_bin_is_read_alike_by_skim_and_decode() {
    decode_everything(&[0xc4, 1, 0], Format::Msgpack).unwrap();
    decode_everything(&[0xc4, 2, 15, 7], Format::Msgpack).unwrap();
}
