//! The seam between a workload and a server: `Target` opens client connections, a `Connection`
//! subscribes, publishes and hands over deliveries. Scenarios are written against these traits
//! only, so an adapter for a peer (Pusher for Soketi/Sockudo, Socket.IO, a raw WebSocket
//! broadcast) is one more file here.
//!
//! Contract for adapters: a connection reads its socket continuously on its own task from the
//! moment it opens (servers disconnect slow readers), timestamps each delivery as it arrives
//! (`Delivery::received_us`), and never blocks that task on the consumer.

/// The `Connection` methods every protocol answers alike from its `shared` state, its
/// `deliveries` channel and its count of publishes sent (the field `$sent`).
macro_rules! answered_by_shared {
    ($sent:ident) => {
        fn in_flight(&self) -> u64 {
            self.shared.in_flight(self.$sent)
        }

        async fn settle(&mut self, timeout: Duration) -> Settled {
            self.shared.settle(self.$sent, timeout).await
        }

        async fn next_delivery(&mut self) -> Option<Delivery> {
            self.deliveries.recv().await
        }

        fn failure(&self) -> Option<String> {
            self.shared.failure()
        }
    };
}

pub mod ably;
pub mod pusher;
pub mod raw;
pub mod socketio;

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::StreamExt as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a server gets to accept a connection or confirm a subscription. Generous: a storm on
/// a loaded 2-core box queues thousands of handshakes.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Small socket buffers: tungstenite's 128 KiB read buffer would cost the load tool gigabytes at
/// tens of thousands of connections. Frames larger than this still arrive whole.
const BUFFER_BYTES: usize = 8 * 1024;

/// Local addresses connections are made from, in turn (`--source-ips`); empty = the kernel's
/// choice. One source address reaches one server port through ~28,000 ephemeral ports
/// (`net.ipv4.ip_local_port_range`): more than that needs more addresses (all of 127.0.0.0/8 is
/// loopback on Linux).
static SOURCES: std::sync::OnceLock<Vec<std::net::IpAddr>> = std::sync::OnceLock::new();
static NEXT_SOURCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sets the source addresses for every connection of this process (once, at start).
pub fn set_source_addresses(addresses: Vec<std::net::IpAddr>) {
    let _ = SOURCES.set(addresses);
}

/// The WebSocket handshake over TCP, from the next `--source-ips` address if any were given.
pub(crate) async fn connect_ws(
    url: &str,
    config: WebSocketConfig,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let sources = SOURCES.get().map(Vec::as_slice).unwrap_or_default();
    if sources.is_empty() {
        return Ok(
            tokio_tungstenite::connect_async_with_config(url, Some(config), true)
                .await?
                .0,
        );
    }
    let source =
        sources[NEXT_SOURCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % sources.len()];
    let server = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default();
    let server: std::net::SocketAddr = tokio::net::lookup_host(server)
        .await?
        .find(|a| a.is_ipv4() == source.is_ipv4())
        .ok_or_else(|| std::io::Error::other(format!("{server}: no address like {source}")))?;
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await?;
    Ok(ws)
}

/// Opens a WebSocket with the load tool's small buffers (every adapter's). Errors name the URL
/// without its query, which may hold a key or token.
pub(crate) async fn websocket(url: &str) -> anyhow::Result<Ws> {
    let config = WebSocketConfig::default()
        .read_buffer_size(BUFFER_BYTES)
        .write_buffer_size(BUFFER_BYTES)
        .max_write_buffer_size(BUFFER_BYTES * 64);
    let ws = tokio::time::timeout(REPLY_TIMEOUT, connect_ws(url, config))
        .await
        .context("WebSocket upgrade timed out")?
        .with_context(|| {
            let place = url.split('?').next().unwrap_or_default();
            format!("WebSocket upgrade to {place} failed")
        })?;
    Ok(ws)
}

/// `ws://host:port/` from the server's `http://host:port` (or `ws://`, `https://`, `wss://`).
pub(crate) fn ws_base(url: &str) -> anyhow::Result<String> {
    let rest = url.trim_end_matches('/');
    Ok(if let Some(host) = rest.strip_prefix("http://") {
        format!("ws://{host}/")
    } else if let Some(host) = rest.strip_prefix("https://") {
        format!("wss://{host}/")
    } else if rest.starts_with("ws://") || rest.starts_with("wss://") {
        format!("{rest}/")
    } else {
        bail!("--url must start with http:// or https:// (got {url})");
    })
}

/// One message as a subscriber received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub channel: String,
    pub payload: Bytes,
    /// `clock::now_us()` when the frame was read off the socket.
    pub received_us: u64,
}

/// Publishes a connection made, as the server confirmed them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    pub sent: u64,
    pub acknowledged: u64,
    pub refused: u64,
}

/// What an adapter's reader task and its connection share: subscriptions waiting for the
/// server's confirmation (by channel, ack id, ...; `R` is what the confirmation carries) and the
/// publishes' `Outcomes`, which it derefs to.
pub(crate) struct Shared<K, R = ()> {
    pending: std::sync::Mutex<std::collections::HashMap<K, tokio::sync::oneshot::Sender<R>>>,
    outcomes: Outcomes,
}

impl<K, R> Default for Shared<K, R> {
    fn default() -> Self {
        Shared {
            pending: Default::default(),
            outcomes: Outcomes::default(),
        }
    }
}

impl<K, R> std::ops::Deref for Shared<K, R> {
    type Target = Outcomes;

    fn deref(&self) -> &Outcomes {
        &self.outcomes
    }
}

impl<K: std::hash::Hash + Eq, R> Shared<K, R> {
    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<K, tokio::sync::oneshot::Sender<R>>>
    {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiter for `key`'s confirmation (before the request goes out).
    pub(crate) fn expect(&self, key: K) -> tokio::sync::oneshot::Receiver<R> {
        let (done, on_done) = tokio::sync::oneshot::channel();
        self.pending().insert(key, done);
        on_done
    }

    /// The reader saw `key` confirmed: wakes its waiter. False if nothing waited for `key`.
    pub(crate) fn resolve<Q>(&self, key: &Q, value: R) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let waiter = self.pending().remove(key);
        waiter.map(|waiter| waiter.send(value)).is_some()
    }

    /// Waits (bounded) for a confirmation `expect` registered; `what` names the request in
    /// errors, `reply` the answer that did not come.
    pub(crate) async fn confirmed(
        &self,
        on_done: tokio::sync::oneshot::Receiver<R>,
        what: &str,
        reply: &str,
    ) -> anyhow::Result<R> {
        match tokio::time::timeout(REPLY_TIMEOUT, on_done).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => bail!(
                "connection ended while {what}: {}",
                self.failure().unwrap_or_default()
            ),
            Err(_) => bail!("no {reply} for {what} in time"),
        }
    }

    /// The reader task is done: an end nobody asked for is a failure, publishes stop waiting,
    /// and dropping the pending senders wakes every waiter.
    pub(crate) fn reader_ended(&self) {
        use std::sync::atomic::Ordering;
        if !self.closing.load(Ordering::Acquire) {
            self.fail("connection closed unasked".to_owned());
        }
        self.ended.store(true, Ordering::Release);
        self.settled.notify_waiters();
        self.pending().clear();
    }
}

/// What an adapter's reader task and its connection share about publishes: ACK/NACK counts,
/// the end of the connection, and the first failure.
#[derive(Default)]
pub(crate) struct Outcomes {
    pub(crate) acknowledged: std::sync::atomic::AtomicU64,
    pub(crate) refused: std::sync::atomic::AtomicU64,
    /// Woken on every ACK/NACK and when the reader ends.
    pub(crate) settled: tokio::sync::Notify,
    pub(crate) ended: std::sync::atomic::AtomicBool,
    /// Set by `close`, so the end that follows is not a failure.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    failure: std::sync::Mutex<Option<String>>,
}

impl Outcomes {
    /// Records why the connection failed; the first reason wins.
    pub(crate) fn fail(&self, why: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert(why);
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Of `sent` publishes, how many are neither acknowledged nor refused yet.
    pub(crate) fn in_flight(&self, sent: u64) -> u64 {
        use std::sync::atomic::Ordering;
        let done = self.acknowledged.load(Ordering::Relaxed) + self.refused.load(Ordering::Relaxed);
        sent.saturating_sub(done)
    }

    /// Waits (bounded) until all of `sent` publishes are answered or the connection ended.
    pub(crate) async fn settle(&self, sent: u64, timeout: Duration) -> Settled {
        use std::sync::atomic::Ordering;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register before checking, so a wake-up between the two is not missed.
            let woken = self.settled.notified();
            if self.in_flight(sent) == 0 || self.ended.load(Ordering::Acquire) {
                break;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                break;
            }
        }
        Settled {
            sent,
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

pub trait Target: Send + Sync + 'static {
    type Connection: Connection;

    /// Opens connection number `client` (numbers pick per-client credentials and client ids) and
    /// returns once the server has accepted it.
    fn connect(
        &self,
        client: usize,
    ) -> impl Future<Output = anyhow::Result<Self::Connection>> + Send;
}

pub trait Connection: Send + 'static {
    /// Subscribes to `channel`, returning once the server confirmed it.
    fn subscribe(&mut self, channel: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Sends one publication without waiting for its confirmation (see `settle`).
    fn publish(
        &mut self,
        channel: &str,
        payload: String,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Publishes sent and not yet confirmed.
    fn in_flight(&self) -> u64;

    /// Waits (at most `timeout`) until every publish is confirmed or refused.
    fn settle(&mut self, timeout: Duration) -> impl Future<Output = Settled> + Send;

    /// The next delivery; `None` once the connection has ended.
    fn next_delivery(&mut self) -> impl Future<Output = Option<Delivery>> + Send;

    /// Why the connection ended or what the server refused, if it did so unasked.
    fn failure(&self) -> Option<String>;

    /// Closes politely.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A WebSocket's write half, shared by a connection and its reader task (which answers pings).
pub(crate) type SharedSink = std::sync::Arc<tokio::sync::Mutex<SplitSink<Ws, WsMessage>>>;

/// Where a reader task sends deliveries, and where its connection takes them from.
type Deliver = tokio::sync::mpsc::UnboundedSender<Delivery>;
type Deliveries = tokio::sync::mpsc::UnboundedReceiver<Delivery>;

/// `ws` split: its write half for the connection, and `read` spawned on its read half with the
/// state shared with the connection and where deliveries go.
pub(crate) fn split_reading<K, R, Fut>(
    ws: Ws,
    read: impl FnOnce(SplitStream<Ws>, std::sync::Arc<Shared<K, R>>, Deliver) -> Fut,
) -> (
    SplitSink<Ws, WsMessage>,
    std::sync::Arc<Shared<K, R>>,
    Deliveries,
)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sink, stream) = ws.split();
    let shared = std::sync::Arc::new(Shared::default());
    let (deliver, deliveries) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(read(stream, shared.clone(), deliver));
    (sink, shared, deliveries)
}

/// What a text-protocol reader task holds: the read half, the shared write half (for pongs),
/// the state shared with its connection, and where deliveries go.
pub(crate) struct Reader<K> {
    pub(crate) stream: SplitStream<Ws>,
    pub(crate) sink: SharedSink,
    pub(crate) shared: std::sync::Arc<Shared<K>>,
    deliveries: Deliver,
}

impl<K> Reader<K> {
    /// Hands a delivery to the connection (dropped if the connection is gone).
    pub(crate) fn deliver(&self, channel: String, payload: Bytes, received_us: u64) {
        let _ = self.deliveries.send(Delivery {
            channel,
            payload,
            received_us,
        });
    }
}

/// What a text-protocol connection keeps once its handshake is done: `ws` split, `read` spawned
/// on a `Reader` of the read half.
pub(crate) fn spawn_reader<K, Fut>(
    ws: Ws,
    read: impl FnOnce(Reader<K>) -> Fut,
) -> (SharedSink, std::sync::Arc<Shared<K>>, Deliveries)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sink, stream) = ws.split();
    let sink = std::sync::Arc::new(tokio::sync::Mutex::new(sink));
    let shared = std::sync::Arc::new(Shared::default());
    let (deliver, deliveries) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(read(Reader {
        stream,
        sink: sink.clone(),
        shared: shared.clone(),
        deliveries: deliver,
    }));
    (sink, shared, deliveries)
}

/// The next text frame and when it arrived (other frames skipped); `None` once the socket is
/// closed or broken. The head of every text protocol's reader loop.
pub(crate) async fn next_text_frame(stream: &mut SplitStream<Ws>) -> Option<(u64, Utf8Bytes)> {
    while let Some(frame) = stream.next().await {
        let received_us = crate::clock::now_us();
        match frame {
            Ok(WsMessage::Text(text)) => return Some((received_us, text)),
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
    None
}
