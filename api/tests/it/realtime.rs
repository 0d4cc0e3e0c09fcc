//! The realtime happy paths: CONNECTED, ATTACH, publish with ACK, delivery across formats, echo,
//! DETACH and CLOSE (heartbeat timing: `heartbeats.rs`).

use serde_json::{json, Value};

use crate::support::*;

/// A connection in `format`, attached to `channel`.
async fn attached(server: &Server, format: &str, channel: &str) -> Client {
    server.attached(&full_key(format), channel).await
}

/// The envelope and per-message fields every delivery carries (reference §2.1, §3.1, §3.3).
fn assert_delivery(delivery: &Value, channel: &str, publisher: &str, msg_serial: u64) {
    assert_eq!(delivery["action"], MESSAGE, "{delivery}");
    assert_eq!(delivery["channel"], channel, "{delivery}");
    assert_stamped(
        delivery,
        &format!("{publisher}:{msg_serial}"),
        publisher,
        delivery,
    );
    assert!(
        delivery["channelSerial"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{delivery}"
    );
    for (index, message) in delivery["messages"].as_array().unwrap().iter().enumerate() {
        let id = format!("{publisher}:{msg_serial}:{index}");
        assert_stamped(message, &id, publisher, delivery);
        assert!(
            message.get("size").is_none(),
            "size is client-only: {delivery}"
        );
    }
}

/// The id, connectionId and timestamp a delivery and each of its messages carry.
fn assert_stamped(value: &Value, id: &str, publisher: &str, delivery: &Value) {
    assert_eq!(value["id"], id, "{delivery}");
    assert_eq!(value["connectionId"], publisher, "{delivery}");
    assert!(value["timestamp"].is_u64(), "{delivery}");
}

/// The next MESSAGE, checked as the first (msgSerial 0) publish of `serials` by `publisher`.
async fn expect_delivery(
    subscriber: &mut Client,
    channel: &str,
    publisher: &str,
    serials: &[String],
) -> Value {
    let delivery = subscriber.expect(MESSAGE).await;
    assert_delivery(&delivery, channel, publisher, 0);
    assert_eq!(serials_of(&delivery), serials, "{delivery}");
    delivery
}

/// Publishes `sent` on `trip` from a `format` connection as `client_id`, not attached (publishing
/// needs no attach, reference §5.5). Returns the ACK's serials and what a JSON and a msgpack
/// subscriber got, each checked by `expect_delivery`.
async fn trip(format: &str, client_id: &str, sent: Value) -> (Vec<String>, [(Format, Value); 2]) {
    let server = Server::start().await;
    let mut json_sub = attached(&server, "json", "trip").await;
    let mut msgpack_sub = attached(&server, "msgpack", "trip").await;
    let mut publisher = server
        .connect(&format!("{}&clientId={client_id}", full_key(format)))
        .await;
    let serials = publisher.publish_acked("trip", 0, sent).await;
    let pid = publisher.id().to_owned();
    let json = expect_delivery(&mut json_sub, "trip", &pid, &serials).await;
    let msgpack = expect_delivery(&mut msgpack_sub, "trip", &pid, &serials).await;
    (
        serials,
        [(json_sub.format, json), (msgpack_sub.format, msgpack)],
    )
}

/// The next MESSAGE, which must be on `channel` (`why` says what another one would mean).
async fn expect_message_on(subscriber: &mut Client, channel: &str, why: &str) {
    let delivery = subscriber.expect(MESSAGE).await;
    assert_eq!(delivery["channel"], channel, "{why}: {delivery}");
}

fn serials_of(delivery: &Value) -> Vec<&str> {
    delivery["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["serial"].as_str().expect("message serial"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_carries_connection_details() {
    let server = Server::start().await;
    let client = server
        .connect(&format!("{}&clientId=alice", full_key("json")))
        .await;
    let connected = &client.connected;
    let id = client.id();
    assert!(!id.is_empty() && !id.contains(':'), "{connected}");
    let details = &connected["connectionDetails"];
    assert!(
        details["connectionKey"]
            .as_str()
            .is_some_and(|k| !k.is_empty()),
        "{connected}"
    );
    assert_eq!(details["clientId"], "alice", "{connected}");
    assert_eq!(details["maxMessageSize"], 65536, "{connected}");
    assert_eq!(details["connectionStateTtl"], 120000, "{connected}");
    assert!(
        details["maxIdleInterval"].as_u64().is_some_and(|ms| ms > 0),
        "{connected}"
    );
    assert!(details["serverId"].is_string(), "{connected}");

    // No format parameter means JSON (ably-python relies on it): text frames come back.
    let plain = server.connect(&format!("key={FULL_KEY}")).await;
    assert_eq!(plain.format, Format::Json);

    let msgpack = server.connect(&full_key("msgpack")).await;
    assert_ne!(msgpack.id(), id, "connection ids must be unique");
    assert!(
        msgpack.connected["connectionDetails"]
            .get("clientId")
            .is_none_or(Value::is_null),
        "anonymous connection got a clientId: {}",
        msgpack.connected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_grants_the_modes_the_capability_allows() {
    let server = Server::start().await;
    let mut full = server.connect(&full_key("json")).await;
    let attached = full.attach("room").await;
    // The four classic modes plus annotation_publish, as Ably grants a full capability.
    assert_eq!(attached["flags"], 983040 + 2097152, "{attached}");

    let mut limited = server
        .connect(&format!("key={LIMITED_KEY}&format=msgpack"))
        .await;
    let attached = limited.attach("allowed:room").await;
    assert_eq!(
        attached["flags"],
        MODE_PUBLISH | MODE_SUBSCRIBE | MODE_PRESENCE_SUBSCRIBE,
        "publish+subscribe grant no PRESENCE mode: {attached}"
    );
    assert_eq!(attached["flags"].as_u64().unwrap() & MODE_PRESENCE, 0);
}

/// JSON publisher -> JSON and msgpack subscribers: strings, JSON-encoded and base64 data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_publish_reaches_json_and_msgpack_subscribers() {
    let bytes = [0u8, 1, 2, 0x7f, 0x80, 0xfe, 0xff];
    let sent = json!([
        {"name": "text", "data": "héllo wörld"},
        {"name": "json", "data": "{\"a\":[1,2]}", "encoding": "json"},
        {"name": "binary", "data": b64(&bytes), "encoding": "base64"},
    ]);
    let (serials, deliveries) = trip("json", "alice", sent).await;
    let unique: std::collections::HashSet<_> = serials.iter().collect();
    assert_eq!(unique.len(), 3, "serials must be unique: {serials:?}");

    for (format, delivery) in deliveries {
        let got = delivery["messages"].as_array().unwrap();
        assert_eq!(got.len(), 3, "{delivery}");
        for message in got {
            assert_eq!(message["clientId"], "alice", "{delivery}");
        }
        assert_eq!(got[0]["name"], "text");
        assert_eq!(got[0]["data"], "héllo wörld", "{delivery}");
        assert!(got[0].get("encoding").is_none(), "{delivery}");
        assert_eq!(got[1]["data"], "{\"a\":[1,2]}", "{delivery}");
        assert_eq!(got[1]["encoding"], "json", "{delivery}");
        let binary = &got[2];
        match format {
            Format::Json => {
                assert_eq!(binary["data"], b64(&bytes), "{delivery}");
                assert_eq!(binary["encoding"], "base64", "{delivery}");
            }
            // Passing the base64 text through and decoding it to bin are both fine (§3.4).
            Format::Msgpack => assert!(
                (binary["data"] == b64(&bytes) && binary["encoding"] == "base64")
                    || (binary["data"] == bin(&bytes)
                        && binary.get("encoding").is_none_or(|e| e == "")),
                "binary payload altered: {delivery}"
            ),
        }
    }
}

/// msgpack publisher -> JSON and msgpack subscribers: `bin` stays `bin` for msgpack and becomes
/// base64 (appended to any earlier encoding) for JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_publish_reaches_json_and_msgpack_subscribers() {
    let bytes: Vec<u8> = (0..=255).collect();
    let cipher = [9u8, 8, 7, 0, 255];
    let sent = json!([
        {"name": "text", "data": "plain ✓"},
        {"name": "json", "data": "{\"k\":true}", "encoding": "json"},
        {"name": "binary", "data": bin(&bytes)},
        {"name": "cipher", "data": bin(&cipher), "encoding": "utf-8/cipher+aes-128-cbc"},
    ]);
    let (_, deliveries) = trip("msgpack", "bob", sent).await;

    for (format, delivery) in deliveries {
        let got = delivery["messages"].as_array().unwrap();
        assert_eq!(got.len(), 4, "{delivery}");
        assert_eq!(got[0]["data"], "plain ✓", "{delivery}");
        assert_eq!(got[0]["clientId"], "bob", "{delivery}");
        assert_eq!(got[1]["data"], "{\"k\":true}", "{delivery}");
        assert_eq!(got[1]["encoding"], "json", "{delivery}");
        match format {
            Format::Json => {
                assert_eq!(got[2]["data"], b64(&bytes), "{delivery}");
                assert_eq!(got[2]["encoding"], "base64", "{delivery}");
                assert_eq!(got[3]["data"], b64(&cipher), "{delivery}");
                assert_eq!(
                    got[3]["encoding"], "utf-8/cipher+aes-128-cbc/base64",
                    "{delivery}"
                );
            }
            Format::Msgpack => {
                assert_eq!(got[2]["data"], bin(&bytes), "{delivery}");
                assert!(got[2].get("encoding").is_none(), "{delivery}");
                assert_eq!(got[3]["data"], bin(&cipher), "{delivery}");
                assert_eq!(got[3]["encoding"], "utf-8/cipher+aes-128-cbc", "{delivery}");
            }
        }
    }
}

/// Each MESSAGE gets exactly one ACK, in msgSerial order, with one serial per message; the
/// deliveries carry the same serials in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_follow_msg_serial_order_with_serials() {
    let server = Server::start().await;
    let mut subscriber = attached(&server, "msgpack", "acks").await;
    let mut publisher = server.connect(&full_key("json")).await;

    // Pipelined: all three go out before any ACK is read.
    let batches = [1usize, 2, 1];
    for (msg_serial, n) in batches.iter().enumerate() {
        let messages: Vec<Value> = (0..*n)
            .map(|i| json!({"name": format!("m{msg_serial}.{i}"), "data": "x"}))
            .collect();
        publisher
            .publish("acks", msg_serial as u64, Value::Array(messages))
            .await;
    }
    let mut all_serials = Vec::new();
    for (msg_serial, n) in batches.iter().enumerate() {
        let ack = publisher.expect(ACK).await;
        let serials = assert_ack(&ack, msg_serial as u64, *n);
        let delivery = subscriber.expect(MESSAGE).await;
        assert_delivery(&delivery, "acks", publisher.id(), msg_serial as u64);
        assert_eq!(serials_of(&delivery), serials, "{delivery}");
        all_serials.extend(serials);
    }
    let unique: std::collections::HashSet<_> = all_serials.iter().collect();
    assert_eq!(unique.len(), 4, "{all_serials:?}");

    // A channel with history has a position to hand to later attachers (reference §2.5).
    let mut late = server.connect(&full_key("json")).await;
    let attached = late.attach("acks").await;
    assert!(
        attached["channelSerial"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{attached}"
    );
}

/// The publishing connection hears its own message unless it said `echo=false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_false_suppresses_only_own_messages() {
    let server = Server::start().await;
    let mut quiet = server
        .attached(&format!("{}&echo=false", full_key("json")), "echo")
        .await;
    let mut loud = attached(&server, "msgpack", "echo").await;

    quiet
        .publish("echo", 0, json!([{"name": "from-quiet"}]))
        .await;
    quiet.expect(ACK).await;
    loud.expect_named("from-quiet", "").await;

    // The echoing connection gets its own message back (before or after its ACK).
    loud.publish("echo", 0, json!([{"name": "from-loud"}]))
        .await;
    let mut own = None;
    let mut acked = false;
    while own.is_none() || !acked {
        let frame = loud.frame().await;
        match frame["action"].as_u64() {
            Some(MESSAGE) => own = Some(frame),
            Some(ACK) => acked = true,
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(own.unwrap()["messages"][0]["name"], "from-loud");

    // Deliveries are ordered, so had "from-quiet" come back, it would come first.
    quiet
        .expect_named(
            "from-loud",
            "echo=false connection got something else first",
        )
        .await;
}

/// Subscribers on a qualified name get deliveries under the name they attached with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_carry_the_qualified_channel_name() {
    let server = Server::start().await;
    let mut subscriber = attached(&server, "json", "[?rewind=1]lobby").await;
    let mut publisher = server.connect(&full_key("json")).await;
    publisher.publish_named("lobby", 0, "hi").await;
    expect_message_on(&mut subscriber, "[?rewind=1]lobby", "wrong name").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_stops_deliveries() {
    let server = Server::start().await;
    let mut subscriber = attached(&server, "json", "gone").await;
    subscriber.attach("kept").await;
    subscriber
        .send(json!({"action": DETACH, "channel": "gone"}))
        .await;
    let detached = subscriber.expect(DETACHED).await;
    assert_eq!(detached["channel"], "gone", "{detached}");

    let mut publisher = server.connect(&full_key("msgpack")).await;
    publisher.publish_named("gone", 0, "after-detach").await;
    publisher.publish_named("kept", 1, "still-attached").await;
    expect_message_on(&mut subscriber, "kept", "delivered after DETACH").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_with_id_is_echoed() {
    let server = Server::start().await;
    for format in ["json", "msgpack"] {
        let mut client = server.connect(&full_key(format)).await;
        client
            .send(json!({"action": HEARTBEAT, "id": "ping-42"}))
            .await;
        let pong = client.expect(HEARTBEAT).await;
        assert_eq!(pong["id"], "ping-42", "{format}: {pong}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_answered_with_closed_then_the_socket_closes() {
    let server = Server::start().await;
    let mut client = attached(&server, "msgpack", "bye").await;
    client.send(json!({"action": CLOSE})).await;
    client.expect(CLOSED).await;
    client.expect_closed().await;
}
