//! Annotations (action 21 and `…/messages/{serial}/annotations`): refusals, raw fan-out only to
//! `ANNOTATION_SUBSCRIBE` holders, summaries to every subscriber and on reads, REST paging.

use gateway::config::ChannelRules;
use serde_json::{json, Value};

use crate::support::{
    assert_ack, assert_error, assert_rest_error, config, Client, Request, Server, ACK, ATTACH,
    ATTACHED, FULL_KEY, LIMITED_KEY, MESSAGE, MODE_PUBLISH, MODE_SUBSCRIBE, NACK,
};

const ANNOTATION: u64 = 21;
const MODE_ANNOTATION_PUBLISH: u64 = 1 << 21;
const MODE_ANNOTATION_SUBSCRIBE: u64 = 1 << 22;

/// A channel's default rules with mutable messages (and so annotations) on.
fn mutable() -> ChannelRules {
    let mut rules = gateway::Hub::default().rules_for("any");
    rules.mutable_messages = true;
    rules
}

/// `mutable:*` and `allowed:*` channels allow annotations; others do not.
async fn server() -> Server {
    let mut config = config();
    config.hub.namespace_rules = vec![("mutable".into(), mutable()), ("allowed".into(), mutable())];
    Server::with_config(config).await
}

async fn attach_with(client: &mut Client, channel: &str, flags: u64) {
    client
        .send(json!({"action": ATTACH, "channel": channel, "flags": flags}))
        .await;
    let attached = client.expect(ATTACHED).await;
    assert_eq!(
        attached["flags"].as_u64().unwrap() & flags,
        flags,
        "{attached}"
    );
}

/// Publishes one message and returns its serial (the publisher is not attached).
async fn publish(server: &Server, channel: &str, name: &str) -> String {
    let path = format!("/channels/{channel}/messages");
    let published = server.post_json(path, &json!({"name": name})).await;
    assert_eq!(published.status, 201, "{published:?}");
    published.json()["serials"][0].as_str().unwrap().to_owned()
}

async fn annotate(client: &mut Client, channel: &str, msg_serial: u64, annotation: Value) {
    client
        .send(
            json!({"action": ANNOTATION, "channel": channel, "msgSerial": msg_serial,
                     "annotations": [annotation]}),
        )
        .await;
}

/// The next `n` frames, in any order among themselves, by action.
async fn frames(client: &mut Client, n: usize) -> Vec<Value> {
    let mut frames = Vec::new();
    for _ in 0..n {
        frames.push(client.frame().await);
    }
    frames
}

fn with_action(frames: &[Value], action: u64) -> &Value {
    frames
        .iter()
        .find(|f| f["action"] == action)
        .unwrap_or_else(|| panic!("no frame with action {action} in {frames:?}"))
}

#[tokio::test]
async fn raw_annotations_reach_annotation_subscribers_and_summaries_every_subscriber() {
    let server = server().await;
    let channel = "mutable:room";
    let all = MODE_PUBLISH | MODE_SUBSCRIBE | MODE_ANNOTATION_PUBLISH | MODE_ANNOTATION_SUBSCRIBE;
    let mut alice = server
        .connect(&format!("key={FULL_KEY}&format=json&clientId=alice"))
        .await;
    attach_with(&mut alice, channel, all).await;
    let mut viewer = server
        .connect(&format!("key={FULL_KEY}&format=msgpack"))
        .await;
    viewer.attach(channel).await;

    let serial = publish(&server, channel, "first").await;
    alice.expect_named("first", "alice subscribes").await;
    viewer.expect_named("first", "the viewer subscribes").await;

    annotate(
        &mut alice,
        channel,
        0,
        json!({"action": 0, "messageSerial": serial, "type": "reaction:distinct.v1",
               "name": "👍"}),
    )
    .await;
    let got = frames(&mut alice, 3).await;
    let ack = with_action(&got, ACK);
    let serials = assert_ack(ack, 0, 1);
    let raw = with_action(&got, ANNOTATION);
    assert!(raw.get("channelSerial").is_none(), "{raw}");
    let annotation = &raw["annotations"][0];
    assert_eq!(annotation["action"], 0, "always sent: {raw}");
    assert_eq!(annotation["messageSerial"], serial.as_str());
    assert_eq!(annotation["serial"], serials[0].as_str());
    assert_eq!(annotation["clientId"], "alice");
    assert_eq!(annotation["connectionId"], alice.id());
    assert!(
        annotation["serial"].as_str().unwrap() > serial.as_str(),
        "{raw}"
    );
    let summary = with_action(&got, MESSAGE);
    assert!(summary.get("channelSerial").is_none(), "{summary}");
    let expected = json!({"reaction:distinct.v1": {
        "👍": {"total": 1, "clientIds": ["alice"], "clipped": false},
    }});
    assert_eq!(summary["messages"][0]["action"], 4);
    assert_eq!(summary["messages"][0]["serial"], serial.as_str());
    assert_eq!(summary["messages"][0]["annotations"]["summary"], expected);

    // The viewer (no ANNOTATION_SUBSCRIBE) gets the summary and nothing else before the next
    // message.
    let seen = viewer.expect(MESSAGE).await;
    assert_eq!(seen["messages"][0]["action"], 4, "{seen}");
    assert_eq!(seen["messages"][0]["annotations"]["summary"], expected);
    publish(&server, channel, "marker").await;
    viewer
        .expect_named("marker", "no raw annotation for the viewer")
        .await;

    // Reads carry the summary.
    let path = format!("/channels/{channel}/messages/{serial}");
    let read = server.get(path).await.json();
    assert_eq!(read["annotations"]["summary"], expected, "{read}");
    let history = server
        .get(format!("/channels/{channel}/messages?direction=forwards"))
        .await
        .json();
    assert_eq!(history[0]["annotations"]["summary"], expected, "{history}");
    assert!(history[1].get("annotations").is_none(), "{history}");
}

/// Every refusal is a NACK with its code, and nothing is applied: mode, capability, the
/// channel's rule, an unknown message, an anonymous client for a type that counts clients,
/// an unknown type.
#[tokio::test]
async fn each_refusal_is_nacked_with_its_code() {
    let server = server().await;
    let serial = publish(&server, "mutable:room", "first").await;
    let allowed = publish(&server, "allowed:room", "first").await;
    let plain = publish(&server, "plain", "first").await;
    let distinct = |serial: &str| json!({"messageSerial": serial, "type": "reaction:distinct.v1", "name": "x"});

    let mut client = server
        .connect(&format!("key={FULL_KEY}&format=json&clientId=alice"))
        .await;
    // Attached without the ANNOTATION_PUBLISH mode.
    attach_with(&mut client, "mutable:room", MODE_PUBLISH | MODE_SUBSCRIBE).await;
    annotate(&mut client, "mutable:room", 0, distinct(&serial)).await;
    assert_error(&client.expect(NACK).await, 40160, 401);
    // The channel's rule.
    annotate(&mut client, "plain", 1, distinct(&plain)).await;
    assert_error(&client.expect(NACK).await, 93002, 400);
    // An unknown message.
    annotate(&mut client, "allowed:room", 2, distinct(&serial)).await;
    assert_error(&client.expect(NACK).await, 40400, 404);
    // An unknown summarization.
    let odd = json!({"messageSerial": allowed, "type": "reaction:odd.v9"});
    annotate(&mut client, "allowed:room", 3, odd).await;
    assert_error(&client.expect(NACK).await, 40003, 400);
    // More than a publish may hold: decoded (1,001), or refused from a skim of the frame (5,000).
    for (msg_serial, n) in [(4, 1001), (5, 5000)] {
        let many = vec![json!({}); n];
        client
            .send(json!({"action": ANNOTATION, "channel": "allowed:room",
                         "msgSerial": msg_serial, "annotations": many}))
            .await;
        assert_error(&client.expect(NACK).await, 40030, 400);
    }
    // Accepted on the same connection once all is right.
    annotate(&mut client, "allowed:room", 6, distinct(&allowed)).await;
    assert_ack(&client.expect(ACK).await, 6, 1);

    // The capability: publish and subscribe only.
    let mut limited = server
        .connect(&format!("key={LIMITED_KEY}&format=json&clientId=bob"))
        .await;
    annotate(&mut limited, "allowed:room", 0, distinct(&allowed)).await;
    assert_error(&limited.expect(NACK).await, 40160, 401);

    // Anonymous: distinct needs an identified client; total does not.
    let mut anonymous = server.connect(&format!("key={FULL_KEY}&format=json")).await;
    annotate(&mut anonymous, "allowed:room", 0, distinct(&allowed)).await;
    assert_error(&anonymous.expect(NACK).await, 40161, 401);
    let total = json!({"messageSerial": allowed, "type": "views:total.v1"});
    annotate(&mut anonymous, "allowed:room", 1, total).await;
    assert_ack(&anonymous.expect(ACK).await, 1, 1);

    // Over REST: the unknown message is a 404, the capability a 401.
    let path = format!("/channels/allowed:room/messages/{serial}/annotations");
    let body = json!({"type": "views:total.v1"});
    assert_rest_error(&server.post_json(path, &body).await, 40400, 404);
    let path = format!("/channels/allowed:room/messages/{allowed}/annotations");
    let refused = server.post_json_as(LIMITED_KEY, path, &body).await;
    assert_rest_error(&refused, 40160, 401);
}

/// POST takes one or an array; GET lists oldest first, `limit` per page, `next` only while
/// another item exists (not after a last full page).
#[tokio::test]
async fn rest_annotations_are_listed_oldest_first_and_paged() {
    let server = server().await;
    let serial = publish(&server, "mutable:room", "first").await;
    let path = format!("/channels/mutable:room/messages/{serial}/annotations");
    let one = json!({"type": "r:distinct.v1", "name": "a", "clientId": "u1"});
    let posted = server.post_json(&path, &one).await;
    assert_eq!(posted.status, 201, "{posted:?}");
    assert_eq!(posted.json()["serials"].as_array().unwrap().len(), 1);
    let many = json!([
        {"type": "r:distinct.v1", "name": "b", "clientId": "u1"},
        {"type": "r:distinct.v1", "name": "c", "clientId": "u2"},
        {"type": "r:distinct.v1", "name": "d", "clientId": "u2", "messageSerial": "ignored"},
    ]);
    let posted = server.post_json(&path, &many).await;
    assert_eq!(posted.status, 201, "{posted:?}");
    assert_eq!(posted.json()["serials"].as_array().unwrap().len(), 3);

    let all = server.get(&path).await;
    let listed = all.json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    let serials: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["serial"].as_str().unwrap())
        .collect();
    assert!(serials.windows(2).all(|w| w[0] < w[1]), "{serials:?}");
    assert_eq!(listed[0]["action"], 0);
    assert_eq!(listed[0]["messageSerial"], serial.as_str());
    assert!(all.header("link").unwrap().contains("rel=\"current\""));
    assert!(!all.header("link").unwrap().contains("rel=\"next\""));

    let mut next = format!("{path}?limit=2");
    let mut pages = Vec::new();
    loop {
        let page = server.get(&next).await;
        assert_eq!(page.status, 200, "{page:?}");
        let names: Vec<String> = page
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect();
        pages.push(names);
        let Some(relative) = crate::support::relative_link(&page, "next") else {
            break;
        };
        next = format!("{path}{}", relative.trim_start_matches("./annotations"));
        assert!(pages.len() < 5, "paging does not end: {relative}");
    }
    assert_eq!(pages, [vec!["a", "b"], vec!["c", "d"]]);

    let unknown = format!("/channels/mutable:room/messages/{serial}x/annotations");
    assert_rest_error(&server.get(unknown).await, 40400, 404);
    let refused = server.http(Request::get(&path).basic(LIMITED_KEY)).await;
    assert_eq!(refused.status, 401, "{refused:?}");
}

/// Summaries are throttled per message, never dropped: a quick run of annotations ends with a
/// summary holding all of them.
#[tokio::test]
async fn a_quick_run_of_annotations_ends_with_a_summary_of_all_of_them() {
    let server = server().await;
    let channel = "mutable:storm";
    let mut viewer = server
        .attached(&format!("key={FULL_KEY}&format=json"), channel)
        .await;
    let serial = publish(&server, channel, "first").await;
    viewer.expect_named("first", "subscribed").await;
    let mut annotator = server.connect(&format!("key={FULL_KEY}&format=json")).await;
    for msg_serial in 0..5 {
        let total = json!({"messageSerial": serial, "type": "views:total.v1"});
        annotate(&mut annotator, channel, msg_serial, total).await;
    }
    for msg_serial in 0..5 {
        assert_ack(&annotator.expect(ACK).await, msg_serial, 1);
    }
    let mut summaries = 0;
    loop {
        let summary = viewer.expect(MESSAGE).await;
        summaries += 1;
        let total = &summary["messages"][0]["annotations"]["summary"]["views:total.v1"]["total"];
        if total == 5 {
            break;
        }
        assert!(
            summaries < 5,
            "five summaries and still no total of 5: {summary}"
        );
    }
}

/// Realtime annotations take from the connection's publish budget, as publishes do.
#[tokio::test]
async fn realtime_annotations_count_against_the_connection_publish_rate() {
    let mut config = config();
    config.hub.namespace_rules = vec![("mutable".into(), mutable())];
    config.limits.connection_publish_rate = gateway::config::PublishRate {
        messages_per_sec: 1,
        burst_messages: 2,
        bytes_per_sec: 1 << 20,
        burst_bytes: 1 << 20,
    };
    let server = Server::with_config(config).await;
    let serial = publish(&server, "mutable:rated", "first").await;
    let mut client = server.connect(&format!("key={FULL_KEY}&format=json")).await;
    for msg_serial in 0..3 {
        let total = json!({"messageSerial": serial, "type": "views:total.v1"});
        annotate(&mut client, "mutable:rated", msg_serial, total).await;
    }
    assert_ack(&client.expect(ACK).await, 0, 1);
    assert_ack(&client.expect(ACK).await, 1, 1);
    assert_error(&client.expect(NACK).await, 42911, 429);
}

/// A realtime annotation resent with the same msgSerial (as after a resume) is acknowledged
/// again with a null serial and counted once.
#[tokio::test]
async fn a_resent_realtime_annotation_is_applied_once() {
    let server = server().await;
    let channel = "mutable:resend";
    let mut viewer = server
        .attached(&format!("key={FULL_KEY}&format=json"), channel)
        .await;
    let serial = publish(&server, channel, "first").await;
    viewer.expect_named("first", "subscribed").await;
    let mut annotator = server.connect(&format!("key={FULL_KEY}&format=json")).await;
    let view = json!({"messageSerial": serial, "type": "views:total.v1"});
    annotate(&mut annotator, channel, 0, view.clone()).await;
    assert_ack(&annotator.expect(ACK).await, 0, 1);
    annotate(&mut annotator, channel, 0, view).await;
    let again = annotator.expect(ACK).await;
    assert_eq!(again["res"][0]["serials"], json!([null]), "{again}");
    let summary = viewer.expect(MESSAGE).await;
    let total = &summary["messages"][0]["annotations"]["summary"]["views:total.v1"];
    assert_eq!(total, &json!({"total": 1}), "{summary}");
    // Nothing more for the repeat: the next frame is the next message.
    publish(&server, channel, "marker").await;
    viewer
        .expect_named("marker", "no summary for the repeat")
        .await;
}
