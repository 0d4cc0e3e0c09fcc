//! The REST routes, one file per resource.

mod annotations;
mod apps;
pub(crate) mod batch;
mod channels;
mod chat;
pub(crate) mod dashboard;
mod events;
mod health;
mod history;
mod keys;
mod openapi;
mod push;
mod stats;
mod time;

use axum::routing::{get, post};
use axum::Router;
use gateway::Gateway;
use metrics_exporter_prometheus::PrometheusHandle;
use protocol::ErrorCode;

use crate::error::ApiError;
use crate::extract::Caller;

/// `GET /metrics`: Prometheus text exposition of the recorder `metrics` is the handle of.
pub(crate) fn metrics(metrics: Option<&PrometheusHandle>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let text = metrics.map_or_else(String::new, |handle| {
        handle.run_upkeep();
        handle.render()
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// What a gateway-only process answers besides WebSockets: the clock and the probes.
pub(crate) fn probes(gateway: Gateway) -> Router {
    answer_the_rest(clock_and_probes(), gateway)
}

pub(crate) fn router(gateway: Gateway) -> Router {
    let routes = clock_and_probes()
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
        .route(
            "/channels/{channel}/messages/{serial}",
            get(history::message).patch(channels::mutate),
        )
        .route(
            "/channels/{channel}/messages/{serial}/versions",
            get(history::versions),
        )
        .route(
            "/channels/{channel}/messages/{serial}/annotations",
            post(annotations::publish).get(annotations::list),
        )
        .route("/channels/{channel}/presence", get(history::presence))
        .route(
            "/channels/{channel}/presence/history",
            get(history::presence_history),
        )
        .route("/channels/{channel}", get(channels::status))
        .route(
            "/chat/v4/rooms/{room}/messages",
            post(chat::send).get(chat::history),
        )
        .route(
            "/chat/v4/rooms/{room}/messages/{serial}",
            get(chat::message).put(chat::update),
        )
        .route(
            "/chat/v4/rooms/{room}/messages/{serial}/delete",
            post(chat::delete),
        )
        .route(
            "/chat/v4/rooms/{room}/messages/{serial}/versions",
            get(chat::versions),
        )
        .route(
            "/chat/v4/rooms/{room}/messages/{serial}/reactions",
            post(chat::send_reaction).delete(chat::delete_reaction),
        )
        .route(
            "/chat/v4/rooms/{room}/messages/{serial}/client-reactions",
            get(chat::client_reactions),
        )
        .route("/chat/v4/rooms/{room}/occupancy", get(chat::occupancy))
        .route(
            "/push/deviceRegistrations",
            post(push::register)
                .get(push::list_devices)
                .delete(push::remove_devices),
        )
        .route(
            "/push/deviceRegistrations/{device_id}",
            get(push::get_device)
                .put(push::save_device)
                .patch(push::update_device)
                .delete(push::remove_device),
        )
        .route(
            "/push/channelSubscriptions",
            post(push::subscribe)
                .get(push::list_subscriptions)
                .delete(push::unsubscribe),
        )
        .route("/push/channels", get(push::channels))
        .route("/push/publish", post(push::publish))
        .route("/push/publicVapidKey", get(push::public_vapid_key))
        .route("/keys/{key_name}/requestToken", post(keys::request_token))
        .route("/keys/{key_name}/revokeTokens", post(keys::revoke_tokens));
    answer_the_rest(routes, gateway)
}

fn clock_and_probes() -> Router<Gateway> {
    Router::new()
        .route("/time", get(time::time))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
}

/// Ably's 404s for unknown paths and methods; last, as the method fallback applies only to the
/// routes already added.
fn answer_the_rest(routes: Router<Gateway>, gateway: Gateway) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
}

async fn not_found() -> ApiError {
    ApiError::code(ErrorCode::NotFound, "no such resource")
}

/// Ably answers a known path with the wrong method as not found (40400, not 405): ably-js's own
/// suite checks it (`rest/request` `request_404`). The router adds `Allow`.
async fn method_not_allowed() -> ApiError {
    ApiError::code(ErrorCode::NotFound, "no such resource for this method")
}

/// `GET /metrics` on the public port: only for an operator, as the dashboard: one of the
/// server's own keys with capability `{"*":["*"]}` by HTTP Basic (Prometheus' `basic_auth`);
/// tokens, lesser keys and sandbox apps' keys get 403.
pub(crate) async fn metrics_for_key(
    Caller(principal): Caller,
    metrics: Option<PrometheusHandle>,
) -> Result<axum::response::Response, ApiError> {
    if principal.via != gateway::auth::Credential::Key
        || principal.scope.is_some()
        || *principal.capability != protocol::Capability::all()
    {
        let mut info = ErrorCode::CapabilityDenied
            .info("/metrics needs one of the server's keys with capability {\"*\":[\"*\"]}");
        info.status_code = 403;
        return Err(ApiError::new(info));
    }
    Ok(self::metrics(metrics.as_ref()))
}

/// `channel` parsed, with `operation` in `caller`'s capability; `refused` says what the
/// capability does not permit.
/// More messages (or annotations) than a publish may hold are refused from a skim of the body,
/// before building them (every item takes at least a byte, so only longer bodies are skimmed).
fn refuse_a_long_list(gateway: &Gateway, body: &crate::extract::Payload) -> Result<(), ApiError> {
    let max = gateway.config().limits.max_messages_per_publish;
    if body.bytes.len() <= max {
        return Ok(());
    }
    let counted = body
        .format()
        .and_then(|body_format| protocol::codec::shape::list_len(&body.bytes, body_format));
    match counted.filter(|n| *n > max) {
        Some(n) => {
            gateway::limits::count_refusal("too_many_messages", "rest");
            Err(gateway::Error::TooManyMessages { n, max }.into())
        }
        None => Ok(()),
    }
}

fn permitted_channel(
    caller: &gateway::Principal,
    channel: &str,
    operation: protocol::Operation,
    refused: &str,
) -> Result<protocol::ChannelName, protocol::ErrorInfo> {
    let channel = protocol::ChannelName::parse(channel)?;
    // Only a subscriber sees a channel through a filter: history, presence and metadata are the
    // channel's own (and a `[filter]` capability must not read past its filter through them).
    if channel.is_filtered() {
        return Err(ErrorCode::InvalidChannelName.info(format!(
            "channel {:?} is filtered: read its history, presence and metadata on the channel itself",
            channel.as_str()
        )));
    }
    if caller.allows(&channel, operation) {
        Ok(channel)
    } else {
        Err(ErrorCode::CapabilityDenied.info(refused))
    }
}
