//! Publishing in batches: every stored publication of this node goes through one task, which
//! sends whatever has queued up as one script call (`scripts/publish_batch.lua`; one call per
//! hash slot on a Cluster), with at most `MAX_IN_FLIGHT` calls outstanding. There is no timer:
//! an idle node sends a batch of one at once, and a busy node's batches grow by themselves
//! while earlier calls are in flight (group commit). Per channel, the script stores the
//! batch's publications in queue order and announces them in one `PUBLISH`.
//!
//! Order: calls go out on one connection in the order batches are made (each is polled once
//! before the next is taken), Redis runs them in that order and the script keeps queue order,
//! so a channel's serials follow the order of `submit` calls.
//!
//! Every submission is answered exactly once: with its serials, or an error (NACK / 503) when
//! the call fails, times out, or its channel's part of the script failed; a dropped call drops
//! its senders, which the ticket reads as the same error.

use std::collections::HashMap;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::commands::Commands;
use super::stream::{keys, meta_ttl, push_claims_and_bodies, serial_of};
use super::subscriber::topic;
use crate::backend::{BackendError, Result, Ticket};
use crate::config::Retention;
use crate::hub::{Publication, Serials};

/// Stores and announces the publications of a batch, grouped by channel.
/// KEYS: per channel, its stream, topic, claim set and meta. ARGV: per channel, max length,
/// max age ms, meta ttl ms, its number of publications and `stored` or `ephemeral` (announced
/// with `EPHEMERAL_MARK`, never stored: a channel's two kinds are two groups), then per
/// publication its
/// connectionId, protocol message id and number of messages, then (claim, body) per message.
/// Reply: per publication, in order, its stream ids ('' for an idempotent repeat) or a string
/// saying why its channel's part failed.
pub(super) const PUBLISH_BATCH_SCRIPT: &str = include_str!("scripts/publish_batch.lua");

/// Starts an announcement of a channel's publications in a batch: per publication its
/// connectionId, id and message count, then (stream id, body) per message, all `\n`-separated.
/// A publication alone is announced without it, as before batching (connectionId, id, then the
/// pairs), so older nodes still read it during a rolling upgrade.
pub(super) const BATCH_MARK: &str = "\u{1}batch\n";

/// Submissions waiting for a call; a full queue slows publishers down (`submit` waits).
const QUEUE: usize = 4096;
const MAX_BATCH_MESSAGES: usize = 256;
/// Bounds the arguments of one call, so one large batch does not hold Redis long.
const MAX_BATCH_BYTES: usize = 512 * 1024;
const MAX_IN_FLIGHT: usize = 4;

/// One publication waiting to be stored.
pub(super) struct Submission {
    pub(super) channel: String,
    /// `None`: ephemeral, announced and never stored.
    pub(super) retention: Option<Retention>,
    pub(super) connection_id: String,
    pub(super) id: String,
    /// (claim, body) per message (`stream::push_claims_and_bodies`).
    pub(super) args: Vec<String>,
    pub(super) reply: oneshot::Sender<Result<Serials>>,
}

impl Submission {
    fn messages(&self) -> usize {
        self.args.len() / 2
    }

    fn bytes(&self) -> usize {
        self.args.iter().map(String::len).sum::<usize>() + self.channel.len()
    }
}

#[derive(Clone)]
pub(super) struct Batcher {
    queue: mpsc::Sender<Submission>,
}

impl Batcher {
    pub(super) fn start(commands: Commands, script: redis::Script) -> Batcher {
        let (queue, submissions) = mpsc::channel(QUEUE);
        tokio::spawn(run(submissions, commands, script));
        Batcher { queue }
    }

    /// Queues a publication, stored with `retention` or ephemeral with none (waiting while the
    /// queue is full); the ticket resolves with its serials. Queue order is the order of these
    /// calls. Serialised here, on the publisher's task, so the batcher only gathers.
    pub(super) async fn submit(
        &self,
        publication: Publication<'_>,
        retention: Option<Retention>,
    ) -> Result<Ticket> {
        let mut args = Vec::with_capacity(2 * publication.messages.len());
        push_claims_and_bodies(&mut args, &publication.messages, &publication.client_ids)?;
        let slot = self
            .queue
            .reserve()
            .await
            .map_err(|_| BackendError::bus_down("not published"))?;
        let (reply, answer) = oneshot::channel();
        slot.send(Submission {
            channel: publication.channel.to_owned(),
            retention,
            connection_id: publication.connection_id.unwrap_or_default().to_owned(),
            id: publication.id.unwrap_or_default(),
            args,
            reply,
        });
        Ok(Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(BackendError::bus_down("not published")))
        }))
    }
}

async fn run(
    mut submissions: mpsc::Receiver<Submission>,
    commands: Commands,
    script: redis::Script,
) {
    let sharded = commands.sharded();
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            // First, so a call just made is polled (and sent) before the next is taken.
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = submissions.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(first) = first else { break };
                let batch = take_batch(first, &mut submissions);
                ::metrics::histogram!("realtime_redis_batch_publications").record(batch.len() as f64);
                in_flight.push(send(commands.clone(), script.clone(), batch, sharded));
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// The first submission and whatever else is queued, within the batch bounds.
fn take_batch(first: Submission, submissions: &mut mpsc::Receiver<Submission>) -> Vec<Submission> {
    let mut messages = first.messages();
    let mut bytes = first.bytes();
    let mut batch = vec![first];
    while messages < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
        let Ok(next) = submissions.try_recv() else {
            break;
        };
        messages += next.messages();
        bytes += next.bytes();
        batch.push(next);
    }
    batch
}

/// One call on a single Redis; on a Cluster one per hash slot (no script crosses slots), sent
/// together.
async fn send(commands: Commands, script: redis::Script, batch: Vec<Submission>, sharded: bool) {
    if !sharded {
        return call(&commands, script, batch).await;
    }
    let mut slots: Vec<(u16, Vec<Submission>)> = Vec::new();
    for submission in batch {
        let slot = super::shards::slot(keys(&submission.channel).meta.as_bytes());
        match slots.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, part)) => part.push(submission),
            None => slots.push((slot, vec![submission])),
        }
    }
    futures_util::future::join_all(
        slots
            .into_iter()
            .map(|(_, part)| call(&commands, script.clone(), part)),
    )
    .await;
}

/// One script call for `batch`, grouped by channel (in order of first appearance; each
/// channel's publications in queue order), and every submission answered.
async fn call(commands: &Commands, script: redis::Script, batch: Vec<Submission>) {
    let mut groups: Vec<Vec<Submission>> = Vec::new();
    let mut index: HashMap<(String, bool), usize> = HashMap::new();
    for submission in batch {
        let key = (submission.channel.clone(), submission.retention.is_none());
        match index.get(&key) {
            Some(&group) => groups[group].push(submission),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![submission]);
            }
        }
    }
    let mut keys_out = Vec::with_capacity(groups.len() * 4);
    let mut args = Vec::new();
    let mut replies = Vec::new();
    for group in groups {
        let channel = &group[0].channel;
        let retention = group[0].retention;
        let stream_keys = keys(channel);
        // An ephemeral group's stream and meta are never touched (named for a Cluster's slot).
        let (kind, retention) = match retention {
            Some(retention) => ("stored", retention),
            None => ("ephemeral", Retention::default()),
        };
        keys_out.extend([
            stream_keys.stream,
            topic(channel),
            stream_keys.claim_set,
            stream_keys.meta,
        ]);
        args.extend([
            retention.max_messages.to_string(),
            (retention.max_age.as_millis() as u64).to_string(),
            meta_ttl(retention).to_string(),
            group.len().to_string(),
            kind.to_owned(),
        ]);
        for submission in group {
            args.push(submission.connection_id);
            args.push(submission.id);
            args.push((submission.args.len() / 2).to_string());
            args.extend(submission.args);
            replies.push(submission.reply);
        }
    }
    let outcome: redis::RedisResult<Vec<redis::Value>> =
        commands.invoke_stored(script, keys_out, args).await;
    let values = match outcome {
        Ok(values) if values.len() == replies.len() => values,
        Ok(values) => {
            tracing::warn!(
                got = values.len(),
                expected = replies.len(),
                "unexpected reply to a publish batch"
            );
            return fail_all(replies, "not published");
        }
        Err(error) => {
            tracing::warn!(%error, publications = replies.len(), "publish through Redis failed");
            // Stored, maybe, but `--redis-min-replicas` was not met: said so, not "down".
            let unconfirmed = error
                .to_string()
                .contains("not confirmed by enough replicas");
            return fail_all(
                replies,
                if unconfirmed {
                    "not confirmed by enough Redis replicas; retry with the same message id"
                } else {
                    "not published"
                },
            );
        }
    };
    for (reply, value) in replies.into_iter().zip(values) {
        // A receiver gone (the publisher disconnected) changes nothing: it was stored.
        let _ = reply.send(serials_of(value));
    }
}

fn fail_all(replies: Vec<oneshot::Sender<Result<Serials>>>, then: &'static str) {
    for reply in replies {
        let _ = reply.send(Err(BackendError::bus_down(then)));
    }
}

/// A publication's part of the reply: its stream ids as serials, or why it was not stored.
fn serials_of(value: redis::Value) -> Result<Serials> {
    match value {
        redis::Value::Array(ids) => Ok(ids
            .iter()
            .map(|id| {
                redis::from_redis_value_ref::<String>(id)
                    .ok()
                    .and_then(|id| serial_of(&id))
            })
            .collect()),
        other => {
            tracing::warn!(reply = ?other, "a channel's part of a publish batch failed");
            Err(BackendError::bus_down("not published"))
        }
    }
}
