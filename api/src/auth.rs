//! REST credentials: `Authorization: Basic` with a key, `Authorization: Bearer` with a token
//! (base64, as the SDKs send it, or raw), and the clientId a key-authenticated client asserts in
//! `X-Ably-ClientId`.

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use gateway::auth::AuthError;
use gateway::{Gateway, Principal};
use protocol::ErrorCode;

use crate::error::ApiError;

/// The principal behind a request, or `None` when it carries no Authorization header.
pub(crate) async fn optional_principal(
    gateway: &Gateway,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    let Some(authorization) = headers.get("authorization") else {
        return Ok(None);
    };
    let refuse = |error: AuthError| {
        ::metrics::counter!("realtime_auth_failures_total", "via" => "rest", "code" => error.code().code().to_string())
            .increment(1);
        gateway.hub().pulse().auth_failure();
        ApiError::from(error)
    };
    let authorization = authorization
        .to_str()
        .map_err(|_| refuse(AuthError::NoCredentials))?;
    let (scheme, credentials) = authorization
        .split_once(' ')
        .ok_or_else(|| refuse(AuthError::NoCredentials))?;
    let principal = match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let key = STANDARD
                .decode(credentials.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| refuse(AuthError::MalformedKey))?;
            gateway.auth().verify_key(&key).map_err(refuse)?
        }
        "bearer" => {
            let credentials = credentials.trim();
            // Tokens arrive base64'd; a raw JWT or token (with '.') is not valid base64.
            let token = STANDARD
                .decode(credentials)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .unwrap_or_else(|| credentials.to_owned());
            gateway
                .auth()
                .verify_token(&token, protocol::now_ms())
                .await
                .map_err(refuse)?
        }
        _ => return Err(refuse(AuthError::NoCredentials)),
    };
    let asserted = match headers.get("x-ably-clientid") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| STANDARD.decode(v).ok())
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    ApiError::code(
                        ErrorCode::InvalidClientId,
                        "X-Ably-ClientId must be base64 of the clientId",
                    )
                })?,
        ),
    };
    principal
        .with_client_id(asserted.as_deref())
        .map(Some)
        .map_err(refuse)
}

/// As `optional_principal`, with no Authorization header refused (40101).
pub(crate) async fn principal(
    gateway: &Gateway,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    optional_principal(gateway, headers)
        .await?
        .ok_or_else(|| AuthError::NoCredentials.into())
}
