//! One realtime connection: authenticate, say CONNECTED, then read frames and answer them, one
//! small handler per action, until the client leaves, the token lapses or the server drains.
//!
//! Two tasks per connection: this reader, which owns the connection's state, and a `Writer` that
//! owns the socket's write half and drains the connection's `Outbox`.

mod attach;
mod auth;
mod message;
mod presence;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use protocol::message::Modes;
use protocol::{
    Action, Blame, ChannelName, ConnectionDetails, ErrorCode, ErrorInfo, Format, ProtocolMessage,
};
use rand::distributions::{Alphanumeric, DistString};
use tokio::time::{Duration, Instant};
use tracing::Instrument as _;

use crate::auth::{AuthError, Principal};
use crate::frame::Frame;
use crate::outbox::Outbox;
use crate::Gateway;

/// What the client put in the upgrade URL.
#[derive(Debug, Default, Clone)]
pub struct ConnectParams {
    pub key: Option<String>,
    pub access_token: Option<String>,
    pub client_id: Option<String>,
    pub format: Option<String>,
    pub echo: bool,
    pub heartbeats: bool,
    /// `recover=` rather than `resume=` (for the outcome metric).
    pub recovering: bool,
    /// `resume=` (after a drop) or `recover=` (a reload): the old connection key.
    pub resume: Option<String>,
    /// `remainPresentFor=<ms>`: how long members stay after an abrupt drop.
    pub remain_present_for: Option<Duration>,
}

impl ConnectParams {
    pub fn from_query(query: &HashMap<String, String>) -> ConnectParams {
        let get = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
        ConnectParams {
            key: get("key"),
            // ably-js says access_token, ably-python accessToken.
            access_token: get("access_token").or_else(|| get("accessToken")),
            client_id: get("clientId"),
            format: get("format"),
            echo: query.get("echo").map(String::as_str) != Some("false"),
            // Absent (ably-python) means protocol heartbeats too: it ignores pings.
            heartbeats: query.get("heartbeats").map(String::as_str) != Some("false"),
            recovering: get("resume").is_none() && get("recover").is_some(),
            resume: get("resume").or_else(|| get("recover")),
            remain_present_for: get("remainPresentFor")
                .and_then(|ms| ms.parse().ok())
                .map(Duration::from_millis),
        }
    }
}

/// A channel this connection has attached.
struct Attachment {
    name: Arc<str>,
    /// What the client asked for: the bound on what it may do here, whatever its capability.
    requested: Modes,
    /// What it was granted: requested ∩ capability (recomputed after a re-auth).
    modes: Modes,
}

struct Connection {
    gateway: Gateway,
    id: Arc<str>,
    key: String,
    principal: Principal,
    echo: bool,
    outbox: Arc<Outbox>,
    /// Base channel name -> attachment.
    attached: HashMap<String, Attachment>,
    token_timers: Option<TokenTimers>,
    /// Base names of channels where this connection has entered presence.
    present_on: HashSet<String>,
    /// Channels where this connection's members left while it was away: their next attach
    /// replays what was missed but is not RESUMED, so the client enters again.
    presence_lost: HashSet<String>,
    /// A failed resume: attaches with a channelSerial are answered without RESUMED.
    resume_failed: bool,
    /// The client closed (or we failed it): nothing to keep for a resume.
    ended_cleanly: bool,
    /// Why the read loop ended, for `realtime_connections_closed_total`.
    close_reason: &'static str,
    remain_present_for: Option<Duration>,
    /// This connection's publish budget (`Limits::connection_publish_rate`).
    publish_rate: std::sync::Mutex<crate::limits::RateBucket>,
}

/// When to ask for a new token, and when the current one lapses.
struct TokenTimers {
    renew_at: Instant,
    renew_asked: bool,
    expires_at: Instant,
}

enum Flow {
    Continue,
    Stop,
}

/// Serves one upgraded socket to the end. Not an `async fn`: the setup runs here, so the future
/// every connection keeps resident does not also hold the unsplit socket and other arguments.
pub(crate) fn run(
    gateway: Gateway,
    socket: WebSocket,
    params: ConnectParams,
) -> impl std::future::Future<Output = ()> + Send {
    let live = gateway.track_connection();
    let limits = &gateway.config().limits;
    let timing = &gateway.config().timing;
    let format = Format::from_param(params.format.as_deref());
    let outbox = Arc::new(Outbox::new(
        format.unwrap_or(Format::Json),
        limits.outbound_queue,
    ));
    let (sink, stream) = socket.split();
    let heartbeat = params
        .heartbeats
        .then(|| Frame::encode(&ProtocolMessage::new(Action::Heartbeat), outbox.format).ok())
        .flatten();
    let writer = tokio::spawn(
        writer::Writer {
            sink,
            outbox: outbox.clone(),
            heartbeat,
            idle_interval: timing.max_idle_interval,
            batch: limits.write_batch_frames,
            min_flush_interval: limits.min_flush_interval,
            last_flush: None,
            blocked: false,
        }
        .run(),
    );
    async move {
        let _live = live;
        serve(gateway, params, format, outbox, stream, writer).await;
    }
}

/// The connection's life after setup: authenticate, then serve it until it ends.
async fn serve(
    gateway: Gateway,
    params: ConnectParams,
    format: Option<Format>,
    outbox: Arc<Outbox>,
    stream: SplitStream<WebSocket>,
    mut writer: tokio::task::JoinHandle<()>,
) {
    // Auth problems never fail the upgrade (clients would just retry): upgrade, ERROR, close.
    let refused = if format.is_none() {
        Some((
            ErrorCode::InvalidParameterValue,
            "format must be json or msgpack".to_owned(),
        ))
    } else if gateway.is_shutting_down() {
        Some((ErrorCode::Disconnected, DRAINING.to_owned()))
    } else {
        None
    };
    let principal = match refused {
        Some(error) => Err(error),
        // Boxed, like everything that runs once: only the read loop's state stays resident.
        None => Box::pin(authenticate(&gateway, &params)).await.map_err(|error| {
            // The reason, never the token.
            tracing::info!(code = error.code().code(), reason = %error, "realtime auth refused");
            ::metrics::counter!("realtime_auth_failures_total", "via" => "realtime", "code" => error.code().code().to_string()).increment(1);
            gateway.hub().pulse().auth_failure();
            (error.code(), error.to_string())
        }),
    };
    match principal {
        Err((code, message)) => {
            tracing::debug!(code = code.code(), %message, "connection refused");
            outbox.reply(&refusal(code, message));
            outbox.close_after_queue();
        }
        Ok(principal) => {
            let span = tracing::info_span!(
                "connection",
                id = tracing::field::Empty,
                client_id = principal.client_id.as_deref().unwrap_or_default()
            );
            serve_connection(gateway, principal, &params, outbox, stream)
                .instrument(span)
                .await;
        }
    }
    // A peer that stopped reading could hold the writer forever; give it a bounded goodbye.
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// An authenticated connection, from CONNECTED to its end (inside its tracing span).
async fn serve_connection(
    gateway: Gateway,
    principal: Principal,
    params: &ConnectParams,
    outbox: Arc<Outbox>,
    mut stream: SplitStream<WebSocket>,
) {
    ::metrics::counter!("realtime_connections_accepted_total").increment(1);
    let mut connection = Box::pin(Connection::open(
        &gateway,
        principal,
        params,
        outbox.clone(),
    ))
    .await;
    gateway.register_live(&connection.key, &outbox);
    connection.schedule_token_timers();
    gateway
        .clients()
        .register(&connection.id, &connection.principal, &outbox);
    connection.read_loop(&mut stream).await;
    // A client that closed leaves presence before its attachments go, so a channel's members
    // leave before it is vacated.
    connection.leave_presence_if_closed();
    connection.leave_channels();
    gateway
        .clients()
        .unregister(&connection.id, &connection.principal);
    connection.park_or_leave();
    gateway.unregister_live(&connection.key, &outbox);
    outbox.close_after_queue();
    // However the loop noticed the end: a full queue is what ended it (80020, set only there).
    if outbox.end_code() == protocol::ErrorCode::SlowConsumer.code() {
        gateway.hub().pulse().slow_consumer_disconnect();
    }
    ::metrics::counter!("realtime_connections_closed_total", "reason" => connection.close_reason)
        .increment(1);
}

async fn authenticate(gateway: &Gateway, params: &ConnectParams) -> Result<Principal, AuthError> {
    let auth = gateway.auth();
    let principal = match (&params.key, &params.access_token) {
        (Some(key), _) => auth.verify_key(key)?,
        (None, Some(token)) => auth.verify_token(token, protocol::now_ms()).await?,
        (None, None) => return Err(AuthError::NoCredentials),
    };
    principal.with_client_id(params.client_id.as_deref())
}

const DRAINING: &str = "server shutting down; reconnect";

/// A refused connection or re-auth: our own trouble (draining, JWKS unreachable) is a retry
/// (DISCONNECTED), the client's a failure (ERROR).
fn refusal(code: ErrorCode, message: String) -> ProtocolMessage {
    let action = match code.blame() {
        Blame::Server => Action::Disconnected,
        Blame::Client => Action::Error,
    };
    ProtocolMessage::error(action, code.info(message))
}

/// The `realtime_connections_closed_total` reason for an outbox ended with `code`.
fn close_reason(code: u32) -> &'static str {
    if code == 0 {
        return "transport";
    }
    match ErrorCode::from_code(code) {
        Some(ErrorCode::SlowConsumer) => "slow_consumer",
        Some(ErrorCode::TokenRevoked | ErrorCode::TokenExpired) => "token_revoked",
        _ => "superseded",
    }
}

impl Connection {
    /// A new connection, or the one `resume=` names if it is still parked; sends CONNECTED.
    async fn open(
        gateway: &Gateway,
        principal: Principal,
        params: &ConnectParams,
        outbox: Arc<Outbox>,
    ) -> Connection {
        let mut connection = Connection {
            id: Alphanumeric
                .sample_string(&mut rand::thread_rng(), 12)
                .into(),
            key: String::new(),
            gateway: gateway.clone(),
            principal,
            echo: params.echo,
            outbox,
            attached: HashMap::new(),
            token_timers: None,
            present_on: HashSet::new(),
            presence_lost: HashSet::new(),
            resume_failed: false,
            ended_cleanly: false,
            close_reason: "transport",
            remain_present_for: params.remain_present_for,
            publish_rate: std::sync::Mutex::new(crate::limits::RateBucket::new(
                &gateway.config().limits.connection_publish_rate,
                std::time::Instant::now(),
            )),
        };
        connection.key = format!(
            "{}!{}",
            connection.id,
            Alphanumeric.sample_string(&mut rand::thread_rng(), 16)
        );
        let mut error = None;
        if let Some(old_key) = &params.resume {
            match gateway
                .resume(old_key, connection.principal.identity())
                .await
            {
                Ok(parked) => {
                    // The old key is spent: a later resume with it gets "unable to recover".
                    gateway.remember_ended(old_key);
                    connection.id = parked.id.clone();
                    // Same connection, fresh key: the old transport's key is spent.
                    connection.key = format!(
                        "{}!{}",
                        connection.id,
                        Alphanumeric.sample_string(&mut rand::thread_rng(), 16)
                    );
                    connection.present_on = parked.present_on.iter().cloned().collect();
                    if Gateway::members_left(&parked) {
                        // Its members left while it was away: the client must re-sync and
                        // re-enter, which it does on an attach without RESUMED.
                        connection.presence_lost = std::mem::take(&mut connection.present_on);
                    }
                    tracing::debug!(connection_id = %connection.id, "resumed");
                    ::metrics::counter!("realtime_resumes_total", "kind" => if params.recovering { "recover" } else { "resume" }, "outcome" => "resumed").increment(1);
                }
                Err(refusal) => {
                    ::metrics::counter!("realtime_resumes_total", "kind" => if params.recovering { "recover" } else { "resume" }, "outcome" => "failed").increment(1);
                    connection.resume_failed = true;
                    error = Some(refusal);
                }
            }
        }
        tracing::Span::current().record("id", &*connection.id);
        if let Some(bus) = gateway.cluster() {
            bus.record_new_connection(&connection.key, &connection.resumable())
                .await;
        }
        connection.outbox.reply(&ProtocolMessage {
            error,
            ..connection.connected()
        });
        tracing::debug!(connection_id = %connection.id, "connected");
        connection
    }

    /// After the read loop: a client that closed leaves presence at once; a dropped one stays
    /// resumable (its members for the presence grace).
    fn leave_presence_if_closed(&mut self) {
        if self.ended_cleanly {
            for channel in self.present_on.drain() {
                self.gateway.leave_presence(&channel, &self.id);
            }
        }
    }

    fn park_or_leave(&mut self) {
        if self.ended_cleanly {
            self.leave_presence_if_closed();
            self.gateway.remember_ended(&self.key);
            if let Some(bus) = self.gateway.cluster() {
                bus.forget_connection(&self.key);
                if self.remain_present_for.is_some() {
                    bus.forget_grace(&self.id);
                }
            }
            return;
        }
        let parked = self.resumable();
        self.present_on.clear();
        self.gateway.park(self.key.clone(), parked);
    }

    /// What another transport (here or, clustered, on another node) needs to resume this
    /// connection.
    fn resumable(&self) -> crate::resume::Parked {
        crate::resume::Parked {
            id: self.id.clone(),
            client_id: self.principal.identity().map(str::to_owned),
            present_on: self.present_on.iter().cloned().collect(),
            members_left: Default::default(),
            presence_grace: self.remain_present_for,
        }
    }

    /// Clustered: (re)writes this live connection's resume record, so another node can resume
    /// it even if this one dies.
    fn record_for_resume(&self) {
        if let Some(bus) = self.gateway.cluster() {
            bus.record_connection(&self.key, &self.resumable(), false);
        }
    }

    async fn read_loop(&mut self, stream: &mut SplitStream<WebSocket>) {
        let idle_timeout = self.gateway.config().timing.peer_idle_timeout;
        let mut shutdown = self.gateway.shutdown_signal();
        let mut idle_deadline = Instant::now() + idle_timeout;
        // Set once draining: when this connection is told to go (jittered across the drain).
        let mut handover_at: Option<Instant> = None;
        // One timer for every deadline (idle, drain, token renewal and expiry), re-armed only
        // when it fires or a deadline moves earlier: a frame costs no timer work, and an idle
        // connection's task stays small.
        let timer = tokio::time::sleep_until(self.next_deadline(idle_deadline, handover_at));
        tokio::pin!(timer);
        // The replies queued for the client are over the high-water mark: read nothing until
        // the writer has drained them (`Outbox::pause_reader_if_behind`). The client is sending
        // faster than it reads; it is slowed down, not disconnected.
        let mut paused = false;
        loop {
            let flow = tokio::select! {
                biased;
                _ = self.outbox.wake_reader.notified() => {
                    if self.outbox.is_ending() {
                        self.close_reason = close_reason(self.outbox.end_code());
                        Flow::Stop
                    } else {
                        // The writer drained the replies (or a stale wake-up: asked again).
                        if paused && !self.outbox.reader_paused() {
                            paused = false;
                            // We were not listening: the peer's silence was ours.
                            idle_deadline = Instant::now() + idle_timeout;
                        }
                        Flow::Continue
                    }
                }
                _ = async { drop(shutdown.wait_for(|draining| *draining).await) }, if handover_at.is_none() => {
                    let spread = self.gateway.config().timing.shutdown_grace * 3 / 5;
                    let jitter = spread.mul_f64(rand::random::<f64>());
                    handover_at = Some(Instant::now() + jitter);
                    Flow::Continue
                }
                _ = &mut timer => {
                    if paused {
                        // Not listening, so not the peer's silence.
                        idle_deadline = idle_deadline.max(Instant::now() + idle_timeout);
                    }
                    self.on_deadline(idle_deadline, handover_at)
                }
                frame = stream.next(), if !paused => match frame {
                    None => Flow::Stop,
                    Some(Err(error)) => self.on_read_error(error),
                    Some(Ok(frame)) => {
                        idle_deadline = Instant::now() + idle_timeout;
                        // Boxed: the handlers' state would otherwise sit in every idle
                        // connection's task (several KiB each).
                        let flow = Box::pin(self.on_frame(frame)).await;
                        paused = self.outbox.pause_reader_if_behind();
                        flow
                    }
                },
            };
            if matches!(flow, Flow::Stop) || self.outbox.is_ending() {
                return;
            }
            let next = self.next_deadline(idle_deadline, handover_at);
            if timer.is_elapsed() || next < timer.deadline() {
                timer.as_mut().reset(next);
            }
        }
    }

    /// The earliest thing the read loop must do without hearing from the peer.
    fn next_deadline(&self, idle_deadline: Instant, handover_at: Option<Instant>) -> Instant {
        let mut next = idle_deadline;
        if let Some(at) = handover_at {
            next = next.min(at);
        }
        if let Some(timers) = &self.token_timers {
            next = next.min(timers.expires_at);
            if !timers.renew_asked {
                next = next.min(timers.renew_at);
            }
        }
        next
    }

    /// The timer fired: whichever deadlines have passed, the final ones first.
    fn on_deadline(&mut self, idle_deadline: Instant, handover_at: Option<Instant>) -> Flow {
        let now = Instant::now();
        if handover_at.is_some_and(|at| at <= now) {
            self.close_reason = "drain";
            self.outbox.reply(&ProtocolMessage::error(
                Action::Disconnected,
                ErrorCode::Disconnected.info(DRAINING),
            ));
            return Flow::Stop;
        }
        if let Some(timers) = &mut self.token_timers {
            if timers.expires_at <= now {
                self.close_reason = "token_expired";
                self.outbox.reply(&ProtocolMessage::error(
                    Action::Disconnected,
                    AuthError::TokenExpired.info(),
                ));
                return Flow::Stop;
            }
            if !timers.renew_asked && timers.renew_at <= now {
                timers.renew_asked = true;
                self.outbox.reply(&ProtocolMessage::new(Action::Auth));
            }
        }
        if idle_deadline <= now {
            tracing::debug!(connection_id = %self.id, "peer idle; dropping");
            self.close_reason = "idle";
            return Flow::Stop;
        }
        Flow::Continue
    }

    /// A frame over `max_frame_bytes` is refused by tungstenite before we see it; say 40009
    /// rather than drop the socket silently (the client would reconnect and try again).
    fn on_read_error(&mut self, error: axum::Error) -> Flow {
        use tokio_tungstenite::tungstenite::Error as WsError;
        let error = error.into_inner();
        let error = error.downcast_ref::<WsError>();
        if matches!(error, Some(WsError::Utf8(_))) {
            // RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection with 1007.
            let flow = self.fatal(ErrorCode::BadRequest.info("text frame is not valid UTF-8"));
            self.outbox
                .push(crate::frame::Frame::close_with(1007, "invalid UTF-8"));
            return flow;
        }
        if matches!(error, Some(WsError::Capacity(_))) {
            crate::limits::count_refusal("frame_too_large", "realtime");
            let limit = self.gateway.config().limits.max_frame_bytes;
            return self.fatal(
                ErrorCode::MessageTooLarge.info(format!("frame exceeds the {limit}-byte limit")),
            );
        }
        Flow::Stop
    }

    async fn on_frame(&mut self, frame: WsMessage) -> Flow {
        // Text frames carry JSON and binary frames msgpack, whatever `format` the client chose.
        let (bytes, format) = match &frame {
            WsMessage::Text(text) => {
                ::metrics::counter!("realtime_bytes_total", "direction" => "in", "format" => "json")
                    .increment(text.len() as u64);
                (text.as_bytes(), Format::Json)
            }
            WsMessage::Binary(bytes) => {
                ::metrics::counter!("realtime_bytes_total", "direction" => "in", "format" => "msgpack")
                    .increment(bytes.len() as u64);
                (&bytes[..], Format::Msgpack)
            }
            WsMessage::Close(_) => return Flow::Stop,
            WsMessage::Ping(_) | WsMessage::Pong(_) => return Flow::Continue,
        };
        if self.refused_unread(bytes, format) {
            return Flow::Continue;
        }
        let decoded = protocol::codec::decode(bytes, format);
        match decoded {
            Ok(message) => self.on_message(message).await,
            Err(error) => {
                self.fatal(ErrorCode::BadRequest.info(format!("malformed frame: {error}")))
            }
        }
    }

    /// A MESSAGE (or PRESENCE) with many more messages than one publish may hold is NACKed from a skim of
    /// the frame, without building its messages (200,000 × `{}` fit in a 256 KiB msgpack
    /// frame). Only frames that could hold four times the limit are skimmed (a message takes
    /// at least 3 bytes in JSON, `{},`, 1 in msgpack), so an ordinary publish is parsed once;
    /// anything between is decoded and refused by `Gateway::publish`.
    fn refused_unread(&self, bytes: &[u8], format: Format) -> bool {
        let max = self.gateway.config().limits.max_messages_per_publish;
        let least_per_message = match format {
            Format::Json => 3,
            Format::Msgpack => 1,
        };
        if bytes.len() < max.saturating_mul(4 * least_per_message) {
            return false;
        }
        let Some(shape) = protocol::codec::shape::frame_shape(bytes, format) else {
            return false;
        };
        let (Some(action), Some(msg_serial)) = (shape.action, shape.msg_serial) else {
            return false;
        };
        let n = if action == Action::Message as u8 {
            shape.messages.0
        } else if action == Action::Presence as u8 {
            shape.presence.0
        } else {
            return false;
        };
        if n <= max {
            return false;
        }
        crate::limits::count_refusal("too_many_messages", "realtime");
        self.nack(msg_serial, crate::too_many_messages(n, max));
        true
    }

    async fn on_message(&mut self, message: ProtocolMessage) -> Flow {
        match message.action() {
            Some(Action::Heartbeat) => {
                self.outbox.reply(&ProtocolMessage {
                    id: message.id,
                    ..ProtocolMessage::new(Action::Heartbeat)
                });
                Flow::Continue
            }
            Some(Action::Attach) => self.on_attach(message).await,
            Some(Action::Detach) => self.on_detach(message),
            Some(Action::Message) => self.on_publish(message).await,
            Some(Action::Auth) => self.on_auth(message).await,
            Some(Action::Presence) => self.on_presence(message).await,
            Some(Action::Close) => {
                self.ended_cleanly = true;
                self.close_reason = "client_closed";
                self.outbox.reply(&ProtocolMessage::new(Action::Closed));
                Flow::Stop
            }
            Some(Action::Disconnect) => Flow::Stop,
            // The client asks for the member set again (ably-js `channel.sync()`).
            Some(Action::Sync) => {
                if let Ok(channel) = self.parse_channel(&message) {
                    let key = self.principal.channel_key(&channel);
                    if self.attached.contains_key(key.as_ref()) {
                        self.gateway.hub().resync(&key, &self.id);
                    }
                }
                Flow::Continue
            }
            _ => self.on_unsupported(message),
        }
    }

    /// Actions we do not serve. One that expects an ACK is NACKed, so the client's ACK
    /// accounting (strictly by msgSerial) stays right; anything else is a protocol error.
    fn on_unsupported(&mut self, message: ProtocolMessage) -> Flow {
        let error = ErrorCode::BadRequest.info(format!(
            "action {} is not supported by this server",
            message.action
        ));
        match message.msg_serial {
            Some(msg_serial) => {
                self.nack(msg_serial, error);
                Flow::Continue
            }
            None => self.fatal(error),
        }
    }

    /// A connection-level ERROR: the client fails the connection, so close it.
    fn fatal(&mut self, error: ErrorInfo) -> Flow {
        self.ended_cleanly = true;
        self.close_reason = "protocol_error";
        tracing::debug!(connection_id = %self.id, code = error.code, message = %error.message, "connection error");
        self.outbox
            .reply(&ProtocolMessage::error(Action::Error, error));
        Flow::Stop
    }

    fn channel_error(&self, channel: &str, error: ErrorInfo) {
        self.outbox.reply(&ProtocolMessage {
            channel: Some(channel.to_owned()),
            ..ProtocolMessage::error(Action::Error, error)
        });
    }

    fn connected(&self) -> ProtocolMessage {
        let config = self.gateway.config();
        ProtocolMessage {
            connection_id: Some(self.id.to_string()),
            connection_details: Some(ConnectionDetails {
                connection_key: self.key.clone(),
                client_id: self.principal.client_id.clone(),
                max_message_size: config.limits.max_message_bytes as u64,
                max_frame_size: config.limits.max_frame_bytes as u64,
                max_inbound_rate: 0,
                max_idle_interval: config.timing.max_idle_interval.as_millis() as u64,
                connection_state_ttl: config.timing.connection_state_ttl.as_millis() as u64,
                server_id: self.gateway.server_id().to_owned(),
            }),
            ..ProtocolMessage::new(Action::Connected)
        }
    }

    fn leave_channels(&mut self) {
        ::metrics::gauge!("realtime_channels_attached").decrement(self.attached.len() as f64);
        self.gateway
            .hub()
            .pulse()
            .attachments_changed(-(self.attached.len() as i64));
        for channel in self.attached.keys() {
            self.gateway.hub().detach(channel, &self.id);
            self.gateway.leave_channel(channel);
        }
        self.attached.clear();
    }

    /// On a channel attached with explicit modes, an operation outside them is refused (40160),
    /// as the client asked for less than its capability allows.
    fn require_mode(
        &self,
        channel: &ChannelName,
        mode: Modes,
        what: &str,
    ) -> Result<(), ErrorInfo> {
        let key = self.principal.channel_key(channel);
        match self.attached.get(key.as_ref()) {
            Some(attachment) if !attachment.requested.intersects(mode) => {
                Err(ErrorCode::CapabilityDenied.info(format!(
                    "{what} is not among the modes channel {:?} was attached with",
                    channel.as_str()
                )))
            }
            _ => Ok(()),
        }
    }

    fn parse_channel(&self, message: &ProtocolMessage) -> Result<ChannelName, ErrorInfo> {
        match message.channel.as_deref() {
            None => Err(ErrorCode::BadRequest.info("no channel given")),
            Some(name) => ChannelName::parse(name),
        }
    }
}
