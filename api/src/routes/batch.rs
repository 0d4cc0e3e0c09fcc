//! Batch endpoints: `POST /messages` (publish to many channels) and `GET /presence?channels=`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use gateway::{Gateway, Origin};
use protocol::codec::shape::BatchShape;
use protocol::{ChannelName, ErrorCode, ErrorInfo, Format, Message, Operation, PresenceMessage};
use serde::{Deserialize, Serialize};

use crate::body::{respond, OneOrMany};
use crate::error::ApiError;
use crate::extract::{Payload, Rest};

#[derive(Deserialize)]
pub(crate) struct PublishSpec {
    channels: OneOrMany<String>,
    messages: OneOrMany<Message>,
}

/// The size of a decoded batch, which the skim (`batch_shape`) read before decoding it.
pub(crate) fn shape_of(specs: &[PublishSpec]) -> BatchShape {
    let mut shape = BatchShape::default();
    for spec in specs {
        let messages = spec.messages.len();
        shape.most_messages = shape.most_messages.max(messages);
        shape.total = shape
            .total
            .saturating_add(messages.saturating_mul(spec.channels.len()));
    }
    shape
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchResult<T> {
    success_count: usize,
    failure_count: usize,
    results: Vec<T>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PublishOutcome {
    #[serde(rename_all = "camelCase")]
    Published {
        channel: String,
        message_id: Option<String>,
        serials: Vec<Option<String>>,
    },
    Failed {
        channel: String,
        error: ErrorInfo,
    },
}

fn batch<T>(results: Vec<T>, failed: impl Fn(&T) -> bool) -> BatchResult<T> {
    let failure_count = results.iter().filter(|r| failed(r)).count();
    BatchResult {
        success_count: results.len() - failure_count,
        failure_count,
        results,
    }
}

/// A batch is refused whole (40030) when one spec holds more messages than a publish may, or
/// the publishes it makes (messages × channels, summed) are more than a batch may make.
fn check_batch(shape: BatchShape, limits: &gateway::config::Limits) -> Result<(), ErrorInfo> {
    if shape.most_messages > limits.max_messages_per_publish {
        gateway::limits::count_refusal("too_many_messages", "rest");
        return Err(gateway::Error::TooManyMessages {
            n: shape.most_messages,
            max: limits.max_messages_per_publish,
        }
        .into());
    }
    if shape.total > limits.max_batch_messages {
        gateway::limits::count_refusal("batch_too_large", "rest");
        return Err(ErrorCode::InvalidPublishRequest.info(format!(
            "batch publish of {} messages (messages × channels) exceeds the limit of {}",
            shape.total, limits.max_batch_messages
        )));
    }
    Ok(())
}

/// Each spec's messages go to each of its channels; one result per (spec, channel).
pub(crate) async fn publish(
    State(gateway): State<Gateway>,
    Rest { format, caller }: Rest,
    body: Payload,
) -> Result<Response, ApiError> {
    let limits = &gateway.config().limits;
    // Sized from a skim before decoding (a long body may hold many messages), and again after.
    if body.bytes.len() > limits.max_messages_per_publish {
        let shape = body
            .format()
            .and_then(|body_format| protocol::codec::shape::batch_shape(&body.bytes, body_format));
        if let Some(shape) = shape {
            check_batch(shape, limits)?;
        }
    }
    let body = body.decode::<OneOrMany<PublishSpec>>()?;
    check_batch(shape_of(body.as_slice()), limits)?;
    // One spec (not in an array) is answered with its results alone, as Ably does.
    let single = body.is_one();
    let specs = body.into_vec();
    let mut batches = Vec::with_capacity(specs.len());
    for spec in specs {
        let messages = spec.messages.into_vec();
        let mut results: Vec<PublishOutcome> = Vec::new();
        for name in spec.channels.into_vec() {
            let outcome = match ChannelName::parse(&name) {
                Ok(channel) => gateway
                    .publish(&caller, &channel, messages.clone(), Origin::Rest)
                    .await
                    .map_err(ErrorInfo::from),
                Err(error) => Err(error),
            };
            results.push(match outcome {
                Ok(receipt) => PublishOutcome::Published {
                    channel: name,
                    message_id: receipt.message_id,
                    serials: receipt.serials,
                },
                Err(error) => PublishOutcome::Failed {
                    channel: name,
                    error,
                },
            });
        }
        batches.push(batch(results, |r| {
            matches!(r, PublishOutcome::Failed { .. })
        }));
    }
    if single {
        let results: Vec<PublishOutcome> = batches
            .into_iter()
            .flat_map(|batch| batch.results)
            .collect();
        return respond(StatusCode::CREATED, &results, format, false);
    }
    respond(StatusCode::CREATED, &batches, format, false)
}

#[derive(Serialize)]
#[serde(untagged)]
enum PresenceOutcome {
    Members {
        channel: String,
        presence: Vec<PresenceMessage>,
    },
    Failed {
        channel: String,
        error: ErrorInfo,
    },
}

/// `GET /presence?channels=a,b`: the members of each channel.
pub(crate) async fn presence(
    State(gateway): State<Gateway>,
    Query(query): Query<HashMap<String, String>>,
    Rest { format, caller }: Rest,
) -> Result<Response, ApiError> {
    let names = query.get("channels").cloned().unwrap_or_default();
    let mut results: Vec<PresenceOutcome> = Vec::new();
    for name in names.split(',').filter(|name| !name.is_empty()) {
        let checked = super::permitted_channel(
            &caller,
            name,
            Operation::Subscribe,
            "presence on this channel is not permitted by the capability",
        );
        let members = match checked {
            Ok(channel) => {
                gateway
                    .presence_members(&caller.channel_key(&channel))
                    .await
            }
            Err(error) => Err(error),
        };
        results.push(match members {
            Ok(mut presence) => {
                if format == Format::Json {
                    presence
                        .iter_mut()
                        .for_each(PresenceMessage::make_json_safe);
                }
                PresenceOutcome::Members {
                    channel: name.to_owned(),
                    presence,
                }
            }
            Err(error) => PresenceOutcome::Failed {
                channel: name.to_owned(),
                error,
            },
        });
    }
    let result = batch(results, |r| matches!(r, PresenceOutcome::Failed { .. }));
    respond(StatusCode::OK, &result, format, false)
}
