//! FCM HTTP v1: `POST {endpoint}/v1/projects/{project}/messages:send` with an OAuth2 access
//! token from the service account (RFC 7523 JWT bearer grant, RS256, to its `token_uri`). The
//! token is reused until `token_refresh_margin` before it expires; a 401 drops it and the
//! request is made once more with a fresh one. `UNREGISTERED`, and `INVALID_ARGUMENT` about the
//! token, mean the registration is gone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::time::Instant;

use crate::config::{Delivery, FcmConfig};
use crate::delivery::{by_status, network_error, retry_after, Outcome, Prepared};
use crate::payload;
use crate::recipient::Target;
use crate::web::short;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The assertion's lifetime: Google accepts at most one hour.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(60 * 60);

pub(crate) struct Fcm {
    config: FcmConfig,
    send_url: String,
    client: reqwest::Client,
    /// Held across the token request on purpose: one grant at a time, the other senders wait
    /// for its token instead of each asking for one. An async mutex, never a std one.
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

#[derive(Clone)]
struct AccessToken {
    value: String,
    renew_at: Instant,
}

impl Fcm {
    pub(crate) fn new(config: FcmConfig, delivery: &Delivery) -> Fcm {
        let client = reqwest::Client::builder()
            .timeout(delivery.attempt_timeout)
            .build()
            .unwrap_or_default();
        let send_url = format!(
            "{}/v1/projects/{}/messages:send",
            config.endpoint.trim_end_matches('/'),
            config.account.project_id
        );
        Fcm {
            config,
            send_url,
            client,
            token: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) async fn attempt(&self, job: &Prepared) -> Outcome {
        let Target::Fcm { registration_token } = &job.target else {
            unreachable!("the fcm queue holds fcm targets")
        };
        let body = payload::fcm_body(&job.payload, registration_token).to_string();
        let mut renewed = false;
        loop {
            let token = match self.access_token().await {
                Ok(token) => token,
                Err(outcome) => return outcome,
            };
            let response = match self
                .client
                .post(&self.send_url)
                .bearer_auth(&token)
                .header("content-type", "application/json; charset=utf-8")
                .body(body.clone())
                .send()
                .await
            {
                Ok(response) => response,
                Err(error) => return network_error(&error),
            };
            let status = response.status();
            if status.is_success() {
                return Outcome::Delivered;
            }
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            if status == reqwest::StatusCode::UNAUTHORIZED && !renewed {
                // Revoked or expired early: one more try with a new token.
                self.forget(&token).await;
                renewed = true;
                continue;
            }
            let error: Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(reason) = gone(&error) {
                return Outcome::Gone(reason);
            }
            let status_name = error
                .pointer("/error/status")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return by_status(
                status,
                &headers,
                format!("HTTP {} {status_name}: {}", status.as_u16(), short(&text)),
            );
        }
    }

    /// The cached token, or a new one from the token endpoint.
    async fn access_token(&self) -> Result<String, Outcome> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token.value.clone());
        }
        let token = self.grant().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    async fn forget(&self, used: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == used) {
            *cached = None;
        }
    }

    async fn grant(&self) -> Result<AccessToken, Outcome> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let account = &self.config.account;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            iss: &account.client_email,
            scope: SCOPE,
            aud: &account.token_uri,
            iat: now.as_secs(),
            exp: (now + ASSERTION_LIFETIME).as_secs(),
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = account.private_key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, account.signing_key())
            .map_err(|e| Outcome::Failed(format!("OAuth assertion not signed: {e}")))?;
        // The JWT's characters (base64url and dots) need no form escaping.
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let asked = Instant::now();
        let response = self
            .client
            .post(&account.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| network_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let reason = format!("OAuth token: HTTP {}: {}", status.as_u16(), short(&text));
            // A refused grant (bad key, disabled account) will not mend by itself, but the
            // breaker and retries still bound it: treat 4xx as permanent, 5xx as retryable.
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                Outcome::Retry {
                    reason,
                    after: retry_after(&headers),
                }
            } else {
                Outcome::Failed(reason)
            });
        }
        #[derive(serde::Deserialize)]
        struct Granted {
            access_token: String,
            expires_in: u64,
        }
        let granted: Granted = serde_json::from_str(&text)
            .map_err(|e| Outcome::Failed(format!("OAuth token: unreadable answer: {e}")))?;
        let lifetime = Duration::from_secs(granted.expires_in);
        Ok(AccessToken {
            value: granted.access_token,
            renew_at: asked + lifetime.saturating_sub(self.config.token_refresh_margin),
        })
    }
}

/// `UNREGISTERED`, or `INVALID_ARGUMENT` about the registration token, in FCM's error body.
fn gone(error: &Value) -> Option<String> {
    let error = error.get("error")?;
    let details = error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let mut codes = details.clone().filter_map(|d| d.get("errorCode")?.as_str());
    if codes.any(|code| code == "UNREGISTERED") {
        return Some("UNREGISTERED".into());
    }
    // A bare 404 is not enough: a wrong project id answers it too, for every device.
    let status = error
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if status == "INVALID_ARGUMENT" {
        let about_token = details
            .filter_map(|d| d.get("fieldViolations")?.as_array())
            .flatten()
            .any(|v| v.get("field").and_then(Value::as_str) == Some("message.token"))
            || error
                .get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| m.to_ascii_lowercase().contains("registration token"));
        if about_token {
            return Some("INVALID_ARGUMENT: registration token".into());
        }
    }
    None
}
