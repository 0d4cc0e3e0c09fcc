//! A raw WebSocket client speaking JSON frames, for process tests (the api crate's tests have a
//! richer client of their own that also speaks msgpack).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long one expected frame may take on a loaded CI box.
const FRAME_WAIT: Duration = Duration::from_secs(10);

/// Upgrades `ws://{addr}/?{query}`; reads nothing.
pub async fn connect(addr: SocketAddr, query: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/?{query}"))
        .await
        .expect("websocket connects");
    socket
}

/// Next protocol message (JSON), skipping pings; panics after 10 s.
pub async fn next_json(socket: &mut Socket) -> Value {
    next_json_within(socket, FRAME_WAIT).await
}

/// `next_json` for a frame that may take longer than one on a loaded box: what follows a Redis
/// fail-over, say (Sentinel's detection and a node's catch-up come first).
pub async fn next_json_within(socket: &mut Socket, wait: Duration) -> Value {
    loop {
        let frame = tokio::time::timeout(wait, socket.next())
            .await
            .unwrap_or_else(|_| panic!("a frame within {wait:?}"))
            .expect("socket open")
            .expect("frame");
        match frame {
            WsMessage::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

pub async fn send_json(socket: &mut Socket, value: Value) {
    socket
        .send(WsMessage::Text(value.to_string().into()))
        .await
        .expect("send");
}

/// Closes as a client should: CLOSE, then CLOSED, then the socket. Dropping the socket right
/// after CLOSE, with frames still unread, makes the kernel send a reset, which can discard the
/// CLOSE before the server reads it (and the server then sees a dropped client).
pub async fn close(mut socket: Socket) {
    send_json(&mut socket, json!({"action": 7})).await;
    while next_json(&mut socket).await["action"] != 8 {}
}
