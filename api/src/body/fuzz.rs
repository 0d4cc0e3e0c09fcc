//! Property tests for the REST body decoder, as `protocol`'s codec has for frames: any body
//! under any Content-Type is decoded or refused with a 4xx Ably error, never a panic; generated
//! bodies decode to what was generated; and the skims the publish routes size a body with
//! (`list_len`, `batch_shape`) agree with the decode whenever it succeeds.
//!
//! `PROPTEST_CASES` raises the case counts for a longer run.

use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use proptest::prelude::*;
use protocol::codec::shape::{batch_shape, list_len};
use protocol::fuzzing::{config, json_value, text};
use protocol::{Data, Format, Message};
use serde_json::Value;

use super::{body_format, decode, OneOrMany};
use crate::error::ApiError;
use crate::routes::batch::{shape_of, PublishSpec};

const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/x-msgpack"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain"),
];

fn headers(content_type: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(content_type) = content_type {
        headers.insert("content-type", HeaderValue::from_str(content_type).unwrap());
    }
    headers
}

fn refused_as_client_error(error: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!(
        (400..500).contains(&error.info.status_code),
        "{:?}",
        error.info
    );
    prop_assert!(
        (40000..50000).contains(&error.info.code),
        "{:?}",
        error.info
    );
    Ok(())
}

/// Decodes `body` as every route does; each decode is a value or a 4xx, and the skims agree
/// with a successful decode.
fn decode_as_every_route(headers: &HeaderMap, body: &[u8]) -> Result<(), TestCaseError> {
    let format = body_format(headers);
    match decode::<OneOrMany<Message>>(headers, body) {
        Ok(messages) => {
            let format = format.expect("decoded, so the format is known");
            prop_assert_eq!(list_len(body, format), Some(messages.len()));
        }
        Err(error) => refused_as_client_error(&error)?,
    }
    match decode::<OneOrMany<PublishSpec>>(headers, body) {
        Ok(specs) => {
            let format = format.expect("decoded, so the format is known");
            prop_assert_eq!(batch_shape(body, format), Some(shape_of(specs.as_slice())));
        }
        Err(error) => refused_as_client_error(&error)?,
    }
    if let Err(error) = decode::<OneOrMany<Value>>(headers, body) {
        refused_as_client_error(&error)?;
    }
    Ok(())
}

/// A message as REST clients publish one.
fn message() -> impl Strategy<Value = Message> {
    let data = prop_oneof![
        text().prop_map(Data::String),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(|b| Data::Binary(Bytes::from(b))),
        json_value()
            .prop_filter("null or text", |v| !v.is_null() && !v.is_string())
            .prop_map(Data::Other),
    ];
    let extras = prop::collection::btree_map(text(), json_value(), 0..3)
        .prop_map(|map| Value::Object(map.into_iter().collect()));
    (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(data),
        prop::option::of(prop::sample::select(vec![
            "json",
            "utf-8/cipher+aes-128-cbc",
        ])),
        prop::option::of(text()),
        prop::option::of(extras),
    )
        .prop_map(|(id, name, data, encoding, client_id, extras)| Message {
            id,
            name,
            data,
            encoding: encoding.map(str::to_owned),
            client_id,
            extras,
            ..Default::default()
        })
}

/// `body` as `format` puts it on the wire, with what decoding it gives back.
fn encoded<T: serde::Serialize>(body: &T, format: Format) -> Vec<u8> {
    protocol::codec::encode(body, format).expect("encodes")
}

fn json_safe(messages: &[Message]) -> Vec<Message> {
    let mut messages = messages.to_vec();
    messages.iter_mut().for_each(Message::make_json_safe);
    messages
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bodies_are_decoded_or_refused_with_a_4xx(
        body in prop::collection::vec(any::<u8>(), 0..192),
        content_type in prop::sample::select(CONTENT_TYPES.to_vec()),
    ) {
        decode_as_every_route(&headers(content_type), &body)?;
    }

    #[test]
    fn generated_bodies_decode_to_what_was_sent(
        messages in prop::collection::vec(message(), 1..5),
        lone in any::<bool>(),
    ) {
        for (content_type, format) in [
            (Some("application/x-msgpack"), Format::Msgpack),
            (None, Format::Json),
            (Some("application/json"), Format::Json),
        ] {
            let expected = match format {
                Format::Json => json_safe(&messages),
                Format::Msgpack => messages.clone(),
            };
            let body = if lone {
                encoded(&expected[0], format)
            } else {
                encoded(&expected, format)
            };
            let decoded = decode::<OneOrMany<Message>>(&headers(content_type), &body)
                .map_err(|e| TestCaseError::fail(format!("{:?}", e.info)))?;
            prop_assert_eq!(decoded.is_one(), lone);
            let sent = if lone { &expected[..1] } else { &expected[..] };
            prop_assert_eq!(decoded.as_slice(), sent);
            decode_as_every_route(&headers(content_type), &body)?;
        }
    }

    #[test]
    fn generated_batches_are_skimmed_as_they_decode(
        specs in prop::collection::vec(
            (prop::collection::vec(text(), 0..4), prop::collection::vec(message(), 0..4), any::<bool>()),
            0..4,
        ),
    ) {
        // A channel or message list of one is sometimes sent bare, as Ably allows.
        let specs: Vec<Value> = specs
            .into_iter()
            .map(|(channels, messages, bare)| {
                let messages = json_safe(&messages);
                let one_or_many = |mut list: Vec<Value>| match (bare, list.len()) {
                    (true, 1) => list.remove(0),
                    _ => Value::Array(list),
                };
                serde_json::json!({
                    "channels": one_or_many(channels.into_iter().map(Value::from).collect()),
                    "messages": one_or_many(messages.iter().map(|m| serde_json::to_value(m).unwrap()).collect()),
                })
            })
            .collect();
        for (content_type, format) in [(Some("application/x-msgpack"), Format::Msgpack), (None, Format::Json)] {
            let body = encoded(&specs, format);
            decode::<OneOrMany<PublishSpec>>(&headers(content_type), &body)
                .map_err(|e| TestCaseError::fail(format!("{:?}", e.info)))?;
            decode_as_every_route(&headers(content_type), &body)?;
            if let Some(spec) = specs.first() {
                decode_as_every_route(&headers(content_type), &encoded(spec, format))?;
            }
        }
    }

    /// Messages spelled as arrays of their fields (rmp-serde's default encoding).
    #[test]
    fn positional_bodies_are_skimmed_as_they_decode(
        messages in prop::collection::vec(message(), 0..4),
    ) {
        let headers = headers(Some("application/x-msgpack"));
        decode_as_every_route(&headers, &rmp_serde::to_vec(&messages).unwrap())?;
        if let Some(message) = messages.first() {
            decode_as_every_route(&headers, &rmp_serde::to_vec(message).unwrap())?;
        }
    }
}
