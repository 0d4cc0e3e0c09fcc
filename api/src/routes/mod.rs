//! The REST routes, one file per resource.

mod apps;
pub(crate) mod batch;
mod channels;
pub(crate) mod dashboard;
mod events;
mod health;
mod history;
mod keys;
mod openapi;
mod stats;
mod time;

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use gateway::Gateway;
use protocol::ErrorCode;

use crate::body::response_format;
use crate::error::ApiError;

/// `GET /metrics`: Prometheus text exposition.
pub(crate) async fn metrics() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gateway::telemetry::render(),
    )
        .into_response()
}

/// What a gateway-only process answers besides WebSockets: the clock and the probes.
pub(crate) fn probes(gateway: Gateway) -> Router {
    Router::new()
        .route("/time", get(time::time))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
}

pub(crate) fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/time", get(time::time))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/messages", post(batch::publish))
        .route("/events", post(events::publish))
        .route("/openapi.json", get(openapi::document))
        .route("/presence", get(batch::presence))
        .route("/stats", get(stats::read).post(stats::ingest))
        .route("/apps", post(apps::create))
        .route("/apps/{app_id}", axum::routing::delete(apps::delete))
        .route(
            "/channels/{channel}/messages",
            post(channels::publish).get(history::messages),
        )
        .route("/channels/{channel}/presence", get(history::presence))
        .route(
            "/channels/{channel}/presence/history",
            get(history::presence_history),
        )
        .route("/channels/{channel}", get(channels::status))
        .route("/keys/{key_name}/requestToken", post(keys::request_token))
        .route("/keys/{key_name}/revokeTokens", post(keys::revoke_tokens))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
}

async fn not_found(headers: HeaderMap) -> ApiError {
    ApiError::code(
        ErrorCode::NotFound,
        "no such resource",
        response_format(&headers),
    )
}

/// Ably answers a known path with the wrong method as not found (40400, not 405): ably-js's own
/// suite checks it (`rest/request` `request_404`). The router adds `Allow`.
async fn method_not_allowed(headers: HeaderMap) -> ApiError {
    ApiError::code(
        ErrorCode::NotFound,
        "no such resource for this method",
        response_format(&headers),
    )
}

/// `GET /metrics` on the public port: only for an operator, as the dashboard: one of the
/// server's own keys with capability `{"*":["*"]}` by HTTP Basic (Prometheus' `basic_auth`);
/// tokens, lesser keys and sandbox apps' keys get 403.
pub(crate) async fn metrics_for_key(
    axum::extract::State(gateway): axum::extract::State<Gateway>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let format = response_format(&headers);
    let principal = crate::auth::principal(&gateway, &headers, format).await?;
    if principal.via != gateway::auth::Credential::Key
        || principal.scope.is_some()
        || *principal.capability != protocol::Capability::all()
    {
        let mut info = ErrorCode::CapabilityDenied
            .info("/metrics needs one of the server's keys with capability {\"*\":[\"*\"]}");
        info.status_code = 403;
        return Err(ApiError::new(info, format));
    }
    Ok(metrics().await)
}
