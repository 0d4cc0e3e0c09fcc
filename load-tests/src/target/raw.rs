//! The ceiling server's protocol (see `ceiling`): `S`/`K` to subscribe, `P`/`A` to publish,
//! `M` deliveries. Same shape as the Ably adapter: a reader task per connection.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Connection, Delivery, Settled, Target};
use crate::clock;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RawTarget {
    ws_url: String,
}

impl RawTarget {
    /// `url` is `http://host:port` (or `ws://host:port`) of a `realtime-load ceiling`.
    pub fn new(url: &str) -> RawTarget {
        let rest = url.trim_end_matches('/');
        let host = rest
            .strip_prefix("http://")
            .or_else(|| rest.strip_prefix("ws://"))
            .unwrap_or(rest);
        RawTarget {
            ws_url: format!("ws://{host}/"),
        }
    }
}

impl Target for RawTarget {
    type Connection = RawConnection;

    fn connect(
        &self,
        _client: usize,
    ) -> impl std::future::Future<Output = anyhow::Result<RawConnection>> + Send {
        let url = self.ws_url.clone();
        async move {
            let config = WebSocketConfig::default()
                .read_buffer_size(8 * 1024)
                .write_buffer_size(8 * 1024)
                .max_write_buffer_size(512 * 1024);
            let ws = tokio::time::timeout(REPLY_TIMEOUT, super::connect_ws(&url, config))
                .await
                .context("WebSocket upgrade timed out")?
                .context("WebSocket upgrade failed")?;
            let (sink, stream) = ws.split();
            let shared = Arc::new(Shared::default());
            let (deliver, deliveries) = mpsc::unbounded_channel();
            tokio::spawn(read(stream, shared.clone(), deliver));
            Ok(RawConnection {
                sink,
                shared,
                deliveries,
                sent: 0,
            })
        }
    }
}

#[derive(Default)]
struct Shared {
    subscribing: Mutex<HashMap<String, oneshot::Sender<()>>>,
    outcomes: super::Outcomes,
}

impl std::ops::Deref for Shared {
    type Target = super::Outcomes;

    fn deref(&self) -> &super::Outcomes {
        &self.outcomes
    }
}

pub struct RawConnection {
    sink: SplitSink<Ws, WsMessage>,
    shared: Arc<Shared>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    sent: u64,
}

impl Connection for RawConnection {
    async fn subscribe(&mut self, channel: &str) -> anyhow::Result<()> {
        let (done, on_done) = oneshot::channel();
        self.shared
            .subscribing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel.to_owned(), done);
        self.sink
            .send(WsMessage::Text(format!("S {channel}").into()))
            .await?;
        match tokio::time::timeout(REPLY_TIMEOUT, on_done).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => bail!("connection ended while subscribing to {channel}"),
            Err(_) => bail!("no reply to subscribing to {channel} in time"),
        }
    }

    async fn publish(&mut self, channel: &str, payload: String) -> anyhow::Result<()> {
        self.sent += 1;
        self.sink
            .send(WsMessage::Text(format!("P {channel} {payload}").into()))
            .await
            .context("sending")
    }

    fn in_flight(&self) -> u64 {
        self.shared.in_flight(self.sent)
    }

    async fn settle(&mut self, timeout: Duration) -> Settled {
        self.shared.settle(self.sent, timeout).await
    }

    async fn next_delivery(&mut self) -> Option<Delivery> {
        self.deliveries.recv().await
    }

    fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    async fn close(mut self) {
        self.shared.closing.store(true, Ordering::Release);
        let _ = self.sink.close().await;
    }
}

async fn read(
    mut stream: SplitStream<Ws>,
    shared: Arc<Shared>,
    deliver: mpsc::UnboundedSender<Delivery>,
) {
    while let Some(Ok(frame)) = stream.next().await {
        let received_us = clock::now_us();
        let WsMessage::Text(text) = frame else {
            continue;
        };
        let text = text.as_str();
        if let Some(rest) = text.strip_prefix("M ") {
            if let Some((channel, payload)) = rest.split_once(' ') {
                let _ = deliver.send(Delivery {
                    channel: channel.to_owned(),
                    payload: Bytes::copy_from_slice(payload.as_bytes()),
                    received_us,
                });
            }
        } else if text == "A" {
            shared.acknowledged.fetch_add(1, Ordering::Relaxed);
            shared.settled.notify_waiters();
        } else if let Some(channel) = text.strip_prefix("K ") {
            let waiter = shared
                .subscribing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(channel);
            if let Some(waiter) = waiter {
                let _ = waiter.send(());
            }
        }
    }
    if !shared.closing.load(Ordering::Acquire) {
        let mut failure = shared.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert_with(|| "connection closed unasked".to_owned());
    }
    shared.ended.store(true, Ordering::Release);
    shared.settled.notify_waiters();
    shared
        .subscribing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
}
