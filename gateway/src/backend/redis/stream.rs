//! Channel streams: the keys of a channel, the publish that stores and announces a
//! publication, and `StreamLoader`, which reads a channel's position and stored entries to
//! catch a node up.
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
//! the nodes holding them (`nodes::reseed`); a catch-up meanwhile keeps members missing from
//! the store until every node has had a lease tick to do so.
//!
//! Two Redis restarts within one reconnect of the link (messages only the middle instance held)
//! cannot be told apart from one.
//!
//! On a Redis Cluster (`redis+cluster://`) the same holds shard by shard: a channel's keys and
//! topic share its hash tag, so each script touches one slot; topics are `SPUBLISH`ed and
//! `SSUBSCRIBE`d on the master owning that slot (`shards.rs`); node-level keys (leases, resume
//! records) are written one key per command, never in a pipeline across slots.

use std::sync::Arc;

use protocol::Message;

use super::commands::Commands;
use super::presence;
use crate::backend::{BackendError, BackendEvents};
use crate::config::Retention;

/// How long a channel's serial counter outlives its last publish, so a client resuming after a
/// quiet spell is still told exactly whether it missed anything.
const META_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Keys of one channel. All share the hash tag `{channel}`, so they live on one Redis Cluster
/// slot and one script can touch them all.
pub(super) struct Keys {
    pub(super) stream: String,
    pub(super) meta: String,
    /// Idempotency claims (stored and ephemeral publications): a sorted set scored by when each
    /// lapses.
    pub(super) claim_set: String,
}

pub(super) fn keys(channel: &str) -> Keys {
    Keys {
        stream: format!("rt:{{{channel}}}:log"),
        meta: format!("rt:{{{channel}}}:meta"),
        claim_set: format!("rt:{{{channel}}}:claims"),
    }
}

/// Reads a channel's position and stored entries in one step (creating its epoch if the
/// channel is new, so the first publish continues from the floor given here). With no known
/// position: the newest `count` entries, newest first. Otherwise the stored entries from the
/// known position on (inclusive, so the node can check the store still has its last message),
/// or from the start of the current epoch when it is not the known one, oldest first, at most
/// `count`; never more than `limit` back from the position (the caller pages on).
/// KEYS: stream, meta, members. ARGV: count, meta ttl ms, known epoch ('' for none), known n,
/// limit.
pub(super) const LOAD_SCRIPT: &str = include_str!("scripts/load.lua");

/// Moves a channel whose store was rolled back (a Redis restored from an older snapshot: its
/// position is behind what nodes already delivered) to a fresh epoch, so no serial is handed
/// out twice, and marks the abandoned epoch (`p`) so every node holding it tells its
/// subscribers. Only if the channel is still in that epoch (another node may have done it).
/// KEYS: meta. ARGV: the rolled-back epoch, the lowest new epoch, meta ttl ms.
pub(super) const ROLL_SCRIPT: &str = include_str!("scripts/roll.lua");

/// `1700000000000-5` (a stream id) as our fixed-width serial, so serials compare as strings.
pub(super) fn serial_of(stream_id: &str) -> Option<String> {
    let (ms, seq) = stream_id.split_once('-')?;
    Some(format!(
        "{:012x}-{:010x}",
        ms.parse::<u64>().ok()?,
        seq.parse::<u64>().ok()?
    ))
}

/// A script's per-message arguments: the idempotency claim (the id, where it is a key; else
/// empty) and the message as JSON.
pub(super) fn push_claims_and_bodies(
    args: &mut Vec<String>,
    messages: &[Message],
    client_ids: &[bool],
) -> Result<(), BackendError> {
    for (index, message) in messages.iter().enumerate() {
        let claim = match (client_ids.get(index), &message.id) {
            (Some(true), Some(id)) => id.clone(),
            _ => String::new(),
        };
        // JSON cannot carry bytes: binary data travels base64'd with its encoding saying so.
        let mut safe = message.clone();
        safe.make_json_safe();
        let body = serde_json::to_string(&safe).map_err(|source| BackendError::Encode {
            what: "a message",
            source,
        })?;
        args.push(claim);
        args.push(body);
    }
    Ok(())
}

pub(super) fn meta_ttl(retention: Retention) -> u64 {
    META_TTL_MS.max(2 * retention.max_age.as_millis() as u64 + 60_000)
}

/// Reads channels' stored logs (commands connection) and catches the node up from them.
pub(super) struct StreamLoader {
    pub(super) commands: Commands,
    pub(super) load: redis::Script,
    pub(super) roll: redis::Script,
    pub(super) events: Arc<dyn BackendEvents>,
    /// A node lease: how long a node may take to write back what Redis lost.
    pub(super) node_lease: std::time::Duration,
    /// This node's id, to tell the annotations it stored (it reports their summaries).
    pub(super) node: Arc<str>,
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

impl StreamLoader {
    /// The channel's floor and stored messages (oldest first): the newest the log keeps when
    /// this node knows nothing of the channel, else everything after its known position (paged,
    /// bounded by twice what the stream keeps: the stream is capped by length and age).
    async fn load(
        &self,
        channel: &str,
        retention: Retention,
        known: Option<&Known>,
    ) -> redis::RedisResult<Stored> {
        #[cfg(test)]
        if failing_loads::take(channel) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "injected: the connection broke",
            )));
        }
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
            entries = expand(entries);
            let surplus = entries.len().saturating_sub(retention.max_messages);
            entries.drain(..surplus);
        } else {
            let mut page_len = entries.len();
            entries = expand(entries);
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
                entries.extend(expand(page));
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
                    .iter()
                    .find(|(id, _)| *id == at_known)
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
    pub(super) async fn catch_up(
        &self,
        channel: &str,
        heard_everything: bool,
        after_reconnect: bool,
    ) -> redis::RedisResult<()> {
        ::metrics::counter!("realtime_bus_catch_ups_total").increment(1);
        let Some(position) = self.events.position(channel) else {
            return Ok(());
        };
        let retention = position.retention;
        let annotated = position.annotated;
        let known = position.last.and_then(|(serial, id)| {
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
                    redis::ServerErrorKind::TryAgain.into(),
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
        self.events
            .catch_up(channel, stored.floor, stored.messages, old_epoch_complete);
        // The aggregates too: whatever this node missed, or all of them if it just joined. Any
        // catch-up but a join's may follow missed annotations, whose summaries then go out.
        if annotated {
            let joined = !heard_everything && !after_reconnect;
            super::annotations::load(&self.commands, &self.events, channel, !joined).await?;
        }
        // After the link came back, the store may have come back empty: members it lacks may
        // be written back by their nodes in a moment. Any other catch-up trusts the store.
        if self
            .events
            .sync_members(channel, stored.members, !after_reconnect)
        {
            self.recheck_members(channel);
        }
        Ok(())
    }

    /// After a reconnect, members held here but missing from the store either left while this
    /// node could not hear it, or the store came back empty and their nodes have not written them back yet (each
    /// does on its next lease tick: `nodes::reseed`). Looked at again once every node has had
    /// a tick, then they leave; until then nobody sees them flap.
    fn recheck_members(&self, channel: &str) {
        let wait = self.node_lease * 3 / 2;
        let events = self.events.clone();
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
            if events.holds(&channel) {
                let members = presence::parse_members(&flat)
                    .into_iter()
                    .map(|(_, member)| member)
                    .collect();
                events.sync_members(&channel, members, true);
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

/// Stream entries as one entry per message, each with its own id and `m` body. An entry of
/// several messages (`t`, then `b` and a body per message) is named by its last message's
/// serial, the others' consecutive before it; an entry of one message is `m`, body, `t`.
fn expand(entries: Vec<StreamEntry>) -> Vec<StreamEntry> {
    let mut out = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        let bodies = fields.chunks(2).filter(|pair| pair[0] == "b").count();
        if bodies == 0 {
            out.push((id, fields));
            continue;
        }
        let Some((epoch, last)) = id
            .split_once('-')
            .and_then(|(epoch, seq)| Some((epoch, seq.parse::<u64>().ok()?)))
        else {
            continue;
        };
        let mut position = (last + 1).saturating_sub(bodies as u64);
        let mut fields = fields.into_iter();
        while let (Some(name), Some(body)) = (fields.next(), fields.next()) {
            if name == "b" {
                out.push((format!("{epoch}-{position}"), vec!["m".to_owned(), body]));
                position += 1;
            }
        }
    }
    out
}

/// The message body (`m`) of a stream entry's fields.
fn body_of(fields: &[String]) -> Option<&str> {
    fields
        .chunks(2)
        .find(|pair| pair[0] == "m")?
        .get(1)
        .map(String::as_str)
}

pub(super) fn stored_message(stream_id: &str, body: &str) -> Option<Message> {
    match serde_json::from_str::<Message>(body) {
        Ok(mut message) => {
            // An operation's place is its version; the message keeps its original's serial.
            let serial = serial_of(stream_id);
            if crate::hub::versions::is_operation(&message) {
                message.version.get_or_insert_with(Default::default).serial = serial;
            } else {
                message.serial = serial;
            }
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

/// Test-only faults: the next loads of a channel fail as on a connection that just broke (a
/// Redis that restarted fails the first command on the old connection).
#[cfg(test)]
pub(crate) mod failing_loads {
    use std::collections::HashMap;
    use std::sync::Mutex;

    static FAILING: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

    /// The next `n` loads of `channel` fail.
    pub(crate) fn fail_next(channel: &str, n: usize) {
        let mut failing = FAILING.lock().unwrap_or_else(|p| p.into_inner());
        failing
            .get_or_insert_with(HashMap::new)
            .insert(channel.to_owned(), n);
    }

    /// Loads of `channel` still set to fail.
    pub(crate) fn pending(channel: &str) -> usize {
        let failing = FAILING.lock().unwrap_or_else(|p| p.into_inner());
        failing
            .as_ref()
            .and_then(|f| f.get(channel).copied())
            .unwrap_or(0)
    }

    pub(super) fn take(channel: &str) -> bool {
        let mut failing = FAILING.lock().unwrap_or_else(|p| p.into_inner());
        match failing.as_mut().and_then(|f| f.get_mut(channel)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}
