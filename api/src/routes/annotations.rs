//! `POST` and `GET /channels/{channel}/messages/{serial}/annotations` (RSAN1, RSAN3): annotate a
//! message, and list its raw annotations oldest first, paged with relative `Link`s
//! (`./annotations?limit=N&cursor=…`), `next` only when another item exists.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use gateway::{Gateway, Origin};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use protocol::{Annotation, ChannelName, ErrorCode, Format, Operation};
use serde::Serialize;

use crate::body::{respond, respond_paged, OneOrMany};
use crate::error::ApiError;
use crate::extract::{Caller, Enveloped, Payload, Rest};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Serialize)]
struct Annotated {
    /// `null` for a repeat of an annotation id the client chose, within the idempotency window.
    serials: Vec<Option<String>>,
}

/// `POST …/annotations`: one annotation or an array of them, each of the message in the path
/// (its `messageSerial` is set from the path). 201 `{serials}` once the back-end applied them.
pub(crate) async fn publish(
    State(gateway): State<Gateway>,
    Path((channel, serial)): Path<(String, String)>,
    Rest { format, caller }: Rest,
    body: Payload,
) -> Result<Response, ApiError> {
    let channel = ChannelName::parse(&channel)?;
    // Refused from a skim before building them, as a publish is.
    super::refuse_a_long_list(&gateway, &body)?;
    let mut annotations = body.decode::<OneOrMany<Annotation>>()?.into_vec();
    for annotation in &mut annotations {
        annotation.message_serial = Some(serial.clone());
    }
    let serials = gateway
        .annotate(&caller, &channel, annotations, Origin::Rest)
        .await?;
    respond(StatusCode::CREATED, &Annotated { serials }, format, false)
}

/// `GET …/annotations?limit&cursor`: the message's raw annotations, oldest first; 40400 for a
/// message the channel does not hold. Needs `history` or `annotation-subscribe`.
pub(crate) async fn list(
    State(gateway): State<Gateway>,
    Path((channel, serial)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    Enveloped { format, envelope }: Enveloped,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let channel = ChannelName::parse(&channel)?;
    if !caller.allows(&channel, Operation::History)
        && !caller.allows(&channel, Operation::AnnotationSubscribe)
    {
        return Err(ApiError::code(
            ErrorCode::CapabilityDenied,
            "reading this channel's annotations needs history or annotation-subscribe",
        ));
    }
    let limit = match params.get("limit").filter(|l| !l.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(limit) => limit
            .parse()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::code(
                    ErrorCode::InvalidParameterValue,
                    "invalid limit parameter (1 to 1000)",
                )
            })?,
    };
    let cursor = params.get("cursor").filter(|c| !c.is_empty());
    // One more than the page: `next` only when it exists.
    let found = gateway
        .annotations(
            &caller.channel_key(&channel),
            &serial,
            cursor.map(String::as_str),
            limit + 1,
        )
        .await?;
    let Some(mut found) = found else {
        return Err(ApiError::code(
            ErrorCode::NotFound,
            format!("no message with serial {serial:?} in this channel's history"),
        ));
    };
    let more = found.len() > limit;
    found.truncate(limit);
    let next = more
        .then(|| found.last().and_then(|a| a.serial.clone()))
        .flatten();
    let page: Vec<Annotation> = found
        .iter()
        .map(|annotation| {
            let mut annotation = Annotation::clone(annotation);
            if format == Format::Json {
                annotation.make_json_safe();
            }
            annotation
        })
        .collect();
    let link = links(limit, cursor.map(String::as_str), next.as_deref());
    respond_paged(StatusCode::OK, &page, format, envelope, Some(link))
}

/// `first`, `current` and, when another item exists, `next`, relative as ably-js requires.
fn links(limit: usize, cursor: Option<&str>, next: Option<&str>) -> String {
    let url = |cursor: Option<&str>| match cursor {
        None => format!("./annotations?limit={limit}"),
        Some(cursor) => format!(
            "./annotations?limit={limit}&cursor={}",
            utf8_percent_encode(cursor, NON_ALPHANUMERIC)
        ),
    };
    let mut parts = vec![
        format!("<{}>; rel=\"first\"", url(None)),
        format!("<{}>; rel=\"current\"", url(cursor)),
    ];
    if let Some(next) = next {
        parts.push(format!("<{}>; rel=\"next\"", url(Some(next))));
    }
    parts.join(", ")
}
