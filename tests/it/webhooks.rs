//! Webhooks against a receiver the test runs: signed, retried until accepted, once per id,
//! in order per channel, debounced, once per cluster, surviving a gateway restart, and blind
//! to a node's death its clients survive.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::support::{
    attach, attached, block_on, client, close, enter, eventually, next_signed_request,
    patch_message, publish, publish_returning_serial, rest, resume_ids, send_json,
    until_graces_recorded, RedisServer, Server, Signed,
};

const SECRET: &str = "whsec_test";

/// One request the receiver got.
struct Request {
    signature: String,
    body: Vec<u8>,
    accepted: bool,
}

/// A tiny HTTP/1.1 server: answers 500 to the first `fail_first` requests (or while
/// `failing` is set), 200 after.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serving.clone().serve(stream));
            }
        });
        receiver
    }

    async fn serve(self, stream: tokio::net::TcpStream) {
        let mut stream = BufReader::new(stream);
        while let Some(Signed { signature, body }) = next_signed_request(&mut stream).await {
            let accepted = self
                .fail_first
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_err();
            self.requests.lock().unwrap().push(Request {
                signature,
                body,
                accepted,
            });
            let status = if accepted {
                "200 OK"
            } else {
                "500 Internal Server Error"
            };
            let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            if stream
                .get_mut()
                .write_all(response.as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Fails every request until `accept` is called.
    fn refuse(&self) {
        self.fail_first.store(usize::MAX, Ordering::Release);
    }

    fn accept(&self) {
        self.fail_first.store(0, Ordering::Release);
    }

    /// Items of accepted requests, de-duplicated by id, in arrival order.
    fn items(&self) -> Vec<Value> {
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for request in self.requests.lock().unwrap().iter().filter(|r| r.accepted) {
            let body: Value = serde_json::from_slice(&request.body).expect("JSON body");
            for item in body["items"].as_array().expect("items").iter() {
                if seen.insert(item["id"].as_str().expect("id").to_owned()) {
                    items.push(item.clone());
                }
            }
        }
        items
    }

    /// (name, clientId or "", presence action or 0) of each item on `channel`.
    fn events(&self, channel: &str) -> Vec<(String, String, u64)> {
        self.items()
            .iter()
            .filter(|item| item["data"]["channelId"] == channel)
            .flat_map(|item| {
                let name = item["name"].as_str().unwrap_or_default().to_owned();
                match item["data"]["presence"].as_array() {
                    Some(members) => members
                        .iter()
                        .map(|m| {
                            (
                                name.clone(),
                                m["clientId"].as_str().unwrap_or_default().to_owned(),
                                m["action"].as_u64().unwrap_or(0),
                            )
                        })
                        .collect(),
                    None => vec![(name, String::new(), 0)],
                }
            })
            .collect()
    }

    /// The messages of every `channel.message` item, in arrival order.
    fn messages(&self) -> Vec<Value> {
        self.items()
            .iter()
            .filter(|i| i["source"] == "channel.message")
            .flat_map(|i| {
                i["data"]["messages"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    async fn until(&self, what: &str, done: impl Fn(&Receiver) -> bool) {
        eventually(what, Duration::from_secs(30), || async {
            if done(self) {
                Ok(())
            } else {
                Err(self.items())
            }
        })
        .await;
    }
}

/// A config file with the test key and one webhook to `receiver`.
fn config(receiver: SocketAddr, name: &str, extra: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "realtime-webhooks-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        format!(
            r#"
webhook_debounce_ms = 1000
[[keys]]
key = "app.k:secret"
[[webhooks]]
id = "billing"
url = "http://{receiver}/hooks"
channels = "call:*"
events = ["channel.lifecycle", "channel.presence", "channel.message"]
secret = "{SECRET}"
batch_ms = 20
retry_initial_ms = 50
retry_max_ms = 200
timeout_ms = 1000
{extra}
"#
        ),
    )
    .unwrap();
    path
}

/// A receiver failing its first `fail_first` requests, and a node sending to it (`config` for
/// `name`).
async fn node_with_receiver(name: &str, fail_first: usize) -> (Receiver, Server) {
    let receiver = Receiver::start(fail_first).await;
    let path = config(receiver.addr, name, "");
    let node = Server::start(&["--config", path.to_str().unwrap()]);
    (receiver, node)
}

/// Runs `test` with a Redis, a receiver and the arguments of a node on both: `--config` (see
/// `config`, for `name`), `--redis` and `extra`.
fn on_redis(name: &str, extra: &[&str], test: impl AsyncFnOnce(&RedisServer, Receiver, &[&str])) {
    let redis = RedisServer::start();
    block_on(async {
        let receiver = Receiver::start(0).await;
        let path = config(receiver.addr, name, "");
        let url = redis.url();
        let mut args = vec!["--config", path.to_str().unwrap(), "--redis", &url];
        args.extend_from_slice(extra);
        test(&redis, receiver, &args).await;
    });
}

fn opened() -> (String, String, u64) {
    ("channel.opened".into(), String::new(), 0)
}

fn closed() -> (String, String, u64) {
    ("channel.closed".into(), String::new(), 0)
}

fn presence(client_id: &str, action: u64) -> (String, String, u64) {
    ("presence.message".into(), client_id.into(), action)
}

#[test]
fn deliveries_are_signed_retried_until_accepted_and_in_order() {
    block_on(async {
        let (receiver, node) = node_with_receiver("signed", 3).await;
        let mut alice = attached(&node, "alice", "", "call:1").await;
        enter(&mut alice, "call:1", "hi").await;
        send_json(
            &mut alice,
            json!({"action": 15, "channel": "call:1", "msgSerial": 1,
                   "messages": [{"name": "tip", "data": "5"}]}),
        )
        .await;
        attach(&mut alice, "stream:1").await; // not a webhook channel
        close(alice).await; // CLOSE: alice leaves at once
        receiver
            .until("alice's leave and the close, after the debounce", |r| {
                r.events("call:1").contains(&closed())
            })
            .await;
        let mut bob = attached(&node, "bob", "", "call:1").await;
        enter(&mut bob, "call:1", "yo").await;
        close(bob).await;

        receiver
            .until("bob's visit", |r| r.events("call:1").len() == 9)
            .await;
        assert_eq!(
            receiver.events("call:1"),
            [
                opened(),
                presence("alice", 2),
                ("channel.message".into(), String::new(), 0),
                presence("alice", 3),
                closed(),
                opened(),
                presence("bob", 2),
                presence("bob", 3),
                closed(),
            ],
            "every event once, in the order it happened"
        );
        let times: Vec<u64> = receiver
            .items()
            .iter()
            .map(|item| item["timestamp"].as_u64().unwrap())
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "transition times: {times:?}"
        );
        assert!(receiver.events("stream:1").is_empty());

        let requests = receiver.requests.lock().unwrap();
        assert!(requests.iter().filter(|r| !r.accepted).count() == 3);
        for request in requests.iter() {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(&request.body);
            let expected =
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            assert_eq!(request.signature, expected, "X-Ably-Signature verifies");
        }
        drop(requests);
        let items = receiver.items();
        let item = &items[0];
        assert_eq!(item["webhookId"], "billing");
        assert_eq!(item["source"], "channel.lifecycle");
        assert!(item["timestamp"].as_u64().unwrap() > 0);
        let message = items
            .iter()
            .find(|i| i["source"] == "channel.message")
            .unwrap();
        assert_eq!(message["data"]["messages"][0]["data"], "5");
        assert_eq!(message["data"]["messages"][0]["clientId"], "alice");
    });
}

#[test]
fn a_client_back_within_the_debounce_bills_no_leave() {
    block_on(async {
        let (receiver, node) = node_with_receiver("debounce", 0).await;
        let (mut alice, connected) = client(&node, "alice", "").await;
        attach(&mut alice, "call:2").await;
        enter(&mut alice, "call:2", "hi").await;
        receiver
            .until("opened and entered", |r| r.events("call:2").len() == 2)
            .await;

        // The transport drops and the client resumes: the channel is re-attached in time.
        drop(alice);
        let (_, key) = resume_ids(&connected);
        let alice = attached(&node, "alice", &format!("&resume={key}"), "call:2").await;

        // Closed and opened again by a new connection of the same client within the debounce.
        close(alice).await;
        let mut again = attached(&node, "alice", "", "call:2").await;
        enter(&mut again, "call:2", "back").await;

        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(
            receiver.events("call:2"),
            [opened(), presence("alice", 2)],
            "no leave, no close, no second open or enter"
        );
    });
}

#[test]
fn two_nodes_announce_one_open_and_one_close() {
    on_redis("cluster", &[], async |_, receiver, args| {
        let nodes: Vec<Server> = (0..2).map(|_| Server::start(args)).collect();
        let alice = attached(&nodes[0], "alice", "", "call:3").await;
        let mut bob = attached(&nodes[1], "bob", "", "call:3").await;
        enter(&mut bob, "call:3", "yo").await;
        close(alice).await;
        // A fan re-attaches on node A while bob is still there.
        let carol = attached(&nodes[0], "carol", "", "call:3").await;
        close(bob).await;
        close(carol).await;

        receiver
            .until("the close", |r| r.events("call:3").contains(&closed()))
            .await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            receiver.events("call:3"),
            [opened(), presence("bob", 2), presence("bob", 3), closed()],
            "one open and one close for the cluster, presence once"
        );
    });
}

#[test]
fn queued_events_survive_a_gateway_restart() {
    on_redis("restart", &[], async |redis, receiver, args| {
        receiver.refuse();
        let node = Server::start(args);
        let mut alice = attached(&node, "alice", "", "call:4").await;
        enter(&mut alice, "call:4", "hi").await;
        close(alice).await;
        // Everything queued (the debounced leave and close too), nothing accepted yet.
        eventually("4 items queued", Duration::from_secs(20), || async {
            let queued = redis.cli(&["XLEN", "rt:webhook:billing:queue"]);
            queued.trim().parse::<u64>().unwrap_or(0) >= 4
        })
        .await;
        drop(node); // killed, with its queue undelivered

        receiver.accept();
        let _node = Server::start(args);
        receiver
            .until("every queued event after the restart", |r| {
                r.events("call:4").len() == 4
            })
            .await;
        assert_eq!(
            receiver.events("call:4"),
            [
                opened(),
                presence("alice", 2),
                presence("alice", 3),
                closed()
            ]
        );
    });
}

#[test]
fn a_member_whose_node_dies_bills_no_leave_if_it_resumes_elsewhere_and_one_if_it_never_does() {
    let lease = ["--node-lease-ms", "1000"];
    on_redis("nodedeath", &lease, async |redis, receiver, args| {
        let mut nodes: Vec<Server> = (0..2).map(|_| Server::start(args)).collect();
        // A viewer on node B keeps the channel occupied throughout.
        let viewer = attached(&nodes[1], "viewer", "", "call:6").await;
        receiver
            .until("opened", |r| r.events("call:6") == [opened()])
            .await;
        let grace = "&remainPresentFor=2000";
        let (mut alice, connected) = client(&nodes[0], "alice", grace).await;
        let (id, key) = resume_ids(&connected);
        attach(&mut alice, "call:6").await;
        enter(&mut alice, "call:6", "hi").await;
        let mut bob = attached(&nodes[0], "bob", grace, "call:6").await;
        enter(&mut bob, "call:6", "yo").await;
        receiver
            .until("both entered", |r| r.events("call:6").len() == 3)
            .await;
        until_graces_recorded(redis, 2).await;

        nodes[0].kill(); // SIGKILL: alice resumes on node B, bob never returns.
        let (mut alice, connected) =
            client(&nodes[1], "alice", &format!("&resume={key}{grace}")).await;
        assert_eq!(connected["connectionId"], id.as_str(), "{connected}");
        attach(&mut alice, "call:6").await;

        receiver
            .until("bob's leave after his grace", |r| {
                r.events("call:6").contains(&presence("bob", 3))
            })
            .await;
        // Had alice's member not been adopted, it would have fallen due with bob's (same death,
        // same grace) and its leave been queued with his.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            receiver.events("call:6"),
            [
                opened(),
                presence("alice", 2),
                presence("bob", 2),
                presence("bob", 3)
            ],
            "no leave for alice, one for bob, no close"
        );
        drop((bob, viewer));
    });
}

/// `channel.message` skips ephemeral messages: the normal message published after them is the
/// only one the receiver gets (items leave in order per channel, so an ephemeral one queued
/// would have come first).
#[test]
fn channel_message_webhooks_skip_ephemeral_messages() {
    block_on(async {
        let (receiver, node) = node_with_receiver("ephemeral", 0).await;
        let mut alice = attached(&node, "alice", "", "call:2").await;
        let publish = |serial: u64, data: &str, extras: Value| {
            json!({"action": 15, "channel": "call:2", "msgSerial": serial,
                   "messages": [{"name": "m", "data": data, "extras": extras}]})
        };
        send_json(&mut alice, publish(0, "typing", json!({"ephemeral": true}))).await;
        send_json(&mut alice, publish(1, "tip", json!({"headers": {}}))).await;
        receiver
            .until("the normal message", |r| {
                r.items().iter().any(|i| i["source"] == "channel.message")
            })
            .await;
        let published: Vec<Value> = receiver
            .messages()
            .iter()
            .map(|m| m["data"].clone())
            .collect();
        assert_eq!(published, [json!("tip")]);
        drop(alice);
    });
}

/// `channel.message` carries what an operation made: an update and a delete of a message come
/// as that message (its serial) with their action and version.
#[test]
fn channel_message_webhooks_carry_updates_and_deletes() {
    block_on(async {
        let receiver = Receiver::start(0).await;
        let mutable = "[[history.namespace]]\nname = \"call\"\nmutable_messages = true\n";
        let path = config(receiver.addr, "operations", mutable);
        let node = Server::start(&["--config", path.to_str().unwrap()]);
        let body = json!({"name": "m", "data": "first"}).to_string();
        let serial = publish_returning_serial(&node, "call:3", &body).await;
        let mut versions = Vec::new();
        for op in [
            json!({"data": "edited", "version": {"description": "typo"}}),
            json!({"action": 2}),
        ] {
            let (status, changed) = patch_message(&node, "call:3", &serial, &op).await;
            assert_eq!(status, 200, "{changed}");
            versions.push(changed["versionSerial"].clone());
        }
        receiver
            .until("the create, update and delete", |r| r.messages().len() >= 3)
            .await;
        let seen: Vec<(Value, Value, Value, Value)> = receiver
            .messages()
            .iter()
            .map(|m| {
                (
                    m["action"].clone(),
                    m["serial"].clone(),
                    m["data"].clone(),
                    m["version"]["serial"].clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (json!(0), json!(serial), json!("first"), Value::Null),
                (
                    json!(1),
                    json!(serial),
                    json!("edited"),
                    versions[0].clone()
                ),
                (
                    json!(2),
                    json!(serial),
                    json!("edited"),
                    versions[1].clone()
                ),
            ]
        );
        assert_eq!(receiver.messages()[1]["version"]["description"], "typo");
    });
}

/// Annotations' summaries reach `channel.message` webhooks as action-4 messages carrying the
/// summary, once per annotation, from the node that stored it: alone, and with two nodes on
/// Redis (the other one holding the channel, the storing one not).
#[test]
fn channel_message_webhooks_carry_annotation_summaries_once() {
    let redis = RedisServer::start();
    block_on(async {
        for clustered in [false, true] {
            let receiver = Receiver::start(0).await;
            let mutable = "[[history.namespace]]\nname = \"call\"\nmutable_messages = true\n";
            let name = if clustered {
                "summaries-redis"
            } else {
                "summaries"
            };
            let path = config(receiver.addr, name, mutable);
            let url = redis.url();
            let mut args = vec!["--config", path.to_str().unwrap()];
            if clustered {
                args.extend(["--redis", url.as_str()]);
            }
            let nodes: Vec<Server> = (0..1 + usize::from(clustered))
                .map(|_| Server::start(&args))
                .collect();
            let (first, last) = (&nodes[0], &nodes[nodes.len() - 1]);
            // The other node holds the channel too, so it applies the annotation as well.
            let watcher = attached(last, "watcher", "", "call:5").await;
            let body = json!({"name": "m", "data": "react to me"}).to_string();
            let serial = publish_returning_serial(last, "call:5", &body).await;
            let annotation = json!([{"type": "reaction:distinct.v1", "name": "heart"}]);
            let request = test_support::Request::post_json(
                format!("/channels/call:5/messages/{serial}/annotations"),
                &annotation,
            )
            .basic(crate::support::KEY)
            .header(
                "x-ably-clientid",
                base64::engine::general_purpose::STANDARD.encode("alice"),
            );
            let (status, answer) = rest(first.addr, request).await;
            assert_eq!(status, 201, "{answer}");

            let messages = |action: u64| -> Vec<Value> {
                receiver
                    .messages()
                    .into_iter()
                    .filter(|m| m["action"] == action)
                    .collect()
            };
            receiver
                .until("the summary", |_| !messages(4).is_empty())
                .await;
            // A message published after it through the other node, as a marker: by the time it
            // is delivered, a second report of the summary would have been queued before it.
            let marker = json!({"name": "marker", "data": "after"}).to_string();
            let (status, _) = rest(last.addr, publish("call:5", &marker)).await;
            assert_eq!(status, 201);
            receiver
                .until("the marker", |_| {
                    messages(0).iter().any(|m| m["name"] == "marker")
                })
                .await;
            let summaries = messages(4);
            assert_eq!(
                summaries.len(),
                1,
                "clustered {clustered}: once: {summaries:?}"
            );
            assert_eq!(summaries[0]["serial"], serial.as_str());
            let heart = &summaries[0]["annotations"]["summary"]["reaction:distinct.v1"]["heart"];
            assert_eq!(heart["total"], 1, "{summaries:?}");
            assert_eq!(heart["clientIds"], json!(["alice"]));
            drop(watcher);
        }
    });
}
