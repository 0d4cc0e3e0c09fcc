//! Parking, expiry, resume and takeover on paused time, and `ConnectionKey` parsing. The clock
//! moves by sleeping: paused time advances only once every task is idle, so the park timer's
//! work due by then is done when the sleep returns.

use std::sync::Arc;
use std::time::Duration;

use protocol::{ErrorInfo, Format, PresenceMessage};

use super::{ConnectionKey, Parked, Sessions};
use crate::backend::memory::MemoryBackend;
use crate::backend::SessionStore;
use crate::config::{HubConfig, OutboundQueue, Timing};
use crate::hub::Hub;
use crate::outbox::Outbox;

struct Node {
    sessions: Arc<Sessions>,
    hub: Arc<Hub>,
    store: Arc<dyn SessionStore>,
    timing: Timing,
}

/// A node whose presence grace is 15 s and whose parked connections expire after 120 s.
fn node() -> Node {
    Node {
        sessions: Arc::default(),
        hub: Arc::new(Hub::new(HubConfig::default())),
        store: Arc::new(MemoryBackend::default()),
        timing: Timing {
            presence_grace: Duration::from_secs(15),
            connection_state_ttl: Duration::from_secs(120),
            ..Timing::default()
        },
    }
}

/// Alice, present in "room" on connection c1, dropped and parked as `c1!k` (her own grace, if
/// any).
fn alice_parked(grace: Option<Duration>) -> Node {
    let node = node();
    node.enter("room", "alice", "c1");
    node.park_with("c1!k", "c1", "room", grace);
    node
}

fn key(text: &str) -> ConnectionKey {
    ConnectionKey::parse(text).expect("a well-formed key")
}

impl Node {
    fn enter(&self, channel: &str, client_id: &str, connection_id: &str) {
        let enter = PresenceMessage {
            id: Some(format!("{connection_id}:0:0")),
            action: 2,
            client_id: Some(client_id.into()),
            connection_id: Some(connection_id.into()),
            timestamp: Some(protocol::now_ms()),
            ..Default::default()
        };
        self.hub.presence(channel, vec![enter]).unwrap();
    }

    fn members(&self, channel: &str) -> usize {
        self.hub.presence_members(channel).len()
    }

    /// Parks alice's connection `id` with presence on `channel` (her own grace, if any); her
    /// members leave as the gateway's do, from the hub.
    fn park_with(&self, key: &str, id: &str, channel: &str, grace: Option<Duration>) {
        let parked = Parked {
            id: id.into(),
            client_id: Some("alice".into()),
            present_on: vec![channel.into()],
            members_left: Default::default(),
            presence_grace: grace,
        };
        let hub = self.hub.clone();
        let leave = move |channel: &str, id: &str| {
            hub.apply_presence(channel, hub.leave_events(channel, id));
        };
        let store = self.store.clone();
        self.sessions
            .park(self::key(key), parked, store, &self.timing, leave);
    }

    fn park(&self, key: &str, id: &str, channel: &str) {
        self.park_with(key, id, channel, None);
    }

    async fn resume(&self, key: &str, client_id: &str) -> Result<Parked, ErrorInfo> {
        let store = &*self.store;
        let resumed = self.sessions.resume(key, Some(client_id), store).await;
        resumed.map_err(ErrorInfo::from)
    }

    /// Why a resume of `key` as `client_id` is refused.
    async fn refusal(&self, key: &str, client_id: &str) -> ErrorInfo {
        self.resume(key, client_id).await.err().expect("refused")
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_members_leave_after_the_grace_and_the_key_expires_after_the_ttl() {
    let node = alice_parked(None);

    sleep_ms(14_900).await;
    assert_eq!(node.members("room"), 1, "still within the grace");

    sleep_ms(200).await;
    assert_eq!(node.members("room"), 0, "left after the grace");

    sleep_ms(106_000).await;
    let refused = node.refusal("c1!k", "alice").await;
    assert_eq!(refused.code, 80008, "a connection we knew, now expired");
    let unknown = node.refusal("c9!k", "alice").await;
    assert_eq!(unknown.code, 80018, "a key we never issued");
}

#[tokio::test(start_paused = true)]
async fn remain_present_for_sets_the_grace() {
    let node = alice_parked(Some(Duration::from_secs(1)));
    sleep_ms(1_100).await;
    assert_eq!(node.members("room"), 0, "left after 1 s, not 15");
}

#[tokio::test(start_paused = true)]
async fn a_resume_within_the_grace_keeps_the_members() {
    let node = alice_parked(None);
    sleep_ms(5_000).await;
    let parked = node.resume("c1!k", "alice").await.expect("resumable");
    assert!(!parked.members_left());
    sleep_ms(30_000).await;
    assert_eq!(node.members("room"), 1, "the resumed member stays");
    let spent = node.refusal("c1!k", "alice").await;
    assert_eq!(spent.code, 80008, "the resumed key is spent");
}

#[tokio::test(start_paused = true)]
async fn another_identity_cannot_take_a_parked_connection() {
    let node = node();
    node.park("c1!k", "c1", "room");
    let refused = node.refusal("c1!k", "mallory").await;
    assert_eq!(refused.code, 80008);
    assert!(
        node.resume("c1!k", "alice").await.is_ok(),
        "the owner still can"
    );
}

#[tokio::test(start_paused = true)]
async fn a_malformed_key_is_one_we_never_issued() {
    let node = node();
    for malformed in ["", "c1", "c1!", "!k", "c1!k!k"] {
        let refused = node.refusal(malformed, "alice").await;
        assert_eq!(refused.code, 80018, "{malformed:?}");
    }
}

/// A resume of a key whose transport is still live (half-open): the old transport is told
/// DISCONNECTED, parks as its read loop ends, and is taken over.
#[tokio::test(start_paused = true)]
async fn a_resume_takes_over_a_half_open_transport() {
    let node = Arc::new(node());
    let outbox = Arc::new(Outbox::new(Format::Json, OutboundQueue::default()));
    node.sessions.register_live(&key("c1!k"), &outbox);
    let read_loop = {
        let (node, outbox) = (node.clone(), outbox.clone());
        tokio::spawn(async move {
            outbox.wake_reader.notified().await;
            node.sessions.unregister_live(&key("c1!k"), &outbox);
            node.park("c1!k", "c1", "room");
        })
    };
    let parked = node.resume("c1!k", "alice").await.expect("taken over");
    assert_eq!(&*parked.id, "c1");
    assert_eq!(outbox.end_code(), protocol::ErrorCode::Disconnected.code());
    read_loop.await.unwrap();
}

/// A transport that ends as its client resumes: it parks, then leaves `live` (the gateway's
/// order). Ending just after the resume found nothing parked, and before it looks at `live`,
/// it must still be found, not refused.
#[tokio::test(start_paused = true)]
async fn a_resume_finds_a_connection_that_parked_between_its_looks() {
    let node = Arc::new(node());
    let outbox = Arc::new(Outbox::new(Format::Json, OutboundQueue::default()));
    node.sessions.register_live(&key("c1!k"), &outbox);
    let ending = node.clone();
    *node.sessions.between_looks.lock().unwrap() = Some(Box::new(move || {
        ending.park("c1!k", "c1", "room");
        ending.sessions.unregister_live(&key("c1!k"), &outbox);
    }));
    let parked = node.resume("c1!k", "alice").await.expect("found parked");
    assert_eq!(&*parked.id, "c1");
    assert!(
        node.sessions.between_looks.lock().unwrap().is_none(),
        "it ended mid-resume"
    );
}

/// Another node resumes a connection parked here: it is handed over, and the key is spent here.
#[tokio::test(start_paused = true)]
async fn a_released_connection_is_gone_from_here() {
    let node = node();
    node.park("c1!k", "c1", "room");
    node.sessions.release(key("c1!k"), &*node.store).await;
    let refused = node.refusal("c1!k", "alice").await;
    assert_eq!(refused.code, 80008);
}

#[test]
fn a_new_key_is_its_id_a_bang_and_a_secret() {
    let key = ConnectionKey::new("abc123");
    assert_eq!(key.id(), "abc123");
    let text = key.to_string();
    let (id, secret) = text.split_once('!').expect("id!secret");
    assert_eq!(id, "abc123");
    assert_eq!(secret.len(), 16);
    assert!(secret.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(ConnectionKey::parse(&text) == Some(key), "parses back");
}

#[test]
fn parsing_keeps_well_formed_keys_as_written() {
    let key = ConnectionKey::parse("c1!secret").expect("well formed");
    assert_eq!(key.id(), "c1");
    assert_eq!(key.as_str(), "c1!secret");
    assert_eq!(key.to_string(), "c1!secret");
}

#[test]
fn parsing_refuses_malformed_keys() {
    for malformed in ["", "!", "c1", "c1!", "!secret", "c1!se!cret", "c1!!"] {
        assert!(
            ConnectionKey::parse(malformed).is_none(),
            "{malformed:?} is not a connection key"
        );
    }
}
