//! The Redis bus (`--redis`): how several processes act as one.
//!
//! A publish is stored and announced by one Lua script: each message is appended to the
//! channel's stream (`XADD`, capped) and the batch is `PUBLISH`ed with the stream ids, so pub/sub
//! order is stream order and the stream id is the message serial on every node. Only after the
//! script returns does the publisher get its ACK or 201; if Redis is unreachable the publish
//! fails loudly. Client-chosen message ids are claimed with `SET NX` in the same script, so
//! idempotency holds across nodes.
//!
//! A node subscribes to a channel's pub/sub topic only while it has local subscribers
//! (reference counted), on one dedicated connection, and delivers what arrives through
//! `Hub::deliver` — the publishing node included, so there is one delivery path.
//!
//! When the pub/sub link drops, the node reconnects, resubscribes and back-fills every channel
//! from its stream; a self-probe through Redis drives readiness.
//!
//! Catching up reads the whole gap after the node's last serial (paged, bounded by what the
//! stream can hold), so a long outage costs reads, not messages. Whether continuity holds:
//! - Same epoch, stored contiguously from the node's position: it holds; the log is extended.
//! - Same epoch with entries missing (trimmed, or lost in a fail-over): what exists is
//!   delivered and subscribers get 90003 where the hole is; the log restarts after it.
//! - A new epoch (Redis came back empty, `n` from 1): the old epoch ended with what this node
//!   has if its link was live right up to the drop (it heard its probe recently, and Redis writes
//!   a PUBLISH to subscribers in the same event-loop pass as the publishing script's reply, so it
//!   received everything Redis acknowledged). Then there is no 90003, the new epoch is delivered
//!   from its first message and the log keeps the old entries, so a client resuming from an
//!   old-epoch serial still resumes. If the link was already down, the channel was joined since,
//!   or the new epoch lacks its first messages, it is 90003.
//! - The store behind the node (same epoch but a lower position or another message at the
//!   node's serial, or an older epoch: Redis restored from an older snapshot): serials would be
//!   reused, so the node moves the channel to a fresh epoch, marking the abandoned one (`p`) so
//!   every node holding it tells 90003 too.
//!
//! Presence members and resume records Redis lost with an empty restart are written back by
//! the nodes holding them (`presence::reseed`); a catch-up meanwhile keeps members missing from
//! the store until every node has had a lease tick to do so.
//!
//! Two Redis restarts within one reconnect of the link (messages only the middle instance held)
//! cannot be told apart from one.
//!
//! On a Redis Cluster (`redis+cluster://`) the same holds shard by shard: a channel's keys and
//! topic share its hash tag, so each script touches one slot; topics are `SPUBLISH`ed and
//! `SSUBSCRIBE`d on the master owning that slot (`shards.rs`); node-level keys (leases, resume
//! records) are written one key per command, never in a pipeline across slots.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

mod auth;
mod backend;
mod commands;
mod connections;
mod events;
mod nodes;
mod presence;
mod shards;
mod webhooks;

pub(crate) use backend::{Bus, MemoryBus};

use futures_util::StreamExt;
use protocol::{ErrorCode, ErrorInfo, Message};
use tokio::sync::{mpsc, watch};

use crate::config::RedisTarget;
use crate::config::Retention;
use crate::hub::Serials;
use commands::Commands;

/// Longest a Redis connect or command may take before the caller is told it failed.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a channel's serial counter outlives its last publish, so a client resuming after a
/// quiet spell is still told exactly whether it missed anything.
const META_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Keys of one channel. All share the hash tag `{channel}`, so they live on one Redis Cluster
/// slot and one script can touch them all.
struct Keys {
    stream: String,
    meta: String,
    claims: String,
}

fn keys(channel: &str) -> Keys {
    Keys {
        stream: format!("rt:{{{channel}}}:log"),
        meta: format!("rt:{{{channel}}}:meta"),
        claims: format!("rt:{{{channel}}}:id:"),
    }
}

/// Stores and announces a publication. The channel's serials are `epoch-n` with `n` consecutive
/// (the meta hash holds both), used as the stream ids, so a node that sees `n` jump knows it
/// missed something. The stream is capped by length (`MAXLEN ~`) and by age (the oldest
/// entries past the age are dropped as publishes come).
/// KEYS: stream, topic, claim prefix, meta. ARGV: connectionId, protocol message id, max length,
/// max age ms, meta ttl ms, then (claim, body) per message.
const PUBLISH_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('HGET', KEYS[4], 'e')
if not epoch then
  epoch = tostring(now)
  redis.call('HSET', KEYS[4], 'e', epoch, 'n', 0)
end
local n = (#ARGV - 5) / 2
local serials = {}
local out = { ARGV[1], ARGV[2] }
for i = 1, n do
  local claim = ARGV[4 + 2 * i]
  local body = ARGV[5 + 2 * i]
  local fresh = true
  if claim ~= '' then
    fresh = redis.call('SET', KEYS[3] .. claim, '1', 'NX', 'PX', 120000)
  end
  if fresh then
    local seq = redis.call('HINCRBY', KEYS[4], 'n', 1)
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], epoch .. '-' .. seq, 'm', body, 't', now)
    serials[i] = id
    table.insert(out, id)
    table.insert(out, body)
  else
    serials[i] = ''
  end
end
local max_age = tonumber(ARGV[4])
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 16)) do
  if tonumber(entry[2][4]) + max_age > now then break end
  redis.call('XDEL', KEYS[1], entry[1])
end
redis.call('PEXPIRE', KEYS[1], max_age + 60000)
redis.call('PEXPIRE', KEYS[4], ARGV[5])
if #out > 2 then
  redis.call('PUBLISH', KEYS[2], table.concat(out, '\n'))
end
return serials
"#;

/// Reads a channel's position and stored entries in one step (creating its epoch if the
/// channel is new, so the first publish continues from the floor given here). With no known
/// position: the newest `count` entries, newest first. Otherwise the stored entries from the
/// known position on (inclusive, so the node can check the store still has its last message),
/// or from the start of the current epoch when it is not the known one, oldest first, at most
/// `count`; never more than `limit` back from the position (the caller pages on).
/// KEYS: stream, meta, members. ARGV: count, meta ttl ms, known epoch ('' for none), known n,
/// limit.
const LOAD_SCRIPT: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  local t = redis.call('TIME')
  epoch = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('HSET', KEYS[2], 'e', epoch, 'n', 0)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local n = tonumber(redis.call('HGET', KEYS[2], 'n'))
local entries
if ARGV[3] == '' then
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1])
else
  local from = 0
  if epoch == ARGV[3] then from = tonumber(ARGV[4]) end
  from = math.max(from, n - tonumber(ARGV[5]))
  entries = redis.call('XRANGE', KEYS[1], epoch .. '-' .. from, '+', 'COUNT', ARGV[1])
end
local rolled_back = redis.call('HGET', KEYS[2], 'p') or ''
return { epoch, n, rolled_back, entries, redis.call('HGETALL', KEYS[3]) }
"#;

/// Moves a channel whose store was rolled back (a Redis restored from an older snapshot: its
/// position is behind what nodes already delivered) to a fresh epoch, so no serial is handed
/// out twice, and marks the abandoned epoch (`p`) so every node holding it tells its
/// subscribers. Only if the channel is still in that epoch (another node may have done it).
/// KEYS: meta. ARGV: the rolled-back epoch, the lowest new epoch, meta ttl ms.
const ROLL_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], 'e') ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = string.format('%.0f', math.max(now, tonumber(ARGV[2])))
redis.call('HSET', KEYS[1], 'e', epoch, 'n', 0, 'p', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

enum Interest {
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

pub(crate) struct RedisBus {
    commands: Commands,
    script: redis::Script,
    /// Channel -> local interest; shared with the pub/sub task, which resubscribes from it.
    interest: InterestMap,
    control: mpsc::UnboundedSender<Interest>,
    probe: Probe,
    /// This process in the cluster (unique per start): holds a lease, tags its members.
    node: String,
    timing: crate::config::Timing,
    presence_script: redis::Script,
    rehome_script: redis::Script,
    /// Resume-record writes, applied in order by one task.
    records: mpsc::Sender<connections::RecordOp>,
    /// The gateway, for the reaper to tell its webhooks about a dead node's members.
    gateway: Weak<crate::Inner>,
    /// This node has held its lease at least once: finding it gone after that means Redis lost
    /// the node's state.
    leased: std::sync::atomic::AtomicBool,
}

/// The node's own probe topic: published every `PROBE_INTERVAL` through the command
/// connection, heard on the pub/sub link. Hearing it recently is what "the bus works" means.
#[derive(Clone)]
struct Probe {
    topic: String,
    seen_at_ms: Arc<AtomicU64>,
}

/// How often the bus probes itself, and how stale the last echo may be for the node to count
/// as ready.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
const PROBE_STALE_MS: u64 = 3_000;

async fn send_probes(commands: Commands, topic: String, inner: Weak<crate::Inner>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tick.tick().await;
        if inner.strong_count() == 0 {
            return;
        }
        let sent: redis::RedisResult<i64> = commands
            .query(redis::cmd("PUBLISH").arg(&topic).arg("1").to_owned())
            .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "bus probe not sent");
        }
    }
}

const TOPIC_PREFIX: &str = "rt:ch:";

fn topic(channel: &str) -> String {
    format!("{TOPIC_PREFIX}{{{channel}}}")
}

fn channel_of(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(TOPIC_PREFIX)?
        .strip_prefix('{')?
        .strip_suffix('}')
}

/// `1700000000000-5` (a stream id) as our fixed-width serial, so serials compare as strings.
fn serial_of(stream_id: &str) -> Option<String> {
    let (ms, seq) = stream_id.split_once('-')?;
    Some(format!(
        "{:012x}-{:010x}",
        ms.parse::<u64>().ok()?,
        seq.parse::<u64>().ok()?
    ))
}

impl RedisBus {
    /// Connects (commands and pub/sub) and starts the delivery task, which hands arriving
    /// publications to the hub.
    pub(crate) async fn connect(
        target: &RedisTarget,
        server_id: &str,
        timing: crate::config::Timing,
        inner: Weak<crate::Inner>,
    ) -> Result<Arc<RedisBus>, String> {
        let node = format!("{server_id}-{:08x}", rand::random::<u32>());
        // Bounded everywhere: a publish fails fast (NACK / 503) rather than wait on a dead Redis.
        let commands = Commands::connect(target).await?;
        let mut links = match target {
            RedisTarget::Node(url) => LinkSource::Node(
                redis::Client::open(url.as_str()).map_err(|e| format!("redis URL: {e}"))?,
            ),
            RedisTarget::Cluster(seeds) => LinkSource::Cluster(
                shards::Shards::new(seeds).map_err(|e| format!("redis cluster URL: {e}"))?,
            ),
        };
        let pubsub = links
            .open()
            .await
            .map_err(|e| format!("cannot open the Redis pub/sub link: {e}"))?;
        let (control, requests) = mpsc::unbounded_channel();
        let interest: InterestMap = Arc::new(Mutex::new(HashMap::new()));
        let probe = Probe {
            topic: format!("rt:probe:{}", rand::random::<u64>()),
            seen_at_ms: Arc::new(AtomicU64::new(protocol::now_ms())),
        };
        tokio::spawn(send_probes(
            commands.clone(),
            probe.topic.clone(),
            inner.clone(),
        ));
        let store = Store {
            commands: commands.clone(),
            load: redis::Script::new(LOAD_SCRIPT),
            roll: redis::Script::new(ROLL_SCRIPT),
        };
        tokio::spawn(run_pubsub(
            links,
            pubsub,
            requests,
            interest.clone(),
            store,
            Topics {
                probe: probe.clone(),
                control: connections::control_topic(&node),
            },
            inner.clone(),
        ));
        let lease = timing.node_lease;
        let sharded = commands.sharded();
        let (records, record_ops) = mpsc::channel(connections::RECORD_QUEUE);
        tokio::spawn(connections::write_records(commands.clone(), record_ops));
        let bus = Arc::new(RedisBus {
            records,
            commands,
            script: announcing(PUBLISH_SCRIPT, sharded),
            interest,
            control,
            probe,
            node,
            timing,
            presence_script: announcing(presence::PRESENCE_SCRIPT, sharded),
            rehome_script: redis::Script::new(presence::REHOME_SCRIPT),
            gateway: inner,
            leased: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(presence::keep_lease(Arc::downgrade(&bus), lease));
        Ok(bus)
    }

    /// Stores and announces; returns each message's serial (`None` for an idempotent repeat).
    pub(crate) async fn publish(
        &self,
        channel: &str,
        retention: Retention,
        messages: &[Message],
        client_ids: &[bool],
        connection_id: Option<&str>,
        id: Option<&str>,
    ) -> Result<Serials, ErrorInfo> {
        let keys = keys(channel);
        let keys = [keys.stream, topic(channel), keys.claims, keys.meta];
        let max_age = retention.max_age.as_millis() as u64;
        let mut args = vec![
            connection_id.unwrap_or_default().to_owned(),
            id.unwrap_or_default().to_owned(),
            retention.max_messages.to_string(),
            max_age.to_string(),
            meta_ttl(retention).to_string(),
        ];
        for (index, message) in messages.iter().enumerate() {
            let claim = match (client_ids.get(index), &message.id) {
                (Some(true), Some(id)) => id.clone(),
                _ => String::new(),
            };
            // JSON cannot carry bytes: binary data travels base64'd with its encoding saying so.
            let mut safe = message.clone();
            safe.make_json_safe();
            let body = serde_json::to_string(&safe).map_err(|e| {
                ErrorCode::Internal.info(format!("could not encode a message: {e}"))
            })?;
            args.push(claim);
            args.push(body);
        }
        let ids: Vec<String> = self
            .commands
            .invoke(self.script.clone(), keys.into(), args)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "publish through Redis failed");
                ErrorCode::ServiceUnavailable
                    .info("the message bus (Redis) is unavailable; not published")
            })?;
        Ok(ids.iter().map(|id| serial_of(id)).collect())
    }

    /// Whether this node heard its own probe through Redis recently: Redis reachable and the
    /// pub/sub link alive.
    pub(crate) fn healthy(&self) -> bool {
        let seen = self.probe.seen_at_ms.load(Ordering::Acquire);
        protocol::now_ms().saturating_sub(seen) < PROBE_STALE_MS
    }

    /// One more local listener on `channel`. The first one subscribes the node and catches the
    /// channel up from the store; every caller waits until that is done, so an attach's replay
    /// (resume, rewind) and a history read see the whole log. On an error the caller must still
    /// `leave`.
    pub(crate) async fn join(&self, channel: &str) -> Result<(), ErrorInfo> {
        let mut ready = {
            let mut interest = self.interest.lock().unwrap_or_else(|p| p.into_inner());
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
            Err(ErrorCode::ServiceUnavailable
                .info("the message bus (Redis) did not answer; try again"))
        }
    }

    /// One local listener fewer; the last one unsubscribes the node.
    pub(crate) fn leave(&self, channel: &str) {
        let mut interest = self.interest.lock().unwrap_or_else(|p| p.into_inner());
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

/// A script announcing on a channel's topic: `PUBLISH` on one Redis, `SPUBLISH` on a cluster
/// (the topic shares the channel's slot, so the shard storing it is the one announcing it).
fn announcing(script: &str, sharded: bool) -> redis::Script {
    if sharded {
        redis::Script::new(&script.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'"))
    } else {
        redis::Script::new(script)
    }
}

fn meta_ttl(retention: Retention) -> u64 {
    META_TTL_MS.max(2 * retention.max_age.as_millis() as u64 + 60_000)
}

/// Reads channels' stored logs (commands connection).
struct Store {
    commands: Commands,
    load: redis::Script,
    roll: redis::Script,
}

/// Stream entries read per command when a catch-up pages through a gap.
const CATCH_UP_PAGE: usize = 500;

/// Most attempts at catching a rolled-back channel up (each moves it to a fresh epoch unless
/// another node just did); beyond it the link reconnects and tries again.
const ROLL_ATTEMPTS: usize = 3;

/// What this node last delivered on a channel, as the store names it.
struct Known {
    epoch: u64,
    n: u64,
    /// The id of that message, when the node's log still holds it.
    id: Option<String>,
}

impl Store {
    /// The channel's floor and stored messages (oldest first): the newest the log keeps when
    /// this node knows nothing of the channel, else everything after its known position (paged,
    /// bounded by twice what the stream keeps: the stream is capped by length and age).
    async fn load(
        &self,
        channel: &str,
        retention: Retention,
        known: Option<&Known>,
    ) -> redis::RedisResult<Stored> {
        let keys = keys(channel);
        let stream = keys.stream.clone();
        let limit = retention.max_messages.saturating_mul(2).max(CATCH_UP_PAGE);
        let count = if known.is_some() {
            CATCH_UP_PAGE
        } else {
            retention.max_messages
        };
        let (known_epoch, known_n) =
            known.map_or((String::new(), 0), |k| (k.epoch.to_string(), k.n));
        let (epoch, n, rolled_back, mut entries, members): (
            u64,
            u64,
            String,
            Vec<StreamEntry>,
            Vec<String>,
        ) = self
            .commands
            .invoke(
                self.load.clone(),
                vec![keys.stream, keys.meta, presence::members_key(channel)],
                vec![
                    count.to_string(),
                    meta_ttl(retention).to_string(),
                    known_epoch,
                    known_n.to_string(),
                    limit.to_string(),
                ],
            )
            .await?;
        if known.is_none() {
            entries.reverse();
        } else {
            let mut page_len = entries.len();
            while page_len == CATCH_UP_PAGE
                && entries.len() < limit
                && entries
                    .last()
                    .and_then(|(id, _)| seq_in(id, epoch))
                    .is_some_and(|seq| seq < n)
            {
                let after = entries
                    .last()
                    .map(|(id, _)| format!("({id}"))
                    .unwrap_or_default();
                let page: Vec<StreamEntry> = self
                    .commands
                    .query(
                        redis::cmd("XRANGE")
                            .arg(&stream)
                            .arg(after)
                            .arg("+")
                            .arg("COUNT")
                            .arg(CATCH_UP_PAGE)
                            .to_owned(),
                    )
                    .await?;
                page_len = page.len();
                entries.extend(page);
            }
        }
        // Only the current epoch up to the position read; anything newer comes on the link.
        entries.retain(|(id, _)| seq_in(id, epoch).is_some_and(|seq| seq <= n));
        let want = if known.is_some() {
            entries.len()
        } else {
            retention.max_messages
        };
        let (floor, _) = contiguous_tail(epoch, n, &entries, want);
        let messages: Vec<Message> = entries
            .iter()
            .filter_map(|(id, body)| stored_message(id, body_of(body)?))
            .collect();
        let rolled_back_epoch = rolled_back.parse::<u64>().ok();
        let rolled_back = known.is_some_and(|known| {
            // Another message stored at the node's last serial: the store went back and
            // handed that serial out again.
            let replaced = || {
                let at_known = format!("{}-{}", known.epoch, known.n);
                let stored = entries
                    .first()
                    .filter(|(id, _)| *id == at_known)
                    .and_then(|(id, body)| stored_message(id, body_of(body)?));
                match (stored, known.id.as_deref()) {
                    (Some(stored), Some(ours)) => stored.id.as_deref() != Some(ours),
                    _ => false,
                }
            };
            epoch < known.epoch || (epoch == known.epoch && (n < known.n || replaced()))
        });
        let members = presence::parse_members(&members)
            .into_iter()
            .map(|(_, member)| member)
            .collect();
        Ok(Stored {
            epoch,
            floor,
            messages,
            members,
            rolled_back,
            known_epoch_abandoned: known
                .is_some_and(|known| rolled_back_epoch == Some(known.epoch)),
        })
    }

    /// Catches a channel up from the store: what this node missed delivered, its log extended
    /// or, if messages were lost, replaced. `heard_everything`: this node's link was live for
    /// the channel until now or until Redis dropped it (it received everything Redis
    /// announced before dying: Redis writes a PUBLISH to subscribers in the same event-loop
    /// pass as the publishing script's reply), so an epoch Redis lost (it came back empty)
    /// ended with what this node has.
    async fn catch_up(
        &self,
        inner: &Arc<crate::Inner>,
        channel: &str,
        heard_everything: bool,
        after_reconnect: bool,
    ) -> redis::RedisResult<()> {
        ::metrics::counter!("realtime_bus_catch_ups_total").increment(1);
        let retention = inner.hub.retention_for(channel);
        let known = inner.hub.last_serial(channel).and_then(|(serial, id)| {
            let (epoch, n) = crate::hub::log::parts(&serial)?;
            Some(Known { epoch, n, id })
        });
        let mut attempts = 0;
        let stored = loop {
            let stored = self.load(channel, retention, known.as_ref()).await?;
            let Some(known) = known.as_ref().filter(|_| stored.rolled_back) else {
                break stored;
            };
            attempts += 1;
            if attempts > ROLL_ATTEMPTS {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::TryAgain,
                    "the channel's store keeps going back",
                )));
            }
            tracing::warn!(%channel, "the store is behind what this node delivered (restored from an older snapshot?); moving the channel to a new epoch");
            ::metrics::counter!("realtime_bus_rollbacks_total").increment(1);
            let lowest = stored.epoch.max(known.epoch) + 1;
            self.commands
                .invoke::<i64>(
                    self.roll.clone(),
                    vec![keys(channel).meta],
                    vec![
                        stored.epoch.to_string(),
                        lowest.to_string(),
                        meta_ttl(retention).to_string(),
                    ],
                )
                .await?;
        };
        let old_epoch_complete = heard_everything && !stored.known_epoch_abandoned;
        inner
            .hub
            .catch_up(channel, stored.floor, stored.messages, old_epoch_complete);
        // After the link came back, the store may have come back empty: members it lacks may
        // be written back by their nodes in a moment. Any other catch-up trusts the store.
        if inner
            .hub
            .sync_members(channel, stored.members, !after_reconnect)
        {
            self.recheck_members(inner, channel);
        }
        Ok(())
    }

    /// After a reconnect, members held here but missing from the store either left while this
    /// node could not hear it, or the store came back empty and their nodes have not written them back yet (each
    /// does on its next lease tick: `presence::reseed`). Looked at again once every node has had
    /// a tick, then they leave; until then nobody sees them flap.
    fn recheck_members(&self, inner: &Arc<crate::Inner>, channel: &str) {
        let wait = inner.config.timing.node_lease * 3 / 2;
        let inner = Arc::downgrade(inner);
        let commands = self.commands.clone();
        let channel = channel.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let mut read = redis::cmd("HGETALL");
            read.arg(presence::members_key(&channel));
            let flat: Vec<String> = match commands.query(read).await {
                Ok(flat) => flat,
                Err(error) => {
                    tracing::debug!(%channel, %error, "members not re-read; the next catch-up will");
                    return;
                }
            };
            let Some(inner) = inner.upgrade() else { return };
            if inner.hub.is_held(&channel) {
                let members = presence::parse_members(&flat)
                    .into_iter()
                    .map(|(_, member)| member)
                    .collect();
                inner.hub.sync_members(&channel, members, true);
            }
        });
    }
}

/// The position of stream entry `id` within `epoch`, if it belongs to it.
fn seq_in(id: &str, epoch: u64) -> Option<u64> {
    let (e, seq) = id.split_once('-')?;
    (e.parse::<u64>().ok()? == epoch)
        .then(|| seq.parse::<u64>().ok())
        .flatten()
}

/// Where the stored log can prove continuity from: the newest run of consecutive serials of
/// the current epoch that ends at the channel's position `n`, at most `want` long. Returns the
/// floor (the serial just before that run) and the index in `entries` (oldest first) where the
/// run starts. Anything older, or a run that does not reach `n` (entries lost), is not trusted.
fn contiguous_tail(epoch: u64, n: u64, entries: &[StreamEntry], want: usize) -> (String, usize) {
    let seq_of = |(id, _): &StreamEntry| seq_in(id, epoch);
    let mut start = entries.len();
    let mut expected = n;
    while start > 0 && entries.len() - start < want {
        match seq_of(&entries[start - 1]) {
            Some(seq) if seq == expected && seq > 0 => {
                start -= 1;
                expected -= 1;
            }
            _ => break,
        }
    }
    (crate::hub::log::serial(epoch, expected), start)
}

struct Stored {
    /// The channel's current epoch in the store.
    epoch: u64,
    floor: String,
    messages: Vec<Message>,
    members: Vec<protocol::PresenceMessage>,
    /// The store is behind what this node delivered in the same (or a later) epoch.
    rolled_back: bool,
    /// The epoch this node knows was rolled back and abandoned (by it or another node).
    known_epoch_abandoned: bool,
}

/// One stream entry: its id and its flat field/value list (`m` body, `t` time).
type StreamEntry = (String, Vec<String>);

/// The message body (`m`) of a stream entry's fields.
fn body_of(fields: &[String]) -> Option<&str> {
    fields
        .chunks(2)
        .find(|pair| pair[0] == "m")?
        .get(1)
        .map(String::as_str)
}

/// The node's own topics on the pub/sub link besides channels.
struct Topics {
    probe: Probe,
    /// Requests from other nodes (release a connection being resumed there).
    control: String,
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

/// Where pub/sub links come from: one Redis, or the masters of a cluster.
enum LinkSource {
    Node(redis::Client),
    Cluster(shards::Shards),
}

impl LinkSource {
    /// A fresh link, bounded (a cluster's takes reading the slot map and a connection per
    /// master, each bounded, so the whole is allowed a few bounds).
    async fn open(&mut self) -> redis::RedisResult<Link> {
        let timed_out = || redis::RedisError::from((redis::ErrorKind::IoError, "timed out"));
        match self {
            LinkSource::Node(client) => {
                let pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
                    .await
                    .map_err(|_| timed_out())??;
                let (sink, stream) = pubsub.split();
                Ok(Link::Node { sink, stream })
            }
            LinkSource::Cluster(shards) => tokio::time::timeout(3 * REDIS_TIMEOUT, shards.open())
                .await
                .map_err(|_| timed_out())?
                .map(Link::Sharded),
        }
    }
}

/// The node's pub/sub link: one connection (`SUBSCRIBE`), or one per cluster master with
/// channel topics on their shard (`SSUBSCRIBE`).
enum Link {
    Node {
        sink: redis::aio::PubSubSink,
        stream: redis::aio::PubSubStream,
    },
    Sharded(shards::Links),
}

impl Link {
    /// How many connections the link has; each must hear the probe.
    fn count(&self) -> usize {
        match self {
            Link::Node { .. } => 1,
            Link::Sharded(links) => links.count(),
        }
    }

    /// A node-level topic (probe, control), on every connection or on one.
    async fn listen(&mut self, topic: &str, everywhere: bool) -> redis::RedisResult<()> {
        match self {
            Link::Node { sink, .. } => sink.subscribe(topic).await,
            Link::Sharded(links) => links.listen(topic, everywhere).await,
        }
    }

    /// One SUBSCRIBE for all of `channels` on a single server; on a cluster, one SSUBSCRIBE
    /// each (a sharded subscribe cannot span slots).
    async fn subscribe_all(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        match self {
            Link::Node { sink, .. } => {
                sink.subscribe(channels.iter().map(|c| topic(c)).collect::<Vec<_>>())
                    .await
            }
            Link::Sharded(links) => {
                for channel in channels {
                    links.subscribe(&topic(channel)).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe_all(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        match self {
            Link::Node { sink, .. } => {
                sink.unsubscribe(channels.iter().map(|c| topic(c)).collect::<Vec<_>>())
                    .await
            }
            Link::Sharded(links) => {
                for channel in channels {
                    links.unsubscribe(&topic(channel)).await?;
                }
                Ok(())
            }
        }
    }

    /// The next message and the connection it came on; `None`: the link is lost.
    async fn next(&mut self) -> Option<(usize, redis::Msg)> {
        match self {
            Link::Node { stream, .. } => stream.next().await.map(|message| (0, message)),
            Link::Sharded(links) => links.next().await,
        }
    }
}

/// When each of the link's connections last heard the probe; the node's probe time is the
/// oldest of them, once every one has heard it.
struct ProbeEchoes {
    heard_at_ms: Vec<u64>,
    /// Since when the link is up.
    up_at_ms: u64,
    /// A sharded link is watched (`stale`); a single connection's loss shows as its stream
    /// ending.
    watched: bool,
}

impl ProbeEchoes {
    fn new(link: &Link) -> ProbeEchoes {
        ProbeEchoes {
            heard_at_ms: vec![0; link.count()],
            up_at_ms: protocol::now_ms(),
            watched: matches!(link, Link::Sharded(_)),
        }
    }

    fn heard(&mut self, connection: usize, probe: &Probe) {
        if let Some(at) = self.heard_at_ms.get_mut(connection) {
            *at = protocol::now_ms();
        }
        if self.heard_at_ms.iter().all(|at| *at > 0) {
            let oldest = self.heard_at_ms.iter().copied().min().unwrap_or_default();
            probe.seen_at_ms.store(oldest, Ordering::Release);
        }
    }

    /// Whether every connection heard the probe recently: the link was carrying everything.
    fn fresh(&self) -> bool {
        let now = protocol::now_ms();
        self.heard_at_ms
            .iter()
            .all(|at| *at > 0 && now.saturating_sub(*at) < PROBE_STALE_MS)
    }

    /// Whether some connection of a sharded link has not heard the probe for a while (it may
    /// be silently dead, or its master gone).
    fn stale(&self) -> bool {
        let now = protocol::now_ms();
        self.watched
            && self
                .heard_at_ms
                .iter()
                .any(|at| now.saturating_sub((*at).max(self.up_at_ms)) > LINK_STALE_MS)
    }
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

/// How long a sharded link's connection may go without hearing the probe before the link is
/// rebuilt.
const LINK_STALE_MS: u64 = 2 * PROBE_STALE_MS;

/// The pub/sub link: subscriptions as interest asks, deliveries into the hub. A new
/// subscription is caught up from the store right after SUBSCRIBE, before anything later is
/// read from the link, so nothing racing the subscription is missed. When the link drops it
/// reconnects (with backoff), resubscribes every channel with local interest and catches each
/// up, so a Redis restart or network blip never leaves a node silently deaf. A publication
/// whose serial does not follow on from the last one here (a lost pub/sub message) makes the
/// node catch that channel up too.
async fn run_pubsub(
    mut source: LinkSource,
    first: Link,
    mut requests: mpsc::UnboundedReceiver<Interest>,
    interest: InterestMap,
    store: Store,
    topics: Topics,
    inner: Weak<crate::Inner>,
) {
    let probe = &topics.probe;
    let mut first = Some(first);
    let mut backoff = std::time::Duration::from_millis(100);
    // Channels this node heard everything on until the last link dropped (see
    // `Store::catch_up`); emptied by anything that may have lost a message since.
    let mut heard_everything: HashSet<String> = HashSet::new();
    loop {
        let mut link = match first.take() {
            Some(link) => link,
            None => {
                if inner.strong_count() == 0 {
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
        let Some(strong) = inner.upgrade() else {
            return;
        };
        // Announcements are heard from here on; what was missed while the link was down (or
        // before this process started) is in the set.
        tokio::spawn(
            crate::Gateway {
                inner: strong.clone(),
            }
            .reload_revocations(),
        );
        let mut caught_up = true;
        for channel in &channels {
            let heard = heard_everything.contains(channel);
            if let Err(error) = store.catch_up(&strong, channel, heard, true).await {
                tracing::warn!(%channel, %error, "catch-up after reconnect failed");
                caught_up = false;
                break;
            }
            mark_ready(&interest, channel);
        }
        drop(strong);
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
                    let Some(inner) = inner.upgrade() else { return };
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
                        result = store.catch_up(&inner, channel, false, false).await;
                        if result.is_ok() {
                            mark_ready(&interest, channel);
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
                            heard_everything = caught_up_channels(&interest);
                        }
                        break;
                    };
                    if message.get_channel_name() == probe.topic {
                        echoes.heard(connection, probe);
                        continue;
                    }
                    if message.get_channel_name() == auth::AUTH_TOPIC {
                        let Some(inner) = inner.upgrade() else { return };
                        let revocations = message
                            .get_payload::<String>()
                            .ok()
                            .and_then(|payload| auth::parse_announcement(&payload));
                        let gateway = crate::Gateway { inner };
                        for revocation in revocations.unwrap_or_default() {
                            gateway.apply_revocation(revocation);
                        }
                        continue;
                    }
                    if message.get_channel_name() == topics.control {
                        let Some(inner) = inner.upgrade() else { return };
                        if let Ok(key) = message.get_payload::<String>() {
                            tokio::spawn(crate::Gateway { inner }.release(key));
                        }
                        continue;
                    }
                    let Some(inner) = inner.upgrade() else { return };
                    if let Err(error) = on_publication(&inner, &store, &message).await {
                        tracing::warn!(%error, "catch-up after a gap failed; reconnecting");
                        break;
                    }
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

async fn on_publication(
    inner: &Arc<crate::Inner>,
    store: &Store,
    message: &redis::Msg,
) -> redis::RedisResult<()> {
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
            Ok(events) => inner.hub.apply_presence(channel, events),
            Err(error) => tracing::warn!(%error, "unreadable presence on the bus"),
        }
        return Ok(());
    }
    let mut lines = payload.split('\n');
    let connection_id = lines.next().filter(|c| !c.is_empty()).map(str::to_owned);
    let id = lines.next().filter(|i| !i.is_empty()).map(str::to_owned);
    let mut messages = Vec::new();
    while let (Some(stream_id), Some(body)) = (lines.next(), lines.next()) {
        if let Some(message) = stored_message(stream_id, body) {
            messages.push(message);
        }
    }
    if let Some(published) = messages.first().and_then(|m| m.timestamp) {
        ::metrics::histogram!("realtime_bus_lag_seconds")
            .record(protocol::now_ms().saturating_sub(published) as f64 / 1000.0);
    }
    match inner
        .hub
        .deliver(channel, messages, connection_id.as_deref(), id)
    {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::info!(%channel, "gap in pub/sub serials; catching up from the store");
            ::metrics::counter!("realtime_bus_gaps_total").increment(1);
            // The link is live: this node heard everything Redis announced on the channel.
            store.catch_up(inner, channel, true, false).await
        }
        Err(error) => {
            tracing::warn!(%channel, message = %error.message, "bus delivery failed");
            Ok(())
        }
    }
}

fn stored_message(stream_id: &str, body: &str) -> Option<Message> {
    match serde_json::from_str::<Message>(body) {
        Ok(mut message) => {
            message.serial = serial_of(stream_id);
            Some(message)
        }
        Err(error) => {
            tracing::warn!(%error, "unreadable bus message");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_become_fixed_width_serials_in_the_same_order() {
        let a = serial_of("1700000000000-9").unwrap();
        let b = serial_of("1700000000000-10").unwrap();
        let c = serial_of("1700000000001-0").unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a.len(), 23);
        assert!(serial_of("nope").is_none());
        assert_eq!(
            crate::hub::log::next(&a),
            Some(b),
            "consecutive within an epoch"
        );
    }

    fn entries(ids: &[&str]) -> Vec<StreamEntry> {
        ids.iter().map(|id| (id.to_string(), Vec::new())).collect()
    }

    #[test]
    fn the_trusted_log_is_the_newest_consecutive_run_reaching_the_position() {
        let serial = crate::hub::log::serial;
        // Whole since the start: floor before the first message.
        assert_eq!(
            contiguous_tail(7, 3, &entries(&["7-1", "7-2", "7-3"]), 10),
            (serial(7, 0), 0)
        );
        // A hole: only what follows it is trusted.
        assert_eq!(
            contiguous_tail(7, 4, &entries(&["7-1", "7-4"]), 10),
            (serial(7, 3), 1)
        );
        // The newest were lost: nothing is trusted, the floor is the position.
        assert_eq!(
            contiguous_tail(7, 5, &entries(&["7-1", "7-2"]), 10),
            (serial(7, 5), 2)
        );
        // Capped at what the log keeps.
        assert_eq!(
            contiguous_tail(7, 3, &entries(&["7-1", "7-2", "7-3"]), 2),
            (serial(7, 1), 1)
        );
        // Another epoch's leftovers are not ours; nothing stored at all.
        assert_eq!(
            contiguous_tail(9, 0, &entries(&["7-1"]), 10),
            (serial(9, 0), 1)
        );
    }
}
