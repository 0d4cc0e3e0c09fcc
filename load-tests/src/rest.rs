//! The REST calls a simulated backend makes: publish, batch publish, and token requests signed
//! with the key (reference §7.3), as an Ably SDK holding the key would.

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng as _;
use serde_json::{json, Value};
use sha2::Sha256;

#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    /// `http://host:port`, no trailing slash.
    base: String,
    key_name: String,
    secret: String,
}

impl Rest {
    pub fn new(url: &str, key: &str) -> anyhow::Result<Rest> {
        let (key_name, secret) = key
            .split_once(':')
            .ok_or_else(|| anyhow!("--key must be appId.keyId:secret"))?;
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Rest {
            http,
            base: url.trim_end_matches('/').to_owned(),
            key_name: key_name.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// `POST /channels/{channel}/messages` with one message.
    pub async fn publish(&self, channel: &str, payload: String) -> anyhow::Result<()> {
        let url = format!(
            "{}/channels/{}/messages",
            self.base,
            crate::target::ably::query_escape(channel)
        );
        let body = json!([{ "name": "load", "data": payload }]);
        self.post(&url, &body).await.map(drop)
    }

    /// `POST /channels/{channel}/messages` with one message whose `id` makes a retry idempotent;
    /// the answer's `serials`.
    pub async fn publish_with_id(
        &self,
        channel: &str,
        id: &str,
        payload: String,
    ) -> anyhow::Result<Vec<Option<String>>> {
        let url = format!(
            "{}/channels/{}/messages",
            self.base,
            crate::target::ably::query_escape(channel)
        );
        let body = json!([{ "id": id, "name": "load", "data": payload }]);
        let reply = self.post(&url, &body).await?;
        Ok(reply["serials"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|serial| serial.as_str().map(str::to_owned))
            .collect())
    }

    /// `POST /events` with one Digis event (or an array); the answer as it came.
    pub async fn post_events(&self, events: &Value) -> anyhow::Result<Value> {
        self.post(&format!("{}/events", self.base), events).await
    }

    /// `POST /messages`: one message to every channel in one request.
    pub async fn batch_publish(&self, channels: &[String], payload: String) -> anyhow::Result<()> {
        let body =
            json!([{ "channels": channels, "messages": [{ "name": "load", "data": payload }] }]);
        let reply = self.post(&format!("{}/messages", self.base), &body).await?;
        let failures: u64 = match &reply {
            Value::Array(results) => results
                .iter()
                .filter_map(|result| result["failureCount"].as_u64())
                .sum(),
            other => other["failureCount"].as_u64().unwrap_or(0),
        };
        if failures > 0 {
            bail!("batch publish: {failures} channels failed: {reply}");
        }
        Ok(())
    }

    /// A token for `client_id` from a signed TokenRequest, living `ttl` (the server's default
    /// when `None`).
    pub async fn request_token(
        &self,
        client_id: &str,
        ttl: Option<std::time::Duration>,
    ) -> anyhow::Result<String> {
        let ttl = ttl
            .map(|ttl| ttl.as_millis().to_string())
            .unwrap_or_default();
        let timestamp = protocol::now_ms();
        let nonce: String = rand::thread_rng()
            .sample_iter(rand::distributions::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let text = format!(
            "{}\n{ttl}\n\n{client_id}\n{timestamp}\n{nonce}\n",
            self.key_name
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes())?;
        mac.update(text.as_bytes());
        let body = json!({
            "keyName": self.key_name,
            "ttl": ttl,
            "clientId": client_id,
            "timestamp": timestamp,
            "nonce": nonce,
            "mac": STANDARD.encode(mac.finalize().into_bytes()),
        });
        let url = format!("{}/keys/{}/requestToken", self.base, self.key_name);
        let details = self.post(&url, &body).await?;
        details["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("requestToken answered without a token: {details}"))
    }

    async fn post(&self, url: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(url)
            .basic_auth(&self.key_name, Some(&self.secret))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(serde_json::to_vec(body)?)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("POST {url}"))?;
        if !status.is_success() {
            bail!("POST {url}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}
