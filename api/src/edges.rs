//! The edge of every HTTP request: oversized URIs, headers and bodies are refused here, and any
//! error answered without Ably's envelope (axum's rejections: path decoding, body limit, a
//! missing upgrade header) gets one, so every REST failure carries a code.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use protocol::{ErrorCode, ErrorInfo};

use crate::error::ApiError;

/// Longest request target we read (hyper's own limit, 64 KiB, answers with a bare 414).
pub(crate) const MAX_URI_BYTES: usize = 16 * 1024;
/// Most header bytes (names and values) a request may carry (hyper's own buffer answers a bare 431).
pub(crate) const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Largest REST body (axum's default body limit, which every `Bytes` extractor applies).
pub(crate) const MAX_BODY_BYTES: u64 = 2 * 1024 * 1024;
/// A refused body up to this size is read and dropped before the 413, so the client reads the
/// answer instead of a connection reset; a bigger one gets the answer and the connection closed.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;

pub(crate) async fn honest_errors(request: Request, next: Next) -> Response {
    let format = crate::extract::error_format(request.uri(), request.headers());
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::code(
            ErrorCode::UriTooLong,
            format!("request URI over {MAX_URI_BYTES} bytes"),
        )
        .in_format(format)
        .into_response();
    }
    if header_bytes(request.headers()) > MAX_HEADER_BYTES {
        return ApiError::code(
            ErrorCode::HeadersTooLarge,
            format!("request headers over {MAX_HEADER_BYTES} bytes"),
        )
        .in_format(format)
        .into_response();
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = declared.filter(|length| *length > MAX_BODY_BYTES) {
        let drained = length <= DRAIN_BYTES && drain(request.into_body()).await;
        let mut response = ApiError::code(
            ErrorCode::MessageTooLarge,
            format!("request body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit"),
        )
        .in_format(format)
        .into_response();
        if !drained {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        return response;
    }
    let response = crate::error::reformat(next.run(request).await, format);
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key("x-ably-errorcode")
    {
        return response;
    }
    into_envelope(response, format).await
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// Reads a body to its end, keeping nothing; false if it broke off or ran past `DRAIN_BYTES`.
async fn drain(body: Body) -> bool {
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return false };
        read += chunk.len() as u64;
        if read > DRAIN_BYTES {
            return false;
        }
    }
    true
}

/// An error someone else answered (axum's rejections are short plain text): the same status in
/// Ably's envelope, their text as the message.
async fn into_envelope(response: Response, format: protocol::Format) -> Response {
    let status = response.status();
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut answer = ApiError::new(info_for(status, message))
        .in_format(format)
        .into_response();
    // Keep what the original said about the exchange (Allow on a 405, Connection: close).
    for name in [header::ALLOW, header::CONNECTION, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

fn info_for(status: StatusCode, message: String) -> ErrorInfo {
    let code = match status {
        StatusCode::BAD_REQUEST => Some(ErrorCode::BadRequest),
        StatusCode::UNAUTHORIZED => Some(ErrorCode::Unauthorized),
        StatusCode::NOT_FOUND => Some(ErrorCode::NotFound),
        StatusCode::METHOD_NOT_ALLOWED => Some(ErrorCode::MethodNotAllowed),
        StatusCode::PAYLOAD_TOO_LARGE => Some(ErrorCode::MessageTooLarge),
        StatusCode::URI_TOO_LONG => Some(ErrorCode::UriTooLong),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Some(ErrorCode::HeadersTooLarge),
        StatusCode::INTERNAL_SERVER_ERROR => Some(ErrorCode::Internal),
        StatusCode::SERVICE_UNAVAILABLE => Some(ErrorCode::ServiceUnavailable),
        _ => None,
    };
    match code {
        Some(code) => code.info(message),
        // By Ably's convention a code's first three digits are its HTTP status.
        None => ErrorInfo {
            message,
            code: u32::from(status.as_u16()) * 100,
            status_code: status.as_u16(),
            href: None,
            detail: None,
        },
    }
}
