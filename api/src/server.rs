//! The listener: our own accept loop around hyper's HTTP/1 connection, so that no socket is held
//! for free. A request's head must arrive within `header_timeout` of the connection's start or
//! of its first byte (a silent socket and a slowloris upgrade are closed after it;
//! `HeadDeadline`), an idle keep-alive connection is closed after `keep_alive_timeout` (longer
//! than the 60 s a load balancer or ingress keeps its idle upstream connections, so it is the
//! one to close them, never racing a request it sends), a body must arrive within
//! `body_timeout`; connections are capped in all and per source address, the ones over a cap
//! answered 503 / DISCONNECTED 50003 on a few spare slots and beyond those closed at once; and
//! `accept` errors (out of file descriptors) back off from 10 ms to 1 s instead of spinning.
//! Upgraded WebSockets keep their slot until the socket closes.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::FutureExt as _;
use gateway::config::Sockets;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use protocol::{Action, ErrorCode, Format, ProtocolMessage};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_http::cors::CorsLayer;

use crate::error::ApiError;

/// Connections over a cap still get an answer (503, or DISCONNECTED for an upgrade) while fewer
/// than this many are being answered; beyond, they are closed unanswered.
const SPARE_SLOTS: usize = 64;
/// An over-cap connection gets at most this long to send its request.
const SPARE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets each HTTP
/// connection finish its request (idle ones close at once) and returns when they have.
/// Upgraded WebSockets are not waited for: they are the gateway's to drain.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    // What over-cap refusals carry too, so a browser can read the 503.
    cors: Option<CorsLayer>,
    sockets: Sockets,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = app.layer(axum::middleware::from_fn_with_state(
        sockets.body_timeout,
        bound_body,
    ));
    let admission = Arc::new(Admission::new(&sockets));
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    let (close_tx, close_rx) = watch::channel(());
    let mut backoff: Option<Duration> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = signal_tx.closed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = None;
                accepted
            }
            // The peer gave up before we took it: nothing to do.
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // EMFILE/ENFILE (out of file descriptors) or ENOBUFS: retrying at once would spin
                // a core until a socket closes.
                let wait = backoff.map_or(FIRST_BACKOFF, |last| (last * 2).min(MAX_BACKOFF));
                backoff = Some(wait);
                ::metrics::counter!("realtime_accept_errors_total", "kind" => error_kind(&error))
                    .increment(1);
                tracing::warn!(
                    %error,
                    wait_ms = wait.as_millis() as u64,
                    open = admission.open(),
                    "accept failed; backing off"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = signal_tx.closed() => break,
                }
            }
        };
        // Realtime frames are small and latency-bound: never let Nagle hold one back.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let (app, header_timeout, slot) = match admission.admit(peer.ip()) {
            Admit::Serve(slot) => (app.clone(), sockets.header_timeout, slot),
            Admit::Refuse(cap, slot) => {
                ::metrics::counter!("realtime_connections_refused_total", "cap" => cap.label())
                    .increment(1);
                tracing::debug!(%peer, cap = cap.label(), "connection over the cap; refusing");
                let timeout = sockets.header_timeout.min(SPARE_HEADER_TIMEOUT);
                // Its answers say `Connection: close` (hyper's keep_alive(false) would
                // also put it on the 101 of an upgrade, which clients then refuse).
                let refusal = match &cors {
                    Some(cors) => refusal_router(cap).layer(cors.clone()),
                    None => refusal_router(cap),
                };
                (refusal, timeout, slot)
            }
            Admit::Close(cap) => {
                ::metrics::counter!("realtime_connections_refused_total", "cap" => "spare")
                    .increment(1);
                tracing::debug!(%peer, cap = cap.label(), "connection over the cap and no spare slot; closing");
                continue;
            }
        };
        let clock = HeadClock::new();
        let io = TokioIo::new(Held {
            stream,
            _slot: slot,
            head: HeadDeadline::new(clock.clone(), header_timeout),
        });
        let keep_alive = sockets.keep_alive_timeout;
        let signal = signal_tx.clone();
        let close = close_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            // hyper's head timer runs from when it starts waiting: the idle keep-alive bound.
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(keep_alive);
            let service = Clocked {
                inner: TowerToHyperService::new(app),
                clock,
            };
            let conn = builder.serve_connection(io, service).with_upgrades();
            let mut conn = pin!(conn);
            let mut signalled = pin!(signal.closed().fuse());
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        // A head late is counted where it is found (`HeadDeadline`); hyper's
                        // own timeout is an idle keep-alive connection ending.
                        if let Err(error) = result {
                            tracing::trace!(%error, "connection ended");
                        }
                        break;
                    }
                    _ = &mut signalled => conn.as_mut().graceful_shutdown(),
                }
            }
            drop(close);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}

fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// A bounded label for `realtime_accept_errors_total`.
fn error_kind(error: &std::io::Error) -> &'static str {
    // EMFILE 24 (process), ENFILE 23 (system), ENOBUFS 105, ENOMEM 12 on Linux.
    match error.raw_os_error() {
        Some(24) => "emfile",
        Some(23) => "enfile",
        Some(105) | Some(12) => "nomem",
        _ => "other",
    }
}

/// Which cap a connection is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    Total,
    PerIp,
}

impl Cap {
    fn label(self) -> &'static str {
        match self {
            Cap::Total => "total",
            Cap::PerIp => "per_ip",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Cap::Total => "server has as many connections as it accepts; retry later",
            Cap::PerIp => "too many connections from this address; retry later",
        }
    }
}

enum Admit {
    Serve(Slot),
    Refuse(Cap, Slot),
    Close(Cap),
}

/// Counts of open sockets, taken at accept and given back when the socket closes (one short lock
/// each, never across an await).
struct Admission {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    spare: usize,
    /// Only kept with a per-address cap.
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    fn new(sockets: &Sockets) -> Admission {
        Admission {
            max_total: sockets.max_connections,
            max_per_ip: sockets.max_connections_per_ip,
            counts: Mutex::default(),
        }
    }

    fn open(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Admit {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let over = if self.max_total > 0 && counts.total >= self.max_total {
            Some(Cap::Total)
        } else if self.max_per_ip > 0
            && counts.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip
        {
            Some(Cap::PerIp)
        } else {
            None
        };
        match over {
            None => {
                counts.total += 1;
                if self.max_per_ip > 0 {
                    *counts.per_ip.entry(ip).or_default() += 1;
                }
                ::metrics::gauge!("realtime_open_sockets").increment(1.0);
                Admit::Serve(Slot {
                    admission: self.clone(),
                    ip: Some(ip),
                })
            }
            Some(cap) if counts.spare < SPARE_SLOTS => {
                counts.spare += 1;
                Admit::Refuse(
                    cap,
                    Slot {
                        admission: self.clone(),
                        ip: None,
                    },
                )
            }
            Some(cap) => Admit::Close(cap),
        }
    }
}

/// One admitted socket (or one spare slot when `ip` is `None`), given back on drop.
struct Slot {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(ip) = self.ip else {
            counts.spare -= 1;
            return;
        };
        counts.total -= 1;
        ::metrics::gauge!("realtime_open_sockets").decrement(1.0);
        if let Some(n) = counts.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
                gateway::shrink::hash_map(&mut counts.per_ip);
            }
        }
    }
}

/// Where a connection is between requests, told by its service (`Clocked`): which request it
/// is on, and whether it waits for the next head (not while a request is being answered, and
/// never again after an upgrade).
struct HeadClock {
    requests: AtomicU64,
    awaiting: AtomicBool,
}

impl HeadClock {
    fn new() -> Arc<HeadClock> {
        Arc::new(HeadClock {
            requests: AtomicU64::new(0),
            awaiting: AtomicBool::new(true),
        })
    }
}

/// The head deadline of a connection: armed at its start, then by the first byte read while it
/// awaits a head; when it passes with the head still incomplete, reads fail (hyper closes the
/// connection). A connection idle between requests has none (hyper's keep-alive bound holds).
struct HeadDeadline {
    clock: Arc<HeadClock>,
    timeout: Duration,
    /// The request number it was armed for, and when it passes.
    armed: Option<(u64, Pin<Box<tokio::time::Sleep>>)>,
}

impl HeadDeadline {
    fn new(clock: Arc<HeadClock>, timeout: Duration) -> HeadDeadline {
        HeadDeadline {
            clock,
            timeout,
            armed: Some((0, Box::pin(tokio::time::sleep(timeout)))),
        }
    }

    /// After a read of `read` bytes that `polled`: whether the head came too late.
    fn late(&mut self, cx: &mut Context<'_>, read: usize, pending: bool) -> bool {
        let request = self.clock.requests.load(Ordering::Acquire);
        if !self.clock.awaiting.load(Ordering::Acquire) {
            self.armed = None;
            return false;
        }
        if matches!(&self.armed, Some((armed_for, _)) if *armed_for != request) {
            self.armed = None;
        }
        if self.armed.is_none() && read > 0 {
            self.armed = Some((request, Box::pin(tokio::time::sleep(self.timeout))));
        }
        let Some((_, deadline)) = &mut self.armed else {
            return false;
        };
        // Polled while the socket has nothing: the deadline wakes the connection to end it.
        if pending && deadline.as_mut().poll(cx).is_ready() {
            ::metrics::counter!("realtime_http_timeouts_total", "phase" => "headers").increment(1);
            return true;
        }
        false
    }
}

/// The connection's service, telling its `HeadClock` when a request's head was read and when
/// its answer is ready (then the next head is awaited, unless it was a 101 upgrade).
struct Clocked<S> {
    inner: S,
    clock: Arc<HeadClock>,
}

impl<S, B, R> hyper::service::Service<axum::http::Request<B>> for Clocked<S>
where
    S: hyper::service::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: axum::http::Request<B>) -> Self::Future {
        self.clock.awaiting.store(false, Ordering::Release);
        self.clock.requests.fetch_add(1, Ordering::AcqRel);
        let clock = self.clock.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let upgraded = matches!(
                &answer,
                Ok(response) if response.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS
            );
            if !upgraded {
                clock.awaiting.store(true, Ordering::Release);
            }
            answer
        })
    }
}

/// A socket holding its slot: the slot goes back when hyper, or the WebSocket it was upgraded
/// to, drops the socket.
struct Held {
    stream: TcpStream,
    _slot: Slot,
    head: HeadDeadline,
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if this.head.late(cx, read, polled.is_pending()) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request head not received in time",
            )));
        }
        polled
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What a connection over a cap is served: 503 with 50003 for any request, DISCONNECTED with
/// 50003 for a WebSocket upgrade (ably-js then retries after its `disconnectedRetryTimeout`).
fn refusal_router(cap: Cap) -> Router {
    Router::new()
        .route("/", axum::routing::get(refuse_upgrade))
        .fallback(refuse)
        .with_state(cap)
}

async fn refuse(State(cap): State<Cap>, headers: HeaderMap) -> Response {
    over_capacity(cap, crate::body::response_format(&headers))
}

fn over_capacity(cap: Cap, format: Format) -> Response {
    let mut response = ApiError::code(ErrorCode::OverCapacity, cap.message())
        .in_format(format)
        .into_response();
    response
        .headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    response
}

async fn refuse_upgrade(
    State(cap): State<Cap>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return over_capacity(cap, crate::body::response_format(&headers));
    };
    let msgpack = query.get("format").map(String::as_str) == Some("msgpack");
    upgrade.on_upgrade(move |mut socket| async move {
        let refusal = ProtocolMessage::error(
            Action::Disconnected,
            ErrorCode::OverCapacity.info(cap.message()),
        );
        let frame = if msgpack {
            protocol::codec::encode(&refusal, Format::Msgpack)
                .ok()
                .map(|bytes| WsMessage::Binary(bytes.into()))
        } else {
            protocol::codec::encode(&refusal, Format::Json)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .map(|text| WsMessage::Text(text.into()))
        };
        let goodbye = async {
            if let Some(frame) = frame {
                socket.send(frame).await?;
            }
            socket.send(WsMessage::Close(None)).await
        };
        // A peer that does not read gets no longer than this.
        let _ = tokio::time::timeout(SPARE_HEADER_TIMEOUT, goodbye).await;
    })
}

/// Bounds the time a request body may take to arrive, from its head on; past it the request
/// fails with 408 and the connection closes.
async fn bound_body(
    State(timeout): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let respond_in = crate::body::response_format(request.headers());
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        axum::body::Body::new(Deadline {
            body,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    ::metrics::counter!("realtime_http_timeouts_total", "phase" => "body").increment(1);
    let mut response = ApiError::code(
        ErrorCode::RequestTimeout,
        format!(
            "request body not received within {} ms",
            timeout.as_millis()
        ),
    )
    .in_format(respond_in)
    .into_response();
    response
        .headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline has passed.
struct Deadline {
    body: axum::body::Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new("request body timed out"))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
