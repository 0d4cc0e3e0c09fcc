//! Auth state across the cluster: where a token request's nonce is claimed and where a
//! revocation is stored, announced and enforced, through the back-end's `SharedAuth`: embedded,
//! both stay in this process's memory; with `--redis` they go through `backend/redis/auth.rs`,
//! and every node keeps a copy of the revocations fed by announcements and reloaded whenever
//! its pub/sub link comes up.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Auth, AuthError, Principal, Revocation, TokenDetails, TokenRequest};
use crate::backend::BackendError;
use crate::sessions::Sessions;
use crate::wiring::Wiring;

/// The shared state did not answer: refused, never accepted unchecked.
fn unavailable(_: BackendError) -> AuthError {
    AuthError::StateUnavailable
}

/// Token requests and revocations; cheap to clone (a revocation that applies later takes one).
#[derive(Clone)]
pub struct Tokens {
    auth: Arc<Auth>,
    /// Live connections by clientId, ended by a revocation.
    sessions: Arc<Sessions>,
    wiring: Arc<Wiring>,
    /// Keys whose `revokeTokens` also reaches Supabase users (`--supabase-revoke-keys`).
    supabase_revoke_keys: Arc<[String]>,
}

impl Tokens {
    pub(crate) fn new(
        auth: Arc<Auth>,
        sessions: Arc<Sessions>,
        wiring: Arc<Wiring>,
        supabase_revoke_keys: &[String],
    ) -> Tokens {
        Tokens {
            auth,
            sessions,
            wiring,
            supabase_revoke_keys: supabase_revoke_keys.into(),
        }
    }

    /// `POST /keys/{keyName}/requestToken`: the request checked, then its nonce claimed (in Redis
    /// when clustered, so it is single-use on every node; Redis unreachable refuses with 50003).
    pub async fn request_token(
        &self,
        key_name: &str,
        request: &TokenRequest,
        basic: Option<&Principal>,
        now_ms: u64,
    ) -> Result<TokenDetails, AuthError> {
        let prepared = self.auth.prepare_token(key_name, request, basic, now_ms)?;
        if let Some(claim) = &prepared.nonce {
            let shared = self.wiring.backend().auth.clone();
            let claimed = shared
                .claim_nonce(&self.auth, claim, now_ms)
                .await
                .map_err(unavailable)?;
            if !claimed {
                return Err(AuthError::NonceReused);
            }
        }
        Ok(prepared.details)
    }

    /// Whether `key_name` may revoke Supabase users' tokens (`--supabase-revoke-keys`).
    pub fn may_revoke_supabase(&self, key_name: &str) -> bool {
        self.supabase_revoke_keys
            .iter()
            .any(|allowed| allowed == key_name)
    }

    /// Ably's `revokeTokens`: stored and announced (clustered; Redis unreachable: nothing is
    /// stored and the caller gets 50003), and applied here at once (or at `applies_at`).
    pub async fn revoke_tokens(&self, revocations: Vec<Revocation>) -> Result<(), AuthError> {
        let shared = self.wiring.backend().auth.clone();
        shared
            .store_revocations(&revocations, protocol::now_ms())
            .await
            .map_err(unavailable)?;
        for revocation in revocations {
            self.apply_revocation(revocation);
        }
        Ok(())
    }

    /// Applies a revocation to this node: tokens it covers are refused and live connections
    /// holding one end with 40141; one that applies later (`allowReauthMargin`) is applied then.
    /// Idempotent, so hearing one's own announcement or reloading the set repeats nothing.
    pub(crate) fn apply_revocation(&self, revocation: Revocation) {
        let now = protocol::now_ms();
        if revocation.applies_at > now {
            let tokens = self.clone();
            let wait = Duration::from_millis(revocation.applies_at - now);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                tokens.enforce(&revocation);
            });
        } else {
            self.enforce(&revocation);
        }
    }

    fn enforce(&self, revocation: &Revocation) {
        let Revocation {
            issuer,
            client_id,
            issued_before,
            ..
        } = revocation;
        self.auth.revoke_client(issuer, client_id, *issued_before);
        let ended = self
            .sessions
            .clients()
            .revoke(issuer, client_id, *issued_before);
        if ended > 0 {
            tracing::info!(%issuer, %client_id, ended, "tokens revoked");
        }
    }

    /// Loads every revocation still in force from Redis (at start and on each pub/sub link
    /// reconnect, covering announcements this node missed). A failed load is logged; the next
    /// link reconnect (a Redis that fails commands soon drops the link too) loads again.
    pub(crate) async fn reload_revocations(self) {
        let shared = self.wiring.backend().auth.clone();
        match shared.load_revocations(protocol::now_ms()).await {
            Ok(revocations) => {
                for revocation in revocations {
                    self.apply_revocation(revocation);
                }
            }
            Err(_) => tracing::warn!("revocations not reloaded from Redis"),
        }
    }

    /// `reload_revocations` before serving: a node that cannot read them does not start.
    pub(crate) async fn load_revocations_at_start(&self) -> Result<(), BackendError> {
        let shared = self.wiring.backend().auth.clone();
        let revocations = shared
            .load_revocations(protocol::now_ms())
            .await
            .map_err(|error| BackendError::Start {
                what: "Redis: cannot load revocations",
                source: Box::new(error),
            })?;
        for revocation in revocations {
            self.apply_revocation(revocation);
        }
        Ok(())
    }
}
