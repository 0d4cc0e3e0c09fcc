//! `/dashboard`: the operator dashboard. Static assets embedded in the binary (no build step)
//! and a few JSON endpoints the page polls, all behind HTTP Basic auth with an API key whose
//! capability is exactly `{"*":["*"]}` (the browser's own prompt asks for it).
//!
//! - `GET /dashboard`, `/dashboard/app.js`, `/dashboard/app.css`: the page.
//! - `GET /dashboard/api/overview`: every node's numbers (`Gateway::node_pulses`) and the
//!   cluster's totals.
//! - `GET /dashboard/api/channels`: the busiest channels this node holds.
//! - `GET /dashboard/api/channels/{channel}`: occupancy (this node), presence members and the
//!   last messages (cluster-wide with Redis).
//! - `POST /dashboard/api/channels/{channel}/messages`: publishes a test message as the key.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use gateway::hub::HistoryQuery;
use gateway::pulse::{Latency, NodePulse};
use gateway::{Gateway, Occupancy, Origin, Principal};
use protocol::{Capability, ChannelName, ErrorCode, ErrorInfo, Format, Message, PresenceMessage};
use serde::Serialize;

use crate::body::{decode, respond};
use crate::error::ApiError;

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const APP_CSS: &str = include_str!("../dashboard/app.css");

/// What the browser's prompt shows.
const REALM: &str = "Basic realm=\"Digis Realtime dashboard\", charset=\"UTF-8\"";

/// Channels listed at most; the rest are counted.
const LISTED_CHANNELS: usize = 50;
/// Messages the channel inspector shows.
const LAST_MESSAGES: usize = 20;

/// The dashboard's routes, each behind `require_operator`.
pub(crate) fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/dashboard", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/app.css", get(app_css))
        .route("/dashboard/api/overview", get(overview))
        .route("/dashboard/api/channels", get(channels))
        .route("/dashboard/api/channels/{channel}", get(channel))
        .route(
            "/dashboard/api/channels/{channel}/messages",
            axum::routing::post(publish),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            require_operator,
        ))
        .with_state(gateway)
}

/// Lets through only Basic auth with a configured key of capability `{"*":["*"]}`: no or bad
/// credentials get 401 with `WWW-Authenticate` (so the browser prompts), a lesser key 403.
async fn require_operator(
    State(gateway): State<Gateway>,
    mut request: Request,
    next: Next,
) -> Response {
    match operator(&gateway, request.headers()) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(Refusal::Challenge(info)) => {
            let mut response = ApiError::new(info).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
            response
        }
        Err(Refusal::Forbidden(error)) => error.into_response(),
    }
}

/// Why `operator` said no: unauthenticated (the browser should prompt) or not allowed.
enum Refusal {
    Challenge(ErrorInfo),
    Forbidden(ApiError),
}

fn operator(gateway: &Gateway, headers: &HeaderMap) -> Result<Principal, Refusal> {
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return Err(Refusal::Challenge(ErrorCode::Unauthorized.info(
            "the dashboard needs an API key with capability {\"*\":[\"*\"]} (Basic auth)",
        )));
    };
    let key = authorization
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, credentials)| STANDARD.decode(credentials.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let Some(key) = key else {
        return Err(Refusal::Challenge(
            ErrorCode::Unauthorized
                .info("the dashboard takes an API key by Basic auth, not a token"),
        ));
    };
    let principal = gateway.auth().verify_key(&key).map_err(|error| {
        ::metrics::counter!("realtime_auth_failures_total", "via" => "dashboard", "code" => error.code().code().to_string())
            .increment(1);
        gateway.hub().pulse().auth_failure();
        Refusal::Challenge(error.info())
    })?;
    if principal.scope.is_some() || *principal.capability != Capability::all() {
        return Err(Refusal::Forbidden(forbidden(
            "the dashboard needs a key with capability {\"*\":[\"*\"]}",
        )));
    }
    Ok(principal)
}

/// 40160 with HTTP 403: authenticated, but not allowed here.
fn forbidden(message: &str) -> ApiError {
    let mut info = ErrorCode::CapabilityDenied.info(message);
    info.status_code = StatusCode::FORBIDDEN.as_u16();
    ApiError::new(info)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Overview {
    /// This node's id (the first of `nodes`).
    node: String,
    clustered: bool,
    nodes: Vec<NodePulse>,
    /// Sums over the nodes with numbers; latency merged from their buckets.
    cluster: Totals,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Totals {
    nodes: usize,
    connections: u64,
    channels: u64,
    attachments: u64,
    messages_in: u64,
    messages_out: u64,
    slow_consumer_disconnects: u64,
    auth_failures: u64,
    in_per_second: f64,
    out_per_second: f64,
    latency: Latency,
}

fn totals(nodes: &[NodePulse]) -> Totals {
    let mut totals = Totals {
        nodes: nodes.len(),
        ..Totals::default()
    };
    let mut buckets: Vec<u64> = Vec::new();
    for node in nodes {
        totals.connections += node.connections;
        totals.channels += node.channels;
        totals.attachments += node.attachments;
        totals.messages_in += node.messages_in;
        totals.messages_out += node.messages_out;
        totals.slow_consumer_disconnects += node.slow_consumer_disconnects;
        totals.auth_failures += node.auth_failures;
        totals.in_per_second += node.in_per_second;
        totals.out_per_second += node.out_per_second;
        buckets.resize(buckets.len().max(node.latency.buckets.len()), 0);
        for (sum, count) in buckets.iter_mut().zip(&node.latency.buckets) {
            *sum += count;
        }
    }
    totals.latency = Latency::from_buckets(buckets);
    totals
}

/// `GET /dashboard/api/overview`.
async fn overview(State(gateway): State<Gateway>) -> Result<Response, ApiError> {
    let nodes = gateway.node_pulses().await;
    let overview = Overview {
        node: gateway.node_id().to_owned(),
        clustered: gateway.config().redis.is_some(),
        cluster: totals(&nodes),
        nodes,
    };
    respond(StatusCode::OK, &overview, Format::Json, false)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChannelList {
    /// Channels this node holds (sandbox apps' excluded).
    total: usize,
    channels: Vec<ChannelRow>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChannelRow {
    name: String,
    occupancy: Occupancy,
}

/// `GET /dashboard/api/channels`: the busiest channels this node holds.
async fn channels(State(gateway): State<Gateway>) -> Result<Response, ApiError> {
    let (total, busiest) = gateway.hub().busiest_channels(
        |name| !name.contains(gateway::auth::APP_SEPARATOR),
        LISTED_CHANNELS,
    );
    let list = ChannelList {
        total,
        channels: busiest
            .into_iter()
            .map(|(name, occupancy)| ChannelRow { name, occupancy })
            .collect(),
    };
    respond(StatusCode::OK, &list, Format::Json, false)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Inspection {
    name: String,
    /// This node's subscribers and the channel's members.
    occupancy: Occupancy,
    members: Vec<PresenceMessage>,
    /// Newest first.
    messages: Vec<Message>,
}

/// `GET /dashboard/api/channels/{channel}`: occupancy, presence members, last messages.
async fn channel(
    State(gateway): State<Gateway>,
    Extension(principal): Extension<Principal>,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let channel = ChannelName::parse(&channel)?;
    let key = principal.channel_key(&channel).into_owned();
    let query = HistoryQuery {
        start: None,
        end: None,
        forwards: false,
        limit: LAST_MESSAGES,
        cursor: None,
        until_serial: None,
    };
    let messages = gateway.history(&key, &query).await?;
    let members = gateway
        .presence_members(&key)
        .await?
        .into_iter()
        .map(|mut member| {
            member.make_json_safe();
            member
        })
        .collect();
    // Binary data as base64 with its `encoding`, as JSON history carries it.
    let messages = messages
        .iter()
        .map(|message| {
            let mut message = (**message).clone();
            message.make_json_safe();
            message
        })
        .collect();
    let inspection = Inspection {
        name: channel.as_str().to_owned(),
        occupancy: gateway.hub().occupancy(&key),
        members,
        messages,
    };
    respond(StatusCode::OK, &inspection, Format::Json, false)
}

/// `POST /dashboard/api/channels/{channel}/messages` with `{"name", "data"}`: a test publish
/// as the dashboard's key, through the same checks as any publish.
async fn publish(
    State(gateway): State<Gateway>,
    Extension(principal): Extension<Principal>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(forbidden(
            "dashboard publishes must come from the dashboard's own origin",
        ));
    }
    let channel = ChannelName::parse(&channel)?;
    let message: Message = decode(&headers, &body)?;
    let receipt = gateway
        .publish(&principal, &channel, vec![message], Origin::Rest)
        .await?;
    #[derive(Serialize)]
    struct Published {
        channel: String,
        serials: Vec<Option<String>>,
    }
    respond(
        StatusCode::CREATED,
        &Published {
            channel: channel.as_str().to_owned(),
            serials: receipt.serials,
        },
        Format::Json,
        false,
    )
}

/// A browser names the page's origin on a POST: only the dashboard's own may publish with the
/// browser's cached credentials (no cross-site request forgery). Non-browser clients send none.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host);
    host.is_some() && host == origin_host
}

#[cfg(test)]
mod tests;
