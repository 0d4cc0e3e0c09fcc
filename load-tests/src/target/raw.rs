//! The ceiling server's protocol (see `ceiling`): `S`/`K` to subscribe, `P`/`A` to publish,
//! `M` deliveries. Same shape as the Ably adapter: a reader task per connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{websocket, Connection, Delivery, Settled, Target, Ws};
use crate::clock;

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

    async fn connect(&self, _client: usize) -> anyhow::Result<RawConnection> {
        let ws = websocket(&self.ws_url).await?;
        let (sink, shared, deliveries) = super::split_reading(ws, read);
        Ok(RawConnection {
            sink,
            shared,
            deliveries,
            sent: 0,
        })
    }
}

/// Subscribes wait by channel.
type Shared = super::Shared<String>;

pub struct RawConnection {
    sink: SplitSink<Ws, WsMessage>,
    shared: Arc<Shared>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    sent: u64,
}

impl Connection for RawConnection {
    async fn subscribe(&mut self, channel: &str) -> anyhow::Result<()> {
        let on_done = self.shared.expect(channel.to_owned());
        self.sink
            .send(WsMessage::Text(format!("S {channel}").into()))
            .await?;
        let what = format!("subscribing to {channel}");
        self.shared.confirmed(on_done, &what, "K").await
    }

    async fn publish(&mut self, channel: &str, payload: String) -> anyhow::Result<()> {
        self.sent += 1;
        self.sink
            .send(WsMessage::Text(format!("P {channel} {payload}").into()))
            .await
            .context("sending")
    }

    answered_by_shared!(sent);

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
            shared.resolve(channel, ());
        }
    }
    shared.reader_ended();
}
