//! `realtime-load ceiling`: a bare-bones broadcast server, plain tokio + WebSocket with no
//! protocol to speak of, as the ceiling our server is measured against (`fanout --protocol raw`).
//! It does the least a fan-out server can: a frame is built once per publication and the same
//! bytes are queued for every subscriber, as ours does; no auth, ids, serials or history.
//!
//! Text frames (payloads must not contain spaces; the load tool's never do):
//! - `S <channel>` subscribes; answered `K <channel>`.
//! - `P <channel> <payload>` publishes; answered `A`, and every subscriber gets
//!   `M <channel> <payload>`.
//!
//! Each connection has a bounded queue of `QUEUE_FRAMES`; a subscriber whose queue is full is
//! dropped from the channel (the load tool then counts what it missed as lost).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

/// The same bound our server's outbox has by default.
const QUEUE_FRAMES: usize = 256;
/// Frames written before one flush.
const WRITE_BATCH: usize = 64;

type Subscribers = Vec<(u64, mpsc::Sender<Utf8Bytes>)>;

#[derive(Default)]
struct Channels {
    by_name: Mutex<HashMap<String, Subscribers>>,
    next_id: AtomicU64,
}

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let channels = Arc::new(Channels::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, channels.clone()));
    }
}

async fn connection(stream: TcpStream, channels: Arc<Channels>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(1024 * 1024);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (queue, mut queued) = mpsc::channel::<Utf8Bytes>(QUEUE_FRAMES);
    let writer = tokio::spawn(async move {
        while let Some(frame) = queued.recv().await {
            if sink.feed(WsMessage::Text(frame)).await.is_err() {
                return;
            }
            for _ in 1..WRITE_BATCH {
                let Ok(frame) = queued.try_recv() else { break };
                if sink.feed(WsMessage::Text(frame)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let id = channels.next_id.fetch_add(1, Ordering::Relaxed);
    let mut subscribed = Vec::new();
    while let Some(Ok(frame)) = stream.next().await {
        let WsMessage::Text(text) = frame else {
            continue;
        };
        let text = text.as_str();
        if let Some(channel) = text.strip_prefix("S ") {
            channels
                .by_name
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(channel.to_owned())
                .or_default()
                .push((id, queue.clone()));
            subscribed.push(channel.to_owned());
            let _ = queue.try_send(format!("K {channel}").into());
        } else if let Some(rest) = text.strip_prefix("P ") {
            let Some((channel, _payload)) = rest.split_once(' ') else {
                continue;
            };
            // Built once; every subscriber gets a clone of the same bytes.
            let frame = Utf8Bytes::from(format!("M {rest}"));
            broadcast(&channels, channel, &frame);
            if queue.try_send(Utf8Bytes::from_static("A")).is_err() {
                break;
            }
        }
    }
    forget(&channels, id, &subscribed);
    drop(queue);
    let _ = writer.await;
}

/// Queues `frame` for every subscriber of `channel`, dropping those whose queue is full.
fn broadcast(channels: &Channels, channel: &str, frame: &Utf8Bytes) {
    let mut by_name = channels.by_name.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(subscribers) = by_name.get_mut(channel) {
        subscribers.retain(|(_, subscriber)| subscriber.try_send(frame.clone()).is_ok());
    }
}

/// Takes connection `id` off every channel it subscribed to.
fn forget(channels: &Channels, id: u64, subscribed: &[String]) {
    let mut by_name = channels.by_name.lock().unwrap_or_else(|p| p.into_inner());
    for channel in subscribed {
        if let Some(subscribers) = by_name.get_mut(channel) {
            subscribers.retain(|(subscriber, _)| *subscriber != id);
            if subscribers.is_empty() {
                by_name.remove(channel);
            }
        }
    }
}
