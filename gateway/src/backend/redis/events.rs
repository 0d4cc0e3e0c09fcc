//! Event records in Redis (`rt:evt:<app>/<event id>`, one hash): `c<n>` = the serial channel
//! `n` took the event at, `answer` = the answer once all did. Every write renews the key's
//! `EVENT_RECORD_TTL`, so a record outlives the last retry by at least a day, across restarts
//! and on any node. One key per command, so a Redis Cluster routes each by its slot.

use super::RedisBackend;
use crate::backend::records::{EventRecord, EVENT_RECORD_TTL};
use crate::backend::{BackendError, EventRecords, Reply, Result};

fn record_key(key: &str) -> String {
    format!("rt:evt:{key}")
}

/// Keeps the first answer. KEYS: record. ARGV: answer, ttl ms. Returns the answer that stands.
const ANSWER_SCRIPT: &str = include_str!("scripts/answer.lua");

fn unavailable(error: redis::RedisError) -> BackendError {
    super::unavailable(
        "event record",
        "event store",
        "retry with the same event id",
    )(error)
}

impl EventRecords for RedisBackend {
    fn get<'a>(&'a self, key: &'a str) -> Reply<'a, EventRecord> {
        Box::pin(self.event_record(key))
    }

    fn record_channel<'a>(&'a self, key: &'a str, n: usize, serial: &'a str) -> Reply<'a, ()> {
        Box::pin(self.record_event_channel(key, n, serial))
    }

    fn record_answer<'a>(&'a self, key: &'a str, answer: String) -> Reply<'a, String> {
        Box::pin(self.record_event_answer(key, answer))
    }
}

impl RedisBackend {
    async fn event_record(&self, key: &str) -> Result<EventRecord> {
        let record = record_key(key);
        let fields: Vec<(String, String)> = self
            .commands
            .query(redis::cmd("HGETALL").arg(record).to_owned())
            .await
            .map_err(unavailable)?;
        let mut out = EventRecord::default();
        for (field, value) in fields {
            if field == "answer" {
                out.answer = Some(value);
            } else if let Some(n) = field.strip_prefix('c').and_then(|n| n.parse().ok()) {
                out.channels.insert(n, value);
            }
        }
        Ok(out)
    }

    async fn record_event_channel(&self, key: &str, n: usize, serial: &str) -> Result<()> {
        let record = record_key(key);
        let serial = serial.to_owned();
        // A concurrent repeat (no serial) never hides the serial the first attempt got.
        let set = if serial.is_empty() { "HSETNX" } else { "HSET" };
        self.commands
            .run(move |mut connection| {
                Box::pin(async move {
                    redis::pipe()
                        .cmd(set)
                        .arg(&record)
                        .arg(format!("c{n}"))
                        .arg(serial)
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(&record)
                        .arg(EVENT_RECORD_TTL.as_millis() as u64)
                        .ignore()
                        .query_async::<()>(&mut connection)
                        .await
                })
            })
            .await
            .map_err(unavailable)
    }

    async fn record_event_answer(&self, key: &str, answer: String) -> Result<String> {
        let record = record_key(key);
        self.commands
            .run(move |mut connection| {
                Box::pin(async move {
                    redis::Script::new(ANSWER_SCRIPT)
                        .key(record)
                        .arg(answer)
                        .arg(EVENT_RECORD_TTL.as_millis() as u64)
                        .invoke_async(&mut connection)
                        .await
                })
            })
            .await
            .map_err(unavailable)
    }
}
