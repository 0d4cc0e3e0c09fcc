//! `POST /events` against the binary: idempotency by event id across a restart (records in
//! Redis), a partial failure reported per channel and completed by a retry, a bad batch
//! refused whole, an ephemeral event delivered live and never stored.

use serde_json::{json, Value};

use crate::support::{
    attached, block_on, next_json, nodes, rest, RedisServer, Request, Server, KEY,
};

fn events_request(body: &Value) -> Request<'static> {
    Request::post_json("/events", body).basic(KEY)
}

async fn history(node: &Server, channel: &str) -> Vec<Value> {
    let request = Request::get(format!("/channels/{channel}/messages")).basic(KEY);
    let (status, body) = rest(node.addr, request).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("history JSON")
}

/// The message-id claims (120 s) expire long before a webhook retry hours later;
/// deleting them stands in for the hours passing, so only the event record can dedupe.
fn forget_message_ids(redis: &RedisServer) {
    for key in redis.cli(&["--scan", "--pattern", "rt:*:id*"]).lines() {
        redis.cli(&["DEL", key]);
    }
}

fn call(id: &str, fan: &str) -> Value {
    json!({"id": id, "type": "call.ringing",
        "data": {"call_id": "c1", "creator_id": "cr", "fan_id": fan, "call_type": "video"}})
}

#[test]
fn a_repeated_event_id_publishes_once_also_after_a_restart() {
    let redis = RedisServer::start();
    let args = ["--keys", "app.k:secret", "--redis", &redis.url()];
    block_on(async {
        let node = Server::start(&args);
        let (status, first) = rest(node.addr, events_request(&call("evt_1", "f1"))).await;
        assert_eq!(status, 201, "{first}");
        let (status, again) = rest(node.addr, events_request(&call("evt_1", "f1"))).await;
        assert_eq!(
            (status, &again),
            (201, &first),
            "a repeat gets the first answer"
        );
        drop(node);

        forget_message_ids(&redis);
        let node = Server::start(&args);
        let (status, later) = rest(node.addr, events_request(&call("evt_1", "f1"))).await;
        assert_eq!((status, &later), (201, &first), "after a restart too");
        for (n, channel) in ["call:c1", "user:cr", "user:f1"].iter().enumerate() {
            let messages = history(&node, channel).await;
            assert_eq!(messages.len(), 1, "{channel}: {messages:?}");
            assert_eq!(messages[0]["id"], format!("evt:evt_1:{n}"));
            assert_eq!(messages[0]["name"], "call.ringing");
        }
    });
}

#[test]
fn a_partial_failure_is_reported_per_channel_and_a_retry_completes_it() {
    let redis = RedisServer::start();
    let node = Server::start(&["--keys", "app.k:secret", "--redis", &redis.url()]);
    block_on(async {
        // A real Redis error on one channel only: its serial counter holds the wrong type, so
        // the publish script fails there (before writing anything) and works everywhere else.
        redis.cli(&["SET", "rt:{user:f2}:meta", "not a hash"]);
        let event = call("evt_2", "f2");
        let (status, body) = rest(node.addr, events_request(&event)).await;
        assert_eq!(status, 503, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], 50003, "{body}");
        let channels = &body["batchResponse"][0]["channels"];
        assert!(channels[0]["serial"].is_string(), "{body}");
        assert!(channels[1]["serial"].is_string(), "{body}");
        assert_eq!(channels[2]["channel"], "user:f2");
        assert_eq!(channels[2]["error"]["code"], 50003, "{body}");

        redis.cli(&["DEL", "rt:{user:f2}:meta"]);
        forget_message_ids(&redis);
        let (status, retried) = rest(node.addr, events_request(&event)).await;
        assert_eq!(status, 201, "{retried}");
        let retried: Value = serde_json::from_str(&retried).unwrap();
        let done = &retried["channels"];
        assert_eq!(
            done[0]["serial"], channels[0]["serial"],
            "not published again"
        );
        assert_eq!(
            done[1]["serial"], channels[1]["serial"],
            "not published again"
        );
        assert!(done[2]["serial"].is_string(), "{retried}");
        for channel in ["call:c1", "user:cr", "user:f2"] {
            assert_eq!(history(&node, channel).await.len(), 1, "{channel}");
        }
        let (status, again) = rest(node.addr, events_request(&event)).await;
        assert_eq!(status, 201);
        assert_eq!(serde_json::from_str::<Value>(&again).unwrap(), retried);
    });
}

#[test]
fn a_batch_with_one_bad_event_is_refused_whole() {
    let node = Server::start(&["--keys", "app.k:secret"]);
    block_on(async {
        let batch = json!([
            {"id": "ok", "type": "tokens.credited", "data": {"user_id": "u9", "tokens": 10}},
            {"id": "bad", "type": "call.ringing",
                "data": {"call_id": "c", "creator_id": "a", "fan_id": "b", "call_type": "fax"}}
        ]);
        let (status, body) = rest(node.addr, events_request(&batch)).await;
        assert_eq!(status, 400, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], 40003);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(r#"events[1]"#)
                && message.contains(r#"data.call_type must be "voice" or "video""#),
            "{message}"
        );
        assert!(
            history(&node, "user:u9").await.is_empty(),
            "nothing published"
        );
    });
}

fn viewers(id: &str, viewers: u64, ephemeral: bool) -> Value {
    json!({"id": id, "type": "stream.viewers", "ephemeral": ephemeral,
        "data": {"stream_id": "s1", "creator_id": "cr", "viewers": viewers}})
}

/// `ephemeral: true` on an event: its message reaches a subscriber on another node live, with
/// no serial anywhere, is not stored, and a repeat of the event id is not delivered again.
#[test]
fn an_ephemeral_event_is_delivered_live_once_and_never_stored() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2, &[]);
    block_on(async {
        let mut sub = attached(&nodes[1], "sub", "", "stream:s1").await;
        for _ in 0..2 {
            let request = events_request(&viewers("v1", 3, true));
            let (status, body) = rest(nodes[0].addr, request).await;
            assert_eq!(status, 201, "{body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["channels"][0]["channel"], "stream:s1", "{body}");
            assert!(body["channels"][0].get("serial").is_none(), "{body}");
        }
        let (status, body) = rest(nodes[0].addr, events_request(&viewers("v2", 4, false))).await;
        assert_eq!(status, 201, "{body}");
        let mut heard = Vec::new();
        while heard.len() < 2 {
            let frame = next_json(&mut sub).await;
            for message in frame["messages"].as_array().into_iter().flatten() {
                heard.push((frame["channelSerial"].is_string(), message.clone()));
            }
        }
        let (positioned, live) = &heard[0];
        assert!(!positioned, "{live}");
        assert_eq!(live["id"], "evt:v1:0");
        assert_eq!(live["extras"], json!({"ephemeral": true}));
        assert!(live.get("serial").is_none(), "{live}");
        assert_eq!(heard[1].1["id"], "evt:v2:0", "the repeat went nowhere");
        let stored = history(&nodes[1], "stream:s1").await;
        let ids: Vec<&Value> = stored.iter().map(|m| &m["id"]).collect();
        assert_eq!(ids, [&json!("evt:v2:0")]);
    });
}
