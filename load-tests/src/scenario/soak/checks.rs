//! What a soak counts: each failure by reason (with its first few examples), the expected events
//! (renewals, expiries, resumes, drains) by name, and per channel the order of the serials one
//! client saw. Serials are the server's fixed-width `epoch-n` hex, consecutive within a channel
//! incarnation, so the next message a subscriber is owed is always `n + 1`.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Examples kept per failure reason.
const EXAMPLES: usize = 3;

/// Failures and expected events of the whole run. Only taken briefly, never across an await.
#[derive(Default)]
pub struct Tally {
    failures: Mutex<BTreeMap<String, (u64, Vec<String>)>>,
    events: Mutex<BTreeMap<&'static str, u64>>,
}

impl Tally {
    /// `count` failures of kind `reason`; `example` says which (a client, a code).
    pub fn fail(&self, reason: impl Into<String>, count: u64, example: impl FnOnce() -> String) {
        if count == 0 {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures.entry(reason.into()).or_default();
        entry.0 += count;
        if entry.1.len() < EXAMPLES {
            entry.1.push(example());
        }
    }

    /// Something expected happened (a renewal, a resume, a drain).
    pub fn count(&self, event: &'static str) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        *events.entry(event).or_default() += 1;
    }

    /// (reason, count, examples), by reason.
    pub fn failures(&self) -> Vec<(String, u64, Vec<String>)> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .iter()
            .map(|(reason, (count, examples))| (reason.clone(), *count, examples.clone()))
            .collect()
    }

    pub fn events(&self) -> Vec<(&'static str, u64)> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().map(|(name, n)| (*name, *n)).collect()
    }

    pub fn event(&self, name: &str) -> u64 {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.get(name).copied().unwrap_or(0)
    }
}

/// A serial as (incarnation epoch, position); `None` if it is not one of ours.
pub fn parse_serial(serial: &str) -> Option<(u64, u64)> {
    let (epoch, n) = serial.split_once('-')?;
    Some((
        u64::from_str_radix(epoch, 16).ok()?,
        u64::from_str_radix(n, 16).ok()?,
    ))
}

/// What one delivery meant for its channel's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next one owed.
    InOrder,
    /// This many owed before it never came.
    Lost(u64),
    /// The one seen last, again.
    Duplicated,
    /// Older than the one seen last.
    Reordered,
    /// From a newer incarnation of the channel: everything after the last one seen of the old
    /// one, and this many of the new one before it, may be missing.
    NewIncarnation(u64),
    /// Not a serial of ours.
    Unreadable,
}

/// Where a subscriber is in one channel: the last serial it saw (or was attached at).
#[derive(Debug, Clone, Default)]
pub struct ChannelOrder {
    last: Option<(u64, u64)>,
}

impl ChannelOrder {
    /// Starts counting afresh at `serial` (an ATTACHED's position): what follows is owed.
    pub fn start(&mut self, serial: Option<&str>) {
        self.last = serial.and_then(parse_serial);
    }

    /// Where the channel was last seen, for an ATTACH that resumes it.
    pub fn position(&self) -> Option<String> {
        self.last.map(|(epoch, n)| format!("{epoch:012x}-{n:010x}"))
    }

    pub fn see(&mut self, serial: &str) -> Seen {
        let Some((epoch, n)) = parse_serial(serial) else {
            return Seen::Unreadable;
        };
        let Some((last_epoch, last_n)) = self.last else {
            // Attached at an empty position: anything is the first.
            self.last = Some((epoch, n));
            return Seen::InOrder;
        };
        let seen = match (epoch.cmp(&last_epoch), n.cmp(&(last_n + 1))) {
            (std::cmp::Ordering::Greater, _) => Seen::NewIncarnation(n.saturating_sub(1)),
            (std::cmp::Ordering::Less, _) => return Seen::Reordered,
            (_, std::cmp::Ordering::Equal) => Seen::InOrder,
            (_, std::cmp::Ordering::Greater) => Seen::Lost(n - last_n - 1),
            (_, std::cmp::Ordering::Less) if n == last_n => return Seen::Duplicated,
            (_, std::cmp::Ordering::Less) => return Seen::Reordered,
        };
        self.last = Some((epoch, n));
        seen
    }

    /// How many messages up to `published` (the newest serial the backend was given on this
    /// channel) this subscriber has not seen.
    pub fn owed_until(&self, published: &str) -> u64 {
        let Some((epoch, n)) = parse_serial(published) else {
            return 0;
        };
        match self.last {
            Some((last_epoch, last_n)) if last_epoch == epoch => n.saturating_sub(last_n),
            Some((last_epoch, _)) if last_epoch > epoch => 0,
            // Nothing seen of this incarnation.
            _ => n,
        }
    }
}

#[cfg(test)]
mod tests;
