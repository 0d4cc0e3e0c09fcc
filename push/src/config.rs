//! What `Push::start` is given: one optional block per transport and the delivery bounds they
//! share. Keys and accounts are parsed here, once, so a bad one is refused at start-up (the
//! binary names the flag) and never while sending.

use std::time::Duration;

use base64::Engine as _;
use p256::pkcs8::EncodePrivateKey as _;

/// Push delivery settings. `Default`: no transport configured (every `send` is refused), and the
/// delivery bounds in `Delivery::default`.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub web_push: Option<WebPushConfig>,
    pub fcm: Option<FcmConfig>,
    pub apns: Option<ApnsConfig>,
    /// Each configured transport gets its own queue, senders and breaker with these bounds.
    pub delivery: Delivery,
}

/// Queue, concurrency, retry and breaker bounds of one transport.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Jobs waiting for a sender; past it `send` is refused (`Refused::QueueFull`). 10,000: a
    /// fan-out burst to a large channel's devices, about 10 MB of JSON at most.
    pub queue_max_jobs: usize,
    /// Requests in flight at once. 16: the push services answer in tens of ms, so this is
    /// hundreds of deliveries a second without opening a connection per device.
    pub senders: usize,
    /// Further attempts after a 429, a 5xx or a network error. 3.
    pub max_retries: u32,
    /// The first retry's wait, doubled each time (with jitter) up to `retry_max`. 500 ms.
    pub retry_initial: Duration,
    /// The longest wait before a retry, `Retry-After` included. 30 s.
    pub retry_max: Duration,
    /// One request's deadline. 10 s.
    pub attempt_timeout: Duration,
    /// Consecutive retryable failures that open the breaker. 10.
    pub breaker_failures: u32,
    /// How long an open breaker holds the queue before one probe request. 30 s.
    pub breaker_cooldown: Duration,
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery {
            queue_max_jobs: 10_000,
            senders: 16,
            max_retries: 3,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
            breaker_failures: 10,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// Web Push (RFC 8030) with VAPID (RFC 8292); the endpoint is each subscription's own URL.
#[derive(Clone, Debug)]
pub struct WebPushConfig {
    pub vapid: VapidKeys,
    /// The VAPID `sub` claim: `mailto:` or `https:` contact for the push services.
    pub subject: String,
    /// `TTL` header: how long a push service keeps a message for an offline browser. 1 day.
    pub ttl: Duration,
    pub urgency: Urgency,
    /// The push services a subscription's endpoint may be on (a host, or a domain its
    /// subdomains share): an endpoint comes from whoever registers the device, so anything
    /// else would have this server send requests wherever a client says. HTTPS only, but for
    /// a loopback host (a test's push service). Default: the browsers' push services.
    pub endpoint_hosts: Vec<String>,
}

/// Where browsers' push subscriptions live: Chrome and Edge (FCM), Firefox, Safari, legacy Edge.
pub const BROWSER_PUSH_SERVICES: &[&str] = &[
    "fcm.googleapis.com",
    "push.services.mozilla.com",
    "push.apple.com",
    "notify.windows.com",
];

impl WebPushConfig {
    pub fn new(vapid: VapidKeys, subject: impl Into<String>) -> Result<WebPushConfig, KeyError> {
        let subject = subject.into();
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            return Err(KeyError(format!(
                "VAPID subject {subject:?}: expected mailto:… or https://…"
            )));
        }
        Ok(WebPushConfig {
            vapid,
            subject,
            ttl: Duration::from_secs(24 * 60 * 60),
            urgency: Urgency::Normal,
            endpoint_hosts: BROWSER_PUSH_SERVICES
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
        })
    }
}

/// RFC 8030 `Urgency`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    VeryLow,
    Low,
    Normal,
    High,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }

    pub fn parse(text: &str) -> Option<Urgency> {
        [
            Urgency::VeryLow,
            Urgency::Low,
            Urgency::Normal,
            Urgency::High,
        ]
        .into_iter()
        .find(|u| u.as_str() == text)
    }
}

/// A bad key, account or setting, with what was wrong (never the secret itself).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// A VAPID key pair: P-256, as web-push tools print them (base64url, unpadded; the public key
/// the 65-byte uncompressed point, the private key the 32-byte scalar).
#[derive(Clone)]
pub struct VapidKeys {
    secret: p256::SecretKey,
}

impl std::fmt::Debug for VapidKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VapidKeys({})", self.public_key_base64url())
    }
}

impl VapidKeys {
    pub fn generate() -> VapidKeys {
        VapidKeys {
            secret: p256::SecretKey::random(&mut rand::rngs::OsRng),
        }
    }

    /// The private key, checked against the public key when one is given (a mismatched pair
    /// would sign tokens browsers reject, subscribed under the other key).
    pub fn from_base64url(
        private_key: &str,
        public_key: Option<&str>,
    ) -> Result<VapidKeys, KeyError> {
        let bytes = decode_base64_any(private_key)
            .ok_or_else(|| KeyError("VAPID private key: not base64url".into()))?;
        let secret = p256::SecretKey::from_slice(&bytes)
            .map_err(|_| KeyError("VAPID private key: not a 32-byte P-256 scalar".into()))?;
        let keys = VapidKeys { secret };
        if let Some(public_key) = public_key {
            let given = decode_base64_any(public_key)
                .ok_or_else(|| KeyError("VAPID public key: not base64url".into()))?;
            if given != keys.public_key_bytes() {
                return Err(KeyError(
                    "VAPID public key: does not match the private key".into(),
                ));
            }
        }
        Ok(keys)
    }

    pub fn public_key_base64url(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public_key_bytes())
    }

    pub fn private_key_base64url(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.secret.to_bytes())
    }

    fn public_key_bytes(&self) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        self.secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    pub(crate) fn signing_key(&self) -> jsonwebtoken::EncodingKey {
        let der = self
            .secret
            .to_pkcs8_der()
            .expect("a valid P-256 scalar always encodes");
        jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes())
    }
}

/// FCM HTTP v1, authorised by a Google service account.
#[derive(Clone, Debug)]
pub struct FcmConfig {
    pub account: ServiceAccount,
    /// Default `https://fcm.googleapis.com`; messages go to
    /// `{endpoint}/v1/projects/{project_id}/messages:send`.
    pub endpoint: String,
    /// An access token is renewed this long before it expires. 5 min.
    pub token_refresh_margin: Duration,
}

impl FcmConfig {
    pub fn new(account: ServiceAccount) -> FcmConfig {
        FcmConfig {
            account,
            endpoint: "https://fcm.googleapis.com".into(),
            token_refresh_margin: Duration::from_secs(5 * 60),
        }
    }
}

/// The fields of a service-account JSON key file that the JWT bearer grant needs.
#[derive(Clone)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub token_uri: String,
    key: jsonwebtoken::EncodingKey,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Parses the JSON key file Google's console downloads.
    pub fn from_json(json: &str) -> Result<ServiceAccount, KeyError> {
        #[derive(serde::Deserialize)]
        struct File {
            project_id: String,
            client_email: String,
            private_key: String,
            private_key_id: Option<String>,
            token_uri: Option<String>,
        }
        let file: File = serde_json::from_str(json).map_err(|e| {
            KeyError(format!(
                "service account JSON: {e} (expected project_id, client_email, private_key)"
            ))
        })?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .map_err(|_| KeyError("service account private_key: not an RSA PEM key".into()))?;
        let token_uri = file
            .token_uri
            .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into());
        if reqwest::Url::parse(&token_uri).is_err() {
            return Err(KeyError(format!(
                "service account token_uri {token_uri:?}: not a URL"
            )));
        }
        Ok(ServiceAccount {
            project_id: file.project_id,
            client_email: file.client_email,
            private_key_id: file.private_key_id,
            token_uri,
            key,
        })
    }

    pub(crate) fn signing_key(&self) -> &jsonwebtoken::EncodingKey {
        &self.key
    }
}

/// APNs: a provider token from a `.p8` key (`ApnsConfig::new`) or a TLS client certificate
/// (`ApnsConfig::with_certificate`).
#[derive(Clone)]
pub struct ApnsConfig {
    /// `apns-topic`: the app's bundle id.
    pub topic: String,
    /// Default `https://api.push.apple.com` (`https://api.sandbox.push.apple.com` for
    /// development builds). An `http://` endpoint speaks HTTP/2 without TLS (tests).
    pub endpoint: String,
    /// PEM certificates trusted besides the public roots (a test CA, an inspecting proxy).
    pub extra_roots_pem: Option<Vec<u8>>,
    pub(crate) auth: ApnsAuth,
}

#[derive(Clone)]
pub(crate) enum ApnsAuth {
    Token {
        key_id: String,
        team_id: String,
        key: jsonwebtoken::EncodingKey,
    },
    /// The certificate chain and its private key, PEM; checked into a `reqwest::Identity`.
    Certificate { identity_pem: Vec<u8> },
}

impl std::fmt::Debug for ApnsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            ApnsAuth::Token {
                key_id, team_id, ..
            } => format!("token (key {key_id}, team {team_id})"),
            ApnsAuth::Certificate { .. } => "certificate".to_owned(),
        };
        f.debug_struct("ApnsConfig")
            .field("topic", &self.topic)
            .field("endpoint", &self.endpoint)
            .field("auth", &auth)
            .finish_non_exhaustive()
    }
}

impl ApnsConfig {
    /// Token auth: `p8` is the key file's text (PKCS#8 PEM, P-256).
    pub fn new(
        p8: &str,
        key_id: impl Into<String>,
        team_id: impl Into<String>,
        topic: impl Into<String>,
    ) -> Result<ApnsConfig, KeyError> {
        use p256::pkcs8::DecodePrivateKey as _;
        // jsonwebtoken takes any PEM here; parsing it as P-256 first refuses an RSA or P-384 key
        // now rather than at the first signature.
        p256::SecretKey::from_pkcs8_pem(p8)
            .map_err(|_| KeyError("APNs key: not a PKCS#8 P-256 (.p8) key".into()))?;
        let key = jsonwebtoken::EncodingKey::from_ec_pem(p8.as_bytes())
            .map_err(|_| KeyError("APNs key: not a PKCS#8 P-256 (.p8) key".into()))?;
        let (key_id, team_id) = (key_id.into(), team_id.into());
        for (name, value) in [("key id", &key_id), ("team id", &team_id)] {
            if value.trim().is_empty() {
                return Err(KeyError(format!("APNs {name}: empty")));
            }
        }
        ApnsConfig::with_auth(
            topic.into(),
            ApnsAuth::Token {
                key_id,
                team_id,
                key,
            },
        )
    }

    /// Certificate auth: `pem` holds the push certificate (chain) and its private key, e.g.
    /// `openssl pkcs12 -in apns.p12 -out apns.pem -nodes`.
    pub fn with_certificate(pem: &[u8], topic: impl Into<String>) -> Result<ApnsConfig, KeyError> {
        reqwest::Identity::from_pem(pem).map_err(|_| {
            KeyError("APNs certificate: expected PEM with a certificate and its private key".into())
        })?;
        ApnsConfig::with_auth(
            topic.into(),
            ApnsAuth::Certificate {
                identity_pem: pem.to_vec(),
            },
        )
    }

    fn with_auth(topic: String, auth: ApnsAuth) -> Result<ApnsConfig, KeyError> {
        if topic.trim().is_empty() {
            return Err(KeyError("APNs topic: empty".into()));
        }
        Ok(ApnsConfig {
            topic,
            endpoint: "https://api.push.apple.com".into(),
            extra_roots_pem: None,
            auth,
        })
    }
}

/// Base64 as browsers and tools hand it out: url-safe or standard, padded or not.
pub(crate) fn decode_base64_any(text: &str) -> Option<Vec<u8>> {
    let normal: String = text
        .trim()
        .chars()
        .filter(|c| *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(normal)
        .ok()
}

impl WebPushConfig {
    /// Whether this server sends to `endpoint`: on a listed push service, over HTTPS (plain
    /// HTTP only to a loopback host).
    pub fn sends_to(&self, endpoint: &reqwest::Url) -> bool {
        let Some(host) = endpoint.host_str() else {
            return false;
        };
        let listed = self.endpoint_hosts.iter().any(|allowed| {
            host.eq_ignore_ascii_case(allowed)
                || host
                    .to_ascii_lowercase()
                    .ends_with(&format!(".{}", allowed.to_ascii_lowercase()))
        });
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        listed && (endpoint.scheme() == "https" || (endpoint.scheme() == "http" && loopback))
    }
}
