//! Token lifetime on a live connection: AUTH before expiry, and the client's AUTH answer.

use protocol::ProtocolMessage;
use std::ops::ControlFlow;
use tokio::time::{Duration, Instant};

use super::{Connection, TokenTimers};
use crate::auth::AuthError;
use crate::error::Error;

impl Connection {
    /// Token connections get asked to renew (AUTH) `token_renew_lead` before expiry, as Ably
    /// does; a token with less than that left gets no AUTH and simply expires into
    /// DISCONNECTED 40142, after which the client renews and resumes.
    pub(super) fn schedule_token_timers(&mut self) {
        self.token_timers = self.principal.expires_at.map(|expires_ms| {
            let left = Duration::from_millis(expires_ms.saturating_sub(protocol::now_ms()));
            let lead = self.gateway.config().timing.token_renew_lead;
            let now = Instant::now();
            TokenTimers {
                renew_at: now + left.saturating_sub(lead),
                // Too late to ask: let it expire.
                renew_asked: left <= lead,
                expires_at: now + left,
            }
        });
    }

    pub(super) async fn on_auth(&mut self, message: ProtocolMessage) -> ControlFlow<()> {
        let Some(token) = message.auth.and_then(|auth| auth.access_token) else {
            return self.fatal(Error::NoAccessToken);
        };
        let verified = self
            .gateway
            .auth()
            .verify_token(&token, protocol::now_ms())
            .await
            .and_then(|principal| principal.with_client_id(self.principal.identity()))
            .and_then(|principal| {
                // The identity of a live connection never changes.
                if principal.client_id == self.principal.client_id {
                    Ok(principal)
                } else {
                    Err(AuthError::ClientIdMismatch)
                }
            });
        match verified {
            Ok(principal) => {
                self.principal = principal;
                self.gateway
                    .sessions()
                    .clients()
                    .register(&self.id, &self.principal, &self.outbox);
                self.schedule_token_timers();
                self.apply_capability();
                // Same connectionId and key: ably-js does not take a new key from this reply.
                self.outbox.reply(&self.connected());
                ControlFlow::Continue(())
            }
            Err(error) => {
                tracing::info!(connection_id = %self.id, code = error.code().code(), reason = %error, "re-auth refused");
                // Our trouble (keys unreachable) is a retry for the client, not a failure.
                self.outbox.reply(&super::refusal(error.into()));
                ControlFlow::Break(())
            }
        }
    }
}
