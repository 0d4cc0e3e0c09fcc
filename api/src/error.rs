//! `ApiError`: every REST failure, as Ably's error envelope.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gateway::auth::AuthError;
use protocol::{ErrorCode, ErrorInfo, Format};
use serde::Serialize;

/// An error answered as `{"error":{message,code,statusCode,href}}` with `X-Ably-ErrorCode` and
/// `X-Ably-ErrorMessage`, in the format the client accepts.
///
/// Handlers leave `format` unset: `edges::honest_errors` knows the request and re-encodes the
/// envelope in the format it asks for (`extract::error_format`); outside that layer (the
/// dashboard) it stays JSON. Answers made before the router, or always in JSON (the sandbox),
/// name one.
#[derive(Debug)]
pub struct ApiError {
    pub info: ErrorInfo,
    pub format: Option<Format>,
}

impl ApiError {
    pub fn new(info: ErrorInfo) -> ApiError {
        ApiError { info, format: None }
    }

    pub fn code(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(code.info(message))
    }

    /// Answered in `format` whatever the request asks for.
    pub fn in_format(self, format: Format) -> ApiError {
        ApiError {
            format: Some(format),
            ..self
        }
    }
}

impl From<ErrorInfo> for ApiError {
    fn from(info: ErrorInfo) -> ApiError {
        ApiError::new(info)
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        ApiError::new(error.info())
    }
}

/// The gateway's refusals (publish checks, sandbox apps), so handlers use `?`.
impl From<gateway::Error> for ApiError {
    fn from(error: gateway::Error) -> ApiError {
        ApiError::new(error.into())
    }
}

/// Marks a response whose envelope is JSON only until `honest_errors` sees the request's format.
#[derive(Clone)]
pub(crate) struct Unformatted(pub(crate) ErrorInfo);

#[derive(Serialize)]
struct Envelope<'a, T> {
    error: &'a ErrorInfo,
    /// Per-item outcomes of a partly failed batch (`POST /events`), as Ably's batch errors do.
    #[serde(rename = "batchResponse", skip_serializing_if = "Option::is_none")]
    batch_response: Option<T>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.with_batch_response::<()>(None)
    }
}

impl ApiError {
    /// The error envelope with `batchResponse` beside `error`.
    pub(crate) fn with_batch_response<T: Serialize>(self, batch_response: Option<T>) -> Response {
        let status = StatusCode::from_u16(self.info.status_code)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(code = self.info.code, message = %self.info.message, "request failed");
        } else {
            tracing::debug!(code = self.info.code, message = %self.info.message, "request refused");
        }
        let format = self.format.unwrap_or(Format::Json);
        let mut response = (status, envelope(&self.info, batch_response, format)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            "content-type",
            HeaderValue::from_static(format.content_type()),
        );
        headers.insert("x-ably-errorcode", HeaderValue::from(self.info.code));
        // Header values must be visible ASCII; keep the message readable rather than fail.
        let printable: String = self
            .info
            .message
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(value) = HeaderValue::from_str(&printable) {
            headers.insert("x-ably-errormessage", value);
        }
        if self.format.is_none() {
            response.extensions_mut().insert(Unformatted(self.info));
        }
        response
    }
}

/// Re-encodes an `Unformatted` error answer in `format` (a no-op for JSON).
pub(crate) fn reformat(mut response: Response, format: Format) -> Response {
    let Some(Unformatted(info)) = response.extensions_mut().remove::<Unformatted>() else {
        return response;
    };
    if format != Format::Json {
        *response.body_mut() = envelope::<()>(&info, None, format).into();
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_static(format.content_type()),
        );
    }
    response
}

fn envelope<T: Serialize>(info: &ErrorInfo, batch_response: Option<T>, format: Format) -> Vec<u8> {
    let envelope = Envelope {
        error: info,
        batch_response,
    };
    protocol::codec::encode(&envelope, format).unwrap_or_default()
}
