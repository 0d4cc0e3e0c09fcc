//! Connections kept after a transport drop, so the client can resume them.
//!
//! What is kept is small: the connection's id and key, its identity, and where it had presence.
//! Messages are not queued for it: on resume the client re-attaches each channel with the last
//! `channelSerial` it saw, and the hub replays from the channel's log. That is what lets any node
//! with the log serve a resume.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::Gateway;

pub(crate) struct Parked {
    pub id: Arc<str>,
    pub client_id: Option<String>,
    /// Base names of channels where the connection has presence members.
    pub present_on: Vec<String>,
    /// Set once the presence grace passed and those members left.
    pub members_left: Arc<AtomicBool>,
}

impl Gateway {
    /// Keeps a dropped connection resumable for `connection_state_ttl`; its presence members
    /// leave after `presence_grace` unless it comes back first.
    pub(crate) fn park(&self, key: String, parked: Parked) {
        let timing = self.config().timing.clone();
        let id = parked.id.clone();
        let present_on = parked.present_on.clone();
        let members_left = parked.members_left.clone();
        self.inner.parked.insert(key.clone(), parked);
        let gateway = self.clone();
        tokio::spawn(async move {
            let still_parked =
                |gateway: &Gateway| gateway.inner.parked.get(&key).is_some_and(|p| p.id == id);
            tokio::time::sleep(timing.presence_grace).await;
            if still_parked(&gateway) {
                members_left.store(true, Ordering::Release);
                for channel in &present_on {
                    gateway.hub().leave_all(channel, &id);
                }
            }
            let rest = timing
                .connection_state_ttl
                .saturating_sub(timing.presence_grace);
            tokio::time::sleep(rest).await;
            gateway.inner.parked.remove_if(&key, |_, p| p.id == id);
        });
    }

    /// Takes a parked connection back, if the key is known and still within its TTL and the
    /// identity matches; a mismatched claim leaves it parked for its owner.
    pub(crate) fn unpark(&self, key: &str, client_id: Option<&str>) -> Option<Parked> {
        self.inner
            .parked
            .remove_if(key, |_, parked| parked.client_id.as_deref() == client_id)
            .map(|(_, parked)| parked)
    }

    pub(crate) fn members_left(parked: &Parked) -> bool {
        parked.members_left.load(Ordering::Acquire)
    }
}
