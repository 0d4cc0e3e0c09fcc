//! Request and response bodies in JSON or msgpack, chosen by Content-Type and Accept.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::{ErrorCode, Format};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
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
pub(crate) fn decode<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    respond_in: Format,
) -> Result<T, ApiError> {
    let format = body_format(headers).ok_or_else(|| {
        ApiError::code(
            ErrorCode::InvalidRequestBody,
            "Content-Type must be application/json or application/x-msgpack",
            respond_in,
        )
    })?;
    protocol::codec::decode(body, format).map_err(|error| {
        ApiError::code(
            ErrorCode::InvalidRequestBody,
            format!("invalid request body: {error}"),
            respond_in,
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
    let body =
        encoded.map_err(|error| ApiError::code(ErrorCode::Internal, error.to_string(), format))?;
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
