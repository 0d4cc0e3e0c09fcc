//! Parking a dropped connection: resumable for `connection_state_ttl`, its presence members
//! kept for the presence grace.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{ConnectionKey, Parked, Sessions};
use crate::backend::SessionStore;
use crate::config::Timing;

impl Sessions {
    /// Keeps a dropped connection resumable for `connection_state_ttl`; after `presence_grace`
    /// (or its own) its members leave, `leave(channel, connection id)` on each channel, unless
    /// it came back first.
    pub(crate) fn park(
        self: &Arc<Self>,
        key: ConnectionKey,
        parked: Parked,
        store: Arc<dyn SessionStore>,
        timing: &Timing,
        leave: impl Fn(&str, &str) + Send + 'static,
    ) {
        let grace = parked
            .presence_grace
            .unwrap_or(timing.presence_grace)
            .min(timing.connection_state_ttl);
        let rest = timing.connection_state_ttl.saturating_sub(grace);
        let id = parked.id.clone();
        let present_on = parked.present_on.clone();
        let members_left = parked.members_left.clone();
        store.record(&key, &parked, true);
        self.parked.insert(key.clone(), parked);
        self.parked_notify.notify_waiters();
        let sessions = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            // Holding the entry while marking and leaving: a resume (which removes the entry)
            // comes either before, keeping the members, or after, seeing `members_left` and
            // re-syncing, never in between.
            if let Some(parked) = sessions.parked.get(&key).filter(|p| p.id == id) {
                members_left.store(true, Ordering::Release);
                for channel in &present_on {
                    leave(channel, &id);
                }
                store.record(&key, &parked, true);
                drop(parked);
            }
            tokio::time::sleep(rest).await;
            if let Some((_, parked)) = sessions.parked.remove_if(&key, |_, p| p.id == id) {
                sessions.end(&key, parked.presence_grace.is_some(), &*store);
            }
        });
    }

    /// Takes a parked connection back, if the key is known and still within its TTL and the
    /// identity matches; a mismatched claim leaves it parked for its owner.
    pub(super) fn unpark(&self, key: &ConnectionKey, client_id: Option<&str>) -> Option<Parked> {
        self.parked
            .remove_if(key, |_, parked| parked.client_id.as_deref() == client_id)
            .map(|(_, parked)| parked)
    }
}
