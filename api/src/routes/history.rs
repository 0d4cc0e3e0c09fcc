//! `GET /channels/{channel}/messages` (history) and the presence reads, paged with the relative
//! `Link` headers ably-js follows (`./messages?…; rel="next"`).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gateway::hub::HistoryQuery;
use gateway::{Gateway, Principal};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use protocol::{ErrorCode, Format, Message, Operation, PresenceMessage};
use serde::Serialize;

use crate::body::respond_paged;
use crate::error::ApiError;
use crate::extract::{Caller, Enveloped};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) struct Request {
    /// The hub's key for the channel (scoped to the caller's sandbox app, if any).
    channel_key: String,
    format: Format,
    envelope: bool,
    pub(super) query: HistoryQuery,
    params: HashMap<String, String>,
}

/// A read's preamble, in the order the refusals come: the path, the query, the caller.
pub(crate) struct Read {
    channel: String,
    params: HashMap<String, String>,
    reply: Enveloped,
    caller: Principal,
}

impl FromRequestParts<Gateway> for Read {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, Response> {
        // By name: the versions read has the message's serial in its path too.
        let Path(mut path) = Path::<HashMap<String, String>>::from_request_parts(parts, gateway)
            .await
            .map_err(IntoResponse::into_response)?;
        let channel = path
            .remove("channel")
            .or_else(|| path.remove("room"))
            .unwrap_or_default();
        let Query(params) = Query::<HashMap<String, String>>::from_request_parts(parts, gateway)
            .await
            .map_err(IntoResponse::into_response)?;
        let Ok(reply) = Enveloped::from_request_parts(parts, gateway).await;
        let Caller(caller) = Caller::from_request_parts(parts, gateway)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Read {
            channel,
            params,
            reply,
            caller,
        })
    }
}

impl Read {
    /// The read of a chat room's messages: its channel (`{room}::$chat`), and Chat's
    /// `fromSerial` for `from_serial`.
    pub(super) fn for_room(mut self) -> Read {
        self.channel = format!("{}::$chat", self.channel);
        if let Some(serial) = self.params.remove("fromSerial") {
            self.params.insert("from_serial".into(), serial);
        }
        self
    }
}

/// The read checked: the channel's name, `operation` in the caller's capability, the query.
pub(super) fn request(read: Read, operation: Operation) -> Result<Request, ApiError> {
    let Read {
        channel,
        params,
        reply: Enveloped { format, envelope },
        caller,
    } = read;
    let channel = super::permitted_channel(
        &caller,
        &channel,
        operation,
        "reading this channel's history or presence is not permitted by the capability",
    )?;
    let bad = |name: &str| {
        ApiError::code(
            ErrorCode::InvalidParameterValue,
            format!("invalid {name} parameter"),
        )
    };
    let number = |name: &str| -> Result<Option<u64>, ApiError> {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().map_err(|_| bad(name)))
            .transpose()
    };
    let forwards = match params.get("direction").map(String::as_str) {
        None | Some("backwards") => false,
        Some("forwards") => true,
        Some(_) => return Err(bad("direction")),
    };
    let limit = number("limit")?.map_or(DEFAULT_LIMIT, |l| l as usize);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad("limit (1 to 1000)"));
    }
    let query = HistoryQuery {
        start: number("start")?,
        end: number("end")?,
        forwards,
        limit,
        cursor: params.get("cursor").cloned().filter(|c| !c.is_empty()),
        until_serial: params.get("from_serial").cloned().filter(|s| !s.is_empty()),
    };
    Ok(Request {
        channel_key: caller.channel_key(&channel).into_owned(),
        format,
        envelope,
        query,
        params,
    })
}

impl Request {
    pub(super) fn channel_key(&self) -> &str {
        &self.channel_key
    }

    /// One page, with its `Link` header.
    pub(super) fn respond<T: Serialize>(
        &self,
        resource: &str,
        page: &[T],
        next_cursor: Option<String>,
    ) -> Result<Response, ApiError> {
        let link = links(resource, self, next_cursor);
        respond_paged(
            StatusCode::OK,
            &page,
            self.format,
            self.envelope,
            Some(link),
        )
    }

    /// Offset-paged resources (presence) keep in the cursor how many items came before.
    /// The page of `items` at this request's offset (`cursor`) and `limit`, each as `show` makes
    /// it, with a `next` link while more remain.
    pub(super) fn respond_offset_page<T: Serialize>(
        &self,
        resource: &str,
        items: &[std::sync::Arc<Message>],
        show: impl Fn(&Message) -> T,
    ) -> Result<Response, ApiError> {
        let (offset, limit) = (self.offset(), self.query.limit);
        let next = (items.len() > offset + limit).then(|| (offset + limit).to_string());
        let page: Vec<T> = items
            .iter()
            .skip(offset)
            .take(limit)
            .map(|item| show(item))
            .collect();
        self.respond(resource, &page, next)
    }

    pub(super) fn offset(&self) -> usize {
        self.query
            .cursor
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

/// Presence messages as the response format can carry them (binary data base64'd for JSON).
fn for_format(
    messages: impl IntoIterator<Item = PresenceMessage>,
    format: Format,
) -> Vec<PresenceMessage> {
    messages
        .into_iter()
        .map(|mut message| {
            if format == Format::Json {
                message.make_json_safe();
            }
            message
        })
        .collect()
}

/// `first`, `current` and (when the page is full) `next` links, relative as ably-js requires.
fn links(resource: &str, request: &Request, next_cursor: Option<String>) -> String {
    let base: Vec<(String, String)> = [
        "start",
        "end",
        "limit",
        "direction",
        "from_serial",
        "clientId",
        "connectionId",
    ]
    .iter()
    .filter_map(|name| {
        request
            .params
            .get(*name)
            .map(|value| (name.to_string(), value.clone()))
    })
    .collect();
    let url = |cursor: Option<&str>| {
        let mut pairs = base.clone();
        if pairs.is_empty() {
            pairs.push(("limit".into(), request.query.limit.to_string()));
        }
        if let Some(cursor) = cursor {
            pairs.push(("cursor".into(), cursor.to_owned()));
        }
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
            .collect();
        format!("./{resource}?{}", query.join("&"))
    };
    let mut parts = vec![
        format!("<{}>; rel=\"first\"", url(None)),
        format!(
            "<{}>; rel=\"current\"",
            url(request.query.cursor.as_deref())
        ),
    ];
    if let Some(cursor) = next_cursor {
        parts.push(format!("<{}>; rel=\"next\"", url(Some(&cursor))));
    }
    parts.join(", ")
}

pub(crate) async fn messages(
    State(gateway): State<Gateway>,
    read: Read,
) -> Result<Response, ApiError> {
    let request = request(read, Operation::History)?;
    let page = gateway
        .history(&request.channel_key, &request.query)
        .await?;
    let next = (page.len() == request.query.limit)
        .then(|| page.last().and_then(|m| m.serial.clone()))
        .flatten();
    let messages: Vec<Message> = page
        .iter()
        .map(|message| {
            let mut message = (**message).clone();
            if request.format == Format::Json {
                message.make_json_safe();
            }
            message
        })
        .collect();
    request.respond("messages", &messages, next)
}

const NO_HISTORY: &str = "reading this channel's messages is not permitted by the capability";

/// `GET /channels/{channel}/messages/{serial}` (RSL11): the message with that serial, while
/// history still holds it; 404 (40400) otherwise. Needs `history`, as history does.
pub(crate) async fn message(
    State(gateway): State<Gateway>,
    Path((channel, serial)): Path<(String, String)>,
    Enveloped { format, envelope }: Enveloped,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let channel = super::permitted_channel(&caller, &channel, Operation::History, NO_HISTORY)?;
    let found = gateway
        .message(&caller.channel_key(&channel), &serial)
        .await?;
    let Some(found) = found else {
        return Err(ApiError::code(
            ErrorCode::NotFound,
            format!("no message with serial {serial:?} in this channel's history"),
        ));
    };
    let mut message = Message::clone(&found);
    if format == Format::Json {
        message.make_json_safe();
    }
    crate::body::respond(StatusCode::OK, &message, format, envelope)
}

/// `GET /channels/{channel}/messages/{serial}/versions` (RSL14): the message's create, updates
/// and deletes, oldest first (`direction=backwards` for newest first), paged by `limit`.
pub(crate) async fn versions(
    State(gateway): State<Gateway>,
    Path(path): Path<HashMap<String, String>>,
    read: Read,
) -> Result<Response, ApiError> {
    let serial = path.get("serial").cloned().unwrap_or_default();
    let backwards = read.params.get("direction").map(String::as_str) == Some("backwards");
    let request = request(read, Operation::History)?;
    let Some(mut versions) = gateway.versions(&request.channel_key, &serial).await? else {
        return Err(ApiError::code(
            ErrorCode::NotFound,
            format!("no message with serial {serial:?} in this channel's history"),
        ));
    };
    if backwards {
        versions.reverse();
    }
    let format = request.format;
    request.respond_offset_page("versions", &versions, |version| {
        let mut version = Message::clone(version);
        if format == Format::Json {
            version.make_json_safe();
        }
        version
    })
}

pub(crate) async fn presence(
    State(gateway): State<Gateway>,
    read: Read,
) -> Result<Response, ApiError> {
    let request = request(read, Operation::Subscribe)?;
    let client_id = request.params.get("clientId");
    let connection_id = request.params.get("connectionId");
    let mut members: Vec<PresenceMessage> = gateway
        .presence_members(&request.channel_key)
        .await?
        .into_iter()
        .filter(|m| client_id.is_none_or(|c| m.client_id.as_ref() == Some(c)))
        .filter(|m| connection_id.is_none_or(|c| m.connection_id.as_ref() == Some(c)))
        .collect();
    // A stable order, so the cursor (members already returned) pages without skips or repeats.
    members.sort_by(|a, b| (&a.client_id, &a.connection_id).cmp(&(&b.client_id, &b.connection_id)));
    let offset = request.offset();
    let total = members.len();
    let page = for_format(
        members.into_iter().skip(offset).take(request.query.limit),
        request.format,
    );
    let end = offset + page.len();
    let next = (end < total).then(|| end.to_string());
    request.respond("presence", &page, next)
}

pub(crate) async fn presence_history(
    State(gateway): State<Gateway>,
    read: Read,
) -> Result<Response, ApiError> {
    let request = request(read, Operation::History)?;
    let page = gateway
        .hub()
        .presence_history(&request.channel_key, &request.query);
    // Presence history pages by offset: the cursor counts events already returned.
    let offset = request.offset();
    let next = (page.len() == request.query.limit).then(|| (offset + page.len()).to_string());
    let events = for_format(page, request.format);
    request.respond("history", &events, next)
}
