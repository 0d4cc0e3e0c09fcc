//! Push state across nodes on one Redis: a registration and a subscription made on one node
//! are read, listed and used on another, a node started afterwards sees them, and a message with
//! `extras.push` published on one node notifies the device's `ablyChannel` inbox, where a
//! subscriber on the other node hears it once.

use std::path::PathBuf;

use crate::support::{
    attached, block_on, next_json, nodes, publish, rest, RedisServer, Request, Server, Socket, KEY,
};
use serde_json::{json, Value};

/// The nodes' config file: the `push` namespace takes push subscriptions.
fn push_config() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("push-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("realtime.toml");
    std::fs::write(
        &file,
        "[[history.namespace]]\nname = \"push\"\npush_enabled = true\n",
    )
    .unwrap();
    file
}

async fn send(
    node: &Server,
    method: &'static str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = Request::new(method, path.to_owned()).basic(KEY);
    if let Some(body) = body {
        request = request.with_body("application/json", body.to_string().into_bytes());
    }
    let (status, text) = rest(node.addr, request).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn push_state_is_shared_by_every_node_and_notifications_reach_the_inbox_once() {
    let redis = RedisServer::start();
    let config = push_config();
    let config = config.to_str().unwrap();
    let nodes = nodes(&redis, 2, &["--config", config]);
    block_on(async {
        let device = json!({
            "id": "phone1",
            "clientId": "ann",
            "platform": "android",
            "formFactor": "phone",
            "deviceSecret": "s1",
            "push": {"recipient": {"transportType": "ablyChannel", "channel": "inbox", "ablyKey": KEY}},
        });
        let (status, registered) =
            send(&nodes[0], "POST", "/push/deviceRegistrations", Some(device)).await;
        assert_eq!(status, 201, "{registered}");
        let token = registered["deviceIdentityToken"]["token"]
            .as_str()
            .unwrap()
            .to_owned();

        // Node B reads it, and takes the device's own token for it.
        let (status, got) = send(&nodes[1], "GET", "/push/deviceRegistrations/phone1", None).await;
        assert_eq!((status, &got["clientId"]), (200, &json!("ann")), "{got}");
        let own =
            Request::get("/push/deviceRegistrations/phone1").header("x-ably-devicetoken", token);
        assert_eq!(rest(nodes[1].addr, own).await.0, 200);

        // Subscribed by device on B and by clientId on A: one notification all the same.
        for (node, subscription) in [
            (
                &nodes[1],
                json!({"channel": "push:live", "deviceId": "phone1"}),
            ),
            (
                &nodes[0],
                json!({"channel": "push:live", "clientId": "ann"}),
            ),
        ] {
            let (status, body) = send(
                node,
                "POST",
                "/push/channelSubscriptions",
                Some(subscription),
            )
            .await;
            assert_eq!(status, 201, "{body}");
        }
        let (_, listed) = send(
            &nodes[1],
            "GET",
            "/push/channelSubscriptions?channel=push:live",
            None,
        )
        .await;
        assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

        let mut inbox = attached(&nodes[0], "reader", "", "inbox").await;
        let body =
            json!({"name": "live", "extras": {"push": {"notification": {"title": "on air"}}}});
        let (status, text) = rest(nodes[1].addr, publish("push:live", &body.to_string())).await;
        assert_eq!(status, 201, "{text}");
        let first = next_message(&mut inbox).await;
        assert_eq!(first["name"], "__ably_push__", "{first}");
        let payload: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
        assert_eq!(payload["notification"]["title"], "on air");
        // Anything queued behind it comes before a later marker notification.
        let marker = json!({"recipient": {"deviceId": "phone1"}, "data": {"marker": 1}});
        let (status, _) = send(&nodes[1], "POST", "/push/publish", Some(marker)).await;
        assert_eq!(status, 204);
        let next = next_message(&mut inbox).await;
        let payload: Value = serde_json::from_str(next["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            payload["data"]["marker"], 1,
            "one notification per device: {next}"
        );

        // A node started now sees the registration and the subscriptions.
        let late = Server::start(&["--keys", KEY, "--redis", &redis.url(), "--config", config]);
        let (status, got) =
            send(&late, "GET", "/push/deviceRegistrations?clientId=ann", None).await;
        assert_eq!(status, 200);
        assert_eq!(got[0]["id"], "phone1", "{got}");
        let (_, channels) = send(&late, "GET", "/push/channels", None).await;
        assert_eq!(channels, json!(["push:live"]));

        // Removed on the late node: gone for the others, subscriptions with it.
        let (status, _) = send(&late, "DELETE", "/push/deviceRegistrations/phone1", None).await;
        assert_eq!(status, 204);
        let (status, _) = send(&nodes[0], "GET", "/push/deviceRegistrations/phone1", None).await;
        assert_eq!(status, 404);
        let (_, listed) = send(
            &nodes[0],
            "GET",
            "/push/channelSubscriptions?channel=push:live",
            None,
        )
        .await;
        assert_eq!(listed, json!([{"channel": "push:live", "clientId": "ann"}]));
    });
}

/// The next message on `socket` (skipping other actions).
async fn next_message(socket: &mut Socket) -> Value {
    loop {
        let frame = next_json(socket).await;
        if frame["action"] == 15 {
            assert_eq!(
                frame["messages"].as_array().map(Vec::len),
                Some(1),
                "{frame}"
            );
            return frame["messages"][0].clone();
        }
    }
}
