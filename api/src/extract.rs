//! The REST preamble as axum extractors: the format to answer in, the authenticated caller
//! and the body with its Content-Type, each read once so handlers hold only their own logic.
//!
//! Extractors run in the order of a handler's arguments: `Path` and `Query` come before
//! `Caller`, so a malformed path or query is refused as it was before credentials are checked.

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use gateway::{Gateway, Principal};
use protocol::Format;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::auth;
use crate::body::{self, response_format};
use crate::error::ApiError;

/// The format to answer in: what `Accept` asks for, JSON by default.
pub(crate) struct Accept(pub(crate) Format);

impl<S: Send + Sync> FromRequestParts<S> for Accept {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Accept(response_format(&parts.headers)))
    }
}

/// As `Accept`, unless Ably's `?envelope=json|msgpack` asks for the body wrapped as
/// `{statusCode, response, headers}` in that format.
pub(crate) struct Enveloped {
    pub(crate) format: Format,
    pub(crate) envelope: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Enveloped {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(match envelope_format(&parts.uri) {
            Some(format) => Enveloped {
                format,
                envelope: true,
            },
            None => Enveloped {
                format: response_format(&parts.headers),
                envelope: false,
            },
        })
    }
}

/// The format errors are answered in (`edges::honest_errors`): the envelope's, else `Accept`'s.
pub(crate) fn error_format(uri: &Uri, headers: &HeaderMap) -> Format {
    envelope_format(uri).unwrap_or_else(|| response_format(headers))
}

fn envelope_format(uri: &Uri) -> Option<Format> {
    #[derive(Deserialize)]
    struct Params {
        envelope: Option<String>,
    }
    let Query(params) = Query::<Params>::try_from_uri(uri).ok()?;
    match params.envelope.as_deref() {
        Some("json") => Some(Format::Json),
        Some("msgpack") => Some(Format::Msgpack),
        _ => None,
    }
}

/// The authenticated caller: a key by `Authorization: Basic`, a token by `Bearer`, with the
/// clientId `X-Ably-ClientId` asserts. No credentials: 40101.
pub(crate) struct Caller(pub(crate) Principal);

impl FromRequestParts<Gateway> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, ApiError> {
        auth::principal(gateway, &parts.headers).await.map(Caller)
    }
}

/// As `Caller`, but a request without `Authorization` is let through as `None`.
pub(crate) struct MaybeCaller(pub(crate) Option<Principal>);

impl FromRequestParts<Gateway> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, ApiError> {
        auth::optional_principal(gateway, &parts.headers)
            .await
            .map(MaybeCaller)
    }
}

/// `Accept`'s format and the authenticated `Caller`: most handlers' whole preamble.
pub(crate) struct Rest {
    pub(crate) format: Format,
    pub(crate) caller: Principal,
}

impl FromRequestParts<Gateway> for Rest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, ApiError> {
        let Ok(Accept(format)) = Accept::from_request_parts(parts, gateway).await;
        let Caller(caller) = Caller::from_request_parts(parts, gateway).await?;
        Ok(Rest { format, caller })
    }
}

/// A request body with the headers that say how to read it; decoded on demand, so a handler
/// may size it from a skim first.
pub(crate) struct Payload {
    headers: HeaderMap,
    pub(crate) bytes: Bytes,
}

impl Payload {
    /// Decoded by its Content-Type (JSON when absent); 40001 if it cannot be.
    pub(crate) fn decode<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        body::decode(&self.headers, &self.bytes)
    }

    /// Its format by Content-Type; `None` if unsupported.
    pub(crate) fn format(&self) -> Option<Format> {
        body::body_format(&self.headers)
    }
}

impl<S: Send + Sync> FromRequest<S> for Payload {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Payload { headers, bytes })
    }
}
