use axum::http::StatusCode;
use axum::response::Response;

use crate::body::respond;
use crate::error::ApiError;
use crate::extract::Accept;

/// `GET /time`: `[<ms since epoch>]`, no auth (clients use it to correct their clock).
pub(crate) async fn time(Accept(format): Accept) -> Result<Response, ApiError> {
    respond(StatusCode::OK, &[protocol::now_ms()], format, false)
}
