//! Mutable messages across nodes on one Redis: an edit on one node reaches subscribers on every
//! node once, in order, with the same version serial; concurrent edits on two nodes converge to
//! the higher version serial everywhere; a node started after the edits, rewind and resume on
//! another node see the latest versions; Redis down means 503, not a silent drop.

use std::path::PathBuf;

use serde_json::{json, Value};
use test_support::{connect, next_json, send_json, RedisServer, Request, Socket};

use crate::support::{
    attach, block_on, nodes, patch_message, publish_returning_serial, rest, Server, KEY,
};

const CHANNEL: &str = "chat:room";

/// The nodes' config file: the `chat` namespace has the mutable-messages rule.
fn mutable_config() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mutable-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("realtime.toml");
    std::fs::write(
        &file,
        "[[history.namespace]]\nname = \"chat\"\nmutable_messages = true\n\n\
         [[history.namespace]]\nname = \"live\"\nbatching_interval_ms = 200\n",
    )
    .unwrap();
    file
}

async fn publish(node: &Server, data: &str) -> String {
    let body = json!({"name": "said", "data": data}).to_string();
    publish_returning_serial(node, CHANNEL, &body).await
}

async fn patch(node: &Server, serial: &str, op: Value) -> (u16, Value) {
    patch_message(node, CHANNEL, serial, &op).await
}

/// PATCHes `op`, expecting 200; returns the version serial.
async fn change(node: &Server, serial: &str, op: Value) -> String {
    let (status, body) = patch(node, serial, op).await;
    assert_eq!(status, 200, "{body}");
    body["versionSerial"].as_str().unwrap().to_owned()
}

async fn latest(node: &Server, serial: &str) -> Value {
    let path = format!("/channels/{CHANNEL}/messages/{serial}");
    let (status, body) = rest(node.addr, Request::get(path).basic(KEY)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn subscriber(node: &Server, extra: &str) -> Socket {
    let mut socket = connect(node.addr, &format!("key={KEY}&format=json{extra}")).await;
    assert_eq!(next_json(&mut socket).await["action"], 4);
    socket
}

/// The next MESSAGE frame (heartbeats and the like skipped).
async fn next_message(socket: &mut Socket) -> Value {
    loop {
        let frame = next_json(socket).await;
        if frame["action"] == 15 {
            return frame;
        }
    }
}

/// (action, data, version serial) of each message of the next MESSAGE frame.
async fn next_messages(socket: &mut Socket) -> Vec<(Value, Value, Value)> {
    let frame = next_message(socket).await;
    frame["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["action"].clone(),
                m["data"].clone(),
                m["version"]["serial"].clone(),
            )
        })
        .collect()
}

#[test]
fn edits_reach_every_node_once_and_converge_to_the_highest_version() {
    let config = mutable_config();
    let config = config.to_str().unwrap();
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 2, &["--config", config]);
    let (a, b) = (&nodes[0], &nodes[1]);
    block_on(async {
        let mut on_a = subscriber(a, "").await;
        attach(&mut on_a, CHANNEL).await;
        let mut on_b = subscriber(b, "").await;
        attach(&mut on_b, CHANNEL).await;

        let serial = publish(a, "Hello").await;
        for socket in [&mut on_a, &mut on_b] {
            assert_eq!(next_messages(socket).await[0].1, "Hello");
        }

        let edited = change(
            a,
            &serial,
            json!({"data": "Hi", "version": {"description": "d"}}),
        )
        .await;
        for socket in [&mut on_a, &mut on_b] {
            let frame = next_message(socket).await;
            let message = &frame["messages"][0];
            assert_eq!(
                (&message["action"], &message["data"]),
                (&json!(1), &json!("Hi")),
                "{frame}"
            );
            assert_eq!(message["name"], "said", "merged on every node");
            assert_eq!(message["version"]["serial"], edited.as_str());
            assert_eq!(frame["channelSerial"], edited.as_str());
        }
        assert_eq!(
            latest(b, &serial).await["version"]["serial"],
            edited.as_str()
        );

        // Two edits at once, one per node: Redis orders them, and every node ends on the
        // higher version serial.
        let (one, two) = tokio::join!(
            change(a, &serial, json!({"data": "from a"})),
            change(b, &serial, json!({"data": "from b"})),
        );
        let (winner, winning_data) = if one > two {
            (&one, "from a")
        } else {
            (&two, "from b")
        };
        for socket in [&mut on_a, &mut on_b] {
            let mut seen = next_messages(socket).await;
            if seen.len() < 2 {
                seen.extend(next_messages(socket).await);
            }
            let versions: Vec<&Value> = seen.iter().map(|(_, _, v)| v).collect();
            let (low, high) = if one < two {
                (&one, &two)
            } else {
                (&two, &one)
            };
            assert_eq!(
                versions,
                [&json!(low), &json!(high)],
                "once each, in serial order"
            );
            assert_eq!(seen[1].1, winning_data);
        }
        for node in [a, b] {
            let view = latest(node, &serial).await;
            assert_eq!(
                (&view["data"], &view["version"]["serial"]),
                (&json!(winning_data), &json!(winner))
            );
        }

        // An append on B: A's subscriber saw the message live, so it gets just the new part.
        let streamed = publish(b, "Hello").await;
        for socket in [&mut on_a, &mut on_b] {
            next_messages(socket).await;
        }
        let appended = change(b, &streamed, json!({"action": 5, "data": " World"})).await;
        for socket in [&mut on_a, &mut on_b] {
            assert_eq!(
                next_messages(socket).await,
                [(json!(5), json!(" World"), json!(appended))]
            );
        }

        // Rewind and resume on A after edits made on B; versions from A.
        let mut rewound = subscriber(a, "").await;
        send_json(
            &mut rewound,
            json!({"action": 10, "channel": CHANNEL, "params": {"rewind": "2"}}),
        )
        .await;
        assert_eq!(next_json(&mut rewound).await["action"], 11);
        let replay = next_messages(&mut rewound).await;
        assert_eq!(
            replay,
            [
                (json!(1), json!(winning_data), json!(winner)),
                (json!(1), json!("Hello World"), json!(appended)),
            ]
        );
        let mut resumed = subscriber(b, "").await;
        send_json(
            &mut resumed,
            json!({"action": 10, "channel": CHANNEL, "channelSerial": edited}),
        )
        .await;
        let attached = next_json(&mut resumed).await;
        assert_ne!(
            attached["flags"].as_u64().unwrap() & 4,
            0,
            "RESUMED: {attached}"
        );
        let replay = next_messages(&mut resumed).await;
        let actions: Vec<&Value> = replay.iter().map(|(action, _, _)| action).collect();
        assert_eq!(
            actions,
            [&json!(1), &json!(1), &json!(0), &json!(5)],
            "{replay:?}"
        );

        let path = format!("/channels/{CHANNEL}/messages/{serial}/versions");
        let (status, body) = rest(a.addr, Request::get(path).basic(KEY)).await;
        assert_eq!(status, 200, "{body}");
        let versions: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            versions.as_array().unwrap().len(),
            4,
            "create and three updates: {versions}"
        );

        // A node that starts now loads the stream and folds the edits in.
        let late = Server::start(&["--keys", KEY, "--redis", &redis.url(), "--config", config]);
        let view = latest(&late, &streamed).await;
        assert_eq!(
            (&view["data"], &view["action"]),
            (&json!("Hello World"), &json!(1))
        );
        assert_eq!(latest(&late, &serial).await["data"], winning_data);

        // Redis down: the edit is refused loudly, not dropped.
        redis.stop();
        let (status, body) = patch(a, &serial, json!({"data": "lost?"})).await;
        assert!(status >= 500, "{status} {body}");
    });
}

/// A node dies: a client that was on it attaches on another node from the last serial it saw,
/// and is replayed the edits made meanwhile, as they went out. And a batched namespace on two
/// nodes: stored and ephemeral messages published on both reach subscribers on both, each once,
/// several per frame.
#[test]
fn after_a_node_dies_edits_replay_elsewhere_and_batches_span_nodes() {
    let config = mutable_config();
    let config = config.to_str().unwrap();
    let redis = RedisServer::start();
    let mut nodes = nodes(&redis, 3, &["--config", config]);
    block_on(async {
        let mut on_a = subscriber(&nodes[0], "").await;
        attach(&mut on_a, CHANNEL).await;
        let serial = publish(&nodes[1], "Hello").await;
        let created = next_message(&mut on_a).await;
        let seen = created["channelSerial"].as_str().unwrap().to_owned();
        drop(on_a);
        drop(nodes.remove(0));
        let (b, c) = (&nodes[0], &nodes[1]);

        let edited = change(b, &serial, json!({"data": "Hi"})).await;
        let appended = change(c, &serial, json!({"action": 5, "data": "!"})).await;
        let mut back = subscriber(b, "").await;
        send_json(
            &mut back,
            json!({"action": 10, "channel": CHANNEL, "channelSerial": seen}),
        )
        .await;
        let attached = next_json(&mut back).await;
        assert_ne!(
            attached["flags"].as_u64().unwrap() & 4,
            0,
            "RESUMED: {attached}"
        );
        let mut replay = next_messages(&mut back).await;
        if replay.len() < 2 {
            replay.extend(next_messages(&mut back).await);
        }
        assert_eq!(
            replay,
            [
                (json!(1), json!("Hi"), json!(edited)),
                (json!(5), json!("!"), json!(appended)),
            ]
        );

        let mut watchers = Vec::new();
        for node in [b, c] {
            let mut socket = subscriber(node, "").await;
            attach(&mut socket, "live:room").await;
            watchers.push(socket);
        }
        let (mut on_b, mut on_c) = (subscriber(b, "").await, subscriber(c, "").await);
        for n in 0..10u64 {
            for (socket, extras) in [
                (&mut on_b, json!({})),
                (&mut on_c, json!({"ephemeral": true})),
            ] {
                let message = json!({"name": "r", "data": n.to_string(), "extras": extras});
                send_json(
                    socket,
                    json!({"action": 15, "channel": "live:room", "msgSerial": n,
                                         "messages": [message]}),
                )
                .await;
            }
        }
        for watcher in &mut watchers {
            let mut data = Vec::new();
            let mut frames = 0;
            while data.len() < 20 {
                frames += 1;
                data.extend(next_messages(watcher).await.into_iter().map(|(_, d, _)| d));
            }
            data.sort_by_key(|d| d.as_str().unwrap().parse::<u64>().unwrap());
            let each_twice: Vec<Value> = (0..10u64)
                .flat_map(|n| [json!(n.to_string()), json!(n.to_string())])
                .collect();
            assert_eq!(data, each_twice, "every message once");
            assert!(frames < 20, "{frames} frames for 20 messages");
        }
    });
}
