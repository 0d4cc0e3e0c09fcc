//! Ably Chat's REST API (`/chat/v4/rooms/{room}/...`) on one node: the V4 message shape in JSON
//! and msgpack, PUT semantics, delete, versions, history of chat messages only, occupancy, and
//! capabilities matched against the room's name.

use serde_json::{json, Value};

use crate::support::{
    assert_rest_error, config, field_of_each, from_msgpack, Request, Server, FULL_KEY, LIMITED_KEY,
};

async fn server() -> Server {
    let mut config = config();
    config.hub.namespace_rules.push((
        "room".into(),
        gateway::config::ChannelRules {
            retention: config.hub.retention,
            mutable_messages: true,
            ..Default::default()
        },
    ));
    Server::with_config(config).await
}

fn request<'a>(method: &'a str, path: String, body: Option<Value>) -> Request<'a> {
    let request = Request::new(method, path)
        .basic(FULL_KEY)
        .header("x-ably-clientid", crate::support::b64(b"alice"));
    match body {
        Some(body) => request.with_body("application/json", body.to_string().into_bytes()),
        None => request,
    }
}

async fn call(server: &Server, method: &str, path: String, body: Option<Value>) -> Value {
    let response = server.http(request(method, path, body)).await;
    assert!(response.status < 300, "{response:?}");
    response.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_messages_over_rest() {
    let server = server().await;
    let room = "room%3Alobby";
    let base = format!("/chat/v4/rooms/{room}/messages");
    let sent = server
        .http(request(
            "POST",
            format!("{base}?idempotencyKey=k1"),
            Some(json!({"text": "hi", "metadata": {"n": 1}, "headers": {"lang": "en"}})),
        ))
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let sent = sent.json();
    let serial = sent["serial"].as_str().unwrap().to_owned();
    assert_eq!(sent["text"], "hi");
    assert_eq!(sent["clientId"], "alice");
    assert_eq!(sent["action"], "message.create");
    assert_eq!(sent["metadata"], json!({"n": 1}));
    assert_eq!(sent["headers"], json!({"lang": "en"}));
    assert_eq!(sent["version"]["serial"], serial.as_str());
    assert_eq!(sent["version"]["timestamp"], sent["timestamp"]);

    // The room's channel holds it as an Ably message.
    let raw = call(
        &server,
        "GET",
        format!("/channels/room:lobby::$chat/messages/{serial}"),
        None,
    )
    .await;
    assert_eq!(raw["name"], "chat.message");
    assert_eq!(raw["data"], json!({"text": "hi", "metadata": {"n": 1}}));

    let edited = call(
        &server,
        "PUT",
        format!("{base}/{serial}"),
        Some(json!({"message": {"text": "hi!"}, "description": "typo", "metadata": {"k": "v"}})),
    )
    .await;
    assert_eq!(edited["action"], "message.update");
    assert_eq!(edited["text"], "hi!");
    assert_eq!(
        (&edited["metadata"], &edited["headers"]),
        (&json!({}), &json!({})),
        "PUT: what the edit left out is cleared"
    );
    assert_eq!(edited["version"]["description"], "typo");
    assert_eq!(edited["version"]["metadata"], json!({"k": "v"}));
    assert_eq!(edited["version"]["clientId"], "alice");

    let deleted = call(
        &server,
        "POST",
        format!("{base}/{serial}/delete"),
        Some(json!({})),
    )
    .await;
    assert_eq!(deleted["action"], "message.delete");
    let got = server
        .http(
            request("GET", format!("{base}/{serial}"), None)
                .header("accept", "application/x-msgpack"),
        )
        .await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(from_msgpack(&got.body)["action"], "message.delete");
    let versions = call(&server, "GET", format!("{base}/{serial}/versions"), None).await;
    let actions = field_of_each(&versions, "action");
    assert_eq!(
        actions,
        ["message.create", "message.update", "message.delete"]
    );

    // History holds chat messages only (not typing or other names on the channel).
    let other = json!({"name": "typing.started", "data": "x"});
    let published = server
        .http(Request::post_json("/channels/room:lobby::$chat/messages", &other).basic(FULL_KEY))
        .await;
    assert_eq!(published.status, 201);
    call(
        &server,
        "POST",
        base.clone(),
        Some(json!({"text": "second"})),
    )
    .await;
    let history = call(&server, "GET", format!("{base}?limit=10"), None).await;
    let texts = field_of_each(&history, "text");
    assert_eq!(texts, ["second", ""], "a deleted message keeps no text");
    let forwards = call(
        &server,
        "GET",
        format!("{base}?direction=forwards&fromSerial={serial}"),
        None,
    )
    .await;
    assert_eq!(
        forwards.as_array().unwrap().len(),
        1,
        "nothing after fromSerial: {forwards}"
    );

    let missing = server
        .http(request(
            "GET",
            format!("{base}/000000000001-0000000009"),
            None,
        ))
        .await;
    assert_rest_error(&missing, 40400, 404);
    let no_text = server
        .http(request("POST", base.clone(), Some(json!({"metadata": {}}))))
        .await;
    assert_rest_error(&no_text, 40003, 400);
    let occupancy = call(
        &server,
        "GET",
        format!("/chat/v4/rooms/{room}/occupancy"),
        None,
    )
    .await;
    assert_eq!(occupancy, json!({"connections": 0, "presenceMembers": 0}));
}

/// Capabilities name rooms: the limited key (`allowed:*`) may chat in `allowed:…` rooms only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_capabilities_match_the_room() {
    let server = server().await;
    let send = |room: &str| {
        Request::post_json(
            format!("/chat/v4/rooms/{room}/messages"),
            &json!({"text": "x"}),
        )
        .basic(LIMITED_KEY)
    };
    assert_eq!(server.http(send("allowed:room")).await.status, 201);
    assert_rest_error(&server.http(send("room:lobby")).await, 40160, 401);
    let read = Request::get("/chat/v4/rooms/room:lobby/messages").basic(LIMITED_KEY);
    assert_rest_error(&server.http(read).await, 40160, 401);
}

/// Any room is mutable (Chat rooms always allow edits, deletes and reactions), message reactions
/// map onto `reaction:*.v1` annotations whose summaries the message carries, a client's own
/// reactions are narrowed from them, and a full last history page has no `next`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reactions_and_paging() {
    let server = Server::start().await;
    let base = "/chat/v4/rooms/anywhere/messages";
    let sent = call(&server, "POST", base.into(), Some(json!({"text": "react"}))).await;
    let serial = sent["serial"].as_str().unwrap().to_owned();
    let edited = call(
        &server,
        "PUT",
        format!("{base}/{serial}"),
        Some(json!({"message": {"text": "e"}})),
    )
    .await;
    assert_eq!(
        edited["action"], "message.update",
        "no namespace rule needed in a chat room"
    );

    let reacted = server
        .http(request(
            "POST",
            format!("{base}/{serial}/reactions"),
            Some(json!({"type": "distinct", "name": "heart"})),
        ))
        .await;
    assert_eq!(reacted.status, 201, "{reacted:?}");
    assert!(reacted.json()["serial"].as_str().unwrap() > serial.as_str());
    let message = call(&server, "GET", format!("{base}/{serial}"), None).await;
    assert_eq!(
        message["reactions"]["distinct"]["heart"]["clientIds"],
        json!(["alice"]),
        "{message}"
    );
    let mine = call(
        &server,
        "GET",
        format!("{base}/{serial}/client-reactions"),
        None,
    )
    .await;
    assert_eq!(mine["distinct"]["heart"]["total"], 1, "{mine}");
    let theirs = call(
        &server,
        "GET",
        format!("{base}/{serial}/client-reactions?forClientId=bob"),
        None,
    )
    .await;
    assert_eq!(
        theirs,
        json!({"unique": {}, "distinct": {}, "multiple": {}})
    );
    let bad = server
        .http(request(
            "POST",
            format!("{base}/{serial}/reactions"),
            Some(json!({"type": "sideways", "name": "x"})),
        ))
        .await;
    assert_rest_error(&bad, 40003, 400);
    call(
        &server,
        "DELETE",
        format!("{base}/{serial}/reactions?type=distinct&name=heart"),
        None,
    )
    .await;
    let message = call(&server, "GET", format!("{base}/{serial}"), None).await;
    assert!(message.get("reactions").is_none(), "{message}");

    call(&server, "POST", base.into(), Some(json!({"text": "two"}))).await;
    let page = server
        .http(request("GET", format!("{base}?limit=2"), None))
        .await;
    assert_eq!(page.json().as_array().unwrap().len(), 2);
    assert!(
        !page
            .header("link")
            .unwrap_or_default()
            .contains("rel=\"next\""),
        "exactly a page left: no next"
    );
    let first = server
        .http(request("GET", format!("{base}?limit=1"), None))
        .await;
    assert!(first.header("link").unwrap().contains("rel=\"next\""));
}
