//! What a resumable connection leaves behind: the record a resume (here or, clustered, on another
//! node) needs, and what a node must write back to a store that lost it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    pub records: Vec<(String, Parked, bool)>,
    pub members: Vec<(String, Vec<protocol::PresenceMessage>)>,
}
