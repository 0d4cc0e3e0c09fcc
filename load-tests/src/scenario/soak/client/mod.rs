//! One soak client for the whole run, as a browser tab or app behaves: a token from the backend
//! (`requestToken`), a connection to the next node, its channels attached, presence on one of
//! them; the token renewed in-band when the server sends AUTH (or, for a token shorter-lived than
//! the renewal lead, let expire into DISCONNECTED 40142, then a fresh token and a resume); now
//! and then the TCP socket dropped without a CLOSE and resumed, or closed cleanly and opened
//! afresh. Everything it is promised is checked as it goes (see `Client::on_frame`).
//!
//! One task per client owns its socket (reading and writing from one `select!`), so nothing is
//! shared but the run's counters.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures_util::StreamExt as _;
use protocol::message::{flags, AuthDetails};
use protocol::{Action, Data, Format, PresenceMessage, ProtocolMessage};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

mod connect;
mod frames;

use connect::{is_expected, Connected};

use super::backend::{Nodes, Published};
use super::checks::{ChannelOrder, Seen, Tally};
use super::wire::{decode, describe, reason_of, send, sent_us_of};
use crate::ledger::Latencies;
use crate::target::ably::query_escape;
use crate::target::{websocket, Ws, REPLY_TIMEOUT};

/// A token with less than this left (beyond the renewal lead, for a renewable one) is replaced
/// before connecting with it.
const TOKEN_MARGIN: Duration = Duration::from_secs(1);
/// How long a client waits for CLOSED after its CLOSE.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before connecting again after a failed attempt (not after a drop: clients resume at once).
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Latency samples a client gathers before taking the shared histogram's lock.
const LATENCY_BATCH: usize = 32;
/// How often a finishing client checks whether it has everything it is owed.
const CATCH_UP_CHECK: Duration = Duration::from_millis(200);

/// Who a client is and what it does.
pub(super) struct Plan {
    pub(super) index: usize,
    pub(super) client_id: String,
    pub(super) format: Format,
    pub(super) heartbeats: bool,
    pub(super) token_ttl: Duration,
    /// The token lives longer than the server's renewal lead: it must be asked to renew and
    /// never expire. Otherwise expiring into 40142 is the expected path.
    pub(super) renewable: bool,
    /// The server's renewal lead. A renewable client connects only with a token that has more
    /// than this left: with less, the server rightly lets it expire unasked.
    pub(super) renew_lead: Duration,
    /// (name, number in the run's channel table); the first is the client's `user:` channel.
    pub(super) channels: Vec<(String, usize)>,
    /// Index into `channels` of the channel it enters presence on.
    pub(super) presence_on: usize,
}

/// Mean intervals of a client's random actions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Habits {
    pub(super) drop_every: Duration,
    pub(super) reconnect_every: Duration,
    pub(super) presence_every: Duration,
    /// Allowed over `maxIdleInterval` before a heartbeats=true connection counts as silent.
    pub(super) silence_slack: Duration,
    /// After the run, how long a client may take to receive what it is owed.
    pub(super) finish_timeout: Duration,
}

/// What every client shares.
pub(super) struct World {
    pub(super) nodes: Arc<Nodes>,
    pub(super) tally: Arc<Tally>,
    pub(super) latencies: Arc<Latencies>,
    pub(super) published: Arc<Published>,
    pub(super) connected: Arc<AtomicU64>,
    pub(super) habits: Habits,
}

/// How one connection ended.
enum End {
    /// We dropped the socket: resume.
    Dropped,
    /// We closed cleanly: start afresh.
    Closed,
    /// The server ended it (asked for or not): resume, with a fresh token if it expired.
    Server,
    /// The run is over.
    Finished,
}

#[derive(Clone, Copy)]
enum Step {
    Drop,
    Reconnect,
    Presence,
}

type TokenFuture = Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send>>;

pub(super) struct Client {
    plan: Plan,
    world: Arc<World>,
    rng: StdRng,
    token: Option<(String, Instant)>,
    /// The last connection's id and key, to resume it.
    resumable: Option<(String, String)>,
    orders: Vec<ChannelOrder>,
    /// Members of this client on `presence_on` as the server last confirmed them.
    present: bool,
    msg_serial: u64,
    latencies: Vec<(u64, u64)>,
    stop: watch::Receiver<bool>,
    finish_by: Option<Instant>,
}

impl Client {
    pub(super) fn new(
        plan: Plan,
        world: Arc<World>,
        stop: watch::Receiver<bool>,
        seed: u64,
    ) -> Client {
        let orders = vec![ChannelOrder::default(); plan.channels.len()];
        Client {
            rng: StdRng::seed_from_u64(seed ^ plan.index as u64),
            plan,
            world,
            token: None,
            resumable: None,
            orders,
            present: false,
            msg_serial: 0,
            latencies: Vec::new(),
            stop,
            finish_by: None,
        }
    }

    /// Lives until the run stops and it has received what it is owed (or the finish timeout).
    pub(super) async fn run(mut self) {
        loop {
            if self.finishing() && self.finish_by.is_some_and(|by| Instant::now() >= by) {
                break;
            }
            let connected = match self.connect().await {
                Ok(connected) => connected,
                Err(error) => {
                    if !is_expected(&error) {
                        self.fail("connect failed", &error);
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            match self.serve(connected).await {
                End::Dropped | End::Server => {}
                End::Closed => self.start_afresh(),
                End::Finished => break,
            }
        }
        self.account_owed();
        self.flush_latencies();
    }

    fn finishing(&mut self) -> bool {
        if self.finish_by.is_none() && *self.stop.borrow() {
            self.finish_by = Some(Instant::now() + self.world.habits.finish_timeout);
        }
        self.finish_by.is_some()
    }

    fn start_afresh(&mut self) {
        self.resumable = None;
        self.present = false;
        self.msg_serial = 0;
        for order in &mut self.orders {
            order.start(None);
        }
    }

    fn fail(&self, reason: &str, error: &anyhow::Error) {
        let client = self.plan.index;
        self.world
            .tally
            .fail(reason, 1, || format!("client {client}: {error:#}"));
    }

    fn fail_with(&self, reason: impl Into<String>, count: u64, what: impl std::fmt::Display) {
        let client = self.plan.index;
        self.world
            .tally
            .fail(reason, count, || format!("client {client}: {what}"));
    }

    /// Attaches every channel and lives on this connection until it ends.
    async fn serve(&mut self, connected: Connected) -> End {
        let Connected {
            mut ws,
            node,
            id,
            max_idle,
            resumed,
        } = connected;
        let endpoints = self.world.nodes.endpoints.clone();
        endpoints.joined(node);
        self.world.connected.fetch_add(1, Ordering::Relaxed);
        let mut session = Session {
            node,
            connection_id: id,
            // Sent with a channelSerial: the ATTACHED must say RESUMED.
            attaching: vec![None; self.plan.channels.len()],
            attach_deadline: Instant::now() + REPLY_TIMEOUT,
            auth_asked: None,
            auth_sent: None,
            token_fetch: None,
            silent: false,
            last_frame: Instant::now(),
        };
        let end = match self.attach_all(&mut ws, &mut session, resumed).await {
            Ok(()) => self.read_loop(&mut ws, &mut session, max_idle).await,
            Err(error) => {
                self.fail("attach failed", &error);
                End::Server
            }
        };
        self.flush_latencies();
        endpoints.left(node);
        self.world.connected.fetch_sub(1, Ordering::Relaxed);
        end
    }

    async fn attach_all(
        &mut self,
        ws: &mut Ws,
        session: &mut Session,
        resumed: bool,
    ) -> anyhow::Result<()> {
        for (i, (name, _)) in self.plan.channels.iter().enumerate() {
            let serial = resumed.then(|| self.orders[i].position()).flatten();
            session.attaching[i] = Some(serial.is_some());
            let attach = ProtocolMessage {
                channel: Some(name.clone()),
                channel_serial: serial,
                ..ProtocolMessage::new(Action::Attach)
            };
            send(ws, &attach, self.plan.format).await?;
        }
        if !resumed {
            self.present = false;
        }
        Ok(())
    }

    async fn read_loop(&mut self, ws: &mut Ws, session: &mut Session, max_idle: Duration) -> End {
        let habits = self.world.habits;
        let silence_limit = max_idle + habits.silence_slack;
        let (mut action, mut action_at) = self.next_action();
        let mut catch_up = tokio::time::interval(CATCH_UP_CHECK);
        let mut stop = self.stop.clone();
        loop {
            let watching_silence =
                self.plan.heartbeats && max_idle > Duration::ZERO && !session.silent;
            let silence_at = session.last_frame + silence_limit;
            let auth_deadline = session.auth_sent.map(|sent| sent + REPLY_TIMEOUT);
            let attach_pending = session.attaching.iter().any(Option::is_some);
            tokio::select! {
                biased;
                frame = ws.next() => {
                    let Some(Ok(frame)) = frame else {
                        return self.server_ended(session, "socket closed without DISCONNECTED");
                    };
                    let data = matches!(frame, WsMessage::Text(_) | WsMessage::Binary(_));
                    let message = match decode(frame) {
                        Ok(Some(message)) => message,
                        Ok(None) => continue,
                        Err(error) => {
                            return self.server_ended(session, &format!("{error:#}"));
                        }
                    };
                    if data {
                        session.silent = false;
                        session.last_frame = Instant::now();
                    }
                    if let Some(end) = self.on_frame(session, message) {
                        return end;
                    }
                }
                _ = tokio::time::sleep_until(silence_at), if watching_silence => {
                    session.silent = true;
                    self.fail_with(
                        "silence longer than maxIdleInterval + slack",
                        1,
                        format!(
                            "nothing for {:?} on {} (maxIdleInterval {max_idle:?})",
                            silence_limit, session.connection_id
                        ),
                    );
                }
                token = async { session.token_fetch.as_mut().expect("guarded").await }, if session.token_fetch.is_some() => {
                    session.token_fetch = None;
                    match token {
                        Ok(token) => {
                            let asked = session.auth_asked.unwrap_or_else(Instant::now);
                            self.token = Some((token.clone(), asked + self.plan.token_ttl));
                            let auth = ProtocolMessage {
                                auth: Some(AuthDetails { access_token: Some(token) }),
                                ..ProtocolMessage::new(Action::Auth)
                            };
                            if send(ws, &auth, self.plan.format).await.is_err() {
                                return self.server_ended(session, "socket failed sending AUTH");
                            }
                            session.auth_sent = Some(Instant::now());
                        }
                        Err(error) => self.fail("renewal failed", &error.context("requestToken")),
                    }
                }
                _ = tokio::time::sleep_until(auth_deadline.unwrap_or_else(Instant::now)), if auth_deadline.is_some() => {
                    session.auth_sent = None;
                    self.fail_with("renewal failed", 1, format!("no CONNECTED for AUTH in {REPLY_TIMEOUT:?}"));
                }
                _ = tokio::time::sleep_until(session.attach_deadline), if attach_pending => {
                    self.fail_with("attach failed", 1, format!("no ATTACHED in {REPLY_TIMEOUT:?}"));
                    session.attaching.iter_mut().for_each(|a| *a = None);
                }
                _ = tokio::time::sleep_until(action_at), if !self.finishing() => {
                    match action {
                        Step::Drop => {
                            self.world.tally.count("drops");
                            // Dropping the stream closes the TCP socket: no CLOSE, no close frame.
                            return End::Dropped;
                        }
                        Step::Reconnect => {
                            self.world.tally.count("clean reconnects");
                            self.close(ws).await;
                            return End::Closed;
                        }
                        Step::Presence => {
                            if let Err(error) = self.presence_step(ws, session.attaching[self.plan.presence_on].is_some()).await {
                                return self.server_ended(session, &format!("{error:#}"));
                            }
                        }
                    }
                    (action, action_at) = self.next_action();
                }
                _ = stop.changed(), if !self.finishing() => {}
                _ = catch_up.tick(), if self.finishing() => {
                    let out_of_time = self.finish_by.is_some_and(|by| Instant::now() >= by);
                    if out_of_time || (!attach_pending && self.owed() == 0) {
                        self.close(ws).await;
                        return End::Finished;
                    }
                }
            }
        }
    }

    /// The next random action: whichever of drop, reconnect and a presence step comes first.
    fn next_action(&mut self) -> (Step, Instant) {
        let habits = self.world.habits;
        let mut draw = |mean: Duration| mean.mul_f64(self.rng.gen_range(0.0..2.0));
        [
            (Step::Drop, draw(habits.drop_every)),
            (Step::Reconnect, draw(habits.reconnect_every)),
            (Step::Presence, draw(habits.presence_every)),
        ]
        .into_iter()
        .min_by_key(|(_, after)| *after)
        .map(|(action, after)| (action, Instant::now() + after))
        .expect("three actions")
    }

    /// Enter when absent; otherwise update, or now and then leave.
    async fn presence_step(&mut self, ws: &mut Ws, attaching: bool) -> anyhow::Result<()> {
        if attaching {
            return Ok(());
        }
        let channel = self.plan.presence_on;
        let action = match (self.present, self.rng.gen_range(0..3)) {
            (false, _) => 2,
            (true, 0) => 3,
            (true, _) => 4,
        };
        let message = ProtocolMessage {
            channel: Some(self.plan.channels[channel].0.clone()),
            msg_serial: Some(self.msg_serial),
            presence: Some(vec![PresenceMessage {
                action,
                data: Some(Data::String(format!("status {}", self.msg_serial))),
                ..Default::default()
            }]),
            ..ProtocolMessage::new(Action::Presence)
        };
        self.msg_serial += 1;
        self.present = action != 3;
        self.world.tally.count(match action {
            2 => "presence enters",
            3 => "presence leaves",
            _ => "presence updates",
        });
        send(ws, &message, self.plan.format).await
    }

    /// CLOSE, then read (and check) until CLOSED or the socket ends.
    async fn close(&mut self, ws: &mut Ws) {
        if send(ws, &ProtocolMessage::new(Action::Close), self.plan.format)
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(frame)) = ws.next().await {
                let Ok(Some(message)) = decode(frame) else {
                    continue;
                };
                match message.action() {
                    Some(Action::Closed) => break,
                    Some(Action::Message) => {
                        let channel = message.channel.as_deref().and_then(|name| {
                            self.plan.channels.iter().position(|(c, _)| c == name)
                        });
                        self.on_messages(channel, message);
                    }
                    _ => {}
                }
            }
        })
        .await;
        let _ = ws.close(None).await;
    }
}

/// One connection's state.
struct Session {
    node: usize,
    connection_id: String,
    /// Per channel, while its ATTACHED is awaited: whether the ATTACH resumed it.
    attaching: Vec<Option<bool>>,
    attach_deadline: Instant,
    /// When the server's AUTH came (the new token's life is counted from then).
    auth_asked: Option<Instant>,
    auth_sent: Option<Instant>,
    token_fetch: Option<TokenFuture>,
    /// Set once a silence was counted, until the next frame.
    silent: bool,
    last_frame: Instant,
}
