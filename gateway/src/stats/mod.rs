//! Usage statistics per app, as Ably's `GET /stats` reports them: records of flattened `entries`
//! (`messages.inbound.realtime.messages.count`, …, the keys of ably-common's `app-stats.json`
//! schema) per minute, rolled up by hour, day or month when read.
//!
//! Kept in memory on this node only, per app and per minute. Two sources fill a minute: every
//! accepted publish adds to the current minute's live counters (inbound messages and bytes, by
//! REST or realtime), and `POST /stats` (sandbox only) adds fixture minutes in Ably's nested
//! stats form, turned into entries once on the way in. Other usage (outbound fan-out,
//! connections, channels, API requests) is not counted live.
//!
//! Bounded: an app keeps at most `MAX_MINUTES_PER_APP` minutes (the oldest minute goes first)
//! and a minute at most `MAX_ENTRIES_PER_MINUTE` entries; an app's stats go with the app.

mod interval;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use dashmap::DashMap;
use serde_json::Value;

pub use interval::{parse_interval_id, second_id, Unit};

use crate::auth::Principal;

/// The schema every record names (ably-common `json-schemas/src/app-stats.json`).
pub const SCHEMA: &str = "https://schemas.ably.com/json/app-stats-0.0.5.json";

/// Three days of minutes: enough for the current hour and day, and for fixtures, in ~a few
/// hundred KiB per busy app at most.
pub const MAX_MINUTES_PER_APP: usize = 3 * 24 * 60;

/// The schema has 263 entries; room for all of them plus fixture extras, and no more.
pub const MAX_ENTRIES_PER_MINUTE: usize = 1024;

/// Times are clamped to the end of year 9999, where interval ids stop having four-digit years.
const LAST_MS: u64 = 253_402_300_799_999;

/// Flattened stats: dotted key → value.
pub type Entries = BTreeMap<String, f64>;

/// How a publish arrived, which decides its `messages.inbound.<transport>` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Realtime,
    Rest,
}

/// Per-app, per-minute statistics.
#[derive(Default)]
pub struct Stats {
    apps: DashMap<String, AppMinutes>,
}

#[derive(Default)]
struct AppMinutes {
    /// Minute start (ms) → what happened in it.
    minutes: BTreeMap<u64, Minute>,
}

#[derive(Default)]
struct Minute {
    realtime: Traffic,
    rest: Traffic,
    fixture: Entries,
}

#[derive(Default, Clone, Copy)]
struct Traffic {
    count: u64,
    bytes: u64,
}

/// A `GET /stats` query, its times already resolved to milliseconds.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    pub unit: Unit,
    /// Records whose interval ends after this are included.
    pub start: u64,
    /// Records whose interval starts at or before this are included.
    pub end: u64,
    pub forwards: bool,
    pub limit: usize,
}

/// One rolled-up interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The interval's start (ms).
    pub start: u64,
    pub unit: Unit,
    pub entries: Entries,
    /// For an interval that holds `now`: how far it runs (`yyyy-mm-dd:hh:mm:ss`).
    pub in_progress: Option<String>,
}

impl Record {
    pub fn interval_id(&self) -> String {
        self.unit.interval_id(self.start)
    }
}

/// A page of records, in the query's direction, and whether more match beyond it.
#[derive(Debug)]
pub struct Page {
    pub records: Vec<Record>,
    pub more: bool,
}

/// Why a fixture was refused.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("a stats fixture must be an object with an intervalId")]
    NotAnObject,
    #[error("invalid intervalId {0:?}: expected yyyy-mm-dd:hh:mm")]
    IntervalId(String),
    #[error("stats value at {0:?} must be a number")]
    NotANumber(String),
    #[error("too many stats entries in one minute (at most {MAX_ENTRIES_PER_MINUTE})")]
    TooManyEntries,
}

/// The app whose stats a principal reads and adds to: its sandbox app, else the app part of its
/// key name (`appId.keyId`).
pub fn app_of(principal: &Principal) -> &str {
    match &principal.scope {
        Some(app) => app,
        None => principal
            .key_name
            .split_once('.')
            .map_or(principal.key_name.as_str(), |(app, _)| app),
    }
}

impl Stats {
    /// Counts `n_messages` inbound messages of `bytes` in total at `now_ms`.
    pub fn record_publish(
        &self,
        app: &str,
        transport: Transport,
        n_messages: usize,
        bytes: usize,
        now_ms: u64,
    ) {
        let minute = Unit::Minute.floor(now_ms);
        let add = |minutes: &mut AppMinutes| {
            let traffic = match transport {
                Transport::Realtime => &mut minutes.minute(minute).realtime,
                Transport::Rest => &mut minutes.minute(minute).rest,
            };
            traffic.count += n_messages as u64;
            traffic.bytes += bytes as u64;
        };
        // The common case takes no allocation: the app is already known.
        if let Some(mut minutes) = self.apps.get_mut(app) {
            add(&mut minutes);
            return;
        }
        add(&mut self.apps.entry(app.to_owned()).or_default());
    }

    /// Adds fixtures (Ably's nested stats objects, each with a minute `intervalId`) to an app;
    /// values for a minute that already has some are added to them. All or nothing.
    pub fn add_fixtures(&self, app: &str, fixtures: &[Value]) -> Result<usize, FixtureError> {
        let mut parsed = Vec::with_capacity(fixtures.len());
        for fixture in fixtures {
            parsed.push(fixture_minute(fixture)?);
        }
        let mut minutes = self.apps.entry(app.to_owned()).or_default();
        for (minute, entries) in &parsed {
            let existing = minutes.minutes.get(minute).map_or(0, |m| m.fixture.len());
            if existing + entries.len() > MAX_ENTRIES_PER_MINUTE {
                return Err(FixtureError::TooManyEntries);
            }
        }
        for (minute, entries) in parsed.iter() {
            let fixture = &mut minutes.minute(*minute).fixture;
            for (key, value) in entries {
                *fixture.entry(key.clone()).or_default() += value;
            }
        }
        Ok(parsed.len())
    }

    /// The records a query selects, rolled up to its unit; only intervals with data appear.
    pub fn query(&self, app: &str, query: &StatsQuery, now_ms: u64) -> Page {
        let Some(minutes) = self.apps.get(app) else {
            return Page {
                records: Vec::new(),
                more: false,
            };
        };
        let unit = query.unit;
        let from = unit.floor(query.start.min(LAST_MS));
        let to = unit.next(query.end.min(LAST_MS));
        let mut buckets: BTreeMap<u64, RollUp> = BTreeMap::new();
        for (start, minute) in minutes.minutes.range(from..to.max(from)) {
            buckets
                .entry(unit.floor(*start))
                .or_default()
                .add(&minute.entries());
        }
        drop(minutes);
        let total = buckets.len();
        let into_record = |(start, roll_up): (u64, RollUp)| Record {
            start,
            unit,
            entries: roll_up.finish(),
            in_progress: (start <= now_ms && now_ms < unit.next(start)).then(|| second_id(now_ms)),
        };
        let records: Vec<Record> = if query.forwards {
            buckets
                .into_iter()
                .take(query.limit)
                .map(into_record)
                .collect()
        } else {
            buckets
                .into_iter()
                .rev()
                .take(query.limit)
                .map(into_record)
                .collect()
        };
        Page {
            more: total > records.len(),
            records,
        }
    }

    /// Forgets an app's stats (the app was deleted).
    pub fn remove_app(&self, app: &str) {
        self.apps.remove(app);
    }
}

impl AppMinutes {
    /// The minute starting at `start`, made if new; the oldest minute goes when over the cap.
    fn minute(&mut self, start: u64) -> &mut Minute {
        if !self.minutes.contains_key(&start) && self.minutes.len() >= MAX_MINUTES_PER_APP {
            self.minutes.pop_first();
        }
        self.minutes.entry(start).or_default()
    }
}

impl Minute {
    fn entries(&self) -> Entries {
        let mut leaves = Leaves::default();
        for (transport, traffic) in [("realtime", self.realtime), ("rest", self.rest)] {
            if traffic.count > 0 {
                let path =
                    |field: &str| ["inbound", transport, "messages", field].map(String::from);
                leaves.add(&path("count"), traffic.count as f64);
                leaves.add(&path("data"), traffic.bytes as f64);
            }
        }
        let mut entries = leaves.finish();
        for (key, value) in &self.fixture {
            *entries.entry(key.clone()).or_default() += value;
        }
        entries
    }
}

/// A fixture's minute and its entries.
fn fixture_minute(fixture: &Value) -> Result<(u64, Entries), FixtureError> {
    let object = fixture.as_object().ok_or(FixtureError::NotAnObject)?;
    let interval_id = object.get("intervalId").ok_or(FixtureError::NotAnObject)?;
    let interval_id = interval_id
        .as_str()
        .ok_or_else(|| FixtureError::IntervalId(interval_id.to_string()))?;
    let minute = match parse_interval_id(interval_id) {
        Some((start, Unit::Minute)) => start,
        _ => return Err(FixtureError::IntervalId(interval_id.to_owned())),
    };
    let mut leaves = Leaves::default();
    for (group, value) in object {
        if matches!(group.as_str(), "intervalId" | "unit" | "schema" | "appId") {
            continue;
        }
        let mut path = vec![group.clone()];
        flatten(value, &mut path, &mut leaves)?;
    }
    let entries = leaves.finish();
    if entries.len() > MAX_ENTRIES_PER_MINUTE {
        return Err(FixtureError::TooManyEntries);
    }
    Ok((minute, entries))
}

fn flatten(value: &Value, path: &mut Vec<String>, leaves: &mut Leaves) -> Result<(), FixtureError> {
    match value {
        Value::Object(fields) => {
            for (name, value) in fields {
                path.push(name.clone());
                flatten(value, path, leaves)?;
                path.pop();
                if leaves.len() > MAX_ENTRIES_PER_MINUTE {
                    return Err(FixtureError::TooManyEntries);
                }
            }
            Ok(())
        }
        Value::Number(number) => {
            let value = number
                .as_f64()
                .ok_or_else(|| FixtureError::NotANumber(path.join(".")))?;
            leaves.add(path, value);
            Ok(())
        }
        _ => Err(FixtureError::NotANumber(path.join("."))),
    }
}

/// Turns the leaves of Ably's nested stats form (`inbound.realtime.messages.count`) into schema
/// entries, with the aggregates (`…all…`) the nested form leaves implicit. An aggregate given
/// explicitly wins over the one summed from details.
#[derive(Default)]
struct Leaves {
    summed: Entries,
    explicit: Entries,
}

impl Leaves {
    fn len(&self) -> usize {
        self.summed.len() + self.explicit.len()
    }

    fn add(&mut self, path: &[String], value: f64) {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            // inbound|outbound . transport . type . field
            [direction @ ("inbound" | "outbound"), transport, kind, field]
                if *transport != "all" && *kind != "all" =>
            {
                for (t, k) in [
                    (*transport, *kind),
                    (*transport, "all"),
                    ("all", *kind),
                    ("all", "all"),
                ] {
                    self.sum(format!("messages.{direction}.{t}.{k}.{field}"), value);
                }
                self.sum(format!("messages.all.{kind}.{field}"), value);
                self.sum(format!("messages.all.all.{field}"), value);
            }
            // persisted . type . field
            ["persisted", kind, field] if *kind != "all" => {
                self.sum(format!("messages.persisted.{kind}.{field}"), value);
                self.sum(format!("messages.persisted.all.{field}"), value);
            }
            // `all` is inbound + outbound, which the details above already sum: explicit only.
            [group @ ("inbound" | "outbound" | "persisted" | "all"), ..] => {
                self.explicit
                    .insert(format!("messages.{group}.{}", p[1..].join(".")), value);
            }
            // connections . tls|plain|all . field: the schema keeps only `all`.
            ["connections", kind, field] if *kind != "all" => {
                self.sum(format!("connections.all.{field}"), value);
            }
            ["apiRequests", field] => {
                self.sum(format!("apiRequests.other.{field}"), value);
                self.sum(format!("apiRequests.all.{field}"), value);
            }
            ["tokenRequests", field] => {
                self.sum(format!("apiRequests.tokenRequests.{field}"), value);
                self.sum(format!("apiRequests.all.{field}"), value);
            }
            // Already flattened (`entries.<key>`), or anything else: kept as it is.
            ["entries", rest @ ..] => {
                self.explicit.insert(rest.join("."), value);
            }
            _ => {
                self.explicit.insert(p.join("."), value);
            }
        }
    }

    fn sum(&mut self, key: String, value: f64) {
        *self.summed.entry(key).or_default() += value;
    }

    fn finish(self) -> Entries {
        let mut entries = self.summed;
        entries.extend(self.explicit);
        entries
    }
}

/// Minutes merged into one interval: counts add up, `peak` takes the largest, `min` the
/// smallest, `mean` the average over the minutes that report it.
#[derive(Default)]
struct RollUp {
    entries: Entries,
    means: BTreeMap<String, (f64, u32)>,
}

impl RollUp {
    fn add(&mut self, minute: &Entries) {
        for (key, value) in minute {
            if key.ends_with(".mean") {
                let (sum, n) = self.means.entry(key.clone()).or_default();
                *sum += value;
                *n += 1;
                continue;
            }
            match self.entries.get_mut(key) {
                None => {
                    self.entries.insert(key.clone(), *value);
                }
                Some(total) if key.ends_with(".peak") => *total = total.max(*value),
                Some(total) if key.ends_with(".min") => *total = total.min(*value),
                Some(total) => *total += value,
            }
        }
    }

    fn finish(mut self) -> Entries {
        for (key, (sum, n)) in self.means {
            self.entries.insert(key, sum / f64::from(n));
        }
        self.entries
    }
}
