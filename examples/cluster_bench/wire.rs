//! The realtime protocol as this benchmark speaks it: frames, connect, attach.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::KEY;

#[derive(Clone, Copy)]
pub(crate) enum Format {
    Json,
    Msgpack,
}

impl Format {
    pub(crate) fn param(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Msgpack => "msgpack",
        }
    }

    pub(crate) fn encode<T: Serialize>(self, value: &T) -> WsMessage {
        match self {
            Format::Json => WsMessage::Text(serde_json::to_string(value).expect("encode").into()),
            Format::Msgpack => {
                WsMessage::Binary(rmp_serde::to_vec_named(value).expect("encode").into())
            }
        }
    }

    /// The protocol message in a data frame; `None` for control frames.
    pub(crate) fn decode(self, frame: &WsMessage) -> Option<Result<Incoming, String>> {
        match (self, frame) {
            (Format::Json, WsMessage::Text(text)) => {
                Some(serde_json::from_str(text).map_err(|e| e.to_string()))
            }
            (Format::Msgpack, WsMessage::Binary(bytes)) => {
                Some(rmp_serde::from_slice(bytes).map_err(|e| e.to_string()))
            }
            (_, WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_)) => None,
            (_, other) => Some(Err(format!("unexpected frame {other:?}"))),
        }
    }
}

/// Protocol actions used here.
pub(crate) mod action {
    pub(crate) const HEARTBEAT: u8 = 0;
    pub(crate) const ACK: u8 = 1;
    pub(crate) const NACK: u8 = 2;
    pub(crate) const CONNECTED: u8 = 4;
    pub(crate) const ATTACH: u8 = 10;
    pub(crate) const ATTACHED: u8 = 11;
    pub(crate) const MESSAGE: u8 = 15;
}

/// What a publication carries.
#[derive(Serialize, Deserialize, Clone, Copy)]
pub(crate) struct Payload {
    /// Publisher index.
    pub(crate) p: usize,
    /// Sequence number of this publisher on this channel, from 0.
    pub(crate) n: u64,
    /// Send time, `now_us()`.
    pub(crate) t: u64,
}

#[derive(Serialize)]
pub(crate) struct Attach<'a> {
    pub(crate) action: u8,
    pub(crate) channel: &'a str,
}

#[derive(Serialize)]
pub(crate) struct Publish<'a> {
    pub(crate) action: u8,
    pub(crate) channel: &'a str,
    #[serde(rename = "msgSerial")]
    pub(crate) msg_serial: u64,
    pub(crate) messages: [OutgoingMessage; 1],
}

#[derive(Serialize)]
pub(crate) struct OutgoingMessage {
    pub(crate) name: &'static str,
    pub(crate) data: Payload,
}

/// The fields of a server frame this benchmark reads; the rest is skipped.
#[derive(Deserialize)]
pub(crate) struct Incoming {
    pub(crate) action: u8,
    #[serde(rename = "msgSerial")]
    pub(crate) msg_serial: Option<u64>,
    pub(crate) count: Option<u64>,
    pub(crate) messages: Option<Vec<IncomingMessage>>,
    pub(crate) error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub(crate) struct IncomingMessage {
    pub(crate) data: Payload,
}

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A connection, CONNECTED (TCP_NODELAY, as the server sets it on its side).
pub(crate) async fn connect(addr: SocketAddr, format: Format) -> Socket {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let url = format!("ws://{addr}/?key={KEY}&format={}&v=3", format.param());
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket upgrade");
    let connected = next_message(&mut socket, format).await;
    assert_eq!(connected.action, action::CONNECTED, "not CONNECTED");
    socket
}

/// Next protocol message, skipping heartbeats and control frames; panics after 10 s.
pub(crate) async fn next_message(socket: &mut Socket, format: Format) -> Incoming {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .expect("frame");
        match format.decode(&frame) {
            Some(Ok(message)) if message.action == action::HEARTBEAT => continue,
            Some(Ok(message)) => return message,
            Some(Err(error)) => panic!("bad frame: {error}"),
            None => continue,
        }
    }
}

pub(crate) async fn subscribe(addr: SocketAddr, format: Format, channel: &str) -> Socket {
    let mut socket = connect(addr, format).await;
    socket
        .send(format.encode(&Attach {
            action: action::ATTACH,
            channel,
        }))
        .await
        .expect("send ATTACH");
    let attached = next_message(&mut socket, format).await;
    assert_eq!(
        attached.action,
        action::ATTACHED,
        "not ATTACHED: {:?}",
        attached.error
    );
    socket
}

pub(crate) fn describe(error: &Option<serde_json::Value>) -> String {
    error
        .as_ref()
        .map_or_else(|| "no error".to_owned(), |e| e.to_string())
}
