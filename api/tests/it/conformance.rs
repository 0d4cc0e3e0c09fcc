//! What Ably's own ably-js suite made us fix, guarded here without the suite's checkout.

use serde_json::json;

use crate::support::*;

fn full() -> String {
    format!("key={FULL_KEY}&format=json&clientId=me")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_modes_param_overrides_flags_is_echoed_and_bounds_what_the_channel_may_do() {
    let server = Server::start().await;
    let mut client = server.connect(&full()).await;
    client
        .send(json!({"action": ATTACH, "channel": "moded",
            "params": {"modes": "subscribe,presence_subscribe", "delta": "vcdiff", "unknown": "x"}}))
        .await;
    let attached = client.expect(ATTACHED).await;
    assert_eq!(
        attached["flags"].as_u64().unwrap() & 0xFFFF_0000,
        MODE_SUBSCRIBE | MODE_PRESENCE_SUBSCRIBE,
        "{attached}"
    );
    assert_eq!(
        attached["params"],
        json!({"modes": "subscribe,presence_subscribe", "delta": "vcdiff"})
    );

    // The capability allows publish and presence, but the attach did not ask for them.
    client
        .send(json!({"action": MESSAGE, "channel": "moded", "msgSerial": 0, "messages": [{"data": "x"}]}))
        .await;
    let nack = client.expect(NACK).await;
    assert_error_info(&nack["error"], 40160, 401, &nack);
    client
        .send(
            json!({"action": 14, "channel": "moded", "msgSerial": 1, "presence": [{"action": 2}]}),
        )
        .await;
    let nack = client.expect(NACK).await;
    assert_error_info(&nack["error"], 40160, 401, &nack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_grow_again_when_a_re_auth_grants_more() {
    let server = Server::start().await;
    let narrow = full_token(&server, None, Some(r#"{"grow":["subscribe"]}"#), Some("me")).await;
    let mut client = server.connect(&token_query(&narrow, "format=json")).await;
    client
        .send(json!({"action": ATTACH, "channel": "grow"}))
        .await;
    let attached = client.expect(ATTACHED).await;
    assert_eq!(
        attached["flags"].as_u64().unwrap() & MODE_PUBLISH,
        0,
        "{attached}"
    );
    client
        .send(json!({"action": MESSAGE, "channel": "grow", "msgSerial": 0, "messages": [{"data": "no"}]}))
        .await;
    client.expect(NACK).await;

    let wide = full_token(
        &server,
        None,
        Some(r#"{"grow":["subscribe","publish"]}"#),
        Some("me"),
    )
    .await;
    client
        .send(json!({"action": AUTH, "auth": {"accessToken": wide["token"]}}))
        .await;
    client.expect(CONNECTED).await;
    client
        .send(json!({"action": MESSAGE, "channel": "grow", "msgSerial": 1, "messages": [{"data": "yes"}]}))
        .await;
    // Its own echo (it is subscribed), then the ACK: the publish went through.
    assert_eq!(client.expect(MESSAGE).await["messages"][0]["data"], "yes");
    let ack = client.expect(ACK).await;
    assert_eq!(ack["msgSerial"], 1, "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_params_are_read_and_attach_resume_skips_the_rewind() {
    let server = Server::start().await;
    let mut publisher = server.connect(&full()).await;
    publisher
        .publish_acked("rewound", 0, json!([{"name": "old", "data": "1"}]))
        .await;

    let mut fresh = server.connect(&full()).await;
    fresh
        .send(json!({"action": ATTACH, "channel": "rewound", "params": {"rewind": 1}}))
        .await;
    let attached = fresh.expect(ATTACHED).await;
    assert_eq!(attached["params"]["rewind"], "1", "{attached}");
    let replay = fresh.expect(MESSAGE).await;
    assert_eq!(replay["messages"][0]["name"], "old");

    // ATTACH_RESUME (32): a re-attach; the rewind must not replay again.
    let mut again = server.connect(&full()).await;
    again
        .send(json!({"action": ATTACH, "channel": "rewound", "flags": 32, "params": {"rewind": 1}}))
        .await;
    again.expect(ATTACHED).await;
    publisher
        .publish_acked("rewound", 1, json!([{"name": "live", "data": "2"}]))
        .await;
    again
        .expect_named("live", "no rewind on an attach-resume")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sync_request_is_answered_even_with_nobody_present() {
    let server = Server::start().await;
    let mut client = server.attached(&full(), "syncing").await;
    client
        .send(json!({"action": 16, "channel": "syncing"}))
        .await;
    let sync = client.expect(16).await;
    assert_eq!(sync["presence"], json!([]), "{sync}");
    let cursor = sync["channelSerial"].as_str().unwrap();
    assert!(cursor.ends_with(':'), "one final page: {sync}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_details_the_suite_checks() {
    let server = Server::start().await;
    // A known path with the wrong method is "not found", as Ably answers.
    let wrong = server
        .http(Request::get("/keys/app1.full/requestToken"))
        .await;
    assert_eq!(wrong.status, 404);
    assert_eq!(wrong.header("x-ably-errorcode"), Some("40400"));
    // Stats with nothing counted yet: an empty page rather than an error.
    let stats = server.get("/stats").await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json(), json!([]));
    // Token lifetimes are capped at a day: beyond is refused, not clamped.
    let year = server
        .post_json(
            "/keys/app1.full/requestToken",
            &json!({"keyName": "app1.full", "ttl": 365u64 * 24 * 3600 * 1000}),
        )
        .await;
    assert_eq!(
        year.status,
        400,
        "{:?}",
        String::from_utf8_lossy(&year.body)
    );
    // revokeTokens with allowReauthMargin applies 30 s later.
    let now = protocol::now_ms();
    let revoked = server
        .post_json(
            "/keys/app1.full/revokeTokens",
            &json!({"targets": ["clientId:someone"], "allowReauthMargin": true}),
        )
        .await
        .json();
    assert!(
        revoked["results"][0]["appliesAt"].as_u64().unwrap() >= now + 30_000,
        "{revoked}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_publish_with_a_connection_key_is_stamped_with_that_connection() {
    let server = Server::start().await;
    let mut subscriber = server.connect(&full()).await;
    let key = subscriber.connected["connectionDetails"]["connectionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    subscriber.attach("behalf").await;
    let published = server
        .post_json(
            "/channels/behalf/messages",
            &json!({"data": "x", "connectionKey": key}),
        )
        .await;
    assert_eq!(published.status, 201);
    let delivered = subscriber.expect(MESSAGE).await;
    assert_eq!(
        delivered["messages"][0]["connectionId"],
        subscriber.id(),
        "{delivered}"
    );

    let bogus = server
        .post_json(
            "/channels/behalf/messages",
            &json!({"data": "x", "connectionKey": "nobody!zzzz"}),
        )
        .await;
    assert_eq!(bogus.status, 400);
}
