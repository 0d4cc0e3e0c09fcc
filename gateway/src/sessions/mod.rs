//! The lifecycle state of this node's connections: live ones by key (so a resume can take over
//! a transport the server still believes alive) and by clientId (so a revocation reaches them),
//! parked ones a client may resume, and the keys of ended ones.
//!
//! What is kept for a parked connection is small: its id and key, its identity, and where it
//! had presence. Messages are not queued for it: on resume the client re-attaches each channel
//! with the last `channelSerial` it saw, and the hub replays from the channel's log. That is
//! what lets any node with the log serve a resume.
//!
//! `park.rs` parks and expires, `takeover.rs` resumes and hands over, `ended.rs` remembers
//! spent keys, `clients.rs` indexes live connections by clientId. `Sessions` never sees the
//! gateway: callers pass the back-end's `SessionStore`, the timing and the hub.

mod clients;
mod ended;
mod park;
mod takeover;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Notify;

pub(crate) use crate::backend::session::{ConnectionKey, HeldHere, Parked};
use crate::backend::SessionStore;
use crate::hub::Hub;
use crate::outbox::Outbox;
pub(crate) use clients::ClientRegistry;

#[derive(Default)]
pub(crate) struct Sessions {
    /// Dropped connections a client may resume.
    parked: DashMap<ConnectionKey, Parked>,
    /// Woken whenever a connection is parked or ends.
    parked_notify: Notify,
    /// Live connections, so a resume can take over a transport the server still believes
    /// alive (the client already gave up on it).
    live: DashMap<ConnectionKey, Arc<Outbox>>,
    ended: ended::EndedKeys,
    clients: ClientRegistry,
    /// Tests end a transport here, between a resume's look at `parked` and at `live`.
    #[cfg(test)]
    between_looks: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Sessions {
    /// Live connections by clientId.
    pub(crate) fn clients(&self) -> &ClientRegistry {
        &self.clients
    }

    pub(crate) fn register_live(&self, key: &ConnectionKey, outbox: &Arc<Outbox>) {
        self.live.insert(key.clone(), outbox.clone());
    }

    /// Forgets this transport under its key, unless a resumed one has already taken the key.
    pub(crate) fn unregister_live(&self, key: &ConnectionKey, outbox: &Arc<Outbox>) {
        self.live
            .remove_if(key, |_, live| Arc::ptr_eq(live, outbox));
    }

    /// The connection id behind a live connection's key (as a client wrote it).
    pub(crate) fn live_connection_id(&self, key: &str) -> Option<String> {
        let key = ConnectionKey::parse(key)?;
        self.live.contains_key(&key).then(|| key.id().to_owned())
    }

    /// Keys of the live connections (whose records must not expire while they live).
    pub(crate) fn live_keys(&self) -> Vec<ConnectionKey> {
        self.live.iter().map(|entry| entry.key().clone()).collect()
    }

    /// A connection closed (or expired unresumed): nothing is kept for a resume, its key is
    /// remembered as ended and its record (and its own presence grace, if it had one)
    /// forgotten.
    pub(crate) fn end(&self, key: &ConnectionKey, own_grace: bool, store: &dyn SessionStore) {
        self.ended.remember(key);
        // A takeover waiting for it to park hears that it will not.
        self.parked_notify.notify_waiters();
        store.forget(key);
        if own_grace {
            store.forget_grace(key.id());
        }
    }

    /// Old ended keys go; maps a flood of connections grew give back what they no longer hold.
    pub(crate) fn sweep(&self, now_ms: u64) {
        self.clients.shrink();
        crate::shrink::dash_map(&self.parked);
        crate::shrink::dash_map(&self.live);
        self.ended.sweep(now_ms);
    }

    /// Gathers `HeldHere` from this state (nothing per connection is kept for it): ids from
    /// the keys, identities from the clients, presence from the hub.
    pub(crate) fn held_here(&self, hub: &Hub) -> HeldHere {
        let identities = self.clients.identities();
        let mut records: Vec<(ConnectionKey, Parked, bool)> = Vec::new();
        let mut ids: Vec<Arc<str>> = Vec::new();
        for entry in self.parked.iter() {
            let parked = entry.value();
            if !parked.members_left() {
                ids.push(parked.id.clone());
            }
            records.push((entry.key().clone(), parked.clone(), true));
        }
        let live: Vec<(ConnectionKey, Arc<str>)> = self
            .live
            .iter()
            .map(|entry| (entry.key().clone(), Arc::from(entry.key().id())))
            .collect();
        ids.extend(live.iter().map(|(_, id)| id.clone()));
        let wanted: HashSet<&str> = ids.iter().map(|id| &**id).collect();
        let members = hub.members_held_by(&wanted);
        let mut present: HashMap<&str, Vec<String>> = HashMap::new();
        for (channel, held) in &members {
            for member in held {
                if let Some(id) = member.connection_id.as_deref() {
                    present.entry(id).or_default().push(channel.clone());
                }
            }
        }
        for (key, id) in live {
            let mut present_on = present.get(&*id).cloned().unwrap_or_default();
            present_on.dedup();
            let parked = Parked {
                client_id: identities.get(&id).cloned(),
                id,
                present_on,
                members_left: Default::default(),
                presence_grace: None,
            };
            records.push((key, parked, false));
        }
        HeldHere { records, members }
    }
}
