//! The project's JSON Web Key Set, fetched and cached.
//!
//! Keys are parsed once into `DecodingKey`s and looked up by `kid`, so verifying a token costs no
//! I/O. An unknown `kid` triggers a refresh, at most one per `min_refresh_interval` and one at a
//! time (others wait for it); a failed refresh keeps the last good set. With no set ever fetched,
//! asymmetric tokens are refused (fail closed) as unavailable, and clients retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A verification key and the one algorithm it may be used with.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

pub(crate) struct Jwks {
    url: String,
    client: reqwest::Client,
    min_refresh_interval: Duration,
    keys: RwLock<Option<Arc<HashMap<String, VerifyingKey>>>>,
    last_attempt: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
    refreshed: Notify,
}

pub(crate) enum Lookup {
    Found(VerifyingKey),
    UnknownKid,
    /// No key set was ever fetched.
    Unavailable,
}

impl Jwks {
    pub(crate) fn new(
        url: String,
        fetch_timeout: Duration,
        min_refresh_interval: Duration,
    ) -> Jwks {
        let client = reqwest::Client::builder()
            .timeout(fetch_timeout)
            .connect_timeout(fetch_timeout)
            .build()
            .unwrap_or_default();
        Jwks {
            url,
            client,
            min_refresh_interval,
            keys: RwLock::new(None),
            last_attempt: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            refreshed: Notify::new(),
        }
    }

    pub(crate) async fn key(&self, kid: &str) -> Lookup {
        if let Some(found) = self.cached(kid) {
            return Lookup::Found(found);
        }
        self.refresh().await;
        match (self.cached(kid), self.has_keys()) {
            (Some(found), _) => Lookup::Found(found),
            (None, true) => Lookup::UnknownKid,
            (None, false) => Lookup::Unavailable,
        }
    }

    fn cached(&self, kid: &str) -> Option<VerifyingKey> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.as_ref()?.get(kid).cloned()
    }

    fn has_keys(&self) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Fetches the set unless one was tried recently; concurrent callers share one fetch.
    pub(crate) async fn refresh(&self) {
        let notified = self.refreshed.notified();
        if self.refreshing.swap(true, Ordering::AcqRel) {
            // Someone else is fetching: wait for them (bounded by the fetch timeout).
            notified.await;
            return;
        }
        let due = {
            let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|at| at.elapsed() >= self.min_refresh_interval);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            match self.fetch().await {
                Ok(keys) => {
                    tracing::info!(url = %self.url, keys = keys.len(), "fetched Supabase JWKS");
                    ::metrics::counter!("realtime_jwks_fetches_total", "outcome" => "ok")
                        .increment(1);
                    *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keys));
                }
                Err(reason) => {
                    tracing::warn!(url = %self.url, %reason, "Supabase JWKS fetch failed; keeping the last good keys");
                    ::metrics::counter!("realtime_jwks_fetches_total", "outcome" => "failed")
                        .increment(1);
                }
            }
        }
        self.refreshing.store(false, Ordering::Release);
        self.refreshed.notify_waiters();
    }

    async fn fetch(&self) -> Result<HashMap<String, VerifyingKey>, String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(parse_set(&set))
    }
}

/// Asymmetric keys only (a symmetric `oct` key in a JWKS would invite HS256 confusion), each
/// bound to the algorithm its type implies.
fn parse_set(set: &JwkSet) -> HashMap<String, VerifyingKey> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            _ => continue,
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid, VerifyingKey { key, algorithm });
            }
            Err(error) => tracing::warn!(%kid, %error, "skipping unusable JWKS key"),
        }
    }
    keys
}
