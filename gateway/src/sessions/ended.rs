//! Keys of connections that ended (closed, spent by a resume, or expired unresumed),
//! remembered for a while so a late resume gets "unable to recover" (80008) rather than
//! "invalid key" (80018).

use dashmap::DashMap;

use super::ConnectionKey;

/// How long an ended connection's key is remembered.
const ENDED_KEYS_TTL_MS: u64 = 10 * 60 * 1000;

/// Only a 64-bit print of each key is kept: 15,000 closed connections cost 16 bytes each for
/// the ten minutes, not a string each. Two keys sharing a print (about 1 in 2^64) would only
/// swap which refusal code a forged key gets.
#[derive(Default)]
pub(super) struct EndedKeys {
    /// Print -> when it ended (ms).
    ended: DashMap<u64, u64>,
    /// Seeded per process.
    prints: std::hash::RandomState,
}

impl EndedKeys {
    pub(super) fn remember(&self, key: &ConnectionKey) {
        self.ended.insert(self.print(key), protocol::now_ms());
    }

    pub(super) fn contains(&self, key: &ConnectionKey) -> bool {
        self.ended.contains_key(&self.print(key))
    }

    fn print(&self, key: &ConnectionKey) -> u64 {
        std::hash::BuildHasher::hash_one(&self.prints, key.as_str())
    }

    pub(super) fn sweep(&self, now_ms: u64) {
        let before_ms = now_ms.saturating_sub(ENDED_KEYS_TTL_MS);
        self.ended.retain(|_, ended| *ended >= before_ms);
        crate::shrink::dash_map(&self.ended);
    }
}
