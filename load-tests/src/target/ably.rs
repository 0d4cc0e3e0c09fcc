//! The Ably realtime protocol over WebSocket, JSON or msgpack, with `protocol`'s types and codecs.
//!
//! Each connection is split: the caller keeps the write half (`AblyConnection`), a spawned reader
//! task owns the read half. The reader answers nothing itself (the server's pings are ponged by
//! tungstenite), resolves pending attaches, counts ACK/NACK and forwards deliveries on an
//! unbounded channel, so a busy consumer never stops the socket from being read. It also counts
//! what came in (`Traffic`, per target) and, when asked, keeps the serials ACKs carry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use protocol::{codec, Action, Data, Format, Message, ProtocolMessage};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{websocket, ws_base, Connection, Delivery, Settled, Target, Ws, REPLY_TIMEOUT};
use crate::clock;

/// How connections authenticate.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `appId.keyId:secret` on every connection (`key=`).
    Key(String),
    /// One token per client number (`access_token=`), fetched beforehand.
    Tokens(Arc<Vec<String>>),
}

#[derive(Debug, Clone)]
pub struct AblyTarget {
    /// `ws://host:port/`
    ws_base: String,
    credentials: Credentials,
    format: Format,
    /// With a prefix, connection `n` asks for clientId `<prefix>-<n>` (`clientId=`).
    client_ids: Option<String>,
    /// Every `Connection::publish` marks its message ephemeral (`extras.ephemeral`).
    ephemeral: bool,
    /// What all of this target's connections received.
    traffic: Arc<Traffic>,
}

/// Data frames (text or binary) the connections of one target received, those of them that were
/// MESSAGEs, and their bytes (WebSocket payloads, without framing): what server-side batching
/// changes, where deliveries stay the same.
#[derive(Debug, Default)]
pub struct Traffic {
    frames: AtomicU64,
    message_frames: AtomicU64,
    bytes: AtomicU64,
}

/// `Traffic` read at one moment; subtract two for a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCount {
    pub frames: u64,
    pub message_frames: u64,
    pub bytes: u64,
}

impl Traffic {
    pub fn count(&self) -> TrafficCount {
        TrafficCount {
            frames: self.frames.load(Ordering::Relaxed),
            message_frames: self.message_frames.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    fn frame(&self, bytes: usize) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn message_frame(&self) {
        self.message_frames.fetch_add(1, Ordering::Relaxed);
    }
}

impl crate::scenario::cluster::Spread<AblyTarget> {
    /// What the connections of every node's target have received so far.
    pub fn traffic(&self) -> TrafficCount {
        self.targets().iter().map(AblyTarget::traffic).fold(
            TrafficCount::default(),
            |sum, count| TrafficCount {
                frames: sum.frames + count.frames,
                message_frames: sum.message_frames + count.message_frames,
                bytes: sum.bytes + count.bytes,
            },
        )
    }
}

impl TrafficCount {
    /// What arrived between `earlier` and this count.
    pub fn since(self, earlier: TrafficCount) -> TrafficCount {
        TrafficCount {
            frames: self.frames.saturating_sub(earlier.frames),
            message_frames: self.message_frames.saturating_sub(earlier.message_frames),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

impl AblyTarget {
    /// `url` is the server's HTTP base (`http://host:port`); the WebSocket URL is derived from it.
    pub fn new(url: &str, credentials: Credentials, format: Format) -> anyhow::Result<AblyTarget> {
        Ok(AblyTarget {
            ws_base: ws_base(url)?,
            credentials,
            format,
            client_ids: None,
            ephemeral: false,
            traffic: Arc::default(),
        })
    }

    /// What this target's connections have received so far.
    pub fn traffic(&self) -> TrafficCount {
        self.traffic.count()
    }

    /// Connection `n` identifies as `<prefix>-<n>`, as a signed-in user would (and may then
    /// enter presence).
    pub fn with_client_ids(mut self, prefix: &str) -> AblyTarget {
        self.client_ids = Some(prefix.to_owned());
        self
    }

    /// With `true`, every `Connection::publish` of this target's connections is ephemeral:
    /// delivered live, never stored.
    pub fn with_ephemeral(mut self, ephemeral: bool) -> AblyTarget {
        self.ephemeral = ephemeral;
        self
    }

    fn url_for(&self, client: usize) -> anyhow::Result<String> {
        let credential = match &self.credentials {
            Credentials::Key(key) => format!("key={}", query_escape(key)),
            Credentials::Tokens(tokens) => {
                let token = tokens
                    .get(client)
                    .ok_or_else(|| anyhow!("no token for client {client}"))?;
                format!("access_token={}", query_escape(token))
            }
        };
        let format = match self.format {
            Format::Json => "json",
            Format::Msgpack => "msgpack",
        };
        let client_id = match &self.client_ids {
            Some(prefix) => format!("&clientId={}", query_escape(&format!("{prefix}-{client}"))),
            None => String::new(),
        };
        Ok(format!(
            "{}?{credential}{client_id}&format={format}&heartbeats=true&v=3",
            self.ws_base
        ))
    }
}

impl Target for AblyTarget {
    type Connection = AblyConnection;

    async fn connect(&self, client: usize) -> anyhow::Result<AblyConnection> {
        let mut connection =
            AblyConnection::open(&self.url_for(client)?, self.format, self.traffic.clone()).await?;
        connection.ephemeral = self.ephemeral;
        Ok(connection)
    }
}

/// `PresenceMessage::action` for ENTER (Ably's presence action numbers).
const PRESENCE_ENTER: u8 = 2;

/// What the reader task shares with the write half.
/// ATTACHes wait for ATTACHED (or a channel ERROR, the reason), by channel.
type Shared = super::Shared<String, Result<(), String>>;

pub struct AblyConnection {
    sink: SplitSink<Ws, WsMessage>,
    format: Format,
    shared: Arc<Shared>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    next_msg_serial: u64,
    serials: Arc<AckSerials>,
    /// `Connection::publish` marks its messages ephemeral.
    ephemeral: bool,
}

/// The serial each acknowledged message was given (`res` of the ACKs), by the msgSerial of its
/// publish; kept only once `AblyConnection::keep_serials` asked (only publishes that are later
/// edited need them).
#[derive(Default)]
struct AckSerials {
    keep: AtomicBool,
    by_msg_serial: Mutex<BTreeMap<u64, Option<String>>>,
}

impl AckSerials {
    fn acknowledged(&self, ack: &ProtocolMessage) {
        if !self.keep.load(Ordering::Relaxed) {
            return;
        }
        let (Some(first), Some(results)) = (ack.msg_serial, ack.res.as_ref()) else {
            return;
        };
        let mut kept = self.by_msg_serial.lock().unwrap_or_else(|p| p.into_inner());
        for (offset, result) in results.iter().enumerate() {
            let serial = result.serials.first().cloned().flatten();
            kept.insert(first + offset as u64, serial);
        }
    }
}

impl AblyConnection {
    async fn open(
        url: &str,
        format: Format,
        traffic: Arc<Traffic>,
    ) -> anyhow::Result<AblyConnection> {
        let mut ws = websocket(url).await?;
        // CONNECTED comes first, or an ERROR saying why not.
        let connected = tokio::time::timeout(REPLY_TIMEOUT, async {
            while let Some(frame) = ws.next().await {
                let frame = frame.context("reading CONNECTED")?;
                if is_lenient_connected(&frame) {
                    return Ok(ProtocolMessage::new(Action::Connected));
                }
                let Some(message) = decode(frame)? else {
                    continue;
                };
                match message.action() {
                    Some(Action::Connected) => return Ok(message),
                    Some(Action::Heartbeat) => continue,
                    _ => bail!("expected CONNECTED, got {}", describe(&message)),
                }
            }
            bail!("connection closed before CONNECTED")
        })
        .await
        .context("no CONNECTED in time")??;
        drop(connected);

        let serials = Arc::new(AckSerials::default());
        let tap = Tap {
            traffic,
            serials: serials.clone(),
        };
        let (sink, shared, deliveries) = super::split_reading(ws, |stream, shared, deliver| {
            read(stream, shared, deliver, tap)
        });
        Ok(AblyConnection {
            sink,
            format,
            shared,
            deliveries,
            next_msg_serial: 0,
            serials,
            ephemeral: false,
        })
    }

    /// From now on, keep the serial each ACK gives a message (see `serials`).
    pub fn keep_serials(&self) {
        self.serials.keep.store(true, Ordering::Relaxed);
    }

    /// The serials kept so far, by the msgSerial `publish_message` returned (`None`: the
    /// message has none, as an ephemeral one).
    pub fn serials(&self) -> BTreeMap<u64, Option<String>> {
        self.serials
            .by_msg_serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends one MESSAGE holding `message` without waiting for its ACK; returns its msgSerial.
    pub async fn publish_message(
        &mut self,
        channel: &str,
        message: Message,
    ) -> anyhow::Result<u64> {
        let msg_serial = self.next_msg_serial;
        let frame = ProtocolMessage {
            channel: Some(channel.to_owned()),
            msg_serial: Some(msg_serial),
            messages: Some(vec![message]),
            ..ProtocolMessage::new(Action::Message)
        };
        self.next_msg_serial += 1;
        self.send(&frame).await?;
        Ok(msg_serial)
    }

    /// Enters presence on `channel` (attached already), returning once the server acknowledged
    /// it. Needs a connection with a clientId (`AblyTarget::with_client_ids`).
    pub async fn enter(&mut self, channel: &str) -> anyhow::Result<()> {
        let enter = ProtocolMessage {
            channel: Some(channel.to_owned()),
            msg_serial: Some(self.next_msg_serial),
            presence: Some(vec![protocol::PresenceMessage {
                action: PRESENCE_ENTER,
                ..Default::default()
            }]),
            ..ProtocolMessage::new(Action::Presence)
        };
        self.next_msg_serial += 1;
        self.send(&enter).await?;
        let settled = self
            .shared
            .settle(self.next_msg_serial, REPLY_TIMEOUT)
            .await;
        if settled.acknowledged < settled.sent {
            bail!(
                "presence enter on {channel} not acknowledged: {}",
                self.shared.failure().unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn send(&mut self, message: &ProtocolMessage) -> anyhow::Result<()> {
        let bytes = codec::encode_message(message, self.format)?;
        let frame = match self.format {
            Format::Json => WsMessage::Text(String::from_utf8(bytes)?.into()),
            Format::Msgpack => WsMessage::Binary(bytes.into()),
        };
        self.sink.send(frame).await.context("sending")
    }
}

impl Connection for AblyConnection {
    async fn subscribe(&mut self, channel: &str) -> anyhow::Result<()> {
        let on_attached = self.shared.expect(channel.to_owned());
        let attach = ProtocolMessage {
            channel: Some(channel.to_owned()),
            ..ProtocolMessage::new(Action::Attach)
        };
        self.send(&attach).await?;
        let what = format!("attaching to {channel}");
        if let Err(why) = self
            .shared
            .confirmed(on_attached, &what, "ATTACHED")
            .await?
        {
            bail!("attach to {channel} refused: {why}");
        }
        Ok(())
    }

    async fn publish(&mut self, channel: &str, payload: String) -> anyhow::Result<()> {
        let message = Message {
            name: Some("load".to_owned()),
            data: Some(Data::String(payload)),
            extras: self
                .ephemeral
                .then(|| serde_json::json!({ "ephemeral": true })),
            ..Default::default()
        };
        self.publish_message(channel, message).await.map(drop)
    }

    answered_by_shared!(next_msg_serial);

    async fn close(mut self) {
        self.shared.closing.store(true, Ordering::Release);
        let close = ProtocolMessage::new(Action::Close);
        if self.send(&close).await.is_ok() {
            // CLOSED, then the server closes the socket; don't wait long for it.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while self.deliveries.recv().await.is_some() {}
            })
            .await;
        }
        let _ = self.sink.close().await;
    }
}

/// Just what a JSON MESSAGE needs, borrowed from the frame. Decoding a whole `ProtocolMessage`
/// (every field, owned strings) for each of hundreds of thousands of deliveries a second was the
/// load tool's own limit; anything else (or a payload that is not a plain string) takes the full
/// decode below.
#[derive(serde::Deserialize)]
struct LiteMessage<'a> {
    action: u8,
    #[serde(borrow, default)]
    channel: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    messages: Vec<LiteData<'a>>,
}

#[derive(serde::Deserialize)]
struct LiteData<'a> {
    #[serde(borrow)]
    data: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    encoding: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> LiteMessage<'a> {
    fn parse(json: &'a [u8]) -> Option<LiteMessage<'a>> {
        let lite: LiteMessage = serde_json::from_slice(json).ok()?;
        let plain = lite.messages.iter().all(|m| m.encoding.is_none());
        (lite.action == Action::Message as u8 && plain && !lite.messages.is_empty()).then_some(lite)
    }
}

/// What a reader task counts and keeps besides deliveries.
struct Tap {
    traffic: Arc<Traffic>,
    serials: Arc<AckSerials>,
}

/// The reader task: runs until the socket ends.
async fn read(
    mut stream: SplitStream<Ws>,
    shared: Arc<Shared>,
    deliver: mpsc::UnboundedSender<Delivery>,
    tap: Tap,
) {
    while let Some(frame) = stream.next().await {
        let received_us = clock::now_us();
        if let Ok(data @ (WsMessage::Text(_) | WsMessage::Binary(_))) = &frame {
            tap.traffic.frame(data.len());
        }
        if let Ok(WsMessage::Text(text)) = &frame {
            if let Some(lite) = LiteMessage::parse(text.as_bytes()) {
                tap.traffic.message_frame();
                let channel = lite.channel.unwrap_or_default().into_owned();
                for m in lite.messages {
                    let _ = deliver.send(Delivery {
                        channel: channel.clone(),
                        payload: Bytes::copy_from_slice(m.data.as_bytes()),
                        received_us,
                    });
                }
                continue;
            }
        }
        let message = match frame.map_err(anyhow::Error::from).and_then(decode) {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(error) => {
                if !shared.closing.load(Ordering::Acquire) {
                    shared.fail(format!("read failed: {error:#}"));
                }
                break;
            }
        };
        match message.action() {
            Some(Action::Message) => {
                tap.traffic.message_frame();
                let channel = message.channel.unwrap_or_default();
                for m in message.messages.into_iter().flatten() {
                    let payload = match m.data {
                        Some(Data::String(text)) => Bytes::from(text.into_bytes()),
                        Some(Data::Binary(bytes)) => bytes,
                        _ => Bytes::new(),
                    };
                    let _ = deliver.send(Delivery {
                        channel: channel.clone(),
                        payload,
                        received_us,
                    });
                }
            }
            Some(Action::Attached) => resolve_attach(&shared, &message, Ok(())),
            Some(Action::Ack) => {
                tap.serials.acknowledged(&message);
                shared
                    .acknowledged
                    .fetch_add(message.count.unwrap_or(1), Ordering::Relaxed);
                shared.settled.notify_waiters();
            }
            Some(Action::Nack) => {
                shared
                    .refused
                    .fetch_add(message.count.unwrap_or(1), Ordering::Relaxed);
                shared.fail(format!("publish refused: {}", describe(&message)));
                shared.settled.notify_waiters();
            }
            Some(Action::Error) if message.channel.is_some() => {
                resolve_attach(&shared, &message, Err(describe(&message)));
            }
            Some(Action::Error | Action::Disconnected | Action::Closed) => {
                if !shared.closing.load(Ordering::Acquire) {
                    shared.fail(format!(
                        "server ended the connection: {}",
                        describe(&message)
                    ));
                }
                break;
            }
            _ => {}
        }
    }
    shared.reader_ended();
}

fn resolve_attach(shared: &Shared, message: &ProtocolMessage, result: Result<(), String>) {
    let Some(channel) = message.channel.as_deref() else {
        return;
    };
    shared.resolve(channel, result);
}

/// A JSON CONNECTED our strict decoder refuses: Sockudo's Ably facade leaves fields of
/// `connectionDetails` out (`maxInboundRate`) that the `protocol` crate requires. The load tool
/// needs nothing from it, so any CONNECTED will do.
fn is_lenient_connected(frame: &WsMessage) -> bool {
    let WsMessage::Text(text) = frame else {
        return false;
    };
    if codec::decode::<ProtocolMessage>(text.as_bytes(), Format::Json).is_ok() {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(text.as_str())
        .is_ok_and(|value| value["action"] == Action::Connected as u8)
}

/// Decodes a data frame by its type (text = JSON, binary = msgpack); control frames give `None`.
fn decode(frame: WsMessage) -> anyhow::Result<Option<ProtocolMessage>> {
    Ok(match frame {
        WsMessage::Text(text) => Some(codec::decode(text.as_bytes(), Format::Json)?),
        WsMessage::Binary(bytes) => Some(codec::decode(&bytes, Format::Msgpack)?),
        WsMessage::Close(close) => bail!("WebSocket closed: {close:?}"),
        _ => None,
    })
}

fn describe(message: &ProtocolMessage) -> String {
    match &message.error {
        Some(error) => format!(
            "action {} error {} ({})",
            message.action, error.code, error.message
        ),
        None => format!("action {}", message.action),
    }
}

/// Percent-encodes a query value (keys hold `:`, tokens may hold `+`, `/`, `=`).
pub(crate) fn query_escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            escaped.push(byte as char);
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(action: Action, data: Option<Data>, encoding: Option<&str>) -> Vec<u8> {
        let message = ProtocolMessage {
            channel: Some("fanout:1:0".into()),
            messages: Some(vec![Message {
                id: Some("x:0:0".into()),
                data,
                encoding: encoding.map(str::to_owned),
                ..Message::default()
            }]),
            ..ProtocolMessage::new(action)
        };
        codec::encode(&message, Format::Json).unwrap()
    }

    #[test]
    fn ack_serials_are_kept_by_msg_serial_only_when_asked() {
        let ack = ProtocolMessage {
            msg_serial: Some(5),
            count: Some(2),
            res: Some(vec![
                protocol::message::PublishResult {
                    serials: vec![Some("s5".into())],
                },
                protocol::message::PublishResult {
                    serials: vec![None],
                },
            ]),
            ..ProtocolMessage::new(Action::Ack)
        };
        let serials = AckSerials::default();
        serials.acknowledged(&ack);
        assert!(serials.by_msg_serial.lock().unwrap().is_empty());
        serials.keep.store(true, Ordering::Relaxed);
        serials.acknowledged(&ack);
        let kept = serials.by_msg_serial.lock().unwrap().clone();
        assert_eq!(
            kept.into_iter().collect::<Vec<_>>(),
            [(5, Some("s5".to_owned())), (6, None)]
        );
    }

    #[test]
    fn traffic_counts_subtract() {
        let traffic = Traffic::default();
        traffic.frame(100);
        let before = traffic.count();
        traffic.frame(30);
        traffic.message_frame();
        traffic.frame(12);
        let window = traffic.count().since(before);
        assert_eq!(
            window,
            TrafficCount {
                frames: 2,
                message_frames: 1,
                bytes: 42
            }
        );
    }

    #[test]
    fn the_fast_path_reads_plain_string_messages_only() {
        let json = frame(
            Action::Message,
            Some(Data::String("0:7:99:xx\"y".into())),
            None,
        );
        let lite = LiteMessage::parse(&json).expect("a plain MESSAGE");
        assert_eq!(lite.channel.as_deref(), Some("fanout:1:0"));
        assert_eq!(lite.messages.len(), 1);
        assert_eq!(lite.messages[0].data, "0:7:99:xx\"y", "escapes decoded");

        let encoded = frame(
            Action::Message,
            Some(Data::String("AAE=".into())),
            Some("base64"),
        );
        assert!(
            LiteMessage::parse(&encoded).is_none(),
            "encoded data takes the full decode"
        );
        let ack = frame(Action::Ack, None, None);
        assert!(
            LiteMessage::parse(&ack).is_none(),
            "other actions take the full decode"
        );
    }
}
