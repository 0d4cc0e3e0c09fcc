//! The HTTP and WebSocket edges: every refusal made before a route runs (or by axum's own
//! extractors) answers in Ably's envelope with a code, and a bad text frame closes with 1007.

use serde_json::json;

use crate::support::*;

/// An error response in Ably's JSON envelope with `code` and its status, headers included.
fn assert_envelope(response: &Response, status: u16, code: u64) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response:?}"
    );
    assert_eq!(
        response.header("x-ably-errorcode"),
        Some(code.to_string().as_str()),
        "{response:?}"
    );
    let body = response.json();
    assert_error_info(&body["error"], code, u64::from(status), &body);
    assert!(
        !body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_a_route_answer_in_the_envelope() {
    let server = Server::start().await;

    // Over the body limit: 413 / 40009, and the whole body is read first, so the client gets
    // the answer (the harness writes all of it before reading) rather than a reset.
    let big = Request::post(
        "/channels/edge/messages",
        "application/json",
        vec![b' '; 3 * 1024 * 1024],
    )
    .basic(FULL_KEY);
    assert_envelope(&server.http(big).await, 413, 40009);

    // A path segment that percent-decodes to invalid UTF-8: axum's rejection, re-dressed.
    let bad_path = Request::get("/channels/%ff%fe/messages").basic(FULL_KEY);
    assert_envelope(&server.http(bad_path).await, 400, 40000);

    // A known path with the wrong method: 404 / 40400 as Ably answers (ably-js's suite checks
    // it), with Allow.
    let put_time = Request::new("PUT", "/time");
    let response = server.http(put_time).await;
    assert_envelope(&response, 404, 40400);
    assert!(
        response
            .header("allow")
            .is_some_and(|allow| allow.contains("GET")),
        "{response:?}"
    );

    let long_path = format!("/channels/edge/messages?x={}", "a".repeat(20 * 1024));
    assert_envelope(&server.http(Request::get(&long_path)).await, 414, 41400);

    let fat_headers = Request::get("/time").header("x-padding", "b".repeat(40 * 1024));
    assert_envelope(&server.http(fat_headers).await, 431, 43100);

    // In msgpack when the client accepts it.
    let response = server
        .http(Request::get("/nowhere").header("accept", "application/x-msgpack"))
        .await;
    assert_eq!(response.status, 404);
    assert_eq!(
        from_msgpack(&response.body)["error"]["code"],
        40400,
        "{response:?}"
    );

    // The server is fine afterwards.
    assert_eq!(server.http(Request::get("/time")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let server = Server::start().await;
    let mut bystander = server.attached(&format!("key={FULL_KEY}"), "edge").await;

    let mut victim = server.attached(&format!("key={FULL_KEY}"), "edge").await;
    victim.send_raw_text(vec![b'{', 0xff, 0xfe, b'}']).await;
    let error = victim.expect(ERROR).await;
    assert_error(&error, 40000, 400);
    match victim.event().await {
        Event::Closed(why) => assert!(why.contains("Invalid"), "close code not 1007: {why}"),
        Event::Frame(frame) => panic!("expected a 1007 close, got {frame}"),
    }

    let mut publisher = server.connect(&format!("key={FULL_KEY}")).await;
    publisher
        .publish_acked("edge", 0, json!([{"name": "after", "data": 1}]))
        .await;
    bystander.expect_named("after", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_the_public_port_need_an_operator_key() {
    let server = Server::start().await;
    assert_envelope(&server.http(Request::get("/metrics")).await, 401, 40101);
    let wrong = Request::get("/metrics").basic("app1.full:wrong");
    assert_eq!(server.http(wrong).await.status, 401);

    let token = server
        .post_json(
            format!("/keys/{FULL_KEY_NAME}/requestToken"),
            &json!({"keyName": FULL_KEY_NAME, "timestamp": protocol::now_ms()}),
        )
        .await
        .json()["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let with_token = Request::get("/metrics")
        .header("authorization", format!("Bearer {}", b64(token.as_bytes())));
    assert_envelope(&server.http(with_token).await, 403, 40160);
    let lesser = Request::get("/metrics").basic(LIMITED_KEY);
    assert_envelope(&server.http(lesser).await, 403, 40160);

    let response = server.get("/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        String::from_utf8_lossy(&response.body).contains("realtime_"),
        "{response:?}"
    );
}
