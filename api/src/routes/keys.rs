use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use gateway::auth::TokenRequest;
use gateway::Gateway;

use crate::auth::optional_principal;
use crate::body::{decode, respond, response_format};
use crate::error::ApiError;

/// `POST /keys/{keyName}/requestToken`: a signed TokenRequest (or an unsigned one with Basic
/// auth for that key) in, TokenDetails out.
pub(crate) async fn request_token(
    State(gateway): State<Gateway>,
    Path(key_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let format = response_format(&headers);
    let basic = optional_principal(&gateway, &headers, format)?;
    let request: TokenRequest = decode(&headers, &body, format)?;
    let details = gateway
        .auth()
        .request_token(&key_name, &request, basic.as_ref(), protocol::now_ms())
        .map_err(|error| ApiError::new(error.info(), format))?;
    respond(StatusCode::OK, &details, format, false)
}
