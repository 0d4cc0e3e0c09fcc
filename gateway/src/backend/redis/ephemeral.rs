//! Ephemeral publications through Redis: announced on the channel's topic and never stored.
//!
//! They go through the batcher (`batch.rs`) like stored ones: the script claims the message ids
//! (the channel's claim set, as stored publications, so idempotency holds across nodes and
//! across both kinds) and `PUBLISH`es each publication's fresh messages with `EPHEMERAL_MARK`:
//! no `XADD`, no serial, so the channel's sequence is untouched and the continuity check of
//! stored publications never sees them. Every node
//! listening (the publisher's included, as for stored publications) hands them to
//! `BackendEvents::deliver_ephemeral`. A node that is not subscribed at that moment misses them,
//! which is what ephemeral means: nothing to catch up.

use protocol::Message;

use crate::backend::{Arrival, BackendEvents};

/// Opens an ephemeral publication on a channel's topic; the presence mark and a stored
/// publication's connection id cannot start with it.
pub(super) const EPHEMERAL_MARK: &str = "\u{1}ephemeral\n";

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
