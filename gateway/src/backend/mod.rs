//! The back-end seam: what the gateway core needs from "memory or Redis", one trait per concern,
//! decided once (`Gateway::connect_bus` installs Redis, else memory holds everything).
//!
//! - `Bus`: how a publication and a presence change reach every subscriber in the deployment,
//!   and how a node starts and stops listening to a channel.
//! - `SessionStore`: resume records, so a connection resumes on another node.
//! - `EventRecords`: which channels took a domain event, and its answer.
//! - `WebhookState`: webhook occupancy, debounced events and delivery queues.
//! - `SharedAuth`: token-request nonces and revocations.
//! - `Nodes`: this node's id in the cluster and every node's dashboard numbers.
//! - `PushStore` (`push.rs`): push device registrations and channel push subscriptions.
//!
//! `MemoryBackend` (`memory.rs`, one process: the hub is the bus) and `RedisBackend`
//! (`redis/`, many processes) keep them; the contract suite runs both through the same checks.
//! The Redis back-end calls the node back only through `BackendEvents` (centrifuge's
//! `BrokerEventHandler`), which the gateway implements in one adapter: it never sees the
//! gateway's state.

pub(crate) mod memory;
pub(crate) mod memory_webhooks;
pub(crate) mod push;
pub(crate) mod records;
pub(crate) mod redis;
pub(crate) mod session;
#[cfg(test)]
pub(crate) mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use protocol::{Annotation, ErrorCode, ErrorInfo, Message, PresenceMessage};

use crate::auth::{Auth, NonceClaim, Revocation};
use crate::config::Retention;
use crate::hub::{Annotating, Contribution, Hub, Publication, Serials};
use crate::pulse::NodePulse;
use records::EventRecord;
use session::{ConnectionKey, HeldHere, Parked};

pub(crate) type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) type Result<T, E = BackendError> = std::result::Result<T, E>;

/// What most back-end calls return: a future of a result.
pub(crate) type Reply<'a, T> = BackendFuture<'a, Result<T>>;

/// A submitted publication's outcome: its serials once stored (`Bus::submit`).
pub(crate) type Ticket = BackendFuture<'static, Result<Serials>>;

/// What can go wrong in a back-end, mapped to the wire in one place (`BackendError::info`).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Redis did not do it: nothing was stored.
    #[error("the {store} (Redis) is unavailable; {then}")]
    Unavailable {
        store: &'static str,
        then: &'static str,
    },
    /// A channel was not subscribed and caught up in time.
    #[error("the message bus (Redis) did not answer; try again")]
    NoAnswer,
    #[error("could not encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    /// A resume for a connection that cannot be taken over (expired, closed, another identity).
    #[error(
        "unable to recover the connection (expired, closed or not yours); this is a new connection"
    )]
    NotRecoverable,
    /// The hub refused (the memory bus publishes through it).
    #[error("{}", .0.message)]
    Refused(ErrorInfo),
    /// Start-up: Redis could not be reached or set up.
    #[error("{what}: {source}")]
    Start {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BackendError {
    /// The bus (Redis) failed; `then` tells the client what happened or what to do.
    pub(crate) fn bus_down(then: &'static str) -> BackendError {
        BackendError::Unavailable {
            store: "message bus",
            then,
        }
    }

    /// The wire error: one table for every back-end failure.
    pub fn info(&self) -> ErrorInfo {
        let code = match self {
            BackendError::Unavailable { .. }
            | BackendError::NoAnswer
            | BackendError::Start { .. } => ErrorCode::ServiceUnavailable,
            BackendError::Encode { .. } => ErrorCode::Internal,
            BackendError::NotRecoverable => ErrorCode::UnableToRecover,
            BackendError::Refused(info) => return info.clone(),
        };
        code.info(self.to_string())
    }
}

impl From<BackendError> for ErrorInfo {
    fn from(error: BackendError) -> ErrorInfo {
        error.info()
    }
}

impl From<ErrorInfo> for BackendError {
    fn from(info: ErrorInfo) -> BackendError {
        BackendError::Refused(info)
    }
}

/// The back-end a gateway runs on: each concern behind its trait.
#[derive(Clone)]
pub(crate) struct Backend {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) sessions: Arc<dyn SessionStore>,
    pub(crate) events: Arc<dyn EventRecords>,
    pub(crate) auth: Arc<dyn SharedAuth>,
    pub(crate) nodes: Arc<dyn Nodes>,
    pub(crate) webhooks: Arc<dyn WebhookState>,
    pub(crate) push: Arc<dyn push::PushStore>,
}

pub(crate) trait Bus: Send + Sync {
    /// Stores and delivers a checked, stamped publication; returns each message's serial (None
    /// for an idempotent repeat). Consecutive serials per channel, in one order everywhere.
    /// An error means nothing was stored: the publisher is told (NACK / 5xx).
    fn publish<'a>(
        &'a self,
        hub: &'a Hub,
        publication: Publication<'a>,
        retention: Retention,
    ) -> Reply<'a, Serials> {
        Box::pin(async move { self.submit(hub, publication, retention).await?.await })
    }

    /// `publish` in two halves, so a connection can pipeline its publishes: the returned future
    /// hands the publication over (in call order: the order of a channel's serials), and its
    /// ticket resolves once it is stored. A ticket needs no polling to make progress.
    fn submit<'a>(
        &'a self,
        hub: &'a Hub,
        publication: Publication<'a>,
        retention: Retention,
    ) -> Reply<'a, Ticket>;

    /// Delivers a checked, stamped ephemeral publication to every subscriber in the deployment
    /// without storing it: no serial (every one `None`), no log, nothing for a resume or
    /// history. Repeats of a message id are dropped as for `publish`. An error means it went
    /// nowhere: the publisher is told (NACK / 5xx), never a silent drop.
    #[cfg(test)]
    fn publish_ephemeral<'a>(
        &'a self,
        hub: &'a Hub,
        publication: Publication<'a>,
    ) -> Reply<'a, Serials> {
        Box::pin(async move { self.submit_ephemeral(hub, publication).await?.await })
    }

    /// `publish_ephemeral` in two halves, as `submit`.
    fn submit_ephemeral<'a>(
        &'a self,
        hub: &'a Hub,
        publication: Publication<'a>,
    ) -> Reply<'a, Ticket>;

    /// Applies checked, stamped presence events everywhere.
    fn presence<'a>(
        &'a self,
        hub: &'a Hub,
        channel: &'a str,
        events: &'a [PresenceMessage],
    ) -> Reply<'a, ()>;

    /// Stores and delivers checked, stamped annotations of a channel's messages; returns their
    /// serials (None for an idempotent repeat). 40400 when one names a message the channel does
    /// not hold. An error means none was applied.
    fn annotate<'a>(&'a self, hub: &'a Hub, batch: Annotating<'a>) -> Reply<'a, Serials>;

    /// Up to `limit` raw annotations of one message, oldest first, after the annotation serial
    /// `after`; `None` when the message is unknown.
    fn annotations<'a>(
        &'a self,
        hub: &'a Hub,
        channel: &'a str,
        message_serial: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> Reply<'a, Option<Vec<Arc<Annotation>>>>;

    /// Shares presence events this node already applied (leaves of a connection that went)
    /// with the other nodes, in the background (a failure is logged).
    fn announce(&self, channel: &str, events: &[PresenceMessage]);

    /// One more local listener on `channel`; resolves once this node is caught up with it.
    fn join<'a>(&'a self, channel: &'a str) -> Reply<'a, ()>;

    /// One local listener fewer.
    fn leave(&self, channel: &str);

    /// Whether the bus works end to end (for readiness).
    fn healthy(&self) -> bool;
}

/// Resume records: what another node needs to take a connection over.
pub(crate) trait SessionStore: Send + Sync {
    /// Whether another node can take this node's connections over (so a stopping node hands
    /// its parked ones over).
    fn shared(&self) -> bool;

    /// Writes (or rewrites) a connection's record as held by this node.
    fn record(&self, key: &ConnectionKey, parked: &Parked, is_parked: bool);

    /// A new (or resumed) connection's record, written before its CONNECTED goes out.
    fn record_new<'a>(
        &'a self,
        key: &'a ConnectionKey,
        parked: &'a Parked,
    ) -> BackendFuture<'a, ()>;

    /// Forgets a connection's record, unless another node has taken it over since.
    fn forget(&self, key: &ConnectionKey);

    /// Forgets a connection's own presence grace (its members are no longer held here).
    fn forget_grace(&self, connection_id: &str);

    /// Marks a record released: this node let go of it for a resume elsewhere.
    fn release(&self, key: &ConnectionKey, parked: &Parked);

    /// Waits (bounded) until every record write queued so far is done.
    fn flush(&self) -> BackendFuture<'_, ()>;

    /// Keeps the records of this node's live connections from expiring.
    fn refresh(&self, keys: Vec<ConnectionKey>) -> BackendFuture<'_, ()>;

    /// A resume for a key another node issued: released by its live node, or taken from a dead
    /// one. `Ok(None)`: no such record.
    fn take<'a>(
        &'a self,
        key: &'a ConnectionKey,
        client_id: Option<&'a str>,
    ) -> Reply<'a, Option<Parked>>;
}

/// Records of domain events (`POST /events`), by `<app>/<event id>`.
pub(crate) trait EventRecords: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> Reply<'a, EventRecord>;

    /// Channel `n` took the event at `serial` (empty: a concurrent repeat published it).
    fn record_channel<'a>(&'a self, key: &'a str, n: usize, serial: &'a str) -> Reply<'a, ()>;

    /// Stores the answer unless one stands; returns the answer that stands.
    fn record_answer<'a>(&'a self, key: &'a str, answer: String) -> Reply<'a, String>;
}

/// Token-request nonces and revocations, shared by every node.
pub(crate) trait SharedAuth: Send + Sync {
    /// Claims a nonce once per key while its request is within its window; false: reused.
    /// `local` is this node's auth, which keeps them in one process.
    fn claim_nonce<'a>(
        &'a self,
        local: &'a Auth,
        claim: &'a NonceClaim,
        now_ms: u64,
    ) -> Reply<'a, bool>;

    /// Stores revocations and announces them to every other node.
    fn store_revocations<'a>(&'a self, revocations: &'a [Revocation], now_ms: u64)
        -> Reply<'a, ()>;

    /// Every stored revocation that may still apply to a live token.
    fn load_revocations(&self, now_ms: u64) -> Reply<'_, Vec<Revocation>>;
}

/// One member of the node set as the dashboard sees it.
pub(crate) struct NodeReading {
    pub(crate) node: String,
    pub(crate) lease_held: bool,
    pub(crate) pulse: Option<NodePulse>,
}

/// The nodes of the deployment.
pub(crate) trait Nodes: Send + Sync {
    /// This process in the cluster (the server id plus a per-start suffix); none alone.
    fn node(&self) -> Option<&str>;

    /// Stores this node's numbers for the others' dashboards.
    fn share_pulse<'a>(&'a self, pulse: &'a NodePulse) -> Reply<'a, ()>;

    /// Every node in the node set, sorted by id (empty alone).
    fn readings(&self) -> Reply<'_, Vec<NodeReading>>;
}

/// A debounced webhook event: stored under `key` (replacing one pending there) and due at
/// `due_ms`, unless cancelled first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Debounced<'a> {
    pub(crate) key: &'a str,
    pub(crate) event: &'a str,
    pub(crate) due_ms: u64,
}

/// What webhooks keep across nodes (see `redis/webhooks.rs` for what each key holds).
pub(crate) trait WebhookState: Send + Sync {
    /// This node's attachments on `channel` went 0→1: true when `channel.opened` is due (the
    /// cluster's went 0→1 and no pending `channel.closed` was cancelled).
    fn occupy<'a>(&'a self, channel: &'a str, pending_key: &'a str) -> Reply<'a, bool>;

    /// `node`'s attachments on `channel` went 1→0: true when the cluster has none left and
    /// `closed` (the `channel.closed`) is now scheduled.
    fn vacate<'a>(
        &'a self,
        node: &'a str,
        channel: &'a str,
        closed: Debounced<'a>,
    ) -> Reply<'a, bool>;

    /// Stores a debounced event and schedules it.
    fn pend<'a>(&'a self, event: Debounced<'a>) -> Reply<'a, ()>;

    /// True if an event was pending under `key` (now cancelled).
    fn cancel<'a>(&'a self, key: &'a str) -> Reply<'a, bool>;

    /// Pending events due by `now_ms`, oldest first.
    fn due(&self, now_ms: u64) -> Reply<'_, Vec<String>>;

    /// True if `pending` was still pending under `key`; it is taken (emit it).
    fn fire<'a>(&'a self, key: &'a str, pending: &'a str) -> Reply<'a, bool>;

    /// The channels a (dead) node had attachments on.
    fn occupied_by<'a>(&'a self, node: &'a str) -> Reply<'a, Vec<String>>;

    /// Appends to a webhook's queue; returns how many of the oldest items the bound dropped.
    fn push<'a>(&'a self, webhook: &'a str, max: usize, items: Vec<String>) -> Reply<'a, u64>;

    /// The oldest `n` items: (queue id, item JSON).
    fn peek<'a>(&'a self, webhook: &'a str, n: usize) -> Reply<'a, Vec<(String, String)>>;

    /// Removes delivered items.
    fn ack<'a>(&'a self, webhook: &'a str, ids: Vec<String>) -> Reply<'a, ()>;

    /// Whether this node may deliver `webhook` now (one node at a time).
    fn may_deliver<'a>(&'a self, webhook: &'a str, ttl_ms: u64) -> Reply<'a, bool>;

    /// The presence members of `channel` across the deployment.
    fn members<'a>(&'a self, channel: &'a str) -> Reply<'a, Vec<PresenceMessage>>;
}

/// A publication as it arrived on the bus, serials assigned.
pub(crate) struct Arrival<'a> {
    pub(crate) channel: &'a str,
    pub(crate) messages: Vec<Message>,
    /// The publishing connection (for `echo=false`) and the ProtocolMessage id.
    pub(crate) connection_id: Option<&'a str>,
    pub(crate) id: Option<String>,
}

/// What a node keeps of a channel and how far it got.
pub(crate) struct Position {
    pub(crate) retention: Retention,
    /// The serial (and message id, if the log still has it) this node last delivered.
    pub(crate) last: Option<(String, Option<String>)>,
    /// The channel's rule allows annotations: a catch-up loads their aggregates too.
    pub(crate) annotated: bool,
}

/// How a back-end tells the node what arrived for it (centrifuge's `BrokerEventHandler`). The
/// gateway implements it once; every method is a no-op once the gateway is gone.
pub(crate) trait BackendEvents: Send + Sync {
    /// Whether the node still runs: the back-end's tasks end when it does not.
    fn running(&self) -> bool;

    /// Where the node is on `channel`; none once the node is gone.
    fn position(&self, channel: &str) -> Option<Position>;

    /// A publication arrived; false: its serial does not follow on (catch the channel up).
    fn deliver(&self, arrival: Arrival<'_>) -> std::result::Result<bool, ErrorInfo>;

    /// An ephemeral publication arrived (no serials): deliver it live, store nothing.
    fn deliver_ephemeral(&self, arrival: Arrival<'_>) -> std::result::Result<(), ErrorInfo>;

    /// What the store holds after `floor`, for the node to deliver what it missed; `complete`:
    /// the epoch the node knew ended with what it has.
    fn catch_up(&self, channel: &str, floor: String, messages: Vec<Message>, complete: bool);

    /// The store's members of `channel`; true when members held here are missing from it
    /// and were kept (`trust`: false) for a re-read.
    fn sync_members(&self, channel: &str, members: Vec<PresenceMessage>, trust: bool) -> bool;

    /// Whether the node still holds `channel`.
    fn holds(&self, channel: &str) -> bool;

    /// Presence events announced on `channel`.
    fn apply_presence(&self, channel: &str, events: Vec<PresenceMessage>);

    /// Annotations announced on `channel`, each with its counter; false: they do not follow on
    /// (reload the channel's aggregates). `report`: this node stored them, so it reports the
    /// summaries they make (webhooks).
    fn deliver_annotations(
        &self,
        channel: &str,
        annotations: Vec<(u64, Annotation)>,
        publisher: Option<&str>,
        report: bool,
    ) -> bool;

    /// The store's aggregates of `channel`'s messages and its annotation counter; `announce`:
    /// subscribers may have missed summaries.
    fn load_annotations(
        &self,
        channel: &str,
        last_a: u64,
        stored: Vec<Contribution>,
        announce: bool,
    );

    /// Another node resumes the connection with `key`: hand it over.
    fn release(&self, key: ConnectionKey);

    /// Revocations announced by a node (this one included).
    fn apply_revocations(&self, revocations: Vec<Revocation>);

    /// The pub/sub link came up: reload what announcements may have been missed.
    fn link_up(&self);

    /// What this node holds that the store must hold too (it came back empty).
    fn held_here(&self) -> Option<HeldHere>;

    /// A node died: its share of channel occupancy goes (webhooks).
    fn node_died(&self, node: String);

    /// Orphaned members this node swept left `channel` (webhooks).
    fn members_left(&self, channel: String, events: Vec<PresenceMessage>);
}

impl Backend {
    /// A back-end whose one value keeps every concern but webhook state (and push state, in
    /// memory until `with_push`).
    pub(crate) fn of<T>(one: Arc<T>, webhooks: Arc<dyn WebhookState>) -> Backend
    where
        T: Bus + SessionStore + EventRecords + SharedAuth + Nodes + 'static,
    {
        Backend {
            bus: one.clone(),
            sessions: one.clone(),
            events: one.clone(),
            auth: one.clone(),
            nodes: one,
            webhooks,
            push: Arc::new(push::MemoryPush::default()),
        }
    }

    /// The same back-end with its push state kept in `push` (Redis) rather than in memory.
    pub(crate) fn with_push(self, push: Arc<dyn push::PushStore>) -> Backend {
        Backend { push, ..self }
    }
}
