//! Taking a connection back: a resume here (from a parked connection, a half-open live one,
//! or, clustered, another node's), a release to another node, and a stopping node's hand-over.

use std::sync::Arc;
use std::time::Duration;

use protocol::{Action, ErrorInfo};

use super::{ConnectionKey, Parked, Sessions};
use crate::backend::SessionStore;
use crate::error::Error;
use crate::outbox::Outbox;

/// How long a takeover waits for the half-open connection it supersedes to wind down.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(3);

impl Sessions {
    /// Takes a connection back for `resume=key`: a parked one, or a live one whose transport the
    /// client has given up on (half-open): that one is ended, parks, and is taken over. The old
    /// key is spent either way. Refusals say why, as Ably does: 80008 for a connection we knew
    /// that cannot be taken back (expired, closed, another identity), 80018 for a key we never
    /// issued.
    pub(crate) async fn resume(
        &self,
        key: &str,
        client_id: Option<&str>,
        store: &dyn SessionStore,
    ) -> Result<Parked, Error> {
        let Some(key) = ConnectionKey::parse(key) else {
            return Err(Error::InvalidConnectionKey);
        };
        let resumed = self.take_back(&key, client_id, store).await;
        if resumed.is_ok() {
            // A later resume with the spent key gets "unable to recover".
            self.ended.remember(&key);
        }
        resumed
    }

    async fn take_back(
        &self,
        key: &ConnectionKey,
        client_id: Option<&str>,
        store: &dyn SessionStore,
    ) -> Result<Parked, Error> {
        if let Some(parked) = self.unpark(key, client_id) {
            return Ok(parked);
        }
        #[cfg(test)]
        if let Some(end_transport) = self.between_looks.lock().unwrap().take() {
            end_transport();
        }
        let Some(old) = self.live_outbox(key) else {
            // Its transport may have ended since the first look: it parks before it leaves
            // `live`, so gone from there means parked by now (or not ours to take).
            if let Some(parked) = self.unpark(key, client_id) {
                return Ok(parked);
            }
            // Clustered: another node may hold it (or have held it, and died).
            let taken = store.take(key, client_id).await;
            if let Some(parked) = taken.map_err(ErrorInfo::from)? {
                return Ok(parked);
            }
            return Err(self.refusal(key));
        };
        let why = "superseded by a resumed transport";
        let taken = self.take_over(key, &old, why, || self.unpark(key, client_id));
        taken.await.ok_or_else(|| self.refusal(key))
    }

    fn refusal(&self, key: &ConnectionKey) -> Error {
        if self.parked.contains_key(key) || self.ended.contains(key) {
            Error::NotRecoverable
        } else {
            Error::InvalidConnectionKey
        }
    }

    /// Another node resumes `key`: hand the connection over (ending its transport here if it
    /// is still up) and mark its record released.
    pub(crate) async fn release(&self, key: ConnectionKey, store: &dyn SessionStore) {
        let take = || self.parked.remove(&key).map(|(_, parked)| parked);
        let taken = match self.live_outbox(&key) {
            None => take(),
            Some(old) => {
                self.take_over(&key, &old, "resumed on another node", take)
                    .await
            }
        };
        let Some(parked) = taken else {
            // Not here (any more): no record should send resumes our way.
            store.forget(&key);
            return;
        };
        self.ended.remember(&key);
        store.release(&key, &parked);
        if parked.presence_grace.is_some() {
            // Its members are the resuming node's now.
            store.forget_grace(&parked.id);
        }
    }

    /// A stopping node hands every connection it parked to whichever node its client resumes
    /// on, without that node waiting for this one's lease to lapse. Their members stay (the
    /// resuming node adopts them; once the lease lapses the rest are orphaned and leave after
    /// their grace).
    pub(crate) async fn hand_over(&self, store: &dyn SessionStore) {
        if !store.shared() {
            return;
        }
        let keys: Vec<ConnectionKey> = self.parked.iter().map(|e| e.key().clone()).collect();
        for key in keys {
            if let Some((_, parked)) = self.parked.remove(&key) {
                store.release(&key, &parked);
            }
        }
        store.flush().await;
    }

    fn live_outbox(&self, key: &ConnectionKey) -> Option<Arc<Outbox>> {
        self.live.get(key).map(|outbox| outbox.clone())
    }

    /// Ends the live transport `old` (its client gave up on it) and waits, bounded, until
    /// `take` finds it parked; None at once if it ended instead (its client had closed it).
    async fn take_over(
        &self,
        key: &ConnectionKey,
        old: &Outbox,
        why: &'static str,
        take: impl Fn() -> Option<Parked>,
    ) -> Option<Parked> {
        old.end_with(Action::Disconnected, Error::TakenOver { why }.info());
        let deadline = tokio::time::Instant::now() + TAKEOVER_TIMEOUT;
        loop {
            let parked = self.parked_notify.notified();
            if let Some(found) = take() {
                return Some(found);
            }
            if self.ended.contains(key) {
                return None;
            }
            if tokio::time::timeout_at(deadline, parked).await.is_err() {
                return None;
            }
        }
    }
}
