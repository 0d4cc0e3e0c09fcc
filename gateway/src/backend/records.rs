//! Event records in memory (embedded mode): which channels took an event, and its answer.
//! Bounded: at most `MAX_EVENT_RECORDS`, the oldest forgotten first, each for
//! `EVENT_RECORD_TTL`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// How long an event id is remembered: a payment provider retries a webhook for hours.
pub const EVENT_RECORD_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Records kept at most; ~200 bytes each, so ~20 MB at the cap. Past it the oldest go early.
const MAX_EVENT_RECORDS: usize = 100_000;

/// What is known of one event id.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventRecord {
    /// Channel index → serial (empty when a concurrent repeat published it).
    pub(crate) channels: HashMap<usize, String>,
    /// The answer once every channel took the event (JSON `EventReceipt`).
    pub(crate) answer: Option<String>,
}

#[derive(Default)]
pub(crate) struct MemoryRecords {
    inner: Mutex<Records>,
}

#[derive(Default)]
struct Records {
    by_key: HashMap<String, (u64, EventRecord)>,
    /// Keys by creation, oldest first, with their expiry.
    order: VecDeque<(u64, String)>,
}

impl Records {
    /// Drops expired records, and the oldest while more than `keep` are left.
    fn forget(&mut self, now_ms: u64, keep: usize) {
        while let Some((expires, key)) = self.order.front() {
            if *expires > now_ms && self.order.len() <= keep {
                break;
            }
            self.by_key.remove(key);
            self.order.pop_front();
        }
    }

    fn entry(&mut self, key: &str, now_ms: u64) -> &mut EventRecord {
        self.forget(now_ms, MAX_EVENT_RECORDS);
        if !self.by_key.contains_key(key) {
            self.forget(now_ms, MAX_EVENT_RECORDS - 1);
            let expires = now_ms + EVENT_RECORD_TTL.as_millis() as u64;
            self.order.push_back((expires, key.to_owned()));
            self.by_key
                .insert(key.to_owned(), (expires, EventRecord::default()));
        }
        &mut self.by_key.get_mut(key).expect("inserted above").1
    }
}

impl MemoryRecords {
    pub(crate) fn get(&self, key: &str, now_ms: u64) -> EventRecord {
        let records = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match records.by_key.get(key) {
            Some((expires, record)) if *expires > now_ms => record.clone(),
            _ => EventRecord::default(),
        }
    }

    pub(crate) fn record_channel(&self, key: &str, n: usize, serial: &str, now_ms: u64) {
        let mut records = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let channels = &mut records.entry(key, now_ms).channels;
        // A concurrent repeat (no serial) never hides the serial the first attempt got.
        if !serial.is_empty() || !channels.contains_key(&n) {
            channels.insert(n, serial.to_owned());
        }
    }

    /// Stores `answer` unless one is there; returns the one that stands.
    pub(crate) fn record_answer(&self, key: &str, answer: String, now_ms: u64) -> String {
        let mut records = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        records
            .entry(key, now_ms)
            .answer
            .get_or_insert(answer)
            .clone()
    }
}

#[cfg(test)]
mod tests;
