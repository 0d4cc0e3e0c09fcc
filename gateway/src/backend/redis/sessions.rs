//! Resumable connection state in Redis, so a client cut off from one node resumes on another.
//!
//! Each connection has a record (`rt:conn:{key}`: node, id, clientId, and once parked its
//! presence channels, grace and whether its members left), written when it connects or parks
//! and kept alive while it lives. A resume for a key this node does not hold reads the record:
//! if the holding node is alive it is asked (on its control topic) to release the connection
//! and hands over what it parked; if its lease lapsed the connection is taken as it was, its
//! presence members (orphaned by the reaper, see `presence.rs`) adopted, so nobody sees them
//! leave.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::RedisBackend;
use crate::backend::session::{ConnectionKey, Parked};
use crate::backend::{BackendError, BackendFuture, Reply, Result, SessionStore};

fn record_key(key: &ConnectionKey) -> String {
    format!("rt:conn:{key}")
}

pub(super) fn control_topic(node: &str) -> String {
    format!("rt:ctl:{node}")
}

/// How long a resume waits for a live node to release the connection.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Deletes the record if its node is still `expected`. KEYS: record. ARGV: expected node.
const FORGET_SCRIPT: &str = include_str!("scripts/forget_session.lua");

/// Takes the record if its node is still `expected`. KEYS: record. ARGV: expected node.
const TAKE_SCRIPT: &str = include_str!("scripts/take_session.lua");

pub(super) enum RecordOp {
    Write {
        key: ConnectionKey,
        fields: Vec<(&'static str, String)>,
        ttl_ms: u64,
    },
    Forget {
        key: ConnectionKey,
        node: String,
    },
    /// Where `node`'s reaper finds a connection's own presence grace (`remainPresentFor`,
    /// `None`: forget it).
    Grace {
        node: String,
        connection_id: String,
        grace_ms: Option<u64>,
    },
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// How long a node's graces outlive their last write (a node that lives on rewrites them).
const GRACES_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Queues `HSET key fields` and `PEXPIRE key ttl_ms`: every hash here expires with its writes.
fn hset_expiring(
    pipe: &mut redis::Pipeline,
    key: &str,
    fields: impl redis::ToRedisArgs,
    ttl_ms: u64,
) {
    pipe.cmd("HSET")
        .arg(key)
        .arg(fields)
        .ignore()
        .cmd("PEXPIRE")
        .arg(key)
        .arg(ttl_ms)
        .ignore();
}

/// A connection's own presence grace (`remainPresentFor`) where it has members to keep.
fn own_grace_ms(parked: &Parked) -> Option<u64> {
    parked
        .presence_grace
        .filter(|_| !parked.present_on.is_empty())
        .map(|grace| grace.as_millis() as u64)
}

/// How long a new connection's CONNECTED waits for its record.
const NEW_RECORD_TIMEOUT: Duration = Duration::from_secs(1);

/// Bound of the record queue.
pub(super) const RECORD_QUEUE: usize = 10_000;

/// Applies record writes in order.
pub(super) async fn write_records(
    commands: super::Commands,
    mut ops: tokio::sync::mpsc::Receiver<RecordOp>,
) {
    while let Some(op) = ops.recv().await {
        let op = match op {
            RecordOp::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            op => op,
        };
        let result: redis::RedisResult<()> = commands
            .run(move |mut connection| {
                Box::pin(async move {
                    match op {
                        RecordOp::Write {
                            key,
                            fields,
                            ttl_ms,
                        } => {
                            // One key, one slot: a pipeline even on a cluster.
                            let mut pipe = redis::pipe();
                            hset_expiring(&mut pipe, &record_key(&key), fields, ttl_ms);
                            pipe.query_async(&mut connection).await
                        }
                        RecordOp::Grace {
                            node,
                            connection_id,
                            grace_ms: Some(grace_ms),
                        } => {
                            let mut pipe = redis::pipe();
                            hset_expiring(
                                &mut pipe,
                                &super::presence::graces_key(&node),
                                (connection_id, grace_ms),
                                GRACES_TTL_MS,
                            );
                            pipe.query_async(&mut connection).await
                        }
                        RecordOp::Grace {
                            node,
                            connection_id,
                            grace_ms: None,
                        } => {
                            redis::cmd("HDEL")
                                .arg(super::presence::graces_key(&node))
                                .arg(connection_id)
                                .query_async(&mut connection)
                                .await
                        }
                        RecordOp::Flush(_) => Ok(()),
                        RecordOp::Forget { key, node } => {
                            redis::Script::new(FORGET_SCRIPT)
                                .key(record_key(&key))
                                .arg(node)
                                .invoke_async(&mut connection)
                                .await
                        }
                    }
                })
            })
            .await;
        if let Err(error) = result {
            tracing::debug!(%error, "connection record not written");
        }
    }
}

struct Record {
    node: String,
    id: String,
    client: String,
    present: Vec<String>,
    grace_ms: Option<u64>,
    left: bool,
}

fn parse(flat: &[String]) -> Option<Record> {
    let get = |name: &str| {
        flat.chunks(2)
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair.get(1))
            .cloned()
    };
    Some(Record {
        node: get("node")?,
        id: get("id")?,
        client: get("client").unwrap_or_default(),
        present: get("present")
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default(),
        grace_ms: get("grace").and_then(|g| g.parse().ok()),
        left: get("left").as_deref() == Some("1"),
    })
}

impl RedisBackend {
    pub(super) fn record_ttl_ms(&self) -> u64 {
        (self.timing.connection_state_ttl + self.timing.node_lease).as_millis() as u64
    }

    /// Writes (or rewrites) a connection's record as held by this node.
    fn record_connection(&self, key: &ConnectionKey, parked: &Parked, is_parked: bool) {
        self.queue_record(RecordOp::Write {
            key: key.clone(),
            fields: self.record_fields(parked, is_parked),
            ttl_ms: self.record_ttl_ms(),
        });
        self.record_grace(parked);
    }

    /// A new (or resumed) connection's record, written before its CONNECTED goes out: a
    /// transport that drops at once and resumes on another node must find it. Straight to
    /// Redis, not through the queue (which a reconnect storm fills), and bounded: a slow Redis
    /// costs this connection only its cross-node resume.
    async fn record_new_connection(&self, key: &ConnectionKey, parked: &Parked) {
        let mut pipe = redis::pipe();
        hset_expiring(
            &mut pipe,
            &record_key(key),
            self.record_fields(parked, false),
            self.record_ttl_ms(),
        );
        let write = self.commands.run(move |mut connection| {
            Box::pin(async move { connection.query_pipeline::<()>(&pipe).await })
        });
        match tokio::time::timeout(NEW_RECORD_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "connection record not written"),
            Err(_) => tracing::debug!("connection record not written in time"),
        }
        self.record_grace(parked);
    }

    fn record_grace(&self, parked: &Parked) {
        if let Some(grace_ms) = own_grace_ms(parked) {
            // For whoever reaps this node: its members' grace if it dies.
            self.queue_record(RecordOp::Grace {
                node: self.node.clone(),
                connection_id: parked.id.to_string(),
                grace_ms: Some(grace_ms),
            });
        }
    }

    fn record_fields(&self, parked: &Parked, is_parked: bool) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("node", self.node.clone()),
            ("id", parked.id.to_string()),
            ("client", parked.client_id.clone().unwrap_or_default()),
            ("parked", u8::from(is_parked).to_string()),
            (
                "present",
                serde_json::to_string(&parked.present_on).unwrap_or_default(),
            ),
            (
                "left",
                u8::from(parked.members_left.load(Ordering::Acquire)).to_string(),
            ),
        ];
        if let Some(grace) = parked.presence_grace {
            fields.push(("grace", grace.as_millis().to_string()));
        }
        fields
    }

    /// Writes back every record this node holds (Redis lost them): straight through, in
    /// pipelines, not through the bounded queue, which a big node's records would overflow.
    pub(super) async fn rewrite_records(
        &self,
        records: &[(ConnectionKey, Parked, bool)],
    ) -> redis::RedisResult<()> {
        let ttl = self.record_ttl_ms();
        for chunk in records.chunks(500) {
            let mut pipe = redis::pipe();
            for (key, parked, is_parked) in chunk {
                hset_expiring(
                    &mut pipe,
                    &record_key(key),
                    self.record_fields(parked, *is_parked),
                    ttl,
                );
                if let Some(grace_ms) = own_grace_ms(parked) {
                    hset_expiring(
                        &mut pipe,
                        &super::presence::graces_key(&self.node),
                        (parked.id.as_ref(), grace_ms),
                        GRACES_TTL_MS,
                    );
                }
            }
            self.commands
                .run(move |mut connection| {
                    Box::pin(async move { connection.query_pipeline::<()>(&pipe).await })
                })
                .await?;
        }
        Ok(())
    }

    /// Forgets a connection's own presence grace: it no longer has members held by this node.
    fn forget_own_grace(&self, connection_id: &str) {
        self.queue_record(RecordOp::Grace {
            node: self.node.clone(),
            connection_id: connection_id.to_owned(),
            grace_ms: None,
        });
    }

    /// Forgets a connection's record (it closed, or its resume window passed), unless another
    /// node has taken it over since.
    fn forget_connection(&self, key: &ConnectionKey) {
        self.queue_record(RecordOp::Forget {
            key: key.clone(),
            node: self.node.clone(),
        });
    }

    /// Marks a record released: this node let go of it for a resume elsewhere.
    fn release_connection(&self, key: &ConnectionKey, parked: &Parked) {
        self.queue_record(RecordOp::Write {
            key: key.clone(),
            fields: vec![
                ("node", String::new()),
                (
                    "present",
                    serde_json::to_string(&parked.present_on).unwrap_or_default(),
                ),
                (
                    "left",
                    u8::from(parked.members_left.load(Ordering::Acquire)).to_string(),
                ),
            ],
            ttl_ms: self.record_ttl_ms(),
        });
    }

    /// Waits (bounded) until every record write queued so far is done: a stopping node's
    /// releases must land before it exits.
    async fn flush_records(&self) {
        let (done, flushed) = tokio::sync::oneshot::channel();
        if self.records.send(RecordOp::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
        }
    }

    /// Record writes go out in order (a park's write before the release that follows it)
    /// through one bounded queue; when Redis is too slow to keep up they are dropped, which
    /// only costs those connections their cross-node resume.
    fn queue_record(&self, op: RecordOp) {
        if self.records.try_send(op).is_err() {
            tracing::warn!("connection record queue full; a cross-node resume may fail");
        }
    }

    /// Keeps the records of this node's live connections from expiring.
    async fn refresh_connections(&self, keys: Vec<ConnectionKey>) {
        if keys.is_empty() {
            return;
        }
        let ttl = self.record_ttl_ms();
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("PEXPIRE").arg(record_key(key)).arg(ttl).ignore();
            }
            let result: redis::RedisResult<()> = self
                .commands
                .run(move |mut connection| {
                    Box::pin(async move { connection.query_pipeline(&pipe).await })
                })
                .await;
            if let Err(error) = result {
                tracing::debug!(%error, "connection records not refreshed");
                return;
            }
        }
    }

    /// A resume for a key another node issued: released by its live node, or taken from a dead
    /// one. `Ok(None)`: no such record (the caller answers as for an unknown key).
    async fn take_connection(
        &self,
        key: &ConnectionKey,
        client_id: Option<&str>,
    ) -> Result<Option<Parked>> {
        let unable = || BackendError::NotRecoverable;
        let Some(record) = self.read_record(key).await? else {
            return Ok(None);
        };
        if record.client != client_id.unwrap_or_default() || record.node == self.node {
            return Err(unable());
        }
        let mut holder = record.node.clone();
        if !holder.is_empty() {
            // Ask the holder to let go; if it is dead (or dies meanwhile), wait out its lease,
            // so that it can no longer change the record or its members.
            let alive = self.node_alive(&holder).await?;
            if alive {
                self.ask_release(&holder, key).await?;
            }
            let deadline = tokio::time::Instant::now()
                + RELEASE_TIMEOUT.max(self.timing.node_lease + Duration::from_secs(1));
            let mut polls = 0u32;
            let mut alive = alive;
            while alive {
                tokio::time::sleep(Duration::from_millis(25)).await;
                match self.read_record(key).await? {
                    Some(record) if record.node.is_empty() => {
                        holder = String::new();
                        break;
                    }
                    Some(_) if tokio::time::Instant::now() < deadline => {}
                    _ => return Err(unable()),
                }
                polls += 1;
                if polls.is_multiple_of(10) {
                    alive = self.node_alive(&holder).await?;
                }
            }
        }
        let record_name = record_key(key);
        let taken: Option<Vec<String>> = self
            .commands
            .run(move |mut connection| {
                Box::pin(async move {
                    redis::Script::new(TAKE_SCRIPT)
                        .key(record_name)
                        .arg(holder)
                        .invoke_async(&mut connection)
                        .await
                })
            })
            .await
            .map_err(unavailable)?;
        let Some(record) = taken.as_deref().and_then(parse) else {
            return Err(unable());
        };
        // Its members stay, whether its node released them or died (orphaned, they wait for
        // it), unless they already left: parked past the grace, or swept as orphans.
        let mut left = record.left;
        if !left
            && !record.present.is_empty()
            && !self.adopt_members(&record.id, &record.present).await
        {
            left = self.orphans_swept(&record.id).await.map_err(unavailable)?;
        }
        Ok(Some(Parked {
            id: record.id.into(),
            client_id: client_id.map(str::to_owned),
            present_on: record.present,
            members_left: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(left)),
            presence_grace: record.grace_ms.map(Duration::from_millis),
        }))
    }

    async fn read_record(&self, key: &ConnectionKey) -> Result<Option<Record>> {
        let record = record_key(key);
        let flat: Vec<String> = self
            .commands
            .query(redis::cmd("HGETALL").arg(record).to_owned())
            .await
            .map_err(unavailable)?;
        Ok(parse(&flat))
    }

    async fn node_alive(&self, node: &str) -> Result<bool> {
        let lease = super::nodes::lease_key(node);
        self.commands
            .query(redis::cmd("EXISTS").arg(lease).to_owned())
            .await
            .map_err(unavailable)
    }

    async fn ask_release(&self, node: &str, key: &ConnectionKey) -> Result<()> {
        let topic = control_topic(node);
        self.commands
            .query::<()>(
                redis::cmd("PUBLISH")
                    .arg(topic)
                    .arg(key.as_str())
                    .to_owned(),
            )
            .await
            .map_err(unavailable)
    }
}

fn unavailable(error: redis::RedisError) -> BackendError {
    super::unavailable("connection state", "message bus", "try again")(error)
}

impl SessionStore for RedisBackend {
    fn shared(&self) -> bool {
        true
    }

    fn record(&self, key: &ConnectionKey, parked: &Parked, is_parked: bool) {
        self.record_connection(key, parked, is_parked)
    }

    fn record_new<'a>(
        &'a self,
        key: &'a ConnectionKey,
        parked: &'a Parked,
    ) -> BackendFuture<'a, ()> {
        Box::pin(self.record_new_connection(key, parked))
    }

    fn forget(&self, key: &ConnectionKey) {
        self.forget_connection(key)
    }

    fn forget_grace(&self, connection_id: &str) {
        self.forget_own_grace(connection_id)
    }

    fn release(&self, key: &ConnectionKey, parked: &Parked) {
        self.release_connection(key, parked)
    }

    fn flush(&self) -> BackendFuture<'_, ()> {
        Box::pin(self.flush_records())
    }

    fn refresh(&self, keys: Vec<ConnectionKey>) -> BackendFuture<'_, ()> {
        Box::pin(self.refresh_connections(keys))
    }

    fn take<'a>(
        &'a self,
        key: &'a ConnectionKey,
        client_id: Option<&'a str>,
    ) -> Reply<'a, Option<Parked>> {
        Box::pin(self.take_connection(key, client_id))
    }
}
