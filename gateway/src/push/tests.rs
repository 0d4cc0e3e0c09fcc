use serde_json::json;

use super::*;

fn registration() -> serde_json::Value {
    json!({
        "id": "d1",
        "platform": "browser",
        "formFactor": "desktop",
        "deviceSecret": "s",
        "push": {"recipient": {"transportType": "web", "targetUrl": "https://x"}},
    })
}

#[test]
fn a_registration_is_checked_as_ably_checks_it() {
    let device = parse_device(&registration(), None).unwrap();
    assert_eq!(device.id, "d1");
    assert_eq!(device.push.state, ACTIVE);
    assert_eq!(device.metadata, json!({}));
    for (field, value) in [
        ("platform", json!("not_a_real_platform")),
        ("formFactor", json!("toaster")),
        ("push", json!({"recipient": {}})),
        ("metadata", json!("x")),
        ("id", json!(7)),
    ] {
        let mut body = registration();
        body[field] = value;
        let error = parse_device(&body, None).unwrap_err();
        assert_eq!((error.code, error.status_code), (40000, 400), "{field}");
    }
    let error = parse_device(&registration(), Some("other")).unwrap_err();
    assert_eq!(error.code, 40000, "the body's id must be the path's");
}

#[test]
fn a_device_token_names_its_app() {
    for scope in ["", "app1"] {
        let token = new_device_token(scope);
        assert!(is_device_token(&token));
        assert_eq!(token_scope(&token).as_deref(), Some(scope));
    }
    assert!(!is_device_token("rt1.abc.def"));
}

#[test]
fn concat_filters_match_either_subscriber() {
    let by_device = Subscription {
        channel: "push:a".into(),
        subscriber: Subscriber::Device("d1".into()),
    };
    let by_client = Subscription {
        channel: "push:a".into(),
        subscriber: Subscriber::Client("c1".into()),
    };
    let mut filter = SubscriptionFilter {
        channel: Some("push:a".into()),
        device_id: Some("d1".into()),
        client_id: Some("c1".into()),
        concat: false,
    };
    assert!(!filter.matches(&by_device) && !filter.matches(&by_client));
    filter.concat = true;
    assert!(filter.matches(&by_device) && filter.matches(&by_client));
    filter.channel = Some("push:b".into());
    assert!(!filter.matches(&by_device));
}
