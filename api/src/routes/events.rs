//! `POST /events`: Digis domain events (one, or an array), checked against the configured
//! catalog, routed to their channels and published once per event id.
//!
//! The whole request is checked first — every event's type, fields, size and channels, and the
//! key's publish capability on each channel — so a bad event refuses the batch and nothing is
//! half-published. Then each event is published (`Gateway::publish_event`): 201 once every
//! channel of every event took it; otherwise the first error's status with Ably's error envelope
//! and `batchResponse` listing each event's channels with their serial or error. Retrying with
//! the same ids completes what is missing without duplicates; a repeat of a completed event gets
//! the first answer with `Idempotent-Replayed: true`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use gateway::events::EventReceipt;
use gateway::Gateway;
use protocol::{ErrorCode, ErrorInfo, Operation};
use serde_json::Value;

use crate::body::{respond, OneOrMany};
use crate::error::ApiError;
use crate::extract::{Payload, Rest};

/// Events one request may carry: a batch is checked whole before any is published.
const MAX_EVENTS_PER_REQUEST: usize = 100;

pub(crate) async fn publish(
    State(gateway): State<Gateway>,
    Rest { format, caller }: Rest,
    body: Payload,
) -> Result<Response, ApiError> {
    let body = body.decode::<OneOrMany<Value>>()?;
    let single = body.is_one();
    let items = body.into_vec();
    if items.is_empty() || items.len() > MAX_EVENTS_PER_REQUEST {
        return Err(ApiError::code(
            ErrorCode::BadRequest,
            format!("send between 1 and {MAX_EVENTS_PER_REQUEST} events"),
        ));
    }
    let max_bytes = gateway.config().limits.max_message_bytes;
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let in_batch = |error: ErrorInfo| {
            let error = if single {
                error
            } else {
                ErrorInfo {
                    message: format!("events[{index}]: {}", error.message),
                    ..error
                }
            };
            ApiError::new(error)
        };
        let event = gateway
            .config()
            .events
            .check(item, max_bytes)
            .map_err(in_batch)?;
        if let Some(denied) = event
            .channels
            .iter()
            .find(|channel| !caller.allows(channel, Operation::Publish))
        {
            return Err(in_batch(ErrorCode::CapabilityDenied.info(format!(
                "event {:?}: publish on channel {:?} is not permitted by the capability",
                event.id,
                denied.as_str()
            ))));
        }
        events.push(event);
    }
    let mut receipts: Vec<EventReceipt> = Vec::with_capacity(events.len());
    let mut replayed = true;
    for event in &events {
        let result = gateway.publish_event(&caller, event).await;
        replayed &= result.replayed;
        receipts.push(result.receipt);
    }
    let failures: Vec<&ErrorInfo> = receipts.iter().filter_map(EventReceipt::error).collect();
    if let Some(first) = failures.first() {
        // A server-side failure (Redis) says "retry"; otherwise the first client error.
        let worst = failures
            .iter()
            .find(|e| e.status_code >= 500)
            .unwrap_or(first);
        let failed_channels: usize = receipts
            .iter()
            .map(|r| r.channels.iter().filter(|c| c.error.is_some()).count())
            .sum();
        let info = ErrorInfo {
            message: format!(
                "{failed_channels} channel(s) did not take the event: {}; retry with the same event id to complete it",
                worst.message
            ),
            ..(*worst).clone()
        };
        return Ok(ApiError::new(info)
            .in_format(format)
            .with_batch_response(Some(&receipts)));
    }
    let mut response = if single {
        respond(StatusCode::CREATED, &receipts[0], format, false)?
    } else {
        respond(StatusCode::CREATED, &receipts, format, false)?
    };
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}
