//! The harness: a gateway served by `api::serve` on a loopback port, WebSocket clients speaking
//! JSON or msgpack, and signed token requests. The server, the bare HTTP/1.1 client and
//! `eventually` come from the `test-support` crate.
//!
//! Frames are `serde_json::Value` in both formats so assertions read the same. msgpack is decoded
//! without the server's `protocol` types (a bug there must not hide itself in the tests); a msgpack
//! `bin` shows up as `{"$bin": "<base64>"}` and is written the same way (see `bin`).

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use gateway::{ApiKey, Config};
use hmac::{Hmac, Mac};
use protocol::Capability;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{json, Value};
use sha2::Sha256;
use test_support::InProcess;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

mod bystanders;

pub(crate) use bystanders::Bystanders;
pub(crate) use test_support::{eventually, http, Request, Response};

pub(crate) const HEARTBEAT: u64 = 0;
pub(crate) const ACK: u64 = 1;
pub(crate) const NACK: u64 = 2;
pub(crate) const CONNECTED: u64 = 4;
pub(crate) const DISCONNECTED: u64 = 6;
pub(crate) const CLOSE: u64 = 7;
pub(crate) const CLOSED: u64 = 8;
pub(crate) const ERROR: u64 = 9;
pub(crate) const ATTACH: u64 = 10;
pub(crate) const ATTACHED: u64 = 11;
pub(crate) const DETACH: u64 = 12;
pub(crate) const DETACHED: u64 = 13;
pub(crate) const MESSAGE: u64 = 15;
pub(crate) const AUTH: u64 = 17;

/// Every right on every channel.
pub(crate) const FULL_KEY: &str = "app1.full:secret";
pub(crate) const FULL_KEY_NAME: &str = "app1.full";
pub(crate) const FULL_SECRET: &str = "secret";
/// publish + subscribe on `allowed:*` only.
pub(crate) const LIMITED_KEY: &str = "app1.limited:lim";
pub(crate) const LIMITED_KEY_NAME: &str = "app1.limited";
pub(crate) const LIMITED_SECRET: &str = "lim";

/// ATTACHED mode bits (reference §2.3).
pub(crate) const MODE_PRESENCE: u64 = 65536;
pub(crate) const MODE_PUBLISH: u64 = 131072;
pub(crate) const MODE_SUBSCRIBE: u64 = 262144;
pub(crate) const MODE_PRESENCE_SUBSCRIBE: u64 = 524288;

/// How long any single expected event may take. Generous for a loaded CI box; a passing test
/// never waits for it.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// How long a whole burst (`Client::burst`) may take.
pub(crate) const BURST_WAIT: Duration = Duration::from_secs(12);

/// The query of a connection with the full key in `format` (`json` or `msgpack`).
pub(crate) fn full_key(format: &str) -> String {
    format!("key={FULL_KEY}&format={format}")
}

/// The two test keys, everything else at its default.
pub(crate) fn config() -> Config {
    let limited = Capability::parse(r#"{"allowed:*":["publish","subscribe"]}"#).unwrap();
    Config {
        keys: vec![
            ApiKey::parse(FULL_KEY, Capability::all()).unwrap(),
            ApiKey::parse(LIMITED_KEY, limited).unwrap(),
        ],
        ..Default::default()
    }
}

/// `api::serve` on `127.0.0.1:0`, with a shutdown trigger (test-support's `InProcess`), and
/// the clients that talk to it.
pub(crate) struct Server(InProcess);

impl Deref for Server {
    type Target = InProcess;
    fn deref(&self) -> &InProcess {
        &self.0
    }
}

impl Server {
    pub(crate) async fn start() -> Server {
        Server::with_config(config()).await
    }

    pub(crate) async fn with_config(config: Config) -> Server {
        Server(InProcess::start(config).await)
    }

    /// `InProcess::begin_shutdown`: the only `&mut` use of it, so no `DerefMut`.
    pub(crate) fn begin_shutdown(&mut self) -> JoinHandle<io::Result<()>> {
        self.0.begin_shutdown()
    }

    /// Upgrades without reading anything (for refusals, where no CONNECTED comes).
    pub(crate) async fn open(&self, query: &str) -> Client {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        Client::handshake(self.addr, stream, query).await
    }

    /// Upgrades and expects CONNECTED first.
    pub(crate) async fn connect(&self, query: &str) -> Client {
        let mut client = self.open(query).await;
        let connected = client.expect(CONNECTED).await;
        client.connection_id = Some(
            connected["connectionId"]
                .as_str()
                .unwrap_or_else(|| panic!("CONNECTED without connectionId: {connected}"))
                .to_owned(),
        );
        client.connected = connected;
        client
    }

    /// `connect`, then attached to `channel`.
    pub(crate) async fn attached(&self, query: &str, channel: &str) -> Client {
        let mut client = self.connect(query).await;
        client.attach(channel).await;
        client
    }

    /// Like `connect`, over a socket whose kernel receive buffer is `recv_buffer_bytes` (so a
    /// client that stops reading backs the server up quickly).
    pub(crate) async fn connect_with_recv_buffer(
        &self,
        query: &str,
        recv_buffer_bytes: u32,
    ) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(recv_buffer_bytes).unwrap();
        let stream = socket.connect(self.addr).await.unwrap();
        let mut client = Client::handshake(self.addr, stream, query).await;
        client.connected = client.expect(CONNECTED).await;
        client.connection_id = client.connected["connectionId"].as_str().map(str::to_owned);
        client
    }

    pub(crate) async fn http(&self, request: Request<'_>) -> Response {
        test_support::http(self.addr, request).await
    }

    /// GET `path` with the full key.
    pub(crate) async fn get<'a>(&self, path: impl Into<Cow<'a, str>>) -> Response {
        self.http(Request::get(path).basic(FULL_KEY)).await
    }

    /// POST `body` as JSON to `path` with the full key.
    pub(crate) async fn post_json<'a>(
        &self,
        path: impl Into<Cow<'a, str>>,
        body: &Value,
    ) -> Response {
        self.post_json_as(FULL_KEY, path, body).await
    }

    /// A message POSTed to `channel` with `key` is refused with 401.
    pub(crate) async fn assert_publish_refused(&self, key: &str, channel: &str) {
        let path = format!("/channels/{channel}/messages");
        let refused = self.post_json_as(key, path, &json!({"data": "x"})).await;
        assert_eq!(refused.status, 401, "{refused:?}");
    }

    /// POST `body` as JSON to `path` with `key`.
    pub(crate) async fn post_json_as<'a>(
        &self,
        key: &str,
        path: impl Into<Cow<'a, str>>,
        body: &Value,
    ) -> Response {
        self.http(Request::post_json(path, body).basic(key)).await
    }
}

/// Wire format of a client, from its `format=` query parameter (absent means JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Msgpack,
}

/// What the server did next on a socket.
#[derive(Debug)]
pub(crate) enum Event {
    Frame(Value),
    /// A close frame, the end of the stream, or a reset: the socket is gone.
    Closed(String),
}

/// A WebSocket client of the gateway.
pub(crate) struct Client {
    ws: WebSocketStream<TcpStream>,
    pub(crate) format: Format,
    /// From CONNECTED, when the client connected.
    pub(crate) connection_id: Option<String>,
    pub(crate) connected: Value,
}

impl Client {
    async fn handshake(addr: SocketAddr, stream: TcpStream, query: &str) -> Client {
        let format = if query.split('&').any(|p| p == "format=msgpack") {
            Format::Msgpack
        } else {
            Format::Json
        };
        let url = format!("ws://{addr}/?{query}");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
            .await
            .expect("WebSocket upgrade timed out")
            .expect("WebSocket upgrade refused (auth problems must still upgrade)");
        Client {
            ws,
            format,
            connection_id: None,
            connected: Value::Null,
        }
    }

    /// The next MESSAGE, whose first message is named `name` (`why` says what a failure means).
    pub(crate) async fn expect_named(&mut self, name: &str, why: &str) -> Value {
        let delivery = self.expect(MESSAGE).await;
        assert_eq!(delivery["messages"][0]["name"], name, "{why}: {delivery}");
        delivery
    }

    pub(crate) fn id(&self) -> &str {
        self.connection_id.as_deref().expect("connected client")
    }

    /// Sends a ProtocolMessage in this client's format.
    pub(crate) async fn send(&mut self, frame: Value) {
        let message = match self.format {
            Format::Json => WsMessage::text(frame.to_string()),
            Format::Msgpack => WsMessage::binary(to_msgpack(&frame)),
        };
        self.ws.send(message).await.expect("send frame");
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.ws
            .send(WsMessage::text(text.to_owned()))
            .await
            .expect("send text frame");
    }

    /// A text frame whose payload is sent as given, valid UTF-8 or not.
    pub(crate) async fn send_raw_text(&mut self, bytes: Vec<u8>) {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        self.ws
            .send(WsMessage::Frame(Frame::message(
                bytes,
                OpCode::Data(Data::Text),
                true,
            )))
            .await
            .expect("send raw text frame");
    }

    pub(crate) async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(WsMessage::binary(bytes))
            .await
            .expect("send binary frame");
    }

    /// Sends `frames` as fast as the socket takes them while reading what comes back, as a
    /// client pasting or looping would, until `enough` is true of the frames read so far (idle
    /// HEARTBEATs left out), the socket closes, or `BURST_WAIT` passes. The reading starts
    /// after `busy` (a client busy for a moment). Returns the frames read and, if the socket
    /// closed, why.
    pub(crate) async fn burst(
        &mut self,
        frames: &[Value],
        busy: Duration,
        mut enough: impl FnMut(&[Value]) -> bool,
    ) -> (Vec<Value>, Option<String>) {
        let format = self.format;
        let encoded: Vec<WsMessage> = frames
            .iter()
            .map(|frame| match format {
                Format::Json => WsMessage::text(frame.to_string()),
                Format::Msgpack => WsMessage::binary(to_msgpack(frame)),
            })
            .collect();
        let (mut sink, mut stream) = (&mut self.ws).split();
        let send = async move {
            for message in encoded {
                if sink.feed(message).await.is_err() {
                    return;
                }
            }
            let _ = sink.flush().await;
        };
        let read = async move {
            tokio::time::sleep(busy).await;
            let mut read = Vec::new();
            while !enough(&read) {
                let message = match stream.next().await {
                    None => return (read, Some("end of stream".to_owned())),
                    Some(Err(error)) => return (read, Some(format!("socket error: {error}"))),
                    Some(Ok(message)) => message,
                };
                let frame = match (message, format) {
                    (WsMessage::Text(text), Format::Json) => serde_json::from_str(&text).unwrap(),
                    (WsMessage::Binary(bytes), Format::Msgpack) => from_msgpack(&bytes),
                    (WsMessage::Close(frame), _) => {
                        return (read, Some(format!("close {frame:?}")))
                    }
                    (WsMessage::Ping(_) | WsMessage::Pong(_), _) => continue,
                    (other, format) => {
                        panic!("{format:?} client got a wrong frame type: {other:?}")
                    }
                };
                if !is_idle_heartbeat(&frame) {
                    read.push(frame);
                }
            }
            (read, None)
        };
        let ((), outcome) = tokio::time::timeout(BURST_WAIT, async { tokio::join!(send, read) })
            .await
            .unwrap_or_else(|_| panic!("a burst took longer than {BURST_WAIT:?}"));
        outcome
    }

    /// The next frame or the close, within `WAIT`. Replies must come in the client's format:
    /// text frames for JSON, binary for msgpack.
    pub(crate) async fn event(&mut self) -> Event {
        self.event_before(Instant::now() + WAIT).await
    }

    /// `event` with a deadline shared by a whole expectation, so pings or heartbeats arriving
    /// all the time cannot keep a wait alive forever.
    async fn event_before(&mut self, deadline: Instant) -> Event {
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("nothing expected from the server within {WAIT:?}"));
            let message = match next {
                None => return Event::Closed("end of stream".into()),
                Some(Err(error)) => return Event::Closed(format!("socket error: {error}")),
                Some(Ok(message)) => message,
            };
            match (message, self.format) {
                (WsMessage::Text(text), Format::Json) => {
                    return Event::Frame(serde_json::from_str(&text).unwrap_or_else(|e| {
                        panic!("server sent invalid JSON ({e}): {}", text.as_str())
                    }))
                }
                (WsMessage::Binary(bytes), Format::Msgpack) => {
                    return Event::Frame(from_msgpack(&bytes))
                }
                (WsMessage::Close(frame), _) => return Event::Closed(format!("close {frame:?}")),
                (WsMessage::Ping(_) | WsMessage::Pong(_), _) => continue,
                (other, format) => panic!("{format:?} client got a wrong frame type: {other:?}"),
            }
        }
    }

    /// The next thing a client of this kind would count as a sign of life before `deadline`: a
    /// frame, or with `pings` a WebSocket ping too (what `heartbeats=false` clients rely on).
    /// `None` when the deadline passed first; panics on close.
    pub(crate) async fn sign_of_life_before(
        &mut self,
        deadline: Instant,
        pings: bool,
    ) -> Option<Value> {
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                Some(Ok(WsMessage::Ping(_))) if pings => return Some(json!({"ping": true})),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(WsMessage::Text(text))) => {
                    return Some(serde_json::from_str(&text).expect("server sent invalid JSON"))
                }
                Some(Ok(WsMessage::Binary(bytes))) => return Some(from_msgpack(&bytes)),
                other => panic!("socket ended while watching for signs of life: {other:?}"),
            }
        }
    }

    /// The next frame other than an idle HEARTBEAT (one without `id`); panics on close.
    pub(crate) async fn frame(&mut self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.event_before(deadline).await {
                Event::Frame(frame) if is_idle_heartbeat(&frame) => continue,
                Event::Frame(frame) => return frame,
                Event::Closed(why) => panic!("socket closed ({why}) while a frame was expected"),
            }
        }
    }

    /// The next frame, which must have `action`.
    pub(crate) async fn expect(&mut self, action: u64) -> Value {
        let frame = self.frame().await;
        assert_eq!(
            frame["action"].as_u64(),
            Some(action),
            "expected action {action}, got {frame}"
        );
        frame
    }

    /// The socket must close next (idle heartbeats aside).
    pub(crate) async fn expect_closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.event_before(deadline).await {
                Event::Frame(frame) if is_idle_heartbeat(&frame) => continue,
                Event::Frame(frame) => panic!("expected the socket to close, got {frame}"),
                Event::Closed(_) => return,
            }
        }
    }

    /// ATTACH, expecting ATTACHED for that channel.
    pub(crate) async fn attach(&mut self, channel: &str) -> Value {
        self.send(json!({"action": ATTACH, "channel": channel}))
            .await;
        let attached = self.expect(ATTACHED).await;
        assert_eq!(attached["channel"], channel, "{attached}");
        attached
    }

    pub(crate) async fn publish(&mut self, channel: &str, msg_serial: u64, messages: Value) {
        self.send(json!({
            "action": MESSAGE,
            "channel": channel,
            "msgSerial": msg_serial,
            "messages": messages,
        }))
        .await;
    }

    /// Publishes and expects the ACK as the next frame (for a publisher not attached to the
    /// channel, so nothing else is due). Returns the per-message serials.
    pub(crate) async fn publish_acked(
        &mut self,
        channel: &str,
        msg_serial: u64,
        messages: Value,
    ) -> Vec<String> {
        let n_messages = messages.as_array().map_or(1, Vec::len);
        self.publish(channel, msg_serial, messages).await;
        let ack = self.expect(ACK).await;
        assert_ack(&ack, msg_serial, n_messages)
    }

    /// `publish_acked` of one message with just a name.
    pub(crate) async fn publish_named(&mut self, channel: &str, msg_serial: u64, name: &str) {
        self.publish_acked(channel, msg_serial, json!([{ "name": name }]))
            .await;
    }
}

fn is_idle_heartbeat(frame: &Value) -> bool {
    frame["action"].as_u64() == Some(HEARTBEAT) && frame.get("id").is_none()
}

/// An ACK for one ProtocolMessage of `n_messages` messages: `msgSerial`, `count: 1` and one `res`
/// entry with a string serial per message. Returns the serials.
pub(crate) fn assert_ack(ack: &Value, msg_serial: u64, n_messages: usize) -> Vec<String> {
    assert_eq!(ack["action"], ACK, "{ack}");
    assert_eq!(ack["msgSerial"], msg_serial, "{ack}");
    assert_eq!(ack["count"], 1, "{ack}");
    let res = ack["res"]
        .as_array()
        .unwrap_or_else(|| panic!("no res: {ack}"));
    assert_eq!(
        res.len(),
        1,
        "one res entry per acknowledged message: {ack}"
    );
    let serials = res[0]["serials"]
        .as_array()
        .unwrap_or_else(|| panic!("no serials: {ack}"));
    assert_eq!(serials.len(), n_messages, "{ack}");
    serials
        .iter()
        .map(|s| match s.as_str() {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => panic!("serial must be a non-empty string: {ack}"),
        })
        .collect()
}

/// An Ably REST error: status, exact Content-Type, `X-Ably-ErrorCode` and the envelope.
pub(crate) fn assert_rest_error(response: &Response, code: u64, status: u16) {
    assert_eq!(response.status, status, "{response:?}");
    let code_text = code.to_string();
    assert_eq!(
        response.header("x-ably-errorcode"),
        Some(code_text.as_str()),
        "{response:?}"
    );
    assert!(
        response.header("x-ably-errormessage").is_some(),
        "{response:?}"
    );
    let body = match response.header("content-type") {
        Some("application/json") => response.json(),
        Some("application/x-msgpack") => from_msgpack(&response.body),
        other => panic!("error Content-Type must be exact, got {other:?}: {response:?}"),
    };
    assert_error_info(&body["error"], code, u64::from(status), &body);
}

/// `assert_rest_error`, the body in `content_type`.
pub(crate) fn assert_rest_error_in(
    response: &Response,
    content_type: &str,
    code: u64,
    status: u16,
) {
    assert_eq!(
        response.header("content-type"),
        Some(content_type),
        "{response:?}"
    );
    assert_rest_error(response, code, status);
}

/// A frame's `error` is a complete ErrorInfo (trap 1) with this code and HTTP status.
pub(crate) fn assert_error(frame: &Value, code: u64, status: u64) {
    assert_error_info(&frame["error"], code, status, frame);
}

pub(crate) fn assert_error_info(error: &Value, code: u64, status: u64, context: &dyn fmt::Display) {
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without message: {context}"
    );
    assert_eq!(error["code"].as_u64(), Some(code), "{context}");
    assert_eq!(error["statusCode"].as_u64(), Some(status), "{context}");
}

/// The `{"$bin": …}` form of a msgpack `bin`.
/// The URL of relation `rel` in a response's `Link` header, as given (`./resource?…`).
pub(crate) fn relative_link(response: &Response, rel: &str) -> Option<String> {
    let header = response.header("link")?;
    header.split(", ").find_map(|part| {
        let (url, relation) = part.split_once("; ")?;
        (relation == format!("rel=\"{rel}\""))
            .then(|| url.trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

/// `field` of each item of a JSON array (a page of messages, versions, annotations).
pub(crate) fn field_of_each(list: &Value, field: &str) -> Vec<Value> {
    list.as_array()
        .unwrap_or_else(|| panic!("an array: {list}"))
        .iter()
        .map(|item| item[field].clone())
        .collect()
}

pub(crate) fn bin(bytes: &[u8]) -> Value {
    json!({ "$bin": STANDARD.encode(bytes) })
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn to_msgpack(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(&Wire(value)).expect("encode msgpack")
}

pub(crate) fn from_msgpack(bytes: &[u8]) -> Value {
    rmp_serde::from_slice::<Any>(bytes)
        .unwrap_or_else(|e| panic!("server sent invalid msgpack ({e}): {bytes:?}"))
        .0
}

/// Serializes a `Value`, turning `{"$bin": base64}` into msgpack `bin`.
struct Wire<'a>(&'a Value);

impl Serialize for Wire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                if let (1, Some(Value::String(encoded))) = (map.len(), map.get("$bin")) {
                    let bytes = STANDARD.decode(encoded).map_err(S::Error::custom)?;
                    return serializer.serialize_bytes(&bytes);
                }
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in map {
                    out.serialize_entry(key, &Wire(value))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Wire(item))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// Any msgpack value as a `Value`, `bin` as `{"$bin": base64}`.
struct Any(Value);

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Any, D::Error> {
        deserializer.deserialize_any(AnyVisitor).map(Any)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any msgpack value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(json!(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(json!(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(json!(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(bin(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Any::deserialize(d).map(|any| any.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Any(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some((Any(key), Any(value))) = map.next_entry()? {
            let key = match key {
                Value::String(key) => key,
                other => other.to_string(),
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A POST of `body` as msgpack (written by `to_msgpack`, `$bin` as bin).
pub(crate) fn post_msgpack<'a>(path: impl Into<Cow<'a, str>>, body: &Value) -> Request<'a> {
    Request::post(path, "application/x-msgpack", to_msgpack(body))
}

/// A TokenRequest signed with `secret` (reference §7.3). Absent fields are left out of the body
/// and signed as empty strings.
pub(crate) fn token_request(
    key_name: &str,
    secret: &str,
    ttl: Option<u64>,
    capability: Option<&str>,
    client_id: Option<&str>,
    timestamp: u64,
    nonce: &str,
) -> Value {
    let text = format!(
        "{key_name}\n{}\n{}\n{}\n{timestamp}\n{nonce}\n",
        ttl.map(|t| t.to_string()).unwrap_or_default(),
        capability.unwrap_or_default(),
        client_id.unwrap_or_default(),
    );
    let mut request = json!({
        "keyName": key_name,
        "timestamp": timestamp,
        "nonce": nonce,
        "mac": sign(secret, &text),
    });
    if let Some(ttl) = ttl {
        request["ttl"] = json!(ttl);
    }
    if let Some(capability) = capability {
        request["capability"] = json!(capability);
    }
    if let Some(client_id) = client_id {
        request["clientId"] = json!(client_id);
    }
    request
}

/// A `token_request` with no ttl, capability or clientId.
pub(crate) fn bare_token_request(
    key_name: &str,
    secret: &str,
    timestamp: u64,
    nonce: &str,
) -> Value {
    token_request(key_name, secret, None, None, None, timestamp, nonce)
}

pub(crate) fn sign(secret: &str, text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A nonce no other request in this process used (at least 16 characters).
pub(crate) fn fresh_nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("nonce{:016}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// TokenDetails from `POST /keys/{keyName}/requestToken` with a freshly signed request.
pub(crate) async fn request_token(
    server: &Server,
    key_name: &str,
    secret: &str,
    ttl: Option<u64>,
    capability: Option<&str>,
    client_id: Option<&str>,
) -> Value {
    let body = token_request(
        key_name,
        secret,
        ttl,
        capability,
        client_id,
        protocol::now_ms(),
        &fresh_nonce(),
    );
    let path = format!("/keys/{key_name}/requestToken");
    let response = server.http(Request::post_json(&path, &body)).await;
    assert_eq!(
        response.status,
        200,
        "requestToken refused: {}",
        String::from_utf8_lossy(&response.body)
    );
    let details = response.json();
    assert!(details["token"].is_string(), "{details}");
    details
}

/// A token from the full key.
pub(crate) async fn full_token(
    server: &Server,
    ttl: Option<u64>,
    capability: Option<&str>,
    client_id: Option<&str>,
) -> Value {
    request_token(
        server,
        FULL_KEY_NAME,
        FULL_SECRET,
        ttl,
        capability,
        client_id,
    )
    .await
}

/// The `access_token=` query value for a token (URL-safe as issued, but encode anyway).
pub(crate) fn token_query(details: &Value, extra: &str) -> String {
    let token = details["token"].as_str().expect("token");
    let encoded: String = token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("access_token={encoded}&{extra}")
}
