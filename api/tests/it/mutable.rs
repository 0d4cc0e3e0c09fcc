//! Mutable messages (updates, deletes, appends) on one node: the REST and realtime surfaces,
//! the latest view in history, rewind and resume, and every refusal.

use serde_json::{json, Value};

use crate::support::{
    assert_ack, assert_error, assert_rest_error, b64, config, field_of_each, relative_link, Client,
    Request, Response, Server, ACK, ATTACH, ATTACHED, MESSAGE, NACK,
};

const UPDATE: u64 = 1;
const DELETE: u64 = 2;
const APPEND: u64 = 5;

struct App {
    server: Server,
    /// `{}`: every operation.
    full: String,
    /// publish, subscribe and history: no operation on messages.
    plain: String,
    /// ... plus `message-update-own` and `message-delete-own`.
    own: String,
    /// subscribe, history, `message-update-any`, `message-delete-any`: a moderator.
    moderator: String,
}

async fn app() -> App {
    let mut config = config();
    config.sandbox = true;
    let server = Server::with_config(config).await;
    let caps = |ops: &[&str]| json!({ "capability": json!({ "*": ops }).to_string() });
    let body = json!({
        "namespaces": [{"id": "mutable", "mutableMessages": true}],
        "keys": [
            {},
            caps(&["publish", "subscribe", "history"]),
            caps(&["publish", "subscribe", "history", "message-update-own", "message-delete-own"]),
            caps(&["subscribe", "history", "message-update-any", "message-delete-any"]),
        ],
    });
    let created = server.http(Request::post_json("/apps", &body)).await;
    assert!(created.status < 300, "{created:?}");
    let keys = created.json()["keys"].clone();
    let key = |i: usize| keys[i]["keyStr"].as_str().unwrap().to_owned();
    App {
        full: key(0),
        plain: key(1),
        own: key(2),
        moderator: key(3),
        server,
    }
}

impl App {
    /// A REST request as `key`, with `client_id` asserted (`X-Ably-ClientId`) when given.
    async fn send(&self, request: Request<'_>, key: &str, client_id: Option<&str>) -> Response {
        let mut request = request.basic(key);
        if let Some(id) = client_id {
            request = request.header("x-ably-clientid", b64(id.as_bytes()));
        }
        self.server.http(request).await
    }

    async fn publish(&self, channel: &str, message: Value, client_id: Option<&str>) -> String {
        let path = format!("/channels/{channel}/messages");
        let published = self
            .send(Request::post_json(path, &message), &self.full, client_id)
            .await;
        assert_eq!(published.status, 201, "{published:?}");
        published.json()["serials"][0].as_str().unwrap().to_owned()
    }

    async fn patch(
        &self,
        key: &str,
        client_id: Option<&str>,
        channel: &str,
        serial: &str,
        op: Value,
    ) -> Response {
        let path = format!("/channels/{channel}/messages/{serial}");
        let body = op.to_string().into_bytes();
        let request = Request::new("PATCH", path).with_body("application/json", body);
        self.send(request, key, client_id).await
    }

    /// PATCHes with the full key and returns the version serial.
    async fn change(&self, channel: &str, serial: &str, op: Value) -> String {
        let changed = self.patch(&self.full, None, channel, serial, op).await;
        assert_eq!(changed.status, 200, "{changed:?}");
        changed.json()["versionSerial"].as_str().unwrap().to_owned()
    }

    async fn get(&self, path: String) -> Value {
        let got = self.send(Request::get(path), &self.full, None).await;
        assert_eq!(got.status, 200, "{got:?}");
        got.json()
    }

    async fn client(&self, extra: &str) -> Client {
        let query = format!("key={}&format=json{extra}", self.full);
        self.server.connect(&query).await
    }
}

/// A PATCH update changes what it gives and keeps the rest; the version carries who, why and a
/// serial and time after the original's; the latest view replaces the original in history, and
/// the versions list has both. A delete with data replaces it; an append concatenates and shows
/// as an update with the append's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_updates_deletes_and_appends_change_the_latest_view() {
    let app = app().await;
    let channel = "mutable:rest";
    let serial = app
        .publish(
            channel,
            json!({"name": "original", "data": "Hello", "extras": {"headers": {"k": "v"}}}),
            Some("alice"),
        )
        .await;
    let original = app
        .get(format!("/channels/{channel}/messages/{serial}"))
        .await;

    let version = app
        .change(
            channel,
            &serial,
            json!({"action": UPDATE, "data": "Hello there", "clientId": "ignored",
                   "version": {"clientId": "editor", "description": "typo", "metadata": {"reason": "t"}}}),
        )
        .await;
    assert!(version > serial, "{version} after {serial}");
    let latest = app
        .get(format!("/channels/{channel}/messages/{serial}"))
        .await;
    assert_eq!(latest["action"], UPDATE);
    assert_eq!(latest["serial"], serial.as_str());
    assert_eq!(latest["data"], "Hello there");
    assert_eq!(latest["name"], "original", "an omitted name is kept");
    assert_eq!(latest["extras"], json!({"headers": {"k": "v"}}));
    assert_eq!(latest["clientId"], "alice", "the original publisher's");
    assert_eq!(latest["timestamp"], original["timestamp"]);
    assert_eq!(latest["version"]["serial"], version.as_str());
    assert_eq!(latest["version"]["clientId"], "editor");
    assert_eq!(latest["version"]["description"], "typo");
    assert_eq!(latest["version"]["metadata"], json!({"reason": "t"}));
    assert!(
        latest["version"]["timestamp"].as_u64() > original["timestamp"].as_u64(),
        "{latest}"
    );

    let history = app.get(format!("/channels/{channel}/messages")).await;
    let history = history.as_array().unwrap();
    assert_eq!(
        history.len(),
        1,
        "the operation is not a message of its own: {history:?}"
    );
    assert_eq!(history[0]["data"], "Hello there");

    let deleted = app
        .change(
            channel,
            &serial,
            json!({"action": DELETE, "data": "{}", "encoding": "json"}),
        )
        .await;
    assert!(deleted > version);
    let latest = app
        .get(format!("/channels/{channel}/messages/{serial}"))
        .await;
    assert_eq!(latest["action"], DELETE);
    assert_eq!(
        (&latest["data"], &latest["encoding"]),
        (&json!("{}"), &json!("json")),
        "the encoding goes with the data"
    );
    assert_eq!(
        latest["version"]["clientId"],
        Value::Null,
        "anonymous key, no clientId"
    );

    let versions = app
        .get(format!("/channels/{channel}/messages/{serial}/versions"))
        .await;
    let actions = field_of_each(&versions, "action");
    assert_eq!(
        actions,
        [json!(0), json!(UPDATE), json!(DELETE)],
        "oldest first"
    );

    // An append to a deleted message has nothing to join.
    let refused = app
        .patch(
            &app.full,
            None,
            channel,
            &serial,
            json!({"action": APPEND, "data": "!"}),
        )
        .await;
    assert_rest_error(&refused, 40003, 400);

    let streamed = app
        .publish(channel, json!({"name": "answer", "data": "Hello"}), None)
        .await;
    let appended = app
        .change(
            channel,
            &streamed,
            json!({"action": APPEND, "data": " World",
                                           "version": {"description": "more"}}),
        )
        .await;
    let latest = app
        .get(format!("/channels/{channel}/messages/{streamed}"))
        .await;
    assert_eq!(latest["data"], "Hello World");
    assert_eq!(
        latest["action"], UPDATE,
        "a rolled-up append shows as an update"
    );
    assert_eq!(latest["version"]["serial"], appended.as_str());
    assert_eq!(latest["version"]["description"], "more");
    let versions = app
        .get(format!(
            "/channels/{channel}/messages/{streamed}/versions?limit=1"
        ))
        .await;
    assert_eq!(
        versions.as_array().unwrap().len(),
        1,
        "appends are not versions"
    );

    let missing = app
        .patch(
            &app.full,
            None,
            channel,
            "000000000001-0000000009",
            json!({"data": "x"}),
        )
        .await;
    assert_rest_error(&missing, 40400, 404);
    let unknown = app
        .send(
            Request::get(format!("/channels/{channel}/messages/nope/versions")),
            &app.full,
            None,
        )
        .await;
    assert_rest_error(&unknown, 40400, 404);
}

/// The versions read pages oldest first with a `next` link only while more remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_page_without_a_dangling_next() {
    let app = app().await;
    let channel = "mutable:pages";
    let serial = app.publish(channel, json!({"data": "v0"}), None).await;
    for n in 1..=3 {
        app.change(channel, &serial, json!({"data": format!("v{n}")}))
            .await;
    }
    let path = format!("/channels/{channel}/messages/{serial}/versions?limit=2");
    let first = app.send(Request::get(path), &app.full, None).await;
    assert_eq!(
        field_of_each(&first.json(), "data"),
        [json!("v0"), json!("v1")]
    );
    let next = relative_link(&first, "next").expect("a next link");
    let query = next
        .strip_prefix("./versions")
        .expect("relative to versions");
    let path = format!("/channels/{channel}/messages/{serial}/versions{query}");
    let last = app.send(Request::get(path), &app.full, None).await;
    assert_eq!(
        field_of_each(&last.json(), "data"),
        [json!("v2"), json!("v3")]
    );
    assert!(
        !last.header("link").unwrap().contains("rel=\"next\""),
        "the last page has no next"
    );
}

/// Each capability refusal: none held (40160); `-own` on another client's message (40160);
/// `-own` with no clientId (40166); `-own` on one's own message passes; delete-any does not
/// allow an update; history is needed to read versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_need_their_capability() {
    let app = app().await;
    let channel = "mutable:caps";
    let alices = app
        .publish(channel, json!({"data": "mine"}), Some("alice"))
        .await;
    let edit = json!({"data": "edited"});

    let none = app
        .patch(&app.plain, Some("alice"), channel, &alices, edit.clone())
        .await;
    assert_rest_error(&none, 40160, 401);
    let others = app
        .patch(&app.own, Some("bob"), channel, &alices, edit.clone())
        .await;
    assert_rest_error(&others, 40160, 401);
    let anonymous = app
        .patch(&app.own, None, channel, &alices, edit.clone())
        .await;
    assert_rest_error(&anonymous, 40166, 401);
    let delete_by_bob = json!({"action": DELETE});
    let others = app
        .patch(&app.own, Some("bob"), channel, &alices, delete_by_bob)
        .await;
    assert_rest_error(&others, 40160, 401);
    let latest = app
        .get(format!("/channels/{channel}/messages/{alices}"))
        .await;
    assert_eq!(latest["data"], "mine", "nothing refused was applied");

    let own = app
        .patch(&app.own, Some("alice"), channel, &alices, edit.clone())
        .await;
    assert_eq!(own.status, 200, "{own:?}");
    let by_moderator = app
        .patch(
            &app.moderator,
            None,
            channel,
            &alices,
            json!({"action": DELETE}),
        )
        .await;
    assert_eq!(by_moderator.status, 200, "{by_moderator:?}");
    let versions = app
        .get(format!("/channels/{channel}/messages/{alices}/versions"))
        .await;
    let editors: Vec<&Value> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["version"]["clientId"])
        .collect();
    assert_eq!(
        editors,
        [&Value::Null, &json!("alice"), &Value::Null],
        "a version's clientId is its editor's identity"
    );

    let no_history = app
        .send(
            Request::get(format!("/channels/{channel}/messages/{alices}/versions")),
            &app.own,
            Some("alice"),
        )
        .await;
    assert_eq!(no_history.status, 200, "own has history: {no_history:?}");
    // Off the mutable namespace, the rule refuses first.
    let plain = app.publish("plain", json!({"data": "x"}), None).await;
    let off = app.patch(&app.full, None, "plain", &plain, edit).await;
    assert_rest_error(&off, 93002, 400);
}

/// Over realtime: the ACK carries the version serial; a subscriber gets the merged update with
/// it, then an append as just its data (it saw the message live), while a client attached after
/// the message, and one attached with `appendMode=full`, get the whole message; rewind shows the
/// rolled-up view, and resume replays the operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_operations_reach_subscribers_as_their_latest_views() {
    let app = app().await;
    let channel = "mutable:live";
    let mut watcher = app.client("").await;
    let attached = watcher.attach(channel).await;
    let mut editor = app.client("").await;
    let serial = editor
        .publish_acked(channel, 0, json!([{"name": "greeting", "data": "Hello"}]))
        .await
        .remove(0);
    let created = watcher.expect(MESSAGE).await;
    assert_eq!(created["messages"][0]["serial"], serial.as_str());

    editor
        .publish(
            channel,
            1,
            json!([{"action": UPDATE, "serial": serial, "data": "Hi",
                                     "version": {"description": "shorter"}}]),
        )
        .await;
    let versions = assert_ack(&editor.expect(ACK).await, 1, 1);
    let updated = watcher.expect(MESSAGE).await;
    let message = &updated["messages"][0];
    assert_eq!(message["action"], UPDATE);
    assert_eq!(message["serial"], serial.as_str());
    assert_eq!(
        message["name"], "greeting",
        "the merged message, not the raw operation"
    );
    assert_eq!(message["version"]["serial"], versions[0].as_str());
    assert_eq!(message["version"]["description"], "shorter");
    assert_eq!(
        updated["channelSerial"],
        versions[0].as_str(),
        "operations move the position"
    );

    let mut late = app.client("").await;
    late.attach(channel).await;
    let mut full = app.client("").await;
    full.send(json!({"action": ATTACH, "channel": channel, "params": {"appendMode": "full"}}))
        .await;
    let full_attached = full.expect(ATTACHED).await;
    assert_eq!(
        full_attached["params"]["appendMode"], "full",
        "{full_attached}"
    );

    editor
        .publish(
            channel,
            2,
            json!([{"action": APPEND, "serial": serial, "data": " there"}]),
        )
        .await;
    let appended = assert_ack(&editor.expect(ACK).await, 2, 1);
    let increment = watcher.expect(MESSAGE).await;
    assert_eq!(increment["messages"][0]["action"], APPEND);
    assert_eq!(increment["messages"][0]["data"], " there");
    assert_eq!(increment["messages"][0]["name"], "greeting");
    for client in [&mut late, &mut full] {
        let whole = client.expect(MESSAGE).await;
        let message = &whole["messages"][0];
        assert_eq!(
            (&message["action"], &message["data"]),
            (&json!(UPDATE), &json!("Hi there")),
            "{whole}"
        );
        assert_eq!(message["version"]["serial"], appended[0].as_str());
        assert_eq!(whole["channelSerial"], appended[0].as_str());
    }

    // Mixed with a create, or without a serial: refused, nothing delivered.
    editor
        .publish(
            channel,
            3,
            json!([{"data": "new"}, {"action": UPDATE, "serial": serial}]),
        )
        .await;
    assert_error(&editor.expect(NACK).await, 40003, 400);
    editor
        .publish(channel, 4, json!([{"action": DELETE}]))
        .await;
    assert_error(&editor.expect(NACK).await, 40003, 400);

    let mut rewound = app.client("").await;
    rewound
        .send(json!({"action": ATTACH, "channel": channel, "params": {"rewind": "1"}}))
        .await;
    rewound.expect(ATTACHED).await;
    let replay = rewound.expect(MESSAGE).await;
    let message = &replay["messages"][0];
    assert_eq!(
        (&message["action"], &message["data"]),
        (&json!(UPDATE), &json!("Hi there"))
    );
    assert_eq!(
        replay["channelSerial"],
        appended[0].as_str(),
        "rewind leaves it at the position"
    );

    // Resuming from the create replays both operations as they went out.
    let mut resumed = app.client("").await;
    resumed
        .send(json!({"action": ATTACH, "channel": channel, "channelSerial": serial}))
        .await;
    let attached_again = resumed.expect(ATTACHED).await;
    assert_ne!(
        attached_again["flags"].as_u64().unwrap() & 4,
        0,
        "RESUMED: {attached_again}"
    );
    let replay = resumed.expect(MESSAGE).await;
    let actions = field_of_each(&replay["messages"], "action");
    assert_eq!(actions, [json!(UPDATE), json!(APPEND)], "{replay}");
    assert_eq!(attached["action"], ATTACHED);
}

/// A namespace with server-side batching: twenty publishes made together reach a subscriber in
/// a few frames, all of them, in order, each frame's `channelSerial` its last message's; the
/// publisher's ACKs are not held back. Ephemeral messages batch too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_namespaces_deliver_many_messages_per_frame() {
    let mut config = config();
    config.hub.namespace_rules.push((
        "live".into(),
        gateway::config::ChannelRules {
            retention: config.hub.retention,
            batching: Some(gateway::config::Batching {
                interval: std::time::Duration::from_millis(300),
                conflate: None,
            }),
            ..Default::default()
        },
    ));
    let server = Server::with_config(config).await;
    let query = format!("key={}&format=json", crate::support::FULL_KEY);
    let mut viewer = server.attached(&query, "live:room").await;
    let mut publisher = server.connect(&query).await;
    for n in 0..20u64 {
        let extras = if n % 2 == 0 {
            json!({"ephemeral": true})
        } else {
            json!({})
        };
        publisher
            .publish(
                "live:room",
                n,
                json!([{"data": n.to_string(), "extras": extras}]),
            )
            .await;
    }
    let mut serials = Vec::new();
    for n in 0..20u64 {
        let ack = publisher.expect(ACK).await;
        assert_eq!(ack["msgSerial"], n);
        serials.push(ack["res"][0]["serials"][0].clone());
    }
    let mut data = Vec::new();
    let mut frames = 0;
    while data.len() < 20 {
        let frame = viewer.expect(MESSAGE).await;
        frames += 1;
        let messages = frame["messages"].as_array().unwrap();
        data.extend(
            messages
                .iter()
                .map(|m| m["data"].as_str().unwrap().to_owned()),
        );
        let last_stored = serials[..data.len()].iter().rev().find(|s| !s.is_null());
        assert_eq!(frame["channelSerial"], *last_stored.unwrap(), "{frame}");
    }
    let expected: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    assert_eq!(data, expected, "all, in order");
    assert!(frames <= 4, "batched: {frames} frames for 20 messages");
}

/// A client with a clientId (a token's) edits as itself: its versions carry that clientId, it may
/// not claim another one (40012), and `message-update-own` lets it edit only its own messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identified_clients_edit_as_themselves() {
    use crate::support::{full_token, token_query};
    let mut config = config();
    config.hub.namespace_rules.push((
        "edit".into(),
        gateway::config::ChannelRules {
            retention: config.hub.retention,
            mutable_messages: true,
            ..Default::default()
        },
    ));
    let server = Server::with_config(config).await;
    let own = r#"{"edit:*":["publish","subscribe","message-update-own"]}"#;
    let alice = full_token(&server, None, Some(own), Some("alice")).await;
    let mut alice = server
        .attached(&token_query(&alice, "format=json"), "edit:x")
        .await;
    let bob = full_token(&server, None, None, Some("bob")).await;
    let mut bob = server.connect(&token_query(&bob, "format=json")).await;
    let bobs = bob
        .publish_acked("edit:x", 0, json!([{"data": "bob's"}]))
        .await
        .remove(0);
    alice.expect(MESSAGE).await;
    alice
        .publish("edit:x", 0, json!([{"data": "alice's"}]))
        .await;
    let mut frames = [alice.frame().await, alice.frame().await];
    frames.sort_by_key(|f| f["action"].as_u64());
    let alices = assert_ack(&frames[0], 0, 1).remove(0);
    assert_eq!(frames[1]["messages"][0]["clientId"], "alice");

    let op = |msg_serial: u64, serial: &str, version: Value| {
        json!([{"action": UPDATE, "serial": serial, "data": format!("edit {msg_serial}"),
                "version": version}])
    };
    alice
        .publish("edit:x", 1, op(1, &alices, json!({"clientId": "mallory"})))
        .await;
    assert_error(&alice.expect(NACK).await, 40012, 400);
    alice.publish("edit:x", 2, op(2, &bobs, json!({}))).await;
    assert_error(&alice.expect(NACK).await, 40160, 401);
    alice.publish("edit:x", 3, op(3, &alices, json!({}))).await;
    let mut frames = [alice.frame().await, alice.frame().await];
    frames.sort_by_key(|f| f["action"].as_u64());
    assert_ack(&frames[0], 3, 1);
    let edited = &frames[1]["messages"][0];
    assert_eq!(
        (&edited["data"], &edited["version"]["clientId"]),
        (&json!("edit 3"), &json!("alice"))
    );
    assert_eq!(frames[1]["action"], MESSAGE);
}
