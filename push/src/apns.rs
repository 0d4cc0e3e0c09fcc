//! APNs: `POST {endpoint}/3/device/{token}` over HTTP/2, authorised by a provider token (an
//! ES256 JWT from the `.p8` key: `kid` the key id, `iss` the team id, `iat`) or by the TLS
//! client certificate. Apple wants the token renewed at most every 20 minutes and refuses one
//! older than an hour, so it is reused for 40 minutes; a 403 `ExpiredProviderToken` renews it at
//! once. 410 `Unregistered` and 400 `BadDeviceToken` mean the device is gone.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::time::Instant;

use crate::config::{ApnsAuth, ApnsConfig, Delivery};
use crate::delivery::{by_status, network_error, Outcome, Prepared};
use crate::payload;
use crate::recipient::Target;
use crate::web::short;

const TOKEN_REUSE: Duration = Duration::from_secs(40 * 60);

pub(crate) struct Apns {
    config: ApnsConfig,
    base_url: String,
    client: reqwest::Client,
    /// Signing is local and quick: a std mutex held only to read or swap the token.
    token: Mutex<Option<(String, Instant)>>,
}

impl Apns {
    pub(crate) fn new(config: ApnsConfig, delivery: &Delivery) -> Apns {
        let mut builder = reqwest::Client::builder().timeout(delivery.attempt_timeout);
        // APNs speaks only HTTP/2: over TLS it is agreed by ALPN; a plain `http://` endpoint
        // (a test receiver) gets it without asking.
        if config.endpoint.starts_with("http://") {
            builder = builder.http2_prior_knowledge();
        }
        if let ApnsAuth::Certificate { identity_pem } = &config.auth {
            // Checked by `ApnsConfig::with_certificate`.
            if let Ok(identity) = reqwest::Identity::from_pem(identity_pem) {
                builder = builder.identity(identity);
            }
        }
        for root in config
            .extra_roots_pem
            .as_deref()
            .and_then(|pem| reqwest::Certificate::from_pem_bundle(pem).ok())
            .into_iter()
            .flatten()
        {
            builder = builder.add_root_certificate(root);
        }
        Apns {
            base_url: config.endpoint.trim_end_matches('/').to_owned(),
            config,
            client: builder.build().unwrap_or_default(),
            token: Mutex::new(None),
        }
    }

    pub(crate) async fn attempt(&self, job: &Prepared) -> Outcome {
        let Target::Apns { device_token } = &job.target else {
            unreachable!("the apns queue holds apns targets")
        };
        let request = payload::apns_request(&job.payload);
        let body = request.body.to_string();
        let url = format!("{}/3/device/{device_token}", self.base_url);
        let mut renewed = false;
        loop {
            let mut builder = self.client.post(&url);
            match self.provider_token(renewed) {
                Ok(Some(token)) => {
                    builder = builder.header("authorization", format!("bearer {token}"))
                }
                Ok(None) => {}
                Err(error) => {
                    return Outcome::Failed(format!("provider token not signed: {error}"))
                }
            }
            builder = builder
                .header("apns-topic", &self.config.topic)
                .header("content-type", "application/json");
            for (name, value) in &request.headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let response = match builder.body(body.clone()).send().await {
                Ok(response) => response,
                Err(error) => return network_error(&error),
            };
            let status = response.status();
            if status.is_success() {
                return Outcome::Delivered;
            }
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            let reason = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            let gone =
                status.as_u16() == 410 || (status.as_u16() == 400 && reason == "BadDeviceToken");
            if gone {
                return Outcome::Gone(if reason.is_empty() {
                    "Unregistered".to_owned()
                } else {
                    reason
                });
            }
            if status.as_u16() == 403 && reason == "ExpiredProviderToken" && !renewed {
                renewed = true;
                continue;
            }
            return by_status(
                status,
                &headers,
                format!("HTTP {} {reason}: {}", status.as_u16(), short(&text)),
            );
        }
    }

    /// The cached token, or a new one when it is `TOKEN_REUSE` old or `renew` is asked; `None`
    /// with certificate auth.
    fn provider_token(&self, renew: bool) -> Result<Option<String>, jsonwebtoken::errors::Error> {
        let ApnsAuth::Token {
            key_id,
            team_id,
            key,
        } = &self.config.auth
        else {
            return Ok(None);
        };
        let mut cached = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, made)) = cached.as_ref() {
            if !renew && made.elapsed() < TOKEN_REUSE {
                return Ok(Some(token.clone()));
            }
        }
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            iat: u64,
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(key_id.clone());
        let token = jsonwebtoken::encode(&header, &Claims { iss: team_id, iat }, key)?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(Some(token))
    }
}
