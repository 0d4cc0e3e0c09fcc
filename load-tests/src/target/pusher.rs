//! The Pusher protocol 7 (Soketi, Sockudo): subscribers on public channels over
//! `ws://host/app/{key}?protocol=7`, publications through the HTTP API as a backend sends them:
//! `POST /apps/{id}/events`, signed with the app secret (`auth_key`, `auth_timestamp`,
//! `auth_version`, `body_md5`, `auth_signature` = HMAC-SHA256 hex). A publication counts as
//! confirmed when the API answers 2xx.
//!
//! Both peers close the TCP connection after every HTTP response, so each publication pays a
//! connect; `publish` sends it on a task of its own and returns, so a publisher can have several
//! in flight (`--window` bounds them in the open loop).
//!
//! Pusher channel names allow `[A-Za-z0-9_\-=@,.;]`: the `:` in the scenarios' names becomes `;`.
//! The server's `pusher:ping` is answered `pusher:pong` by the reader task.
//!
//! Credentials: `--key appId:key:secret`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{
    next_text_frame, websocket, ws_base, Connection, Delivery, Reader, Settled, Target,
    REPLY_TIMEOUT,
};

const EVENT: &str = "load";

#[derive(Clone)]
pub struct PusherTarget {
    ws_url: String,
    api: Arc<Api>,
}

/// The HTTP API of one app.
struct Api {
    http: reqwest::Client,
    /// `http://host:port`
    base: String,
    app_id: String,
    key: String,
    secret: String,
}

impl PusherTarget {
    /// `url` is the server's `http://host:port`; `credentials` is `appId:key:secret`.
    pub fn new(url: &str, credentials: &str) -> anyhow::Result<PusherTarget> {
        let mut parts = credentials.splitn(3, ':');
        let (Some(app_id), Some(key), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("--key for the Pusher protocol is appId:key:secret");
        };
        let ws_url = format!(
            "{}app/{key}?protocol=7&client=realtime-load&version=0.1",
            ws_base(url)?
        );
        let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
        Ok(PusherTarget {
            ws_url,
            api: Arc::new(Api {
                http,
                base: url.trim_end_matches('/').to_owned(),
                app_id: app_id.to_owned(),
                key: key.to_owned(),
                secret: secret.to_owned(),
            }),
        })
    }
}

impl Target for PusherTarget {
    type Connection = PusherConnection;

    async fn connect(&self, _client: usize) -> anyhow::Result<PusherConnection> {
        PusherConnection::open(&self.ws_url, self.api.clone()).await
    }
}

type Sink = super::SharedSink;

/// Subscribes wait for `pusher_internal:subscription_succeeded`, by (Pusher) channel.
type Shared = super::Shared<String>;

pub struct PusherConnection {
    sink: Sink,
    api: Arc<Api>,
    shared: Arc<Shared>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    published: u64,
}

/// Any frame the server sends; `data` is a JSON string on channel events.
#[derive(Deserialize)]
struct Frame {
    event: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

impl PusherConnection {
    async fn open(url: &str, api: Arc<Api>) -> anyhow::Result<PusherConnection> {
        let mut ws = websocket(url).await?;
        tokio::time::timeout(REPLY_TIMEOUT, async {
            while let Some(frame) = ws.next().await {
                let WsMessage::Text(text) = frame? else {
                    continue;
                };
                let frame: Frame = serde_json::from_str(text.as_str())?;
                match frame.event.as_str() {
                    "pusher:connection_established" => return Ok(()),
                    "pusher:error" => bail!("connect refused: {}", text.as_str()),
                    _ => continue,
                }
            }
            bail!("connection closed before pusher:connection_established")
        })
        .await
        .context("no pusher:connection_established in time")??;
        let (sink, shared, deliveries) = super::spawn_reader(ws, read);
        Ok(PusherConnection {
            sink,
            api,
            shared,
            deliveries,
            published: 0,
        })
    }
}

impl Connection for PusherConnection {
    async fn subscribe(&mut self, channel: &str) -> anyhow::Result<()> {
        let channel = pusher_channel(channel);
        let on_done = self.shared.expect(channel.clone());
        let subscribe = json!({ "event": "pusher:subscribe", "data": { "channel": channel } });
        self.sink
            .lock()
            .await
            .send(WsMessage::Text(subscribe.to_string().into()))
            .await
            .context("sending")?;
        let what = format!("subscribing to {channel}");
        self.shared
            .confirmed(on_done, &what, "subscription_succeeded")
            .await
    }

    async fn publish(&mut self, channel: &str, payload: String) -> anyhow::Result<()> {
        self.published += 1;
        let api = self.api.clone();
        let shared = self.shared.clone();
        let channel = pusher_channel(channel);
        tokio::spawn(async move {
            match api.trigger(&channel, &payload).await {
                Ok(()) => {
                    shared.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    shared.fail(format!("publish: {error:#}"));
                }
            }
            shared.settled.notify_waiters();
        });
        Ok(())
    }

    answered_by_shared!(published);

    async fn close(self) {
        self.shared.closing.store(true, Ordering::Release);
        let _ = self.sink.lock().await.close().await;
    }
}

impl Api {
    /// `POST /apps/{id}/events` with one event on one channel.
    async fn trigger(&self, channel: &str, payload: &str) -> anyhow::Result<()> {
        let body = json!({ "name": EVENT, "channels": [channel], "data": payload }).to_string();
        let path = format!("/apps/{}/events", self.app_id);
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let query = signed_query(&self.key, &self.secret, "POST", &path, timestamp, &body);
        let response = self
            .http
            .post(format!("{}{path}?{query}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(anyhow!("HTTP {status}: {text:.200}"));
        }
        Ok(())
    }
}

/// The query string of a signed Pusher HTTP API request, `auth_signature` last.
fn signed_query(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    timestamp: u64,
    body: &str,
) -> String {
    let body_md5 = hex(&Md5::digest(body.as_bytes()));
    let query =
        format!("auth_key={key}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{method}\n{path}\n{query}").as_bytes());
    let signature = hex(&mac.finalize().into_bytes());
    format!("{query}&auth_signature={signature}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Our scenario channel names (`fanout:abc:3`) as Pusher allows them (`fanout;abc;3`).
fn pusher_channel(channel: &str) -> String {
    channel.replace(':', ";")
}

async fn read(mut reader: Reader<String>) {
    while let Some((received_us, text)) = next_text_frame(&mut reader.stream).await {
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            reader
                .shared
                .fail(format!("unreadable frame {:.120}", text.as_str()));
            continue;
        };
        match (frame.event.as_str(), frame.channel) {
            (EVENT, Some(channel)) => {
                let payload = match frame.data {
                    Some(serde_json::Value::String(data)) => Bytes::from(data.into_bytes()),
                    _ => Bytes::new(),
                };
                reader.deliver(channel, payload, received_us);
            }
            ("pusher_internal:subscription_succeeded", Some(channel)) => {
                reader.shared.resolve(channel.as_str(), ());
            }
            ("pusher:ping", _) => {
                let pong = json!({ "event": "pusher:pong", "data": {} }).to_string();
                if reader
                    .sink
                    .lock()
                    .await
                    .send(WsMessage::Text(pong.into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            ("pusher:error", _) => reader
                .shared
                .fail(format!("server error: {:.200}", text.as_str())),
            _ => {}
        }
    }
    reader.shared.reader_ended();
}

#[cfg(test)]
mod tests;
