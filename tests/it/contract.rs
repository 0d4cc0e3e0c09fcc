//! The bus contract, held against both back-ends: the same checks on one embedded process
//! (memory bus) and on two processes sharing a `redis-server` (Redis bus). Publisher and
//! subscriber sit on different nodes whenever there are two. The same contract runs in process
//! against each back-end's traits in `gateway/src/backend/tests.rs`.

use serde_json::json;

use crate::support::{
    attach_resumed, attached, client, enter, http, next_json, next_presence, numbered, publish,
    publish_request, publish_serial, rest, rest_members, send_json, RedisServer, Request, Server,
    Socket, ENTER, KEY, LEAVE,
};

/// One deployment under test: its nodes (and the Redis they share, if any).
struct Deployment {
    name: &'static str,
    nodes: Vec<Server>,
    _redis: Option<RedisServer>,
}

impl Deployment {
    fn publisher(&self) -> &Server {
        &self.nodes[0]
    }

    fn subscriber(&self) -> &Server {
        self.nodes.last().expect("a node")
    }
}

fn deployments() -> Vec<Deployment> {
    let redis = RedisServer::start();
    let url = redis.url();
    vec![
        Deployment {
            name: "memory",
            nodes: vec![Server::start(&["--keys", "app.k:secret"])],
            _redis: None,
        },
        Deployment {
            name: "redis",
            nodes: (0..2)
                .map(|_| Server::start(&["--keys", "app.k:secret", "--redis", &url]))
                .collect(),
            _redis: Some(redis),
        },
    ]
}

/// Runs `check` against every back-end.
fn for_each_backend<F, Fut>(check: F)
where
    F: Fn(&'static str, std::sync::Arc<Deployment>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for deployment in deployments() {
        let deployment = std::sync::Arc::new(deployment);
        runtime.block_on(check(deployment.name, deployment.clone()));
    }
}

/// `epoch-n` serial to (epoch, n).
fn parts(serial: &str) -> (String, u64) {
    let (epoch, n) = serial.split_once('-').expect("epoch-n serial");
    (epoch.to_owned(), u64::from_str_radix(n, 16).expect("hex"))
}

#[test]
fn publications_arrive_once_in_order_with_consecutive_serials_matching_history() {
    for_each_backend(|backend, d| async move {
        let mut sub = attached(d.subscriber(), "sub", "", "contract:order").await;
        let mut serials = Vec::new();
        for n in 0..5 {
            serials.push(publish_serial(d.publisher(), "contract:order", n).await);
        }
        let (epoch, first) = parts(&serials[0]);
        for (i, serial) in serials.iter().enumerate() {
            assert_eq!(
                parts(serial),
                (epoch.clone(), first + i as u64),
                "{backend}: consecutive"
            );
        }
        assert_eq!(
            numbered(&mut sub, 5).await,
            ["0", "1", "2", "3", "4"],
            "{backend}"
        );
        let (status, body) = http(
            d.subscriber().addr,
            "GET /channels/contract:order/messages?direction=forwards HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YXBwLms6c2VjcmV0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200, "{backend}: {body}");
        let history: serde_json::Value = serde_json::from_str(&body).unwrap();
        let stored: Vec<&str> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["serial"].as_str().unwrap())
            .collect();
        assert_eq!(
            stored, serials,
            "{backend}: history holds what was acknowledged"
        );
    });
}

#[test]
fn a_repeated_message_id_is_delivered_and_stored_once() {
    for_each_backend(|backend, d| async move {
        let mut sub = attached(d.subscriber(), "sub", "", "contract:idem").await;
        let body = r#"{"id":"order-42","name":"n","data":"paid"}"#;
        for node in d.nodes.iter().chain(d.nodes.iter()) {
            let (status, answer) = http(node.addr, &publish_request("contract:idem", body)).await;
            assert_eq!(status, 201, "{backend}: {answer}");
        }
        publish_serial(d.publisher(), "contract:idem", 1).await;
        assert_eq!(
            numbered(&mut sub, 2).await,
            ["paid", "1"],
            "{backend}: once"
        );
    });
}

#[test]
fn presence_is_seen_by_every_subscriber_and_by_rest() {
    for_each_backend(|backend, d| async move {
        let mut watcher = attached(d.subscriber(), "watcher", "", "contract:presence").await;
        let mut alice = attached(d.publisher(), "alice", "", "contract:presence").await;
        enter(&mut alice, "contract:presence", "hi").await;
        let event = next_presence(&mut watcher).await;
        assert_eq!(event["action"].as_u64(), Some(ENTER), "{backend}: {event}");
        assert_eq!(
            rest_members(d.subscriber(), "contract:presence").await,
            ["alice"],
            "{backend}"
        );
        send_json(&mut alice, json!({"action": 7})).await;
        let event = next_presence(&mut watcher).await;
        assert_eq!(event["action"].as_u64(), Some(LEAVE), "{backend}: {event}");
    });
}

#[test]
fn an_attach_resumes_from_a_channel_serial_and_rewinds() {
    for_each_backend(|backend, d| async move {
        let first = publish_serial(d.publisher(), "contract:resume", 0).await;
        for n in 1..4 {
            publish_serial(d.publisher(), "contract:resume", n).await;
        }
        let (mut sub, _) = client(d.subscriber(), "sub", "").await;
        let context = format!("{backend}: ");
        attach_resumed(&mut sub, "contract:resume", &first, &context).await;
        assert_eq!(numbered(&mut sub, 3).await, ["1", "2", "3"], "{backend}");

        let (mut late, _) = client(d.subscriber(), "late", "").await;
        send_json(
            &mut late,
            json!({"action": 10, "channel": "contract:resume", "params": {"rewind": "2"}}),
        )
        .await;
        assert_eq!(next_json(&mut late).await["action"], 11);
        assert_eq!(numbered(&mut late, 2).await, ["2", "3"], "{backend}");
    });
}

/// Reads until `n` messages named "n" arrived: (the frame's channelSerial, the data, the
/// message's serial) for each, in arrival order.
async fn numbered_frames(
    socket: &mut Socket,
    n: usize,
) -> Vec<(Option<String>, String, Option<String>)> {
    let text = |value: &serde_json::Value| value.as_str().map(str::to_owned);
    let mut seen = Vec::new();
    while seen.len() < n {
        let frame = next_json(socket).await;
        for message in frame["messages"].as_array().into_iter().flatten() {
            if message["name"] == "n" {
                let data = text(&message["data"]).unwrap_or_default();
                seen.push((
                    text(&frame["channelSerial"]),
                    data,
                    text(&message["serial"]),
                ));
            }
        }
    }
    seen
}

/// Sends one MESSAGE with `messages` (msgSerial 0) and returns its ACK or NACK.
async fn realtime_publish(
    socket: &mut Socket,
    channel: &str,
    messages: serde_json::Value,
) -> serde_json::Value {
    let frame = json!({"action": 15, "channel": channel, "msgSerial": 0, "messages": messages});
    send_json(socket, frame).await;
    loop {
        let frame = next_json(socket).await;
        if frame["action"] == 1 || frame["action"] == 2 {
            return frame;
        }
    }
}

/// Ephemeral messages (REST `?ephemeral=true`, realtime `extras.ephemeral`) reach a subscriber
/// on the other node once, live, without serial or channelSerial; they are not in history,
/// not replayed by rewind or resume, and take no serial: the stored message published after
/// them (on the subscriber's node) follows on, and a resume across them is RESUMED. A publish
/// mixing both kinds is refused (40030) and nothing of it is delivered or stored.
#[test]
fn ephemeral_messages_are_delivered_live_and_never_stored() {
    for_each_backend(|backend, d| async move {
        let channel = "contract:ephemeral";
        let mut sub = attached(d.subscriber(), "sub", "", channel).await;
        let before = publish_serial(d.publisher(), channel, 0).await;
        let path = format!("/channels/{channel}/messages?ephemeral=true");
        let body = br#"{"name":"n","data":"rest","extras":{"headers":{"k":"v"}}}"#;
        let request = Request::post(path, "application/json", body.to_vec()).basic(KEY);
        let (status, answer) = rest(d.publisher().addr, request).await;
        assert_eq!(status, 201, "{backend}: {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["serials"], json!([null]), "{backend}: {answer}");
        let (mut publisher, _) = client(d.publisher(), "pub", "").await;
        let ephemeral = json!([{"name": "n", "data": "realtime", "extras": {"ephemeral": true}}]);
        let ack = realtime_publish(&mut publisher, channel, ephemeral).await;
        assert_eq!(ack["action"], 1, "{backend}: {ack}");
        assert_eq!(ack["res"], json!([{"serials": [null]}]), "{backend}: {ack}");

        let mixed = json!([{"name": "n", "data": "mixed"},
                           {"name": "n", "data": "mixed", "extras": {"ephemeral": true}}]);
        let nack = realtime_publish(&mut publisher, channel, mixed.clone()).await;
        assert_eq!(nack["action"], 2, "{backend}: {nack}");
        assert_eq!(nack["error"]["code"], 40030, "{backend}: {nack}");
        let (status, answer) = rest(d.publisher().addr, publish(channel, &mixed.to_string())).await;
        assert_eq!(status, 400, "{backend}: {answer}");
        assert!(answer.contains("40030"), "{backend}: {answer}");

        // Published on the subscriber's node: its serial follows on from the stored one.
        let after = publish_serial(d.subscriber(), channel, 1).await;
        let (epoch, n) = parts(&before);
        assert_eq!(parts(&after), (epoch, n + 1), "{backend}: no serial spent");
        let heard = numbered_frames(&mut sub, 4).await;
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            heard,
            [
                (some(&before), "0".into(), some(&before)),
                (None, "rest".into(), None),
                (None, "realtime".into(), None),
                (some(&after), "1".into(), some(&after)),
            ],
            "{backend}: once each, in order, nothing of the refused publish"
        );

        let (status, body) = rest(
            d.subscriber().addr,
            Request::get(format!("/channels/{channel}/messages?direction=forwards")).basic(KEY),
        )
        .await;
        assert_eq!(status, 200, "{backend}: {body}");
        let history: serde_json::Value = serde_json::from_str(&body).unwrap();
        let stored: Vec<&str> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["data"].as_str().unwrap())
            .collect();
        assert_eq!(stored, ["0", "1"], "{backend}: history");

        let (mut late, _) = client(d.subscriber(), "late", "").await;
        send_json(
            &mut late,
            json!({"action": 10, "channel": channel, "params": {"rewind": "10"}}),
        )
        .await;
        assert_eq!(next_json(&mut late).await["action"], 11);
        assert_eq!(
            numbered(&mut late, 2).await,
            ["0", "1"],
            "{backend}: rewind"
        );

        let (mut back, _) = client(d.subscriber(), "back", "").await;
        let context = format!("{backend}: ");
        attach_resumed(&mut back, channel, &before, &context).await;
        assert_eq!(numbered(&mut back, 1).await, ["1"], "{backend}: resume");
    });
}
