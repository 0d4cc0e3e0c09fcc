//! The simulated Digis backend: REST publications (`POST /channels/{ch}/messages`) to the shared
//! and user channels and domain events (`POST /events`) at modest rates, each request to the
//! next node in turn and retried on another if one fails (a node may be draining). Messages carry
//! ids and events have ids, so a retry of something that did arrive is not delivered twice.
//! Every serial the server answers with is noted per channel: at the end each subscriber is owed
//! everything up to the newest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng as _;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::checks::{parse_serial, Tally};
use super::Layout;
use crate::clock;
use crate::payload::Stamp;
use crate::rest::Rest;
use crate::scenario::cluster::Endpoints;

/// Requests in flight at once: a slow node delays the next publications, not all of them.
const IN_FLIGHT: usize = 16;
/// Pause before retrying on the next node.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The newest serial published on each channel.
#[derive(Default)]
pub(super) struct Published {
    newest: Mutex<HashMap<String, String>>,
}

impl Published {
    pub(super) fn note(&self, channel: &str, serial: &str) {
        if parse_serial(serial).is_none() {
            return;
        }
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        match newest.get_mut(channel) {
            Some(known) if known.as_str() >= serial => {}
            Some(known) => *known = serial.to_owned(),
            None => {
                newest.insert(channel.to_owned(), serial.to_owned());
            }
        }
    }

    pub(super) fn newest(&self, channel: &str) -> Option<String> {
        let newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        newest.get(channel).cloned()
    }
}

/// One REST client per node.
pub(super) struct Nodes {
    pub(super) rest: Vec<Rest>,
    pub(super) endpoints: Arc<Endpoints>,
}

impl Nodes {
    /// Runs `call` on the next node, then on the others in turn until one succeeds.
    pub(super) async fn any<T, F, Fut>(&self, call: F) -> anyhow::Result<T>
    where
        F: Fn(Rest) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let mut last_error = None;
        for attempt in 0..self.rest.len() {
            if attempt > 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let node = self.endpoints.pick();
            match call(self.rest[node].clone()).await {
                Ok(value) => return Ok(value),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no node")))
    }
}

pub(super) struct Rates {
    pub(super) publications_per_s: f64,
    pub(super) events_per_s: f64,
    pub(super) size: usize,
}

/// Publishes until `stop`; returns (publications, events) sent.
pub(super) async fn run(
    nodes: Arc<Nodes>,
    layout: Arc<Layout>,
    rates: Rates,
    published: Arc<Published>,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) -> (u64, u64) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut publications = every(rates.publications_per_s);
    let mut events = every(rates.events_per_s);
    let mut rng = StdRng::seed_from_u64(layout.seed);
    let (mut n_publications, mut n_events) = (0u64, 0u64);
    loop {
        let publication = tokio::select! {
            _ = stop.changed() => break,
            _ = publications.tick() => true,
            _ = events.tick() => false,
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (nodes, published, tally, layout) = (
            nodes.clone(),
            published.clone(),
            tally.clone(),
            layout.clone(),
        );
        if publication {
            let seq = n_publications;
            n_publications += 1;
            let channel = layout.publication_channel(seq, &mut rng);
            let size = rates.size;
            tasks.spawn(async move {
                let _permit = permit;
                let stamp = Stamp {
                    publisher: channel as u32,
                    seq,
                    sent_us: clock::now_us(),
                };
                let name = layout.channel_name(channel);
                let id = format!("soak-{}-{seq}", layout.run);
                let payload = stamp.encode(size);
                let outcome = nodes
                    .any(|rest| {
                        let (name, id, payload) = (name.clone(), id.clone(), payload.clone());
                        async move { rest.publish_with_id(&name, &id, payload).await }
                    })
                    .await;
                match outcome {
                    Ok(serials) => {
                        for serial in serials.iter().flatten() {
                            published.note(&name, serial);
                        }
                    }
                    Err(error) => tally.fail("backend publish failed", 1, || format!("{error:#}")),
                }
            });
        } else {
            let event = layout.event(n_events, &mut rng);
            n_events += 1;
            tasks.spawn(async move {
                let _permit = permit;
                let outcome = nodes
                    .any(|rest| {
                        let event = event.clone();
                        async move { rest.post_events(&event).await }
                    })
                    .await;
                match outcome {
                    Ok(reply) => {
                        for outcome in reply["channels"].as_array().into_iter().flatten() {
                            if let (Some(channel), Some(serial)) =
                                (outcome["channel"].as_str(), outcome["serial"].as_str())
                            {
                                published.note(channel, serial);
                            }
                        }
                    }
                    Err(error) => tally.fail("backend event failed", 1, || format!("{error:#}")),
                }
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    (n_publications, n_events)
}

/// A ticker at `per_s` a second; never ticks at 0.
fn every(per_s: f64) -> tokio::time::Interval {
    let period = if per_s > 0.0 {
        Duration::from_secs_f64(1.0 / per_s)
    } else {
        Duration::from_secs(365 * 24 * 3600)
    };
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// A Digis event on the soak's channels, its data stamped with when it was sent.
pub(super) fn event_json(run: &str, n: u64, kind: u64, ids: (String, String, String)) -> Value {
    let (session_or_stream, creator, fan) = ids;
    let sent_us = clock::now_us();
    let (event_type, data) = match kind % 3 {
        0 => (
            "session.updated",
            json!({ "session_id": session_or_stream, "creator_id": creator, "fan_id": fan, "sent_us": sent_us }),
        ),
        1 => (
            "stream.viewers",
            json!({ "stream_id": session_or_stream, "creator_id": creator, "viewers": n, "sent_us": sent_us }),
        ),
        _ => (
            "tokens.credited",
            json!({ "user_id": fan, "tokens": 5, "balance": n, "sent_us": sent_us }),
        ),
    };
    json!({ "id": format!("soak-{run}-event-{n}"), "type": event_type, "data": data })
}
