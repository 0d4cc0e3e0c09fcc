use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::body::{respond, response_format};
use crate::error::ApiError;

/// `GET /time`: `[<ms since epoch>]`, no auth (clients use it to correct their clock).
pub(crate) async fn time(headers: HeaderMap) -> Result<Response, ApiError> {
    respond(
        StatusCode::OK,
        &[protocol::now_ms()],
        response_format(&headers),
        false,
    )
}
