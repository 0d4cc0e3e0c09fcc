//! Web Push: the payload encrypted for the browser's subscription keys (`aes128gcm`, RFC 8291,
//! by `web-push-native` on RustCrypto) and POSTed to its endpoint with a VAPID token (RFC 8292:
//! an ES256 JWT whose `aud` is the endpoint's origin, `exp` within a day, `sub` our contact).
//! 404 and 410 mean the subscription is gone. Tokens are reused per origin for an hour.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Delivery, WebPushConfig};
use crate::delivery::{by_status, network_error, Outcome, Prepared};
use crate::payload;
use crate::recipient::Target;

/// VAPID tokens live 12 hours: RFC 8292 allows at most 24, and some services refuse longer.
const VAPID_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// A token is reused for an hour per origin: most browsers share a few push services, so a
/// fan-out to many subscriptions signs a handful of tokens, not one per device.
const VAPID_REUSE: Duration = Duration::from_secs(60 * 60);
/// Origins remembered at most; past it the cache starts over (a bound, not an expected size).
const VAPID_ORIGINS: usize = 1024;

pub(crate) struct WebPush {
    config: WebPushConfig,
    signing_key: jsonwebtoken::EncodingKey,
    public_key: String,
    client: reqwest::Client,
    /// Origin → (token, signed at). A std mutex: held to look up or insert, never across I/O.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl WebPush {
    pub(crate) fn new(config: WebPushConfig, delivery: &Delivery) -> WebPush {
        let client = reqwest::Client::builder()
            .timeout(delivery.attempt_timeout)
            .build()
            .unwrap_or_default();
        WebPush {
            signing_key: config.vapid.signing_key(),
            public_key: config.vapid.public_key_base64url(),
            config,
            client,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) async fn attempt(&self, job: &Prepared) -> Outcome {
        let Target::Web {
            endpoint,
            p256dh,
            auth,
        } = &job.target
        else {
            unreachable!("the web queue holds web targets")
        };
        let body = payload::web_body(&job.payload).to_string().into_bytes();
        let auth = web_push_native::Auth::clone_from_slice(auth);
        let p256dh = *p256dh;
        // Two P-256 scalar multiplications (a fresh key pair per message, as RFC 8291 asks, and
        // the ECDH): a few hundred µs of CPU, kept off the threads serving WebSockets.
        let encrypted =
            tokio::task::spawn_blocking(move || web_push_native::encrypt(body, &p256dh, &auth))
                .await;
        let encrypted = match encrypted {
            Ok(Ok(encrypted)) => encrypted,
            Ok(Err(error)) => return Outcome::Failed(format!("not encrypted: {error}")),
            Err(error) => return Outcome::Failed(format!("encryption task: {error}")),
        };
        let token = match self.vapid_token(endpoint) {
            Ok(token) => token,
            Err(error) => return Outcome::Failed(format!("VAPID token not signed: {error}")),
        };
        let mut request = self
            .client
            .post(endpoint.clone())
            .header("ttl", self.config.ttl.as_secs())
            .header("urgency", self.config.urgency.as_str())
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header(
                "authorization",
                format!("vapid t={token}, k={}", self.public_key),
            );
        if let Some(topic) = payload::web_topic(&job.payload) {
            request = request.header("topic", topic);
        }
        let response = match request.body(encrypted).send().await {
            Ok(response) => response,
            Err(error) => return network_error(&error),
        };
        let status = response.status();
        match status.as_u16() {
            200..=299 => Outcome::Delivered,
            404 | 410 => Outcome::Gone(format!("HTTP {}", status.as_u16())),
            _ => {
                let headers = response.headers().clone();
                let text = response.text().await.unwrap_or_default();
                by_status(
                    status,
                    &headers,
                    format!("HTTP {}: {}", status.as_u16(), short(&text)),
                )
            }
        }
    }

    fn vapid_token(&self, endpoint: &reqwest::Url) -> Result<String, jsonwebtoken::errors::Error> {
        // The origin: scheme, host and a port only when not the scheme's default.
        let origin = endpoint.origin().ascii_serialization();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, signed)) = tokens.get(&origin) {
            if signed.elapsed() < VAPID_REUSE {
                return Ok(token.clone());
            }
        }
        let token = self.sign(origin.clone())?;
        if tokens.len() >= VAPID_ORIGINS {
            tokens.clear();
        }
        tokens.insert(origin, (token.clone(), Instant::now()));
        Ok(token)
    }

    fn sign(&self, aud: String) -> Result<String, jsonwebtoken::errors::Error> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            aud: String,
            exp: u64,
            sub: &'a str,
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            aud,
            exp: (now + VAPID_LIFETIME).as_secs(),
            sub: &self.config.subject,
        };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        jsonwebtoken::encode(&header, &claims, &self.signing_key)
    }
}

/// A response body cut for a log line.
pub(crate) fn short(text: &str) -> &str {
    let end = text
        .char_indices()
        .nth(200)
        .map_or(text.len(), |(index, _)| index);
    text[..end].trim()
}
