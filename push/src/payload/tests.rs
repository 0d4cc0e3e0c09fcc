use serde_json::json;

use super::*;

/// Ably's documented example: generic fields plus an APNs title and an FCM colour.
fn example() -> Value {
    json!({
        "notification": {"title": "Hello from Ably!", "body": "Example push notification from Ably.",
                         "icon": "/icon.png", "sound": "ding", "collapseKey": "chat"},
        "data": {"foo": "bar", "count": 3},
        "apns": {"aps": {"alert": {"title": "Hello to iOS from Ably!"}}},
        "fcm": {"notification": {"color": "#d3d3d3"}}
    })
}

#[test]
fn fcm_maps_onto_v1_with_the_legacy_override() {
    let body = fcm_body(&example(), "tok");
    assert_eq!(
        body,
        json!({"message": {
            "token": "tok",
            "notification": {"title": "Hello from Ably!", "body": "Example push notification from Ably."},
            "data": {"foo": "bar", "count": "3"},
            "android": {"collapse_key": "chat",
                        "notification": {"icon": "/icon.png", "sound": "ding", "color": "#d3d3d3"}}
        }})
    );
}

#[test]
fn fcm_passes_v1_blocks_through_and_maps_ttl_and_priority() {
    let payload = json!({
        "data": {"k": "v"},
        "fcm": {"time_to_live": 60, "priority": "high", "android": {"direct_boot_ok": true},
                "apns": {"headers": {"apns-priority": "5"}}}
    });
    assert_eq!(
        fcm_body(&payload, "t"),
        json!({"message": {
            "token": "t",
            "data": {"k": "v"},
            "android": {"ttl": "60s", "priority": "high", "direct_boot_ok": true},
            "apns": {"headers": {"apns-priority": "5"}}
        }})
    );
}

#[test]
fn apns_puts_data_at_the_root_and_the_override_over_aps() {
    let request = apns_request(&example());
    assert_eq!(
        request.body,
        json!({
            "foo": "bar", "count": 3,
            "aps": {"alert": {"title": "Hello to iOS from Ably!", "body": "Example push notification from Ably."},
                    "sound": "ding", "thread-id": "chat"}
        })
    );
    assert_eq!(
        request.headers,
        vec![
            ("apns-push-type".to_owned(), "alert".to_owned()),
            ("apns-priority".to_owned(), "10".to_owned())
        ]
    );
}

#[test]
fn apns_background_push_and_given_headers() {
    let payload = json!({
        "data": {"foo": "bar"},
        "apns": {"aps": {"content-available": 1},
                 "apns-headers": {"apns-push-type": "background", "apns-priority": "5",
                                  "apns-collapse-id": "c1", "authorization": "nope"}}
    });
    let request = apns_request(&payload);
    assert_eq!(
        request.body,
        json!({"foo": "bar", "aps": {"content-available": 1}})
    );
    let mut headers = request.headers;
    headers.sort();
    assert_eq!(
        headers,
        vec![
            ("apns-collapse-id".to_owned(), "c1".to_owned()),
            ("apns-priority".to_owned(), "5".to_owned()),
            ("apns-push-type".to_owned(), "background".to_owned()),
        ]
    );
}

#[test]
fn web_body_is_notification_and_data_with_the_override() {
    let payload = json!({
        "notification": {"title": "t", "body": "b"},
        "data": {"x": 1},
        "web": {"notification": {"body": null, "badge": "/b.png"}},
        "apns": {"aps": {}}
    });
    assert_eq!(
        web_body(&payload),
        json!({"notification": {"title": "t", "badge": "/b.png"}, "data": {"x": 1}})
    );
}

#[test]
fn web_topic_only_when_rfc8030_allows_it() {
    let topic =
        |key: &str| web_topic(&json!({"notification": {"collapseKey": key}})).map(str::to_owned);
    assert_eq!(topic("chat-1_a").as_deref(), Some("chat-1_a"));
    assert_eq!(topic("has space"), None);
    assert_eq!(topic(&"x".repeat(33)), None);
}
