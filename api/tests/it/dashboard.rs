//! `/dashboard`: who gets in, the embedded assets, and the JSON the page polls moving with
//! traffic (overview counters, the channel inspector's member and last message, the publish
//! form's endpoint), on the main port and on `--admin-listen`.

use std::net::SocketAddr;

use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::*;

const PRESENCE: u64 = 14;

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let response = http(addr, Request::get(path).basic(FULL_KEY)).await;
    assert_eq!(response.status, 200, "{path}: {response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.json()
}

/// Polls `path` until `done` holds for its JSON, for at most `WAIT`.
async fn until(addr: SocketAddr, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(format!("{path} gets there"), WAIT, || async {
        let value = get_json(addr, path).await;
        if done(&value) {
            Ok(value)
        } else {
            Err(value)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_key_with_every_capability_gets_in() {
    let server = Server::start().await;
    for path in ["/dashboard", "/dashboard/app.js", "/dashboard/api/overview"] {
        let response = server.http(Request::get(path)).await;
        assert_eq!(response.status, 401, "{path}: {response:?}");
        assert!(
            response
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Basic realm=")),
            "the browser must be asked: {response:?}"
        );
        assert_eq!(response.json()["error"]["code"], 40100, "{response:?}");
    }

    let wrong = server
        .http(Request::get("/dashboard").basic("app1.full:wrong"))
        .await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert!(wrong.header("www-authenticate").is_some(), "{wrong:?}");
    assert_eq!(wrong.json()["error"]["statusCode"], 401);

    let token = server
        .http(Request::get("/dashboard").header("authorization", "Bearer abc.def.ghi"))
        .await;
    assert_eq!(token.status, 401, "tokens are not accepted: {token:?}");
    assert!(token.header("www-authenticate").is_some(), "{token:?}");

    let limited = server
        .http(Request::get("/dashboard/api/overview").basic(LIMITED_KEY))
        .await;
    assert_eq!(limited.status, 403, "{limited:?}");
    assert_eq!(limited.header("x-ably-errorcode"), Some("40160"));
    assert_eq!(limited.json()["error"]["code"], 40160);
    assert!(limited.header("www-authenticate").is_none(), "{limited:?}");

    let page = server.get("/dashboard").await;
    assert_eq!(page.status, 200, "{page:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_embedded_with_their_content_types() {
    let server = Server::start().await;
    for (path, content_type, marker) in [
        (
            "/dashboard",
            "text/html; charset=utf-8",
            "/dashboard/app.js",
        ),
        (
            "/dashboard/app.js",
            "text/javascript; charset=utf-8",
            "/dashboard/api/overview",
        ),
        ("/dashboard/app.css", "text/css; charset=utf-8", ".spark"),
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(
            response.header("content-type"),
            Some(content_type),
            "{path}"
        );
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        let body = String::from_utf8(response.body).unwrap();
        assert!(body.contains(marker), "{path} lacks {marker}");
    }
    let page = server.get("/dashboard").await;
    assert!(page
        .header("content-security-policy")
        .is_some_and(|csp| csp.contains("script-src 'self'")));
    let cross_site = server
        .http(Request::get("/dashboard/api/overview").header("origin", "https://evil.example"))
        .await;
    assert!(
        cross_site.header("access-control-allow-origin").is_none(),
        "no CORS on the dashboard: {cross_site:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_moves_with_connections_publishes_and_failures() {
    let server = Server::start().await;
    let before = get_json(server.addr, "/dashboard/api/overview").await;
    assert_eq!(before["clustered"], false);
    let nodes = before["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "embedded: one node, {before}");
    assert_eq!(nodes[0]["node"], before["node"]);
    assert_eq!(nodes[0]["state"], "ready");
    assert_eq!(before["cluster"]["connections"], 0, "{before}");
    assert_eq!(before["cluster"]["messagesIn"], 0, "{before}");

    let mut subscriber = server
        .attached(&format!("key={FULL_KEY}"), "dash:moves")
        .await;
    let mut publisher = server.connect(&format!("key={FULL_KEY}")).await;
    for n in 1..=3 {
        publisher
            .publish_acked("dash:moves", n, json!([{"name": "n", "data": n}]))
            .await;
        subscriber.expect(MESSAGE).await;
    }
    let refused = server
        .http(Request::get("/channels/dash:moves").basic("app1.full:wrong"))
        .await;
    assert_eq!(refused.status, 401);

    let after = get_json(server.addr, "/dashboard/api/overview").await;
    let cluster = &after["cluster"];
    assert_eq!(cluster["nodes"], 1, "{after}");
    assert_eq!(cluster["connections"], 2, "{after}");
    assert_eq!(cluster["attachments"], 1, "{after}");
    assert!(cluster["channels"].as_u64() >= Some(1), "{after}");
    assert_eq!(cluster["messagesIn"], 3, "{after}");
    assert_eq!(cluster["messagesOut"], 3, "one subscriber: {after}");
    assert_eq!(cluster["authFailures"], 1, "{after}");
    assert_eq!(cluster["slowConsumerDisconnects"], 0, "{after}");
    assert_eq!(
        cluster["latency"]["count"], 3,
        "once per publication: {after}"
    );
    assert!(cluster["latency"]["p99"].is_u64(), "{after}");

    // Rates come from the once-a-second readings.
    let rated = until(server.addr, "/dashboard/api/overview", |o| {
        o["cluster"]["inPerSecond"].as_f64() > Some(0.0)
            || o["nodes"][0]["series"]["inPerSecond"]
                .as_array()
                .is_some_and(|s| s.iter().any(|v| v.as_f64() > Some(0.0)))
    })
    .await;
    assert!(rated["nodes"][0]["series"]["p99Ms"].is_array(), "{rated}");

    drop(publisher);
    until(server.addr, "/dashboard/api/overview", |o| {
        o["cluster"]["connections"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_shows_members_and_last_messages_and_the_form_publishes() {
    let server = Server::start().await;
    let mut member = server
        .attached(&format!("key={FULL_KEY}&clientId=alice"), "room:1")
        .await;
    member
        .send(json!({
            "action": PRESENCE,
            "channel": "room:1",
            "msgSerial": 0,
            "presence": [{"action": 2, "data": "<b>here</b>"}]
        }))
        .await;
    // Its own PRESENCE echo and the ACK, in either order.
    for _ in 0..2 {
        let frame = member.frame().await;
        assert!(
            frame["action"] == ACK || frame["action"] == PRESENCE,
            "{frame}"
        );
    }

    let published = server
        .http(
            Request::post_json(
                "/dashboard/api/channels/room%3A1/messages",
                &json!({"name": "test", "data": "<script>alert(1)</script>"}),
            )
            .basic(FULL_KEY)
            .header("origin", format!("http://{}", server.addr)),
        )
        .await;
    assert_eq!(published.status, 201, "{published:?}");
    assert!(published.json()["serials"][0].is_string(), "{published:?}");
    let delivered = member.expect(MESSAGE).await;
    assert_eq!(
        delivered["messages"][0]["data"], "<script>alert(1)</script>",
        "{delivered}"
    );

    let inspection = until(server.addr, "/dashboard/api/channels/room:1", |i| {
        i["members"].as_array().is_some_and(|m| !m.is_empty())
    })
    .await;
    assert_eq!(inspection["name"], "room:1");
    assert_eq!(inspection["occupancy"]["connections"], 1, "{inspection}");
    assert_eq!(
        inspection["members"][0]["clientId"], "alice",
        "{inspection}"
    );
    assert_eq!(inspection["members"][0]["data"], "<b>here</b>");
    assert_eq!(inspection["messages"][0]["name"], "test", "{inspection}");
    assert_eq!(
        inspection["messages"][0]["data"],
        "<script>alert(1)</script>"
    );

    let list = get_json(server.addr, "/dashboard/api/channels").await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["channels"][0]["name"], "room:1", "{list}");
    assert_eq!(list["channels"][0]["occupancy"]["presenceMembers"], 1);

    let overview = get_json(server.addr, "/dashboard/api/overview").await;
    assert_eq!(overview["cluster"]["messagesIn"], 1, "{overview}");

    // Another site cannot publish with the browser's cached credentials.
    let forged = server
        .http(
            Request::post_json(
                "/dashboard/api/channels/room%3A1/messages",
                &json!({"data": 1}),
            )
            .basic(FULL_KEY)
            .header("origin", "https://evil.example"),
        )
        .await;
    assert_eq!(forged.status, 403, "{forged:?}");
    let invalid = server
        .post_json(
            "/dashboard/api/channels/%5Bbad/messages",
            &json!({"data": 1}),
        )
        .await;
    assert_eq!(invalid.status, 400, "{invalid:?}");
    assert!(invalid.json()["error"]["code"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_on_the_admin_listener_too() {
    let server = Server::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    tokio::spawn(api::serve_admin(listener, server.gateway.clone(), None));
    assert_eq!(http(admin, Request::get("/dashboard")).await.status, 401);
    let page = http(admin, Request::get("/dashboard").basic(FULL_KEY)).await;
    assert_eq!(page.status, 200, "{page:?}");
    let overview = get_json(admin, "/dashboard/api/overview").await;
    assert_eq!(overview["node"], server.gateway.node_id());
    assert_eq!(overview["nodes"][0]["state"], "ready");

    // The admin listener outlives the main one's drain, and shows it.
    let mut server = server;
    let _serving = server.begin_shutdown();
    until(admin, "/dashboard/api/overview", |o| {
        o["nodes"][0]["state"] == "draining"
    })
    .await;
}
