//! Authentication: `credentials -> Principal`.
//!
//! Every credential source (API key, our signed tokens, Ably JWTs signed with a key secret) ends in
//! the same `Principal`, so the connection and the REST API never care where it came from. A new
//! source (Supabase access tokens) is one more arm in `Auth::verify_token`.

mod jwt;
mod key;
pub mod supabase;
mod token;

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use crate::config::ApiKey;
use protocol::{Capability, ChannelName, ErrorCode, ErrorInfo, Operation};

pub(crate) use key::constant_time_eq;
pub use token::{NonceClaim, PreparedToken, TokenDetails, TokenRequest};

/// The issuer Supabase users' principals name instead of a key (key names always hold a `.`).
pub const SUPABASE_ISSUER: &str = "supabase";
/// How long a revocation is kept: Ably's longest token lifetime, after which every token issued
/// before it has expired (our tokens and TokenRequests cannot ask for more).
pub const REVOCATION_TTL_MS: u64 = token::MAX_TTL_MS;
/// Revocations kept in memory before expired ones are swept on the next insert.
const MAX_REMEMBERED_REVOCATIONS: usize = 10_000;

/// One `revokeTokens` target as applied: tokens for `client_id` issued by `issuer` (a key name,
/// or `SUPABASE_ISSUER`) before `issued_before` are refused from `applies_at` on (ms).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revocation {
    #[serde(rename = "k")]
    pub issuer: String,
    #[serde(rename = "c")]
    pub client_id: String,
    #[serde(rename = "b")]
    pub issued_before: u64,
    #[serde(rename = "a")]
    pub applies_at: u64,
}

/// Between a sandbox app id and a channel name in hub keys; channel names cannot contain it.
pub const APP_SEPARATOR: char = '\u{1f}';

/// Who is acting, and what they may do until when.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None`: anonymous. `Some("*")`: may act as any clientId.
    pub client_id: Option<String>,
    pub capability: Arc<Capability>,
    /// Milliseconds since the epoch; `None` for API keys, which do not expire.
    pub expires_at: Option<u64>,
    /// When the token was issued (ms), for revocation; `None` for keys.
    pub issued_at: Option<u64>,
    /// The key that authenticated or issued this (a token's issuer, whose revocations apply to
    /// it); `SUPABASE_ISSUER` for Supabase users.
    pub key_name: String,
    pub via: Credential,
    /// The sandbox app whose channels this principal sees; `None` for the shared space that
    /// configured keys and Supabase users live in.
    pub scope: Option<Arc<str>>,
    /// Channel (or chat room) pattern -> the `userClaim` its messages, presence and annotations
    /// carry (from an Ably JWT's `ably.channel.*`/`ably.room.*` claims, or the Supabase policy).
    pub user_claims: Arc<Vec<(String, String)>>,
    /// Channel (or chat room) pattern -> most messages per second one attachment may publish
    /// there (an Ably JWT's `ably.limits.publish.perAttachment.maxRate.<pattern>`, or the
    /// Supabase policy's `publish_rate`).
    pub attachment_rates: Arc<Vec<(String, f64)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Key,
    Token,
}

impl Principal {
    pub fn allows(&self, channel: &ChannelName, operation: Operation) -> bool {
        self.capability.allows(channel, operation)
    }

    /// Checks the clientId a message, annotation or version claims (this principal must be
    /// allowed to act as it; `*` is reserved), or fills in this principal's identity.
    pub(crate) fn stamp_client_id(
        &self,
        client_id: &mut Option<String>,
    ) -> Result<(), crate::error::Error> {
        match client_id.as_deref() {
            Some(claimed) if !self.may_act_as(claimed) => {
                Err(crate::error::Error::ClientIdMismatch {
                    claimed: claimed.to_owned(),
                    identity: self.identity().unwrap_or("(anonymous)").to_owned(),
                })
            }
            Some("*") => Err(crate::error::Error::ReservedClientId),
            Some(_) => Ok(()),
            None => {
                *client_id = self.identity().map(str::to_owned);
                Ok(())
            }
        }
    }

    /// The `userClaim` this principal's messages on `channel` carry: the first pattern that
    /// covers it (a room's name covers its `::$chat` channel).
    pub fn user_claim(&self, channel: &ChannelName) -> Option<&str> {
        self.user_claims
            .iter()
            .find(|(pattern, _)| protocol::capability::resource_matches(pattern, channel))
            .map(|(_, claim)| claim.as_str())
    }

    /// The most messages per second one attachment of this principal may publish on `channel`.
    pub fn attachment_rate(&self, channel: &ChannelName) -> Option<f64> {
        self.attachment_rates
            .iter()
            .find(|(pattern, _)| protocol::capability::resource_matches(pattern, channel))
            .map(|(_, rate)| *rate)
    }

    /// Puts this principal's `userClaim` for `channel` in `extras`, replacing whatever a client
    /// wrote there: a claim is the server's word, never the client's.
    pub fn stamp_user_claim(&self, channel: &ChannelName, extras: &mut Option<serde_json::Value>) {
        let claim = self.user_claim(channel);
        match extras {
            Some(serde_json::Value::Object(map)) => {
                map.remove("userClaim");
                if let Some(claim) = claim {
                    map.insert("userClaim".into(), claim.into());
                }
            }
            _ if claim.is_some() => {
                *extras = Some(serde_json::json!({ "userClaim": claim }));
            }
            _ => {}
        }
    }

    /// The hub's key for a channel as this principal sees it: the base name, prefixed with the
    /// sandbox app when there is one, so apps never share channels.
    pub fn channel_key<'a>(&self, channel: &'a ChannelName) -> std::borrow::Cow<'a, str> {
        match &self.scope {
            None => std::borrow::Cow::Borrowed(channel.base()),
            Some(app) => std::borrow::Cow::Owned(format!("{app}{APP_SEPARATOR}{}", channel.base())),
        }
    }

    /// Whether this principal may publish or enter as `client_id`: keys and wildcard tokens may
    /// act as anyone, an identified token only as itself.
    pub fn may_act_as(&self, client_id: &str) -> bool {
        self.via == Credential::Key
            || match self.client_id.as_deref() {
                Some("*") => true,
                Some(own) => own == client_id,
                None => false,
            }
    }

    /// The identity to stamp on messages that carry none.
    pub fn identity(&self) -> Option<&str> {
        self.client_id.as_deref().filter(|id| *id != "*")
    }

    /// Binds the client's asserted clientId (`clientId=` on the socket, `X-Ably-ClientId` on
    /// REST). Keys and wildcard tokens take it; a token bound to another identity refuses (40102).
    pub fn with_client_id(mut self, asserted: Option<&str>) -> Result<Principal, AuthError> {
        let Some(asserted) = asserted else {
            return Ok(self);
        };
        if asserted.is_empty() || asserted == "*" {
            return Err(AuthError::InvalidClientId);
        }
        match (self.via, self.client_id.as_deref()) {
            (Credential::Key, _) | (Credential::Token, Some("*")) => {
                self.client_id = Some(asserted.to_owned());
                Ok(self)
            }
            (Credential::Token, Some(own)) if own == asserted => Ok(self),
            _ => Err(AuthError::ClientIdMismatch),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: give an API key or a token")]
    NoCredentials,
    #[error("malformed API key")]
    MalformedKey,
    #[error("invalid key")]
    InvalidKey,
    #[error("invalid token")]
    InvalidToken,
    #[error("invalid JWT: {0}")]
    InvalidJwt(String),
    #[error("token expired")]
    TokenExpired,
    #[error("token expired at {0} (ms since epoch); renew it")]
    TokenExpiredAt(u64),
    #[error("token not yet valid (nbf in the future)")]
    NotYetValid,
    #[error("token was revoked; get a new one")]
    Revoked,
    #[error("JWT signed by an unknown key (kid not in the JWKS)")]
    UnknownKid,
    #[error("JWT audience (aud) not accepted")]
    WrongAudience,
    #[error("JWT issuer (iss) not accepted")]
    WrongIssuer,
    #[error("JWT algorithm not allowed: {0}")]
    AlgorithmNotAllowed(&'static str),
    #[error("signing keys (JWKS) unavailable; retry shortly")]
    KeysUnavailable,
    #[error("invalid token request: {0}")]
    InvalidTokenRequest(String),
    #[error("invalid mac on token request")]
    BadMac,
    #[error("token request timestamp outside the allowed window")]
    StaleTimestamp,
    #[error("token request nonce already used")]
    NonceReused,
    #[error("shared auth state (Redis) unavailable; try again")]
    StateUnavailable,
    #[error("clientId does not match the credentials")]
    ClientIdMismatch,
    #[error("invalid clientId")]
    InvalidClientId,
    #[error("{0}")]
    Capability(String),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::NoCredentials | AuthError::InvalidKey | AuthError::BadMac => {
                ErrorCode::AuthenticationFailed
            }
            AuthError::MalformedKey => ErrorCode::MalformedCredentials,
            AuthError::InvalidToken => ErrorCode::TokenInvalid,
            AuthError::InvalidJwt(_) => ErrorCode::JwtInvalid,
            AuthError::TokenExpired | AuthError::TokenExpiredAt(_) => ErrorCode::TokenExpired,
            AuthError::NotYetValid | AuthError::WrongAudience | AuthError::WrongIssuer => {
                ErrorCode::TokenInvalid
            }
            AuthError::Revoked => ErrorCode::TokenRevoked,
            AuthError::UnknownKid => ErrorCode::TokenUnrecognised,
            AuthError::AlgorithmNotAllowed(_) => ErrorCode::JwtInvalid,
            AuthError::KeysUnavailable => ErrorCode::ServiceUnavailable,
            AuthError::InvalidTokenRequest(_) => ErrorCode::InvalidRequestBody,
            AuthError::StaleTimestamp => ErrorCode::TimestampOutsideWindow,
            AuthError::NonceReused => ErrorCode::NonceReused,
            AuthError::StateUnavailable => ErrorCode::ServiceUnavailable,
            AuthError::ClientIdMismatch => ErrorCode::IncompatibleCredentials,
            AuthError::InvalidClientId => ErrorCode::InvalidClientId,
            AuthError::Capability(_) => ErrorCode::CapabilityDenied,
        }
    }

    pub fn info(&self) -> ErrorInfo {
        self.code().info(self.to_string())
    }
}

impl From<AuthError> for crate::error::Error {
    fn from(error: AuthError) -> crate::error::Error {
        crate::error::Error::Refused(error.info())
    }
}

/// The configured keys and Supabase project, and the state auth keeps: seen nonces and
/// revocations.
pub struct Auth {
    keys: Vec<ApiKey>,
    /// Keys of sandbox apps, by key name, added and removed at runtime.
    app_keys: DashMap<String, ApiKey>,
    nonces: token::NonceCache,
    supabase: Option<supabase::Supabase>,
    /// clientId -> issuer (key name or `SUPABASE_ISSUER`) -> tokens issued before this (ms) are
    /// refused. With Redis, a copy of `rt:revocations` kept by announcements.
    revocations: DashMap<String, HashMap<String, u64>>,
}

impl Auth {
    pub fn new(keys: Vec<ApiKey>, supabase: Option<crate::config::SupabaseConfig>) -> Auth {
        Auth {
            keys,
            app_keys: DashMap::new(),
            nonces: token::NonceCache::default(),
            supabase: supabase.map(supabase::Supabase::new),
            revocations: DashMap::new(),
        }
    }

    /// Starts background work (the first JWKS fetch); call inside a tokio runtime.
    pub fn start(&self) {
        if let Some(supabase) = &self.supabase {
            supabase.prefetch();
        }
    }

    /// Stale nonces go; the nonce and revocation maps give back room they no longer use.
    pub(crate) fn sweep(&self, now_ms: u64) {
        self.nonces.forget_stale(now_ms);
        crate::shrink::dash_map(&self.revocations);
        crate::shrink::dash_map(&self.app_keys);
    }

    /// Refuses, from now on, tokens for `client_id` issued by `issuer` (a key name, or
    /// `SUPABASE_ISSUER`) before `issued_before` (ms). Revocations older than the longest token
    /// lifetime are forgotten as more arrive.
    pub fn revoke_client(&self, issuer: &str, client_id: &str, issued_before: u64) {
        if self.revocations.len() >= MAX_REMEMBERED_REVOCATIONS {
            let oldest_kept = protocol::now_ms().saturating_sub(REVOCATION_TTL_MS);
            self.revocations.retain(|_, issuers| {
                issuers.retain(|_, before| *before > oldest_kept);
                !issuers.is_empty()
            });
        }
        self.revocations
            .entry(client_id.to_owned())
            .or_default()
            .entry(issuer.to_owned())
            .and_modify(|at| *at = (*at).max(issued_before))
            .or_insert(issued_before);
    }

    /// Whether a token principal falls under a revocation by its issuer.
    pub fn is_revoked(&self, principal: &Principal) -> bool {
        let (Credential::Token, Some(client_id)) = (principal.via, principal.client_id.as_deref())
        else {
            return false;
        };
        self.revocations.get(client_id).is_some_and(|issuers| {
            issuers.get(&principal.key_name).is_some_and(|before| {
                // A token without iat cannot prove it is newer than the revocation.
                principal.issued_at.is_none_or(|issued| issued < *before)
            })
        })
    }

    pub fn key(&self, key_name: &str) -> Option<ApiKey> {
        self.keys
            .iter()
            .find(|key| key.name == key_name)
            .cloned()
            .or_else(|| self.app_keys.get(key_name).map(|key| key.clone()))
    }

    /// Adds a sandbox app's key.
    pub fn add_app_key(&self, key: ApiKey) {
        self.app_keys.insert(key.name.clone(), key);
    }

    /// Removes every key of a sandbox app; returns how many.
    pub fn remove_app(&self, app: &str) -> usize {
        let before = self.app_keys.len();
        self.app_keys
            .retain(|_, key| key.app.as_deref() != Some(app));
        before - self.app_keys.len()
    }

    /// A full API key `appId.keyId:secret`, from `key=` or HTTP Basic.
    pub fn verify_key(&self, full_key: &str) -> Result<Principal, AuthError> {
        let (name, secret) = full_key.split_once(':').ok_or(AuthError::MalformedKey)?;
        let key = self.key(name).ok_or(AuthError::InvalidKey)?;
        if !key.secret_matches(secret) {
            return Err(AuthError::InvalidKey);
        }
        Ok(Principal {
            client_id: None,
            capability: key.capability.clone(),
            expires_at: None,
            issued_at: None,
            key_name: key.name.clone(),
            via: Credential::Key,
            scope: key.app.clone(),
            user_claims: Default::default(),
            attachment_rates: Default::default(),
        })
    }

    /// A token string: ours (`rt1.`…), an Ably JWT (its `kid` names one of our keys), or a
    /// Supabase access token. Async only because a Supabase key may need fetching.
    pub async fn verify_token(&self, token: &str, now_ms: u64) -> Result<Principal, AuthError> {
        let principal = if token::is_ours(token) {
            token::verify(self, token, now_ms)?
        } else if jwt::looks_like_jwt(token) {
            let header = jsonwebtoken::decode_header(token)
                .map_err(|e| AuthError::InvalidJwt(e.to_string()))?;
            let ably_key = header
                .kid
                .as_deref()
                .is_some_and(|kid| self.key(kid).is_some());
            match (&self.supabase, ably_key) {
                (_, true) => jwt::verify(self, token, &header, now_ms)?,
                (Some(supabase), false) => supabase.verify(token, &header, now_ms).await?,
                (None, false) => {
                    return Err(AuthError::InvalidJwt(
                        "not signed by a configured key (kid unknown, no Supabase project)".into(),
                    ))
                }
            }
        } else {
            return Err(AuthError::InvalidToken);
        };
        if self.is_revoked(&principal) {
            return Err(AuthError::Revoked);
        }
        Ok(principal)
    }

    /// Claims a token request's nonce in this process (embedded, the process is the cluster).
    pub(crate) fn claim_nonce(&self, claim: &NonceClaim, now_ms: u64) -> Result<(), AuthError> {
        self.nonces.remember(claim, now_ms)
    }

    /// Every check of a token request but the nonce, which the caller claims (through the
    /// back-end's `SharedAuth`: in memory or in Redis) before handing the token out.
    pub fn prepare_token(
        &self,
        key_name: &str,
        request: &TokenRequest,
        basic: Option<&Principal>,
        now_ms: u64,
    ) -> Result<PreparedToken, AuthError> {
        token::issue(self, key_name, request, basic, now_ms)
    }
}

#[cfg(test)]
mod tests;
