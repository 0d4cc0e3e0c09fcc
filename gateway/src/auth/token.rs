//! Token requests and our own tokens.
//!
//! Our tokens are self-verifying: `rt1.<payload>.<mac>`, the payload naming the key whose secret
//! signed it, so any node holding the key list verifies one without shared state. The prefix keeps
//! them apart from JWTs (which start with `eyJ`).

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use protocol::Capability;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Sha256;

use super::key::constant_time_eq;
use super::{Auth, AuthError, Credential, Principal};

const PREFIX: &str = "rt1.";
/// A token request must be signed within this much of our clock (Ably's window).
pub(crate) const TIMESTAMP_WINDOW: Duration = Duration::from_secs(120);
/// Ably's default token lifetime.
const DEFAULT_TTL_MS: u64 = 60 * 60 * 1000;
/// Ably's longest token lifetime.
pub(crate) const MAX_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Nonces remembered at most; past this, expired ones are swept before each insert.
const MAX_REMEMBERED_NONCES: usize = 100_000;

/// A TokenRequest as ably-js (JSON, numbers) or ably-python (msgpack, nulls) sends it. Numeric
/// fields are kept as the text that was signed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub ttl: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub capability: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
}

fn loose_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

impl TokenRequest {
    /// `keyName\nttl\ncapability\nclientId\ntimestamp\nnonce\n`, signed with HMAC-SHA256.
    pub fn signing_text(&self, key_name: &str) -> String {
        let field = |value: &Option<String>| value.clone().unwrap_or_default();
        format!(
            "{key_name}\n{}\n{}\n{}\n{}\n{}\n",
            field(&self.ttl),
            field(&self.capability),
            field(&self.client_id),
            field(&self.timestamp),
            field(&self.nonce),
        )
    }

    pub fn sign(&self, key_name: &str, secret: &str) -> String {
        STANDARD.encode(hmac(secret, self.signing_text(key_name).as_bytes()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenDetails {
    pub token: String,
    pub key_name: String,
    pub issued: u64,
    pub expires: u64,
    pub capability: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    k: String,
    i: u64,
    x: u64,
    c: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cid: Option<String>,
}

fn hmac(secret: &str, text: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(text);
    mac.finalize().into_bytes().to_vec()
}

pub(super) fn is_ours(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// A signed token request's nonce, to be claimed (once, cluster-wide with Redis) before the
/// token it asked for is handed out.
#[derive(Debug, Clone)]
pub struct NonceClaim {
    pub key_name: String,
    pub nonce: String,
    /// The request's timestamp (ms).
    pub timestamp: u64,
    /// When the request leaves the timestamp window (ms): the nonce need not be kept after it.
    pub forget_at: u64,
}

/// A token request that passed every check but the nonce: the token, and the nonce to claim
/// first (`None` for an unsigned request under Basic auth).
#[derive(Debug)]
pub struct PreparedToken {
    pub details: TokenDetails,
    pub nonce: Option<NonceClaim>,
}

/// Checks a token request and makes its token; the nonce is claimed by the caller, after
/// everything else passed (a refused request does not use up its nonce).
pub(super) fn issue(
    auth: &Auth,
    key_name: &str,
    request: &TokenRequest,
    basic: Option<&Principal>,
    now_ms: u64,
) -> Result<PreparedToken, AuthError> {
    let invalid = |why: &str| AuthError::InvalidTokenRequest(why.to_owned());
    let mut claim = None;
    if let Some(named) = request.key_name.as_deref() {
        if named != key_name {
            return Err(invalid("keyName does not match the request path"));
        }
    }
    let key = auth.key(key_name).ok_or(AuthError::InvalidKey)?;
    match request.mac.as_deref() {
        Some(mac) => {
            let expected = request.sign(key_name, &key.secret);
            if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
                return Err(AuthError::BadMac);
            }
            let timestamp: u64 = request
                .timestamp
                .as_deref()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| invalid("timestamp missing or not a number"))?;
            let window = TIMESTAMP_WINDOW.as_millis() as u64;
            if timestamp.abs_diff(now_ms) > window {
                return Err(AuthError::StaleTimestamp);
            }
            let nonce = request.nonce.as_deref().unwrap_or_default();
            if nonce.len() < 16 {
                return Err(invalid("nonce must be at least 16 characters"));
            }
            claim = Some(NonceClaim {
                key_name: key_name.to_owned(),
                nonce: nonce.to_owned(),
                timestamp,
                forget_at: timestamp + window,
            });
        }
        None if basic.is_some_and(|p| p.via == Credential::Key && p.key_name == key_name) => {}
        None => {
            return Err(invalid(
                "unsigned token request needs Basic auth with its key",
            ))
        }
    }

    let ttl = match request.ttl.as_deref() {
        None | Some("") => DEFAULT_TTL_MS,
        Some(ttl) => ttl
            .parse::<u64>()
            .ok()
            .filter(|ttl| *ttl > 0 && *ttl <= MAX_TTL_MS)
            .ok_or_else(|| invalid("ttl must be between 1 ms and 24 hours"))?,
    };
    let capability = match request.capability.as_deref() {
        None | Some("") => (*key.capability).clone(),
        Some(json) => {
            let asked = Capability::parse(json).map_err(|e| invalid(&e.message))?;
            key.capability
                .intersect(&asked)
                .map_err(|e| AuthError::Capability(e.message))?
        }
    };
    let client_id = request.client_id.clone().filter(|id| !id.is_empty());

    let payload = Payload {
        k: key.name.clone(),
        i: now_ms,
        x: now_ms + ttl,
        c: capability.to_json(),
        cid: client_id.clone(),
    };
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("plain struct"));
    let signed = format!("{PREFIX}{body}");
    let mac = URL_SAFE_NO_PAD.encode(hmac(&key.secret, signed.as_bytes()));
    Ok(PreparedToken {
        details: TokenDetails {
            token: format!("{signed}.{mac}"),
            key_name: key.name.clone(),
            issued: payload.i,
            expires: payload.x,
            capability: payload.c,
            client_id,
        },
        nonce: claim,
    })
}

pub(super) fn verify(auth: &Auth, token: &str, now_ms: u64) -> Result<Principal, AuthError> {
    let (signed, mac) = token.rsplit_once('.').ok_or(AuthError::InvalidToken)?;
    let body = signed.strip_prefix(PREFIX).ok_or(AuthError::InvalidToken)?;
    let payload: Payload = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(AuthError::InvalidToken)?;
    let key = auth.key(&payload.k).ok_or(AuthError::InvalidToken)?;
    let expected = URL_SAFE_NO_PAD.encode(hmac(&key.secret, signed.as_bytes()));
    if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
        return Err(AuthError::InvalidToken);
    }
    if payload.x <= now_ms {
        return Err(AuthError::TokenExpired);
    }
    let capability = Capability::parse(&payload.c).map_err(|_| AuthError::InvalidToken)?;
    // The key's capability may have narrowed since the token was issued.
    let capability = key
        .capability
        .intersect(&capability)
        .map_err(|e| AuthError::Capability(e.message))?;
    Ok(Principal {
        client_id: payload.cid,
        capability: Arc::new(capability),
        expires_at: Some(payload.x),
        issued_at: Some(payload.i),
        key_name: key.name.clone(),
        via: Credential::Token,
        scope: key.app.clone(),
        user_claims: Default::default(),
        attachment_rates: Default::default(),
    })
}

/// Nonces of accepted token requests, kept until their timestamp leaves the window (after which
/// the request would be refused as stale anyway).
#[derive(Default)]
pub(super) struct NonceCache {
    seen: DashMap<String, u64>,
}

impl NonceCache {
    pub(super) fn remember(&self, claim: &NonceClaim, now_ms: u64) -> Result<(), AuthError> {
        if self.seen.len() >= MAX_REMEMBERED_NONCES {
            self.seen.retain(|_, forget_at| *forget_at > now_ms);
        }
        let entry = format!("{}\n{}\n{}", claim.key_name, claim.nonce, claim.timestamp);
        match self.seen.entry(entry) {
            dashmap::Entry::Occupied(_) => Err(AuthError::NonceReused),
            dashmap::Entry::Vacant(slot) => {
                slot.insert(claim.forget_at);
                Ok(())
            }
        }
    }

    /// Forgets nonces whose requests are stale by now (the sweep's), and the room they took.
    pub(super) fn forget_stale(&self, now_ms: u64) {
        self.seen.retain(|_, forget_at| *forget_at > now_ms);
        crate::shrink::dash_map(&self.seen);
    }
}
