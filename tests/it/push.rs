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

/// POSTs `body` to `path` on `node`, which must answer 201.
async fn created(node: &Server, path: &str, body: Value) {
    let (status, answer) = send(node, "POST", path, Some(body)).await;
    assert_eq!(status, 201, "{path}: {answer}");
}

/// Registers browser `id` with `recipient` and subscribes it for push to `channel`.
async fn register_and_subscribe(node: &Server, id: &str, recipient: Value, channel: &str) {
    let device = json!({"id": id, "platform": "browser", "formFactor": "desktop",
        "deviceSecret": "s", "push": {"recipient": recipient}});
    created(node, "/push/deviceRegistrations", device).await;
    let subscription = json!({"channel": channel, "deviceId": id});
    created(node, "/push/channelSubscriptions", subscription).await;
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
            created(node, "/push/channelSubscriptions", subscription).await;
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

/// A Web Push service on 127.0.0.1: records each request (path, headers, body) and answers
/// with the status currently set.
struct PushService {
    endpoint: String,
    requests: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<(String, Value, Vec<u8>)>>,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl PushService {
    async fn start() -> PushService {
        use axum::http::{HeaderMap, StatusCode, Uri};
        use std::sync::atomic::Ordering;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(201));
        let answer = status.clone();
        let app = axum::Router::new().fallback(
            move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let headers: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                    .collect();
                let _ = tx.send((uri.path().to_owned(), Value::Object(headers), body.to_vec()));
                let code = answer.load(Ordering::Acquire);
                async move { StatusCode::from_u16(code).unwrap_or(StatusCode::CREATED) }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        PushService {
            endpoint,
            requests: tokio::sync::Mutex::new(rx),
            status,
        }
    }

    async fn next(&self) -> (String, Value, Vec<u8>) {
        let mut requests = self.requests.lock().await;
        tokio::time::timeout(std::time::Duration::from_secs(10), requests.recv())
            .await
            .expect("a request to the push service within 10 s")
            .expect("the push service is running")
    }
}

/// Web Push end to end, as a browser running ably-js sees it: the VAPID public key that
/// `realtime push generate-vapid-keys` printed is served at `/push/publicVapidKey`; a device
/// registered with its subscription (endpoint `btoa`'d, keys base64url) and subscribed to a
/// push-enabled channel gets each message with `extras.push` once, VAPID-signed for the push
/// service's origin, and the subscription's own keys decrypt it; when the service answers 410
/// the registration is marked failed and gets nothing more.
#[test]
fn web_push_reaches_the_browser_encrypted_once_and_a_gone_subscription_is_failed() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_realtime"))
        .args(["push", "generate-vapid-keys"])
        .output()
        .expect("run realtime");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let after = |label: &str| {
        let mut lines = stdout.lines().skip_while(|l| *l != label);
        lines.nth(1).unwrap_or_default().to_owned()
    };
    let (public, private) = (after("Public Key:"), after("Private Key:"));
    assert!(!public.is_empty() && !private.is_empty(), "{stdout}");
    let config = push_config();
    block_on(async {
        let service = PushService::start().await;
        let node = Server::start(&[
            "--keys",
            KEY,
            "--config",
            config.to_str().unwrap(),
            "--push-vapid-public-key",
            &public,
            "--push-vapid-private-key",
            &private,
            "--push-vapid-subject",
            "mailto:ops@digis.example",
            // The test's push service is on loopback.
            "--push-web-endpoint-hosts",
            "127.0.0.1",
        ]);
        let (status, served) =
            rest(node.addr, Request::get("/push/publicVapidKey").basic(KEY)).await;
        assert_eq!((status, served.as_str()), (200, public.as_str()));

        // An endpoint that is not on a push service is refused when it is registered.
        let elsewhere = test_support::WebPushSubscription::new();
        let device = json!({"id": "sneaky", "platform": "browser", "formFactor": "desktop",
            "deviceSecret": "s", "push": {"recipient": elsewhere.recipient("https://metadata.internal/x")}});
        let (status, body) = send(&node, "POST", "/push/deviceRegistrations", Some(device)).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!(40000)),
            "{body}"
        );

        let browsers = [
            test_support::WebPushSubscription::new(),
            test_support::WebPushSubscription::new(),
        ];
        for (n, browser) in browsers.iter().enumerate() {
            let id = format!("browser{n}");
            let recipient = browser.recipient(&format!("{}/sub/{n}", service.endpoint));
            register_and_subscribe(&node, &id, recipient, "push:live").await;
        }
        let notify = |title: &str| {
            json!({"name": "live", "data": title, "extras": {"push": {
                "notification": {"title": title, "body": "Ann is live"},
                "data": {"stream": "s1"},
            }}})
        };
        // Each browser gets the notification, decrypted with its own keys.
        let (status, body) = send(
            &node,
            "POST",
            "/channels/push:live/messages",
            Some(notify("first")),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let mut seen = std::collections::HashMap::new();
        for _ in 0..2 {
            let (path, headers, body) = service.next().await;
            let n: usize = path.trim_start_matches("/sub/").parse().expect("/sub/<n>");
            let vapid = headers["authorization"].as_str().unwrap_or_default();
            assert!(vapid.contains(&format!("k={public}")), "{headers}");
            let jwt = vapid.split("t=").nth(1).unwrap().split(',').next().unwrap();
            let claims: Value = serde_json::from_slice(
                &base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    jwt.split('.').nth(1).unwrap(),
                )
                .unwrap(),
            )
            .unwrap();
            assert_eq!(claims["aud"], json!(service.endpoint), "{claims}");
            assert_eq!(headers["content-encoding"], json!("aes128gcm"));
            let plain: Value = serde_json::from_slice(&browsers[n].decrypt(&body)).unwrap();
            assert_eq!(plain["notification"]["title"], json!("first"), "{plain}");
            assert_eq!(plain["data"]["stream"], json!("s1"), "{plain}");
            *seen.entry(n).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2, "each browser once: {seen:?}");
        // Nothing for a message without extras.push: the next request is the next notification.
        send(
            &node,
            "POST",
            "/channels/push:live/messages",
            Some(json!({"name": "chat", "data": "x"})),
        )
        .await;
        service
            .status
            .store(410, std::sync::atomic::Ordering::Release);
        send(
            &node,
            "POST",
            "/channels/push:live/messages",
            Some(notify("second")),
        )
        .await;
        for _ in 0..2 {
            let (path, _, body) = service.next().await;
            let n: usize = path.trim_start_matches("/sub/").parse().unwrap();
            let plain: Value = serde_json::from_slice(&browsers[n].decrypt(&body)).unwrap();
            assert_eq!(plain["notification"]["title"], json!("second"), "{plain}");
        }
        // Both answered 410 (gone): both registrations fail, and are sent nothing more.
        test_support::eventually(
            "both registrations failed",
            std::time::Duration::from_secs(10),
            || async {
                let mut states = Vec::new();
                for n in 0..2 {
                    let (_, device) = send(
                        &node,
                        "GET",
                        &format!("/push/deviceRegistrations/browser{n}"),
                        None,
                    )
                    .await;
                    states.push(device["push"]["state"].clone());
                }
                if states.iter().all(|s| s == "FAILED") {
                    Ok(())
                } else {
                    Err(states)
                }
            },
        )
        .await;
        service
            .status
            .store(201, std::sync::atomic::Ordering::Release);
        let third = test_support::WebPushSubscription::new();
        let recipient = third.recipient(&format!("{}/sub/2", service.endpoint));
        register_and_subscribe(&node, "browser2", recipient, "push:live").await;
        send(
            &node,
            "POST",
            "/channels/push:live/messages",
            Some(notify("third")),
        )
        .await;
        let (path, _, body) = service.next().await;
        assert_eq!(path, "/sub/2", "only the live registration is sent to");
        let plain: Value = serde_json::from_slice(&third.decrypt(&body)).unwrap();
        assert_eq!(plain["notification"]["title"], json!("third"));
    });
}

/// `POST /events` with a type configured to push (the README's recipe): the event's message on
/// the callee's `user:` channel carries `extras.push`, so the callee's subscribed device is
/// notified once, with the rendered title; the caller's channel and device get no notification.
#[test]
fn an_event_type_with_push_notifies_the_callees_devices() {
    let dir = std::env::temp_dir().join(format!("push-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("realtime.toml");
    std::fs::write(
        &config,
        r#"[[history.namespace]]
name = "user"
push_enabled = true

[[events.types]]
name = "call.ringing"
required = { call_id = "id", creator_id = "id", fan_id = "id", call_type = ["voice", "video"] }
channels = ["call:{call_id}", "user:{creator_id}", "user:{fan_id}"]
push = { channels = ["user:{creator_id}"], title = "Incoming {call_type} call", body = "Tap to answer" }
"#,
    )
    .unwrap();
    let node = Server::start(&["--keys", KEY, "--config", config.to_str().unwrap()]);
    block_on(async {
        for (id, user, inbox) in [
            ("creator-phone", "ann", "inbox-ann"),
            ("fan-phone", "bob", "inbox-bob"),
        ] {
            let recipient =
                json!({"transportType": "ablyChannel", "channel": inbox, "ablyKey": KEY});
            register_and_subscribe(&node, id, recipient, &format!("user:{user}")).await;
        }
        let mut creator = attached(&node, "reader", "", "inbox-ann").await;
        let mut fan = attached(&node, "reader", "", "inbox-bob").await;
        let event = json!({"id": "ring-1", "type": "call.ringing",
            "data": {"call_id": "c1", "creator_id": "ann", "fan_id": "bob", "call_type": "video"}});
        let (status, body) = send(&node, "POST", "/events", Some(event)).await;
        assert_eq!(status, 201, "{body}");
        let notified = next_message(&mut creator).await;
        assert_eq!(notified["name"], "__ably_push__", "{notified}");
        let payload: Value = serde_json::from_str(notified["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            payload["notification"]["title"], "Incoming video call",
            "{payload}"
        );
        assert_eq!(payload["data"]["call_id"], "c1", "{payload}");
        // The fan's device gets nothing from it: the next thing its inbox hears is a marker.
        let marker = json!({"recipient": {"deviceId": "fan-phone"}, "data": {"marker": 1}});
        let (status, _) = send(&node, "POST", "/push/publish", Some(marker)).await;
        assert_eq!(status, 204);
        let next = next_message(&mut fan).await;
        let payload: Value = serde_json::from_str(next["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            payload["data"]["marker"], 1,
            "no notification for the caller: {next}"
        );
    });
}
