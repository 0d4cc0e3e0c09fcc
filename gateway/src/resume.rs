//! Connections kept after a transport drop, so the client can resume them.
//!
//! What is kept is small: the connection's id and key, its identity, and where it had presence.
//! Messages are not queued for it: on resume the client re-attaches each channel with the last
//! `channelSerial` it saw, and the hub replays from the channel's log. That is what lets any node
//! with the log serve a resume.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use protocol::{ErrorCode, ErrorInfo};

pub(crate) use crate::backend::session::{HeldHere, Parked};
use crate::Gateway;

/// How long a resume waits for the half-open connection it supersedes to wind down.
const TAKEOVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl Gateway {
    /// Keeps a dropped connection resumable for `connection_state_ttl`; its presence members
    /// leave after `presence_grace` unless it comes back first.
    pub(crate) fn park(&self, key: String, parked: Parked) {
        let timing = self.config().timing.clone();
        let grace = parked
            .presence_grace
            .unwrap_or(timing.presence_grace)
            .min(timing.connection_state_ttl);
        let id = parked.id.clone();
        let present_on = parked.present_on.clone();
        let members_left = parked.members_left.clone();
        self.sessions().record(&key, &parked, true);
        self.inner.parked.insert(key.clone(), parked);
        self.inner.parked_notify.notify_waiters();
        let gateway = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            // Holding the entry while marking and leaving: a resume (which removes the entry)
            // comes either before, keeping the members, or after, seeing `members_left` and
            // re-syncing, never in between.
            if let Some(parked) = gateway.inner.parked.get(&key).filter(|p| p.id == id) {
                members_left.store(true, Ordering::Release);
                for channel in &present_on {
                    gateway.leave_presence(channel, &id);
                }
                gateway.sessions().record(&key, &parked, true);
                drop(parked);
            }
            let rest = timing.connection_state_ttl.saturating_sub(grace);
            tokio::time::sleep(rest).await;
            if let Some((_, parked)) = gateway.inner.parked.remove_if(&key, |_, p| p.id == id) {
                gateway.remember_ended(&key);
                gateway.sessions().forget(&key);
                if parked.presence_grace.is_some() {
                    gateway.sessions().forget_grace(&parked.id);
                }
            }
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

    /// Takes a connection back for `resume=key`: a parked one, or a live one whose transport the
    /// client has given up on (half-open): that one is ended, parks, and is taken over.
    /// Refusals say why, as Ably does: 80008 for a connection we knew that cannot be taken
    /// back (expired, closed, another identity), 80018 for a key we never issued.
    pub(crate) async fn resume(
        &self,
        key: &str,
        client_id: Option<&str>,
    ) -> Result<Parked, ErrorInfo> {
        let refusal = |gateway: &Gateway| {
            if gateway.inner.parked.contains_key(key) || gateway.has_ended(key) {
                ErrorCode::UnableToRecover.info(
                    "unable to recover the connection (expired, closed or not yours); this is a new connection",
                )
            } else {
                ErrorCode::InvalidConnectionKey
                    .info("invalid connection key; this is a new connection")
            }
        };
        if let Some(parked) = self.unpark(key, client_id) {
            return Ok(parked);
        }
        let Some(old) = self.inner.live_keys.get(key).map(|outbox| outbox.clone()) else {
            // Clustered: another node may hold it (or have held it, and died).
            if let Some(parked) = self.sessions().take(key, client_id).await? {
                return Ok(parked);
            }
            return Err(refusal(self));
        };
        old.end_with(
            protocol::Action::Disconnected,
            protocol::ErrorCode::Disconnected.info("superseded by a resumed transport"),
        );
        let deadline = tokio::time::Instant::now() + TAKEOVER_TIMEOUT;
        loop {
            let parked = self.inner.parked_notify.notified();
            if let Some(found) = self.unpark(key, client_id) {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, parked).await.is_err() {
                return Err(refusal(self));
            }
        }
    }

    /// Another node resumes `key`: hand the connection over (ending its transport here if it
    /// is still up) and mark its record released.
    pub(crate) async fn release(self, key: String) {
        let taken = match self.inner.live_keys.get(&key).map(|outbox| outbox.clone()) {
            None => self.inner.parked.remove(&key).map(|(_, parked)| parked),
            Some(old) => {
                old.end_with(
                    protocol::Action::Disconnected,
                    ErrorCode::Disconnected.info("resumed on another node"),
                );
                let deadline = tokio::time::Instant::now() + TAKEOVER_TIMEOUT;
                loop {
                    let parked = self.inner.parked_notify.notified();
                    if let Some((_, found)) = self.inner.parked.remove(&key) {
                        break Some(found);
                    }
                    if tokio::time::timeout_at(deadline, parked).await.is_err() {
                        break None;
                    }
                }
            }
        };
        let sessions = self.sessions();
        let Some(parked) = taken else {
            // Not here (any more): no record should send resumes our way.
            sessions.forget(&key);
            return;
        };
        self.remember_ended(&key);
        sessions.release(&key, &parked);
        if parked.presence_grace.is_some() {
            // Its members are the resuming node's now.
            sessions.forget_grace(&parked.id);
        }
    }

    /// A stopping node hands every connection it parked to whichever node its client resumes
    /// on, without that node waiting for this one's lease to lapse. Their members stay (the
    /// resuming node adopts them; once the lease lapses the rest are orphaned and leave after
    /// their grace).
    pub async fn hand_over_parked(&self) {
        let sessions = self.sessions();
        if !sessions.shared() {
            return;
        }
        let keys: Vec<String> = self.inner.parked.iter().map(|e| e.key().clone()).collect();
        for key in keys {
            if let Some((_, parked)) = self.inner.parked.remove(&key) {
                sessions.release(&key, &parked);
            }
        }
        sessions.flush().await;
    }

    /// The connection id behind a live connection's key.
    pub(crate) fn connection_id_for_key(&self, key: &str) -> Option<String> {
        self.inner
            .live_keys
            .contains_key(key)
            .then(|| key.split('!').next().unwrap_or_default().to_owned())
    }

    pub(crate) fn register_live(&self, key: &str, outbox: &Arc<crate::outbox::Outbox>) {
        self.inner.live_keys.insert(key.to_owned(), outbox.clone());
    }

    /// Forgets this transport under its key, unless a resumed one has already taken the key.
    pub(crate) fn unregister_live(&self, key: &str, outbox: &Arc<crate::outbox::Outbox>) {
        self.inner
            .live_keys
            .remove_if(key, |_, live| Arc::ptr_eq(live, outbox));
    }

    /// Keys of connections that ended (closed, or expired unresumed), remembered for a while so a
    /// late resume gets "unable to recover" rather than "invalid key".
    /// Only a 64-bit print of each key is kept: 15,000 closed connections cost 16 bytes each
    /// for the ten minutes, not a string each. Two keys sharing a print (about 1 in 2^64) would
    /// only swap which refusal code a forged key gets.
    pub(crate) fn remember_ended(&self, key: &str) {
        let print = self.key_print(key);
        self.inner.ended_keys.insert(print, protocol::now_ms());
    }

    pub(crate) fn has_ended(&self, key: &str) -> bool {
        self.inner.ended_keys.contains_key(&self.key_print(key))
    }

    fn key_print(&self, key: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.inner.key_prints, key)
    }

    pub(crate) fn forget_ended_before(&self, before_ms: u64) {
        self.inner.ended_keys.retain(|_, ended| *ended >= before_ms);
    }
}

/// Gathers `HeldHere` from the node's own state (nothing per connection is kept for it): ids
/// from the connection keys (`id!secret`), identities from the registry, presence from the hub.
pub(crate) fn held_here(gateway: &Gateway) -> HeldHere {
    let inner = &gateway.inner;
    let identities = inner.clients.identities();
    let mut records: Vec<(String, Parked, bool)> = Vec::new();
    let mut ids: Vec<Arc<str>> = Vec::new();
    for entry in inner.parked.iter() {
        let parked = entry.value();
        if !parked.members_left() {
            ids.push(parked.id.clone());
        }
        records.push((
            entry.key().clone(),
            Parked {
                id: parked.id.clone(),
                client_id: parked.client_id.clone(),
                present_on: parked.present_on.clone(),
                members_left: parked.members_left.clone(),
                presence_grace: parked.presence_grace,
            },
            true,
        ));
    }
    let live: Vec<(String, Arc<str>)> = inner
        .live_keys
        .iter()
        .filter_map(|entry| {
            let (id, _) = entry.key().split_once('!')?;
            Some((entry.key().clone(), Arc::from(id)))
        })
        .collect();
    ids.extend(live.iter().map(|(_, id)| id.clone()));
    let wanted: std::collections::HashSet<&str> = ids.iter().map(|id| &**id).collect();
    let members = inner.hub.members_held_by(&wanted);
    let mut present: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for (channel, held) in &members {
        for member in held {
            if let Some(id) = member.connection_id.as_deref() {
                present.entry(id).or_default().push(channel.clone());
            }
        }
    }
    for (key, id) in &live {
        let mut present_on = present.get(&**id).cloned().unwrap_or_default();
        present_on.dedup();
        records.push((
            key.clone(),
            Parked {
                id: id.clone(),
                client_id: identities.get(id).cloned(),
                present_on,
                members_left: Default::default(),
                presence_grace: None,
            },
            false,
        ));
    }
    HeldHere { records, members }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::PresenceMessage;

    use super::*;
    use crate::Config;

    fn gateway(grace: Duration, ttl: Duration) -> Gateway {
        let mut config = Config::default();
        config.timing.presence_grace = grace;
        config.timing.connection_state_ttl = ttl;
        Gateway::new(config)
    }

    fn enter(gateway: &Gateway, channel: &str, client_id: &str, connection_id: &str) {
        gateway
            .hub()
            .presence(
                channel,
                vec![PresenceMessage {
                    id: Some(format!("{connection_id}:0:0")),
                    action: 2,
                    client_id: Some(client_id.into()),
                    connection_id: Some(connection_id.into()),
                    timestamp: Some(protocol::now_ms()),
                    ..Default::default()
                }],
            )
            .unwrap();
    }

    /// Parks alice's connection `id` with presence on `channel` (her own grace, if any).
    fn park_with(gateway: &Gateway, key: &str, id: &str, channel: &str, grace: Option<Duration>) {
        gateway.park(
            key.into(),
            Parked {
                id: id.into(),
                client_id: Some("alice".into()),
                present_on: vec![channel.into()],
                members_left: Default::default(),
                presence_grace: grace,
            },
        );
    }

    fn park(gateway: &Gateway, key: &str, id: &str, channel: &str) {
        park_with(gateway, key, id, channel, None);
    }

    /// Why a resume of `key` as `client_id` is refused.
    async fn refusal(gateway: &Gateway, key: &str, client_id: &str) -> protocol::ErrorInfo {
        let resumed = gateway.resume(key, Some(client_id)).await;
        resumed.err().expect("refused")
    }

    /// Lets spawned tasks (the park timer) run up to the current paused instant; call it right
    /// after parking so the timer starts from the park time.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_members_leave_after_the_grace_and_the_key_expires_after_the_ttl() {
        let gateway = gateway(Duration::from_secs(15), Duration::from_secs(120));
        enter(&gateway, "room", "alice", "c1");
        park(&gateway, "c1!k", "c1", "room");
        settle().await;

        tokio::time::advance(Duration::from_millis(14_900)).await;
        settle().await;
        assert_eq!(
            gateway.hub().presence_members("room").len(),
            1,
            "still within the grace"
        );

        tokio::time::advance(Duration::from_millis(200)).await;
        settle().await;
        assert!(
            gateway.hub().presence_members("room").is_empty(),
            "left after the grace"
        );

        tokio::time::advance(Duration::from_secs(106)).await;
        settle().await;
        let refused = refusal(&gateway, "c1!k", "alice").await;
        assert_eq!(refused.code, 80008, "a connection we knew, now expired");
        let unknown = refusal(&gateway, "c9!k", "alice").await;
        assert_eq!(unknown.code, 80018, "a key we never issued");
    }

    #[tokio::test(start_paused = true)]
    async fn remain_present_for_sets_the_grace() {
        let gateway = gateway(Duration::from_secs(15), Duration::from_secs(120));
        enter(&gateway, "room", "alice", "c1");
        park_with(&gateway, "c1!k", "c1", "room", Some(Duration::from_secs(1)));
        settle().await;
        tokio::time::advance(Duration::from_millis(1_100)).await;
        settle().await;
        assert!(
            gateway.hub().presence_members("room").is_empty(),
            "left after 1 s, not 15"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_resume_within_the_grace_keeps_the_members() {
        let gateway = gateway(Duration::from_secs(15), Duration::from_secs(120));
        enter(&gateway, "room", "alice", "c1");
        park(&gateway, "c1!k", "c1", "room");
        settle().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        let parked = gateway
            .resume("c1!k", Some("alice"))
            .await
            .expect("resumable");
        assert!(!parked.members_left());
        tokio::time::advance(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(
            gateway.hub().presence_members("room").len(),
            1,
            "the resumed member stays"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_identity_cannot_take_a_parked_connection() {
        let gateway = gateway(Duration::from_secs(15), Duration::from_secs(120));
        park(&gateway, "c1!k", "c1", "room");
        let refused = refusal(&gateway, "c1!k", "mallory").await;
        assert_eq!(refused.code, 80008);
        assert!(
            gateway.resume("c1!k", Some("alice")).await.is_ok(),
            "the owner still can"
        );
    }
}
