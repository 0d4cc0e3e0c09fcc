//! Sharded pub/sub on a Redis Cluster (`redis+cluster://`).
//!
//! A channel's topic (`rt:ch:{channel}`) hashes to the same slot as the channel's keys, so the
//! publish script announces it with `SPUBLISH` on the shard that stores the channel, and only
//! that shard carries it: adding shards adds pub/sub capacity, where plain `PUBLISH` would be
//! copied to every node of the cluster. A node listens with `SSUBSCRIBE` on a connection to the
//! master owning the topic's slot: one RESP3 connection per master, the slot map read with
//! `CLUSTER SLOTS` from a seed (or a master seen before).
//!
//! The probe and control topics stay plain `PUBLISH`/`SUBSCRIBE`, which the cluster broadcasts
//! to every node: the probe is heard on every master's connection, so readiness means every
//! link works.
//!
//! Resharding: when a slot moves, Redis ends its shard subscriptions (a `sunsubscribe` we did
//! not ask for) or answers `SSUBSCRIBE` with `MOVED`; either way the links are dropped, the
//! slot map is read again and every channel is resubscribed and caught up from the store, as
//! after any lost link.

use std::collections::{HashMap, HashSet};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{ConnectionAddr, ConnectionInfo, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::tls::client_for;
use super::REDIS_TIMEOUT;
use crate::config::RedisTls;

/// Where the cluster is: the seed nodes, and the masters of the last slot map read.
pub(super) struct Shards {
    seeds: Vec<ConnectionInfo>,
    masters: Vec<ConnectionInfo>,
}

impl Shards {
    /// With `rediss://` seeds every connection is TLS, carrying `tls`'s certificates.
    pub(super) fn new(seeds: &[String], tls: Option<&RedisTls>) -> redis::RedisResult<Shards> {
        let seeds = seeds
            .iter()
            .map(|seed| Ok(client_for(seed, tls)?.get_connection_info().clone()))
            .collect::<redis::RedisResult<Vec<_>>>()?;
        Ok(Shards {
            seeds,
            masters: Vec::new(),
        })
    }

    /// Reads the slot map and opens one connection per master. Each step is bounded.
    pub(super) async fn open(&mut self) -> redis::RedisResult<Links> {
        let map = self.slot_map().await?;
        let mut masters: Vec<(String, u16)> = Vec::new();
        let mut slots = Vec::new();
        for (first, last, master) in map {
            let index = match masters.iter().position(|m| *m == master) {
                Some(index) => index,
                None => {
                    masters.push(master);
                    masters.len() - 1
                }
            };
            slots.push((first, last, index));
        }
        slots.sort_unstable();
        let template = self.seeds[0].clone();
        self.masters = masters
            .iter()
            .map(|(host, port)| at(&template, host, *port))
            .collect();
        let (events_in, events) = mpsc::unbounded_channel();
        let mut connections = Vec::new();
        for (index, master) in self.masters.iter().enumerate() {
            let resp3 = master
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            let info = master.clone().set_redis_settings(resp3);
            let events_in = events_in.clone();
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT))
                .set_push_sender(move |push: PushInfo| events_in.send((index, push)));
            let connection = redis::Client::open(info)?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            connections.push(connection);
        }
        Ok(Links {
            slots,
            connections,
            events,
            subscribed: HashSet::new(),
            leaving: HashMap::new(),
        })
    }

    /// `CLUSTER SLOTS` from the first node that answers (masters seen before, then the seeds):
    /// (first slot, last slot, master host and port).
    async fn slot_map(&self) -> redis::RedisResult<Vec<SlotRange>> {
        let mut last_error = None;
        for node in self.masters.iter().chain(&self.seeds) {
            let read = async {
                let mut connection = redis::Client::open(node.clone())?
                    .get_multiplexed_async_connection_with_config(
                        &redis::AsyncConnectionConfig::new()
                            .set_connection_timeout(Some(REDIS_TIMEOUT))
                            .set_response_timeout(Some(REDIS_TIMEOUT)),
                    )
                    .await?;
                let reply: Value = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut connection)
                    .await?;
                parse_slots(&reply, host_of(node))
            };
            match read.await {
                Ok(map) if !map.is_empty() => return Ok(map),
                Ok(_) => {
                    last_error = Some(redis::RedisError::from((
                        redis::ServerErrorKind::ClusterDown.into(),
                        "no slots assigned",
                    )))
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            redis::RedisError::from((
                redis::ServerErrorKind::ClusterDown.into(),
                "no cluster node",
            ))
        }))
    }
}

/// (first slot, last slot, the master's host and port).
type SlotRange = (u16, u16, (String, u16));

/// `template` (credentials, database, TLS and its certificates) at another address.
fn at(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    template.clone().set_addr(addr)
}

fn host_of(info: &ConnectionInfo) -> &str {
    match info.addr() {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host,
        _ => "127.0.0.1",
    }
}

/// `[[first, last, [host, port, id, …], replicas…], …]`; an empty or wildcard host means the
/// node we asked (redis 1.x refuses to connect to a wildcard address).
fn parse_slots(reply: &Value, asked: &str) -> redis::RedisResult<Vec<SlotRange>> {
    let malformed = || {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "CLUSTER SLOTS reply",
        ))
    };
    let Value::Array(ranges) = reply else {
        return Err(malformed());
    };
    let int = |value: &Value| match value {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let mut map = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(malformed());
        };
        let (Some(first), Some(last), Some(Value::Array(master))) = (
            fields.first().and_then(int),
            fields.get(1).and_then(int),
            fields.get(2),
        ) else {
            return Err(malformed());
        };
        let host = match master.first() {
            Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
            _ => return Err(malformed()),
        };
        let host = if matches!(host.as_str(), "" | "?" | "0.0.0.0" | "::") {
            asked.to_owned()
        } else {
            host
        };
        let port = master.get(1).and_then(int).ok_or_else(malformed)?;
        map.push((first, last, (host, port)));
    }
    Ok(map)
}

/// The connection whose master owns `topic`'s slot, from slot ranges ordered by slot.
fn owner(slots: &[(u16, u16, usize)], topic: &str) -> Option<usize> {
    let slot = slot(topic.as_bytes());
    let at = slots.partition_point(|(_, last, _)| *last < slot);
    match slots.get(at) {
        Some((first, _, index)) if *first <= slot => Some(*index),
        _ => None,
    }
}

/// The cluster key slot of `key`: CRC16 (XMODEM) of its hash tag, the text between the first
/// `{` and the next `}` if not empty, else of the whole key, mod 16384 (Redis Cluster spec).
/// Ours because redis 1.x no longer exposes its own.
pub(super) fn slot(key: &[u8]) -> u16 {
    let tag = key.iter().position(|byte| *byte == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|byte| *byte == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16_xmodem(tag.unwrap_or(key)) % 16384
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0, |crc, byte| {
        (0..8).fold(crc ^ (u16::from(*byte) << 8), |crc, _| {
            if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            }
        })
    })
}

/// One connection per master, and what arrives on them, tagged with the connection's index.
pub(super) struct Links {
    /// (first slot, last slot, connection index), ordered by slot.
    slots: Vec<(u16, u16, usize)>,
    connections: Vec<MultiplexedConnection>,
    events: mpsc::UnboundedReceiver<(usize, PushInfo)>,
    /// Channel topics subscribed here.
    subscribed: HashSet<String>,
    /// Topics we unsubscribed from ourselves, whose confirmations are still to arrive.
    leaving: HashMap<String, usize>,
}

impl Links {
    pub(super) fn count(&self) -> usize {
        self.connections.len()
    }

    /// A plain (cluster-wide) topic, on every connection or on the first.
    pub(super) async fn listen(&mut self, topic: &str, everywhere: bool) -> redis::RedisResult<()> {
        let n = if everywhere {
            self.connections.len()
        } else {
            1
        };
        for connection in &mut self.connections[..n] {
            redis::cmd("SUBSCRIBE")
                .arg(topic)
                .query_async::<()>(connection)
                .await?;
        }
        Ok(())
    }

    /// `SSUBSCRIBE` on the master owning the topic's slot (`MOVED` if the map is stale).
    pub(super) async fn subscribe(&mut self, topic: &str) -> redis::RedisResult<()> {
        let index = self.owner(topic)?;
        redis::cmd("SSUBSCRIBE")
            .arg(topic)
            .query_async::<()>(&mut self.connections[index])
            .await?;
        self.subscribed.insert(topic.to_owned());
        Ok(())
    }

    pub(super) async fn unsubscribe(&mut self, topic: &str) -> redis::RedisResult<()> {
        let index = self.owner(topic)?;
        self.subscribed.remove(topic);
        *self.leaving.entry(topic.to_owned()).or_default() += 1;
        // redis 1.x does not take a plain SUNSUBSCRIBE's confirmation (a push) for its reply
        // (redis-rs#2533): the call would wait until it timed out, and the link be rebuilt.
        // The confirmation still reaches `next`; a PING in the same write is what is awaited.
        let mut both = redis::pipe();
        both.cmd("SUNSUBSCRIBE").arg(topic).cmd("PING");
        let replies = self.connections[index]
            .req_packed_commands(&both, 0, 1)
            .await?;
        match replies.first() {
            Some(Value::ServerError(error)) => Err(error.clone().into()),
            _ => Ok(()),
        }
    }

    fn owner(&self, topic: &str) -> redis::RedisResult<usize> {
        owner(&self.slots, topic).ok_or_else(|| {
            redis::RedisError::from((
                redis::ServerErrorKind::ClusterDown.into(),
                "no master for the slot",
            ))
        })
    }

    /// The next message and the connection it came on; `None` when a connection dropped or a
    /// slot moved away under a subscription (the caller rebuilds the links).
    pub(super) async fn next(&mut self) -> Option<(usize, redis::Msg)> {
        loop {
            let (index, push) = self.events.recv().await?;
            match push.kind {
                PushKind::Message | PushKind::SMessage => {
                    if let Some(message) = redis::Msg::from_push_info(push) {
                        return Some((index, message));
                    }
                }
                PushKind::SUnsubscribe => {
                    let topic = match push.data.first() {
                        Some(Value::BulkString(topic)) => {
                            String::from_utf8_lossy(topic).into_owned()
                        }
                        _ => continue,
                    };
                    if let Some(pending) = self.leaving.get_mut(&topic) {
                        *pending -= 1;
                        if *pending == 0 {
                            self.leaving.remove(&topic);
                        }
                        continue;
                    }
                    if self.subscribed.contains(&topic) {
                        tracing::info!(%topic, "Redis Cluster moved a subscribed slot; re-reading the slot map");
                        return None;
                    }
                }
                PushKind::Disconnection => return None,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
