//! A channel's message log: what history, rewind and resume read.
//!
//! Bounded by count and by age. `floor` is the serial at or below which the log no longer knows
//! everything (the last evicted message, or the start of this channel incarnation): a client
//! whose last seen serial is at or above the floor can be given every message it missed.
//!
//! Entries are messages and operations on them (updates, deletes, appends), each at its
//! `position`. Resume replays entries; history, rewind and `find` show each original message's
//! latest view (`Versions`) in its place.

use std::collections::VecDeque;
use std::sync::Arc;

use protocol::message::message_action;
use protocol::Message;

use super::versions::{is_operation, position, Applied, Versions};
use crate::config::Retention;

pub(super) struct MessageLog {
    entries: VecDeque<Arc<Message>>,
    versions: Versions,
    floor: String,
    retention: Retention,
}

/// The original message logged at `serial` (entries are in position order, and an original's
/// position is its serial).
fn entry_at(entries: &VecDeque<Arc<Message>>, serial: &str) -> Option<Arc<Message>> {
    let at = entries
        .binary_search_by(|m| position(m).unwrap_or_default().cmp(serial))
        .ok()?;
    entries.get(at).filter(|m| !is_operation(m)).cloned()
}

/// What logging a message gave.
pub(super) struct Recorded {
    pub(super) delivered: Arc<Message>,
    pub(super) full: Option<Message>,
}

/// When an entry was logged: an operation's version time, a message's own.
fn logged_at(message: &Message) -> u64 {
    if is_operation(message) {
        message.version.as_ref().and_then(|v| v.timestamp)
    } else {
        message.timestamp
    }
    .unwrap_or(0)
}

/// The position before any message of an incarnation that began at `epoch_ms`.
pub(super) fn first_serial(epoch_ms: u64) -> String {
    serial(epoch_ms, 0)
}

pub(crate) fn serial(epoch_ms: u64, n: u64) -> String {
    format!("{epoch_ms:012x}-{n:010x}")
}

/// The serial right after `serial` in the same incarnation (serials are consecutive).
pub(crate) fn next(serial: &str) -> Option<String> {
    if !is_serial(serial) {
        return None;
    }
    let (epoch, n) = serial.split_once('-')?;
    let n = u64::from_str_radix(n, 16).ok()?;
    Some(format!("{epoch}-{:010x}", n + 1))
}

/// `serial`'s epoch and position within it.
pub(crate) fn parts(serial: &str) -> Option<(u64, u64)> {
    if !is_serial(serial) {
        return None;
    }
    let (epoch, n) = serial.split_once('-')?;
    Some((
        u64::from_str_radix(epoch, 16).ok()?,
        u64::from_str_radix(n, 16).ok()?,
    ))
}

/// Whether `floor` is the start of an epoch later than `known`'s (the store began afresh).
pub(super) fn starts_a_later_epoch(floor: &str, known: &str) -> bool {
    match (parts(floor), parts(known)) {
        (Some((epoch, 0)), Some((known_epoch, _))) => epoch > known_epoch,
        _ => false,
    }
}

/// Our serials are fixed-width hex, so they compare as strings; anything else is not ours.
pub(super) fn is_serial(candidate: &str) -> bool {
    let bytes = candidate.as_bytes();
    bytes.len() == 23
        && bytes[12] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 12 || matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl MessageLog {
    pub(super) fn new(floor: String, retention: Retention) -> MessageLog {
        MessageLog {
            entries: VecDeque::new(),
            versions: Versions::default(),
            floor,
            retention,
        }
    }

    pub(super) fn push(&mut self, message: Arc<Message>) {
        self.entries.push_back(message);
        while self.entries.len() > self.retention.max_messages {
            self.evict_front();
        }
    }

    fn evict_front(&mut self) {
        if let Some(evicted) = self.entries.pop_front() {
            if let Some(serial) = position(&evicted) {
                self.floor = serial.to_owned();
            }
            self.versions.evicted(&evicted);
        }
    }

    pub(super) fn expire(&mut self, now_ms: u64) {
        let max_age = self.retention.max_age.as_millis() as u64;
        while self
            .entries
            .front()
            .is_some_and(|m| logged_at(m) + max_age <= now_ms)
        {
            self.evict_front();
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn retention(&self) -> Retention {
        self.retention
    }

    pub(super) fn floor(&self) -> &str {
        &self.floor
    }

    /// Everything after `serial`, or `None` if the log cannot prove it has all of it (the serial
    /// is older than the floor, not one of ours, or from the future).
    pub(super) fn after(&self, serial: &str, last: Option<&str>) -> Option<Vec<Arc<Message>>> {
        let newest = last.unwrap_or(&self.floor);
        if !is_serial(serial) || serial < self.floor.as_str() || serial > newest {
            return None;
        }
        Some(
            self.entries
                .iter()
                .filter(|m| position(m).is_some_and(|s| s > serial))
                .cloned()
                .collect(),
        )
    }

    /// Logs a message, or an operation applied to the message it names (`versions::apply`).
    /// Returns what subscribers get and, for an append, the message's new latest view (for
    /// those who have not seen the message in full).
    pub(super) fn record(&mut self, message: Message) -> Recorded {
        let applied = if is_operation(&message) {
            let entries = &self.entries;
            self.versions
                .apply(&message, |serial| entry_at(entries, serial))
        } else {
            None
        };
        let (delivered, full) = match applied {
            Some(Applied { latest, delivered }) => {
                let full = (message.action == Some(message_action::APPEND)).then_some(latest);
                (delivered, full)
            }
            None => (message, None),
        };
        let delivered = Arc::new(delivered);
        self.push(delivered.clone());
        Recorded { delivered, full }
    }

    /// The latest view of the message logged under `serial`.
    pub(super) fn find(&self, serial: &str) -> Option<Arc<Message>> {
        self.versions
            .latest(serial)
            .or_else(|| entry_at(&self.entries, serial))
    }

    /// Every version of the message logged under `serial`, oldest first.
    pub(super) fn versions(&self, serial: &str) -> Option<Vec<Arc<Message>>> {
        self.versions
            .versions(serial)
            .or_else(|| entry_at(&self.entries, serial).map(|create| vec![create]))
    }

    /// The latest views of the original messages among `entries`, in order.
    fn latest_of<'a>(
        &'a self,
        entries: impl Iterator<Item = &'a Arc<Message>> + 'a,
    ) -> impl Iterator<Item = Arc<Message>> + 'a {
        entries.filter(|m| !is_operation(m)).map(|m| {
            m.serial
                .as_deref()
                .and_then(|serial| self.versions.latest(serial))
                .unwrap_or_else(|| m.clone())
        })
    }

    pub(super) fn newest(&self) -> Option<&Arc<Message>> {
        self.entries.back()
    }

    /// The latest views of the last `n` original messages.
    pub(super) fn last_n(&self, n: usize) -> Vec<Arc<Message>> {
        let mut last: Vec<Arc<Message>> =
            self.latest_of(self.entries.iter().rev()).take(n).collect();
        last.reverse();
        last
    }

    /// The latest views of the original messages published since `from_ms`.
    pub(super) fn since(&self, from_ms: u64) -> Vec<Arc<Message>> {
        self.latest_of(
            self.entries
                .iter()
                .filter(move |m| m.timestamp.unwrap_or(0) >= from_ms),
        )
        .collect()
    }

    /// Original messages (as their latest views) within `[start, end]` ms, strictly beyond
    /// `cursor` in the walk direction, at most `limit`, in the walk order.
    pub(super) fn query(&self, query: &HistoryQuery) -> Vec<Arc<Message>> {
        let in_range = |m: &&Arc<Message>| {
            let ts = m.timestamp.unwrap_or(0);
            query.start.is_none_or(|start| ts >= start) && query.end.is_none_or(|end| ts <= end)
        };
        let until = |m: &&Arc<Message>| match (&query.until_serial, m.serial.as_deref()) {
            (None, _) => true,
            (Some(until), Some(serial)) => serial <= until.as_str(),
            (Some(_), None) => false,
        };
        let beyond = |m: &&Arc<Message>| match (&query.cursor, m.serial.as_deref()) {
            (None, _) => true,
            (Some(cursor), Some(serial)) if query.forwards => serial > cursor.as_str(),
            (Some(cursor), Some(serial)) => serial < cursor.as_str(),
            (Some(_), None) => false,
        };
        let walk: Box<dyn Iterator<Item = &Arc<Message>>> = if query.forwards {
            Box::new(self.entries.iter())
        } else {
            Box::new(self.entries.iter().rev())
        };
        self.latest_of(walk.filter(in_range).filter(until).filter(beyond))
            .take(query.limit)
            .collect()
    }
}

/// A history page request. `cursor` is the serial of the last message of the previous page.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub forwards: bool,
    pub limit: usize,
    pub cursor: Option<String>,
    /// Nothing after this serial (ably-js `untilAttach` sends the attach serial as `from_serial`).
    pub until_serial: Option<String>,
}
