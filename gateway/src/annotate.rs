//! `Annotator`: the checks and stamping every annotation goes through, realtime (action 21) or
//! REST (`POST …/messages/{serial}/annotations`), before the back-end applies it, and the read
//! of a message's raw annotations.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use protocol::{Annotation, ChannelName, ErrorInfo, Operation};

use crate::auth::Principal;
use crate::config::Limits;
use crate::error::Error;
use crate::hub::{Annotating, AnnotationKind, Hub, Serials};
use crate::publish::Origin;
use crate::wiring::Wiring;

/// How long a node that stored annotations keeps listening to their channel for their
/// announcement to come back through Redis (so it reports their summaries to webhooks).
const SUMMARY_REPORT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The annotation path shared by REST and realtime.
pub(crate) struct Annotator {
    limits: Limits,
    hub: Arc<Hub>,
    wiring: Arc<Wiring>,
}

impl Annotator {
    pub(crate) fn new(limits: Limits, hub: Arc<Hub>, wiring: Arc<Wiring>) -> Annotator {
        Annotator {
            limits,
            hub,
            wiring,
        }
    }

    /// Checks the count, capability (`annotation-publish`, 40160), the channel's rule (93002),
    /// each annotation's shape (type, messageSerial, action, 40003), its clientId (as a publish
    /// does; 40161 where the type counts clients and there is none) and size, stamps ids,
    /// timestamps and the connection, takes them from a connection's publish budget (42911; REST
    /// annotations are not rate limited yet), then has the back-end apply them: 40400 when one names a
    /// message the channel does not hold. Returns the annotations' serials (`None` for a repeat
    /// of a keyed id: a realtime resend, or a REST client's own id, within the idempotency
    /// window). Refused whole.
    pub(crate) async fn annotate(
        &self,
        principal: &Principal,
        channel: &ChannelName,
        mut annotations: Vec<Annotation>,
        origin: Origin<'_>,
    ) -> Result<Serials, Error> {
        if annotations.is_empty() {
            return Err(Error::NoAnnotations);
        }
        crate::publish::refuse_filtered(channel)?;
        let limits = &self.limits;
        if annotations.len() > limits.max_messages_per_publish {
            crate::limits::count_refusal("too_many_messages", origin.source());
            return Err(Error::TooManyMessages {
                n: annotations.len(),
                max: limits.max_messages_per_publish,
            });
        }
        if !principal.allows(channel, Operation::AnnotationPublish) {
            return Err(Error::AnnotationPublishDenied {
                channel: channel.as_str().to_owned(),
            });
        }
        let channel_key = principal.channel_key(channel);
        if !self.hub.rules_for(&channel_key).mutable_messages {
            return Err(Error::AnnotationsOff {
                channel: channel.as_str().to_owned(),
            });
        }
        let now = protocol::now_ms();
        // Realtime ids (`connectionId:msgSerial:index`) are idempotency keys: a client resends
        // unacknowledged annotations with the same msgSerial after a resume.
        let realtime = matches!(origin, Origin::Connection { .. });
        let keyed: Vec<bool> = annotations
            .iter()
            .map(|a| realtime || a.id.is_some())
            .collect();
        let mut random_base: Option<String> = None;
        for (index, annotation) in annotations.iter_mut().enumerate() {
            check_shape(annotation)?;
            principal.stamp_client_id(&mut annotation.client_id)?;
            let annotation_type = annotation.annotation_type.clone().unwrap_or_default();
            let kind =
                AnnotationKind::of(&annotation_type).ok_or_else(|| Error::BadAnnotation {
                    why: format!(
                        "type {annotation_type:?}: expected namespace:summarization.version with \
                     total.v1, flag.v1, distinct.v1, unique.v1 or multiple.v1"
                    ),
                })?;
            if kind.needs_client_id() && annotation.client_id.is_none() {
                return Err(Error::AnnotationNeedsClientId { annotation_type });
            }
            if kind.needs_name(annotation.action == 1) && annotation.name.is_none() {
                return Err(Error::BadAnnotation {
                    why: format!("type {annotation_type:?} needs a name"),
                });
            }
            let size = size(annotation);
            if size > limits.max_message_bytes {
                crate::limits::count_refusal("too_large", origin.source());
                return Err(Error::MessageTooLarge {
                    size,
                    max: limits.max_message_bytes,
                });
            }
            annotation.timestamp = Some(now);
            principal.stamp_user_claim(channel, &mut annotation.extras);
            // The server gives the serial; a client's is ignored.
            annotation.serial = None;
            if annotation.id.is_none() {
                annotation.id = Some(match origin {
                    Origin::Connection { id, msg_serial, .. } => {
                        format!("{id}:{msg_serial}:{index}")
                    }
                    Origin::Rest => {
                        let base = random_base.get_or_insert_with(random_id_base);
                        format!("{base}:{index}")
                    }
                });
            }
            annotation.connection_id = match origin {
                Origin::Connection { id, .. } => Some(id.to_owned()),
                Origin::Rest => None,
            };
        }
        if let Origin::Connection { rate, .. } = origin {
            let total_bytes = annotations.iter().map(size).sum();
            let allowed = &limits.connection_publish_rate;
            let mut bucket = rate.lock().unwrap_or_else(|e| e.into_inner());
            let taken = bucket.take(allowed, annotations.len(), total_bytes, Instant::now());
            if taken.is_err() {
                crate::limits::count_refusal("rate_messages", origin.source());
                return Err(Error::ConnectionRateLimited {
                    allowed: format!(
                        "{} messages/s (burst {})",
                        allowed.messages_per_sec, allowed.burst_messages
                    ),
                });
            }
        }
        let publisher = match origin {
            Origin::Connection { id, .. } => Some(id),
            Origin::Rest => None,
        };
        // Not joined as a rule: embedded, the hub holds the channel; with Redis, the script checks
        // the stream itself, and this node hears the announcement only if it listens. Where a
        // webhook wants the channel's messages, this node reports the summaries its annotations
        // make, so it listens until the announcement is surely back.
        let bus = self.wiring.bus();
        let report = self
            .wiring
            .webhooks_want(crate::config::Source::Message, &channel_key);
        if report {
            if let Err(error) = bus.join(&channel_key).await {
                bus.leave(&channel_key);
                return Err(ErrorInfo::from(error).into());
            }
        }
        let batch = Annotating {
            channel: &channel_key,
            annotations,
            keyed,
            publisher,
        };
        let applied = bus.annotate(&self.hub, batch).await;
        if report {
            let (wiring, channel) = (self.wiring.clone(), channel_key.clone().into_owned());
            tokio::spawn(async move {
                tokio::time::sleep(SUMMARY_REPORT_GRACE).await;
                wiring.bus().leave(&channel);
            });
        }
        Ok(applied.map_err(ErrorInfo::from)?)
    }

    /// Up to `limit` raw annotations of the message `message_serial` of `channel_key`, oldest
    /// first, after the annotation serial `after`; `None` when the message is unknown.
    pub(crate) async fn list(
        &self,
        channel_key: &str,
        message_serial: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<Arc<Annotation>>>, ErrorInfo> {
        let bus = self.wiring.bus();
        let joined = bus.join(channel_key).await;
        let listed = match joined {
            Ok(()) => {
                bus.annotations(&self.hub, channel_key, message_serial, after, limit)
                    .await
            }
            Err(error) => Err(error),
        };
        bus.leave(channel_key);
        Ok(listed?)
    }
}

/// What every annotation must carry: a type, the serial of the message it annotates, and an
/// action that is a create (0) or a delete (1).
fn check_shape(annotation: &Annotation) -> Result<(), Error> {
    let why = if annotation
        .annotation_type
        .as_deref()
        .is_none_or(str::is_empty)
    {
        "type is required"
    } else if annotation
        .message_serial
        .as_deref()
        .is_none_or(str::is_empty)
    {
        "messageSerial is required"
    } else if annotation.action > 1 {
        "action must be 0 (create) or 1 (delete)"
    } else {
        return Ok(());
    };
    Err(Error::BadAnnotation {
        why: why.to_owned(),
    })
}

/// Size as a message's is counted: name, clientId, data and extras.
fn size(annotation: &Annotation) -> usize {
    protocol::Message {
        name: annotation.name.clone(),
        client_id: annotation.client_id.clone(),
        data: annotation.data.clone(),
        extras: annotation.extras.clone(),
        ..Default::default()
    }
    .size()
}

fn random_id_base() -> String {
    let bytes: [u8; 9] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
