//! Ably JWTs: minted by a backend with a key secret, `kid` = keyName, capability in
//! `x-ably-capability`, identity in `x-ably-clientId`.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use protocol::Capability;
use serde::Deserialize;

use super::{Auth, AuthError, Credential, Principal};

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    iat: Option<u64>,
    #[serde(rename = "x-ably-capability")]
    capability: Option<String>,
    #[serde(rename = "x-ably-clientId")]
    client_id: Option<String>,
    /// `ably.channel.<pattern>` and `ably.room.<room>`: the `userClaim` there.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// An Ably JWT's per-attachment publish limits, by channel or room pattern (positive rates only).
fn attachment_rates(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, f64)> {
    claims
        .iter()
        .filter_map(|(name, value)| {
            let pattern = name.strip_prefix("ably.limits.publish.perAttachment.maxRate.")?;
            let rate = value.as_f64().filter(|rate| *rate > 0.0)?;
            Some((pattern.to_owned(), rate))
        })
        .collect()
}

/// The `userClaim`s an Ably JWT names, by channel or room pattern.
fn user_claims(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, String)> {
    claims
        .iter()
        .filter_map(|(name, value)| {
            let pattern = name
                .strip_prefix("ably.channel.")
                .or_else(|| name.strip_prefix("ably.room."))?;
            Some((pattern.to_owned(), value.as_str()?.to_owned()))
        })
        .collect()
}

pub(super) fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.matches('.').count() == 2
}

pub(super) fn verify(
    auth: &Auth,
    token: &str,
    header: &Header,
    now_ms: u64,
) -> Result<Principal, AuthError> {
    if header.alg != Algorithm::HS256 {
        return Err(AuthError::AlgorithmNotAllowed("Ably JWTs are HS256"));
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| auth.key(kid))
        .ok_or_else(|| AuthError::InvalidJwt("no kid naming one of our keys".into()))?;
    let mut validation = Validation::new(Algorithm::HS256);
    // Expiry is checked below against the caller's clock, so tests and renewal agree on it.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(key.secret.as_bytes()),
        &validation,
    )
    .map_err(|e| AuthError::InvalidJwt(e.to_string()))?
    .claims;
    let expires_at = claims.exp.saturating_mul(1000);
    if expires_at <= now_ms {
        return Err(AuthError::TokenExpired);
    }
    let capability = match claims.capability.as_deref() {
        Some(json) => key
            .capability
            .intersect(&Capability::parse(json).map_err(|e| AuthError::InvalidJwt(e.message))?)
            .map_err(|e| AuthError::Capability(e.message))?,
        None => (*key.capability).clone(),
    };
    Ok(Principal {
        client_id: claims.client_id.filter(|id| !id.is_empty()),
        capability: Arc::new(capability),
        expires_at: Some(expires_at),
        issued_at: claims.iat.map(super::supabase::iat_ms),
        key_name: key.name.clone(),
        via: Credential::Token,
        scope: key.app.clone(),
        user_claims: Arc::new(user_claims(&claims.other)),
        attachment_rates: Arc::new(attachment_rates(&claims.other)),
    })
}
