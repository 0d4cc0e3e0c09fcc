//! The realtime core: WebSocket connections speaking the Ably protocol, the hub that fans each
//! publication out to a channel's subscribers, and auth.
//!
//! Not here: HTTP routes other than the WebSocket upgrade (see the `api` crate) and wire types
//! (see `protocol`). Start at `Gateway`, then `connection::run` and `Hub::publish`.

mod annotate;
pub mod apps;
pub mod auth;
mod backend;
pub mod config;
pub mod connection;
pub mod error;
pub mod events;
pub mod frame;
pub mod hub;
pub mod limits;
mod moderation;
mod node_events;
pub mod outbox;
mod publish;
pub mod pulse;
pub mod push;
mod server;
mod sessions;
pub mod shrink;
pub mod stats;
pub mod telemetry;
mod tokens;
pub mod webhooks;
mod wiring;

use std::future::{ready, Future};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protocol::{ChannelName, Message};
use rand::distributions::{Alphanumeric, DistString};
use tokio::sync::{watch, Notify};

use annotate::Annotator;
use apps::{AppSpec, Apps};
pub use auth::{Auth, Principal};
pub use backend::BackendError;
pub use config::{ApiKey, Config, HubConfig, MinReplicas, RedisTarget, RedisTls, SentinelTarget};
pub use error::Error;
use events::{EventResult, Events};
pub use hub::{Hub, Occupancy};
use publish::Publisher;
pub use publish::{Origin, Receipt};
use sessions::Sessions;
use stats::Stats;
pub use tokens::Tokens;
use wiring::Wiring;

/// How often idle channels and expired idempotency ids are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The composition root, one per process and cheap to clone: it builds the parts, runs their
/// housekeeping and delegates to them (`publish` to `Publisher`, `tokens` is `Tokens`, …).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<GatewayState>,
}

/// The parts, each holding the handles it needs; `Gateway`'s methods only delegate to them.
struct GatewayState {
    config: Config,
    auth: Arc<Auth>,
    hub: Arc<Hub>,
    /// Live, parked and ended connections.
    sessions: Arc<Sessions>,
    /// The back-end and webhooks, as `connect_bus` leaves them.
    wiring: Arc<Wiring>,
    stats: Arc<Stats>,
    publisher: Arc<Publisher>,
    annotator: Annotator,
    events: Events,
    apps: Apps,
    tokens: Tokens,
    push: push::Push,
    /// The push services, once `start_push_services` has run.
    push_services: std::sync::OnceLock<Arc<push::Services>>,
    server_id: String,
    draining: watch::Sender<bool>,
    live_connections: AtomicUsize,
    all_closed: Notify,
}

impl Gateway {
    /// Builds the gateway and starts its housekeeping; call inside a tokio runtime.
    pub fn new(config: Config) -> Gateway {
        let server_id = config.server_id.clone().unwrap_or_else(|| {
            format!(
                "rt-{}",
                Alphanumeric.sample_string(&mut rand::thread_rng(), 8)
            )
        });
        let auth = Arc::new(Auth::new(config.keys.clone(), config.supabase.clone()));
        let hub = Arc::new(Hub::new(config::HubConfig {
            max_summary_bytes: config.limits.max_message_bytes,
            ..config.hub.clone()
        }));
        let sessions: Arc<Sessions> = Arc::default();
        let stats: Arc<Stats> = Arc::default();
        let wiring = Arc::new(Wiring::new(memory_backend(Arc::downgrade(&hub))));
        let publisher = Arc::new(Publisher::new(
            config.limits.clone(),
            hub.clone(),
            sessions.clone(),
            stats.clone(),
            wiring.clone(),
            moderation::Moderation::new(config.moderation.clone()),
        ));
        let inner = Arc::new(GatewayState {
            events: Events::new(publisher.clone(), wiring.clone()),
            annotator: Annotator::new(config.limits.clone(), hub.clone(), wiring.clone()),
            apps: Apps::new(auth.clone(), hub.clone(), stats.clone()),
            tokens: Tokens::new(
                auth.clone(),
                sessions.clone(),
                wiring.clone(),
                &config.supabase_revoke_keys,
            ),
            push: push::Push::start(
                wiring.clone(),
                hub.clone(),
                auth.clone(),
                Arc::downgrade(&publisher),
            ),
            push_services: std::sync::OnceLock::new(),
            publisher,
            auth,
            hub,
            sessions,
            wiring,
            stats,
            server_id,
            draining: watch::Sender::new(false),
            live_connections: AtomicUsize::new(0),
            all_closed: Notify::new(),
            config,
        });
        inner.auth.start();
        every(&inner, SWEEP_INTERVAL, sweep);
        every(
            &inner,
            inner.config.timing.presence_flush_interval,
            |inner| inner.hub.flush_presence(),
        );
        let batching = inner.config.hub.namespace_rules.iter();
        if batching
            .into_iter()
            .any(|(_, rules)| rules.batching.is_some())
        {
            every(&inner, BATCH_TICK, |inner| inner.hub.flush_batches());
        }
        every(
            &inner,
            inner.config.timing.presence_flush_interval,
            |inner| inner.hub.flush_summaries(),
        );
        every(&inner, OCCUPANCY_INTERVAL, |inner| {
            inner.hub.flush_occupancy()
        });
        every(&inner, PULSE_INTERVAL, |inner| {
            inner.hub.pulse().sample(protocol::now_ms())
        });
        if inner.config.redis.is_none() {
            start_webhooks(&inner);
        }
        Gateway { inner }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn server_id(&self) -> &str {
        &self.inner.server_id
    }

    pub(crate) fn sessions(&self) -> &Arc<Sessions> {
        &self.inner.sessions
    }

    /// Joins the cluster through Redis when `Config::redis` is set; call once, before serving.
    /// Fails (naming Redis) when it cannot be reached.
    pub async fn connect_bus(&self) -> Result<(), BackendError> {
        let Some(target) = self.config().redis.clone() else {
            return Ok(());
        };
        let redis = backend::redis::RedisBackend::connect(
            &target,
            self.config().redis_tls.as_ref(),
            self.config().redis_min_replicas,
            &self.inner.server_id,
            self.config().timing.clone(),
            node_events::NodeEvents::of(self),
        )
        .await?;
        self.inner
            .wiring
            .use_redis(backend::Backend::of(redis.clone(), redis.clone()).with_push(redis));
        // Revocations made while this node was down apply before it serves anyone.
        self.inner.tokens.load_revocations_at_start().await?;
        start_webhooks(&self.inner);
        share_pulse(&self.inner);
        // Live connections' resume records must not expire while they live.
        let inner = Arc::downgrade(&self.inner);
        let every = self.config().timing.connection_state_ttl / 3;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                let keys = inner.sessions.live_keys();
                let store = Gateway { inner }.session_store().clone();
                store.refresh(keys).await;
            }
        });
        Ok(())
    }

    pub(crate) fn backend(&self) -> &backend::Backend {
        self.inner.wiring.backend()
    }

    pub(crate) fn bus(&self) -> &dyn backend::Bus {
        self.inner.wiring.bus()
    }

    pub(crate) fn session_store(&self) -> &Arc<dyn backend::SessionStore> {
        self.inner.wiring.session_store()
    }

    /// Token requests and revocations.
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The push admin API (registrations, subscriptions, direct publish) and `Push::gone`.
    pub fn push(&self) -> &push::Push {
        &self.inner.push
    }

    /// Plugs in the transport for push recipients other than `ablyChannel` (Web Push, FCM,
    /// APNs); set once.
    pub fn set_push_transport(&self, transport: Arc<dyn push::PushTransport>) {
        self.inner.push.set_transport(transport);
    }

    /// Starts the configured push services (Web Push, FCM, APNs) and plugs them in as the
    /// transport; a device one reports gone is marked failed. Once; later calls do nothing.
    pub fn start_push_services(&self, config: ::push::Config) {
        if self.inner.push_services.get().is_some() {
            return;
        }
        let state = Arc::downgrade(&self.inner);
        let services = Arc::new(push::Services::start(config, move |app, device, reason| {
            let Some(state) = state.upgrade() else {
                return;
            };
            tokio::spawn(async move {
                if let Err(error) = state.push.gone(&app, &device, reason).await {
                    tracing::warn!(%device, message = %error.message, "a device the push service reports gone was not marked failed");
                }
            });
        }));
        if self.inner.push_services.set(services.clone()).is_ok() {
            self.set_push_transport(services);
        }
    }

    /// The push services started, if any: the VAPID public key, their metrics.
    pub fn push_services(&self) -> Option<&push::Services> {
        self.inner.push_services.get().map(|services| &**services)
    }

    /// See `Publisher::publish`.
    pub async fn publish(
        &self,
        principal: &Principal,
        channel: &ChannelName,
        messages: Vec<Message>,
        origin: Origin<'_>,
    ) -> Result<Receipt, Error> {
        self.inner
            .publisher
            .publish(principal, channel, messages, origin)
            .await
    }

    /// See `Publisher::submit`.
    pub(crate) async fn submit(
        &self,
        principal: &Principal,
        channel: &ChannelName,
        messages: Vec<Message>,
        origin: Origin<'_>,
    ) -> Result<(backend::Ticket, publish::Submitted), Error> {
        self.inner
            .publisher
            .submit(principal, channel, messages, origin)
            .await
    }

    /// See `Publisher::settle`.
    pub(crate) fn settle(
        &self,
        principal: &Principal,
        submitted: publish::Submitted,
        stored: backend::Result<hub::Serials>,
    ) -> Result<Receipt, Error> {
        self.inner.publisher.settle(principal, submitted, stored)
    }

    /// See `Publisher::mutate`.
    pub async fn mutate(
        &self,
        principal: &Principal,
        channel: &ChannelName,
        op: Message,
        origin: Origin<'_>,
    ) -> Result<Receipt, Error> {
        self.inner
            .publisher
            .mutate(principal, channel, op, origin)
            .await
    }

    /// See `Annotator::annotate`.
    pub async fn annotate(
        &self,
        principal: &Principal,
        channel: &ChannelName,
        annotations: Vec<protocol::Annotation>,
        origin: Origin<'_>,
    ) -> Result<hub::Serials, Error> {
        self.inner
            .annotator
            .annotate(principal, channel, annotations, origin)
            .await
    }

    /// The raw annotations of one message (`channel` a hub key), oldest first, after the
    /// annotation serial `after`; `None` when the message is unknown. See `Annotator::list`.
    pub async fn annotations(
        &self,
        channel: &str,
        message_serial: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<Arc<protocol::Annotation>>>, protocol::ErrorInfo> {
        self.inner
            .annotator
            .list(channel, message_serial, after, limit)
            .await
    }

    /// See `Events::publish`.
    pub async fn publish_event(
        &self,
        principal: &Principal,
        event: &protocol::event::Event,
    ) -> EventResult {
        self.inner.events.publish(principal, event).await
    }

    /// A sandbox app, its presence fixtures entered through the bus (stored in Redis when
    /// clustered, as a client's would be); an app whose fixtures the bus refused is not made.
    pub async fn create_app(&self, spec: &AppSpec) -> Result<(String, Vec<ApiKey>), Error> {
        let (app_id, keys, fixtures) = self.inner.apps.create(spec)?;
        for fixture in &fixtures {
            let entered = self
                .bus()
                .presence(self.hub(), &fixture.channel, &fixture.members)
                .await;
            if let Err(error) = entered {
                self.delete_app(&app_id).await;
                return Err(protocol::ErrorInfo::from(error).into());
            }
        }
        Ok((app_id, keys))
    }

    pub async fn delete_app(&self, app_id: &str) -> bool {
        let Some(fixtures) = self.inner.apps.fixtures_of(app_id) else {
            return false;
        };
        for fixture in &fixtures {
            let leaves = fixture.leaves();
            let left = self
                .bus()
                .presence(self.hub(), &fixture.channel, &leaves)
                .await;
            if let Err(error) = left {
                tracing::warn!(%app_id, channel = %fixture.channel, %error, "fixtures not left");
            }
        }
        let deleted = self.inner.apps.delete(app_id);
        if deleted {
            self.inner.push.forget_app(app_id);
        }
        deleted
    }

    /// A stopping node hands its parked connections over (`Sessions::hand_over`).
    pub async fn hand_over_parked(&self) {
        self.sessions().hand_over(&**self.session_store()).await;
    }

    /// A connection (or a history read) starts listening on a channel; with a bus, the node
    /// subscribes to it and catches it up from the store first. On an error the caller must
    /// still `leave_channel`.
    pub(crate) async fn join_channel(&self, channel: &str) -> Result<(), protocol::ErrorInfo> {
        Ok(self.bus().join(channel).await?)
    }

    pub(crate) fn leave_channel(&self, channel: &str) {
        self.bus().leave(channel);
    }

    pub(crate) fn report_webhook(&self, report: webhooks::Report) {
        self.inner.wiring.report_webhook(report);
    }

    /// Ends a connection's presence on `channel` (it closed, or its grace passed): LEAVEs
    /// applied here at once (so the local copy is right even if this node stops listening to
    /// the channel), and announced through the bus so every other node hears them.
    pub(crate) fn leave_presence(&self, channel: &str, connection_id: &str) {
        self.leave_presence_entered(channel, connection_id, &[]);
    }

    /// `leave_presence`, plus LEAVEs for the `entered` client ids this node has not heard back
    /// from the bus yet (clustered, a close right after an ENTER): those are only announced, so
    /// every node, this one included, applies them after the ENTER they follow.
    pub(crate) fn leave_presence_entered(
        &self,
        channel: &str,
        connection_id: &str,
        entered: &[String],
    ) {
        let mut leaves = self.hub().leave_events(channel, connection_id);
        if !leaves.is_empty() {
            self.hub().apply_presence(channel, leaves.clone());
        }
        let now = protocol::now_ms();
        for client_id in entered {
            if !leaves
                .iter()
                .any(|l| l.client_id.as_ref() == Some(client_id))
            {
                let member = protocol::PresenceMessage {
                    client_id: Some(client_id.clone()),
                    connection_id: Some(connection_id.to_owned()),
                    ..Default::default()
                };
                leaves.push(hub::server_leave(member, now));
            }
        }
        if leaves.is_empty() {
            return;
        }
        self.bus().announce(channel, &leaves);
        self.report_webhook(webhooks::Report::Presence {
            channel: channel.to_owned(),
            events: leaves,
        });
    }

    /// The presence members of `channel` (a hub key) for REST: with a bus, read with the channel
    /// joined, so any node answers from the shared member set.
    pub async fn presence_members(
        &self,
        channel: &str,
    ) -> Result<Vec<protocol::PresenceMessage>, protocol::ErrorInfo> {
        self.read_joined(channel, |hub| hub.presence_members(channel))
            .await
    }

    /// REST history of `channel` (a hub key): with a bus, read with the channel joined, so a
    /// node with no subscribers of its own still answers from the shared store.
    pub async fn history(
        &self,
        channel: &str,
        query: &hub::HistoryQuery,
    ) -> Result<Vec<Arc<protocol::Message>>, protocol::ErrorInfo> {
        self.read_joined(channel, |hub| hub.history(channel, query))
            .await
    }

    /// One message of `channel`'s history by its serial, read as `history` is.
    pub async fn message(
        &self,
        channel: &str,
        serial: &str,
    ) -> Result<Option<Arc<protocol::Message>>, protocol::ErrorInfo> {
        self.read_joined(channel, |hub| hub.message(channel, serial))
            .await
    }

    /// Every version of a message (its create, updates and deletes), oldest first; `None` if
    /// the message is not, or no longer, held.
    pub async fn versions(
        &self,
        channel: &str,
        serial: &str,
    ) -> Result<Option<Vec<Arc<protocol::Message>>>, protocol::ErrorInfo> {
        self.read_joined(channel, |hub| hub.versions(channel, serial))
            .await
    }

    /// Reads the hub's copy of `channel` while joined to it (with a bus: subscribed and caught
    /// up from the shared store), then leaves.
    async fn read_joined<T>(
        &self,
        channel: &str,
        read: impl FnOnce(&Hub) -> T,
    ) -> Result<T, protocol::ErrorInfo> {
        let joined = self.join_channel(channel).await;
        let read = joined.map(|()| read(self.hub()));
        self.leave_channel(channel);
        read
    }

    /// `ready`, `draining`, or `not ready` (clustered, and the bus is not answering).
    pub fn node_state(&self) -> &'static str {
        if self.is_shutting_down() {
            "draining"
        } else if self.is_ready() {
            "ready"
        } else {
            "not ready"
        }
    }

    /// This process in the cluster: the bus's node id (the server id plus a per-start suffix)
    /// when clustered, else the server id.
    pub fn node_id(&self) -> &str {
        self.backend().nodes.node().unwrap_or(self.server_id())
    }

    /// This node's dashboard numbers now.
    pub fn node_pulse(&self) -> pulse::NodePulse {
        let mut pulse = self.hub().pulse().snapshot(protocol::now_ms());
        pulse.node = self.node_id().to_owned();
        pulse.state = self.node_state().to_owned();
        pulse.connections = self.live_connections() as u64;
        pulse.channels = self.hub().channel_count() as u64;
        pulse
    }

    /// Every node's numbers, this one first: alone in embedded mode; clustered, every node in
    /// the node set, from the snapshots they share (a node whose lease lapsed is `lease lapsed`,
    /// one that holds its lease but shares nothing `no numbers`).
    pub async fn node_pulses(&self) -> Vec<pulse::NodePulse> {
        let here = self.node_pulse();
        let nodes = self.backend().nodes.clone();
        let readings = match nodes.readings().await {
            Ok(readings) => readings,
            Err(error) => {
                tracing::debug!(%error, "could not read the other nodes' numbers");
                Vec::new()
            }
        };
        let others: Vec<pulse::NodePulse> = readings
            .into_iter()
            .filter(|reading| reading.node != here.node)
            .map(|reading| {
                let mut pulse = reading.pulse.unwrap_or_default();
                if !reading.lease_held {
                    pulse.state = "lease lapsed".to_owned();
                } else if pulse.node.is_empty() {
                    pulse.state = "no numbers".to_owned();
                }
                pulse.node = reading.node;
                pulse
            })
            .collect();
        std::iter::once(here).chain(others).collect()
    }

    /// The WebSocket endpoint (`GET /` with an upgrade), to merge into the HTTP router.
    pub fn router(&self) -> axum::Router {
        server::router(self.clone())
    }

    /// Starts draining: every connection is told DISCONNECTED (so clients reconnect elsewhere)
    /// and closed; new connections are refused the same way.
    pub fn begin_shutdown(&self) {
        self.inner.draining.send_replace(true);
    }

    /// Ready for traffic: not draining, and (when clustered) the Redis bus heard its own probe
    /// within the last few seconds.
    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down() && self.bus().healthy()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.inner.draining.borrow()
    }

    /// Resolves once no connection is left.
    pub async fn drained(&self) {
        loop {
            let notified = self.inner.all_closed.notified();
            if self.live_connections() == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn live_connections(&self) -> usize {
        self.inner.live_connections.load(Ordering::Acquire)
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.draining.subscribe()
    }

    pub(crate) fn track_connection(&self) -> LiveConnection {
        self.inner.live_connections.fetch_add(1, Ordering::AcqRel);
        ::metrics::gauge!("realtime_connections_open").increment(1.0);
        LiveConnection(self.inner.clone())
    }
}

/// Counts a connection while it lives.
pub(crate) struct LiveConnection(Arc<GatewayState>);

impl Drop for LiveConnection {
    fn drop(&mut self) {
        ::metrics::gauge!("realtime_connections_open").decrement(1.0);
        if self.0.live_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

/// The dashboard's numbers are read (and, clustered, shared with the other nodes) once a second.
const PULSE_INTERVAL: Duration = Duration::from_secs(1);

/// `[meta]occupancy` events go out at most once a second per channel.
const OCCUPANCY_INTERVAL: Duration = Duration::from_secs(1);
/// How often due message batches are looked for: a batch goes out at most this late.
const BATCH_TICK: Duration = Duration::from_millis(10);

/// The embedded back-end; webhooks read members from `hub`.
fn memory_backend(hub: std::sync::Weak<Hub>) -> backend::Backend {
    let members = move |channel: &str| {
        hub.upgrade()
            .map(|hub| hub.presence_members(channel))
            .unwrap_or_default()
    };
    backend::Backend::of(
        Arc::new(backend::memory::MemoryBackend::default()),
        Arc::new(backend::memory_webhooks::MemoryState::new(Box::new(
            members,
        ))),
    )
}

/// Starts webhook emission and delivery (state in the back-end) and has the hub report
/// occupancy transitions to it.
fn start_webhooks(inner: &Arc<GatewayState>) {
    let gateway = Gateway {
        inner: inner.clone(),
    };
    let Some(webhooks) = webhooks::Webhooks::start(
        &inner.config.webhooks,
        gateway.backend().webhooks.clone(),
        gateway.node_id(),
    ) else {
        return;
    };
    let reporter = Arc::downgrade(&webhooks);
    let summaries = reporter.clone();
    inner.wiring.set_webhooks(webhooks);
    // `channel.message` items carry the summaries annotations make (action 4), reported by the
    // node that stored the annotation.
    inner.hub.on_summary(Box::new(move |channel, messages| {
        if let Some(webhooks) = summaries.upgrade() {
            if webhooks.wanted(config::Source::Message, channel) {
                webhooks.report(webhooks::Report::Messages {
                    channel: channel.to_owned(),
                    messages,
                });
            }
        }
    }));
    inner
        .hub
        .on_occupancy_transition(Box::new(move |channel, occupied, at| {
            if let Some(webhooks) = reporter.upgrade() {
                webhooks.report(webhooks::Report::Occupancy {
                    channel: channel.to_owned(),
                    occupied,
                    at,
                });
            }
        }));
}

/// Clustered: stores this node's numbers in Redis every `PULSE_INTERVAL` for the other nodes'
/// dashboards, for as long as the gateway lives.
fn share_pulse(inner: &Arc<GatewayState>) {
    every_async(inner, PULSE_INTERVAL, |inner| {
        let gateway = Gateway { inner };
        let pulse = gateway.node_pulse();
        let nodes = gateway.backend().nodes.clone();
        async move {
            if let Err(error) = nodes.share_pulse(&pulse).await {
                tracing::debug!(%error, "could not share this node's numbers");
            }
        }
    });
}

/// Runs `work` every `interval` for as long as the gateway lives.
fn every(
    inner: &Arc<GatewayState>,
    interval: Duration,
    work: impl Fn(Arc<GatewayState>) + Send + 'static,
) {
    every_async(inner, interval, move |inner| {
        work(inner);
        ready(())
    });
}

/// `every`, for work that ends in an await: its synchronous part has the gateway's state, the
/// future it returns holds none (a slow write must not keep a stopped gateway alive).
fn every_async<F>(
    inner: &Arc<GatewayState>,
    interval: Duration,
    work: impl Fn(Arc<GatewayState>) -> F + Send + 'static,
) where
    F: Future<Output = ()> + Send,
{
    let inner = Arc::downgrade(inner);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else { return };
            work(inner).await;
        }
    });
}

/// Idle channels, expired idempotency ids and nonces and old ended connection keys go; maps a
/// flood of connections grew give back what they no longer hold (`shrink`).
fn sweep(inner: Arc<GatewayState>) {
    let now = protocol::now_ms();
    inner.hub.sweep(now);
    inner.auth.sweep(now);
    inner.sessions.sweep(now);
    inner.apps.sweep();
    inner.publisher.sweep();
}
