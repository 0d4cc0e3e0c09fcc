//! Presence across nodes. Members live in one Redis hash per channel (field
//! `connectionId\nclientId`, value `holder\nmember JSON`), written and announced by one script,
//! so a node catching a channel up reads the member set and hears every change after it.
//!
//! A node's death is invisible to its clients, as on Ably: each node holds a lease; when one lapses
//! (the node died without a goodbye), one surviving node claims the reaping and orphans the dead
//! node's members instead of making them leave: their holder becomes `~orphan:<deadline>` (death
//! detected + the presence grace, or the connection's own `remainPresentFor`, found in
//! `rt:node:<node>:graces`), indexed in the cluster-wide sorted set `rt:orphans`. A client resuming
//! elsewhere within it has its members adopted (holder rewritten) and never seen to leave. Every
//! node sweeps the due orphans on its lease tick: a compare-and-delete script per channel removes
//! and announces those still orphaned, so a member leaves once however many nodes sweep, and never
//! after an adoption; the sweeper first marks the connection (`rt:left:<id>`) so a resume too late
//! to adopt anything re-enters. A connection that was already parked on the dead node gets the full
//! grace again from the death: its members stay a little longer than on a live node, which no
//! client can tell from a slow network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use protocol::PresenceMessage;

use super::RedisBackend;
use crate::backend::{BackendError, Result};

/// Starts a pub/sub payload carrying presence events (a message payload starts with a
/// connection id, which never holds this byte).
pub(super) const PRESENCE_MARK: &str = "\u{1}presence\n";

/// How long a members hash outlives its last write.
pub(super) const MEMBERS_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// KEYS: members hash, topic. ARGV: node, payload, ttl, then (op, field, member) per event.
pub(super) const PRESENCE_SCRIPT: &str = include_str!("scripts/presence.lua");

/// Gives a connection's members to `node` (a resumed connection now lives there), orphaned
/// ones included; returns the fields it rewrote. KEYS: members hash. ARGV: connection id, node.
pub(super) const REHOME_SCRIPT: &str = include_str!("scripts/rehome.lua");

/// Orphans the members `dead` still holds. KEYS: members hash. ARGV: dead node, then
/// (field, orphan holder) pairs. A member adopted meanwhile is left alone.
const ORPHAN_SCRIPT: &str = include_str!("scripts/orphan.lua");

/// Removes orphans still exactly as the sweeper read them and announces their LEAVEs in one
/// payload; returns the (1-based) positions of those that left. KEYS: members hash, topic.
/// ARGV: payload prefix, then (field, value read, LEAVE JSON) triples.
const SWEEP_SCRIPT: &str = include_str!("scripts/sweep.lua");

/// Drops swept index entries, unless orphaned again since (a later deadline). KEYS: the index.
/// ARGV: now, then entries.
const UNINDEX_SCRIPT: &str = include_str!("scripts/unindex.lua");

/// Index of orphaned members, score = when they leave; entries are `[channel, field]` JSON.
const ORPHANS_KEY: &str = "rt:orphans";

/// Holder of an orphaned member, followed by its deadline (ms since the epoch).
const ORPHAN_HOLDER: &str = "~orphan:";

/// Orphans swept per channel script and per tick at most; the rest wait for the next tick.
const SWEEP_BATCH: usize = 1000;

fn orphan_entry(channel: &str, field: &str) -> String {
    serde_json::to_string(&(channel, field)).unwrap_or_default()
}

/// Set once a connection's orphaned members were swept, so a late resume re-enters them.
fn swept_key(connection_id: &str) -> String {
    format!("rt:left:{connection_id}")
}

/// Connections on `node` with their own presence grace (`remainPresentFor`), in ms.
pub(super) fn graces_key(node: &str) -> String {
    format!("rt:node:{node}:graces")
}

pub(super) fn members_key(channel: &str) -> String {
    format!("rt:{{{channel}}}:presence")
}

pub(super) fn field(member: &PresenceMessage) -> String {
    format!(
        "{}\n{}",
        member.connection_id.as_deref().unwrap_or_default(),
        member.client_id.as_deref().unwrap_or_default()
    )
}

pub(super) fn node_channels_key(node: &str) -> String {
    format!("rt:node:{node}:channels")
}

/// The hash's (field, value) pairs with the holder split off: (field, holder, member JSON).
fn held(flat: &[String]) -> impl Iterator<Item = (&str, &str, &str)> {
    flat.chunks(2).filter_map(|pair| {
        let (holder, json) = pair.get(1)?.split_once('\n')?;
        Some((pair[0].as_str(), holder, json))
    })
}

/// Members read back from the hash: (holding node, member).
pub(super) fn parse_members(flat: &[String]) -> Vec<(String, PresenceMessage)> {
    held(flat)
        .filter_map(|(_, holder, json)| Some((holder.to_owned(), serde_json::from_str(json).ok()?)))
        .collect()
}

impl RedisBackend {
    /// Stores and announces presence events (already checked); every node, this one included,
    /// applies them when the announcement arrives.
    /// Encoded here; the returned write owns what it needs, so it may be spawned.
    pub(super) fn presence_write(
        &self,
        channel: &str,
        events: &[PresenceMessage],
    ) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
        let mut safe: Vec<PresenceMessage> = events.to_vec();
        for event in &mut safe {
            event.make_json_safe();
        }
        let payload = format!(
            "{PRESENCE_MARK}{}",
            serde_json::to_string(&safe).map_err(|source| BackendError::Encode {
                what: "presence",
                source,
            })?
        );
        let mut args = vec![self.node.clone(), payload, MEMBERS_TTL_MS.to_string()];
        for event in &safe {
            let leave = event.action == 3;
            let mut member = event.clone();
            member.action = 1;
            args.push(if leave { "leave" } else { "set" }.to_owned());
            args.push(field(event));
            args.push(if leave {
                String::new()
            } else {
                serde_json::to_string(&member).unwrap_or_default()
            });
        }
        let keys = [members_key(channel), super::subscriber::topic(channel)];
        let entering = safe.iter().any(|e| e.action != 3);
        let node_channels = node_channels_key(&self.node);
        let channel = channel.to_owned();
        let script = self.presence_script.clone();
        let commands = self.commands.clone();
        Ok(async move {
            commands
                .run(move |mut connection| {
                    Box::pin(async move {
                        if entering {
                            // Where this node has members, for whoever reaps it if it dies.
                            redis::cmd("SADD")
                                .arg(node_channels)
                                .arg(channel)
                                .query_async::<()>(&mut connection)
                                .await?;
                        }
                        let mut invocation = script.prepare_invoke();
                        invocation.key(&keys[0]).key(&keys[1]);
                        for arg in args {
                            invocation.arg(arg);
                        }
                        invocation.invoke_async::<()>(&mut connection).await
                    })
                })
                .await
                .map_err(|error| {
                    tracing::warn!(%error, "presence through Redis failed");
                    BackendError::bus_down("presence not changed")
                })
        })
    }

    /// Gives `connection_id`'s members on `channels` to this node (it resumed here), so they
    /// are neither reaped with the node it came from nor left as orphans. Returns false when a
    /// channel had none left to adopt.
    pub(super) async fn adopt_members(&self, connection_id: &str, channels: &[String]) -> bool {
        let mut every_channel = true;
        for channel in channels {
            let script = self.rehome_script.clone();
            let keys = vec![members_key(channel)];
            let args = vec![connection_id.to_owned(), self.node.clone()];
            let node_channels = redis::cmd("SADD")
                .arg(node_channels_key(&self.node))
                .arg(channel)
                .to_owned();
            let adopted: redis::RedisResult<Vec<String>> = async {
                self.commands.query::<()>(node_channels).await?;
                self.commands.invoke(script, keys, args).await
            }
            .await;
            match adopted {
                Ok(fields) if fields.is_empty() => every_channel = false,
                Ok(fields) => {
                    // Their index entries are stale now; the sweep would drop them too.
                    let mut unindex = redis::cmd("ZREM");
                    unindex.arg(ORPHANS_KEY);
                    for field in &fields {
                        unindex.arg(orphan_entry(channel, field));
                    }
                    if let Err(error) = self.commands.query::<()>(unindex).await {
                        tracing::debug!(%channel, %error, "adopted orphans not unindexed");
                    }
                }
                Err(error) => {
                    tracing::warn!(%channel, %error, "could not adopt a resumed connection's members");
                }
            }
        }
        every_channel
    }

    /// Whether `connection_id`'s orphaned members were swept (it came back too late).
    pub(super) async fn orphans_swept(&self, connection_id: &str) -> redis::RedisResult<bool> {
        self.commands
            .query(
                redis::cmd("EXISTS")
                    .arg(swept_key(connection_id))
                    .to_owned(),
            )
            .await
    }
}

/// One node claims the reaping of `dead` and orphans each member it held, until its grace
/// passes; `sweep_orphans` makes those still orphaned then leave.
pub(super) async fn reap(
    bus: &RedisBackend,
    dead: &str,
    lease: std::time::Duration,
) -> redis::RedisResult<()> {
    let hold = (lease.as_millis() as u64).max(5_000) * 3;
    let claimed: Option<String> = bus
        .commands
        .query(
            redis::cmd("SET")
                .arg(format!("rt:reap:{dead}"))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(hold)
                .to_owned(),
        )
        .await?;
    if claimed.is_none() {
        return Ok(());
    }
    let channels: Vec<String> = bus
        .commands
        .query(
            redis::cmd("SMEMBERS")
                .arg(node_channels_key(dead))
                .to_owned(),
        )
        .await?;
    let graces: HashMap<String, u64> = bus
        .commands
        .query(redis::cmd("HGETALL").arg(graces_key(dead)).to_owned())
        .await?;
    let now = protocol::now_ms();
    let deadline = |field: &str| {
        let connection_id = field.split('\n').next().unwrap_or_default();
        let grace = graces
            .get(connection_id)
            .map(|ms| Duration::from_millis(*ms))
            .unwrap_or(bus.timing.presence_grace)
            .min(bus.timing.connection_state_ttl);
        now + grace.as_millis() as u64
    };
    let mut orphaned = 0;
    for channel in &channels {
        let key = members_key(channel);
        let flat: Vec<String> = bus
            .commands
            .query(redis::cmd("HGETALL").arg(&key).to_owned())
            .await?;
        let orphans: Vec<(String, u64)> = held(&flat)
            .filter(|(_, holder, _)| *holder == dead)
            .map(|(field, _, _)| (field.to_owned(), deadline(field)))
            .collect();
        if orphans.is_empty() {
            continue;
        }
        // Indexed first: a reaper dying in between leaves an entry the sweep drops (and the
        // reaping to be redone), never an orphan no sweep finds.
        let mut index = redis::cmd("ZADD");
        index.arg(ORPHANS_KEY);
        for (field, deadline) in &orphans {
            index.arg(*deadline).arg(orphan_entry(channel, field));
        }
        bus.commands.query::<()>(index).await?;
        orphaned += orphans.len();
        let mut args = vec![dead.to_owned()];
        for (field, deadline) in orphans {
            args.push(field);
            args.push(format!("{ORPHAN_HOLDER}{deadline}"));
        }
        bus.commands
            .invoke::<()>(redis::Script::new(ORPHAN_SCRIPT), vec![key], args)
            .await?;
    }
    tracing::info!(node = %dead, channels = channels.len(), members = orphaned, "a node's lease lapsed; its members wait for their clients to resume elsewhere");
    // Its share of channel occupancy goes at once (webhooks' `channel.closed`, debounced).
    bus.events.node_died(dead.to_owned());
    let dead_channels = node_channels_key(dead);
    let dead_graces = graces_key(dead);
    let dead = dead.to_owned();
    bus.commands
        .run(move |mut connection| {
            Box::pin(async move {
                connection
                    .query_pipeline::<()>(
                        redis::pipe()
                            .cmd("DEL")
                            .arg(dead_channels)
                            .cmd("DEL")
                            .arg(dead_graces)
                            .cmd("SREM")
                            .arg(super::nodes::NODES_KEY)
                            .arg(dead),
                    )
                    .await
            })
        })
        .await?;
    Ok(())
}

/// Makes the orphans whose deadline passed leave: announced once cluster-wide, and reported to
/// webhooks by the node whose script removed them.
pub(super) async fn sweep_orphans(bus: &RedisBackend) -> redis::RedisResult<()> {
    let now = protocol::now_ms();
    let due: Vec<String> = bus
        .commands
        .query(
            redis::cmd("ZRANGEBYSCORE")
                .arg(ORPHANS_KEY)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(SWEEP_BATCH)
                .to_owned(),
        )
        .await?;
    if due.is_empty() {
        return Ok(());
    }
    let mut by_channel: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in &due {
        if let Ok((channel, field)) = serde_json::from_str::<(String, String)>(entry) {
            by_channel.entry(channel).or_default().push(field);
        }
    }
    for (channel, fields) in by_channel {
        sweep_channel(bus, channel, &fields, now).await?;
    }
    let mut args = vec![now.to_string()];
    args.extend(due);
    bus.commands
        .invoke(
            redis::Script::new(UNINDEX_SCRIPT),
            vec![ORPHANS_KEY.to_owned()],
            args,
        )
        .await
}

async fn sweep_channel(
    bus: &RedisBackend,
    channel: String,
    fields: &[String],
    now: u64,
) -> redis::RedisResult<()> {
    let key = members_key(&channel);
    let values: Vec<Option<String>> = bus
        .commands
        .query(redis::cmd("HMGET").arg(&key).arg(fields).to_owned())
        .await?;
    let mut leaves: Vec<(String, String, PresenceMessage)> = Vec::new();
    for (field, value) in fields.iter().zip(values) {
        let Some(value) = value else { continue };
        let Some((holder, json)) = value.split_once('\n') else {
            continue;
        };
        let due = holder
            .strip_prefix(ORPHAN_HOLDER)
            .and_then(|deadline| deadline.parse::<u64>().ok())
            .is_some_and(|deadline| deadline <= now);
        let Some(member) = due
            .then(|| serde_json::from_str::<PresenceMessage>(json).ok())
            .flatten()
        else {
            continue;
        };
        let mut leave = crate::hub::server_leave(member, now);
        leave.make_json_safe();
        leaves.push((field.clone(), value.clone(), leave));
    }
    if leaves.is_empty() {
        return Ok(());
    }
    // Marked before the members go: a resume that then finds none to adopt learns they left.
    let connections: BTreeSet<&str> = leaves
        .iter()
        .filter_map(|(_, _, leave)| leave.connection_id.as_deref())
        .collect();
    let mut mark = redis::pipe();
    for connection_id in connections {
        mark.cmd("SET")
            .arg(swept_key(connection_id))
            .arg(1)
            .arg("PX")
            .arg(bus.record_ttl_ms())
            .ignore();
    }
    bus.commands
        .run(move |mut connection| {
            Box::pin(async move { connection.query_pipeline::<()>(&mark).await })
        })
        .await?;
    let mut args = vec![PRESENCE_MARK.to_owned()];
    for (field, value, leave) in &leaves {
        args.push(field.clone());
        args.push(value.clone());
        args.push(serde_json::to_string(leave).unwrap_or_default());
    }
    let positions: Vec<usize> = bus
        .commands
        .invoke(
            super::announcing(SWEEP_SCRIPT, bus.commands.sharded()),
            vec![key, super::subscriber::topic(&channel)],
            args,
        )
        .await?;
    let left: Vec<PresenceMessage> = positions
        .into_iter()
        .filter_map(|position| Some(leaves.get(position.checked_sub(1)?)?.2.clone()))
        .collect();
    if !left.is_empty() {
        tracing::info!(%channel, members = left.len(), "orphaned members left: their clients did not resume within the grace");
        bus.events.members_left(channel, left);
    }
    Ok(())
}
