//! The REST side: publish into realtime, error envelopes, idempotency, token requests, status and
//! time.

use serde_json::{json, Value};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_publish_is_delivered_to_realtime_subscribers() {
    let server = Server::start().await;
    let mut json_sub = server.attached(&full_key("json"), "news:feed").await;
    let mut msgpack_sub = server.attached(&full_key("msgpack"), "news:feed").await;

    // ably-js style: an array, JSON, channel name percent-encoded in the path.
    let body = json!([
        {"name": "a", "data": "first"},
        {"name": "b", "data": "{\"n\":2}", "encoding": "json"},
    ]);
    let response = server
        .post_json("/channels/news%3Afeed/messages", &body)
        .await;
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    let published = response.json();
    assert_eq!(published["channel"], "news:feed", "{published}");
    let message_id = published["messageId"]
        .as_str()
        .expect("messageId")
        .to_owned();
    let serials = published["serials"].as_array().unwrap().clone();
    assert_eq!(serials.len(), 2, "{published}");
    assert!(serials.iter().all(Value::is_string), "{published}");

    // ably-python style: one object, msgpack in and out, binary data, raw ':' in the path.
    let bytes = [1u8, 2, 3, 250];
    let response = server
        .http(
            post_msgpack(
                "/channels/news:feed/messages",
                &json!({"name": "c", "data": bin(&bytes)}),
            )
            .basic(FULL_KEY)
            .header("accept", "application/x-msgpack"),
        )
        .await;
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/x-msgpack")
    );
    let published_binary = from_msgpack(&response.body);
    assert_eq!(published_binary["serials"].as_array().unwrap().len(), 1);

    for subscriber in [&mut json_sub, &mut msgpack_sub] {
        let delivery = subscriber.expect(MESSAGE).await;
        assert_eq!(delivery["channel"], "news:feed", "{delivery}");
        let got = delivery["messages"].as_array().unwrap();
        assert_eq!(got.len(), 2, "{delivery}");
        assert_eq!(got[0]["data"], "first", "{delivery}");
        assert_eq!(got[1]["data"], "{\"n\":2}", "{delivery}");
        assert_eq!(got[1]["encoding"], "json", "{delivery}");
        for (index, message) in got.iter().enumerate() {
            assert_eq!(message["serial"], serials[index], "{delivery}");
            assert_eq!(message["id"], format!("{message_id}:{index}"), "{delivery}");
            assert!(message["timestamp"].is_u64(), "{delivery}");
        }

        let delivery = subscriber.expect(MESSAGE).await;
        let binary = &delivery["messages"][0];
        assert_eq!(
            binary["serial"], published_binary["serials"][0],
            "{delivery}"
        );
        match subscriber.format {
            Format::Json => {
                assert_eq!(binary["data"], b64(&bytes), "{delivery}");
                assert_eq!(binary["encoding"], "base64", "{delivery}");
            }
            Format::Msgpack => assert_eq!(binary["data"], bin(&bytes), "{delivery}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_errors_use_the_ably_envelope() {
    let server = Server::start().await;
    let message = json!([{"name": "x", "data": "y"}]);

    let no_auth = server
        .http(Request::post_json("/channels/c/messages", &message))
        .await;
    assert_rest_error(&no_auth, 40101, 401);

    let bad_key = server
        .http(Request::post_json("/channels/c/messages", &message).basic("app1.full:nope"))
        .await;
    assert_rest_error(&bad_key, 40101, 401);

    let denied = server
        .http(Request::post_json("/channels/secret/messages", &message).basic(LIMITED_KEY))
        .await;
    assert_rest_error(&denied, 40160, 401);

    let bad_channel = server
        .post_json("/channels/%5Bbogus%5Dx/messages", &message)
        .await;
    assert_rest_error(&bad_channel, 40010, 400);

    // A filtered channel (`[filter=<base64 of name == 'x'>]c`) is only subscribed to: no publish,
    // no history, presence or metadata of its own.
    let filtered = "/channels/%5Bfilter%3DbmFtZSA9PSAneCc%3D%5Dc";
    let publish = server
        .post_json(&format!("{filtered}/messages"), &message)
        .await;
    assert_rest_error(&publish, 40010, 400);
    for read in ["/messages", "/presence", ""] {
        let path = format!("{filtered}{read}");
        let response = server
            .http(Request::get(path.as_str()).basic(FULL_KEY))
            .await;
        assert_rest_error(&response, 40010, 400);
    }

    let too_big = json!([{"data": "z".repeat(64 * 1024 + 1)}]);
    let oversized = server.post_json("/channels/c/messages", &too_big).await;
    assert_rest_error(&oversized, 40009, 413);

    let mut malformed = Request::post_json("/channels/c/messages", &json!(null)).basic(FULL_KEY);
    malformed.body = b"{not json".to_vec();
    let malformed = server.http(malformed).await;
    assert_eq!(malformed.status, 400, "{malformed:?}");
    let code = malformed.json()["error"]["code"]
        .as_u64()
        .unwrap_or_default();
    assert!((40000..40100).contains(&code), "{malformed:?}");
    assert_rest_error(&malformed, code, 400);

    let missing = server.http(Request::get("/no/such/thing")).await;
    assert_rest_error(&missing, 40400, 404);

    // In msgpack when the client accepts msgpack.
    let msgpack_error = server
        .http(
            Request::post_json("/channels/c/messages", &message)
                .header("accept", "application/x-msgpack"),
        )
        .await;
    assert_rest_error_in(&msgpack_error, "application/x-msgpack", 40101, 401);
}

/// The same client-supplied id twice within the window: 201 both times, delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_publish_with_a_repeated_id_is_delivered_once() {
    let server = Server::start().await;
    let mut subscriber = server.attached(&full_key("json"), "idem").await;

    let body = json!([{"id": "SYPa/ub/k0f/:0", "name": "once", "data": "payload"}]);
    let first = server.post_json("/channels/idem/messages", &body).await;
    assert_eq!(first.status, 201, "{first:?}");
    let first = first.json();
    assert!(first["serials"][0].is_string(), "{first}");

    let again = server.post_json("/channels/idem/messages", &body).await;
    assert_eq!(
        again.status, 201,
        "a duplicate is acknowledged as published: {again:?}"
    );
    let again = again.json();
    assert_eq!(again["serials"], json!([null]), "{again}");

    let other = json!([{"id": "SYPa/ub/k0f/:1", "name": "next", "data": "payload"}]);
    let response = server.post_json("/channels/idem/messages", &other).await;
    assert_eq!(response.status, 201, "{response:?}");

    let delivery = subscriber.expect(MESSAGE).await;
    assert_eq!(
        delivery["messages"][0]["id"], "SYPa/ub/k0f/:0",
        "{delivery}"
    );
    subscriber
        .expect_named("next", "the duplicate was delivered again")
        .await;
    assert_eq!(delivery["messages"][0]["serial"], first["serials"][0]);
}

/// `GET /channels/{ch}/messages/{serial}` (RSL11): the message published with that serial, in
/// JSON and msgpack; 404 (40400) for a serial the history does not hold; 401 (40160) for a key
/// without `history` on the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_by_its_serial() {
    let server = Server::start().await;
    let body = json!([{"name": "first", "data": "one"}, {"name": "second", "data": {"n": 2}}]);
    let published = server
        .post_json("/channels/allowed:one/messages", &body)
        .await;
    assert_eq!(published.status, 201, "{published:?}");
    let serials = published.json()["serials"].clone();
    let second = serials[1].as_str().unwrap();
    let path = format!("/channels/allowed:one/messages/{second}");

    let got = server.get(path.as_str()).await;
    assert_eq!(got.status, 200, "{got:?}");
    let message = got.json();
    assert_eq!(
        (&message["name"], &message["serial"], &message["data"]),
        (&json!("second"), &serials[1], &json!({"n": 2})),
        "{message}"
    );
    let packed = server
        .http(
            Request::get(path.as_str())
                .basic(FULL_KEY)
                .header("accept", "application/x-msgpack"),
        )
        .await;
    assert_eq!(packed.status, 200, "{packed:?}");
    assert_eq!(from_msgpack(&packed.body)["name"], "second");

    let first = serials[0].as_str().unwrap();
    let missing = format!("/channels/allowed:two/messages/{first}");
    assert_rest_error(&server.get(missing).await, 40400, 404);
    let refused = server
        .http(Request::get(path.as_str()).basic(LIMITED_KEY))
        .await;
    assert_rest_error(&refused, 40160, 401);
}

/// A publisher cannot hand out versions or annotation summaries: they are dropped from what
/// subscribers receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_cannot_forge_a_version_or_a_summary() {
    let server = Server::start().await;
    let mut subscriber = server.attached(&full_key("json"), "forged").await;
    let body = json!([{"name": "forged", "data": "x",
        "version": {"serial": "zzz", "clientId": "admin", "description": "edited by admin"},
        "annotations": {"summary": {"reaction:distinct.v1": {"👍": {"total": 1000}}}}}]);
    let response = server.post_json("/channels/forged/messages", &body).await;
    assert_eq!(response.status, 201, "{response:?}");
    let delivery = subscriber.expect(MESSAGE).await;
    let message = &delivery["messages"][0];
    assert_eq!(message["name"], "forged", "{delivery}");
    assert!(message.get("version").is_none(), "{delivery}");
    assert!(message.get("annotations").is_none(), "{delivery}");
}

/// `?ephemeral=true` marks the messages (msgpack body too) and answers null serials; another
/// value is refused before anything is published; a mix in the body is 40030.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_ephemeral_publish_param() {
    let server = Server::start().await;
    let mut subscriber = server.attached(&full_key("json"), "fleeting").await;
    let path = "/channels/fleeting/messages?ephemeral=true";
    let body = json!([{"name": "a", "data": "x"}, {"name": "b", "extras": {"push": {}}}]);
    let sent = server
        .http(
            post_msgpack(path, &body)
                .basic(FULL_KEY)
                .header("accept", "application/json"),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    assert_eq!(sent.json()["serials"], json!([null, null]), "{sent:?}");
    let delivery = subscriber.expect(MESSAGE).await;
    assert!(delivery.get("channelSerial").is_none(), "{delivery}");
    let extras: Vec<&Value> = delivery["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["extras"])
        .collect();
    assert_eq!(
        extras,
        [
            &json!({"ephemeral": true}),
            &json!({"push": {}, "ephemeral": true})
        ],
        "{delivery}"
    );
    let odd = server
        .post_json(
            "/channels/fleeting/messages?ephemeral=yes",
            &json!({"data": "x"}),
        )
        .await;
    assert_rest_error(&odd, 40003, 400);
    let mixed = json!([{"data": "x"}, {"data": "y", "extras": {"ephemeral": true}}]);
    let mixed = server
        .post_json("/channels/fleeting/messages", &mixed)
        .await;
    assert_rest_error(&mixed, 40030, 400);
    let history = server.get("/channels/fleeting/messages").await;
    assert_eq!(history.json(), json!([]), "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_publish_with_a_token() {
    let server = Server::start().await;
    let mut subscriber = server.attached(&full_key("json"), "bearer").await;
    let details = full_token(&server, None, None, Some("carol")).await;
    let token = details["token"].as_str().unwrap();
    let response = server
        .http(
            Request::post_json("/channels/bearer/messages", &json!([{"name": "t"}]))
                .header("authorization", format!("Bearer {}", b64(token.as_bytes()))),
        )
        .await;
    assert_eq!(response.status, 201, "{response:?}");
    let delivery = subscriber.expect(MESSAGE).await;
    assert_eq!(delivery["messages"][0]["clientId"], "carol", "{delivery}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_request_issues_token_details() {
    let server = Server::start().await;
    let before = protocol::now_ms();
    let details = full_token(
        &server,
        Some(60_000),
        Some(r#"{"chat:*":["subscribe"]}"#),
        Some("dave"),
    )
    .await;
    assert_eq!(details["keyName"], FULL_KEY_NAME, "{details}");
    assert_eq!(details["clientId"], "dave", "{details}");
    let issued = details["issued"].as_u64().expect("issued");
    let expires = details["expires"].as_u64().expect("expires");
    assert!(
        issued >= before && issued <= protocol::now_ms(),
        "{details}"
    );
    assert_eq!(expires - issued, 60_000, "{details}");
    let capability: Value = serde_json::from_str(details["capability"].as_str().unwrap()).unwrap();
    assert_eq!(capability, json!({"chat:*": ["subscribe"]}), "{details}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_request_refusals() {
    let server = Server::start().await;
    let path = format!("/keys/{FULL_KEY_NAME}/requestToken");
    let now = protocol::now_ms();

    // Signed with the wrong secret.
    let forged = bare_token_request(FULL_KEY_NAME, "not-the-secret", now, &fresh_nonce());
    let response = server.http(Request::post_json(&path, &forged)).await;
    assert_rest_error(&response, 40101, 401);

    // Signed right, but the timestamp is far outside the ±2 min window (both directions).
    for timestamp in [now - 10 * 60 * 1000, now + 10 * 60 * 1000] {
        let stale = bare_token_request(FULL_KEY_NAME, FULL_SECRET, timestamp, &fresh_nonce());
        let response = server.http(Request::post_json(&path, &stale)).await;
        assert_rest_error(&response, 40104, 401);
    }

    // The same signed request twice: the nonce is spent the first time.
    let once = bare_token_request(FULL_KEY_NAME, FULL_SECRET, now, &fresh_nonce());
    let response = server.http(Request::post_json(&path, &once)).await;
    assert_eq!(response.status, 200, "{response:?}");
    let response = server.http(Request::post_json(&path, &once)).await;
    assert_rest_error(&response, 40105, 401);
}

/// The signing helper agrees with the reference's vectors (computed with both SDKs), so the
/// token tests sign the way clients do.
#[test]
fn token_request_signing_matches_the_reference_vectors() {
    let with_everything = token_request(
        "app1.key1",
        "secret",
        Some(3600000),
        Some(r#"{"*":["subscribe"],"chat:*":["publish","subscribe"]}"#),
        Some("alice"),
        1700000000000,
        "0123456789abcdef",
    );
    assert_eq!(
        with_everything["mac"],
        "JfMe0x7ZdRu1eMrGk/zp9/aNVJckreupztNL6sDZb+A="
    );
    let bare = bare_token_request("app1.key1", "secret", 1700000000000, "0123456789abcdef");
    assert_eq!(bare["mac"], "GxcaHt2fVohv9BsvTzHuZyuUyDzjR/Y1sRBkjGLQ97U=");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_status_reports_occupancy() {
    let server = Server::start().await;
    let _subscriber = server.attached(&full_key("json"), "busy").await;
    let _limited = server
        .attached(&format!("key={LIMITED_KEY}&format=json"), "allowed:quiet")
        .await;

    let response = server.get("/channels/busy").await;
    assert_eq!(response.status, 200, "{response:?}");
    let details = response.json();
    assert_eq!(details["channelId"], "busy", "{details}");
    assert_eq!(details["status"]["isActive"], true, "{details}");
    let metrics = &details["status"]["occupancy"]["metrics"];
    assert_eq!(metrics["connections"], 1, "{details}");
    assert_eq!(metrics["subscribers"], 1, "{details}");
    assert_eq!(metrics["publishers"], 1, "{details}");

    // What every SDK sends: an envelope.
    let response = server.get("/channels/nobody?envelope=json").await;
    assert_eq!(response.status, 200, "{response:?}");
    let envelope = response.json();
    assert_eq!(envelope["statusCode"], 200, "{envelope}");
    assert_eq!(
        envelope["response"]["status"]["isActive"], false,
        "{envelope}"
    );
    assert_eq!(
        envelope["response"]["status"]["occupancy"]["metrics"]["connections"], 0,
        "{envelope}"
    );

    // The limited key has no channel-metadata right.
    let response = server
        .http(Request::get("/channels/allowed:quiet").basic(LIMITED_KEY))
        .await;
    assert_rest_error(&response, 40160, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_is_an_array_of_one_timestamp() {
    let server = Server::start().await;
    let before = protocol::now_ms();
    let response = server.http(Request::get("/time")).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    let time = response.json();
    let ms = time[0].as_u64().unwrap_or_else(|| panic!("{time}"));
    assert_eq!(time.as_array().map(Vec::len), Some(1), "{time}");
    assert!(ms >= before && ms <= protocol::now_ms(), "{time}");
}

/// Errors answer in `?envelope=`'s format where one is given, else in `Accept`'s, whichever
/// route refuses (the envelope itself only wraps successes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_answer_in_the_envelope_format_else_accept() {
    let server = Server::start().await;
    for path in [
        "/channels/c/messages?envelope=msgpack",
        "/channels/c?envelope=msgpack",
        "/stats?envelope=msgpack",
    ] {
        let response = server
            .http(Request::get(path).header("accept", "application/json"))
            .await;
        assert_rest_error_in(&response, "application/x-msgpack", 40101, 401);
    }
    let message = json!({"name": "e"});
    let publish = Request::post_json("/channels/c/messages?envelope=msgpack", &message);
    let response = server.http(publish).await;
    assert_rest_error_in(&response, "application/x-msgpack", 40101, 401);
    let json = server
        .http(
            Request::get("/channels/c/messages?envelope=json")
                .header("accept", "application/x-msgpack"),
        )
        .await;
    assert_rest_error_in(&json, "application/json", 40101, 401);
}
