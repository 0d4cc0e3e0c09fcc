//! Auth state every node shares through Redis: token-request nonces (`rt:nonce:<keyName>:<nonce>`,
//! `SET NX` with the request's remaining window as TTL) and revocations (`rt:revocations`, a sorted
//! set of `Revocation`s scored by when they apply, pruned past the longest token lifetime and
//! expiring with it). A revocation is announced on `AUTH_TOPIC`, heard on every node's pub/sub
//! link; each node also reloads the whole set whenever its link comes up, so a restart or a
//! missed announcement leaves no node accepting a revoked token.

use super::RedisBackend;
use crate::auth::{Auth, NonceClaim, Revocation, REVOCATION_TTL_MS};
use crate::backend::{BackendError, Reply, Result, SharedAuth};

/// Where revocations are announced (plain pub/sub: cluster-wide on Redis Cluster too).
pub(super) const AUTH_TOPIC: &str = "rt:auth";
const REVOCATIONS: &str = "rt:revocations";

/// Adds revocations, prunes those past the longest token lifetime, keeps the set expiring and
/// announces the batch. KEYS: the set. ARGV: prune below (ms), set TTL (ms), topic, payload,
/// then score/member pairs.
const REVOKE_SCRIPT: &str = include_str!("scripts/revoke.lua");

fn unavailable(error: redis::RedisError) -> BackendError {
    super::unavailable("auth state", "shared auth state", "try again")(error)
}

/// An announcement's payload: the revocations made in one request.
pub(super) fn parse_announcement(payload: &str) -> Option<Vec<Revocation>> {
    serde_json::from_str(payload).ok()
}

impl SharedAuth for RedisBackend {
    fn claim_nonce<'a>(
        &'a self,
        _local: &'a Auth,
        claim: &'a NonceClaim,
        now_ms: u64,
    ) -> Reply<'a, bool> {
        Box::pin(self.set_nonce(claim, now_ms))
    }

    fn store_revocations<'a>(
        &'a self,
        revocations: &'a [Revocation],
        now_ms: u64,
    ) -> Reply<'a, ()> {
        Box::pin(self.add_revocations(revocations, now_ms))
    }

    fn load_revocations(&self, now_ms: u64) -> Reply<'_, Vec<Revocation>> {
        Box::pin(self.read_revocations(now_ms))
    }
}

impl RedisBackend {
    /// Claims a token request's nonce cluster-wide: once per key and nonce while the request is
    /// within its timestamp window. Redis unreachable: refused (never accepted unchecked).
    async fn set_nonce(&self, claim: &NonceClaim, now_ms: u64) -> Result<bool> {
        let ttl = claim.forget_at.saturating_sub(now_ms).max(1);
        let set: Option<String> = self
            .commands
            .query(
                redis::cmd("SET")
                    .arg(format!("rt:nonce:{}:{}", claim.key_name, claim.nonce))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .to_owned(),
            )
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    /// Stores revocations and announces them to every node (this one included).
    async fn add_revocations(&self, revocations: &[Revocation], now_ms: u64) -> Result<()> {
        let payload = serde_json::to_string(revocations).expect("plain struct");
        let mut args = vec![
            now_ms.saturating_sub(REVOCATION_TTL_MS).to_string(),
            // Kept as long as the newest may still apply to a token.
            (REVOCATION_TTL_MS + 60_000).to_string(),
            AUTH_TOPIC.to_owned(),
            payload,
        ];
        for revocation in revocations {
            args.push(revocation.applies_at.to_string());
            args.push(serde_json::to_string(revocation).expect("plain struct"));
        }
        self.commands
            .invoke::<i64>(
                redis::Script::new(REVOKE_SCRIPT),
                vec![REVOCATIONS.to_owned()],
                args,
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Every revocation that may still apply to a live token.
    async fn read_revocations(&self, now_ms: u64) -> Result<Vec<Revocation>> {
        let members: Vec<String> = self
            .commands
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(REVOCATIONS)
                    .arg(now_ms.saturating_sub(REVOCATION_TTL_MS))
                    .arg("+inf")
                    .to_owned(),
            )
            .await
            .map_err(unavailable)?;
        Ok(members
            .iter()
            .filter_map(|member| serde_json::from_str(member).ok())
            .collect())
    }
}
