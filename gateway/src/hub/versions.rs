//! Mutable messages: the latest view of each original message a log holds, and how an update,
//! delete or append changes it.
//!
//! An operation is an entry in the channel's sequence like any message: it takes the channel's
//! next serial, which is its `version.serial` (the message keeps its original `serial`). So
//! "the highest version serial wins" is "applied in serial order", which every node already
//! does, and resume, gaps and catch-up need nothing new.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use protocol::message::{message_action, Data};
use protocol::Message;

/// Versions of one message kept at most (the create, its updates and deletes; appends are not
/// versions). Beyond it the oldest updates are forgotten, never the create.
const MAX_VERSIONS: usize = 100;

/// Whether a message is an update, delete or append of another (rather than a new message).
pub(crate) fn is_operation(message: &Message) -> bool {
    matches!(
        message.action,
        Some(message_action::UPDATE | message_action::DELETE | message_action::APPEND)
    )
}

/// A log entry's place in the channel's sequence: an operation's version serial, else its serial.
pub(crate) fn position(message: &Message) -> Option<&str> {
    if is_operation(message) {
        message.version.as_ref()?.serial.as_deref()
    } else {
        message.serial.as_deref()
    }
}

/// What an append's data can be joined to: strings with no (or the utf-8) encoding, or binary.
fn joinable(data: Option<&Data>, encoding: Option<&str>) -> bool {
    matches!(data, Some(Data::String(_) | Data::Binary(_)))
        && matches!(encoding, None | Some("utf-8"))
}

/// Why an operation cannot change a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// An append to a deleted message.
    AppendToDeleted,
    /// An append whose data, or the message's, cannot be concatenated.
    NotAppendable,
}

impl Refusal {
    pub(crate) fn message(&self) -> &'static str {
        match self {
            Refusal::AppendToDeleted => "cannot append to a deleted message",
            Refusal::NotAppendable => {
                "only string data (no encoding, or utf-8) or binary data can be appended to a message with data of the same kind"
            }
        }
    }
}

/// Checks that `op` can be applied to `latest` (the write path asks before storing it).
pub(crate) fn check(latest: &Message, op: &Message) -> Result<(), Refusal> {
    if op.action != Some(message_action::APPEND) {
        return Ok(());
    }
    if latest.action == Some(message_action::DELETE) {
        return Err(Refusal::AppendToDeleted);
    }
    let kinds_match = matches!(
        (&latest.data, &op.data),
        (Some(Data::String(_)), Some(Data::String(_)))
            | (Some(Data::Binary(_)), Some(Data::Binary(_)))
    );
    if !kinds_match
        || !joinable(latest.data.as_ref(), latest.encoding.as_deref())
        || !joinable(op.data.as_ref(), op.encoding.as_deref())
    {
        return Err(Refusal::NotAppendable);
    }
    Ok(())
}

/// The outcome of applying an operation.
pub(crate) struct Applied {
    /// The message's new latest view: an update or delete as merged, an append rolled up into a
    /// `message.update` carrying the append's version.
    pub(crate) latest: Message,
    /// What subscribers who have the message in full get: the same, except that an append goes
    /// as itself (action 5, only the new data) with the merged name, extras and identity.
    pub(crate) delivered: Message,
}

/// Applies `op` to `latest`: given `data` (with its `encoding`), `name` and `extras` replace
/// the stored ones and omitted ones are kept; an append concatenates its data. The identity
/// (serial, id, clientId, connectionId, timestamp) stays the original's; the version is the
/// operation's.
pub(crate) fn apply(latest: &Message, op: &Message) -> Result<Applied, Refusal> {
    check(latest, op)?;
    let action = op.action.unwrap_or(message_action::UPDATE);
    let mut merged = Message {
        action: Some(action),
        version: op.version.clone(),
        annotations: latest.annotations.clone(),
        ..latest.clone()
    };
    if op.name.is_some() {
        merged.name = op.name.clone();
    }
    if op.extras.is_some() {
        merged.extras = op.extras.clone();
    }
    if action != message_action::APPEND {
        if op.data.is_some() {
            merged.data = op.data.clone();
            merged.encoding = op.encoding.clone();
        }
        return Ok(Applied {
            delivered: merged.clone(),
            latest: merged,
        });
    }
    let mut delivered = merged.clone();
    delivered.data = op.data.clone();
    delivered.encoding = op.encoding.clone();
    merged.action = Some(message_action::UPDATE);
    merged.data = match (&latest.data, &op.data) {
        (Some(Data::String(old)), Some(Data::String(more))) => {
            Some(Data::String(old.clone() + more))
        }
        (Some(Data::Binary(old)), Some(Data::Binary(more))) => {
            let mut joined = BytesMut::with_capacity(old.len() + more.len());
            joined.extend_from_slice(old);
            joined.extend_from_slice(more);
            Some(Data::Binary(joined.freeze()))
        }
        _ => return Err(Refusal::NotAppendable),
    };
    Ok(Applied {
        latest: merged,
        delivered,
    })
}

/// A changed message: its latest view and its versions, oldest first (the create first).
struct Versioned {
    latest: Arc<Message>,
    versions: Vec<Arc<Message>>,
}

/// The latest view of every message the log holds that was changed since it was created, by
/// serial (an unchanged message is its own log entry, so most channels keep nothing here).
#[derive(Default)]
pub(super) struct Versions {
    by_serial: HashMap<String, Versioned>,
}

impl Versions {
    /// Applies an operation to `original` (the message's log entry, when it has no versions
    /// here yet). `None` when the message is not held (evicted, or from before this node's log)
    /// or the operation cannot apply: the operation is then logged and delivered as it came.
    pub(super) fn apply(
        &mut self,
        op: &Message,
        original: impl FnOnce(&str) -> Option<Arc<Message>>,
    ) -> Option<Applied> {
        let serial = op.serial.as_deref()?;
        if !self.by_serial.contains_key(serial) {
            let create = original(serial)?;
            self.by_serial.insert(
                serial.to_owned(),
                Versioned {
                    latest: create.clone(),
                    versions: vec![create],
                },
            );
        }
        let versioned = self.by_serial.get_mut(serial)?;
        let applied = apply(&versioned.latest, op)
            .inspect_err(|refusal| {
                tracing::warn!(serial, reason = refusal.message(), "operation not applied");
            })
            .ok()?;
        let latest = Arc::new(applied.latest.clone());
        if op.action != Some(message_action::APPEND) {
            if versioned.versions.len() >= MAX_VERSIONS {
                versioned.versions.remove(1);
            }
            versioned.versions.push(latest.clone());
        }
        versioned.latest = latest;
        Some(applied)
    }

    pub(super) fn latest(&self, serial: &str) -> Option<Arc<Message>> {
        self.by_serial.get(serial).map(|v| v.latest.clone())
    }

    pub(super) fn versions(&self, serial: &str) -> Option<Vec<Arc<Message>>> {
        self.by_serial.get(serial).map(|v| v.versions.clone())
    }

    /// The log let go of an entry; an original takes its versions with it.
    pub(super) fn evicted(&mut self, entry: &Message) {
        if is_operation(entry) || self.by_serial.is_empty() {
            return;
        }
        if let Some(serial) = &entry.serial {
            if self.by_serial.remove(serial).is_some() {
                crate::shrink::hash_map(&mut self.by_serial);
            }
        }
    }
}

#[cfg(test)]
mod tests;
