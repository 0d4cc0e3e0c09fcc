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
//!
//! Answers wait for the announcement to be written (`confirm`): Redis writes a script's reply
//! before the messages its PUBLISH queued for subscribers, so a crash between the two would
//! leave a publication acknowledged and announced to nobody, lost with an empty restart. A
//! command read after the reply is answered only once those were written: an `EXISTS` of the
//! call's first key (the same node on a Cluster), or the `WAIT` that `--redis-min-replicas`
//! pipelines anyway. The confirmation does not hold one of the `MAX_IN_FLIGHT` places.

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
/// KEYS: per group, its channel's stream, topic, claim set and meta. ARGV: per group, max
/// length, max age ms, meta ttl ms, `stored` or `ephemeral` (announced with `EPHEMERAL_MARK`,
/// never stored: a channel's two kinds are two groups), its number of publications, of
/// messages and of claims given, `1` if a claim repeats in it (or a connection's msgSerials
/// do not rise), and its number of marked publications (`mark_of`); then per publication
/// "connectionId\nid\ncount", when any is marked per publication `c:<connectionId>` and then
/// per publication its msgSerial in 20 digits ('' for one not marked), per message its claim ('' for none), and per message its body (stored: `b`,
/// body, ready for `XADD`). Reply: per group, a string (`serials_of`).
pub(super) const PUBLISH_BATCH_SCRIPT: &str = include_str!("scripts/publish_batch.lua");

/// Starts an announcement of a channel's publications in a batch, with a stream id per
/// message: per publication its connectionId, id and message count, then (stream id, body)
/// per message, all `\n`-separated. The script uses it when some messages were repeats.
/// A publication of one message alone is announced without a mark, as before batching
/// (connectionId, id, then the pair), so older nodes still read it during a rolling upgrade.
pub(super) const BATCH_MARK: &str = "\u{1}batch\n";

/// Starts an announcement of a channel's publications stored as one stream entry, serials
/// consecutive: the epoch, the first position, the number of publications, per publication
/// its connectionId, id and message count, then `b` and the body per message.
pub(super) const BATCH2_MARK: &str = "\u{1}batch2\n";

/// Submissions waiting for a call; a full queue slows publishers down (`submit` waits).
const QUEUE: usize = 4096;
const MAX_BATCH_MESSAGES: usize = 256;
/// Bounds the arguments of one call, so one large batch does not hold Redis long.
const MAX_BATCH_BYTES: usize = 512 * 1024;
const MAX_IN_FLIGHT: usize = 4;
/// Calls answered by Redis whose announcements are being confirmed.
const MAX_CONFIRMING: usize = 16;

/// One publication waiting to be stored.
pub(super) struct Submission {
    pub(super) channel: String,
    /// `None`: ephemeral, announced and never stored.
    pub(super) retention: Option<Retention>,
    pub(super) connection_id: String,
    pub(super) id: String,
    /// A stored realtime publication whose message ids are all the server's
    /// (`connectionId:msgSerial:index`): its msgSerial, which tells a resend instead of a claim
    /// per message (`mark_of`).
    pub(super) msg_serial: Option<u64>,
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
        let msg_serial = retention.and_then(|_| mark_of(&publication));
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
            msg_serial,
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
    let mut confirming = FuturesUnordered::new();
    let confirmations = |answered: Vec<Answered>| {
        answered
            .into_iter()
            .map(|answered| confirm(commands.clone(), answered))
    };
    loop {
        tokio::select! {
            // First, so a call just made is polled (and sent) before the next is taken.
            biased;
            Some(answered) = in_flight.next(), if !in_flight.is_empty() => {
                confirming.extend(confirmations(answered));
            }
            Some(()) = confirming.next(), if !confirming.is_empty() => {}
            first = submissions.recv(),
                if in_flight.len() < MAX_IN_FLIGHT && confirming.len() < MAX_CONFIRMING =>
            {
                let Some(first) = first else { break };
                let batch = take_batch(first, &mut submissions);
                ::metrics::histogram!("realtime_redis_batch_publications").record(batch.len() as f64);
                in_flight.push(send(commands.clone(), script.clone(), batch, sharded));
            }
        }
    }
    while let Some(answered) = in_flight.next().await {
        confirming.extend(confirmations(answered));
    }
    while confirming.next().await.is_some() {}
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

/// A group's connections with marked publications (`mark_of`), in order of first appearance:
/// the script checks and moves each one's mark once, not per publication. A connection's other
/// publications (with ids of the client's own) keep their claims and leave its mark alone.
#[derive(Default)]
struct Marks {
    /// `c:<connectionId>` per connection.
    fields: Vec<String>,
    /// Its first and last marked msgSerial in the group, 20 digits (the script compares
    /// strings).
    first: Vec<String>,
    last: Vec<String>,
    /// Every connection's marked msgSerials rise through the group (else the script compares
    /// one publication at a time).
    rising: bool,
}

impl Marks {
    fn of(group: &[Submission]) -> Marks {
        let mut marks = Marks {
            rising: true,
            ..Marks::default()
        };
        // Connection -> its index in `serials`.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut serials: Vec<(&str, u64, u64)> = Vec::new();
        for submission in group {
            let Some(serial) = submission.msg_serial else {
                continue;
            };
            let next = serials.len();
            let at = *index.entry(&submission.connection_id).or_insert(next);
            if at == next {
                serials.push((&submission.connection_id, serial, serial));
            } else {
                marks.rising &= serials[at].2 < serial;
                serials[at].2 = serial;
            }
        }
        for (connection, first, last) in serials {
            marks.fields.push(format!("c:{connection}"));
            marks.first.push(format!("{first:020}"));
            marks.last.push(format!("{last:020}"));
        }
        marks
    }
}

/// The msgSerial of a realtime publication whose every message id is the server's
/// `connectionId:msgSerial:index` (a client resends a publish with the same msgSerial and ids);
/// `None` when any id is the client's own (it is claimed: REST may publish it again) or the
/// publication is not a realtime one.
fn mark_of(publication: &Publication<'_>) -> Option<u64> {
    let connection = publication.connection_id?;
    let id = publication.id.as_deref()?;
    let serial = id.strip_prefix(connection)?.strip_prefix(':')?;
    let msg_serial = serial.parse().ok()?;
    let generated = publication
        .messages
        .iter()
        .enumerate()
        .all(|(index, message)| {
            publication.client_ids.get(index) == Some(&true)
                && message.id.as_deref().and_then(|m| m.strip_prefix(id))
                    == Some(format!(":{index}").as_str())
        });
    generated.then_some(msg_serial)
}

/// One call on a single Redis; on a Cluster one per hash slot (no script crosses slots), sent
/// together. Their answers, to confirm.
async fn send(
    commands: Commands,
    script: redis::Script,
    batch: Vec<Submission>,
    sharded: bool,
) -> Vec<Answered> {
    if !sharded {
        return call(&commands, script, batch).await.into_iter().collect();
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
    .await
    .into_iter()
    .flatten()
    .collect()
}

/// `batch` grouped by channel, in order of first appearance, each channel's publications in
/// queue order. A channel's stored and ephemeral publications are separate groups, a new one
/// each time the kind changes in the queue, so they are announced in the order they came.
fn grouped(batch: Vec<Submission>) -> Vec<Vec<Submission>> {
    let mut groups: Vec<Vec<Submission>> = Vec::new();
    // Channel -> its latest group.
    let mut latest: HashMap<String, usize> = HashMap::new();
    for submission in batch {
        let ephemeral = submission.retention.is_none();
        match latest.get(&submission.channel) {
            Some(&group) if groups[group][0].retention.is_none() == ephemeral => {
                groups[group].push(submission);
            }
            _ => {
                latest.insert(submission.channel.clone(), groups.len());
                groups.push(vec![submission]);
            }
        }
    }
    groups
}

/// A call's answers, given once its announcements are written (`confirm`).
struct Answered {
    /// The call's first key: on a Cluster, on the node the script ran on.
    barrier: String,
    answers: Vec<(oneshot::Sender<Result<Serials>>, Result<Serials>)>,
}

/// Answers a call's submissions once Redis has answered a command read after the call's reply
/// (module docs); if it cannot, a NACK that asks for a retry (the id tells it was stored).
async fn confirm(commands: Commands, answered: Answered) {
    if !commands.waits_for_replicas() {
        let barrier = redis::cmd("EXISTS").arg(&answered.barrier).to_owned();
        if let Err(error) = commands.query::<u32>(barrier).await {
            tracing::warn!(%error, "a publish batch's announcement was not confirmed");
            let replies = answered.answers.into_iter().map(|(reply, _)| (reply, 0));
            return fail_all(
                replies,
                "not confirmed as announced; retry with the same message id",
            );
        }
    }
    for (reply, serials) in answered.answers {
        // A receiver gone (the publisher disconnected) changes nothing: it was stored.
        let _ = reply.send(serials);
    }
}

/// One script call for `batch` (`grouped`): its answers to confirm, or every submission
/// answered with the error.
async fn call(
    commands: &Commands,
    script: redis::Script,
    batch: Vec<Submission>,
) -> Option<Answered> {
    let groups = grouped(batch);
    let mut keys_out = Vec::with_capacity(groups.len() * 4);
    let mut args = Vec::new();
    // Per group, its submissions' replies and message counts, in order.
    let mut answers: Vec<Vec<(oneshot::Sender<Result<Serials>>, usize)>> = Vec::new();
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
        let messages: usize = group.iter().map(Submission::messages).sum();
        let mut claims = Vec::with_capacity(messages);
        let mut bodies = Vec::with_capacity(messages * 2);
        let mut heads = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        let marks = Marks::of(&group);
        for submission in group {
            let n = submission.messages();
            heads.push(format!(
                "{}\n{}\n{n}",
                submission.connection_id, submission.id
            ));
            // A marked publication's claims are its msgSerial's to answer (left empty: the
            // script tells a marked publication by that).
            let marked = submission.msg_serial.is_some();
            let mut pairs = submission.args.into_iter();
            while let (Some(claim), Some(body)) = (pairs.next(), pairs.next()) {
                claims.push(if marked { String::new() } else { claim });
                if kind == "stored" {
                    bodies.push("b".to_owned());
                }
                bodies.push(body);
            }
            replies.push((submission.reply, n));
        }
        let given = claims.iter().filter(|c| !c.is_empty()).count();
        let mut distinct = std::collections::HashSet::with_capacity(given);
        let repeated = claims
            .iter()
            .filter(|c| !c.is_empty())
            .any(|c| !distinct.insert(c.as_str()));
        args.extend([
            retention.max_messages.to_string(),
            (retention.max_age.as_millis() as u64).to_string(),
            meta_ttl(retention).to_string(),
            kind.to_owned(),
            heads.len().to_string(),
            messages.to_string(),
            given.to_string(),
            if repeated || !marks.rising { "1" } else { "0" }.to_owned(),
            marks.fields.len().to_string(),
        ]);
        args.extend(heads);
        args.extend(marks.fields);
        args.extend(marks.first);
        args.extend(marks.last);
        args.extend(claims);
        args.extend(bodies);
        answers.push(replies);
    }
    let barrier = keys_out.first().cloned().unwrap_or_default();
    let outcome: redis::RedisResult<Vec<String>> =
        commands.invoke_stored(script, keys_out, args).await;
    let groups = match outcome {
        Ok(groups) if groups.len() == answers.len() => groups,
        Ok(groups) => {
            tracing::warn!(
                got = groups.len(),
                expected = answers.len(),
                "unexpected reply to a publish batch"
            );
            fail_all(answers.into_iter().flatten(), "not published");
            return None;
        }
        Err(error) => {
            tracing::warn!(%error, groups = answers.len(), "publish through Redis failed");
            // Stored, maybe, but `--redis-min-replicas` was not met: said so, not "down".
            let unconfirmed = error
                .to_string()
                .contains("not confirmed by enough replicas");
            fail_all(
                answers.into_iter().flatten(),
                if unconfirmed {
                    "not confirmed by enough Redis replicas; retry with the same message id"
                } else {
                    "not published"
                },
            );
            return None;
        }
    };
    let mut answered = Answered {
        barrier,
        answers: Vec::new(),
    };
    for (answer, replies) in groups.iter().zip(answers) {
        let counts: Vec<usize> = replies.iter().map(|(_, n)| *n).collect();
        let serials = serials_of(answer, &counts);
        for ((reply, _), serials) in replies.into_iter().zip(serials) {
            answered.answers.push((reply, serials));
        }
    }
    Some(answered)
}

fn fail_all(
    replies: impl Iterator<Item = (oneshot::Sender<Result<Serials>>, usize)>,
    then: &'static str,
) {
    for (reply, _) in replies {
        let _ = reply.send(Err(BackendError::bus_down(then)));
    }
}

/// A group's part of the reply, per publication (`counts` messages each): its serials, or why
/// the group was not stored. `""`: ephemeral, no serials. `"!why"`: failed. `"<epoch> <first>"`:
/// every message stored, with consecutive serials from `first`. `"<epoch> <token>…"`: a token
/// per message, its position or `-` for an idempotent repeat.
fn serials_of(answer: &str, counts: &[usize]) -> Vec<Result<Serials>> {
    if let Some(why) = answer.strip_prefix('!') {
        tracing::warn!(reply = why, "a channel's part of a publish batch failed");
        return counts
            .iter()
            .map(|_| Err(BackendError::bus_down("not published")))
            .collect();
    }
    let mut tokens = answer.split(' ');
    let epoch = tokens.next().unwrap_or_default();
    let tokens: Vec<&str> = tokens.collect();
    let total: usize = counts.iter().sum();
    let consecutive = match tokens.as_slice() {
        [first] if total > 1 => first.parse::<u64>().ok(),
        _ => None,
    };
    let mut next = 0;
    counts
        .iter()
        .map(|&n| {
            let serials = (next..next + n)
                .map(|i| {
                    if epoch.is_empty() {
                        return None;
                    }
                    let position = match consecutive {
                        Some(first) => first + i as u64,
                        None => tokens.get(i)?.parse().ok()?,
                    };
                    serial_of(&format!("{epoch}-{position}"))
                })
                .collect();
            next += n;
            Ok(serials)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(channel: &str, id: &str, stored: bool) -> Submission {
        Submission {
            channel: channel.to_owned(),
            retention: stored.then(Retention::default),
            connection_id: "c".to_owned(),
            id: id.to_owned(),
            msg_serial: None,
            args: Vec::new(),
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_channels_stored_and_ephemeral_publications_keep_their_order() {
        let batch = vec![
            submission("room", "a", true),
            submission("room", "b", true),
            submission("other", "x", true),
            submission("room", "typing", false),
            submission("room", "c", true),
            submission("other", "y", true),
        ];
        let groups = grouped(batch);
        let groups: Vec<Vec<&str>> = groups
            .iter()
            .map(|group| group.iter().map(|s| s.id.as_str()).collect())
            .collect();
        // The ephemeral one between b and c is announced between them.
        assert_eq!(
            groups,
            [vec!["a", "b"], vec!["x", "y"], vec!["typing"], vec!["c"]]
        );
    }
}
