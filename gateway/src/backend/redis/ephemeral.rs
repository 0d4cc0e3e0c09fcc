//! Ephemeral publications through Redis: announced on the channel's topic and never stored.
//!
//! One small script claims the client-chosen message ids (`SET NX`, the same claims a stored
//! publish makes, so idempotency holds across nodes and across both kinds) and `PUBLISH`es the
//! fresh messages with `EPHEMERAL_MARK`: no `XADD`, no `HINCRBY`, so the channel's sequence is
//! untouched and the continuity check of stored publications never sees them. Every node
//! listening (the publisher's included, as for stored publications) hands them to
//! `BackendEvents::deliver_ephemeral`. A node that is not subscribed at that moment misses them,
//! which is what ephemeral means: nothing to catch up.

use protocol::Message;

use super::stream::keys;
use super::subscriber::topic;
use super::RedisBackend;
use crate::backend::{Arrival, BackendError, BackendEvents};
use crate::hub::{Publication, Serials};

/// Opens an ephemeral publication on a channel's topic; the presence mark and a stored
/// publication's connection id cannot start with it.
pub(super) const EPHEMERAL_MARK: &str = "\u{1}ephemeral\n";

/// Claims ids and announces. KEYS: topic, claim prefix. ARGV: the payload's head (mark,
/// connectionId, protocol message id), then (claim, body) per message. Returns how many
/// messages went out.
pub(super) const EPHEMERAL_SCRIPT: &str = include_str!("scripts/ephemeral.lua");

impl RedisBackend {
    /// Announces an ephemeral publication to every node; fails (nothing announced) when Redis
    /// does not answer.
    pub(super) async fn announce_ephemeral(
        &self,
        publication: Publication<'_>,
    ) -> Result<Serials, BackendError> {
        let channel = publication.channel;
        let keys = vec![topic(channel), keys(channel).claims];
        let head = format!(
            "{EPHEMERAL_MARK}{}\n{}",
            publication.connection_id.unwrap_or_default(),
            publication.id.as_deref().unwrap_or_default()
        );
        let mut args = Vec::with_capacity(1 + 2 * publication.messages.len());
        args.push(head);
        super::stream::push_claims_and_bodies(
            &mut args,
            &publication.messages,
            &publication.client_ids,
        )?;
        let _sent: u64 = self
            .commands
            .invoke(self.ephemeral_script.clone(), keys, args)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "ephemeral publish through Redis failed");
                BackendError::bus_down("not published")
            })?;
        Ok(vec![None; publication.messages.len()])
    }
}

/// An ephemeral publication heard on `channel`'s topic (`payload` after the mark), handed to
/// the node.
pub(super) fn arrived(events: &dyn BackendEvents, channel: &str, payload: &str) {
    let mut lines = payload.split('\n');
    let connection_id = lines.next().filter(|c| !c.is_empty());
    let id = lines.next().filter(|i| !i.is_empty()).map(str::to_owned);
    let messages: Vec<Message> = lines
        .filter_map(|body| match serde_json::from_str::<Message>(body) {
            Ok(message) => Some(message),
            Err(error) => {
                tracing::warn!(%error, "unreadable ephemeral message on the bus");
                None
            }
        })
        .collect();
    let arrival = Arrival {
        channel,
        messages,
        connection_id,
        id,
    };
    if let Err(error) = events.deliver_ephemeral(arrival) {
        tracing::warn!(%channel, message = %error.message, "ephemeral delivery failed");
    }
}
