use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use gateway::{Gateway, Occupancy, Origin};
use protocol::{ChannelName, ErrorCode, Format, Message, Operation};
use serde::Serialize;

use crate::auth::principal;
use crate::body::{body_format, decode, respond, response_format, OneOrMany};
use crate::error::ApiError;

/// One message or an array of them: ably-js always sends an array, ably-python a lone object.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Published {
    channel: String,
    message_id: Option<String>,
    serials: Vec<Option<String>>,
}

/// `POST /channels/{channel}/messages`. 201 only once the hub has taken the messages.
pub(crate) async fn publish(
    State(gateway): State<Gateway>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let format = response_format(&headers);
    let principal = principal(&gateway, &headers, format).await?;
    let channel = ChannelName::parse(&channel).map_err(|e| ApiError::new(e, format))?;
    // More messages than a publish may hold are refused from a skim of the body, before
    // building them (every message takes at least a byte, so only longer bodies are skimmed).
    let max = gateway.config().limits.max_messages_per_publish;
    if body.len() > max {
        let counted = body_format(&headers)
            .and_then(|body_format| protocol::codec::shape::list_len(&body, body_format));
        if let Some(n) = counted.filter(|n| *n > max) {
            gateway::limits::count_refusal("too_many_messages", "rest");
            return Err(ApiError::new(gateway::too_many_messages(n, max), format));
        }
    }
    let messages = decode::<OneOrMany<Message>>(&headers, &body, format)?.into_vec();
    let receipt = gateway
        .publish(&principal, &channel, messages, Origin::Rest)
        .await
        .map_err(|e| ApiError::new(e, format))?;
    let published = Published {
        channel: channel.as_str().to_owned(),
        message_id: receipt.message_id,
        serials: receipt.serials,
    };
    respond(StatusCode::CREATED, &published, format, false)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChannelDetails {
    channel_id: String,
    status: ChannelStatus,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChannelStatus {
    is_active: bool,
    occupancy: OccupancyEnvelope,
}

#[derive(Serialize)]
struct OccupancyEnvelope {
    metrics: Occupancy,
}

/// `GET /channels/{channel}`: whether it is active and who is on it (this node's view).
pub(crate) async fn status(
    State(gateway): State<Gateway>,
    Path(channel): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (format, envelope) = match query.get("envelope").map(String::as_str) {
        Some("json") => (Format::Json, true),
        Some("msgpack") => (Format::Msgpack, true),
        _ => (response_format(&headers), false),
    };
    let principal = principal(&gateway, &headers, format).await?;
    let channel = ChannelName::parse(&channel).map_err(|e| ApiError::new(e, format))?;
    if !principal.allows(&channel, Operation::ChannelMetadata) {
        return Err(ApiError::code(
            ErrorCode::CapabilityDenied,
            "channel-metadata is not permitted on this channel",
            format,
        ));
    }
    let metrics = gateway.hub().occupancy(&principal.channel_key(&channel));
    let details = ChannelDetails {
        channel_id: channel.as_str().to_owned(),
        status: ChannelStatus {
            is_active: metrics.connections > 0,
            occupancy: OccupancyEnvelope { metrics },
        },
    };
    respond(StatusCode::OK, &details, format, envelope)
}
