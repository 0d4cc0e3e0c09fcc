//! Live connections by clientId, so a revocation can reach a user's connections at once.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use protocol::Action;

use crate::auth::{AuthError, Credential, Principal};
use crate::outbox::Outbox;

#[derive(Default)]
pub(crate) struct ClientRegistry {
    by_client: DashMap<String, HashMap<Arc<str>, Entry>>,
}

struct Entry {
    outbox: Arc<Outbox>,
    /// `Some(issued_at)` for token connections (revocable); `None` for key connections.
    token_issued_at: Option<Option<u64>>,
    /// The token's issuer (key name or `SUPABASE_ISSUER`): only its revocations apply.
    issuer: String,
}

impl ClientRegistry {
    /// Records (or updates, after a re-auth) the connection under its identity, if it has one.
    pub(crate) fn register(
        &self,
        connection_id: &Arc<str>,
        principal: &Principal,
        outbox: &Arc<Outbox>,
    ) {
        let Some(client_id) = principal.identity() else {
            return;
        };
        let entry = Entry {
            outbox: outbox.clone(),
            token_issued_at: (principal.via == Credential::Token).then_some(principal.issued_at),
            issuer: principal.key_name.clone(),
        };
        self.by_client
            .entry(client_id.to_owned())
            .or_default()
            .insert(connection_id.clone(), entry);
    }

    /// Every identified live connection's clientId, by connection id.
    pub(crate) fn identities(&self) -> HashMap<Arc<str>, String> {
        let mut identities = HashMap::new();
        for entry in self.by_client.iter() {
            for id in entry.value().keys() {
                identities.insert(id.clone(), entry.key().clone());
            }
        }
        identities
    }

    pub(crate) fn unregister(&self, connection_id: &str, principal: &Principal) {
        let Some(client_id) = principal.identity() else {
            return;
        };
        self.by_client.remove_if_mut(client_id, |_, connections| {
            connections.remove(connection_id);
            crate::shrink::hash_map(connections);
            connections.is_empty()
        });
    }

    /// Gives back the room a flood of identities left (the sweep's).
    pub(crate) fn shrink(&self) {
        crate::shrink::dash_map(&self.by_client);
    }

    /// Ends the client's token connections whose token `issuer` issued before `issued_before`.
    pub(crate) fn revoke(&self, issuer: &str, client_id: &str, issued_before: u64) -> usize {
        let Some(connections) = self.by_client.get(client_id) else {
            return 0;
        };
        let mut ended = 0;
        for entry in connections.values().filter(|entry| entry.issuer == issuer) {
            if let Some(issued_at) = entry.token_issued_at {
                if issued_at.is_none_or(|issued| issued < issued_before) {
                    entry
                        .outbox
                        .end_with(Action::Error, AuthError::Revoked.info());
                    ended += 1;
                }
            }
        }
        ended
    }
}
