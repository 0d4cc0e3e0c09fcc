use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use gateway::{Gateway, Occupancy, Origin};
use protocol::{ChannelName, ErrorCode, Message, Operation};
use serde::Serialize;

use crate::body::{respond, OneOrMany};
use crate::error::ApiError;
use crate::extract::{Caller, Enveloped, Payload, Rest};

/// What a publish answers: the channel, the first message's id and each message's serial.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Published {
    channel: String,
    message_id: Option<String>,
    serials: Vec<Option<String>>,
}

/// `POST /channels/{channel}/messages` (one message or an array of them). 201 only once the
/// back-end (this node's hub, or Redis) has taken the messages. `?ephemeral=true` (ably-js
/// sends publish params in the query) marks every message `extras.ephemeral`: delivered live,
/// never stored, `serials` all `null`.
pub(crate) async fn publish(
    State(gateway): State<Gateway>,
    Path(channel): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    Rest { format, caller }: Rest,
    body: Payload,
) -> Result<Response, ApiError> {
    let channel = ChannelName::parse(&channel)?;
    super::refuse_a_long_list(&gateway, &body)?;
    let ephemeral = match params.get("ephemeral").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::code(
                ErrorCode::InvalidParameterValue,
                format!("ephemeral must be true or false, not {other:?}"),
            ))
        }
    };
    let mut messages = body.decode::<OneOrMany<Message>>()?.into_vec();
    if ephemeral {
        messages.iter_mut().for_each(gateway::hub::mark_ephemeral);
    }
    let receipt = gateway
        .publish(&caller, &channel, messages, Origin::Rest)
        .await?;
    let published = Published {
        channel: channel.as_str().to_owned(),
        message_id: receipt.message_id,
        serials: receipt.serials,
    };
    respond(StatusCode::CREATED, &published, format, false)
}

/// What an update, delete or append answers (RSL15e).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Changed {
    version_serial: Option<String>,
}

/// `PATCH /channels/{channel}/messages/{serial}`: one message whose `action` is 1 (update, the
/// default), 2 (delete) or 5 (append), and whose `version` may say who and why. 200 with the
/// new version's serial once the back-end has taken it.
pub(crate) async fn mutate(
    State(gateway): State<Gateway>,
    Path((channel, serial)): Path<(String, String)>,
    Rest { format, caller }: Rest,
    body: Payload,
) -> Result<Response, ApiError> {
    let channel = ChannelName::parse(&channel)?;
    let mut op = body.decode::<Message>()?;
    op.serial = Some(serial);
    let receipt = gateway.mutate(&caller, &channel, op, Origin::Rest).await?;
    let changed = Changed {
        version_serial: receipt.serials.into_iter().next().flatten(),
    };
    respond(StatusCode::OK, &changed, format, false)
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
    Enveloped { format, envelope }: Enveloped,
    Caller(principal): Caller,
) -> Result<Response, ApiError> {
    let channel = super::permitted_channel(
        &principal,
        &channel,
        Operation::ChannelMetadata,
        "channel-metadata is not permitted on this channel",
    )?;
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
