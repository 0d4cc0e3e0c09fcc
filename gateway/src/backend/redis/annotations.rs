//! Annotations through Redis: one script (`scripts/annotate.lua`) checks that each annotated
//! message is in the channel's stream, takes the next annotation counter (`a` of the meta hash),
//! applies the annotation to the channel's aggregate hash, appends it to the message's capped
//! list and announces it on the channel's topic with a mark, so every node (this one included)
//! applies the same annotations in `a` order. A node that sees `a` jump, or starts listening to
//! a channel, reloads the aggregates from the hash (`load`). `GET …/annotations` reads the list.
//!
//! The aggregate hash `rt:{ch}:agg`, its fields tab-separated, `serial type tag …`, so the
//! script parses no JSON:
//! - `… t` → the total (total.v1);
//! - `… c name client` → `a` when the client first counted under the name (flag.v1 with an empty
//!   name, distinct.v1, unique.v1), so reloads keep contributors in order;
//! - `… u client` → the name the client chose (unique.v1);
//! - `… m name client` → the client's tally, `… o name client` → its first `a` (multiple.v1);
//! - `… x name` → the unidentified tally (multiple.v1).

use std::sync::Arc;

use protocol::{Annotation, ErrorCode};

use super::commands::Commands;
use super::stream::{keys, meta_ttl};
use super::subscriber::topic;
use super::RedisBackend;
use crate::backend::{BackendError, BackendEvents};
use crate::config::Retention;
use crate::hub::{Annotating, AnnotationKind, Contribution, Serials, MAX_ANNOTATIONS_PER_MESSAGE};

/// KEYS: stream, topic, meta, aggregate hash, list prefix, claim prefix. ARGV: the publishing
/// connection id, the list cap, the TTL (ms), then per annotation: the message's stream id, its
/// serial, the kind, type, name, clientId ('' for none), count, '1' for a delete, the JSON
/// body, the idempotency claim ('' for none). Returns the serials, '' for a claimed repeat.
pub(super) const ANNOTATE_SCRIPT: &str = include_str!("scripts/annotate.lua");

/// Starts an announcement of annotations on a channel's topic.
pub(super) const ANNOTATION_MARK: &str = "\u{2}annotations\n";

fn aggregate_key(channel: &str) -> String {
    format!("rt:{{{channel}}}:agg")
}

/// Annotation ids claimed for the idempotency window, apart from message ids.
fn claim_prefix(channel: &str) -> String {
    format!("rt:{{{channel}}}:aid:")
}

fn list_prefix(channel: &str) -> String {
    format!("rt:{{{channel}}}:ann:")
}

fn kind_name(kind: AnnotationKind) -> &'static str {
    match kind {
        AnnotationKind::Total => "total",
        AnnotationKind::Flag => "flag",
        AnnotationKind::Distinct => "distinct",
        AnnotationKind::Unique => "unique",
        AnnotationKind::Multiple => "multiple",
    }
}

fn not_found(serial: &str) -> BackendError {
    BackendError::Refused(ErrorCode::NotFound.info(format!(
        "no message with serial {serial:?} in this channel's history"
    )))
}

impl RedisBackend {
    /// Stores and announces checked annotations; returns their serials. Nothing is applied
    /// when one names a message the stream does not hold (40400) or Redis fails (50003).
    pub(super) async fn store_annotations(
        &self,
        batch: Annotating<'_>,
        retention: Retention,
    ) -> Result<Serials, BackendError> {
        let Annotating {
            channel,
            annotations,
            keyed,
            publisher,
        } = batch;
        let stream = keys(channel);
        let keys = vec![
            stream.stream,
            topic(channel),
            stream.meta,
            aggregate_key(channel),
            list_prefix(channel),
            claim_prefix(channel),
        ];
        let ttl = (retention.max_age.as_millis() as u64 + 60_000).max(meta_ttl(retention));
        let mut args = vec![
            // The announcement's first line: the publisher, and the node that stored them.
            format!("{}\t{}", publisher.unwrap_or_default(), self.node),
            MAX_ANNOTATIONS_PER_MESSAGE.to_string(),
            ttl.to_string(),
        ];
        for (index, annotation) in annotations.iter().enumerate() {
            let claim = match (keyed.get(index), &annotation.id) {
                (Some(true), Some(id)) => id.clone(),
                _ => String::new(),
            };
            let message_serial = annotation.message_serial.clone().unwrap_or_default();
            let Some((epoch, n)) = crate::hub::log::parts(&message_serial) else {
                return Err(not_found(&message_serial));
            };
            let annotation_type = annotation.annotation_type.clone().unwrap_or_default();
            let Some(kind) = AnnotationKind::of(&annotation_type) else {
                return Err(BackendError::Refused(
                    ErrorCode::InvalidParameterValue.info("unknown annotation type"),
                ));
            };
            let name = match kind {
                AnnotationKind::Total | AnnotationKind::Flag => String::new(),
                _ => annotation.name.clone().unwrap_or_default(),
            };
            let mut safe = annotation.clone();
            safe.make_json_safe();
            let body = serde_json::to_string(&safe).map_err(|source| BackendError::Encode {
                what: "an annotation",
                source,
            })?;
            args.extend([
                format!("{epoch}-{n}"),
                message_serial,
                kind_name(kind).to_owned(),
                annotation_type,
                name,
                annotation.client_id.clone().unwrap_or_default(),
                annotation.count.unwrap_or(1).to_string(),
                if annotation.action == 1 { "1" } else { "0" }.to_owned(),
                body,
                claim,
            ]);
        }
        let answer: Vec<String> = self
            .commands
            .invoke(self.annotate_script.clone(), keys, args)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "annotation through Redis failed");
                BackendError::bus_down("not annotated")
            })?;
        match answer.as_slice() {
            [missing, serial] if missing == "missing" => Err(not_found(serial)),
            // '' for a repeat of a claimed id.
            _ => Ok(answer
                .into_iter()
                .map(|serial| Some(serial).filter(|s| !s.is_empty()))
                .collect()),
        }
    }

    /// Up to `limit` raw annotations of one message after the annotation serial `after`, oldest
    /// first, from the message's list; empty when it has none.
    pub(super) async fn stored_annotations(
        &self,
        channel: &str,
        message_serial: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Arc<Annotation>>, BackendError> {
        let list = format!("{}{message_serial}", list_prefix(channel));
        let entries: Vec<String> = self
            .commands
            .query(redis::cmd("LRANGE").arg(list).arg(0).arg(-1).to_owned())
            .await
            .map_err(|error| {
                tracing::warn!(%error, "annotation read through Redis failed");
                BackendError::Unavailable {
                    store: "annotation store",
                    then: "try again",
                }
            })?;
        Ok(entries
            .iter()
            .filter_map(|entry| stored_annotation(entry))
            .filter(|a| after.is_none_or(|after| a.serial.as_deref() > Some(after)))
            .take(limit)
            .map(Arc::new)
            .collect())
    }
}

/// `serial\nbody` as the list and the announcement carry it.
fn parse(serial: &str, body: &str) -> Option<Annotation> {
    match serde_json::from_str::<Annotation>(body) {
        Ok(mut annotation) => {
            annotation.serial = Some(serial.to_owned());
            Some(annotation)
        }
        Err(error) => {
            tracing::warn!(%error, "unreadable stored annotation");
            None
        }
    }
}

fn stored_annotation(entry: &str) -> Option<Annotation> {
    let (serial, body) = entry.split_once('\n')?;
    parse(serial, body)
}

/// An announcement (after the mark): the publishing connection, then `a`, serial and body per
/// annotation.
pub(super) fn parse_announcement(payload: &str) -> Announcement {
    let mut lines = payload.split('\n');
    let (publisher, origin) = lines
        .next()
        .unwrap_or_default()
        .split_once('\t')
        .unwrap_or_default();
    let publisher = Some(publisher).filter(|p| !p.is_empty()).map(str::to_owned);
    let origin = origin.to_owned();
    let mut annotations = Vec::new();
    while let (Some(a), Some(serial), Some(body)) = (lines.next(), lines.next(), lines.next()) {
        if let (Ok(a), Some(annotation)) = (a.parse(), parse(serial, body)) {
            annotations.push((a, annotation));
        }
    }
    Announcement {
        publisher,
        origin,
        annotations,
    }
}

/// What one annotate announcement carried.
pub(super) struct Announcement {
    pub(super) publisher: Option<String>,
    /// The node that stored them.
    pub(super) origin: String,
    pub(super) annotations: Vec<(u64, Annotation)>,
}

/// Reads `channel`'s aggregates and annotation counter and gives them to the node.
pub(super) async fn load(
    commands: &Commands,
    events: &Arc<dyn BackendEvents>,
    channel: &str,
    announce: bool,
) -> redis::RedisResult<()> {
    let mut read = redis::pipe();
    read.cmd("HGET").arg(keys(channel).meta).arg("a");
    read.cmd("HGETALL").arg(aggregate_key(channel));
    let (last_a, flat): (Option<u64>, Vec<String>) = commands
        .run(move |mut connection| Box::pin(async move { connection.query_pipeline(&read).await }))
        .await?;
    let mut stored = Vec::new();
    let mut orders = std::collections::HashMap::new();
    let mut fields = flat.chunks_exact(2);
    for pair in fields.by_ref() {
        let (field, value) = (&pair[0], &pair[1]);
        let parts: Vec<&str> = field.splitn(5, '\t').collect();
        let value: u64 = value.parse().unwrap_or(0);
        let contribution =
            |name: Option<&str>, client_id: Option<&str>, count, arrival| Contribution {
                message_serial: parts[0].to_owned(),
                annotation_type: parts[1].to_owned(),
                name: name.map(str::to_owned),
                client_id: client_id.map(str::to_owned),
                count,
                arrival,
            };
        match parts.as_slice() {
            [_, _, "t"] => stored.push(contribution(None, None, value, 0)),
            [_, _, "c", name, client] => {
                stored.push(contribution(Some(name), Some(client), 1, value));
            }
            [_, _, "m", name, client] => {
                stored.push(contribution(Some(name), Some(client), value, 0));
            }
            [_, _, "x", name] => stored.push(contribution(Some(name), None, value, 0)),
            [serial, annotation_type, "o", name, client] => {
                let key = (*serial, *annotation_type, *name, *client);
                orders.insert(key, value);
            }
            _ => {}
        }
    }
    // A tally's order is its first contribution's.
    for contribution in &mut stored {
        if let (Some(name), Some(client)) = (&contribution.name, &contribution.client_id) {
            let key = (
                contribution.message_serial.as_str(),
                contribution.annotation_type.as_str(),
                name.as_str(),
                client.as_str(),
            );
            if let Some(arrival) = orders.get(&key) {
                contribution.arrival = *arrival;
            }
        }
    }
    events.load_annotations(channel, last_a.unwrap_or(0), stored, announce);
    Ok(())
}
