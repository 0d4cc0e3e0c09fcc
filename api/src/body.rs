//! Request and response bodies in JSON or msgpack, chosen by Content-Type and Accept.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::{ErrorCode, Format};
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{BytesDeserializer, MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ApiError;

fn format_of(value: Option<&HeaderValue>) -> Option<Format> {
    let value = value?.to_str().ok()?;
    if value.contains("application/x-msgpack") {
        Some(Format::Msgpack)
    } else if value.contains("application/json") || value.contains("*/*") {
        Some(Format::Json)
    } else {
        None
    }
}

/// A request body that is one item or an array of them (Ably's REST accepts both).
///
/// An array is always many: serde would also read one message from an array of its fields,
/// which the skim (`list_len`) counts as that many messages. Read by hand rather than
/// `#[serde(untagged)]`, which buffers the whole body as a tree before trying each variant and
/// answers a bad one with "data did not match any variant".
pub(crate) enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

struct OneOrManyVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> OneOrManyVisitor<T> {
    fn one<D: Deserializer<'de>>(deserializer: D) -> Result<OneOrMany<T>, D::Error> {
        T::deserialize(deserializer).map(OneOrMany::One)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
    type Value = OneOrMany<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("one item or an array of them")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<OneOrMany<T>, A::Error> {
        Vec::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneOrMany<T>, A::Error> {
        Self::one(MapAccessDeserializer::new(map))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<OneOrMany<T>, E> {
        Self::one(v.into_deserializer())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<OneOrMany<T>, E> {
        Self::one(v.into_deserializer())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<OneOrMany<T>, E> {
        Self::one(v.into_deserializer())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<OneOrMany<T>, E> {
        Self::one(v.into_deserializer())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany<T>, E> {
        Self::one(v.into_deserializer())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<OneOrMany<T>, E> {
        Self::one(BytesDeserializer::new(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<OneOrMany<T>, E> {
        Self::one(().into_deserializer())
    }

    fn visit_none<E: de::Error>(self) -> Result<OneOrMany<T>, E> {
        Self::one(().into_deserializer())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<OneOrMany<T>, D::Error> {
        Self::one(deserializer)
    }
}

impl<T> OneOrMany<T> {
    pub(crate) fn is_one(&self) -> bool {
        matches!(self, OneOrMany::One(_))
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::Many(items) => items,
            OneOrMany::One(item) => std::slice::from_ref(item),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::Many(items) => items,
            OneOrMany::One(item) => vec![item],
        }
    }
}

/// The format to answer in: what `Accept` asks for, JSON by default.
pub(crate) fn response_format(headers: &HeaderMap) -> Format {
    format_of(headers.get("accept")).unwrap_or(Format::Json)
}

/// The request body's format by its Content-Type (JSON when absent); `None` if unsupported.
pub(crate) fn body_format(headers: &HeaderMap) -> Option<Format> {
    match headers.get("content-type") {
        None => Some(Format::Json),
        Some(value) => format_of(Some(value)),
    }
}

/// Decodes a request body by its Content-Type (JSON when absent).
pub(crate) fn decode<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    let format = body_format(headers).ok_or_else(|| {
        ApiError::code(
            ErrorCode::InvalidRequestBody,
            "Content-Type must be application/json or application/x-msgpack",
        )
    })?;
    protocol::codec::decode(body, format).map_err(|error| {
        ApiError::code(
            ErrorCode::InvalidRequestBody,
            format!("invalid request body: {error}"),
        )
    })
}

/// Encodes a success body; with `envelope` (Ably's `?envelope=json|msgpack`) it is wrapped as
/// `{statusCode, response, headers}` and sent with 200.
pub(crate) fn respond<T: Serialize>(
    status: StatusCode,
    value: &T,
    format: Format,
    envelope: bool,
) -> Result<Response, ApiError> {
    respond_paged(status, value, format, envelope, None)
}

/// As `respond`, with a `Link` header (inside the envelope too, where ably-js looks for it).
pub(crate) fn respond_paged<T: Serialize>(
    status: StatusCode,
    value: &T,
    format: Format,
    envelope: bool,
    link: Option<String>,
) -> Result<Response, ApiError> {
    let encoded = if envelope {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Envelope<'a, T> {
            status_code: u16,
            response: &'a T,
            headers: std::collections::BTreeMap<&'static str, &'a str>,
        }
        let mut headers = std::collections::BTreeMap::new();
        if let Some(link) = &link {
            headers.insert("link", link.as_str());
        }
        protocol::codec::encode(
            &Envelope {
                status_code: status.as_u16(),
                response: value,
                headers,
            },
            format,
        )
    } else {
        protocol::codec::encode(value, format)
    };
    let body = encoded.map_err(|error| ApiError::code(ErrorCode::Internal, error.to_string()))?;
    let status = if envelope { StatusCode::OK } else { status };
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static(format.content_type()),
    );
    if let Some(link) = link.and_then(|link| HeaderValue::from_str(&link).ok()) {
        response.headers_mut().insert("link", link);
    }
    Ok(response)
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
