//! What a resumable connection leaves behind: the record a resume (here or, clustered, on another
//! node) needs, and what a node must write back to a store that lost it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::distributions::{Alphanumeric, DistString};

/// A connection key, `id!secret`: the connection id, `!`, and a secret only its client learns
/// (in CONNECTED). Built once per transport, parsed once where a client (or another node) hands
/// one back; its text is the wire form, unchanged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct ConnectionKey(Arc<str>);

impl ConnectionKey {
    /// A fresh key for connection `id`.
    pub(crate) fn new(id: &str) -> ConnectionKey {
        let secret = Alphanumeric.sample_string(&mut rand::thread_rng(), 16);
        ConnectionKey(format!("{id}!{secret}").into())
    }

    /// `None` unless `key` is `id!secret` with both parts non-empty (and one `!`).
    pub(crate) fn parse(key: &str) -> Option<ConnectionKey> {
        let (id, secret) = key.split_once('!')?;
        let well_formed = !id.is_empty() && !secret.is_empty() && !secret.contains('!');
        well_formed.then(|| ConnectionKey(key.into()))
    }

    /// The connection id part.
    pub(crate) fn id(&self) -> &str {
        self.0.split_once('!').map_or(&self.0, |(id, _)| id)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ConnectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Clones share `members_left`.
#[derive(Clone)]
pub(crate) struct Parked {
    pub id: Arc<str>,
    pub client_id: Option<String>,
    /// Base names of channels where the connection has presence members.
    pub present_on: Vec<String>,
    /// Set once the presence grace passed and those members left.
    pub members_left: Arc<AtomicBool>,
    /// The client's `remainPresentFor`, overriding `Timing::presence_grace`.
    pub presence_grace: Option<std::time::Duration>,
}

impl Parked {
    /// Whether the presence grace passed and the connection's members left.
    pub(crate) fn members_left(&self) -> bool {
        self.members_left.load(Ordering::Acquire)
    }
}

/// What this node holds that Redis must also hold: its connections' resume records (live and
/// parked) and their presence members, per channel.
pub(crate) struct HeldHere {
    pub records: Vec<(ConnectionKey, Parked, bool)>,
    pub members: Vec<(String, Vec<protocol::PresenceMessage>)>,
}
