//! Several `realtime` processes on one real `redis-server`: one bus.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::{
    attach_resumed, block_on, connect, next_json, nodes, numbered, on_nodes, publish,
    publish_serial, rest, rewind_two, send_json, until_live, until_readyz, RedisServer, Request,
    Server, Socket, KEY,
};

#[test]
fn a_publish_to_one_node_reaches_subscribers_on_every_node_once_in_order() {
    on_nodes(3, &[], async |_, nodes| {
        let mut subscribers = Vec::new();
        for node in &nodes {
            let mut socket = connect(node.addr, "key=app.k:secret&format=json").await;
            assert_eq!(next_json(&mut socket).await["action"], 4);
            send_json(&mut socket, json!({"action": 10, "channel": "session:1"})).await;
            assert_eq!(next_json(&mut socket).await["action"], 11);
            subscribers.push(socket);
        }
        // The node subscribes to the channel's topic as the first local subscriber attaches; a
        // marker published until every node has it proves all three links are live.
        let mut ready = vec![false; nodes.len()];
        let mut marker = 0;
        while !ready.iter().all(|r| *r) {
            marker += 1;
            assert!(marker < 200, "subscriptions never became live");
            let body = format!(r#"{{"name":"marker","data":"{marker}"}}"#);
            assert_eq!(
                rest(nodes[0].addr, publish("session:1", &body)).await.0,
                201
            );
            for (i, socket) in subscribers.iter_mut().enumerate() {
                if ready[i] {
                    // Drain the marker this ready node also gets.
                    let frame = next_json(socket).await;
                    assert_eq!(frame["messages"][0]["name"], "marker");
                    continue;
                }
                if let Ok(frame) =
                    tokio::time::timeout(Duration::from_millis(100), next_json(socket)).await
                {
                    assert_eq!(frame["messages"][0]["name"], "marker");
                    ready[i] = true;
                }
            }
        }
        // Markers still in flight are skipped below: only the numbered messages are counted.
        let mut expected = Vec::new();
        for n in 0..10 {
            let node = &nodes[n % nodes.len()];
            let body = format!(r#"{{"name":"n","data":"{n}"}}"#);
            let (status, response) = rest(node.addr, publish("session:1", &body)).await;
            assert_eq!(status, 201, "{response}");
            let response: serde_json::Value = serde_json::from_str(&response).unwrap();
            expected.push(response["serials"][0].as_str().unwrap().to_owned());
        }
        let mut sorted = expected.clone();
        sorted.sort();
        assert_eq!(
            expected, sorted,
            "serials increase in publish order across nodes"
        );
        for (i, socket) in subscribers.iter_mut().enumerate() {
            let mut seen = Vec::new();
            while seen.len() < 10 {
                let frame = next_json(socket).await;
                for message in frame["messages"].as_array().unwrap() {
                    if message["name"] == "n" {
                        seen.push((
                            message["data"].as_str().unwrap().to_owned(),
                            message["serial"].as_str().unwrap().to_owned(),
                            message["id"].clone(),
                        ));
                    }
                }
            }
            let data: Vec<String> = seen.iter().map(|(d, _, _)| d.clone()).collect();
            assert_eq!(
                data,
                (0..10).map(|n| n.to_string()).collect::<Vec<_>>(),
                "node {i}: once each, in order"
            );
            let serials: Vec<String> = seen.iter().map(|(_, s, _)| s.clone()).collect();
            assert_eq!(serials, expected, "node {i}: the same serials everywhere");
        }
    });
}

#[test]
fn with_redis_down_a_publish_is_refused_never_acknowledged() {
    let mut redis = RedisServer::start();
    let node = Server::start(&["--keys", "app.k:secret", "--redis", &redis.url()]);
    block_on(async {
        let mut socket = connect(node.addr, "key=app.k:secret&format=json").await;
        assert_eq!(next_json(&mut socket).await["action"], 4);
        assert_eq!(
            rest(node.addr, publish("c", r#"{"data":"up"}"#)).await.0,
            201
        );

        redis.stop();
        let (status, body) = rest(node.addr, publish("c", r#"{"data":"down"}"#)).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("50003"), "{body}");
        send_json(
            &mut socket,
            json!({"action": 15, "channel": "c", "msgSerial": 0, "messages": [{"data": "down"}]}),
        )
        .await;
        let nack = next_json(&mut socket).await;
        assert_eq!(nack["action"], 2, "NACK, never ACK: {nack}");
        assert_eq!(nack["error"]["code"], 50003);

        // Ephemeral publishes store nothing, but are not dropped silently either.
        let ephemeral = r#"{"data":"down","extras":{"ephemeral":true}}"#;
        let (status, body) = rest(node.addr, publish("c", ephemeral)).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("50003"), "{body}");
        let messages: serde_json::Value = serde_json::from_str(ephemeral).unwrap();
        send_json(
            &mut socket,
            json!({"action": 15, "channel": "c", "msgSerial": 1, "messages": [messages]}),
        )
        .await;
        let nack = next_json(&mut socket).await;
        assert_eq!(nack["action"], 2, "NACK, never ACK: {nack}");
        assert_eq!(nack["error"]["code"], 50003);
    });
}

#[test]
fn an_unreachable_redis_at_start_is_a_clear_failure() {
    let port = test_support::free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_realtime"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--keys",
            "a.b:c",
            "--redis",
            &format!("redis://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--redis"), "{stderr}");
}

/// One JSON subscriber per node on `channel`, attached.
async fn subscribe_everywhere(nodes: &[Server], channel: &str) -> Vec<Socket> {
    let mut sockets = Vec::new();
    for node in nodes {
        let mut socket = connect(node.addr, "key=app.k:secret&format=json").await;
        assert_eq!(next_json(&mut socket).await["action"], 4);
        send_json(&mut socket, json!({"action": 10, "channel": channel})).await;
        assert_eq!(next_json(&mut socket).await["action"], 11);
        sockets.push(socket);
    }
    sockets
}

#[test]
fn a_dropped_pub_sub_link_is_re_established_and_back_filled() {
    on_nodes(2, &[], async |redis, nodes| {
        let mut sockets = subscribe_everywhere(&nodes, "payments:1").await;
        until_live(&nodes[0], &["payments:1"], &mut sockets).await;

        // Cut every pub/sub link; the data (streams) stays. What is published now misses
        // pub/sub and must come back through the back-fill.
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        for n in 0..5 {
            let body = format!(r#"{{"name":"n","data":"{n}"}}"#);
            assert_eq!(
                rest(nodes[0].addr, publish("payments:1", &body)).await.0,
                201
            );
        }
        let expected: Vec<String> = (0..5).map(|n| n.to_string()).collect();
        for socket in sockets.iter_mut() {
            assert_eq!(
                numbered(socket, 5).await,
                expected,
                "every message once, in order"
            );
        }
    });
}

#[test]
fn after_a_redis_restart_delivery_resumes_on_every_node() {
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 2, &[]);
    block_on(async {
        let mut sockets = subscribe_everywhere(&nodes, "session:9").await;
        until_live(&nodes[0], &["session:9"], &mut sockets).await;
        redis.restart();
        // The nodes reconnect and resubscribe by themselves; markers prove it end to end.
        until_live(&nodes[1], &["session:9"], &mut sockets).await;
        let body = r#"{"name":"n","data":"after"}"#;
        assert_eq!(rest(nodes[0].addr, publish("session:9", body)).await.0, 201);
        for socket in sockets.iter_mut() {
            assert_eq!(numbered(socket, 1).await, ["after"]);
        }
    });
}

#[test]
fn readyz_follows_the_bus() {
    let mut redis = RedisServer::start();
    let node = Server::start(&["--keys", "app.k:secret", "--redis", &redis.url()]);
    block_on(async {
        until_readyz(&node, 200).await;
        redis.stop();
        until_readyz(&node, 503).await;
        let (status, _) = rest(node.addr, Request::get("/healthz")).await;
        assert_eq!(status, 200, "alive, just not ready");
        redis.restart();
        until_readyz(&node, 200).await;
    });
}

#[test]
fn history_and_rewind_on_any_node_come_from_the_shared_store() {
    on_nodes(3, &[], async |_, nodes| {
        // Nobody listens anywhere: the messages exist only in Redis.
        let mut serials = Vec::new();
        for n in 0..3 {
            serials.push(publish_serial(&nodes[0], "user:7", n).await);
        }
        let (status, body) = rest(
            nodes[1].addr,
            Request::get("/channels/user:7/messages").basic(KEY),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let got: Vec<(String, String)> = page
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["data"].as_str().unwrap().to_owned(),
                    m["serial"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut expected: Vec<(String, String)> = (0..3)
            .map(|n| n.to_string())
            .zip(serials.iter().cloned())
            .collect();
        expected.reverse();
        assert_eq!(
            got, expected,
            "node B's history is node A's publishes, newest first"
        );

        let rewound = rewind_two(&nodes[2], "user:7").await;
        assert_eq!(rewound, ["1", "2"], "rewind on node C");

        // One message by its serial, from another node than the publisher's.
        let path = format!("/channels/user:7/messages/{}", serials[1]);
        let (status, body) = rest(nodes[2].addr, Request::get(path).basic(KEY)).await;
        assert_eq!(status, 200, "{body}");
        let message: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (message["data"].as_str(), message["serial"].as_str()),
            (Some("1"), Some(serials[1].as_str())),
            "{body}"
        );
    });
}

#[test]
fn a_channel_resumes_on_another_node_from_its_channel_serial() {
    on_nodes(2, &[], async |_, nodes| {
        let mut sockets = subscribe_everywhere(&nodes[..1], "call:3").await;
        publish_serial(&nodes[1], "call:3", 0).await;
        let frame = next_json(&mut sockets[0]).await;
        let seen = frame["channelSerial"].as_str().unwrap().to_owned();
        drop(sockets);
        for n in 1..4 {
            publish_serial(&nodes[0], "call:3", n).await;
        }
        let mut socket = connect(nodes[1].addr, "key=app.k:secret&format=json").await;
        assert_eq!(next_json(&mut socket).await["action"], 4);
        attach_resumed(&mut socket, "call:3", &seen, "").await;
        assert_eq!(numbered(&mut socket, 3).await, ["1", "2", "3"]);
    });
}

/// Stores a message in the channel's stream as a publish would, but announces nothing: a
/// pub/sub message lost on the way.
fn store_unannounced(redis: &RedisServer, channel: &str, data: &str) {
    let script = "local n = redis.call('HINCRBY', KEYS[2], 'n', 1) \
        local e = redis.call('HGET', KEYS[2], 'e') \
        return redis.call('XADD', KEYS[1], e .. '-' .. n, 'm', ARGV[1], 't', ARGV[2])";
    let body = json!({"name": "n", "data": data, "id": format!("lost-{data}:0")}).to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let stream = format!("rt:{{{channel}}}:log");
    let meta = format!("rt:{{{channel}}}:meta");
    let id = redis.cli(&["EVAL", script, "2", &stream, &meta, &body, &now]);
    assert!(id.contains('-'), "stored: {id}");
}

#[test]
fn a_lost_pub_sub_message_is_noticed_and_fetched_from_the_store() {
    on_nodes(2, &[], async |redis, nodes| {
        let mut sockets = subscribe_everywhere(&nodes[1..], "session:5").await;
        publish_serial(&nodes[0], "session:5", 0).await;
        store_unannounced(redis, "session:5", "1");
        publish_serial(&nodes[0], "session:5", 2).await;
        assert_eq!(
            numbered(&mut sockets[0], 3).await,
            ["0", "1", "2"],
            "the gap in serials made the node fetch the lost one, in order"
        );
    });
}

#[test]
fn when_the_store_no_longer_has_missed_messages_subscribers_are_told() {
    let redis = RedisServer::start();
    let node = Server::start(&["--keys", "app.k:secret", "--redis", &redis.url()]);
    block_on(async {
        let mut sockets = subscribe_everywhere(std::slice::from_ref(&node), "live:1").await;
        publish_serial(&node, "live:1", 0).await;
        assert_eq!(numbered(&mut sockets[0], 1).await, ["0"]);
        // Two serials spent with nothing stored: those messages are gone for good.
        redis.cli(&["HINCRBY", "rt:{live:1}:meta", "n", "2"]);
        publish_serial(&node, "live:1", 3).await;
        let notice = next_json(&mut sockets[0]).await;
        assert_eq!(notice["action"], 11, "ATTACHED again: {notice}");
        assert_eq!(notice["error"]["code"], 90003, "{notice}");
        assert_eq!(
            notice["flags"].as_u64().unwrap() & (1 << 2),
            0,
            "not RESUMED"
        );
        assert_eq!(numbered(&mut sockets[0], 1).await, ["3"], "then live again");
    });
}

#[test]
fn gateway_and_api_roles_split_websockets_from_rest() {
    let redis = RedisServer::start();
    let args = ["--keys", "app.k:secret", "--redis", &redis.url()];
    let gateway = Server::start_role("gateway", &args);
    let api = Server::start_role("api", &args);
    block_on(async {
        let mut sockets = subscribe_everywhere(std::slice::from_ref(&gateway), "session:4").await;
        let (status, body) = rest(
            api.addr,
            publish("session:4", r#"{"name":"n","data":"via api"}"#),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(numbered(&mut sockets[0], 1).await, ["via api"]);

        let (status, _) = rest(gateway.addr, publish("session:4", r#"{"data":"x"}"#)).await;
        assert_eq!(status, 404, "no REST on a gateway pod");
        let upgrade = tokio_tungstenite::connect_async(format!(
            "ws://{}/?key=app.k:secret&format=json",
            api.addr
        ))
        .await;
        assert!(upgrade.is_err(), "no WebSockets on an api pod");
        for node in [&gateway, &api] {
            let (status, _) = rest(node.addr, Request::get("/readyz")).await;
            assert_eq!(status, 200);
        }
    });
}

#[test]
fn a_single_role_without_redis_is_refused() {
    for role in ["gateway", "api"] {
        let output = Command::new(env!("CARGO_BIN_EXE_realtime"))
            .args([role, "--listen", "127.0.0.1:0", "--keys", "a.b:c"])
            .env_remove("REALTIME_REDIS_URL")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{role}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--redis"), "{stderr}");
    }
}

#[test]
fn concurrent_attaches_share_subscribe_commands() {
    let redis = RedisServer::start();
    let node = Server::start(&["--keys", "app.k:secret", "--redis", &redis.url()]);
    block_on(async {
        const N: usize = 100;
        let mut sockets = Vec::new();
        for _ in 0..N {
            let mut socket = connect(node.addr, "key=app.k:secret&format=json").await;
            assert_eq!(next_json(&mut socket).await["action"], 4);
            sockets.push(socket);
        }
        // Every ATTACH is on the wire before any ATTACHED is read.
        for (i, socket) in sockets.iter_mut().enumerate() {
            send_json(
                socket,
                json!({"action": 10, "channel": format!("batch:{i}")}),
            )
            .await;
        }
        for socket in sockets.iter_mut() {
            assert_eq!(next_json(socket).await["action"], 11);
        }
        let stats = redis.cli(&["INFO", "commandstats"]);
        let calls: usize = stats
            .lines()
            .find(|l| l.starts_with("cmdstat_subscribe:"))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .expect("SUBSCRIBE stats");
        let channels = redis.cli(&["PUBSUB", "CHANNELS", "rt:ch:*"]);
        assert_eq!(
            channels.lines().count(),
            N,
            "every channel subscribed: {channels}"
        );
        assert!(
            calls < N,
            "{calls} SUBSCRIBE commands for {N} channels: not batched"
        );
    });
}
