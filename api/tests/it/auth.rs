//! Tokens on the realtime side: capability intersection, clientId binding, in-band renewal and
//! expiry.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_capability_is_the_intersection_of_request_and_key() {
    let server = Server::start().await;

    // The limited key allows publish+subscribe on allowed:*; asking for subscribe everywhere
    // leaves subscribe on allowed:*.
    let details = request_token(
        &server,
        LIMITED_KEY_NAME,
        LIMITED_SECRET,
        None,
        Some(r#"{"*":["subscribe"]}"#),
        None,
    )
    .await;
    let granted: Value = serde_json::from_str(details["capability"].as_str().unwrap()).unwrap();
    assert_eq!(granted, json!({"allowed:*": ["subscribe"]}), "{details}");
    let mut client = server
        .connect(&token_query(&details, "format=msgpack"))
        .await;
    let attached = client.attach("allowed:news").await;
    assert_eq!(
        attached["flags"],
        MODE_SUBSCRIBE | MODE_PRESENCE_SUBSCRIBE,
        "{attached}"
    );
    client
        .send(json!({"action": ATTACH, "channel": "other"}))
        .await;
    let error = client.expect(ERROR).await;
    assert_eq!(error["channel"], "other", "{error}");
    assert_error(&error, 40160, 401);
    client
        .publish("allowed:news", 0, json!([{"name": "no-publish-right"}]))
        .await;
    let nack = client.expect(NACK).await;
    assert_eq!(nack["msgSerial"], 0, "{nack}");
    assert_error(&nack, 40160, 401);

    // The full key narrowed to chat:* by the request.
    let details = full_token(
        &server,
        None,
        Some(r#"{"chat:*":["publish","subscribe"]}"#),
        None,
    )
    .await;
    let mut client = server.connect(&token_query(&details, "format=json")).await;
    let attached = client.attach("chat:lobby").await;
    assert_eq!(
        attached["flags"],
        MODE_PUBLISH | MODE_SUBSCRIBE | MODE_PRESENCE_SUBSCRIBE,
        "{attached}"
    );
    client
        .send(json!({"action": ATTACH, "channel": "news"}))
        .await;
    assert_error(&client.expect(ERROR).await, 40160, 401);
    client.publish("news", 0, json!([{"name": "x"}])).await;
    assert_error(&client.expect(NACK).await, 40160, 401);
    client.publish_named("chat:other", 1, "ok").await;

    // Nothing in common with the key: no token at all.
    let body = token_request(
        LIMITED_KEY_NAME,
        LIMITED_SECRET,
        None,
        Some(r#"{"secret:*":["publish"]}"#),
        None,
        protocol::now_ms(),
        &fresh_nonce(),
    );
    let path = format!("/keys/{LIMITED_KEY_NAME}/requestToken");
    let response = server.http(Request::post_json(&path, &body)).await;
    assert_eq!(response.status, 401, "{:?}", response);
    assert_error_info(&response.json()["error"], 40160, 401, &response.json());
}

/// A token bound to alice may publish as alice (explicitly or implicitly), never as bob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_client_id_binds_what_it_publishes() {
    let server = Server::start().await;
    let mut subscriber = server.attached(&full_key("json"), "ids").await;

    let details = full_token(&server, None, None, Some("alice")).await;
    assert_eq!(details["clientId"], "alice", "{details}");
    let mut alice = server
        .connect(&token_query(&details, "format=msgpack"))
        .await;
    assert_eq!(
        alice.connected["connectionDetails"]["clientId"], "alice",
        "{}",
        alice.connected
    );

    alice
        .publish("ids", 0, json!([{"name": "impostor", "clientId": "bob"}]))
        .await;
    let nack = alice.expect(NACK).await;
    assert_eq!(nack["msgSerial"], 0, "{nack}");
    assert_eq!(nack["count"], 1, "{nack}");
    assert_error(&nack, 40012, 400);

    alice.publish_named("ids", 1, "implicit").await;
    alice
        .publish_acked("ids", 2, json!([{"name": "explicit", "clientId": "alice"}]))
        .await;
    for name in ["implicit", "explicit"] {
        let delivery = subscriber.expect(MESSAGE).await;
        assert_eq!(
            delivery["messages"][0]["name"], name,
            "the NACKed message must not be delivered: {delivery}"
        );
        assert_eq!(delivery["messages"][0]["clientId"], "alice", "{delivery}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_for_alice_connecting_as_bob_is_error_40102() {
    let server = Server::start().await;
    let details = full_token(&server, None, None, Some("alice")).await;

    let mut bob = server
        .open(&token_query(&details, "format=json&clientId=bob"))
        .await;
    let error = bob.expect(ERROR).await;
    assert!(error.get("channel").is_none(), "{error}");
    assert_error(&error, 40102, 401);
    bob.expect_closed().await;

    // The same token with its own clientId is fine, under either parameter name (trap 8).
    let alice = server
        .connect(&token_query(&details, "format=json&clientId=alice"))
        .await;
    assert_eq!(alice.connected["connectionDetails"]["clientId"], "alice");
    let python_style =
        token_query(&details, "clientId=alice").replacen("access_token=", "accessToken=", 1);
    let alice = server.connect(&python_style).await;
    assert_eq!(alice.connected["connectionDetails"]["clientId"], "alice");
}

/// AUTH arrives before expiry; answering it keeps the connection (same id and key) and moves the
/// expiry to the new token's: the old expiry passes without a DISCONNECTED, and the next AUTH
/// comes for the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_renewed_in_band_keeps_the_connection() {
    let server = renewing_server(Duration::from_millis(1000)).await;
    let first = full_token(&server, Some(2000), None, Some("alice")).await;
    let first_expires = first["expires"].as_u64().unwrap();
    let mut client = server
        .connect(&token_query(&first, "format=json&clientId=alice"))
        .await;
    let key = client.connected["connectionDetails"]["connectionKey"].clone();

    let auth = client.expect(AUTH).await;
    assert!(
        protocol::now_ms() < first_expires,
        "AUTH must come before the token expires: {auth}"
    );
    let second = full_token(&server, Some(3000), None, Some("alice")).await;
    client
        .send(json!({"action": AUTH, "auth": {"accessToken": second["token"]}}))
        .await;
    let connected = client.expect(CONNECTED).await;
    assert_eq!(connected["connectionId"], client.id(), "{connected}");
    assert_eq!(
        connected["connectionDetails"]["connectionKey"], key,
        "the key must stay stable (trap 11): {connected}"
    );
    assert_eq!(connected["connectionDetails"]["clientId"], "alice");
    client.publish_named("renewed", 0, "after-renewal").await;

    let auth = client.expect(AUTH).await;
    assert!(
        protocol::now_ms() > first_expires,
        "the second AUTH came before the first token's expiry; the test proves nothing: {auth}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrenewed_token_is_disconnected_40142_at_expiry() {
    let server = renewing_server(Duration::from_millis(1000)).await;
    let details = full_token(&server, Some(1500), None, None).await;
    let expires = details["expires"].as_u64().unwrap();
    let mut client = server
        .connect(&token_query(&details, "format=msgpack"))
        .await;

    client.expect(AUTH).await;
    let disconnected = client.expect(DISCONNECTED).await;
    assert!(
        protocol::now_ms() + 10 >= expires,
        "disconnected before the token expired: {disconnected}"
    );
    assert_error(&disconnected, 40142, 401);
    client.expect_closed().await;
}

/// A server that asks for renewal `lead` before expiry (Ably's 30 s is too long for a test).
async fn renewing_server(lead: Duration) -> Server {
    let mut config = crate::support::config();
    config.timing.token_renew_lead = lead;
    Server::with_config(config).await
}

/// As Ably does: a token with less than the lead left is not asked to renew; it expires into
/// DISCONNECTED 40142, and the client renews and resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_shorter_than_the_renew_lead_gets_no_auth_and_expires_40142() {
    let server = Server::start().await;
    let details = full_token(&server, Some(1500), None, None).await;
    let mut client = server.connect(&token_query(&details, "format=json")).await;
    let disconnected = client.expect(DISCONNECTED).await;
    assert_error(&disconnected, 40142, 401);
}

/// An AUTH with a token for someone else fails the connection (reference §7.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth_as_another_client_id_is_refused_40102() {
    let server = Server::start().await;
    let alice = full_token(&server, None, None, Some("alice")).await;
    let bob = full_token(&server, None, None, Some("bob")).await;
    let mut client = server.connect(&token_query(&alice, "format=json")).await;
    client
        .send(json!({"action": AUTH, "auth": {"accessToken": bob["token"]}}))
        .await;
    let error = client.expect(ERROR).await;
    assert_error(&error, 40102, 401);
    client.expect_closed().await;
}

/// A revoked token's connection ends with 40141, and `/metrics` counts it closed as
/// `token_revoked` (the close reason comes from the error's variant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_connection_is_counted_as_token_revoked() {
    let server = Server::start().await;
    let details = full_token(&server, None, None, Some("revokee")).await;
    let query = token_query(&details, "format=json&clientId=revokee");
    let mut client = server.connect(&query).await;
    let path = format!("/keys/{FULL_KEY_NAME}/revokeTokens");
    let revoke =
        Request::post_json(&path, &json!({"targets": ["clientId:revokee"]})).basic(FULL_KEY);
    let response = server.http(revoke).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_error(&client.expect(ERROR).await, 40141, 401);
    client.expect_closed().await;

    let counted = "realtime_connections_closed_total{reason=\"token_revoked\"}";
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = server.get("/metrics").await;
        let text = String::from_utf8_lossy(&page.body).into_owned();
        if text.lines().any(|line| line.starts_with(counted)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {counted} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
