//! Socket.IO 4 over the WebSocket transport only (Engine.IO v4 framing), against the fan-out
//! server in `load-tests/peers/socketio-server.mjs`: rooms joined by a `subscribe` event,
//! publications sent as a `publish` event with an ack, deliveries emitted to the room as
//! `42["load", room, data]`.
//!
//! Engine.IO packets arrive one per WebSocket frame: `0{...}` open, `2` ping (answered `3`),
//! `4…` a Socket.IO packet: `40` connected, `42[...]` an event, `43<id>[...]` an ack, `44` a
//! refused connect, `41` a disconnect. The reader task shares the write half with the caller
//! behind an async mutex, only to answer pings.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{
    next_text_frame, websocket, ws_base, Connection, Delivery, Reader, Settled, Target, Ws,
    REPLY_TIMEOUT,
};

/// The event name publications are emitted under.
const EVENT: &str = "load";

#[derive(Debug, Clone)]
pub struct SocketIoTarget {
    ws_url: String,
}

impl SocketIoTarget {
    /// `url` is the fan-out server's `http://host:port`.
    pub fn new(url: &str) -> anyhow::Result<SocketIoTarget> {
        Ok(SocketIoTarget {
            ws_url: format!("{}socket.io/?EIO=4&transport=websocket", ws_base(url)?),
        })
    }
}

impl Target for SocketIoTarget {
    type Connection = SocketIoConnection;

    async fn connect(&self, _client: usize) -> anyhow::Result<SocketIoConnection> {
        SocketIoConnection::open(&self.ws_url).await
    }
}

type Sink = super::SharedSink;

/// Subscribes wait for their ack, by ack id.
type Shared = super::Shared<u64>;

pub struct SocketIoConnection {
    sink: Sink,
    shared: Arc<Shared>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    next_ack_id: u64,
    published: u64,
}

impl SocketIoConnection {
    async fn open(url: &str) -> anyhow::Result<SocketIoConnection> {
        let mut ws = websocket(url).await?;
        // Engine.IO open, then our Socket.IO connect to the main namespace and its answer.
        tokio::time::timeout(REPLY_TIMEOUT, async {
            let open = next_text(&mut ws).await?;
            if !open.starts_with('0') {
                bail!("expected an Engine.IO open packet, got {open:.80}");
            }
            ws.send(WsMessage::Text("40".into())).await?;
            loop {
                let packet = next_text(&mut ws).await?;
                match packet.as_bytes() {
                    [b'4', b'0', ..] => return Ok(()),
                    [b'4', b'4', ..] => bail!("connect refused: {packet:.200}"),
                    [b'2'] => ws.send(WsMessage::Text("3".into())).await?,
                    _ => bail!("expected 40, got {packet:.80}"),
                }
            }
        })
        .await
        .context("no Socket.IO connect in time")??;
        let (sink, shared, deliveries) = super::spawn_reader(ws, read);
        Ok(SocketIoConnection {
            sink,
            shared,
            deliveries,
            next_ack_id: 0,
            published: 0,
        })
    }

    async fn emit(&mut self, ack_id: u64, arguments: Value) -> anyhow::Result<()> {
        let frame = format!("42{ack_id}{arguments}");
        self.sink
            .lock()
            .await
            .send(WsMessage::Text(frame.into()))
            .await
            .context("sending")
    }
}

impl Connection for SocketIoConnection {
    async fn subscribe(&mut self, channel: &str) -> anyhow::Result<()> {
        let ack_id = self.next_ack_id;
        self.next_ack_id += 1;
        let on_done = self.shared.expect(ack_id);
        self.emit(ack_id, json!(["subscribe", channel])).await?;
        let what = format!("subscribing to {channel}");
        self.shared.confirmed(on_done, &what, "ack").await
    }

    async fn publish(&mut self, channel: &str, payload: String) -> anyhow::Result<()> {
        let ack_id = self.next_ack_id;
        self.next_ack_id += 1;
        self.published += 1;
        let message = json!({ "room": channel, "event": EVENT, "data": payload });
        self.emit(ack_id, json!(["publish", message])).await
    }

    answered_by_shared!(published);

    async fn close(self) {
        self.shared.closing.store(true, Ordering::Release);
        let mut sink = self.sink.lock().await;
        // Socket.IO disconnect, then Engine.IO close.
        let _ = sink.send(WsMessage::Text("41".into())).await;
        let _ = sink.close().await;
    }
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    while let Some(frame) = ws.next().await {
        match frame? {
            WsMessage::Text(text) => return Ok(text.as_str().to_owned()),
            WsMessage::Close(close) => bail!("WebSocket closed: {close:?}"),
            _ => continue,
        }
    }
    bail!("connection closed during the handshake")
}

async fn read(mut reader: Reader<u64>) {
    while let Some((received_us, text)) = next_text_frame(&mut reader.stream).await {
        let packet = text.as_str();
        if let Some(event) = packet.strip_prefix("42") {
            match parse_event(event) {
                Some((channel, payload)) => {
                    reader.deliver(channel, payload, received_us);
                }
                None => reader
                    .shared
                    .fail(format!("unreadable event {packet:.120}")),
            }
        } else if let Some(ack) = packet.strip_prefix("43") {
            on_ack(&reader.shared, ack);
        } else if packet == "2" {
            let pong = reader
                .sink
                .lock()
                .await
                .send(WsMessage::Text("3".into()))
                .await;
            if pong.is_err() {
                break;
            }
        } else if packet.starts_with("41") || packet.starts_with('1') {
            break;
        }
    }
    reader.shared.reader_ended();
}

/// `["load", room, data]` → (room, data).
fn parse_event(event: &str) -> Option<(String, Bytes)> {
    let (name, room, data): (String, String, String) = serde_json::from_str(event).ok()?;
    (name == EVENT).then(|| (room, Bytes::from(data.into_bytes())))
}

/// `<id>[...]`: a subscribe's ack resolves its waiter; a publish's counts as confirmed, or as
/// refused when the server acked with a reason (`["bad publish"]`).
fn on_ack(shared: &Shared, ack: &str) {
    let split = ack.find('[').unwrap_or(ack.len());
    let Ok(ack_id) = ack[..split].parse::<u64>() else {
        return;
    };
    // A subscribe's ack, or else a publish's.
    if shared.resolve(&ack_id, ()) {
        return;
    }
    let arguments: Vec<Value> = serde_json::from_str(&ack[split..]).unwrap_or_default();
    match arguments.first() {
        Some(Value::String(why)) => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            shared.fail(format!("publish refused: {why}"));
        }
        _ => {
            shared.acknowledged.fetch_add(1, Ordering::Relaxed);
        }
    }
    shared.settled.notify_waiters();
}

#[cfg(test)]
mod tests;
