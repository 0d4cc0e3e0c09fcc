//! Amplification bounded: a publish of more messages (or bytes) than one publish may hold is
//! refused before anything is acknowledged or delivered, and an accepted one reaches every
//! subscriber that keeps reading, however many frames it takes. Each attack checks that a
//! bystander on another channel, and other readers of the same channel, are unaffected.

use serde_json::{json, Value};

use crate::support::*;

const CHANNEL: &str = "flooded";

/// A fresh server (keep it: dropping it shuts it down), its bystanders and the readers of the
/// attacked channel.
async fn scene() -> (Server, Bystanders, Readers) {
    let server = Server::start().await;
    let others = Bystanders::join(&server).await;
    let readers = Readers::attach(&server).await;
    (server, others, readers)
}

/// Readers of the attacked channel, one per format.
struct Readers {
    json: Client,
    msgpack: Client,
}

impl Readers {
    async fn attach(server: &Server) -> Readers {
        let json = server.attached(&full_key("json"), CHANNEL).await;
        let msgpack = server.attached(&full_key("msgpack"), CHANNEL).await;
        Readers { json, msgpack }
    }

    /// Each reader's next delivery is the one message `name`: nothing from a refused publish
    /// came before it.
    async fn expect_only(&mut self, name: &str) {
        for reader in [&mut self.json, &mut self.msgpack] {
            let delivery = reader.expect(MESSAGE).await;
            let messages = delivery["messages"].as_array().unwrap();
            assert_eq!(messages.len(), 1, "{delivery}");
            assert_eq!(messages[0]["name"], name, "{delivery}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_10000_messages_is_nacked_and_nothing_is_delivered() {
    let (server, mut others, mut readers) = scene().await;

    // 10,000 empty messages in a 30 KB JSON frame.
    let mut victim = server.connect(&full_key("json")).await;
    let empties = Value::Array(vec![json!({}); 10_000]);
    victim.publish(CHANNEL, 0, empties).await;
    others.publish("meanwhile").await;
    let nack = victim.expect(NACK).await;
    assert_eq!(nack["msgSerial"], 0, "{nack}");
    assert_eq!(nack["count"], 1, "{nack}");
    assert_error(&nack, 40030, 400);

    // 200,000 × `{}` in a 200 KB msgpack frame, from another connection.
    let mut packed = server.connect(&full_key("msgpack")).await;
    let mut frame = to_msgpack(&json!({"action": MESSAGE, "channel": CHANNEL, "msgSerial": 0}));
    // A fixmap of 3 becomes 4 entries: the last is `messages`, an array32 of empty maps.
    assert_eq!(frame[0], 0x83);
    frame[0] = 0x84;
    frame.push(0xa8);
    frame.extend_from_slice(b"messages");
    frame.push(0xdd);
    frame.extend_from_slice(&200_000u32.to_be_bytes());
    frame.extend(std::iter::repeat_n(0x80, 200_000));
    packed.send_binary(frame).await;
    let nack = packed.expect(NACK).await;
    assert_eq!(nack["msgSerial"], 0, "{nack}");
    assert_error(&nack, 40030, 400);

    // Both publishers carry on; the readers got none of the refused messages, only this.
    victim.publish_named(CHANNEL, 1, "after").await;
    readers.expect_only("after").await;
    packed.publish_named("elsewhere", 1, "fine").await;
    others.assert_undisturbed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_are_all_delivered_to_every_reader_in_frames_that_fit() {
    let (server, mut others, mut readers) = scene().await;
    let mut publisher = server.connect(&full_key("msgpack")).await;
    // 60 control characters each: 64 KB of publish, but ~200 bytes per message of ids and
    // serials and 6 bytes per character as JSON (`\u0001`): over 400 KB as one JSON frame.
    let messages: Vec<Value> = (0..1000)
        .map(|i| json!({"name": format!("m{i}"), "data": "\u{1}".repeat(60)}))
        .collect();
    let serials = publisher
        .publish_acked(CHANNEL, 0, Value::Array(messages))
        .await;
    assert_eq!(serials.len(), 1000);
    others.publish("meanwhile").await;

    for (reader, max_frames) in [
        (&mut readers.json, usize::MAX),
        (&mut readers.msgpack, 1000),
    ] {
        let mut received: Vec<String> = Vec::new();
        let mut frames = 0;
        while received.len() < 1000 {
            let delivery = reader.expect(MESSAGE).await;
            frames += 1;
            let messages = delivery["messages"].as_array().unwrap();
            for message in messages {
                assert_eq!(message["name"], format!("m{}", received.len()), "in order");
                assert_eq!(message["data"], "\u{1}".repeat(60));
                received.push(message["serial"].as_str().unwrap().to_owned());
            }
            // A client resuming after this frame resumes from its last message.
            assert_eq!(
                delivery["channelSerial"],
                *messages.last().unwrap().get("serial").unwrap(),
                "{delivery:.200}"
            );
        }
        assert_eq!(received, serials, "every message, with the ACKed serials");
        assert!(frames <= max_frames);
        if reader.format == Format::Json {
            assert!(frames >= 2, "the JSON delivery is split: {frames} frame(s)");
        }
        // Still connected, nothing else queued.
        reader
            .send(json!({"action": HEARTBEAT, "id": "still-there"}))
            .await;
        assert_eq!(reader.expect(HEARTBEAT).await["id"], "still-there");
    }
    others.assert_undisturbed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_64_kib_limit_is_on_the_whole_publish() {
    let (server, mut others, mut readers) = scene().await;
    let half = "x".repeat(40 * 1024);
    let two_halves = json!([{"name": "a", "data": half}, {"name": "b", "data": half}]);

    let mut victim = server.connect(&full_key("json")).await;
    victim.publish(CHANNEL, 0, two_halves.clone()).await;
    let nack = victim.expect(NACK).await;
    assert_eq!(nack["msgSerial"], 0, "{nack}");
    assert_error(&nack, 40009, 413);

    let path = format!("/channels/{CHANNEL}/messages");
    let response = server.post_json(&path, &two_halves).await;
    assert_rest_error(&response, 40009, 413);
    others.publish("meanwhile").await;

    // Each half alone is fine.
    victim
        .publish_acked(CHANNEL, 1, json!([{"name": "one", "data": half}]))
        .await;
    readers.expect_only("one").await;
    others.assert_undisturbed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_publishes_of_too_many_messages_are_refused_unbuilt() {
    let (server, mut others, mut readers) = scene().await;
    let path = format!("/channels/{CHANNEL}/messages");
    let empties = Value::Array(vec![json!({}); 100_000]);

    let response = server.post_json(&path, &empties).await;
    assert_rest_error(&response, 40030, 400);
    let response = server
        .http(
            post_msgpack(&path, &empties)
                .basic(FULL_KEY)
                .header("accept", "application/x-msgpack"),
        )
        .await;
    assert_rest_error(&response, 40030, 400);
    // 1,001 is one too many; 1,000 goes through.
    let response = server
        .post_json(&path, &Value::Array(vec![json!({}); 1001]))
        .await;
    assert_rest_error(&response, 40030, 400);
    others.publish("meanwhile").await;

    let accepted = server.post_json(&path, &json!([{"name": "after"}])).await;
    assert_eq!(accepted.status, 201, "{accepted:?}");
    readers.expect_only("after").await;
    others.assert_undisturbed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_publishes_are_bounded_per_spec_and_in_total() {
    let (server, mut others, mut readers) = scene().await;

    // One spec over the per-publish cap, refused whole (its other channel got nothing either).
    let spec = json!({"channels": [CHANNEL, "other"], "messages": vec![json!({}); 1001]});
    let response = server.post_json("/messages", &spec).await;
    assert_rest_error(&response, 40030, 400);

    // 20 channels × 1,000 messages: each publish within the cap, the batch over 10,000.
    let channels: Vec<String> = (0..20).map(|i| format!("fan-{i}")).collect();
    let wide = json!([
        {"channels": [CHANNEL], "messages": [{"name": "x"}]},
        {"channels": channels, "messages": vec![json!({}); 1000]},
    ]);
    let response = server.post_json("/messages", &wide).await;
    assert_rest_error(&response, 40030, 400);
    others.publish("meanwhile").await;

    let fine = json!({"channels": [CHANNEL], "messages": [{"name": "after"}]});
    let response = server.post_json("/messages", &fine).await;
    assert_eq!(response.status, 201, "{response:?}");
    readers.expect_only("after").await;
    others.assert_undisturbed().await;
}

/// The PRESENCE action.
const PRESENCE: u64 = 14;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_frame_of_5000_enters_is_nacked_and_nothing_is_broadcast() {
    let (server, mut others, mut readers) = scene().await;
    let mut victim = server.connect(&full_key("json")).await;
    // Entering only, not listening: what the victim reads next is its own replies.
    victim
        .send(json!({"action": ATTACH, "channel": CHANNEL, "flags": MODE_PRESENCE | MODE_PUBLISH}))
        .await;
    victim.expect(ATTACHED).await;
    let enters: Vec<Value> = (0..5000)
        .map(|i| json!({"action": 2, "clientId": format!("u{i}")}))
        .collect();
    victim
        .send(json!({"action": PRESENCE, "channel": CHANNEL, "msgSerial": 0, "presence": enters}))
        .await;
    let nack = victim.expect(NACK).await;
    assert_eq!(nack["msgSerial"], 0, "{nack}");
    assert_error(&nack, 40030, 400);
    others.publish("meanwhile").await;

    // One enter goes through; it is all the readers hear.
    victim
        .send(
            json!({"action": PRESENCE, "channel": CHANNEL, "msgSerial": 1,
            "presence": [{"action": 2, "clientId": "only"}]}),
        )
        .await;
    let ack = victim.expect(ACK).await;
    assert_eq!(ack["msgSerial"], 1, "{ack}");
    for reader in [&mut readers.json, &mut readers.msgpack] {
        let broadcast = reader.expect(PRESENCE).await;
        let events = broadcast["presence"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{broadcast}");
        assert_eq!(events[0]["clientId"], "only", "{broadcast}");
    }
    others.assert_undisturbed().await;
}
