//! Ably Chat's REST API (`/chat/v4/rooms/{room}/…`, what `@ably/chat` calls through
//! `realtime.request()`): a room is the channel `{room}::$chat`, a chat message is an Ably
//! message named `chat.message` with `data: {text, metadata}` and `extras: {headers}`, and the
//! answers are Chat's V4 message shape.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use gateway::hub::HistoryQuery;
use gateway::{Gateway, Origin, Principal};
use protocol::message::{message_action, Data, MessageVersion};
use protocol::{ChannelName, ErrorCode, Message, Operation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::history::{self, Read};
use crate::body::respond;
use crate::error::ApiError;
use crate::extract::{Payload, Rest};

/// The Ably message name of a chat message.
const CHAT_MESSAGE: &str = "chat.message";

/// A room's channel.
fn room_channel(room: &str) -> Result<ChannelName, ApiError> {
    Ok(ChannelName::parse(&format!("{room}::$chat"))?)
}

/// A chat message as Chat's REST API (V4) gives it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ChatMessage {
    serial: String,
    version: ChatVersion,
    text: String,
    client_id: String,
    action: &'static str,
    metadata: Value,
    headers: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_claim: Option<String>,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reactions: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatVersion {
    serial: String,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<BTreeMap<String, String>>,
}

/// The JSON a message's data holds (an object, or JSON text with `encoding: json`).
fn data_object(message: &Message) -> Map<String, Value> {
    let value = match (&message.data, message.encoding.as_deref()) {
        (Some(Data::Other(value)), _) => value.clone(),
        (Some(Data::String(text)), Some("json")) => {
            serde_json::from_str(text).unwrap_or(Value::Null)
        }
        _ => Value::Null,
    };
    match value {
        Value::Object(object) => object,
        _ => Map::new(),
    }
}

impl ChatMessage {
    pub(super) fn of(message: &Message) -> ChatMessage {
        let data = data_object(message);
        let extras = message.extras.as_ref();
        let serial = message.serial.clone().unwrap_or_default();
        let timestamp = message.timestamp.unwrap_or(0);
        let version = message.version.clone().unwrap_or_default();
        let action = match message.action {
            Some(message_action::UPDATE) => "message.update",
            Some(message_action::DELETE) => "message.delete",
            _ => "message.create",
        };
        ChatMessage {
            version: ChatVersion {
                serial: version.serial.unwrap_or_else(|| serial.clone()),
                timestamp: version.timestamp.unwrap_or(timestamp),
                client_id: version.client_id,
                description: version.description,
                metadata: version.metadata,
            },
            serial,
            text: data
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            client_id: message.client_id.clone().unwrap_or_default(),
            action,
            metadata: data.get("metadata").cloned().unwrap_or_else(|| json!({})),
            headers: extras
                .and_then(|e| e.get("headers"))
                .cloned()
                .unwrap_or_else(|| json!({})),
            user_claim: extras
                .and_then(|e| e.get("userClaim"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            timestamp,
            reactions: reactions(message),
        }
    }
}

/// The message's reaction summaries under Chat's names (`reaction:unique.v1` → `unique`, ...).
fn reactions(message: &Message) -> Option<Value> {
    let summary = &message.annotations.as_ref()?.summary;
    let mut reactions = Map::new();
    for kind in ["unique", "distinct", "multiple"] {
        if let Some(entry) = summary.get(&format!("reaction:{kind}.v1")) {
            reactions.insert(kind.to_owned(), entry.clone());
        }
    }
    (!reactions.is_empty()).then_some(Value::Object(reactions))
}

/// What a chat message carries: its text, and optionally metadata and headers.
#[derive(Deserialize)]
struct Content {
    text: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    headers: Option<Value>,
}

impl Content {
    /// As an Ably message's name, data and extras; omitted metadata and headers are empty.
    fn into_message(self) -> Result<Message, ApiError> {
        let text = self.text.ok_or_else(|| {
            ApiError::code(
                ErrorCode::InvalidParameterValue,
                "a chat message needs text",
            )
        })?;
        let object = |value: Option<Value>, what: &str| match value {
            None | Some(Value::Null) => Ok(json!({})),
            Some(value @ Value::Object(_)) => Ok(value),
            Some(_) => Err(ApiError::code(
                ErrorCode::InvalidParameterValue,
                format!("a chat message's {what} must be an object"),
            )),
        };
        Ok(Message {
            name: Some(CHAT_MESSAGE.to_owned()),
            data: Some(Data::Other(
                json!({"text": text, "metadata": object(self.metadata, "metadata")?}),
            )),
            extras: Some(json!({"headers": object(self.headers, "headers")?})),
            ..Message::default()
        })
    }
}

/// `POST /chat/v4/rooms/{room}/messages` `{text, metadata?, headers?}` (`?idempotencyKey=` makes
/// a repeat a no-op): 201 with the message.
pub(crate) async fn send(
    State(gateway): State<Gateway>,
    Path(room): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    Rest { format, caller }: Rest,
    body: Payload,
) -> Result<Response, ApiError> {
    let channel = room_channel(&room)?;
    let mut message = body.decode::<Content>()?.into_message()?;
    message.id = params.get("idempotencyKey").cloned();
    let receipt = gateway
        .publish(&caller, &channel, vec![message.clone()], Origin::Rest)
        .await?;
    message.serial = receipt.serials.into_iter().next().flatten();
    message.timestamp = Some(receipt.timestamp);
    message.client_id = caller.identity().map(str::to_owned);
    message.action = Some(message_action::CREATE);
    caller.stamp_user_claim(&channel, &mut message.extras);
    respond(
        StatusCode::CREATED,
        &ChatMessage::of(&message),
        format,
        false,
    )
}

/// `GET /chat/v4/rooms/{room}/messages` (`start`, `end`, `direction`, `limit`, `fromSerial`).
pub(crate) async fn history(
    State(gateway): State<Gateway>,
    read: Read,
) -> Result<Response, ApiError> {
    let request = history::request(read.for_room(), Operation::History)?;
    // One more than the page, so the last page has no `next` (Chat's `hasNext()`).
    let limit = request.query.limit;
    let query = HistoryQuery {
        limit: limit + 1,
        ..request.query.clone()
    };
    let mut page = gateway.history(request.channel_key(), &query).await?;
    let next = (page.len() > limit)
        .then(|| {
            page.truncate(limit);
            page.last().and_then(|m| m.serial.clone())
        })
        .flatten();
    let messages: Vec<ChatMessage> = page
        .iter()
        .filter(|m| m.name.as_deref() == Some(CHAT_MESSAGE))
        .map(|m| ChatMessage::of(m))
        .collect();
    request.respond("messages", &messages, next)
}

/// A room's channel, checked against the caller's capability for `operation`.
fn permitted_room(
    caller: &Principal,
    room: &str,
    operation: Operation,
) -> Result<ChannelName, ApiError> {
    let channel = room_channel(room)?;
    if caller.allows(&channel, operation) {
        Ok(channel)
    } else {
        Err(ApiError::code(
            ErrorCode::CapabilityDenied,
            format!("{} is not permitted in room {room:?}", operation.as_str()),
        ))
    }
}

fn no_such_message(serial: &str) -> ApiError {
    ApiError::code(
        ErrorCode::NotFound,
        format!("no message with serial {serial:?} in this room"),
    )
}

/// `GET /chat/v4/rooms/{room}/messages/{serial}`.
pub(crate) async fn message(
    State(gateway): State<Gateway>,
    Path((room, serial)): Path<(String, String)>,
    Rest { format, caller }: Rest,
) -> Result<Response, ApiError> {
    let channel = permitted_room(&caller, &room, Operation::History)?;
    let found = gateway
        .message(&caller.channel_key(&channel), &serial)
        .await?
        .ok_or_else(|| no_such_message(&serial))?;
    respond(StatusCode::OK, &ChatMessage::of(&found), format, false)
}

/// Who and why, for an update or delete.
#[derive(Deserialize, Default)]
struct OperationDetails {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

impl OperationDetails {
    fn version(self) -> MessageVersion {
        MessageVersion {
            description: self.description,
            metadata: self.metadata,
            ..MessageVersion::default()
        }
    }
}

#[derive(Deserialize)]
struct Update {
    message: Content,
    #[serde(flatten)]
    details: OperationDetails,
}

/// Applies `op` to the room's message `serial`; answers the message as it now is.
async fn change(
    gateway: &Gateway,
    caller: &Principal,
    room: &str,
    serial: String,
    mut op: Message,
    format: protocol::Format,
) -> Result<Response, ApiError> {
    let channel = room_channel(room)?;
    op.serial = Some(serial.clone());
    let receipt = gateway.mutate(caller, &channel, op, Origin::Rest).await?;
    let changed = receipt.changed.ok_or_else(|| no_such_message(&serial))?;
    respond(StatusCode::OK, &ChatMessage::of(&changed), format, false)
}

/// `PUT /chat/v4/rooms/{room}/messages/{serial}` `{message: {text, metadata?, headers?},
/// description?, metadata?}`: PUT semantics, so omitted metadata and headers become empty.
pub(crate) async fn update(
    State(gateway): State<Gateway>,
    Path((room, serial)): Path<(String, String)>,
    Rest { format, caller }: Rest,
    body: Payload,
) -> Result<Response, ApiError> {
    let Update { message, details } = body.decode::<Update>()?;
    let mut op = message.into_message()?;
    op.action = Some(message_action::UPDATE);
    op.version = Some(details.version());
    change(&gateway, &caller, &room, serial, op, format).await
}

/// `POST /chat/v4/rooms/{room}/messages/{serial}/delete` `{description?, metadata?}`.
pub(crate) async fn delete(
    State(gateway): State<Gateway>,
    Path((room, serial)): Path<(String, String)>,
    Rest { format, caller }: Rest,
    body: Payload,
) -> Result<Response, ApiError> {
    let details = if body.bytes.is_empty() {
        OperationDetails::default()
    } else {
        body.decode::<OperationDetails>()?
    };
    // A deleted chat message keeps no text, metadata or headers.
    let op = Message {
        action: Some(message_action::DELETE),
        version: Some(details.version()),
        data: Some(Data::Other(json!({"text": "", "metadata": {}}))),
        extras: Some(json!({"headers": {}})),
        ..Message::default()
    };
    change(&gateway, &caller, &room, serial, op, format).await
}

/// `GET /chat/v4/rooms/{room}/messages/{serial}/versions`: oldest first, paged by `limit`.
pub(crate) async fn versions(
    State(gateway): State<Gateway>,
    Path(path): Path<HashMap<String, String>>,
    read: Read,
) -> Result<Response, ApiError> {
    let serial = path.get("serial").cloned().unwrap_or_default();
    let request = history::request(read.for_room(), Operation::History)?;
    let versions = gateway
        .versions(request.channel_key(), &serial)
        .await?
        .ok_or_else(|| no_such_message(&serial))?;
    request.respond_offset_page("versions", &versions, ChatMessage::of)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomOccupancy {
    connections: usize,
    presence_members: usize,
}

/// `GET /chat/v4/rooms/{room}/occupancy` (this node's view), with `subscribe` or
/// `channel-metadata` on the room.
pub(crate) async fn occupancy(
    State(gateway): State<Gateway>,
    Path(room): Path<String>,
    Rest { format, caller }: Rest,
) -> Result<Response, ApiError> {
    let channel = permitted_room(&caller, &room, Operation::ChannelMetadata)
        .or_else(|_| permitted_room(&caller, &room, Operation::Subscribe))?;
    let metrics = gateway.hub().occupancy(&caller.channel_key(&channel));
    let occupancy = RoomOccupancy {
        connections: metrics.connections,
        presence_members: metrics.presence_members,
    };
    respond(StatusCode::OK, &occupancy, format, false)
}

/// A message reaction as Chat sends it: `unique`, `distinct` or `multiple`, mapped onto the
/// annotation types `reaction:<type>.v1`.
#[derive(Deserialize)]
struct Reaction {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    #[serde(default)]
    count: Option<u64>,
}

impl Reaction {
    fn annotation(self, serial: &str, action: u8) -> Result<protocol::Annotation, ApiError> {
        if !["unique", "distinct", "multiple"].contains(&self.kind.as_str()) {
            return Err(ApiError::code(
                ErrorCode::InvalidParameterValue,
                format!(
                    "reaction type {:?}: unique, distinct or multiple",
                    self.kind
                ),
            ));
        }
        Ok(protocol::Annotation {
            action,
            annotation_type: Some(format!("reaction:{}.v1", self.kind)),
            name: self.name,
            count: self.count,
            message_serial: Some(serial.to_owned()),
            ..protocol::Annotation::default()
        })
    }
}

#[derive(Serialize)]
struct Reacted {
    serial: Option<String>,
}

async fn react(
    gateway: &Gateway,
    caller: &Principal,
    room: &str,
    annotation: protocol::Annotation,
    status: StatusCode,
    format: protocol::Format,
) -> Result<Response, ApiError> {
    let channel = room_channel(room)?;
    let serials = gateway
        .annotate(caller, &channel, vec![annotation], Origin::Rest)
        .await?;
    let serial = serials.into_iter().next().flatten();
    respond(status, &Reacted { serial }, format, false)
}

/// `POST /chat/v4/rooms/{room}/messages/{serial}/reactions` `{type, name, count?}`.
pub(crate) async fn send_reaction(
    State(gateway): State<Gateway>,
    Path((room, serial)): Path<(String, String)>,
    Rest { format, caller }: Rest,
    body: Payload,
) -> Result<Response, ApiError> {
    let annotation = body.decode::<Reaction>()?.annotation(&serial, 0)?;
    react(
        &gateway,
        &caller,
        &room,
        annotation,
        StatusCode::CREATED,
        format,
    )
    .await
}

/// `DELETE /chat/v4/rooms/{room}/messages/{serial}/reactions?type=&name=`.
pub(crate) async fn delete_reaction(
    State(gateway): State<Gateway>,
    Path((room, serial)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    Rest { format, caller }: Rest,
) -> Result<Response, ApiError> {
    let reaction = Reaction {
        kind: params.get("type").cloned().unwrap_or_default(),
        name: params.get("name").cloned(),
        count: None,
    };
    let annotation = reaction.annotation(&serial, 1)?;
    react(&gateway, &caller, &room, annotation, StatusCode::OK, format).await
}

/// `GET /chat/v4/rooms/{room}/messages/{serial}/client-reactions?forClientId=` (the caller by
/// default): the message's reaction summaries narrowed to what that client reacted with.
pub(crate) async fn client_reactions(
    State(gateway): State<Gateway>,
    Path((room, serial)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    Rest { format, caller }: Rest,
) -> Result<Response, ApiError> {
    let channel = permitted_room(&caller, &room, Operation::History)?;
    let client = params
        .get("forClientId")
        .cloned()
        .or_else(|| caller.identity().map(str::to_owned))
        .unwrap_or_default();
    let found = gateway
        .message(&caller.channel_key(&channel), &serial)
        .await?
        .ok_or_else(|| no_such_message(&serial))?;
    let reactions = reactions(&found).unwrap_or_else(|| json!({}));
    let mut mine = Map::new();
    for kind in ["unique", "distinct", "multiple"] {
        let mut names = Map::new();
        for (name, entry) in reactions
            .get(kind)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(entry) = for_client(entry, &client) {
                names.insert(name.clone(), entry);
            }
        }
        mine.insert(kind.to_owned(), Value::Object(names));
    }
    respond(StatusCode::OK, &Value::Object(mine), format, false)
}

/// One reaction name's summary as far as `client` is in it: its `clientIds` only that client,
/// totals as they are; `None` when the client did not react with it.
fn for_client(entry: &Value, client: &str) -> Option<Value> {
    let mut entry = entry.as_object()?.clone();
    match entry.get("clientIds")? {
        Value::Array(ids) => {
            ids.iter().find(|id| id.as_str() == Some(client))?;
            entry.insert("clientIds".into(), json!([client]));
        }
        Value::Object(counts) => {
            let count = counts.get(client)?.clone();
            entry.insert("clientIds".into(), json!({ client: count }));
        }
        _ => return None,
    }
    Some(Value::Object(entry))
}
