//! Presence across nodes. Members live in one Redis hash per channel (field
//! `connectionId\nclientId`, value `node\nmember JSON`), written and announced by one script, so
//! a node catching a channel up reads the member set and hears every change after it. Each node
//! holds a lease; when one lapses (the node died without a goodbye), one surviving node claims
//! the reaping and announces each of the dead node's members' LEAVE once, through the bus.

use protocol::{ErrorCode, ErrorInfo, PresenceMessage};

use super::RedisBus;

/// Starts a pub/sub payload carrying presence events (a message payload starts with a
/// connection id, which never holds this byte).
pub(super) const PRESENCE_MARK: &str = "\u{1}presence\n";

/// How long a members hash outlives its last write.
const MEMBERS_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// KEYS: members hash, topic. ARGV: node, payload, ttl, then (op, field, member) per event.
pub(super) const PRESENCE_SCRIPT: &str = r#"
for i = 4, #ARGV, 3 do
  if ARGV[i] == 'leave' then
    redis.call('HDEL', KEYS[1], ARGV[i + 1])
  else
    redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[1] .. '\n' .. ARGV[i + 2])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
"#;

/// Gives a connection's members to `node` (a resumed connection now lives there).
/// KEYS: members hash. ARGV: connection id, node.
pub(super) const REHOME_SCRIPT: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local prefix = ARGV[1] .. '\n'
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #prefix) == prefix then
    local member = string.sub(all[i + 1], string.find(all[i + 1], '\n', 1, true) + 1)
    redis.call('HSET', KEYS[1], all[i], ARGV[2] .. '\n' .. member)
  end
end
return 1
"#;

pub(super) fn members_key(channel: &str) -> String {
    format!("rt:{{{channel}}}:presence")
}

fn field(member: &PresenceMessage) -> String {
    format!(
        "{}\n{}",
        member.connection_id.as_deref().unwrap_or_default(),
        member.client_id.as_deref().unwrap_or_default()
    )
}

pub(super) fn lease_key(node: &str) -> String {
    format!("rt:node:{node}")
}

fn node_channels_key(node: &str) -> String {
    format!("rt:node:{node}:channels")
}

pub(super) const NODES_KEY: &str = "rt:nodes";

/// Members read back from the hash: (holding node, member).
pub(super) fn parse_members(flat: &[String]) -> Vec<(String, PresenceMessage)> {
    flat.chunks(2)
        .filter_map(|pair| {
            let (node, json) = pair.get(1)?.split_once('\n')?;
            let member = serde_json::from_str(json).ok()?;
            Some((node.to_owned(), member))
        })
        .collect()
}

impl RedisBus {
    /// Stores and announces presence events (already checked); every node, this one included,
    /// applies them when the announcement arrives.
    pub(crate) async fn presence(
        &self,
        channel: &str,
        events: &[PresenceMessage],
    ) -> Result<(), ErrorInfo> {
        let mut safe: Vec<PresenceMessage> = events.to_vec();
        for event in &mut safe {
            event.make_json_safe();
        }
        let payload = format!(
            "{PRESENCE_MARK}{}",
            serde_json::to_string(&safe).map_err(|e| {
                ErrorCode::Internal.info(format!("could not encode presence: {e}"))
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
        let keys = [members_key(channel), super::topic(channel)];
        let entering = safe.iter().any(|e| e.action != 3);
        let node_channels = node_channels_key(&self.node);
        let channel = channel.to_owned();
        let script = self.presence_script.clone();
        self.commands
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
                ErrorCode::ServiceUnavailable
                    .info("the message bus (Redis) is unavailable; presence not changed")
            })
    }

    /// Gives `connection_id`'s members on `channels` to this node (it resumed here), so they
    /// are not reaped with the node it came from.
    pub(crate) async fn adopt_members(&self, connection_id: &str, channels: &[String]) {
        for channel in channels {
            let key = members_key(channel);
            let args = [connection_id.to_owned(), self.node.clone()];
            let script = self.rehome_script.clone();
            let channel_owned = channel.clone();
            let node_channels = node_channels_key(&self.node);
            let result: redis::RedisResult<()> = self
                .commands
                .run(move |mut connection| {
                    Box::pin(async move {
                        redis::cmd("SADD")
                            .arg(node_channels)
                            .arg(channel_owned)
                            .query_async::<()>(&mut connection)
                            .await?;
                        script
                            .key(key)
                            .arg(&args[0])
                            .arg(&args[1])
                            .invoke_async(&mut connection)
                            .await
                    })
                })
                .await;
            if let Err(error) = result {
                tracing::warn!(%channel, %error, "could not adopt a resumed connection's members");
            }
        }
    }
}

/// Renews this node's lease every third of it, and reaps nodes whose lease lapsed.
pub(super) async fn keep_lease(bus: std::sync::Weak<RedisBus>, lease: std::time::Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(bus) = bus.upgrade() else { return };
        if let Err(error) = renew_and_reap(&bus, lease).await {
            tracing::debug!(%error, "node lease renewal or reaping failed");
        }
    }
}

async fn renew_and_reap(bus: &RedisBus, lease: std::time::Duration) -> redis::RedisResult<()> {
    let node = bus.node.clone();
    let ms = lease.as_millis() as u64;
    let others: Vec<(String, bool)> = bus
        .commands
        .run(move |mut connection| {
            Box::pin(async move {
                let (_, _, nodes): ((), (), Vec<String>) = connection
                    .query_pipeline(
                        redis::pipe()
                            .cmd("SET")
                            .arg(lease_key(&node))
                            .arg(1)
                            .arg("PX")
                            .arg(ms)
                            .cmd("SADD")
                            .arg(NODES_KEY)
                            .arg(&node)
                            .cmd("SMEMBERS")
                            .arg(NODES_KEY),
                    )
                    .await?;
                let others: Vec<String> = nodes.into_iter().filter(|n| *n != node).collect();
                let mut exists = redis::pipe();
                for other in &others {
                    exists.cmd("EXISTS").arg(lease_key(other));
                }
                let alive: Vec<bool> = if others.is_empty() {
                    Vec::new()
                } else {
                    connection.query_pipeline(&exists).await?
                };
                Ok(others.into_iter().zip(alive).collect())
            })
        })
        .await?;
    for (dead, _) in others.into_iter().filter(|(_, alive)| !alive) {
        reap(bus, &dead, lease).await?;
    }
    Ok(())
}

/// One node claims the reaping of `dead` and makes each of its members leave, announced once.
async fn reap(bus: &RedisBus, dead: &str, lease: std::time::Duration) -> redis::RedisResult<()> {
    let claim = format!("rt:reap:{dead}");
    let dead_channels = node_channels_key(dead);
    let hold = (lease.as_millis() as u64).max(5_000) * 3;
    let channels: Option<Vec<String>> = bus
        .commands
        .run(move |mut connection| {
            Box::pin(async move {
                let claimed: Option<String> = redis::cmd("SET")
                    .arg(claim)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(hold)
                    .query_async(&mut connection)
                    .await?;
                if claimed.is_none() {
                    return Ok(None);
                }
                redis::cmd("SMEMBERS")
                    .arg(dead_channels)
                    .query_async(&mut connection)
                    .await
                    .map(Some)
            })
        })
        .await?;
    let Some(channels) = channels else {
        return Ok(());
    };
    tracing::info!(node = %dead, channels = channels.len(), "a node's lease lapsed; its members leave");
    let now = protocol::now_ms();
    for channel in &channels {
        let key = members_key(channel);
        let flat: Vec<String> = bus
            .commands
            .query(redis::cmd("HGETALL").arg(key).to_owned())
            .await?;
        let leaves: Vec<PresenceMessage> = parse_members(&flat)
            .into_iter()
            .filter(|(node, _)| node == dead)
            .map(|(_, member)| crate::hub::server_leave(member, now))
            .collect();
        if !leaves.is_empty() {
            bus.presence(channel, &leaves).await.map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::IoError, "presence", e.message))
            })?;
            report_webhook(
                bus,
                crate::webhooks::Report::Presence {
                    channel: channel.clone(),
                    events: leaves,
                },
            );
        }
    }
    // Its share of channel occupancy goes too (webhooks' `channel.closed`).
    report_webhook(
        bus,
        crate::webhooks::Report::NodeDied {
            node: dead.to_owned(),
        },
    );
    let dead_channels = node_channels_key(dead);
    let dead = dead.to_owned();
    bus.commands
        .run(move |mut connection| {
            Box::pin(async move {
                connection
                    .query_pipeline::<()>(
                        redis::pipe()
                            .cmd("DEL")
                            .arg(dead_channels)
                            .cmd("SREM")
                            .arg(NODES_KEY)
                            .arg(dead),
                    )
                    .await
            })
        })
        .await?;
    Ok(())
}

fn report_webhook(bus: &RedisBus, report: crate::webhooks::Report) {
    if let Some(inner) = bus.gateway.upgrade() {
        crate::Gateway { inner }.report_webhook(report);
    }
}
