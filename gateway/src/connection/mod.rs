//! One realtime connection: authenticate, say CONNECTED, then read frames and answer them, one
//! small handler per action, until the client leaves, the token lapses or the server drains.
//!
//! Two tasks per connection: this reader, which owns the connection's state, and a `Writer` that
//! owns the socket's write half and drains the connection's `Outbox`.
//!
//! Here: setup, authentication and the connection's life from CONNECTED to its end. `open.rs`
//! is the handshake (id, key, resume, CONNECTED), `read_loop.rs` the frames and deadlines,
//! `close.rs` what an ending connection leaves or parks; one file per action group beside them.

mod annotation;
mod attach;
mod auth;
mod close;
mod message;
mod open;
mod pipeline;
mod presence;
mod read_loop;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::ws::WebSocket;
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use protocol::message::Modes;
use protocol::{Action, Blame, ChannelName, ErrorInfo, Format, ProtocolMessage};
use tokio::time::{Duration, Instant};
use tracing::Instrument as _;

use crate::auth::{AuthError, Principal};
use crate::error::Error;
use crate::frame::Frame;
use crate::outbox::Outbox;
use crate::sessions::ConnectionKey;
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
    /// The channel proper (app-scoped): where the hub and the bus know it.
    base: String,
    /// Its place among the channel's subscribers (`hub::Subscriber::slot`).
    slot: Arc<str>,
    /// What the client asked for: the bound on what it may do here, whatever its capability.
    requested: Modes,
    /// What it was granted: requested ∩ capability (recomputed after a re-auth).
    modes: Modes,
    /// Its publish pace, when the principal's claims limit this channel (`Principal::
    /// attachment_rate`); made at the first publish.
    pace: Option<crate::limits::Pace>,
}

struct Connection {
    gateway: Gateway,
    id: Arc<str>,
    key: ConnectionKey,
    principal: Principal,
    echo: bool,
    outbox: Arc<Outbox>,
    /// Base channel name -> attachment.
    attached: HashMap<String, Attachment>,
    token_timers: Option<TokenTimers>,
    /// Base names of channels where this connection has entered presence, each with the client
    /// ids it entered there this transport (and has not left): clustered, a close right after
    /// an ENTER comes before this node hears it back, and must still announce the LEAVE. A
    /// resumed connection's channels start with none.
    present_on: HashMap<String, Vec<String>>,
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
    /// Publishes handed to the bus, oldest first, waiting for their ACKs (`pipeline.rs`).
    pipeline: std::collections::VecDeque<pipeline::Pending>,
}

/// When to ask for a new token, and when the current one lapses.
struct TokenTimers {
    renew_at: Instant,
    renew_asked: bool,
    expires_at: Instant,
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
        Some(Error::BadFormat)
    } else if gateway.is_shutting_down() {
        Some(Error::Draining)
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
            Error::from(error)
        }),
    };
    match principal {
        Err(error) => {
            tracing::debug!(code = error.code().code(), message = %error, "connection refused");
            outbox.reply(&refusal(error));
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
    gateway.sessions().register_live(&connection.key, &outbox);
    connection.schedule_token_timers();
    gateway
        .sessions()
        .clients()
        .register(&connection.id, &connection.principal, &outbox);
    connection.read_loop(&mut stream).await;
    // A client that closed leaves presence before its attachments go, so a channel's members
    // leave before it is vacated.
    connection.leave_presence_if_closed();
    connection.leave_channels();
    gateway
        .sessions()
        .clients()
        .unregister(&connection.id, &connection.principal);
    connection.park_or_leave();
    gateway.sessions().unregister_live(&connection.key, &outbox);
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

/// A refused connection or re-auth: our own trouble (draining, JWKS unreachable) is a retry
/// (DISCONNECTED), the client's a failure (ERROR).
fn refusal(error: Error) -> ProtocolMessage {
    let action = match error.blame() {
        Blame::Server => Action::Disconnected,
        Blame::Client => Action::Error,
    };
    ProtocolMessage::error(action, error.into())
}

impl Connection {
    fn channel_error(&self, channel: &str, error: impl Into<ErrorInfo>) {
        self.outbox.reply(&ProtocolMessage {
            channel: Some(channel.to_owned()),
            ..ProtocolMessage::error(Action::Error, error.into())
        });
    }

    /// On a channel attached with explicit modes, an operation outside them is refused (40160),
    /// as the client asked for less than its capability allows.
    fn require_mode(
        &self,
        channel: &ChannelName,
        mode: Modes,
        operation: &'static str,
    ) -> Result<(), Error> {
        let key = self.principal.channel_key(channel);
        match self.attached.get(key.as_ref()) {
            Some(attachment) if !attachment.requested.intersects(mode) => {
                Err(Error::OutsideModes {
                    operation,
                    channel: channel.as_str().to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Where `attached` keeps an attachment of `channel`: its base channel, or for a filtered
    /// one (`[filter=…]chat`, which a connection may hold beside plain `chat`) the base and the
    /// qualifier.
    fn attachment_key(&self, channel: &ChannelName) -> String {
        let base = self.principal.channel_key(channel);
        match channel.as_str().strip_suffix(channel.base()) {
            Some(qualifier) if qualifier.starts_with("[filter=") => {
                format!("{base}\u{0}{qualifier}")
            }
            _ => base.into_owned(),
        }
    }

    fn parse_channel(&self, message: &ProtocolMessage) -> Result<ChannelName, Error> {
        match message.channel.as_deref() {
            None => Err(Error::NoChannel),
            Some(name) => Ok(ChannelName::parse(name)?),
        }
    }
}
