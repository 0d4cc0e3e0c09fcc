//! The back-end contract, in process: every check runs against the memory back-end and the Redis
//! one (on its own `redis-server`), through the same `dyn` traits the gateway uses. The process
//! tests (`tests/it/contract.rs`) hold the whole node to the same contract.

use std::future::Future;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use protocol::{ErrorInfo, Message, PresenceMessage};

use super::memory::MemoryBackend;
use super::memory_webhooks::MemoryState;
use super::redis::RedisBackend;
use super::session::{ConnectionKey, HeldHere};
use super::{Arrival, Backend, BackendEvents, Debounced, Position};
use crate::auth::{Auth, NonceClaim, Revocation};
use crate::config::HubConfig;
use crate::config::RedisTarget;
use crate::hub::{HistoryQuery, Hub, Publication};

/// The node's side for a bare back-end: a hub, as the gateway's adapter has.
struct HubNode {
    hub: Hub,
    /// Every catch-up the back-end asked for: (channel, whether the old epoch was complete).
    catch_ups: std::sync::Mutex<Vec<(String, bool)>>,
}

impl HubNode {
    fn new() -> HubNode {
        HubNode {
            hub: Hub::new(HubConfig::default()),
            catch_ups: Default::default(),
        }
    }

    fn catch_ups_of(&self, channel: &str) -> Vec<bool> {
        let catch_ups = self.catch_ups.lock().unwrap();
        catch_ups
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, complete)| *complete)
            .collect()
    }
}

impl BackendEvents for HubNode {
    fn running(&self) -> bool {
        true
    }

    fn position(&self, channel: &str) -> Option<Position> {
        Some(Position {
            retention: self.hub.rules_for(channel).retention,
            last: self.hub.last_serial(channel),
            // Every channel here, so the contract covers the annotation reloads.
            annotated: true,
        })
    }

    fn deliver(&self, arrival: Arrival<'_>) -> Result<bool, ErrorInfo> {
        let (channel, messages) = (arrival.channel, arrival.messages);
        self.hub
            .deliver(channel, messages, arrival.connection_id, arrival.id)
    }

    fn deliver_ephemeral(&self, arrival: Arrival<'_>) -> Result<(), ErrorInfo> {
        let (channel, messages) = (arrival.channel, arrival.messages);
        self.hub
            .deliver_ephemeral(channel, messages, arrival.connection_id, arrival.id)
    }

    fn catch_up(&self, channel: &str, floor: String, messages: Vec<Message>, complete: bool) {
        let record = (channel.to_owned(), complete);
        self.catch_ups.lock().unwrap().push(record);
        self.hub.catch_up(channel, floor, messages, complete);
    }

    fn sync_members(&self, channel: &str, members: Vec<PresenceMessage>, trust: bool) -> bool {
        self.hub.sync_members(channel, members, trust)
    }

    fn holds(&self, channel: &str) -> bool {
        self.hub.is_held(channel)
    }

    fn apply_presence(&self, channel: &str, events: Vec<PresenceMessage>) {
        self.hub.apply_presence(channel, events);
    }

    fn deliver_annotations(
        &self,
        channel: &str,
        annotations: Vec<(u64, protocol::Annotation)>,
        publisher: Option<&str>,
        report: bool,
    ) -> bool {
        self.hub
            .deliver_annotations(channel, annotations, publisher, report)
    }

    fn load_annotations(
        &self,
        channel: &str,
        last_a: u64,
        stored: Vec<crate::hub::Contribution>,
        announce: bool,
    ) {
        self.hub.load_annotations(channel, last_a, stored, announce);
    }

    fn release(&self, _key: ConnectionKey) {}

    fn apply_revocations(&self, _revocations: Vec<Revocation>) {}

    fn link_up(&self) {}

    fn held_here(&self) -> Option<HeldHere> {
        None
    }

    fn node_died(&self, _node: String) {}

    fn members_left(&self, _channel: String, _events: Vec<PresenceMessage>) {}
}

/// A `redis-server` of the test's own on a free loopback port, killed when dropped.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        RedisServer {
            port,
            child: RedisServer::spawn(port),
        }
    }

    fn spawn(port: u16) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs")
    }

    /// Killed (SIGKILL); nothing answers on its port until `restart`.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Killed (SIGKILL) and started again, empty, on the same port.
    async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = RedisServer::spawn(self.port);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server did not come back on {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One back-end under test, with the hub it delivers into.
pub(crate) struct Subject {
    pub(crate) name: &'static str,
    pub(crate) backend: Backend,
    node: Arc<HubNode>,
}

async fn memory() -> Subject {
    let node = Arc::new(HubNode::new());
    Subject {
        name: "memory",
        backend: Backend::of(
            Arc::new(MemoryBackend::default()),
            Arc::new(MemoryState::new(Box::new(|_: &str| Vec::new()))),
        ),
        node,
    }
}

/// The Redis back-end on the `redis-server` at `port`, delivering into `node`.
async fn connect(node: &Arc<HubNode>, port: u16) -> super::Result<Arc<RedisBackend>> {
    let target = RedisTarget::Node(format!("redis://127.0.0.1:{port}"));
    let events: Arc<dyn BackendEvents> = node.clone();
    RedisBackend::connect(
        &target,
        None,
        Default::default(),
        "contract",
        Default::default(),
        events,
    )
    .await
}

/// The Redis back-end and its server, which must outlive the check.
async fn redis() -> (Subject, RedisServer) {
    let server = RedisServer::start();
    let node = Arc::new(HubNode::new());
    let mut attempts = 0;
    let redis = loop {
        match connect(&node, server.port).await {
            Ok(redis) => break redis,
            // The server may still be starting.
            Err(error) if attempts < 50 => {
                attempts += 1;
                tracing::debug!(%error, "redis-server not up yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("redis-server never came up: {error}"),
        }
    };
    let subject = Subject {
        name: "redis",
        backend: Backend::of(redis.clone(), redis.clone()).with_push(redis),
        node,
    };
    (subject, server)
}

/// Runs `check` against every back-end (also from other modules' tests).
pub(crate) async fn for_each_backend<F, Fut>(check: F)
where
    F: Fn(Subject) -> Fut,
    Fut: Future<Output = ()>,
{
    check(memory().await).await;
    let (subject, _server) = redis().await;
    check(subject).await;
}

/// Waits (bounded) until `done` holds: deliveries through Redis arrive on the pub/sub link.
async fn eventually(what: &str, name: &str, done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name}: {what} never happened");
}

fn message(id: &str) -> Message {
    Message {
        id: Some(id.to_owned()),
        data: Some(protocol::Data::String(id.to_owned())),
        timestamp: Some(protocol::now_ms()),
        ..Message::default()
    }
}

fn publication<'a>(channel: &'a str, ids: &[&str]) -> Publication<'a> {
    Publication {
        channel,
        messages: ids.iter().map(|id| message(id)).collect(),
        client_ids: vec![true; ids.len()],
        connection_id: None,
        id: None,
        timestamp: protocol::now_ms(),
    }
}

#[tokio::test]
async fn a_publish_gets_consecutive_serials_reaches_the_hub_and_is_idempotent() {
    for_each_backend(|subject| async move {
        let (name, bus, hub) = (subject.name, &subject.backend.bus, &subject.node.hub);
        bus.join("room").await.expect("joined");
        let retention = hub.rules_for("room").retention;
        let serials = bus
            .publish(hub, publication("room", &["a", "b"]), retention)
            .await
            .expect("published");
        let (first, second) = (serials[0].clone().unwrap(), serials[1].clone().unwrap());
        assert_eq!(crate::hub::log::next(&first), Some(second), "{name}");
        let repeat = bus
            .publish(hub, publication("room", &["a"]), retention)
            .await
            .expect("published");
        assert_eq!(
            repeat,
            vec![None],
            "{name}: a repeated id is not stored again"
        );
        let query = HistoryQuery {
            limit: 10,
            ..HistoryQuery::default()
        };
        eventually("delivery", name, || hub.history("room", &query).len() == 2).await;
        bus.leave("room");
        assert!(bus.healthy(), "{name}");
    })
    .await;
}

/// A realtime publication as a connection sends it: `n` messages with the server's ids
/// (`connectionId:msgSerial:index`), or with `own` as the first one's id.
fn realtime<'a>(
    channel: &'a str,
    connection: &'a str,
    msg_serial: u64,
    n: usize,
    own: Option<&str>,
) -> Publication<'a> {
    let messages = (0..n)
        .map(|index| match (index, own) {
            (0, Some(own)) => message(own),
            _ => message(&format!("{connection}:{msg_serial}:{index}")),
        })
        .collect();
    Publication {
        channel,
        messages,
        client_ids: vec![true; n],
        connection_id: Some(connection),
        id: Some(format!("{connection}:{msg_serial}")),
        timestamp: protocol::now_ms(),
    }
}

/// Stored or not, per message, for publications submitted back to back: on Redis they go in
/// one script call, a connection's publications in one group.
async fn stored_together(subject: &Subject, publications: Vec<Publication<'_>>) -> Vec<Vec<bool>> {
    let (bus, hub) = (&subject.backend.bus, &subject.node.hub);
    let mut tickets = Vec::new();
    for publication in publications {
        let retention = hub.rules_for(publication.channel).retention;
        tickets.push(
            bus.submit(hub, publication, retention)
                .await
                .expect("submitted"),
        );
    }
    let mut stored = Vec::new();
    for ticket in tickets {
        let serials = ticket.await.expect("published");
        stored.push(serials.iter().map(Option::is_some).collect());
    }
    stored
}

/// A resent realtime publish (same connection, msgSerial and server-made ids, as a client
/// sends it after a resume) is stored once: resent alone, queued beside the original, or
/// after later ones. The Redis script tells it by the connection's highest msgSerial stored on
/// the channel rather than by a claim per message; a publication with an id of the client's
/// own keeps its claims, on both back-ends.
#[tokio::test]
async fn a_resent_realtime_publish_is_stored_once() {
    for_each_backend(|subject| async move {
        let name = subject.name;
        let (bus, hub) = (&subject.backend.bus, &subject.node.hub);
        let room = "resends";
        bus.join(room).await.expect("joined");
        let alone = stored_together(&subject, vec![realtime(room, "conn-a", 5, 2, None)]).await;
        assert_eq!(alone, [vec![true, true]], "{name}: the first time");
        let again = stored_together(&subject, vec![realtime(room, "conn-a", 5, 2, None)]).await;
        assert_eq!(again, [vec![false, false]], "{name}: resent alone");
        // Original and resend in one group, then a new one; the same msgSerial from another
        // connection is its own.
        let together = stored_together(
            &subject,
            vec![
                realtime(room, "conn-a", 6, 1, None),
                realtime(room, "conn-b", 6, 1, None),
                realtime(room, "conn-a", 6, 1, None),
                realtime(room, "conn-a", 7, 1, None),
            ],
        )
        .await;
        assert_eq!(
            together,
            [vec![true], vec![true], vec![false], vec![true]],
            "{name}: resent beside the original"
        );
        // A resume resends what was not acknowledged, after later ones were stored.
        let late = stored_together(
            &subject,
            vec![
                realtime(room, "conn-a", 6, 1, None),
                realtime(room, "conn-a", 7, 1, None),
                realtime(room, "conn-a", 8, 1, None),
            ],
        )
        .await;
        assert_eq!(
            late,
            [vec![false], vec![false], vec![true]],
            "{name}: resent later"
        );
        // An id of the client's own is claimed: resent, or published again by REST.
        let own = stored_together(
            &subject,
            vec![
                realtime(room, "conn-a", 9, 2, Some("mine")),
                realtime(room, "conn-a", 10, 1, None),
            ],
        )
        .await;
        assert_eq!(own, [vec![true, true], vec![true]], "{name}: own id");
        let own_again = stored_together(
            &subject,
            vec![
                realtime(room, "conn-a", 9, 2, Some("mine")),
                publication(room, &["mine"]),
            ],
        )
        .await;
        assert_eq!(
            own_again,
            [vec![false, false], vec![false]],
            "{name}: own id again"
        );
        let query = HistoryQuery {
            limit: 100,
            ..HistoryQuery::default()
        };
        eventually("delivery", name, || hub.history(room, &query).len() == 9).await;
        let ids: Vec<String> = hub
            .history(room, &query)
            .into_iter()
            .rev()
            .map(|m| m.id.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            ids,
            [
                "conn-a:5:0",
                "conn-a:5:1",
                "conn-a:6:0",
                "conn-b:6:0",
                "conn-a:7:0",
                "conn-a:8:0",
                "mine",
                "conn-a:9:1",
                "conn-a:10:0"
            ],
            "{name}: each once, in order"
        );
        bus.leave(room);
    })
    .await;
}

/// A connection's mark lasts while a resend may come (a connection is resumable for 2 min) and
/// is dropped after that: the channel's upkeep forgets marks two generations (2 min each) old.
#[tokio::test]
async fn a_channels_upkeep_forgets_the_marks_of_connections_long_gone() {
    let (subject, server) = redis().await;
    let bus = &subject.backend.bus;
    let room = "marks";
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{}", server.port))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connected");
    let meta = format!("rt:{{{room}}}:meta");
    // A connection that published here at generation 1 (1970), and one of a minute ago.
    let now_generation = protocol::now_ms() / 120_000;
    let _: () = redis::cmd("HSET")
        .arg(&meta)
        .arg("c:long-gone")
        .arg(format!("{:020} 1", 3))
        .arg("c:recent")
        .arg(format!("{:020} {}", 3, now_generation - 1))
        .query_async(&mut redis)
        .await
        .expect("seeded");
    // The channel's first publication runs its upkeep.
    let stored = stored_together(&subject, vec![realtime(room, "conn-c", 1, 1, None)]).await;
    assert_eq!(stored, [vec![true]]);
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&meta)
        .query_async(&mut redis)
        .await
        .expect("read");
    assert!(!fields.contains(&"c:long-gone".to_owned()), "{fields:?}");
    assert!(fields.contains(&"c:recent".to_owned()), "{fields:?}");
    assert!(fields.contains(&"c:conn-c".to_owned()), "{fields:?}");
    // The recent one is still held: its resend is not stored.
    let resent = stored_together(&subject, vec![realtime(room, "recent", 3, 1, None)]).await;
    assert_eq!(resent, [vec![false]]);
    bus.leave(room);
}

/// A publication is answered only once Redis has answered a command read after the script's
/// reply (an `EXISTS` on the same connection): Redis writes a script's reply before what its
/// PUBLISH queued for subscribers, and only that later answer proves those written.
#[tokio::test]
async fn a_publication_is_answered_only_after_a_command_read_after_its_script() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (subject, server) = redis().await;
    let room = "announced";
    let mut monitor = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("monitor connected");
    monitor.write_all(b"MONITOR\r\n").await.expect("sent");
    let mut lines = BufReader::new(monitor).lines();
    assert_eq!(
        lines.next_line().await.expect("read").as_deref(),
        Some("+OK")
    );
    let stored = stored_together(&subject, vec![realtime(room, "conn-m", 1, 1, None)]).await;
    assert_eq!(stored, [vec![true]]);
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{}", server.port))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connected");
    let marker = "answered-here";
    let _: String = redis::cmd("ECHO")
        .arg(marker)
        .query_async(&mut redis)
        .await
        .expect("echoed");
    // What Redis ran before the marker, in order: `+<time> [<db> <client>] "<command>" ...`.
    let mut ran = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the marker seen")
            .expect("read")
            .expect("open");
        if line.contains(marker) {
            break;
        }
        ran.push(line);
    }
    let client = |line: &str| line.split(['[', ']']).nth(1).map(str::to_owned);
    let script = ran
        .iter()
        .position(|line| line.contains("\"EVALSHA\"") || line.contains("\"EVAL\""))
        .unwrap_or_else(|| panic!("no script call in {ran:#?}"));
    let barrier = format!("\"EXISTS\" \"rt:{{{room}}}");
    let confirmed = ran[script..]
        .iter()
        .any(|line| line.contains(&barrier) && client(line) == client(&ran[script]));
    assert!(
        confirmed,
        "no EXISTS after the script on its connection: {ran:#?}"
    );
}

/// The first command after Redis restarted often fails (the command connection reconnects on
/// a failure): the catch-up after the link is back is retried on that link, keeping what the
/// node heard before Redis died, so nobody is told of a loss that did not happen.
#[tokio::test]
async fn a_failed_catch_up_after_a_redis_restart_still_knows_nothing_was_missed() {
    let (subject, mut server) = redis().await;
    let (bus, node) = (&subject.backend.bus, &subject.node);
    let channel = "restart-retry";
    bus.join(channel).await.expect("joined");
    let retention = node.hub.rules_for(channel).retention;
    bus.publish(&node.hub, publication(channel, &["a", "b"]), retention)
        .await
        .expect("published");
    let query = HistoryQuery {
        limit: 10,
        ..HistoryQuery::default()
    };
    eventually("delivery", "redis", || {
        node.hub.history(channel, &query).len() == 2
    })
    .await;
    let before = node.catch_ups_of(channel).len();
    super::redis::failing_loads::fail_next(channel, 1);
    server.restart().await;
    eventually("a catch-up after the restart", "redis", || {
        node.catch_ups_of(channel).len() > before
    })
    .await;
    assert_eq!(
        super::redis::failing_loads::pending(channel),
        0,
        "the first catch-up after the restart failed"
    );
    assert_eq!(
        node.catch_ups_of(channel)[before..],
        [true],
        "the catch-up that worked knows the node heard the whole old epoch"
    );
}

#[tokio::test]
async fn presence_reaches_the_hub() {
    for_each_backend(|subject| async move {
        let (name, bus, hub) = (subject.name, &subject.backend.bus, &subject.node.hub);
        bus.join("room").await.expect("joined");
        let enter = PresenceMessage {
            id: Some("c1:0:0".into()),
            action: 2,
            client_id: Some("alice".into()),
            connection_id: Some("c1".into()),
            timestamp: Some(protocol::now_ms()),
            ..Default::default()
        };
        bus.presence(hub, "room", &[enter])
            .await
            .expect("presence applied");
        eventually("the enter", name, || {
            hub.presence_members("room").len() == 1
        })
        .await;
        bus.leave("room");
    })
    .await;
}

#[tokio::test]
async fn an_event_record_keeps_its_channels_and_its_first_answer() {
    for_each_backend(|subject| async move {
        let (name, events) = (subject.name, &subject.backend.events);
        let empty = events.get("app/e1").await.expect("read");
        assert!(
            empty.channels.is_empty() && empty.answer.is_none(),
            "{name}"
        );
        events
            .record_channel("app/e1", 0, "s0")
            .await
            .expect("recorded");
        let record = events.get("app/e1").await.expect("read");
        assert_eq!(
            record.channels.get(&0).map(String::as_str),
            Some("s0"),
            "{name}"
        );
        let first = events.record_answer("app/e1", "a1".into()).await;
        assert_eq!(first.expect("answered"), "a1", "{name}");
        let second = events.record_answer("app/e1", "a2".into()).await;
        assert_eq!(
            second.expect("answered"),
            "a1",
            "{name}: the first answer stands"
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_request_nonce_is_claimed_once() {
    for_each_backend(|subject| async move {
        let (name, shared) = (subject.name, &subject.backend.auth);
        let local = Auth::new(Vec::new(), None);
        let now = protocol::now_ms();
        let claim = NonceClaim {
            key_name: "app.k".into(),
            nonce: "n1".into(),
            timestamp: now,
            forget_at: now + 60_000,
        };
        let first = shared.claim_nonce(&local, &claim, now).await;
        assert!(first.expect("claimed"), "{name}");
        let again = shared.claim_nonce(&local, &claim, now).await;
        assert!(!again.expect("answered"), "{name}: a nonce is single-use");
    })
    .await;
}

#[tokio::test]
async fn a_resume_for_a_key_nobody_holds_finds_nothing() {
    for_each_backend(|subject| async move {
        let key = ConnectionKey::parse("c9!k").unwrap();
        let taken = subject.backend.sessions.take(&key, Some("alice")).await;
        assert!(taken.expect("answered").is_none(), "{}", subject.name);
    })
    .await;
}

fn debounced<'a>(key: &'a str, event: &'a str, due_ms: u64) -> Debounced<'a> {
    Debounced { key, event, due_ms }
}

#[tokio::test]
async fn a_re_occupy_within_the_debounce_cancels_the_close() {
    for_each_backend(|subject| async move {
        let (name, state) = (subject.name, &subject.backend.webhooks);
        let node = subject.backend.nodes.node().unwrap_or("n").to_owned();
        let key = "rt:{call:1}:wh:vacate";
        assert!(state.occupy("call:1", key).await.unwrap(), "{name}");
        let vacate = |event, due_ms| state.vacate(&node, "call:1", debounced(key, event, due_ms));
        assert!(vacate("p1", 10).await.unwrap(), "{name}");
        // Back before it was due: neither a close nor a second open.
        assert!(!state.occupy("call:1", key).await.unwrap(), "{name}");
        assert_eq!(
            state.due(10).await.unwrap(),
            vec!["p1".to_owned()],
            "{name}"
        );
        assert!(!state.fire(key, "p1").await.unwrap(), "{name}");
        // Gone for good: the close fires once.
        assert!(vacate("p2", 20).await.unwrap(), "{name}");
        assert!(state.due(19).await.unwrap().is_empty(), "{name}");
        assert!(state.fire(key, "p2").await.unwrap(), "{name}");
        assert!(!state.fire(key, "p2").await.unwrap(), "{name}");
    })
    .await;
}

#[tokio::test]
async fn a_full_webhook_queue_drops_the_oldest_and_says_how_many() {
    for_each_backend(|subject| async move {
        let (name, state) = (subject.name, &subject.backend.webhooks);
        let items = |range: std::ops::Range<u32>| range.map(|i| i.to_string()).collect();
        assert_eq!(state.push("w", 3, items(0..2)).await.unwrap(), 0, "{name}");
        assert_eq!(state.push("w", 3, items(2..5)).await.unwrap(), 2, "{name}");
        let queued = state.peek("w", 10).await.unwrap();
        let values: Vec<&str> = queued.iter().map(|(_, item)| item.as_str()).collect();
        assert_eq!(values, ["2", "3", "4"], "{name}");
        let delivered = queued.iter().take(2).map(|(id, _)| id.clone()).collect();
        state.ack("w", delivered).await.unwrap();
        assert_eq!(state.peek("w", 10).await.unwrap().len(), 1, "{name}");
    })
    .await;
}

/// A JSON subscriber attached to `channel` on the node's hub; returns its queue (ATTACHED taken).
fn listen(hub: &Hub, channel: &str, connection_id: &str) -> crate::outbox::Receiver {
    use protocol::message::Modes;
    use protocol::{Action, Format, ProtocolMessage};
    let outbox = Arc::new(crate::outbox::Outbox::new(Format::Json, Default::default()));
    let mut queue = outbox.receiver();
    let subscriber = crate::hub::Subscriber {
        connection_id: connection_id.into(),
        channel_name: channel.into(),
        modes: Modes::DEFAULT,
        occupancy_events: false,
        echo: true,
        append_full: false,
        seen_from: Default::default(),
        view: Default::default(),
        outbox,
    };
    hub.attach(channel, subscriber, &Default::default(), |_| {
        ProtocolMessage::new(Action::Attached)
    });
    queue.try_recv().expect("ATTACHED");
    queue
}

/// The MESSAGE frames queued so far: (channelSerial, each message's (data, serial)).
type Heard = Vec<(Option<String>, Vec<(String, Option<String>)>)>;

fn heard(queue: &mut crate::outbox::Receiver) -> Heard {
    use axum::extract::ws::Message as WsMessage;
    let mut frames = Vec::new();
    while let Ok(frame) = queue.try_recv() {
        let WsMessage::Text(text) = frame.into_ws() else {
            panic!("a JSON frame");
        };
        let frame: protocol::ProtocolMessage =
            protocol::codec::decode(text.as_bytes(), protocol::Format::Json).unwrap();
        let messages = frame.messages.unwrap_or_default().into_iter();
        let messages = messages
            .map(|m| match m.data {
                Some(protocol::Data::String(data)) => (data, m.serial),
                other => panic!("text data, got {other:?}"),
            })
            .collect();
        frames.push((frame.channel_serial, messages));
    }
    frames
}

fn ephemeral_publication<'a>(channel: &'a str, ids: &[&str]) -> Publication<'a> {
    let mut publication = publication(channel, ids);
    publication
        .messages
        .iter_mut()
        .for_each(crate::hub::mark_ephemeral);
    publication
}

/// Ephemeral publications reach subscribers live, once per id, without serials; they take no
/// place in the channel's sequence (the stored serials around them are consecutive, and Redis
/// never sees a gap to catch up) and are not in history.
#[tokio::test]
async fn an_ephemeral_publish_is_delivered_live_once_and_never_stored() {
    for_each_backend(|subject| async move {
        let (name, bus, node) = (subject.name, &subject.backend.bus, &subject.node);
        let hub = &node.hub;
        let channel = "typing";
        bus.join(channel).await.expect("joined");
        let mut queue = listen(hub, channel, "sub");
        let retention = hub.rules_for(channel).retention;
        let before = bus
            .publish(hub, publication(channel, &["s1"]), retention)
            .await
            .expect("published");
        for _ in 0..2 {
            let serials = bus
                .publish_ephemeral(hub, ephemeral_publication(channel, &["e1", "e2"]))
                .await
                .expect("published");
            assert_eq!(serials, vec![None, None], "{name}: no serials");
        }
        let after = bus
            .publish(hub, publication(channel, &["s2"]), retention)
            .await
            .expect("published");
        let (before, after) = (before[0].clone().unwrap(), after[0].clone().unwrap());
        assert_eq!(
            crate::hub::log::next(&before),
            Some(after.clone()),
            "{name}: no serial spent on ephemeral messages"
        );
        let queue = std::sync::Mutex::new(&mut queue);
        let frames = std::sync::Mutex::new(Vec::new());
        eventually("three deliveries", name, || {
            let mut frames = frames.lock().unwrap();
            frames.extend(heard(&mut queue.lock().unwrap()));
            frames.len() >= 3
        })
        .await;
        let frames = frames.into_inner().unwrap();
        let ephemeral = vec![("e1".to_owned(), None), ("e2".to_owned(), None)];
        assert_eq!(
            frames,
            vec![
                (Some(before.clone()), vec![("s1".to_owned(), Some(before))]),
                (None, ephemeral),
                (Some(after.clone()), vec![("s2".to_owned(), Some(after))]),
            ],
            "{name}: the repeat went nowhere, the ephemeral frame has no channelSerial"
        );
        let query = HistoryQuery {
            limit: 10,
            ..HistoryQuery::default()
        };
        let stored: Vec<_> = hub
            .history(channel, &query)
            .iter()
            .map(|m| m.id.clone())
            .collect();
        assert_eq!(stored, [Some("s2".into()), Some("s1".into())], "{name}");
        // A gap's catch-up is the one that knows the node heard everything (`true`); joining
        // catches up too, and may twice when the join races the link's start.
        assert!(
            !node.catch_ups_of(channel).contains(&true),
            "{name}: no gap seen"
        );
        bus.leave(channel);
    })
    .await;
}

/// Redis down: an ephemeral publish fails (50003, so the publisher hears NACK or 503), never
/// a silent drop.
#[tokio::test]
async fn an_ephemeral_publish_with_redis_down_fails_loudly() {
    let (subject, mut server) = redis().await;
    let (bus, hub) = (&subject.backend.bus, &subject.node.hub);
    server.stop();
    let refused = bus
        .publish_ephemeral(hub, ephemeral_publication("down", &["e1"]))
        .await
        .expect_err("nothing to announce it");
    let info = protocol::ErrorInfo::from(refused);
    assert_eq!((info.code, info.status_code), (50003, 503), "{info:?}");
}

/// A node on an already running `redis-server`.
async fn redis_node(port: u16) -> Subject {
    let node = Arc::new(HubNode::new());
    let redis = connect(&node, port)
        .await
        .expect("a second node on the same redis-server");
    Subject {
        name: "redis",
        backend: Backend::of(redis.clone(), redis),
        node,
    }
}

fn annotation(
    serial: &str,
    annotation_type: &str,
    name: &str,
    client: &str,
) -> protocol::Annotation {
    protocol::Annotation {
        id: Some(format!("{client}:{name}")),
        message_serial: Some(serial.to_owned()),
        annotation_type: Some(annotation_type.to_owned()),
        name: Some(name.to_owned()),
        client_id: Some(client.to_owned()),
        timestamp: Some(protocol::now_ms()),
        ..Default::default()
    }
}

/// Annotations of `channel`, none of them keyed.
fn batch(channel: &str, annotations: Vec<protocol::Annotation>) -> crate::hub::Annotating<'_> {
    crate::hub::Annotating {
        channel,
        keyed: vec![false; annotations.len()],
        annotations,
        publisher: None,
    }
}

fn summary_of(hub: &Hub, channel: &str, serial: &str) -> Option<serde_json::Value> {
    let message = hub.message(channel, serial)?;
    let summary = &message.annotations.as_ref()?.summary;
    serde_json::to_value(summary).ok()
}

/// Annotations of a stored message are applied, listed oldest first and summarized; one of a
/// message the channel does not hold is refused with 40400 and applies nothing.
#[tokio::test]
async fn annotations_are_applied_listed_and_refused_for_unknown_messages() {
    for_each_backend(|subject| async move {
        let (name, bus, hub) = (subject.name, &subject.backend.bus, &subject.node.hub);
        bus.join("notes").await.expect("joined");
        let retention = hub.rules_for("notes").retention;
        let serials = bus
            .publish(hub, publication("notes", &["m"]), retention)
            .await
            .expect("published");
        let serial = serials[0].clone().unwrap();
        eventually("delivery", name, || hub.message("notes", &serial).is_some()).await;

        let unknown = annotation("0000000000ff-0000000009", "r:distinct.v1", "x", "a");
        let refused = bus.annotate(hub, batch("notes", vec![unknown])).await;
        let refused = ErrorInfo::from(refused.expect_err("an unknown message"));
        assert_eq!(refused.code, 40400, "{name}: {refused:?}");

        let applied = bus
            .annotate(
                hub,
                batch(
                    "notes",
                    vec![
                        annotation(&serial, "r:distinct.v1", "👍", "a"),
                        annotation(&serial, "r:distinct.v1", "👍", "b"),
                    ],
                ),
            )
            .await
            .expect("annotated");
        let applied: Vec<String> = applied.into_iter().map(Option::unwrap).collect();
        assert_eq!(applied.len(), 2, "{name}");
        assert!(
            applied[0] > serial && applied[0] < applied[1],
            "{name}: {applied:?}"
        );
        let expected = serde_json::json!({"r:distinct.v1": {
            "👍": {"total": 2, "clientIds": ["a", "b"], "clipped": false},
        }});
        eventually("the summary", name, || {
            summary_of(hub, "notes", &serial).as_ref() == Some(&expected)
        })
        .await;
        let listed = bus
            .annotations(hub, "notes", &serial, None, 10)
            .await
            .expect("listed")
            .expect("a known message");
        let listed: Vec<_> = listed.iter().map(|a| a.serial.clone().unwrap()).collect();
        assert_eq!(listed, applied, "{name}");
        let after = bus
            .annotations(hub, "notes", &serial, Some(&applied[0]), 10)
            .await
            .expect("listed")
            .expect("a known message");
        assert_eq!(after.len(), 1, "{name}");

        // A keyed id is applied once: the repeat gets no serial and counts nothing.
        let view = annotation(&serial, "r:total.v1", "", "a");
        for expected in [true, false] {
            let mut keyed = batch("notes", vec![view.clone()]);
            keyed.keyed = vec![true];
            let serials = bus.annotate(hub, keyed).await.expect("annotated");
            assert_eq!(serials[0].is_some(), expected, "{name}: {serials:?}");
        }
        eventually("the total", name, || {
            summary_of(hub, "notes", &serial)
                .is_some_and(|s| s["r:total.v1"] == serde_json::json!({"total": 1}))
        })
        .await;
        bus.leave("notes");
    })
    .await;
}

/// Two nodes on one Redis apply the same annotations in the same order, so their summaries are
/// identical; a node that joins later loads them from the aggregate hash, in contributor order.
#[tokio::test]
async fn nodes_on_one_redis_agree_on_summaries_and_a_late_joiner_loads_them() {
    let (a, server) = redis().await;
    let b = redis_node(server.port).await;
    let channel = "shared-notes";
    for node in [&a, &b] {
        node.backend.bus.join(channel).await.expect("joined");
    }
    let (bus_a, hub_a, hub_b) = (&a.backend.bus, &a.node.hub, &b.node.hub);
    let retention = hub_a.rules_for(channel).retention;
    let serials = bus_a
        .publish(hub_a, publication(channel, &["m"]), retention)
        .await
        .expect("published");
    let serial = serials[0].clone().unwrap();
    eventually("delivery on B", "redis", || {
        hub_b.message(channel, &serial).is_some()
    })
    .await;

    let mut multiple = annotation(&serial, "r:multiple.v1", "x", "carol");
    multiple.count = Some(3);
    let mut anonymous = annotation(&serial, "r:multiple.v1", "x", "");
    anonymous.client_id = None;
    let mut gone = annotation(&serial, "r:distinct.v1", "y", "bob");
    gone.action = 1;
    let batches = vec![
        vec![annotation(&serial, "r:unique.v1", "👍", "zed")],
        vec![
            annotation(&serial, "r:unique.v1", "👍", "amy"),
            annotation(&serial, "r:distinct.v1", "y", "bob"),
        ],
        vec![annotation(&serial, "r:unique.v1", "😕", "zed"), multiple],
        vec![anonymous, gone, annotation(&serial, "r:total.v1", "", "")],
    ];
    for (index, annotations) in batches.into_iter().enumerate() {
        // From either node.
        let (bus, hub) = if index % 2 == 0 {
            (&a.backend.bus, hub_a)
        } else {
            (&b.backend.bus, hub_b)
        };
        bus.annotate(hub, self::batch(channel, annotations))
            .await
            .expect("annotated");
    }
    let expected = serde_json::json!({
        "r:multiple.v1": {"x": {"total": 4, "clientIds": {"carol": 3}, "totalUnidentified": 1,
                                "clipped": false, "totalClientIds": 1}},
        "r:total.v1": {"total": 1},
        "r:unique.v1": {
            "👍": {"total": 1, "clientIds": ["amy"], "clipped": false},
            "😕": {"total": 1, "clientIds": ["zed"], "clipped": false},
        },
    });
    for (node, hub) in [("A", hub_a), ("B", hub_b)] {
        eventually(&format!("the summary on {node}"), "redis", || {
            summary_of(hub, channel, &serial).as_ref() == Some(&expected)
        })
        .await;
    }

    // B loses track (as after a lost announcement): the next one does not follow on, so B
    // reloads the aggregates and agrees again.
    hub_b.load_annotations(channel, 0, Vec::new(), false);
    assert_eq!(summary_of(hub_b, channel, &serial), None, "B forgot");
    let more = annotation(&serial, "r:flag.v1", "", "fay");
    bus_a
        .annotate(hub_a, batch(channel, vec![more]))
        .await
        .expect("annotated");
    let mut expected = expected;
    expected["r:flag.v1"] = serde_json::json!({"total": 1, "clientIds": ["fay"], "clipped": false});
    for (node, hub) in [("A", hub_a), ("B", hub_b)] {
        eventually(
            &format!("the summary on {node} after the gap"),
            "redis",
            || summary_of(hub, channel, &serial).as_ref() == Some(&expected),
        )
        .await;
    }

    let late = redis_node(server.port).await;
    late.backend.bus.join(channel).await.expect("joined");
    assert_eq!(
        summary_of(&late.node.hub, channel, &serial),
        Some(expected),
        "loaded on join"
    );
    let listed = late
        .backend
        .bus
        .annotations(&late.node.hub, channel, &serial, None, 100)
        .await
        .expect("listed")
        .expect("a known message");
    assert_eq!(listed.len(), 9, "every raw annotation, from either node");
}

impl RedisServer {
    /// `redis-cli` against this server; its output.
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Script calls so far (`EVALSHA` and `EVAL`), from `INFO commandstats`.
    fn script_calls(&self) -> u64 {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter(|line| {
                line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:")
            })
            .filter_map(|line| {
                line.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

/// Publications submitted while the batcher is busy go to Redis together: one script call for
/// many, each channel's serials consecutive in submit order, and every ticket answered.
#[tokio::test]
async fn publications_queued_together_are_stored_in_one_call_in_submit_order() {
    let (subject, server) = redis().await;
    let (bus, hub) = (&subject.backend.bus, &subject.node.hub);
    let channels = ["batch-a", "batch-b", "batch-c"];
    for channel in channels {
        bus.join(channel).await.expect("joined");
    }
    let retention = hub.rules_for("batch-a").retention;
    let before = server.script_calls();
    // A current-thread runtime: the batcher task runs only once this loop has queued all 30.
    let mut tickets = Vec::new();
    for n in 0..30 {
        let channel = channels[n % channels.len()];
        let id = format!("b{n}");
        let ticket = bus
            .submit(hub, publication(channel, &[&id]), retention)
            .await
            .expect("queued");
        tickets.push((channel, ticket));
    }
    let mut serials: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for (channel, ticket) in tickets {
        let stored = ticket.await.expect("stored");
        serials
            .entry(channel)
            .or_default()
            .push(stored[0].clone().expect("a serial"));
    }
    let calls = server.script_calls() - before;
    // One batch; a probe or lease script may fall in the window.
    assert!(calls <= 3, "30 publications took {calls} script calls");
    for (channel, got) in &serials {
        assert_eq!(got.len(), 10);
        for pair in got.windows(2) {
            assert_eq!(
                crate::hub::log::next(&pair[0]).as_deref(),
                Some(pair[1].as_str()),
                "{channel}: consecutive in submit order"
            );
        }
    }
    let query = HistoryQuery {
        limit: 100,
        ..HistoryQuery::default()
    };
    eventually("delivery", "redis", || {
        channels.iter().all(|c| hub.history(c, &query).len() == 10)
    })
    .await;
}

/// A publish whose append fails leaves no idempotency claim behind: the client's retry with
/// the same id is stored, not taken for a repeat and silently dropped.
#[tokio::test]
async fn a_failed_append_leaves_no_claim_so_the_retry_is_stored() {
    let (subject, server) = redis().await;
    let (bus, hub) = (&subject.backend.bus, &subject.node.hub);
    let channel = "claims-after";
    let retention = hub.rules_for(channel).retention;
    bus.join(channel).await.expect("joined");
    // A key of the wrong type where the stream goes: XADD fails.
    server.cli(&["SET", "rt:{claims-after}:log", "not a stream"]);
    let failed = bus
        .publish(hub, publication(channel, &["once"]), retention)
        .await;
    assert!(failed.is_err(), "{failed:?}");
    server.cli(&["DEL", "rt:{claims-after}:log"]);
    let retried = bus
        .publish(hub, publication(channel, &["once"]), retention)
        .await
        .expect("published");
    assert!(retried[0].is_some(), "the retry was stored: {retried:?}");
    let again = bus
        .publish(hub, publication(channel, &["once"]), retention)
        .await
        .expect("published");
    assert_eq!(again, vec![None], "and is a repeat from then on");
}

/// Entries past the channel's age leave the stream at the channel's upkeep (at most every 5 s
/// per channel; here forced by clearing its time), not on every publish.
#[tokio::test]
async fn entries_past_the_age_are_trimmed_at_the_channels_upkeep() {
    let (subject, server) = redis().await;
    let (bus, hub) = (&subject.backend.bus, &subject.node.hub);
    let channel = "aged";
    let retention = crate::config::Retention {
        max_messages: 1000,
        max_age: Duration::from_millis(200),
    };
    bus.publish(hub, publication(channel, &["first"]), retention)
        .await
        .expect("published");
    let oldest = || server.cli(&["XRANGE", "rt:{aged}:log", "-", "+", "COUNT", "1"]);
    assert!(oldest().contains("first"));
    // Polled, bounded: the entry must first be older than the age.
    for n in 0..300 {
        server.cli(&["HDEL", "rt:{aged}:meta", "x"]);
        let id = format!("later{n}");
        bus.publish(hub, publication(channel, &[&id]), retention)
            .await
            .expect("published");
        if !oldest().contains("first") {
            assert!(oldest().contains("later"), "younger entries stay");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the first entry never aged out: {}", oldest());
}

/// A batch goes to the stream as one entry per channel: repeats (a claim held from before, or
/// given twice in the batch) get no serial and are neither stored nor announced, the rest get
/// consecutive serials; a node that loads the channel afterwards reads every message of the
/// shared entries under its own serial, and an annotation finds a message inside one.
#[tokio::test]
async fn messages_sharing_a_stream_entry_keep_their_own_serials_everywhere() {
    let (subject, server) = redis().await;
    let (bus, hub) = (&subject.backend.bus, &subject.node.hub);
    let channel = "shared";
    let retention = hub.rules_for(channel).retention;
    bus.join(channel).await.expect("joined");
    let first = bus
        .publish(hub, publication(channel, &["x1"]), retention)
        .await
        .expect("published");
    // A current-thread runtime: the batcher runs only once both batches are queued.
    let mut tickets = Vec::new();
    for ids in [
        &["x2", "x3"][..],
        &["x1"],
        &["x4", "x2"],
        &["y1"],
        &["y2", "y3"],
    ] {
        let ticket = bus
            .submit(hub, publication(channel, ids), retention)
            .await
            .expect("queued");
        tickets.push(ticket);
    }
    let mut answers = vec![first];
    for ticket in tickets {
        answers.push(ticket.await.expect("stored"));
    }
    let repeats: Vec<Vec<bool>> = answers
        .iter()
        .map(|serials| serials.iter().map(Option::is_none).collect())
        .collect();
    assert_eq!(
        repeats,
        vec![
            vec![false],
            vec![false, false],
            vec![true],
            vec![false, true],
            vec![false],
            vec![false, false]
        ],
        "{answers:?}"
    );
    let serials: Vec<String> = answers.into_iter().flatten().flatten().collect();
    for pair in serials.windows(2) {
        assert_eq!(crate::hub::log::next(&pair[0]), Some(pair[1].clone()));
    }
    let entries = server.cli(&["XRANGE", "rt:{shared}:log", "-", "+"]);
    assert!(
        entries.lines().any(|line| line == "b"),
        "several messages in one entry: {entries}"
    );
    let expected: Vec<(String, String)> = ["x1", "x2", "x3", "x4", "y1", "y2", "y3"]
        .iter()
        .zip(&serials)
        .map(|(id, serial)| (serial.clone(), id.to_string()))
        .collect();
    let held = |hub: &crate::hub::Hub| {
        let query = HistoryQuery {
            limit: 100,
            ..HistoryQuery::default()
        };
        let mut got: Vec<(String, String)> = hub
            .history(channel, &query)
            .iter()
            .map(|m| {
                (
                    m.serial.clone().unwrap_or_default(),
                    m.id.clone().unwrap_or_default(),
                )
            })
            .collect();
        got.sort();
        got
    };
    eventually("delivery", "redis", || held(hub) == expected).await;
    // Another node loads the channel from the store.
    let late = redis_node(server.port).await;
    late.backend.bus.join(channel).await.expect("joined");
    eventually("the late node's load", "redis", || {
        held(&late.node.hub) == expected
    })
    .await;
    // A batch with no repeat: one entry, announced in one go to both nodes.
    let mut tickets = Vec::new();
    for ids in [&["z1"][..], &["z2", "z3"]] {
        let ticket = bus
            .submit(hub, publication(channel, ids), retention)
            .await
            .expect("queued");
        tickets.push(ticket);
    }
    let mut expected = expected;
    let mut last = serials.last().cloned().unwrap_or_default();
    for (ticket, ids) in tickets.into_iter().zip([&["z1"][..], &["z2", "z3"]]) {
        let stored = ticket.await.expect("stored");
        for (serial, id) in stored.into_iter().zip(ids) {
            let serial = serial.expect("a serial");
            assert_eq!(crate::hub::log::next(&last), Some(serial.clone()));
            last = serial.clone();
            expected.push((serial, id.to_string()));
        }
    }
    eventually("both nodes' delivery", "redis", || {
        held(hub) == expected && held(&late.node.hub) == expected
    })
    .await;
    let inside = serials[5].clone();
    let applied = bus
        .annotate(
            hub,
            batch(
                channel,
                vec![annotation(&inside, "r:distinct.v1", "👍", "a")],
            ),
        )
        .await
        .expect("a message inside a shared entry is found");
    assert!(applied[0].is_some(), "{applied:?}");
}

fn push_device(id: &str, client_id: Option<&str>) -> super::push::Device {
    super::push::Device {
        id: id.to_owned(),
        client_id: client_id.map(str::to_owned),
        form_factor: "phone".into(),
        platform: "android".into(),
        metadata: serde_json::json!({}),
        device_secret: Some(format!("secret-{id}")),
        push: super::push::DevicePush {
            recipient: serde_json::json!({"transportType": "fcm", "registrationToken": id}),
            state: "ACTIVE".into(),
            error_reason: None,
        },
        device_identity_token: Some(format!("token-{id}")),
        token_issued: Some(1),
    }
}

#[tokio::test]
async fn push_registrations_and_subscriptions_keep_their_indexes_in_step() {
    use super::push::{Subscriber, Subscription};
    for_each_backend(|subject| async move {
        let store = &subject.backend.push;
        let name = subject.name;
        let ids = |devices: Vec<super::push::Device>| -> Vec<String> {
            let mut ids: Vec<String> = devices.into_iter().map(|d| d.id).collect();
            ids.sort();
            ids
        };
        for (id, client) in [("d1", Some("ann")), ("d2", Some("ann")), ("d3", None)] {
            store
                .save_device("app", &push_device(id, client))
                .await
                .unwrap();
        }
        // Apps do not see each other's devices.
        store
            .save_device("other", &push_device("d1", None))
            .await
            .unwrap();
        assert_eq!(
            store.device("app", "d1").await.unwrap(),
            Some(push_device("d1", Some("ann"))),
            "{name}"
        );
        assert_eq!(
            ids(store.devices("app", None).await.unwrap()),
            ["d1", "d2", "d3"],
            "{name}"
        );
        assert_eq!(
            ids(store.devices("app", Some("ann")).await.unwrap()),
            ["d1", "d2"],
            "{name}"
        );
        // A device that changes clientId leaves the old one's index.
        store
            .save_device("app", &push_device("d2", Some("bob")))
            .await
            .unwrap();
        assert_eq!(
            ids(store.devices("app", Some("ann")).await.unwrap()),
            ["d1"],
            "{name}"
        );

        let sub = |channel: &str, subscriber: Subscriber| Subscription {
            channel: channel.into(),
            subscriber,
        };
        for subscription in [
            sub("push:a", Subscriber::Device("d3".into())),
            sub("push:a", Subscriber::Client("ann".into())),
            sub("push:a", Subscriber::Device("d1".into())),
            sub("push:b", Subscriber::Device("d3".into())),
        ] {
            store.subscribe("app", &subscription).await.unwrap();
        }
        // d1 directly and through ann: once, all on one page.
        assert_eq!(
            recipient_pages(store.as_ref(), "app", "push:a", 100).await,
            [["d1", "d3"]],
            "{name}"
        );
        assert_eq!(
            store.channels("app").await.unwrap(),
            ["push:a", "push:b"],
            "{name}"
        );
        assert_eq!(
            store.subscriptions("app", Some("push:b")).await.unwrap(),
            [sub("push:b", Subscriber::Device("d3".into()))],
            "{name}"
        );
        assert_eq!(
            store.subscriptions("app", None).await.unwrap().len(),
            4,
            "{name}"
        );
        assert!(store.channels("other").await.unwrap().is_empty(), "{name}");

        // Removing d3 takes its subscriptions, and push:b with them.
        store
            .remove_devices("app", &["d3".to_owned()])
            .await
            .unwrap();
        assert_eq!(store.channels("app").await.unwrap(), ["push:a"], "{name}");
        assert!(
            store
                .subscriptions_of("app", &Subscriber::Device("d3".into()))
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        store
            .unsubscribe("app", &[sub("push:a", Subscriber::Client("ann".into()))])
            .await
            .unwrap();
        assert_eq!(
            recipient_pages(store.as_ref(), "app", "push:a", 100).await,
            [["d1"]],
            "{name}"
        );

        // A deleted app leaves nothing; the other app keeps its own.
        store.forget_app("app").await.unwrap();
        assert!(
            store.devices("app", None).await.unwrap().is_empty(),
            "{name}"
        );
        assert!(
            store.devices("app", Some("ann")).await.unwrap().is_empty(),
            "{name}"
        );
        assert!(store.channels("app").await.unwrap().is_empty(), "{name}");
        assert!(
            store
                .subscriptions_of("app", &Subscriber::Device("d1".into()))
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        assert_eq!(
            ids(store.devices("other", None).await.unwrap()),
            ["d1"],
            "{name}"
        );
    })
    .await;
}

/// The device ids (sorted) of each page of `channel`'s recipients, `limit` subscribers a page.
async fn recipient_pages(
    store: &dyn super::push::PushStore,
    scope: &str,
    channel: &str,
    limit: usize,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .recipients_page(scope, channel, cursor.as_deref(), limit)
            .await
            .unwrap();
        pages.push(page_ids(&page));
        cursor = page.next;
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 10_000, "the pages never end");
    }
}

fn page_ids(page: &super::push::RecipientsPage) -> Vec<String> {
    let mut ids: Vec<String> = page.devices.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn push_recipients_come_in_pages_and_none_is_missed_while_subscriptions_change() {
    use super::push::{Subscriber, Subscription};
    use std::collections::{BTreeMap, BTreeSet};
    for_each_backend(|subject| async move {
        let store = subject.backend.push.as_ref();
        let name = subject.name;
        let subscribe = |subscriber: Subscriber| async move {
            let subscription = Subscription {
                channel: "push:big".into(),
                subscriber,
            };
            store.subscribe("", &subscription).await.unwrap();
        };
        // 150 devices subscribed directly (past Redis's small-set encoding, so SSCAN really
        // pages), and the 5 devices of each of user0..user9 through their clientId as well.
        for n in 0..150 {
            let id = format!("dev{n:03}");
            let client = format!("user{}", n % 30);
            store
                .save_device("", &push_device(&id, Some(&client)))
                .await
                .unwrap();
            subscribe(Subscriber::Device(id)).await;
        }
        for n in 0..10 {
            subscribe(Subscriber::Client(format!("user{n}"))).await;
        }

        let limit = 10;
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .recipients_page("", "push:big", cursor.as_deref(), limit)
                .await
                .unwrap();
            pages.push(page_ids(&page));
            if pages.len() == 1 {
                // Mid-read: 300 more subscribers (Redis grows and rehashes the set) and one gone.
                for n in 0..300 {
                    subscribe(Subscriber::Device(format!("late{n:03}"))).await;
                }
                store
                    .unsubscribe(
                        "",
                        &[Subscription {
                            channel: "push:big".into(),
                            subscriber: Subscriber::Device("dev149".into()),
                        }],
                    )
                    .await
                    .unwrap();
            }
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
            assert!(pages.len() < 10_000, "{name}: the pages never end");
        }

        let mut pages_of: BTreeMap<&str, usize> = BTreeMap::new();
        for id in pages.iter().flatten() {
            *pages_of.entry(id).or_default() += 1;
        }
        // Every device subscribed for the whole read came (the late ones have no registration).
        let missed: Vec<String> = (0..149)
            .map(|n| format!("dev{n:03}"))
            .filter(|id| !pages_of.contains_key(id.as_str()))
            .collect();
        assert!(missed.is_empty(), "{name}: missed {missed:?}");
        assert!(
            pages
                .iter()
                .all(|page| { page.iter().collect::<BTreeSet<_>>().len() == page.len() }),
            "{name}: a device twice on one page"
        );
        // Subscribed both ways, a device may come on two pages: the caller dedupes.
        assert!(
            pages_of.values().any(|&n| n > 1),
            "{name}: no device on two pages: {pages:?}"
        );
        // Bounded pages: a page's subscribers are about `limit`, a clientId bringing 5 devices.
        let largest = pages.iter().map(Vec::len).max().unwrap_or_default();
        assert!(
            pages.len() > 10 && largest <= 6 * limit,
            "{name}: {} pages, largest {largest}",
            pages.len()
        );
    })
    .await;
}
