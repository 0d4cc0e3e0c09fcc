//! Several `realtime` processes on one real `redis-server`: one bus.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;

use crate::support::{connect, http, next_json, send_json, Server};

/// A `redis-server` on a free loopback port, killed on drop (never the machine's own on 6379).
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    child: Child,
    /// How it keeps data on disk (flags), the same on every restart.
    persistence: Vec<String>,
}

impl RedisServer {
    /// Keeping nothing on disk: a restart comes back empty.
    pub(crate) fn start() -> RedisServer {
        RedisServer::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// With `persistence` flags (e.g. `--dir`, `--appendonly yes`) instead of keeping nothing.
    pub(crate) fn start_with(persistence: &[&str]) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let persistence: Vec<String> = persistence.iter().map(|s| s.to_string()).collect();
        RedisServer {
            port,
            child: spawn_redis(port, &persistence),
            persistence,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills (SIGKILL) and starts again on the same port, with what it kept on disk (by
    /// default nothing: it comes back empty).
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.child = spawn_redis(self.port, &self.persistence);
    }

    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` nodes on `redis`, each with the test key and `extra` flags.
pub(crate) fn nodes(redis: &RedisServer, n: usize, extra: &[&str]) -> Vec<Server> {
    nodes_at(&redis.url(), n, extra)
}

/// `n` nodes on the Redis at `url` (a server or a cluster), each with the test key and `extra`.
pub(crate) fn nodes_at(url: &str, n: usize, extra: &[&str]) -> Vec<Server> {
    (0..n)
        .map(|_| {
            let mut args = vec!["--keys", "app.k:secret", "--redis", url];
            args.extend_from_slice(extra);
            Server::start(&args)
        })
        .collect()
}

/// Waits (bounded) until something accepts connections on loopback `port`.
pub(crate) fn wait_for_port(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `redis-server` on `port` (loopback, `persistence` flags), once it accepts connections.
fn spawn_redis(port: u16, persistence: &[String]) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(persistence)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    wait_for_port(port, "redis-server");
    child
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn publish_request(channel: &str, body: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode("app.k:secret");
    format!(
        "POST /channels/{channel}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_publish_to_one_node_reaches_subscribers_on_every_node_once_in_order() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
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
                http(nodes[0].addr, &publish_request("session:1", &body))
                    .await
                    .0,
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
            let (status, response) = http(node.addr, &publish_request("session:1", &body)).await;
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
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut socket = connect(node.addr, "key=app.k:secret&format=json").await;
        assert_eq!(next_json(&mut socket).await["action"], 4);
        assert_eq!(
            http(node.addr, &publish_request("c", r#"{"data":"up"}"#))
                .await
                .0,
            201
        );

        redis.stop();
        let (status, body) = http(node.addr, &publish_request("c", r#"{"data":"down"}"#)).await;
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
    });
}

#[test]
fn an_unreachable_redis_at_start_is_a_clear_failure() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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

pub(crate) type Socket = crate::support::Socket;

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

/// Publishes markers through `via` until every socket has heard one: the bus is live end to end.
async fn until_every_node_hears(via: &Server, channel: &str, sockets: &mut [Socket]) {
    let mut heard = vec![false; sockets.len()];
    for attempt in 0..100 {
        let body = format!(r#"{{"name":"marker","data":"{attempt}"}}"#);
        http(via.addr, &publish_request(channel, &body)).await;
        for (i, socket) in sockets.iter_mut().enumerate() {
            while let Ok(frame) =
                tokio::time::timeout(Duration::from_millis(100), next_json(socket)).await
            {
                if frame["action"] == 15 {
                    heard[i] = true;
                }
            }
        }
        if heard.iter().all(|h| *h) {
            return;
        }
    }
    panic!("the bus never carried a marker to every node: {heard:?}");
}

/// Reads until `n` messages named "n" arrived; returns their data in arrival order.
pub(crate) async fn numbered(socket: &mut Socket, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let frame = next_json(socket).await;
        for message in frame["messages"].as_array().into_iter().flatten() {
            if message["name"] == "n" {
                seen.push(message["data"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    seen
}

#[test]
fn a_dropped_pub_sub_link_is_re_established_and_back_filled() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut sockets = subscribe_everywhere(&nodes, "payments:1").await;
        until_every_node_hears(&nodes[0], "payments:1", &mut sockets).await;

        // Cut every pub/sub link; the data (streams) stays. What is published now misses
        // pub/sub and must come back through the back-fill.
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        for n in 0..5 {
            let body = format!(r#"{{"name":"n","data":"{n}"}}"#);
            assert_eq!(
                http(nodes[0].addr, &publish_request("payments:1", &body))
                    .await
                    .0,
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
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut sockets = subscribe_everywhere(&nodes, "session:9").await;
        until_every_node_hears(&nodes[0], "session:9", &mut sockets).await;
        redis.restart();
        // The nodes reconnect and resubscribe by themselves; markers prove it end to end.
        until_every_node_hears(&nodes[1], "session:9", &mut sockets).await;
        let body = r#"{"name":"n","data":"after"}"#;
        assert_eq!(
            http(nodes[0].addr, &publish_request("session:9", body))
                .await
                .0,
            201
        );
        for socket in sockets.iter_mut() {
            assert_eq!(numbered(socket, 1).await, ["after"]);
        }
    });
}

/// Polls `/readyz` until it answers `status` (bounded): readiness follows the bus's own probe.
pub(crate) async fn until_readyz(node: &Server, status: u16) {
    for _ in 0..100 {
        let (got, _) = http(
            node.addr,
            "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if got == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {status}");
}

#[test]
fn readyz_follows_the_bus() {
    let mut redis = RedisServer::start();
    let node = Server::start(&["--keys", "app.k:secret", "--redis", &redis.url()]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        until_readyz(&node, 200).await;
        redis.stop();
        until_readyz(&node, 503).await;
        let (status, _) = http(
            node.addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200, "alive, just not ready");
        redis.restart();
        until_readyz(&node, 200).await;
    });
}

/// Publishes message "n" with data `n`; returns the serial from the 201 body.
pub(crate) async fn publish_serial(node: &Server, channel: &str, n: usize) -> String {
    let request = publish_request(channel, &format!(r#"{{"name":"n","data":"{n}"}}"#));
    let (status, body) = http(node.addr, &request).await;
    assert_eq!(status, 201, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    body["serials"][0].as_str().unwrap().to_owned()
}

#[test]
fn history_and_rewind_on_any_node_come_from_the_shared_store() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Nobody listens anywhere: the messages exist only in Redis.
        let mut serials = Vec::new();
        for n in 0..3 {
            serials.push(publish_serial(&nodes[0], "user:7", n).await);
        }
        let (status, body) = http(
            nodes[1].addr,
            "GET /channels/user:7/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YXBwLms6c2VjcmV0\r\nConnection: close\r\n\r\n",
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
        assert_eq!(got, expected, "node B's history is node A's publishes, newest first");

        let mut socket = connect(nodes[2].addr, "key=app.k:secret&format=json").await;
        assert_eq!(next_json(&mut socket).await["action"], 4);
        send_json(
            &mut socket,
            json!({"action": 10, "channel": "user:7", "params": {"rewind": "2"}}),
        )
        .await;
        assert_eq!(next_json(&mut socket).await["action"], 11);
        assert_eq!(numbered(&mut socket, 2).await, ["1", "2"], "rewind on node C");
    });
}

#[test]
fn a_channel_resumes_on_another_node_from_its_channel_serial() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
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
        send_json(
            &mut socket,
            json!({"action": 10, "channel": "call:3", "channelSerial": seen}),
        )
        .await;
        let attached = next_json(&mut socket).await;
        assert_eq!(attached["action"], 11);
        let resumed = 1 << 2;
        assert_ne!(
            attached["flags"].as_u64().unwrap() & resumed,
            0,
            "{attached}"
        );
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
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut sockets = subscribe_everywhere(&nodes[1..], "session:5").await;
        publish_serial(&nodes[0], "session:5", 0).await;
        store_unannounced(&redis, "session:5", "1");
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
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
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
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut sockets = subscribe_everywhere(std::slice::from_ref(&gateway), "session:4").await;
        let (status, body) = http(
            api.addr,
            &publish_request("session:4", r#"{"name":"n","data":"via api"}"#),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(numbered(&mut sockets[0], 1).await, ["via api"]);

        let (status, _) = http(
            gateway.addr,
            &publish_request("session:4", r#"{"data":"x"}"#),
        )
        .await;
        assert_eq!(status, 404, "no REST on a gateway pod");
        let upgrade = tokio_tungstenite::connect_async(format!(
            "ws://{}/?key=app.k:secret&format=json",
            api.addr
        ))
        .await;
        assert!(upgrade.is_err(), "no WebSockets on an api pod");
        for node in [&gateway, &api] {
            let (status, _) = http(
                node.addr,
                "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
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
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
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
