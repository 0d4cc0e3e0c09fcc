//! One message's annotation aggregates, per annotation type, and the summary they render to
//! (TM7). Each annotation changes them in O(log n) (n contributors of one name); rendering, which
//! the throttled summary events and reads do, walks them.
//!
//! The type is `namespace:summarization.version`; the summarization decides the rules (§3.4 of
//! `docs/design/mutable-messages.md`):
//! - `total.v1`: every annotation counts, a delete takes one off;
//! - `flag.v1`: one per identified client;
//! - `distinct.v1`: one per (identified client, name);
//! - `unique.v1`: one name per identified client; a new name moves the client;
//! - `multiple.v1`: `count` (default 1) adds to the client's tally for the name, unidentified
//!   counts to `totalUnidentified`; a delete removes all of the client's tally for the name.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

/// How a type summarizes: the part after the last `:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Total,
    Flag,
    Distinct,
    Unique,
    Multiple,
}

impl Kind {
    /// `None` for a summarization this server does not know.
    pub(crate) fn of(annotation_type: &str) -> Option<Kind> {
        let summarization = annotation_type
            .rsplit_once(':')
            .map_or(annotation_type, |(_, s)| s);
        Some(match summarization {
            "total.v1" => Kind::Total,
            "flag.v1" => Kind::Flag,
            "distinct.v1" => Kind::Distinct,
            "unique.v1" => Kind::Unique,
            "multiple.v1" => Kind::Multiple,
            _ => return None,
        })
    }

    /// Flags, distinct and unique names count clients, so an anonymous one cannot take part.
    pub(crate) fn needs_client_id(self) -> bool {
        matches!(self, Kind::Flag | Kind::Distinct | Kind::Unique)
    }

    /// Whether an annotation of this kind must name what it is for.
    pub(crate) fn needs_name(self, delete: bool) -> bool {
        match self {
            Kind::Total | Kind::Flag => false,
            // A delete of a unique choice removes whatever the client chose.
            Kind::Unique => !delete,
            Kind::Distinct | Kind::Multiple => true,
        }
    }
}

/// One entry of a message's aggregates as the shared store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub message_serial: String,
    pub annotation_type: String,
    pub name: Option<String>,
    pub client_id: Option<String>,
    /// The total (total.v1), the client's tally or the unidentified count (multiple.v1); 1
    /// otherwise.
    pub count: u64,
    /// The annotation counter when the client first contributed (0 for totals), for order.
    pub arrival: u64,
}

/// One annotation as the aggregates see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delta<'a> {
    pub(crate) delete: bool,
    pub(crate) client_id: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
    pub(crate) count: Option<u64>,
}

/// Clients in the order they first contributed, each with a tally.
#[derive(Debug, Default)]
struct Contributors {
    /// client -> (arrival number, tally)
    by_client: HashMap<String, (u64, u64)>,
    order: BTreeMap<u64, String>,
    arrivals: u64,
    tally: u64,
}

impl Contributors {
    /// Adds `count` to the client's tally (a new client goes last).
    fn add(&mut self, client: &str, count: u64) {
        match self.by_client.get_mut(client) {
            Some((_, tally)) => *tally += count,
            None => {
                self.arrivals += 1;
                self.by_client
                    .insert(client.to_owned(), (self.arrivals, count));
                self.order.insert(self.arrivals, client.to_owned());
            }
        }
        self.tally += count;
    }

    /// A client counted once, whatever it sends again.
    fn add_once(&mut self, client: &str) {
        if !self.by_client.contains_key(client) {
            self.add(client, 1);
        }
    }

    fn remove(&mut self, client: &str) {
        if let Some((arrival, tally)) = self.by_client.remove(client) {
            self.order.remove(&arrival);
            self.tally -= tally;
        }
    }

    fn len(&self) -> usize {
        self.by_client.len()
    }

    fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    fn listed(&self) -> Vec<(String, u64)> {
        self.order
            .values()
            .map(|client| (client.clone(), self.by_client[client].1))
            .collect()
    }
}

#[derive(Debug, Default)]
struct Tallied {
    clients: Contributors,
    unidentified: u64,
}

#[derive(Debug)]
enum Aggregate {
    Total(u64),
    Flag(Contributors),
    Distinct(BTreeMap<String, Contributors>),
    Unique {
        names: BTreeMap<String, Contributors>,
        chosen: HashMap<String, String>,
    },
    Multiple(BTreeMap<String, Tallied>),
}

impl Aggregate {
    fn new(kind: Kind) -> Aggregate {
        match kind {
            Kind::Total => Aggregate::Total(0),
            Kind::Flag => Aggregate::Flag(Contributors::default()),
            Kind::Distinct => Aggregate::Distinct(BTreeMap::new()),
            Kind::Unique => Aggregate::Unique {
                names: BTreeMap::new(),
                chosen: HashMap::new(),
            },
            Kind::Multiple => Aggregate::Multiple(BTreeMap::new()),
        }
    }

    /// Nothing counted: left out of the summary, as a store that deleted its fields has it.
    fn is_empty(&self) -> bool {
        match self {
            Aggregate::Total(total) => *total == 0,
            Aggregate::Flag(clients) => clients.is_empty(),
            Aggregate::Distinct(names) | Aggregate::Unique { names, .. } => names.is_empty(),
            Aggregate::Multiple(names) => names.is_empty(),
        }
    }

    fn apply(&mut self, delta: Delta<'_>) {
        let name = delta.name.unwrap_or_default();
        match (self, delta.client_id) {
            (Aggregate::Total(total), _) => {
                *total = if delta.delete {
                    total.saturating_sub(1)
                } else {
                    *total + 1
                };
            }
            (Aggregate::Flag(clients), Some(client)) => {
                if delta.delete {
                    clients.remove(client);
                } else {
                    clients.add_once(client);
                }
            }
            (Aggregate::Distinct(names), Some(client)) => {
                if delta.delete {
                    remove_from(names, name, client);
                } else {
                    names.entry(name.to_owned()).or_default().add_once(client);
                }
            }
            (Aggregate::Unique { names, chosen }, Some(client)) => {
                if chosen.get(client).is_some_and(|had| had == name) && !delta.delete {
                    return;
                }
                if let Some(had) = chosen.remove(client) {
                    remove_from(names, &had, client);
                }
                if !delta.delete {
                    names.entry(name.to_owned()).or_default().add_once(client);
                    chosen.insert(client.to_owned(), name.to_owned());
                }
            }
            (Aggregate::Multiple(names), client) => {
                let count = delta.count.unwrap_or(1);
                let entry = names.entry(name.to_owned()).or_default();
                match (client, delta.delete) {
                    (Some(client), false) => entry.clients.add(client, count),
                    (Some(client), true) => entry.clients.remove(client),
                    (None, false) => entry.unidentified += count,
                    (None, true) => entry.unidentified = entry.unidentified.saturating_sub(count),
                }
                if entry.clients.is_empty() && entry.unidentified == 0 {
                    names.remove(name);
                }
            }
            // Refused before they get here (`Kind::needs_client_id`).
            (Aggregate::Flag(_) | Aggregate::Distinct(_) | Aggregate::Unique { .. }, None) => {}
        }
    }
}

fn remove_from(names: &mut BTreeMap<String, Contributors>, name: &str, client: &str) {
    if let Some(clients) = names.get_mut(name) {
        clients.remove(client);
        if clients.is_empty() {
            names.remove(name);
        }
    }
}

/// Every type's aggregate for one message.
#[derive(Debug, Default)]
pub(crate) struct Aggregates {
    by_type: BTreeMap<String, Aggregate>,
}

impl Aggregates {
    /// Applies one checked annotation (its kind known, a client where the kind needs one).
    pub(crate) fn apply(&mut self, annotation_type: &str, kind: Kind, delta: Delta<'_>) {
        self.by_type
            .entry(annotation_type.to_owned())
            .or_insert_with(|| Aggregate::new(kind))
            .apply(delta);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }

    /// Puts back one contribution read from the shared store (Redis keeps the aggregates, not
    /// the annotations): a total, a client under a name (flag, distinct, unique), a client's
    /// tally or the unidentified count (multiple). Restored in arrival order, contributors keep
    /// their order.
    pub(crate) fn restore(&mut self, annotation_type: &str, kind: Kind, stored: &Contribution) {
        let aggregate = self
            .by_type
            .entry(annotation_type.to_owned())
            .or_insert_with(|| Aggregate::new(kind));
        let name = stored.name.as_deref().unwrap_or_default();
        match (aggregate, stored.client_id.as_deref()) {
            (Aggregate::Total(total), _) => *total += stored.count,
            (Aggregate::Multiple(names), None) => {
                names.entry(name.to_owned()).or_default().unidentified += stored.count;
            }
            (Aggregate::Multiple(names), Some(client)) => {
                let entry = names.entry(name.to_owned()).or_default();
                entry.clients.add(client, stored.count);
            }
            (aggregate, Some(_)) => aggregate.apply(Delta {
                delete: false,
                client_id: stored.client_id.as_deref(),
                name: stored.name.as_deref(),
                count: None,
            }),
            (_, None) => {}
        }
    }

    /// The summary (`annotations.summary`) of every type with something counted, clipped so that the summary event
    /// `{action:4, serial, annotations:{summary}}` encodes (as JSON) within `max_bytes`: the
    /// longest `clientIds` list is halved, keeping its earliest contributors and marking it
    /// `clipped`, until it fits or nothing is left to cut. Totals stay exact.
    pub(crate) fn summary(&self, serial: &str, max_bytes: usize) -> BTreeMap<String, Value> {
        let mut shapes: Vec<(&str, Shape)> = self
            .by_type
            .iter()
            .filter(|(_, aggregate)| !aggregate.is_empty())
            .map(|(name, aggregate)| (name.as_str(), Shape::of(aggregate)))
            .collect();
        loop {
            let summary: BTreeMap<String, Value> = shapes
                .iter()
                .map(|(name, shape)| ((*name).to_owned(), shape.render()))
                .collect();
            let size = serde_json::to_vec(&json!({
                "action": 4,
                "serial": serial,
                "annotations": {"summary": &summary},
            }))
            .map_or(0, |encoded| encoded.len());
            if size <= max_bytes {
                return summary;
            }
            let longest = shapes
                .iter_mut()
                .flat_map(|(_, shape)| shape.entries_mut())
                .filter(|entry| entry.shown > 0)
                .max_by_key(|entry| entry.shown);
            match longest {
                Some(entry) => entry.shown /= 2,
                None => return summary,
            }
        }
    }
}

/// One list of contributors as the summary shows it.
#[derive(Debug)]
struct Entry {
    total: u64,
    clients: Vec<(String, u64)>,
    /// How many of `clients` are shown (fewer once clipped).
    shown: usize,
    /// `Some` for `multiple.v1`: the unidentified count, and counts beside the clients.
    unidentified: Option<u64>,
}

impl Entry {
    fn of(clients: &Contributors, total: u64, unidentified: Option<u64>) -> Entry {
        let clients = clients.listed();
        Entry {
            total,
            shown: clients.len(),
            clients,
            unidentified,
        }
    }

    fn render(&self) -> Value {
        let shown = &self.clients[..self.shown];
        let clipped = self.shown < self.clients.len();
        match self.unidentified {
            None => json!({
                "total": self.total,
                "clientIds": shown.iter().map(|(client, _)| client).collect::<Vec<_>>(),
                "clipped": clipped,
            }),
            Some(unidentified) => json!({
                "total": self.total,
                "clientIds": shown
                    .iter()
                    .map(|(client, count)| (client.clone(), Value::from(*count)))
                    .collect::<Map<String, Value>>(),
                "totalUnidentified": unidentified,
                "clipped": clipped,
                "totalClientIds": self.clients.len(),
            }),
        }
    }
}

#[derive(Debug)]
enum Shape {
    Total(u64),
    Flag(Entry),
    Named(BTreeMap<String, Entry>),
}

impl Shape {
    fn of(aggregate: &Aggregate) -> Shape {
        let named = |names: &BTreeMap<String, Contributors>| {
            names
                .iter()
                .map(|(name, clients)| {
                    (name.clone(), Entry::of(clients, clients.len() as u64, None))
                })
                .collect()
        };
        match aggregate {
            Aggregate::Total(total) => Shape::Total(*total),
            Aggregate::Flag(clients) => Shape::Flag(Entry::of(clients, clients.len() as u64, None)),
            Aggregate::Distinct(names) | Aggregate::Unique { names, .. } => {
                Shape::Named(named(names))
            }
            Aggregate::Multiple(names) => Shape::Named(
                names
                    .iter()
                    .map(|(name, tallied)| {
                        let total = tallied.clients.tally + tallied.unidentified;
                        let entry = Entry::of(&tallied.clients, total, Some(tallied.unidentified));
                        (name.clone(), entry)
                    })
                    .collect(),
            ),
        }
    }

    fn render(&self) -> Value {
        match self {
            Shape::Total(total) => json!({ "total": total }),
            Shape::Flag(entry) => entry.render(),
            Shape::Named(names) => Value::Object(
                names
                    .iter()
                    .map(|(name, entry)| (name.clone(), entry.render()))
                    .collect(),
            ),
        }
    }

    fn entries_mut(&mut self) -> Vec<&mut Entry> {
        match self {
            Shape::Total(_) => Vec::new(),
            Shape::Flag(entry) => vec![entry],
            Shape::Named(names) => names.values_mut().collect(),
        }
    }
}
