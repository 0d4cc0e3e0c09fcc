//! Supabase access tokens as realtime credentials.
//!
//! HS256 with the project's JWT secret, and ES256/RS256 through the project's JWKS; both may be
//! configured at once (a migration to signing keys). Claims go through a `Policy` to become a
//! capability; `sub` becomes the clientId.

mod jwks;
mod policy;

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::{AuthError, Credential, Principal};
use crate::config::SupabaseConfig;
use jwks::{Jwks, Lookup};

pub(crate) struct Supabase {
    config: SupabaseConfig,
    secret: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
}

impl Supabase {
    pub(crate) fn new(config: SupabaseConfig) -> Supabase {
        let secret = config
            .jwt_secret
            .as_ref()
            .map(|secret| DecodingKey::from_secret(secret.as_bytes()));
        let jwks = config.jwks_url.clone().map(|url| {
            Arc::new(Jwks::new(
                url,
                config.jwks_fetch_timeout,
                config.jwks_min_refresh_interval,
            ))
        });
        Supabase {
            config,
            secret,
            jwks,
        }
    }

    /// Fetches the key set in the background so the first connections find it cached.
    pub(crate) fn prefetch(&self) {
        if let Some(jwks) = self.jwks.clone() {
            tokio::spawn(async move { jwks.refresh().await });
        }
    }

    pub(crate) async fn verify(
        &self,
        token: &str,
        header: &Header,
        now_ms: u64,
    ) -> Result<Principal, AuthError> {
        let (key, algorithm) = match header.alg {
            Algorithm::HS256 => {
                let key = self.secret.clone().ok_or(AuthError::AlgorithmNotAllowed(
                    "HS256 tokens need --supabase-jwt-secret",
                ))?;
                (key, Algorithm::HS256)
            }
            Algorithm::ES256 | Algorithm::RS256 => {
                let jwks = self.jwks.as_ref().ok_or(AuthError::AlgorithmNotAllowed(
                    "asymmetric tokens need --supabase-url or --supabase-jwks-url",
                ))?;
                let kid = header.kid.as_deref().ok_or(AuthError::UnknownKid)?;
                let found = match jwks.key(kid).await {
                    Lookup::Found(found) => found,
                    Lookup::UnknownKid => return Err(AuthError::UnknownKid),
                    Lookup::Unavailable => return Err(AuthError::KeysUnavailable),
                };
                if found.algorithm != header.alg {
                    return Err(AuthError::AlgorithmNotAllowed(
                        "algorithm does not match the key",
                    ));
                }
                (found.key, found.algorithm)
            }
            _ => return Err(AuthError::AlgorithmNotAllowed("algorithm not accepted")),
        };

        let mut validation = Validation::new(algorithm);
        // Time claims are checked below against the caller's clock, with our own messages.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        // aud always (Supabase user tokens carry it), iss whenever we know the project.
        validation.required_spec_claims = ["aud".to_owned()].into();
        validation.set_audience(&self.config.audience);
        if let Some(issuer) = &self.config.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                    AuthError::WrongAudience
                }
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
                ErrorKind::InvalidSignature => AuthError::InvalidJwt("bad signature".into()),
                _ => AuthError::InvalidJwt(error.to_string()),
            })?
            .claims;

        let seconds = |name: &str| claims.get(name).and_then(Value::as_u64);
        let leeway_ms = self.config.leeway.as_millis() as u64;
        let expires_at = seconds("exp")
            .ok_or_else(|| AuthError::InvalidJwt("no exp claim".into()))?
            .saturating_mul(1000);
        if expires_at + leeway_ms <= now_ms {
            return Err(AuthError::TokenExpiredAt(expires_at));
        }
        if seconds("nbf").is_some_and(|nbf| nbf * 1000 > now_ms + leeway_ms) {
            return Err(AuthError::NotYetValid);
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|sub| !sub.is_empty() && *sub != "*")
            .ok_or_else(|| AuthError::InvalidJwt("no usable sub claim".into()))?
            .to_owned();
        let capability = self.config.policy.capability_for(&claims);
        if capability.is_empty() {
            return Err(AuthError::Capability(
                "the policy grants this token nothing".into(),
            ));
        }
        Ok(Principal {
            client_id: Some(sub),
            capability: Arc::new(capability),
            expires_at: Some(expires_at),
            issued_at: seconds("iat").map(iat_ms),
            key_name: super::SUPABASE_ISSUER.to_owned(),
            via: Credential::Token,
            scope: None,
            user_claims: Arc::new(self.config.policy.user_claims_for(&claims)),
            attachment_rates: Arc::new(self.config.policy.attachment_rates_for(&claims)),
        })
    }
}

/// `iat` has whole seconds; a token from the same second as a revocation counts as issued after
/// it, so a user who signs in again at once is not locked out for up to a second.
pub(super) fn iat_ms(iat: u64) -> u64 {
    iat.saturating_mul(1000).saturating_add(999)
}

#[cfg(test)]
mod tests;
