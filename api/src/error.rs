//! `ApiError`: every REST failure, as Ably's error envelope.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::{ErrorCode, ErrorInfo, Format};
use serde::Serialize;

/// An error answered as `{"error":{message,code,statusCode,href}}` with `X-Ably-ErrorCode` and
/// `X-Ably-ErrorMessage`, in the format the client accepts.
#[derive(Debug)]
pub struct ApiError {
    pub info: ErrorInfo,
    pub format: Format,
}

impl ApiError {
    pub fn new(info: ErrorInfo, format: Format) -> ApiError {
        ApiError { info, format }
    }

    pub fn code(code: ErrorCode, message: impl Into<String>, format: Format) -> ApiError {
        ApiError::new(code.info(message), format)
    }
}

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
        let envelope = Envelope {
            error: &self.info,
            batch_response,
        };
        let body = protocol::codec::encode(&envelope, self.format).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            "content-type",
            HeaderValue::from_static(self.format.content_type()),
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
        response
    }
}
