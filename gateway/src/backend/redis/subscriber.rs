//! The pub/sub side: which channels this node listens to (reference counted, one
//! subscription per channel), and the task that keeps the link, subscribes as interest asks,
//! catches channels up and hands what arrives to the node (`BackendEvents`): publications,
//! presence, revocations and release requests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use protocol::Message;
use tokio::sync::{mpsc, watch};

use super::link::{Link, LinkSource, Probe, ProbeEchoes, PROBE_INTERVAL};
use super::stream::{stored_message, StreamLoader};
use super::{annotations, auth, batch, ephemeral, presence};
use crate::backend::session::ConnectionKey;
use crate::backend::{Arrival, BackendError};

pub(super) enum Interest {
    Subscribe(String),
    Unsubscribe(String),
}

/// Local interest in one channel: how many attachments, and whether the node has subscribed
/// and caught up from the store (an attach waits for that, so its replay has the whole log).
struct ChannelInterest {
    count: usize,
    ready: watch::Sender<bool>,
}

type InterestMap = Arc<Mutex<HashMap<String, ChannelInterest>>>;

/// Longest an attach waits for the node to subscribe and catch up before it is refused.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// This node's interest in channels; the pub/sub task subscribes as it changes.
#[derive(Clone)]
pub(super) struct Interests {
    /// Channel -> local interest; shared with the pub/sub task, which resubscribes from it.
    map: InterestMap,
    control: mpsc::UnboundedSender<Interest>,
}

impl Interests {
    pub(super) fn new() -> (Interests, mpsc::UnboundedReceiver<Interest>) {
        let (control, requests) = mpsc::unbounded_channel();
        let interests = Interests {
            map: Arc::new(Mutex::new(HashMap::new())),
            control,
        };
        (interests, requests)
    }

    /// One more local listener on `channel`. The first one subscribes the node and catches the
    /// channel up from the store; every caller waits until that is done, so an attach's replay
    /// (resume, rewind) and a history read see the whole log. On an error the caller must still
    /// `leave`.
    pub(super) async fn join(&self, channel: &str) -> Result<(), BackendError> {
        let mut ready = {
            let mut interest = self.map.lock().unwrap_or_else(|p| p.into_inner());
            let entry = interest
                .entry(channel.to_owned())
                .or_insert_with(|| ChannelInterest {
                    count: 0,
                    ready: watch::Sender::new(false),
                });
            entry.count += 1;
            if entry.count == 1 {
                let _ = self.control.send(Interest::Subscribe(channel.to_owned()));
            }
            entry.ready.subscribe()
        };
        let caught_up = tokio::time::timeout(JOIN_TIMEOUT, ready.wait_for(|ready| *ready))
            .await
            .is_ok_and(|waited| waited.is_ok());
        if caught_up {
            Ok(())
        } else {
            Err(BackendError::NoAnswer)
        }
    }

    /// One local listener fewer; the last one unsubscribes the node.
    pub(super) fn leave(&self, channel: &str) {
        let mut interest = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = interest.get_mut(channel) else {
            return;
        };
        entry.count = entry.count.saturating_sub(1);
        if entry.count == 0 {
            interest.remove(channel);
            let _ = self.control.send(Interest::Unsubscribe(channel.to_owned()));
        }
    }
}

const TOPIC_PREFIX: &str = "rt:ch:";

pub(super) fn topic(channel: &str) -> String {
    format!("{TOPIC_PREFIX}{{{channel}}}")
}

fn channel_of(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(TOPIC_PREFIX)?
        .strip_prefix('{')?
        .strip_suffix('}')
}

/// The node's own topics on the pub/sub link besides channels.
pub(super) struct Topics {
    pub(super) probe: Probe,
    /// Requests from other nodes (release a connection being resumed there).
    pub(super) control: String,
}

/// Marks a channel caught up, waking the attaches waiting on it.
fn mark_ready(interest: &InterestMap, channel: &str) {
    if let Some(entry) = interest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(channel)
    {
        entry.ready.send_replace(true);
    }
}

/// The channels with local interest that were caught up on the link (those joined since are
/// still being caught up and may have missed anything).
fn caught_up_channels(interest: &InterestMap) -> HashSet<String> {
    interest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, entry)| *entry.ready.borrow())
        .map(|(channel, _)| channel.clone())
        .collect()
}

/// Most interest changes sent in one SUBSCRIBE / UNSUBSCRIBE.
const INTEREST_BATCH: usize = 512;

/// Nets a batch of interest changes, in order, per channel: the channels to subscribe (and
/// catch up: a channel left and joined again in one batch must be caught up anew) and those to
/// unsubscribe.
fn net_interest(batch: Vec<Interest>) -> (Vec<String>, Vec<String>) {
    let mut last: Vec<(String, bool)> = Vec::new();
    for request in batch {
        let (channel, join) = match request {
            Interest::Subscribe(channel) => (channel, true),
            Interest::Unsubscribe(channel) => (channel, false),
        };
        match last.iter_mut().find(|(c, _)| *c == channel) {
            Some(entry) => entry.1 = join,
            None => last.push((channel, join)),
        }
    }
    let (join, part): (Vec<_>, Vec<_>) = last.into_iter().partition(|(_, join)| *join);
    (
        join.into_iter().map(|(c, _)| c).collect(),
        part.into_iter().map(|(c, _)| c).collect(),
    )
}

/// The pub/sub link: subscriptions as interest asks, deliveries into the hub. A new
/// subscription is caught up from the store right after SUBSCRIBE, before anything later is
/// read from the link, so nothing racing the subscription is missed. When the link drops it
/// reconnects (with backoff), resubscribes every channel with local interest and catches each
/// up, so a Redis restart or network blip never leaves a node silently deaf. A publication
/// whose serial does not follow on from the last one here (a lost pub/sub message) makes the
/// node catch that channel up too.
pub(super) async fn run_pubsub(
    mut source: LinkSource,
    first: Link,
    mut requests: mpsc::UnboundedReceiver<Interest>,
    interests: Interests,
    store: StreamLoader,
    topics: Topics,
) {
    let interest = &interests.map;
    let events = store.events.clone();
    let probe = &topics.probe;
    let mut first = Some(first);
    let mut backoff = std::time::Duration::from_millis(100);
    // Channels this node heard everything on until the last link dropped (see
    // `StreamLoader::catch_up`); emptied by anything that may have lost a message since.
    let mut heard_everything: HashSet<String> = HashSet::new();
    loop {
        let mut link = match first.take() {
            Some(link) => link,
            None => {
                if !events.running() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                match source.open().await {
                    Ok(link) => link,
                    Err(error) => {
                        tracing::debug!(%error, "Redis pub/sub reconnect failed");
                        continue;
                    }
                }
            }
        };
        let channels: Vec<String> = interest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let resubscribed = link.listen(&probe.topic, true).await.is_ok()
            && link.listen(&topics.control, false).await.is_ok()
            && link.listen(auth::AUTH_TOPIC, false).await.is_ok()
            && link.subscribe_all(&channels).await.is_ok();
        if !resubscribed {
            // Whatever this link already received is dropped with it.
            heard_everything.clear();
            continue;
        }
        if !events.running() {
            return;
        }
        // Announcements are heard from here on; what was missed while the link was down (or
        // before this process started) is in the set.
        events.link_up();
        let mut caught_up = true;
        for channel in &channels {
            let heard = heard_everything.contains(channel);
            if let Err(error) = catch_up_after_reconnect(&store, channel, heard).await {
                tracing::warn!(%channel, %error, "catch-up after reconnect failed");
                caught_up = false;
                break;
            }
            mark_ready(interest, channel);
        }
        heard_everything.clear();
        if !caught_up {
            continue;
        }
        backoff = std::time::Duration::from_millis(100);
        tracing::info!(
            channels = channels.len(),
            connections = link.count(),
            "Redis pub/sub link up"
        );
        let mut echoes = ProbeEchoes::new(&link);
        let mut watchdog = tokio::time::interval(PROBE_INTERVAL);
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    if !events.running() {
                        return;
                    }
                    // Whatever else is waiting goes in the same SUBSCRIBE / UNSUBSCRIBE.
                    let mut batch = vec![request];
                    while batch.len() < INTEREST_BATCH {
                        match requests.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    let (join, part) = net_interest(batch);
                    let mut result = link.unsubscribe_all(&part).await;
                    if result.is_ok() {
                        result = link.subscribe_all(&join).await;
                    }
                    for channel in &join {
                        if result.is_err() {
                            break;
                        }
                        // Not subscribed until now: this node may have missed anything.
                        result = store.catch_up(channel, false, false).await;
                        if result.is_ok() {
                            mark_ready(interest, channel);
                        }
                    }
                    if let Err(error) = result {
                        tracing::warn!(%error, "Redis subscribe or catch-up failed; reconnecting");
                        break;
                    }
                }
                message = link.next() => {
                    let Some((connection, message)) = message else {
                        tracing::warn!("Redis pub/sub link lost; reconnecting");
                        if echoes.fresh() {
                            heard_everything = caught_up_channels(interest);
                        }
                        break;
                    };
                    if message.get_channel_name() == probe.topic {
                        echoes.heard(connection, probe);
                        continue;
                    }
                    if message.get_channel_name() == auth::AUTH_TOPIC {
                        let revocations = message
                            .get_payload::<String>()
                            .ok()
                            .and_then(|payload| auth::parse_announcement(&payload));
                        events.apply_revocations(revocations.unwrap_or_default());
                        continue;
                    }
                    if message.get_channel_name() == topics.control {
                        let payload = message.get_payload::<String>().ok();
                        if let Some(key) = payload.as_deref().and_then(ConnectionKey::parse) {
                            events.release(key);
                        }
                        continue;
                    }
                    if !events.running() {
                        return;
                    }
                    if let Err(error) = on_publication(&store, &message).await {
                        tracing::warn!(%error, "catch-up after a gap failed; reconnecting");
                        break;
                    }
                }
                _ = source.moved() => {
                    tracing::warn!("the Redis master changed; moving the pub/sub link to it");
                    break;
                }
                _ = watchdog.tick() => {
                    if echoes.stale() {
                        tracing::warn!("a Redis Cluster pub/sub connection went quiet; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

/// Catch-ups after a reconnect retried on the same link, this often, with a doubling pause
/// from `CATCH_UP_RETRY_PAUSE`.
const CATCH_UP_ATTEMPTS: u32 = 5;
const CATCH_UP_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// A catch-up right after the link came back, retried a few times on the same link: a Redis that
/// just restarted often fails the first command (the command connection reconnects only on a
/// failure). Giving up the link instead would forget what this node heard before Redis died,
/// and every subscriber would be told of a loss that never happened.
async fn catch_up_after_reconnect(
    store: &StreamLoader,
    channel: &str,
    heard: bool,
) -> redis::RedisResult<()> {
    let mut pause = CATCH_UP_RETRY_PAUSE;
    for _ in 1..CATCH_UP_ATTEMPTS {
        match store.catch_up(channel, heard, true).await {
            Err(error) if !error.is_timeout() => {
                tracing::debug!(%channel, %error, "catch-up after reconnect failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            done => return done,
        }
    }
    store.catch_up(channel, heard, true).await
}

async fn on_publication(store: &StreamLoader, message: &redis::Msg) -> redis::RedisResult<()> {
    let Some(channel) = channel_of(message.get_channel_name()) else {
        return Ok(());
    };
    let payload: String = match message.get_payload() {
        Ok(payload) => payload,
        Err(error) => {
            tracing::warn!(%error, "unreadable bus payload");
            return Ok(());
        }
    };
    if let Some(events) = payload.strip_prefix(presence::PRESENCE_MARK) {
        match serde_json::from_str(events) {
            Ok(events) => store.events.apply_presence(channel, events),
            Err(error) => tracing::warn!(%error, "unreadable presence on the bus"),
        }
        return Ok(());
    }
    // Never stored: no serial to check continuity against.
    if let Some(rest) = payload.strip_prefix(ephemeral::EPHEMERAL_MARK) {
        ephemeral::arrived(store.events.as_ref(), channel, rest);
        return Ok(());
    }
    if let Some(announced) = payload.strip_prefix(annotations::ANNOTATION_MARK) {
        let announced = annotations::parse_announcement(announced);
        // The node that stored them reports their summaries (webhooks), once.
        let ours = announced.origin == *store.node;
        if !store.events.deliver_annotations(
            channel,
            announced.annotations,
            announced.publisher.as_deref(),
            ours,
        ) {
            tracing::info!(%channel, "gap in annotation counters; reloading the aggregates");
            annotations::load(&store.commands, &store.events, channel, true).await?;
        }
        return Ok(());
    }
    if let Some(batch) = payload.strip_prefix(batch::BATCH2_MARK) {
        // Each publication as if announced alone, in order; after a gap the catch-up has read
        // the rest of the batch from the store.
        for (connection_id, id, messages) in batch2_publications(batch) {
            if !deliver(store, channel, connection_id, id, messages).await? {
                break;
            }
        }
        return Ok(());
    }
    if let Some(batch) = payload.strip_prefix(batch::BATCH_MARK) {
        // Each publication as if announced alone, in order; after a gap the catch-up has read
        // the rest of the batch from the store.
        let mut lines = batch.split('\n');
        while let Some(connection_id) = lines.next() {
            let id = lines.next().unwrap_or_default();
            let n: usize = lines.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let messages = stored_messages(&mut lines, n);
            if !deliver(store, channel, connection_id, id, messages).await? {
                break;
            }
        }
        return Ok(());
    }
    // One publication, as nodes before batching announced it.
    let mut lines = payload.split('\n');
    let connection_id = lines.next().unwrap_or_default();
    let id = lines.next().unwrap_or_default();
    let messages = stored_messages(&mut lines, usize::MAX);
    deliver(store, channel, connection_id, id, messages).await?;
    Ok(())
}

/// The publications of a `BATCH2_MARK` announcement (after the mark): each one's connectionId,
/// id and messages, serials consecutive from the announced first position.
fn batch2_publications(batch: &str) -> Vec<(&str, &str, Vec<Message>)> {
    let mut lines = batch.split('\n');
    let epoch = lines.next().unwrap_or_default();
    let first: Option<u64> = lines.next().and_then(|n| n.parse().ok());
    let k: usize = lines.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let Some(mut position) = first else {
        tracing::warn!("unreadable batch announcement");
        return Vec::new();
    };
    let mut heads = Vec::with_capacity(k);
    for _ in 0..k {
        let (Some(connection_id), Some(id), Some(n)) = (lines.next(), lines.next(), lines.next())
        else {
            tracing::warn!("unreadable batch announcement");
            return Vec::new();
        };
        heads.push((connection_id, id, n.parse::<usize>().unwrap_or(0)));
    }
    heads
        .into_iter()
        .map(|(connection_id, id, n)| {
            let mut messages = Vec::with_capacity(n);
            for _ in 0..n {
                let (Some(_b), Some(body)) = (lines.next(), lines.next()) else {
                    break;
                };
                if let Some(message) = stored_message(&format!("{epoch}-{position}"), body) {
                    messages.push(message);
                }
                position += 1;
            }
            (connection_id, id, messages)
        })
        .collect()
}

/// Up to `n` (stream id, body) pairs as messages.
fn stored_messages<'a>(lines: &mut impl Iterator<Item = &'a str>, n: usize) -> Vec<Message> {
    let mut messages = Vec::new();
    for _ in 0..n {
        let (Some(stream_id), Some(body)) = (lines.next(), lines.next()) else {
            break;
        };
        if let Some(message) = stored_message(stream_id, body) {
            messages.push(message);
        }
    }
    messages
}

/// Hands one announced publication to the node; on a gap in its serials, catches the channel
/// up from the store instead and returns false (the rest of the announcement is in it).
async fn deliver(
    store: &StreamLoader,
    channel: &str,
    connection_id: &str,
    id: &str,
    messages: Vec<Message>,
) -> redis::RedisResult<bool> {
    if let Some(published) = messages.first().and_then(|m| m.timestamp) {
        ::metrics::histogram!("realtime_bus_lag_seconds")
            .record(protocol::now_ms().saturating_sub(published) as f64 / 1000.0);
    }
    match store.events.deliver(Arrival {
        channel,
        messages,
        connection_id: Some(connection_id).filter(|c| !c.is_empty()),
        id: Some(id).filter(|i| !i.is_empty()).map(str::to_owned),
    }) {
        Ok(true) => Ok(true),
        Ok(false) => {
            tracing::info!(%channel, "gap in pub/sub serials; catching up from the store");
            ::metrics::counter!("realtime_bus_gaps_total").increment(1);
            // The link is live: this node heard everything Redis announced on the channel.
            store.catch_up(channel, true, false).await?;
            Ok(false)
        }
        Err(error) => {
            tracing::warn!(%channel, message = %error.message, "bus delivery failed");
            Ok(true)
        }
    }
}
