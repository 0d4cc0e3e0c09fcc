//! Annotations across two `realtime` processes on one `redis-server`: either node annotates,
//! both send the same summaries, either node lists them; with Redis down an annotation is
//! refused (NACK / 503), never dropped.

use serde_json::{json, Value};

use crate::support::{
    block_on, connect, next_json, rest, send_json, until_live, RedisServer, Request, Server,
    Socket, KEY,
};

/// Two nodes on `redis` whose `mutable` namespace allows annotations.
fn mutable_nodes(redis: &RedisServer) -> (Vec<Server>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("rt-annotations-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("realtime.toml");
    std::fs::write(
        &file,
        "[[history.namespace]]\nname = \"mutable\"\nmutable_messages = true\n",
    )
    .unwrap();
    let url = redis.url();
    let config = file.to_str().unwrap();
    let nodes = (0..2)
        .map(|_| Server::start(&["--keys", KEY, "--redis", &url, "--config", config]))
        .collect();
    (nodes, dir)
}

/// The next summary (a MESSAGE whose message has action 4), skipping anything else.
async fn next_summary(socket: &mut Socket) -> Value {
    loop {
        let frame = next_json(socket).await;
        if frame["action"] == 15 && frame["messages"][0]["action"] == 4 {
            return frame["messages"][0].clone();
        }
    }
}

fn annotations_path(channel: &str, serial: &str) -> String {
    format!("/channels/{channel}/messages/{serial}/annotations")
}

#[test]
fn two_nodes_send_the_same_summaries_and_list_the_same_annotations() {
    let mut redis = RedisServer::start();
    let (nodes, dir) = mutable_nodes(&redis);
    block_on(async {
        let channel = "mutable:room";
        let mut sockets = Vec::new();
        for node in &nodes {
            let mut socket = connect(node.addr, &format!("key={KEY}&format=json&clientId=u")).await;
            assert_eq!(next_json(&mut socket).await["action"], 4);
            send_json(&mut socket, json!({"action": 10, "channel": channel})).await;
            assert_eq!(next_json(&mut socket).await["action"], 11);
            sockets.push(socket);
        }
        until_live(&nodes[0], &[channel], &mut sockets).await;
        let (status, body) = rest(
            nodes[0].addr,
            Request::post_json(
                format!("/channels/{channel}/messages"),
                &json!({"name": "m"}),
            )
            .basic(KEY),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let serial = serde_json::from_str::<Value>(&body).unwrap()["serials"][0]
            .as_str()
            .unwrap()
            .to_owned();

        // REST on node B.
        let path = annotations_path(channel, &serial);
        let reaction = json!([{"type": "r:distinct.v1", "name": "👍", "clientId": "ann"}]);
        let request = Request::post_json(path.clone(), &reaction).basic(KEY);
        let (status, body) = rest(nodes[1].addr, request).await;
        assert_eq!(status, 201, "{body}");
        let first = json!({"r:distinct.v1": {
            "👍": {"total": 1, "clientIds": ["ann"], "clipped": false},
        }});
        for socket in &mut sockets {
            let summary = next_summary(socket).await;
            assert_eq!(summary["serial"], serial.as_str());
            assert_eq!(summary["annotations"]["summary"], first);
        }

        // Realtime on node A, from the client `u`.
        send_json(
            &mut sockets[0],
            json!({"action": 21, "channel": channel, "msgSerial": 0, "annotations": [
                {"messageSerial": serial, "type": "r:distinct.v1", "name": "👍"},
            ]}),
        )
        .await;
        let second = json!({"r:distinct.v1": {
            "👍": {"total": 2, "clientIds": ["ann", "u"], "clipped": false},
        }});
        for socket in &mut sockets {
            assert_eq!(next_summary(socket).await["annotations"]["summary"], second);
        }

        for node in &nodes {
            let (status, body) = rest(node.addr, Request::get(path.clone()).basic(KEY)).await;
            assert_eq!(status, 200, "{body}");
            let listed: Value = serde_json::from_str(&body).unwrap();
            let clients: Vec<&str> = listed
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["clientId"].as_str().unwrap())
                .collect();
            assert_eq!(clients, ["ann", "u"], "{listed}");
            let read = Request::get(format!("/channels/{channel}/messages/{serial}")).basic(KEY);
            let (status, body) = rest(node.addr, read).await;
            assert_eq!(status, 200, "{body}");
            let message: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(message["annotations"]["summary"], second, "{message}");
        }

        // Redis down: refused, over REST and realtime.
        redis.stop();
        let request = Request::post_json(path.clone(), &reaction).basic(KEY);
        let (status, body) = rest(nodes[1].addr, request).await;
        assert_eq!(status, 503, "{body}");
        send_json(
            &mut sockets[0],
            json!({"action": 21, "channel": channel, "msgSerial": 1, "annotations": [
                {"messageSerial": serial, "type": "r:distinct.v1", "name": "😕"},
            ]}),
        )
        .await;
        loop {
            let frame = next_json(&mut sockets[0]).await;
            if frame["action"] == 2 {
                assert_eq!(frame["msgSerial"], 1, "{frame}");
                assert_eq!(frame["error"]["code"], 50003, "{frame}");
                break;
            }
            assert_ne!(frame["action"], 1, "acknowledged with Redis down: {frame}");
        }
    });
    let _ = std::fs::remove_dir_all(dir);
}
