//! `--sandbox` apps and the batch endpoints.

use gateway::auth::APP_SEPARATOR;
use serde_json::{json, Value};

use crate::support::{config, Request, Server, FULL_KEY};

async fn sandbox() -> Server {
    let mut config = config();
    config.sandbox = true;
    Server::with_config(config).await
}

async fn create_app(server: &Server, body: Value) -> Value {
    let response = server.http(Request::post_json("/apps", &body)).await;
    assert!(response.status < 300, "{response:?}");
    response.json()
}

#[tokio::test]
async fn apps_are_refused_without_the_flag() {
    let server = Server::start().await;
    let response = server.http(Request::post_json("/apps", &json!({}))).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.header("x-ably-errorcode"), Some("40400"));
}

#[tokio::test]
async fn an_app_gets_its_keys_in_order_and_its_presence_fixtures() {
    let server = sandbox().await;
    let app = create_app(
        &server,
        json!({
            "keys": [{}, {"capability": "{\"cansubscribe:*\":[\"subscribe\"]}"}],
            "namespaces": [{"id": "persisted", "persisted": true}],
            "channels": [{"name": "persisted:presence_fixtures", "presence": [
                {"clientId": "client_bool", "data": "true"},
                {"clientId": "client_decoded", "data": "{\"x\":1}", "encoding": "json"},
            ]}],
        }),
    )
    .await;
    let keys = app["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1]["capability"], r#"{"cansubscribe:*":["subscribe"]}"#);
    assert_eq!(app["namespaces"].as_array().unwrap().len(), 1);
    let full = keys[0]["keyStr"].as_str().unwrap().to_owned();

    let members = server
        .http(Request::get("/channels/persisted:presence_fixtures/presence").basic(&full))
        .await
        .json();
    let mut ids: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["clientId"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["client_bool", "client_decoded"]);
    let decoded = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["clientId"] == "client_decoded")
        .unwrap();
    assert_eq!(decoded["encoding"], "json", "{decoded}");

    // The limited key is limited.
    let limited = keys[1]["keyStr"].as_str().unwrap();
    server
        .assert_publish_refused(limited, "cansubscribe:x")
        .await;
}

#[tokio::test]
async fn an_apps_namespaces_set_its_channel_rules_until_it_is_deleted() {
    let server = sandbox().await;
    // As ably-common's test-app-setup.json sends them.
    let namespaces = json!([
        {"id": "persisted", "persisted": true},
        {"id": "pushenabled", "pushEnabled": true},
        {"id": "mutable", "mutableMessages": true},
    ]);
    let one = create_app(&server, json!({"namespaces": namespaces})).await;
    let two = create_app(&server, json!({})).await;
    let app_one = one["appId"].as_str().unwrap();
    let app_two = two["appId"].as_str().unwrap();
    let rules = |app: &str, channel: &str| {
        let key = format!("{app}{APP_SEPARATOR}{channel}");
        server.gateway.hub().rules_for(&key)
    };

    let mutable = rules(app_one, "mutable:x");
    assert!(mutable.mutable_messages);
    assert_eq!(
        mutable.retention.max_messages, 10_000,
        "mutable is persisted"
    );
    assert!(!rules(app_one, "x").mutable_messages);
    assert!(!rules(app_two, "mutable:x").mutable_messages, "another app");
    let persisted = rules(app_one, "persisted:x");
    assert!(!persisted.mutable_messages);
    assert_eq!(persisted.retention.max_age.as_secs(), 24 * 60 * 60);
    let default = gateway::HubConfig::default().retention;
    assert_eq!(
        rules(app_one, "pushenabled:x").retention.max_messages,
        default.max_messages
    );

    let key = one["keys"][0]["keyStr"].as_str().unwrap();
    let deleted = server
        .http(Request::new("DELETE", format!("/apps/{app_one}")).basic(key))
        .await;
    assert!(deleted.status < 300, "{deleted:?}");
    assert!(
        !rules(app_one, "mutable:x").mutable_messages,
        "gone with the app"
    );
}

#[tokio::test]
async fn apps_do_not_share_channels_and_delete_revokes_their_keys() {
    let server = sandbox().await;
    let one = create_app(&server, json!({"keys": [{}]})).await;
    let two = create_app(&server, json!({"keys": [{}]})).await;
    let key_one = one["keys"][0]["keyStr"].as_str().unwrap().to_owned();
    let key_two = two["keys"][0]["keyStr"].as_str().unwrap().to_owned();

    let published = server
        .post_json_as(
            &key_one,
            "/channels/shared/messages",
            &json!({"data": "for app one"}),
        )
        .await;
    assert_eq!(published.status, 201);
    let history = |key: String| {
        let server = &server;
        async move {
            server
                .http(Request::get("/channels/shared/messages").basic(&key))
                .await
                .json()
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(history(key_one.clone()).await, 1);
    assert_eq!(history(key_two.clone()).await, 0, "app two sees nothing");
    let configured = history(FULL_KEY.to_owned()).await;
    assert_eq!(configured, 0, "configured keys see nothing");

    let app_one = one["appId"].as_str().unwrap();
    let path = format!("/apps/{app_one}");
    let wrong = server
        .http(Request::new("DELETE", &path).basic(&key_two))
        .await;
    assert_eq!(wrong.status, 401, "another app's key cannot delete it");
    let deleted = server
        .http(Request::new("DELETE", &path).basic(&key_one))
        .await;
    assert!(deleted.status < 300, "{deleted:?}");
    let after = server
        .http(Request::get("/channels/shared/messages").basic(&key_one))
        .await;
    assert_eq!(after.status, 401, "the deleted app's key is gone");
}

#[tokio::test]
async fn batch_publish_and_batch_presence() {
    let server = Server::start().await;
    let specs = json!([
        {"channels": ["b1", "b2"], "messages": {"data": "x"}},
        {"channels": ["[bad"], "messages": [{"data": "y"}]},
    ]);
    let response = server.post_json("/messages", &specs).await;
    assert_eq!(response.status, 201, "{response:?}");
    let batches = response.json();
    assert_eq!(batches[0]["successCount"], 2, "{batches}");
    assert_eq!(batches[0]["results"][1]["channel"], "b2");
    assert!(batches[0]["results"][0]["serials"][0].is_string());
    assert_eq!(batches[1]["failureCount"], 1);
    assert_eq!(batches[1]["results"][0]["error"]["code"], 40010);

    // One spec, not in an array: its results alone.
    let single = server
        .post_json(
            "/messages",
            &json!({"channels": "b1", "messages": {"data": "z"}}),
        )
        .await
        .json();
    assert_eq!(single[0]["channel"], "b1", "{single}");

    let history = server.get("/channels/b1/messages").await.json();
    assert_eq!(
        history.as_array().unwrap().len(),
        2,
        "both batch publishes reached b1"
    );

    let presence = server.get("/presence?channels=b1,b2").await.json();
    assert_eq!(presence["successCount"], 2, "{presence}");
    assert_eq!(presence["results"][1]["channel"], "b2");
    assert!(presence["results"][0]["presence"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// A publish creates messages: an update, delete or append is refused with 93002 where no
/// rule allows them (REST and realtime), as not a publish (40003) where an app's `mutable`
/// namespace does (they go by PATCH, or alone over realtime), and the server's own actions
/// (meta, summary) are refused outright. Nothing refused is delivered.
#[tokio::test]
async fn message_operations_are_refused_by_the_channel_rule() {
    use crate::support::{assert_error, assert_rest_error, MESSAGE, NACK};
    let server = sandbox().await;
    let app = create_app(
        &server,
        json!({"namespaces": [{"id": "mutable", "mutableMessages": true}]}),
    )
    .await;
    let key = app["keys"][0]["keyStr"].as_str().unwrap().to_owned();
    let publish = |channel: &str, message: Value| {
        let path = format!("/channels/{channel}/messages");
        server.http(Request::post_json(path, &message).basic(&key))
    };
    let update = json!({"action": 1, "serial": "x", "data": "edited"});
    assert_rest_error(&publish("plain", update.clone()).await, 93002, 400);
    assert_rest_error(&publish("mutable:chat", update.clone()).await, 40003, 400);
    assert_rest_error(&publish("plain", json!({"action": 4})).await, 40003, 400);
    let created = publish("plain", json!({"action": 0, "data": "new"})).await;
    assert_eq!(created.status, 201, "{created:?}");

    let query = format!("key={key}&format=json");
    let mut client = server.attached(&query, "plain").await;
    client
        .send(json!({"action": 15, "channel": "plain", "msgSerial": 0,
                     "messages": [{"action": 2, "serial": "x"}]}))
        .await;
    assert_error(&client.expect(NACK).await, 93002, 400);
    client
        .send(json!({"action": 15, "channel": "plain", "msgSerial": 1,
                     "messages": [{"data": "after"}]}))
        .await;
    let delivered = client.expect(MESSAGE).await;
    assert_eq!(
        delivered["messages"][0]["data"], "after",
        "only the create: {delivered}"
    );
}
