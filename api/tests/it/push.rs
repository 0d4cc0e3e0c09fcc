//! Ably's push admin API over REST: registrations (CRUD, paging, device credentials and their
//! refusals), channel subscriptions by device and by clientId, the capability refusals, and
//! `extras.push` reaching `ablyChannel` recipients once per device, a failed device no more.

use gateway::ApiKey;
use protocol::Capability;
use serde_json::{json, Value};

use crate::support::{
    assert_rest_error, config, relative_link, Request, Server, FULL_KEY, LIMITED_KEY, MESSAGE,
};

/// push-subscribe on `push:*`, no push-admin.
const SUBSCRIBE_KEY: &str = "app1.sub:subsecret";

/// push-admin on `push:team:*` only.
const TEAM_ADMIN_KEY: &str = "app1.team:teamsecret";

/// A server whose `push` namespace allows push subscriptions, with a push-subscribe key.
async fn server() -> Server {
    let mut config = config();
    config.keys.push(
        ApiKey::parse(
            SUBSCRIBE_KEY,
            Capability::parse(
                r#"{"push:*":["push-subscribe","subscribe","publish"],"inbox*":["subscribe"]}"#,
            )
            .unwrap(),
        )
        .unwrap(),
    );
    config.keys.push(
        ApiKey::parse(
            TEAM_ADMIN_KEY,
            Capability::parse(r#"{"push:team:*":["push-admin"]}"#).unwrap(),
        )
        .unwrap(),
    );
    config.hub.namespace_rules.push((
        "push".into(),
        gateway::config::ChannelRules {
            retention: config.hub.retention,
            push_enabled: true,
            ..Default::default()
        },
    ));
    Server::with_config(config).await
}

/// A registration whose notifications are published on `inbox` (Ably's test transport).
fn device(id: &str, client_id: Option<&str>, inbox: &str) -> Value {
    let mut device = json!({
        "id": id,
        "platform": "browser",
        "formFactor": "desktop",
        "deviceSecret": format!("secret-{id}"),
        "push": {"recipient": {"transportType": "ablyChannel", "channel": inbox, "ablyKey": FULL_KEY}},
    });
    if let Some(client_id) = client_id {
        device["clientId"] = json!(client_id);
    }
    device
}

fn send<'a>(method: &'a str, path: &'a str, body: Option<&Value>) -> Request<'a> {
    let request = Request::new(method, path);
    match body {
        Some(body) => request.with_body("application/json", body.to_string().into_bytes()),
        None => request,
    }
}

/// Registers `device` with the full key; returns its identity token.
async fn register(server: &Server, device: &Value) -> String {
    let registered = server.post_json("/push/deviceRegistrations", device).await;
    assert_eq!(registered.status, 201, "{registered:?}");
    let body = registered.json();
    body["deviceIdentityToken"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no deviceIdentityToken: {body}"))
        .to_owned()
}

#[tokio::test]
async fn a_registration_is_made_read_listed_in_pages_updated_and_removed() {
    let server = server().await;
    let registered = server
        .post_json(
            "/push/deviceRegistrations",
            &device("d1", Some("ann"), "inbox"),
        )
        .await;
    assert_eq!(registered.status, 201, "{registered:?}");
    let body = registered.json();
    assert_eq!(body["id"], "d1");
    assert_eq!(body["clientId"], "ann");
    assert_eq!(body["push"]["state"], "ACTIVE");
    assert!(body["deviceIdentityToken"]["token"].is_string(), "{body}");

    let got = server.get("/push/deviceRegistrations/d1").await;
    assert_eq!(got.status, 200);
    let got = got.json();
    assert_eq!(got["push"]["recipient"]["channel"], "inbox");
    assert_eq!(got["deviceSecret"], "secret-d1");
    assert!(
        got.get("deviceIdentityToken").is_none(),
        "the token is shown once: {got}"
    );

    for id in ["d2", "d3", "d4"] {
        let saved = server
            .http(
                send(
                    "PUT",
                    &format!("/push/deviceRegistrations/{id}"),
                    Some(&device(id, Some("bob"), "inbox")),
                )
                .basic(FULL_KEY),
            )
            .await;
        assert_eq!(saved.status, 200, "{saved:?}");
    }
    // Paged two at a time, by id, with relative Link headers.
    let first = server.get("/push/deviceRegistrations?limit=2").await;
    assert_eq!(first.status, 200);
    let ids = |page: &Value| -> Vec<String> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first.json()), ["d1", "d2"]);
    let next = relative_link(&first, "next").expect("a next link");
    let second = server.get(next.replacen("./", "/push/", 1)).await;
    assert_eq!(ids(&second.json()), ["d3", "d4"]);
    assert!(relative_link(&second, "next").is_none(), "{second:?}");
    let bobs = server.get("/push/deviceRegistrations?clientId=bob").await;
    assert_eq!(ids(&bobs.json()), ["d2", "d3", "d4"]);

    let patched = server
        .http(
            send(
                "PATCH",
                "/push/deviceRegistrations/d1",
                Some(&json!({"metadata": {"os": "linux"}})),
            )
            .basic(FULL_KEY),
        )
        .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.json()["metadata"]["os"], "linux");

    let removed = server
        .http(send("DELETE", "/push/deviceRegistrations?clientId=bob", None).basic(FULL_KEY))
        .await;
    assert_eq!(removed.status, 204, "{removed:?}");
    let removed = server
        .http(send("DELETE", "/push/deviceRegistrations/d1", None).basic(FULL_KEY))
        .await;
    assert_eq!(removed.status, 204);
    assert_rest_error(
        &server.get("/push/deviceRegistrations/d1").await,
        40400,
        404,
    );
    assert_eq!(
        server.get("/push/deviceRegistrations").await.json(),
        json!([])
    );
}

#[tokio::test]
async fn bad_registrations_are_refused_with_40000() {
    let server = server().await;
    for (field, value) in [
        ("platform", json!("not_a_real_platform")),
        ("formFactor", json!("toaster")),
        ("push", json!({"recipient": {"channel": "x"}})),
    ] {
        let mut body = device("bad", None, "inbox");
        body[field] = value;
        let refused = server.post_json("/push/deviceRegistrations", &body).await;
        assert_rest_error(&refused, 40000, 400);
    }
    let refused = server
        .http(
            send(
                "PUT",
                "/push/deviceRegistrations/one",
                Some(&device("other", None, "inbox")),
            )
            .basic(FULL_KEY),
        )
        .await;
    assert_rest_error(&refused, 40000, 400);
}

#[tokio::test]
async fn a_device_acts_on_its_own_registration_with_its_token_or_secret_and_on_no_other() {
    let server = server().await;
    let token = register(&server, &device("mine", None, "inbox")).await;
    register(&server, &device("theirs", None, "inbox")).await;

    // Its identity token, as X-Ably-DeviceToken or as the Bearer credential ably-js sends.
    let read = server
        .http(
            Request::get("/push/deviceRegistrations/mine")
                .header("x-ably-devicetoken", token.clone()),
        )
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    let bearer = format!("Bearer {}", crate::support::b64(token.as_bytes()));
    let patched = server
        .http(
            send("PATCH", "/push/deviceRegistrations/mine", Some(&json!({"push": {"recipient": {"transportType": "ablyChannel", "channel": "inbox2", "ablyKey": FULL_KEY}}})))
                .header("authorization", bearer.clone()),
        )
        .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.json()["push"]["recipient"]["channel"], "inbox2");
    // Its secret, beside a key that has no push rights.
    let read = server
        .http(
            Request::get("/push/deviceRegistrations/mine")
                .basic(LIMITED_KEY)
                .header("x-ably-devicesecret", "secret-mine"),
        )
        .await;
    assert_eq!(read.status, 200, "{read:?}");

    // Nor may it take another clientId, and with it that clientId's notifications.
    let refused = server
        .http(
            send(
                "PATCH",
                "/push/deviceRegistrations/mine",
                Some(&json!({"clientId": "ann"})),
            )
            .header("x-ably-devicetoken", token.clone()),
        )
        .await;
    assert_rest_error(&refused, 40160, 401);

    // Not another device's, not with a wrong token, not without credentials.
    let refused = server
        .http(
            Request::get("/push/deviceRegistrations/theirs")
                .header("x-ably-devicetoken", token.clone()),
        )
        .await;
    assert_rest_error(&refused, 40160, 401);
    let refused = server
        .http(
            send("DELETE", "/push/deviceRegistrations/theirs", None)
                .header("authorization", bearer),
        )
        .await;
    assert_rest_error(&refused, 40160, 401);
    // Its last character changed (to another one: a random token may end in "x").
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    let refused = server
        .http(Request::get("/push/deviceRegistrations/mine").header("x-ably-devicetoken", forged))
        .await;
    assert_rest_error(&refused, 40160, 401);
    let refused = server
        .http(
            Request::get("/push/deviceRegistrations/mine")
                .basic(LIMITED_KEY)
                .header("x-ably-devicesecret", "secret-theirs"),
        )
        .await;
    assert_rest_error(&refused, 40160, 401);
    let refused = server
        .http(Request::get("/push/deviceRegistrations/mine"))
        .await;
    assert_rest_error(&refused, 40101, 401);
    // Listing everyone is an admin's; a device lists only itself.
    let refused = server
        .http(Request::get("/push/deviceRegistrations").header("x-ably-devicetoken", token.clone()))
        .await;
    assert_rest_error(&refused, 40160, 401);
    let own = server
        .http(
            Request::get("/push/deviceRegistrations?deviceId=mine")
                .header("x-ably-devicetoken", token),
        )
        .await;
    assert_eq!(own.status, 200, "{own:?}");
    assert_eq!(own.json().as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn push_rights_come_from_the_capability() {
    let server = server().await;
    // No push rights at all: no registering, subscribing, listing or publishing.
    let refused = server
        .post_json_as(
            LIMITED_KEY,
            "/push/deviceRegistrations",
            &device("x", None, "inbox"),
        )
        .await;
    assert_rest_error(&refused, 40160, 401);
    for path in [
        "/push/deviceRegistrations",
        "/push/channelSubscriptions?channel=push:a",
        "/push/channels",
    ] {
        let refused = server.http(Request::get(path).basic(SUBSCRIBE_KEY)).await;
        assert_rest_error(&refused, 40160, 401);
    }
    let refused = server
        .post_json_as(
            SUBSCRIBE_KEY,
            "/push/publish",
            &json!({"recipient": {"clientId": "ann"}, "data": {"a": 1}}),
        )
        .await;
    assert_rest_error(&refused, 40160, 401);

    // push-subscribe: its own clientId, on channels its capability covers, nobody else's.
    let as_ann = |request: Request<'static>| {
        request
            .basic(SUBSCRIBE_KEY)
            .header("x-ably-clientid", crate::support::b64(b"ann"))
    };
    let subscribed = server
        .http(as_ann(send(
            "POST",
            "/push/channelSubscriptions",
            Some(&json!({"channel": "push:a", "clientId": "ann"})),
        )))
        .await;
    assert_eq!(subscribed.status, 201, "{subscribed:?}");
    assert_eq!(
        subscribed.json(),
        json!({"channel": "push:a", "clientId": "ann"})
    );
    let refused = server
        .http(as_ann(send(
            "POST",
            "/push/channelSubscriptions",
            Some(&json!({"channel": "push:a", "clientId": "bob"})),
        )))
        .await;
    assert_rest_error(&refused, 40160, 401);
    let listed = server
        .http(as_ann(Request::get(
            "/push/channelSubscriptions?clientId=ann",
        )))
        .await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(
        listed.json(),
        json!([{"channel": "push:a", "clientId": "ann"}])
    );
    let removed = server
        .http(as_ann(send(
            "DELETE",
            "/push/channelSubscriptions?clientId=ann&channel=push:a",
            None,
        )))
        .await;
    assert_eq!(removed.status, 204, "{removed:?}");

    // A channel outside a push-enabled namespace takes no subscriptions, whoever asks.
    let refused = server
        .post_json(
            "/push/channelSubscriptions",
            &json!({"channel": "chat:a", "clientId": "ann"}),
        )
        .await;
    assert_rest_error(&refused, 40000, 400);
    // Exactly one of deviceId and clientId; a device must be registered.
    let refused = server
        .post_json(
            "/push/channelSubscriptions",
            &json!({"channel": "push:a", "clientId": "ann", "deviceId": "d"}),
        )
        .await;
    assert_rest_error(&refused, 40000, 400);
    let refused = server
        .post_json(
            "/push/channelSubscriptions",
            &json!({"channel": "push:a", "deviceId": "nobody"}),
        )
        .await;
    assert_rest_error(&refused, 40400, 404);
}

#[tokio::test]
async fn subscriptions_by_device_and_by_client_are_listed_and_removed_with_their_device() {
    let server = server().await;
    let token = register(&server, &device("d1", Some("ann"), "inbox")).await;
    // The device subscribes itself with its token; an admin subscribes a clientId.
    let subscribed = server
        .http(
            send(
                "POST",
                "/push/channelSubscriptions",
                Some(&json!({"channel": "push:a", "deviceId": "d1"})),
            )
            .basic(LIMITED_KEY)
            .header("x-ably-devicetoken", token.clone()),
        )
        .await;
    assert_rest_error(&subscribed, 40160, 401);
    let subscribed = server
        .http(
            send(
                "POST",
                "/push/channelSubscriptions",
                Some(&json!({"channel": "push:a", "deviceId": "d1"})),
            )
            .header("x-ably-devicetoken", token.clone()),
        )
        .await;
    assert_eq!(subscribed.status, 201, "{subscribed:?}");
    for channel in ["push:a", "push:b"] {
        let subscribed = server
            .post_json(
                "/push/channelSubscriptions",
                &json!({"channel": channel, "clientId": "ann"}),
            )
            .await;
        assert_eq!(subscribed.status, 201, "{subscribed:?}");
    }
    let on_a = server
        .get("/push/channelSubscriptions?channel=push:a")
        .await
        .json();
    assert_eq!(
        on_a,
        json!([{"channel": "push:a", "deviceId": "d1"}, {"channel": "push:a", "clientId": "ann"}])
    );
    let either = server
        .get(
            "/push/channelSubscriptions?channel=push:a&deviceId=d1&clientId=ann&concatFilters=true",
        )
        .await
        .json();
    assert_eq!(either.as_array().map(Vec::len), Some(2), "{either}");
    let channels = server.get("/push/channels").await.json();
    assert_eq!(channels, json!(["push:a", "push:b"]));
    let own = server
        .http(
            Request::get("/push/channelSubscriptions?deviceId=d1")
                .header("x-ably-devicetoken", token),
        )
        .await;
    assert_eq!(own.json(), json!([{"channel": "push:a", "deviceId": "d1"}]));

    // Removing the device removes its subscriptions, not its clientId's.
    let removed = server
        .http(send("DELETE", "/push/deviceRegistrations/d1", None).basic(FULL_KEY))
        .await;
    assert_eq!(removed.status, 204);
    let on_a = server
        .get("/push/channelSubscriptions?channel=push:a")
        .await
        .json();
    assert_eq!(on_a, json!([{"channel": "push:a", "clientId": "ann"}]));
    let removed = server
        .http(send("DELETE", "/push/channelSubscriptions?clientId=ann", None).basic(FULL_KEY))
        .await;
    assert_eq!(removed.status, 204);
    assert_eq!(server.get("/push/channels").await.json(), json!([]));
}

#[tokio::test]
async fn extras_push_reaches_each_subscribed_device_once_and_a_failed_device_no_more() {
    let server = server().await;
    let mut inbox = server
        .attached(&crate::support::full_key("json"), "inbox")
        .await;
    add_marker(&server).await;
    // d1 subscribed directly and through its clientId: one notification, not two.
    register(&server, &device("d1", Some("ann"), "inbox")).await;
    register(&server, &device("d2", None, "inbox")).await;
    for subscription in [
        json!({"channel": "push:news", "deviceId": "d1"}),
        json!({"channel": "push:news", "clientId": "ann"}),
        json!({"channel": "push:news", "deviceId": "d2"}),
    ] {
        let subscribed = server
            .post_json("/push/channelSubscriptions", &subscription)
            .await;
        assert_eq!(subscribed.status, 201, "{subscribed:?}");
    }
    let payload = json!({"notification": {"title": "Live", "body": "now"}, "data": {"room": "42"}});
    let published = server
        .post_json(
            "/channels/push:news/messages",
            &json!({"name": "live", "data": "x", "extras": {"push": payload}}),
        )
        .await;
    assert_eq!(published.status, 201, "{published:?}");
    assert_eq!(
        notifications_before_marker(&server, &mut inbox, "m1").await,
        vec![payload.clone(), payload.clone()]
    );
    // The same from a realtime publish.
    let query = format!("{}&echo=false", crate::support::full_key("json"));
    let mut publisher = server.attached(&query, "push:news").await;
    let message = json!([{"name": "live", "extras": {"push": payload}}]);
    publisher.publish_acked("push:news", 0, message).await;
    assert_eq!(
        notifications_before_marker(&server, &mut inbox, "m1b").await,
        vec![payload.clone(), payload.clone()]
    );

    // d2's push service said it is gone: it is marked failed and skipped from then on.
    let reason = protocol::ErrorCode::BadRequest.info("unregistered");
    server.gateway.push().gone("", "d2", reason).await.unwrap();
    let d2 = server.get("/push/deviceRegistrations/d2").await.json();
    assert_eq!(d2["push"]["state"], "FAILED");
    assert_eq!(d2["push"]["errorReason"]["message"], "unregistered");
    let published = server
        .post_json(
            "/channels/push:news/messages",
            &json!({"data": "y", "extras": {"push": payload}}),
        )
        .await;
    assert_eq!(published.status, 201);
    assert_eq!(
        notifications_before_marker(&server, &mut inbox, "m2").await,
        vec![payload.clone()]
    );

    // Direct publish: to a device, to a clientId's devices, to a raw recipient.
    for recipient in [
        json!({"deviceId": "d1"}),
        json!({"clientId": "ann"}),
        json!({"transportType": "ablyChannel", "channel": "inbox", "ablyKey": FULL_KEY}),
    ] {
        let body = json!({"recipient": recipient, "data": {"n": 1}});
        let sent = server.post_json("/push/publish", &body).await;
        assert_eq!(sent.status, 204, "{sent:?}");
        assert_eq!(
            notifications_before_marker(&server, &mut inbox, "m3").await,
            vec![json!({"data": {"n": 1}})]
        );
    }
    let refused = server
        .post_json(
            "/push/publish",
            &json!({"recipient": {"deviceId": "nobody"}, "data": {}}),
        )
        .await;
    assert_rest_error(&refused, 40400, 404);
    let refused = server
        .post_json("/push/publish", &json!({"data": {"n": 1}}))
        .await;
    assert_rest_error(&refused, 40000, 400);
}

/// A device whose only subscription is `push:marker`, notified on `inbox` like the others.
async fn add_marker(server: &Server) {
    register(server, &device("zz-marker", None, "inbox")).await;
    let subscribed = server
        .post_json(
            "/push/channelSubscriptions",
            &json!({"channel": "push:marker", "deviceId": "zz-marker"}),
        )
        .await;
    assert_eq!(subscribed.status, 201, "{subscribed:?}");
}

/// The `__ably_push__` payloads `inbox` receives before a marker notification sent now: the
/// dispatcher and the ablyChannel transport each keep order, so every notification queued
/// before it arrives before it, and none is waited for on a clock.
async fn notifications_before_marker(
    server: &Server,
    inbox: &mut crate::support::Client,
    marker: &str,
) -> Vec<Value> {
    let published = server
        .post_json(
            "/channels/push:marker/messages",
            &json!({"extras": {"push": {"data": {"marker": marker}}}}),
        )
        .await;
    assert_eq!(published.status, 201, "{published:?}");
    let mut payloads = Vec::new();
    loop {
        let frame = inbox.expect(MESSAGE).await;
        for message in frame["messages"].as_array().unwrap() {
            assert_eq!(message["name"], "__ably_push__", "{frame}");
            let payload = parse(message);
            if payload["data"]["marker"] == marker {
                return payloads;
            }
            payloads.push(payload);
        }
    }
}

fn parse(message: &Value) -> Value {
    serde_json::from_str(message["data"].as_str().expect("data is a JSON string")).unwrap()
}

#[tokio::test]
async fn an_admin_of_some_channels_sees_and_changes_only_theirs() {
    let server = server().await;
    for channel in ["push:team:a", "push:other"] {
        let subscribed = server
            .post_json(
                "/push/channelSubscriptions",
                &json!({"channel": channel, "clientId": "ann"}),
            )
            .await;
        assert_eq!(subscribed.status, 201, "{subscribed:?}");
    }
    let as_team = |request: Request<'static>| request.basic(TEAM_ADMIN_KEY);
    let listed = server
        .http(as_team(Request::get(
            "/push/channelSubscriptions?clientId=ann",
        )))
        .await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(
        listed.json(),
        json!([{"channel": "push:team:a", "clientId": "ann"}])
    );
    let channels = server.http(as_team(Request::get("/push/channels"))).await;
    assert_eq!(channels.json(), json!(["push:team:a"]));
    let refused = server
        .http(as_team(send(
            "POST",
            "/push/channelSubscriptions",
            Some(&json!({"channel": "push:other", "clientId": "bob"})),
        )))
        .await;
    assert_rest_error(&refused, 40160, 401);
    let refused = server
        .http(as_team(Request::get(
            "/push/channelSubscriptions?channel=push:other",
        )))
        .await;
    assert_rest_error(&refused, 40160, 401);
    // Removing "all of ann's" removes what it may: push:other stays.
    let removed = server
        .http(as_team(send(
            "DELETE",
            "/push/channelSubscriptions?clientId=ann",
            None,
        )))
        .await;
    assert_eq!(removed.status, 204);
    let left = server
        .get("/push/channelSubscriptions?clientId=ann")
        .await
        .json();
    assert_eq!(left, json!([{"channel": "push:other", "clientId": "ann"}]));
}

#[tokio::test]
async fn a_sandbox_app_s_push_enabled_namespace_takes_subscriptions_and_its_devices_are_its_own() {
    let mut config = config();
    config.sandbox = true;
    let server = Server::with_config(config).await;
    let body = json!({"keys": [{}], "namespaces": [{"id": "pushenabled", "pushEnabled": true}]});
    let created = server.http(Request::post_json("/apps", &body)).await;
    assert!(created.status < 300, "{created:?}");
    let key = created.json()["keys"][0]["keyStr"]
        .as_str()
        .unwrap()
        .to_owned();

    let registered = server
        .post_json_as(
            &key,
            "/push/deviceRegistrations",
            &device("d1", None, "inbox"),
        )
        .await;
    assert_eq!(registered.status, 201, "{registered:?}");
    let subscribed = server
        .post_json_as(
            &key,
            "/push/channelSubscriptions",
            &json!({"channel": "pushenabled:x", "deviceId": "d1"}),
        )
        .await;
    assert_eq!(subscribed.status, 201, "{subscribed:?}");
    let refused = server
        .post_json_as(
            &key,
            "/push/channelSubscriptions",
            &json!({"channel": "other:x", "deviceId": "d1"}),
        )
        .await;
    assert_rest_error(&refused, 40000, 400);
    // The server's own key sees another space: not the app's device.
    assert_rest_error(
        &server.get("/push/deviceRegistrations/d1").await,
        40400,
        404,
    );
    let own = server
        .http(Request::get("/push/deviceRegistrations/d1").basic(&key))
        .await;
    assert_eq!(own.status, 200, "{own:?}");
}
