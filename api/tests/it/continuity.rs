//! Continuity over real sockets: connection resume (with live traffic racing the replay), the
//! resume TTL, presence after drops and CLOSE, msgSerial de-duplication on resend, and REST
//! history paged through `Link` headers (reference §4.6, §5.4, §6, §8.4).
//!
//! Timers under test (the resume TTL, the presence grace) are real and short: these tests talk to
//! the server over loopback sockets, where tokio's paused clock would fire every other timeout
//! while the runtime waits on I/O.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway::config::Timing;
use gateway::Config;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::support::*;

const PRESENCE: u64 = 14;
const SYNC: u64 = 16;

/// ATTACHED flags (reference §2.3).
const HAS_PRESENCE: u64 = 1;
const RESUMED: u64 = 4;

/// Presence actions.
const ENTER: u64 = 2;
const LEAVE: u64 = 3;
const UPDATE: u64 = 4;

fn config_with(configure: impl FnOnce(&mut Config)) -> Config {
    let mut config = config();
    configure(&mut config);
    config
}

fn timing_with(configure: impl FnOnce(&mut Timing)) -> Config {
    config_with(|config| configure(&mut config.timing))
}

/// Waits for a condition on server state that follows a client action with no frame to show
/// for it (the server noticing a dropped socket). Polls; fails after `WAIT`.
async fn until(what: &str, condition: impl Fn() -> bool) {
    eventually(what, WAIT, || std::future::ready(condition())).await;
}

/// Drops `client`'s socket without CLOSE and waits until the server has noticed and parked the
/// connection: it leaves its channels (`channel` among them) just before it is parked, in the
/// same step.
async fn drop_transport(server: &Server, client: Client, channel: &str) {
    let connection_id = client.id().to_owned();
    let attached_before = server.gateway.hub().occupancy(channel).connections;
    assert!(
        attached_before > 0,
        "{connection_id} is not attached to {channel}"
    );
    drop(client);
    until(&format!("{connection_id} has left {channel}"), || {
        server.gateway.hub().occupancy(channel).connections < attached_before
    })
    .await;
}

fn connection_key(client: &Client) -> String {
    client.connected["connectionDetails"]["connectionKey"]
        .as_str()
        .unwrap_or_else(|| panic!("CONNECTED without connectionKey: {}", client.connected))
        .to_owned()
}

/// A client that attached to `channel` and lost its transport, parked for a resume: its
/// connection id and resume key.
async fn parked(server: &Server, client_id: &str, channel: &str) -> (String, String) {
    let mut client = server.connect(&query(client_id)).await;
    let id_and_key = id_and_key(&client);
    client.attach(channel).await;
    drop_transport(server, client, channel).await;
    id_and_key
}

/// The `data` of each message in a JSON array of messages.
fn data_of(messages: &Value) -> Vec<&Value> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["data"])
        .collect()
}

/// What a client needs to resume: its connection id and its resume key.
fn id_and_key(client: &Client) -> (String, String) {
    (client.id().to_owned(), connection_key(client))
}

fn channel_serial_of(attached: &Value) -> String {
    attached["channelSerial"].as_str().unwrap().to_owned()
}

fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(client_id: &str) -> String {
    format!("key={FULL_KEY}&clientId={client_id}")
}

fn resume_query(client_id: &str, key: &str) -> String {
    format!("{}&resume={}", query(client_id), query_escape(key))
}

fn flags_of(frame: &Value) -> u64 {
    frame["flags"].as_u64().unwrap_or(0)
}

/// ATTACH carrying the last channelSerial the client saw, as every SDK re-attaches.
async fn reattach(client: &mut Client, channel: &str, channel_serial: &str) -> Value {
    client
        .send(json!({"action": ATTACH, "channel": channel, "channelSerial": channel_serial}))
        .await;
    let attached = client.expect(ATTACHED).await;
    assert_eq!(attached["channel"], channel, "{attached}");
    attached
}

/// A resume the server honours: same connectionId, no error (reference §4.6 item 2).
async fn resume(server: &Server, client_id: &str, key: &str, connection_id: &str) -> Client {
    let client = server.connect(&resume_query(client_id, key)).await;
    assert_eq!(
        client.id(),
        connection_id,
        "resume must keep the connectionId: {}",
        client.connected
    );
    assert!(
        client.connected.get("error").is_none(),
        "a successful resume has no error: {}",
        client.connected
    );
    client
}

/// A resume the server refuses (80008): the client gets a new connection instead.
async fn resume_refused(server: &Server, client_id: &str, key: &str, connection_id: &str) {
    let client = server.connect(&resume_query(client_id, key)).await;
    assert_ne!(client.id(), connection_id, "{}", client.connected);
    assert_error(&client.connected, 80008, 400);
}

/// Follows a subscriber's MESSAGE stream of sequence-numbered messages ("0", "1", ...) and
/// fails on any gap, duplicate or reordering. Keeps the channelSerial as ably-js does: from
/// ATTACHED and from every MESSAGE.
struct Sequence {
    channel: &'static str,
    next: u64,
    channel_serial: String,
    last_message_serial: Option<String>,
    /// The last frames seen, for the failure message.
    recent: Vec<String>,
}

impl Sequence {
    fn new(channel: &'static str, attached: &Value) -> Sequence {
        let mut sequence = Sequence {
            channel,
            next: 0,
            channel_serial: String::new(),
            last_message_serial: None,
            recent: Vec::new(),
        };
        sequence.attached(attached);
        sequence
    }

    fn attached(&mut self, attached: &Value) {
        self.note(attached);
        self.channel_serial = attached["channelSerial"]
            .as_str()
            .unwrap_or_else(|| panic!("ATTACHED without channelSerial: {attached}"))
            .to_owned();
    }

    fn note(&mut self, frame: &Value) {
        if self.recent.len() == 8 {
            self.recent.remove(0);
        }
        self.recent.push(frame.to_string());
    }

    fn message(&mut self, frame: &Value) {
        self.note(frame);
        assert_eq!(
            frame["action"],
            MESSAGE,
            "only messages are due: {frame}\nrecent frames:\n{}",
            self.recent.join("\n")
        );
        assert_eq!(frame["channel"], self.channel, "{frame}");
        for message in frame["messages"].as_array().expect("messages") {
            let n: u64 = message["data"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| panic!("not one of ours: {frame}"));
            assert_eq!(
                n,
                self.next,
                "expected message {} next (gap or duplicate); recent frames:\n{}",
                self.next,
                self.recent.join("\n")
            );
            let serial = message["serial"].as_str().expect("serial").to_owned();
            if let Some(last) = &self.last_message_serial {
                assert!(serial > *last, "serial {serial} after {last}: {frame}");
            }
            self.last_message_serial = Some(serial);
            self.next += 1;
        }
        self.channel_serial = frame["channelSerial"]
            .as_str()
            .unwrap_or_else(|| panic!("MESSAGE without channelSerial: {frame}"))
            .to_owned();
    }

    /// Reads messages until every message up to (not including) `end` has been seen.
    async fn read_until(&mut self, client: &mut Client, end: u64) {
        while self.next < end {
            let frame = client.frame().await;
            self.message(&frame);
        }
    }
}

/// A subscriber attached to `channel` that has read message "0" from a publisher of its own: where
/// every resume test starts. Returns (subscriber, its connection id, its resume key, its
/// sequence, publisher).
async fn subscribed(
    server: &Server,
    channel: &'static str,
) -> (Client, String, String, Sequence, Client) {
    let mut subscriber = server.connect(&query("subscriber")).await;
    let (connection_id, key) = id_and_key(&subscriber);
    let attached = subscriber.attach(channel).await;
    let mut sequence = Sequence::new(channel, &attached);
    let mut publisher = server.connect(&query("publisher")).await;
    publisher
        .publish_acked(channel, 0, json!([{"data": "0"}]))
        .await;
    sequence.read_until(&mut subscriber, 1).await;
    (subscriber, connection_id, key, sequence, publisher)
}

/// Publishes "0", "1", ... on `channel` through `client`, one at a time, each awaiting its
/// ACK, until `stop`; `published` counts the acknowledged ones.
fn spawn_publisher(
    mut client: Client,
    channel: &'static str,
    stop: Arc<AtomicBool>,
    published: watch::Sender<u64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            client
                .publish_acked(channel, n, json!([{"name": "seq", "data": n.to_string()}]))
                .await;
            n += 1;
            published.send_replace(n);
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_under_live_traffic_delivers_every_message_exactly_once() {
    const CHANNEL: &str = "race";
    const ITERATIONS: usize = 20;
    // Enough that what is missed while away always fits: this test is about the race between the
    // replay and live publishes, not about how much the log or the queue holds.
    let server = Server::with_config(config_with(|config| {
        config.hub.retention.max_messages = 100_000;
        config.limits.outbound_queue.bytes = 64 * 1024 * 1024;
    }))
    .await;
    let mut subscriber = server.connect(&query("subscriber")).await;
    let (connection_id, mut key) = id_and_key(&subscriber);
    let attached = subscriber.attach(CHANNEL).await;
    let mut sequence = Sequence::new(CHANNEL, &attached);

    let stop = Arc::new(AtomicBool::new(false));
    let (published_tx, mut published) = watch::channel(0u64);
    let publisher = server.connect(&query("publisher")).await;
    let publisher = spawn_publisher(publisher, CHANNEL, stop.clone(), published_tx);

    let started = Instant::now();
    let mut replays = 0;
    for iteration in 0..ITERATIONS {
        // Past the replay (everything published by now) and into live traffic.
        let live_until = *published.borrow() + 10;
        sequence.read_until(&mut subscriber, live_until).await;

        // The socket drops without CLOSE.
        drop_transport(&server, subscriber, CHANNEL).await;
        // Messages go on while it is away...
        let away_until = *published.borrow() + 20;
        tokio::time::timeout(WAIT, published.wait_for(|n| *n >= away_until))
            .await
            .expect("publisher stalled")
            .unwrap();

        // ...and while it resumes and re-attaches: the publisher never pauses.
        subscriber = resume(&server, "subscriber", &key, &connection_id).await;
        key = connection_key(&subscriber);
        let channel_serial = sequence.channel_serial.clone();
        let attached = reattach(&mut subscriber, CHANNEL, &channel_serial).await;
        assert_ne!(
            flags_of(&attached) & RESUMED,
            0,
            "iteration {iteration}: resume from {channel_serial} must be RESUMED: {attached}"
        );
        assert!(attached.get("error").is_none(), "{attached}");
        // Messages acknowledged before the ATTACHED and not yet seen can only come by replay.
        if *published.borrow() > sequence.next {
            replays += 1;
        }
        sequence.attached(&attached);
    }
    stop.store(true, Ordering::Relaxed);
    let total = publisher.await.unwrap();
    sequence.read_until(&mut subscriber, total).await;
    assert_eq!(sequence.next, total);
    assert_eq!(
        replays, ITERATIONS,
        "every resume had missed messages to replay"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_misses_more_than_the_outbound_queue_holds_still_catches_up() {
    const CHANNEL: &str = "catch-up";
    // Defaults: the log keeps 500 messages, a connection's queue 256 frames. A client that was
    // away while 490 messages went by is within what the log covers, so it is owed all 490.
    const MISSED: u64 = 490;
    let server = Server::start().await;
    let (subscriber, connection_id, key, mut sequence, mut publisher) =
        subscribed(&server, CHANNEL).await;

    drop_transport(&server, subscriber, CHANNEL).await;
    for n in 1..=MISSED {
        publisher
            .publish_acked(CHANNEL, n, json!([{"data": n.to_string()}]))
            .await;
    }

    let mut subscriber = resume(&server, "subscriber", &key, &connection_id).await;
    let channel_serial = sequence.channel_serial.clone();
    let attached = reattach(&mut subscriber, CHANNEL, &channel_serial).await;
    assert_ne!(flags_of(&attached) & RESUMED, 0, "{attached}");
    sequence.attached(&attached);
    sequence.read_until(&mut subscriber, MISSED + 1).await;
    publisher
        .publish_acked(
            CHANNEL,
            MISSED + 1,
            json!([{"data": (MISSED + 1).to_string()}]),
        )
        .await;
    sequence.read_until(&mut subscriber, MISSED + 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_right_after_a_resumed_attached_loses_nothing() {
    const CHANNEL: &str = "attached-then-drop";
    let server = Server::start().await;
    let (subscriber, connection_id, key, mut sequence, mut publisher) =
        subscribed(&server, CHANNEL).await;

    drop_transport(&server, subscriber, CHANNEL).await;
    for n in 1..=5u64 {
        publisher
            .publish_acked(CHANNEL, n, json!([{"data": n.to_string()}]))
            .await;
    }
    let mut subscriber = resume(&server, "subscriber", &key, &connection_id).await;
    // Each resume hands out a fresh key; the next resume must use it.
    let key = connection_key(&subscriber);
    let channel_serial = sequence.channel_serial.clone();
    let attached = reattach(&mut subscriber, CHANNEL, &channel_serial).await;
    assert_ne!(flags_of(&attached) & RESUMED, 0, "{attached}");
    // ably-js keeps the channelSerial of every ATTACHED (RTL15b). The transport dies before the
    // replay that follows is read: the next resume starts from what ATTACHED said.
    sequence.attached(&attached);
    drop_transport(&server, subscriber, CHANNEL).await;

    let mut subscriber = resume(&server, "subscriber", &key, &connection_id).await;
    let channel_serial = sequence.channel_serial.clone();
    let attached = reattach(&mut subscriber, CHANNEL, &channel_serial).await;
    sequence.attached(&attached);
    let claimed = flags_of(&attached) & RESUMED != 0;
    publisher
        .publish_acked(CHANNEL, 6, json!([{"data": "6"}]))
        .await;
    // RESUMED promises messages 1 to 5 are still coming; without it the client knows they may not.
    if claimed {
        sequence.read_until(&mut subscriber, 7).await;
    } else {
        assert_error(&attached, 90003, 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_while_the_old_transport_is_still_open_takes_it_over() {
    const CHANNEL: &str = "takeover";
    let server = Server::start().await;
    let (mut stale, connection_id, key, mut sequence, mut publisher) =
        subscribed(&server, CHANNEL).await;

    // The client gave up on a transport that went silent (ably-js does after maxIdleInterval +
    // realtimeRequestTimeout, 25 s) before the server noticed (peer_idle_timeout, 45 s): the old
    // socket is still open on the server's side when the resume arrives.
    // A resume of a connection the server still holds takes it over.
    let mut subscriber = resume(&server, "subscriber", &key, &connection_id).await;
    // The superseded transport is ended (DISCONNECTED, if it can still hear it, then closed).
    loop {
        match stale.event().await {
            Event::Closed(_) => break,
            Event::Frame(frame) if frame["action"] == DISCONNECTED => continue,
            Event::Frame(frame) if frame["action"] == HEARTBEAT => continue,
            Event::Frame(frame) => panic!("the superseded transport got {frame}"),
        }
    }
    let channel_serial = sequence.channel_serial.clone();
    let attached = reattach(&mut subscriber, CHANNEL, &channel_serial).await;
    assert_ne!(flags_of(&attached) & RESUMED, 0, "{attached}");
    publisher
        .publish_acked(CHANNEL, 1, json!([{"data": "1"}]))
        .await;
    sequence.read_until(&mut subscriber, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_the_ttl_is_refused_80008_and_attach_is_not_resumed() {
    const CHANNEL: &str = "ttl";
    const TTL: Duration = Duration::from_millis(300);
    let server = Server::with_config(timing_with(|timing| {
        timing.connection_state_ttl = TTL;
        timing.presence_grace = Duration::from_millis(100);
    }))
    .await;
    assert_eq!(
        server.connect(&query("probe")).await.connected["connectionDetails"]["connectionStateTtl"],
        300
    );
    let (subscriber, connection_id, key, sequence, mut publisher) =
        subscribed(&server, CHANNEL).await;

    // Within the TTL the resume is honoured.
    drop_transport(&server, subscriber, CHANNEL).await;
    let mut subscriber = resume(&server, "subscriber", &key, &connection_id).await;
    let attached = reattach(&mut subscriber, CHANNEL, &sequence.channel_serial.clone()).await;
    assert_ne!(flags_of(&attached) & RESUMED, 0, "{attached}");

    drop_transport(&server, subscriber, CHANNEL).await;
    publisher
        .publish_acked(CHANNEL, 1, json!([{"data": "1"}]))
        .await;
    // The TTL itself is what is under test, so this waits it out once (with a margin for a busy
    // machine) and then asks; a resume attempt before then would succeed and restart the TTL.
    tokio::time::sleep(TTL + Duration::from_millis(200)).await;

    let mut refused = server.connect(&resume_query("subscriber", &key)).await;
    assert_ne!(
        refused.id(),
        connection_id,
        "an expired connection is not resumed: {}",
        refused.connected
    );
    assert_error(&refused.connected, 80008, 400);
    assert_ne!(
        connection_key(&refused),
        key,
        "a new connection gets a new key"
    );
    // Every channel re-attaches with its channelSerial; none may claim continuity.
    let attached = reattach(&mut refused, CHANNEL, &sequence.channel_serial.clone()).await;
    assert_eq!(
        flags_of(&attached) & RESUMED,
        0,
        "after a failed resume no channel is RESUMED: {attached}"
    );
    assert_error(&attached, 90003, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_malformed_resume_keys_get_a_new_connection() {
    let server = Server::start().await;
    // A key of the right shape the server never issued: a new connection with an error. Which
    // code is free (clients ignore it, reference §4.6): "unable to recover" or "invalid key".
    let stranger = server
        .connect(&resume_query("someone", "nosuchconn!AAAAAAAAAAAAAAAA"))
        .await;
    assert_ne!(stranger.id(), "nosuchconn");
    let code = stranger.connected["error"]["code"].as_u64();
    assert!(
        matches!(code, Some(80008 | 80018)),
        "{}",
        stranger.connected
    );
    assert_error(&stranger.connected, code.unwrap_or_default(), 400);

    let malformed = server
        .connect(&resume_query("someone", "no-separator-here"))
        .await;
    assert_error(&malformed.connected, 80018, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_key_is_useless_to_another_client_id() {
    const CHANNEL: &str = "identity";
    let server = Server::start().await;
    let (connection_id, key) = parked(&server, "alice", CHANNEL).await;

    resume_refused(&server, "mallory", &key, &connection_id).await;
    // The owner still can.
    resume(&server, "alice", &key, &connection_id).await;
}

/// Sends PRESENCE and reads until its ACK; anything else on the way must be presence (the
/// member's own echo, or the SYNC after an attach).
async fn send_presence(client: &mut Client, channel: &str, msg_serial: u64, event: Value) {
    client
        .send(json!({
            "action": PRESENCE,
            "channel": channel,
            "msgSerial": msg_serial,
            "presence": [event],
        }))
        .await;
    loop {
        let frame = client.frame().await;
        match frame["action"].as_u64() {
            Some(ACK) => {
                assert_eq!(frame["msgSerial"], msg_serial, "{frame}");
                assert_eq!(frame["count"], 1, "{frame}");
                return;
            }
            Some(PRESENCE | SYNC) => continue,
            _ => panic!("expected the ACK of PRESENCE {msg_serial}, got {frame}"),
        }
    }
}

/// `member` (alice) sends a presence `action` with `data`; `observer` sees just that event.
async fn alice_presence(
    member: &mut Client,
    observer: &mut Client,
    channel: &str,
    msg_serial: u64,
    action: u64,
    data: &str,
) -> Value {
    let event = json!({"action": action, "data": data});
    send_presence(member, channel, msg_serial, event).await;
    expect_presence_event(observer, action, "alice").await
}

/// The next frame is PRESENCE with exactly one event, which has this action and clientId.
async fn expect_presence_event(client: &mut Client, action: u64, client_id: &str) -> Value {
    let frame = client.expect(PRESENCE).await;
    let events = frame["presence"].as_array().expect("presence events");
    assert_eq!(events.len(), 1, "{frame}");
    let event = events[0].clone();
    assert_eq!(event["action"], action, "{frame}");
    assert_eq!(event["clientId"], client_id, "{frame}");
    event
}

async fn rest_members(server: &Server, channel: &str) -> Vec<Value> {
    let path = format!("/channels/{channel}/presence");
    let response = server.get(&path).await;
    assert_eq!(response.status, 200, "{response:?}");
    response
        .json()
        .as_array()
        .expect("array of members")
        .clone()
}

/// A server with this presence grace, and `observer_and_member` on it.
async fn member_with_grace(grace: Duration, channel: &str) -> (Server, Client, Client, Value) {
    let server = Server::with_config(timing_with(|timing| timing.presence_grace = grace)).await;
    let (observer, member, member_attached) = observer_and_member(&server, channel).await;
    (server, observer, member, member_attached)
}

/// An observer attached to `channel` and a member that has entered it (the observer has seen the
/// ENTER).
async fn observer_and_member(server: &Server, channel: &str) -> (Client, Client, Value) {
    let mut observer = server.connect(&query("observer")).await;
    let attached = observer.attach(channel).await;
    assert_eq!(flags_of(&attached) & HAS_PRESENCE, 0, "{attached}");
    let mut member = server.connect(&query("alice")).await;
    let member_attached = member.attach(channel).await;
    let enter = alice_presence(&mut member, &mut observer, channel, 0, ENTER, "hi").await;
    assert_eq!(enter["connectionId"], member.id(), "{enter}");
    assert_eq!(enter["data"], "hi", "{enter}");
    (observer, member, member_attached)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_member_leaves_after_the_presence_grace() {
    const CHANNEL: &str = "lobby";
    const GRACE: Duration = Duration::from_millis(200);
    let (server, mut observer, member, _) = member_with_grace(GRACE, CHANNEL).await;
    let member_id = member.id().to_owned();
    assert_eq!(rest_members(&server, CHANNEL).await.len(), 1);

    let dropped_at = Instant::now();
    drop(member);
    let leave = expect_presence_event(&mut observer, LEAVE, "alice").await;
    let after = dropped_at.elapsed();
    assert!(after >= GRACE, "left after {after:?}, before the grace");
    assert_eq!(leave["connectionId"], member_id, "{leave}");
    assert_eq!(
        leave["data"], "hi",
        "a LEAVE carries the member's data: {leave}"
    );
    let id = leave["id"].as_str().expect("LEAVE id");
    assert!(
        !id.starts_with(&format!("{member_id}:")),
        "a server-made LEAVE must not look like the member's own (§6 item 7): {id}"
    );
    assert!(rest_members(&server, CHANNEL).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_resumes_within_the_grace_stays() {
    const CHANNEL: &str = "lobby";
    const GRACE: Duration = Duration::from_millis(200);
    let (server, mut observer, member, member_attached) = member_with_grace(GRACE, CHANNEL).await;
    let (member_id, key) = id_and_key(&member);
    let channel_serial = channel_serial_of(&member_attached);

    drop_transport(&server, member, CHANNEL).await;
    let mut member = resume(&server, "alice", &key, &member_id).await;
    let attached = reattach(&mut member, CHANNEL, &channel_serial).await;
    assert_ne!(
        flags_of(&attached) & RESUMED,
        0,
        "presence kept, so continuity kept: {attached}"
    );
    assert_ne!(flags_of(&attached) & HAS_PRESENCE, 0, "{attached}");
    let sync = member.expect(SYNC).await;
    let members = sync["presence"].as_array().expect("SYNC members");
    assert_eq!(members.len(), 1, "{sync}");
    assert_eq!(members[0]["clientId"], "alice", "{sync}");
    assert_eq!(members[0]["connectionId"], member_id, "{sync}");
    // The grace is what is under test: outlast it once, then show nothing left in between.
    tokio::time::sleep(GRACE * 2).await;
    let update = alice_presence(&mut member, &mut observer, CHANNEL, 1, UPDATE, "still here").await;
    assert_eq!(update["connectionId"], member_id, "{update}");
    assert_eq!(rest_members(&server, CHANNEL).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_after_the_grace_is_told_continuity_was_lost() {
    const CHANNEL: &str = "lobby";
    let grace = Duration::from_millis(100);
    let (server, mut observer, member, member_attached) = member_with_grace(grace, CHANNEL).await;
    let (member_id, key) = id_and_key(&member);
    let channel_serial = channel_serial_of(&member_attached);

    drop(member);
    expect_presence_event(&mut observer, LEAVE, "alice").await;
    // Still within the TTL: the connection resumes, but its members are gone, so the channel
    // must not claim continuity (the client re-enters on an ATTACHED without RESUMED).
    let mut member = resume(&server, "alice", &key, &member_id).await;
    let attached = reattach(&mut member, CHANNEL, &channel_serial).await;
    assert_eq!(flags_of(&attached) & RESUMED, 0, "{attached}");
    let enter = alice_presence(&mut member, &mut observer, CHANNEL, 1, ENTER, "back").await;
    assert_eq!(enter["data"], "back", "{enter}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_makes_members_leave_at_once() {
    const CHANNEL: &str = "lobby";
    // The default 15 s grace: a LEAVE within `WAIT` (5 s) can only be the CLOSE's doing.
    let server = Server::start().await;
    let (mut observer, mut member, _) = observer_and_member(&server, CHANNEL).await;
    let (member_id, key) = id_and_key(&member);
    member.send(json!({"action": CLOSE})).await;
    loop {
        let frame = member.frame().await;
        match frame["action"].as_u64() {
            Some(CLOSED) => break,
            // Its own LEAVE may come first.
            Some(PRESENCE) => continue,
            _ => panic!("expected CLOSED, got {frame}"),
        }
    }
    member.expect_closed().await;
    let leave = expect_presence_event(&mut observer, LEAVE, "alice").await;
    assert_eq!(leave["connectionId"], member_id, "{leave}");
    assert!(rest_members(&server, CHANNEL).await.is_empty());
    // A closed connection is not kept for a resume.
    resume_refused(&server, "alice", &key, &member_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_resent_after_resume_is_delivered_once() {
    const CHANNEL: &str = "dedupe";
    let server = Server::start().await;
    let mut subscriber = server.attached(&query("subscriber"), CHANNEL).await;
    let mut publisher = server
        .connect(&format!("{}&format=msgpack", query("publisher")))
        .await;
    let (publisher_id, key) = id_and_key(&publisher);
    let live_before = server.gateway.live_connections();

    let messages = json!([{"name": "n", "data": "once"}, {"name": "n", "data": "twice?"}]);
    publisher.publish(CHANNEL, 0, messages.clone()).await;
    let delivery = subscriber.expect(MESSAGE).await;
    assert_eq!(
        delivery["messages"].as_array().map(Vec::len),
        Some(2),
        "{delivery}"
    );
    // The ACK is lost with the transport.
    drop(publisher);
    until("the publisher's connection is parked", || {
        server.gateway.live_connections() < live_before
    })
    .await;

    let mut publisher = server
        .connect(&format!(
            "{}&format=msgpack",
            resume_query("publisher", &key)
        ))
        .await;
    assert_eq!(publisher.id(), publisher_id, "{}", publisher.connected);
    assert!(
        publisher.connected.get("error").is_none(),
        "{}",
        publisher.connected
    );
    // ably-js resends unacknowledged messages with their msgSerial after a resume.
    publisher.publish(CHANNEL, 0, messages).await;
    let ack = publisher.expect(ACK).await;
    assert_eq!(ack["msgSerial"], 0, "{ack}");
    assert_eq!(ack["count"], 1, "{ack}");
    publisher
        .publish_acked(CHANNEL, 1, json!([{"name": "n", "data": "after"}]))
        .await;
    let next = subscriber.expect(MESSAGE).await;
    let data = data_of(&next["messages"]);
    assert_eq!(
        data,
        [&json!("after")],
        "the resent messages were delivered again: {next}"
    );

    let history = server
        .get(format!("/channels/{CHANNEL}/messages"))
        .await
        .json();
    let stored = data_of(&history);
    assert_eq!(
        stored,
        [&json!("after"), &json!("twice?"), &json!("once")],
        "{history}"
    );
}

/// `rel="next"` from a `Link` header, as ably-js parses it (reference §8.4), turned into the
/// request path for `channel`.
fn next_link(response: &Response, channel: &str) -> Option<String> {
    let header = response
        .header("link")
        .unwrap_or_else(|| panic!("history without a Link header: {response:?}"));
    let mut next = None;
    for part in header.split(',') {
        let part = part.trim_start();
        let (url, rel) = part
            .strip_prefix('<')
            .and_then(|p| p.split_once(">; rel=\""))
            .and_then(|(url, rest)| Some((url, rest.strip_suffix('"')?)))
            .unwrap_or_else(|| panic!("Link part ably-js cannot parse: {part:?} in {header:?}"));
        let query = url
            .strip_prefix("./messages?")
            .unwrap_or_else(|| panic!("Link URL must be ./messages?<query>: {url:?}"));
        assert!(!query.is_empty(), "{header}");
        if rel == "next" {
            next = Some(format!("/channels/{channel}/messages?{query}"));
        }
    }
    next
}

/// Every page from `first`, following `rel="next"` until there is none.
async fn all_pages(server: &Server, channel: &str, first: String) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut path = Some(first);
    while let Some(current) = path.take() {
        assert!(pages.len() < 20, "Link next never ends");
        let response = server.get(&current).await;
        assert_eq!(response.status, 200, "{current}: {response:?}");
        pages.push(
            response
                .json()
                .as_array()
                .expect("a page is an array")
                .clone(),
        );
        path = next_link(&response, channel);
    }
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_history_pages_follow_link_next() {
    let server = Server::start().await;
    let mut publisher = server.connect(&query("publisher")).await;
    for (channel, count) in [("history:odd", 25u64), ("history:even", 20)] {
        let mut serials = Vec::new();
        for n in 0..count {
            serials.extend(
                publisher
                    .publish_acked(channel, n, json!([{"data": format!("m{n}")}]))
                    .await,
            );
        }
        let names = |page: &[Value]| -> Vec<String> {
            page.iter()
                .map(|m| m["data"].as_str().expect("data").to_owned())
                .collect()
        };

        let backwards = all_pages(
            &server,
            channel,
            format!("/channels/{channel}/messages?limit=10"),
        )
        .await;
        let sizes: Vec<usize> = backwards.iter().map(Vec::len).collect();
        let full_pages = (count / 10) as usize;
        assert!(
            sizes.iter().take(full_pages).all(|&s| s == 10)
                && sizes[full_pages..].iter().sum::<usize>() == (count % 10) as usize
                && sizes.len() <= full_pages + 1,
            "{channel}: page sizes {sizes:?}"
        );
        let all: Vec<Value> = backwards.concat();
        let expected: Vec<String> = (0..count).rev().map(|n| format!("m{n}")).collect();
        assert_eq!(
            names(&all),
            expected,
            "{channel}: every message once, newest first"
        );
        let got_serials: Vec<&str> = all.iter().map(|m| m["serial"].as_str().unwrap()).collect();
        let mut expected_serials: Vec<&str> = serials.iter().map(String::as_str).collect();
        expected_serials.reverse();
        assert_eq!(
            got_serials, expected_serials,
            "history serials are the ACKed ones"
        );
        for message in &all {
            for field in ["id", "timestamp", "connectionId", "serial"] {
                assert!(!message[field].is_null(), "{field} missing: {message}");
            }
        }

        let forwards = all_pages(
            &server,
            channel,
            format!("/channels/{channel}/messages?limit=10&direction=forwards"),
        )
        .await;
        let expected: Vec<String> = (0..count).map(|n| format!("m{n}")).collect();
        assert_eq!(
            names(&forwards.concat()),
            expected,
            "{channel}: forwards, oldest first"
        );
    }
}

/// RTN16d: a resumed connection keeps its id but gets a new key; the spent key cannot take the
/// connection back (80008), so two clients holding the same recovery key cannot flap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_issues_a_fresh_key_and_spends_the_old_one() {
    const CHANNEL: &str = "fresh-key";
    let server = Server::start().await;
    let (connection_id, old_key) = parked(&server, "subscriber", CHANNEL).await;

    let resumed = resume(&server, "subscriber", &old_key, &connection_id).await;
    let new_key = connection_key(&resumed);
    assert_ne!(new_key, old_key, "{}", resumed.connected);
    assert!(
        new_key.starts_with(&format!("{connection_id}!")),
        "{new_key}"
    );

    resume_refused(&server, "subscriber", &old_key, &connection_id).await;
}

/// ably-js re-sends its members' ENTERs, with the ids the server gave them, on every re-attach:
/// a repeat of what made the member present is acknowledged and nobody sees it; a changed
/// payload under that id is a real update and goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_enter_is_acknowledged_unseen_and_a_changed_one_announced() {
    const CHANNEL: &str = "lobby-repeat";
    let server = Server::start().await;
    let (mut observer, mut member, _) = observer_and_member(&server, CHANNEL).await;
    let id = rest_members(&server, CHANNEL).await[0]["id"]
        .as_str()
        .expect("member id")
        .to_owned();
    send_presence(
        &mut member,
        CHANNEL,
        1,
        json!({"action": ENTER, "id": id, "data": "hi"}),
    )
    .await;
    send_presence(
        &mut member,
        CHANNEL,
        2,
        json!({"action": ENTER, "id": id, "data": "changed"}),
    )
    .await;
    // The first thing the observer sees after the ENTER is the changed one.
    let frame = observer.expect(PRESENCE).await;
    assert_eq!(frame["presence"][0]["clientId"], "alice", "{frame}");
    assert_eq!(frame["presence"][0]["data"], "changed", "{frame}");
    assert_eq!(rest_members(&server, CHANNEL).await[0]["data"], "changed");
}
