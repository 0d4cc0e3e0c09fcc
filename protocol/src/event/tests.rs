use serde_json::json;

use super::*;

fn channels(event: &Event) -> Vec<&str> {
    event.channels.iter().map(ChannelName::as_str).collect()
}

#[test]
fn the_defaults_are_valid_and_route_as_documented() {
    let catalog = Catalog::default();
    catalog.validate().unwrap();
    let routed = |event: Value| channels(&catalog.check(&event, 65536).unwrap()).join(" ");
    assert_eq!(
        routed(json!({"id": "e1", "type": "call.ringing",
            "data": {"call_id": "c1", "creator_id": "cr", "fan_id": 7, "call_type": "video"}})),
        "call:c1 user:cr user:7"
    );
    assert_eq!(
        routed(json!({"id": "e1", "type": "session.ended",
            "data": {"session_id": "s", "creator_id": "cr", "fan_id": "f"}})),
        "session:s user:cr user:f"
    );
    assert_eq!(
        routed(json!({"id": "e1", "type": "stream.started",
            "data": {"stream_id": "s", "creator_id": "cr"}})),
        "stream:s user:cr"
    );
    assert_eq!(
        routed(json!({"id": "e1", "type": "stream.viewers",
            "data": {"stream_id": "s", "creator_id": "cr", "viewers": 3}})),
        "stream:s"
    );
    assert_eq!(
        routed(json!({"id": "e1", "type": "tokens.credited",
            "data": {"user_id": "u", "tokens": 50, "balance": 120}})),
        "user:u"
    );
}

#[test]
fn errors_name_the_field() {
    let catalog = Catalog::default();
    let error = |event: Value| catalog.check(&event, 65536).unwrap_err();
    let call = |data: Value| json!({"id": "e1", "type": "call.ringing", "data": data});
    let wrong = error(call(
        json!({"call_id": "c", "creator_id": "a", "fan_id": "b", "call_type": "fax"}),
    ));
    assert_eq!(wrong.code, 40003);
    assert!(
        wrong
            .message
            .contains(r#"data.call_type must be "voice" or "video""#),
        "{}",
        wrong.message
    );
    let missing = error(call(
        json!({"call_id": "c", "creator_id": "a", "call_type": "voice"}),
    ));
    assert!(
        missing.message.contains("data.fan_id is missing"),
        "{}",
        missing.message
    );
    let unknown = error(json!({"id": "e1", "type": "call.teleported", "data": {}}));
    assert_eq!(unknown.code, 40000);
    assert!(unknown.message.contains("call.teleported"));
    let mistyped = error(json!({"id": "e1", "type": "payment.failed",
        "data": {"user_id": "u", "amount": "12", "currency": "usd"}}));
    assert!(mistyped.message.contains("data.amount must be a number"));
    let no_id = error(json!({"type": "payment.failed", "data": {}}));
    assert!(no_id.message.contains("id is missing"));
    let big = catalog
        .check(
            &json!({"id": "e1", "type": "stream.viewers",
                "data": {"stream_id": "s", "creator_id": "c", "pad": "x".repeat(100)}}),
            64,
        )
        .unwrap_err();
    assert_eq!(big.code, 40009);
}

#[test]
fn configured_types_are_checked() {
    let own: EventType = serde_json::from_value(json!({
        "name": "order.shipped",
        "required": {"order_id": "id", "carrier": ["ups", "dhl"]},
        "channels": ["order:{order_id}", "carrier:{carrier}"]
    }))
    .unwrap();
    let catalog = Catalog::default().with(vec![own.clone()]);
    catalog.validate().unwrap();
    let event = catalog
        .check(
            &json!({"id": "o", "type": "order.shipped", "data": {"order_id": 5, "carrier": "dhl"}}),
            65536,
        )
        .unwrap();
    assert_eq!(channels(&event), ["order:5", "carrier:dhl"]);

    let mut bad = own.clone();
    bad.channels = vec!["order:{nope}".into()];
    assert!(Catalog::default()
        .with(vec![bad])
        .validate()
        .unwrap_err()
        .contains("{nope}"));
    let mut bad = own;
    bad.required
        .insert("when".into(), FieldKind::Kind("date".into()));
    assert!(Catalog::default()
        .with(vec![bad])
        .validate()
        .unwrap_err()
        .contains("date"));
}

#[test]
fn an_event_may_ask_to_be_ephemeral() {
    let catalog = Catalog::default();
    let viewers = |ephemeral: Value| {
        let mut event = json!({"id": "e1", "type": "stream.viewers",
            "data": {"stream_id": "s", "creator_id": "c", "viewers": 3}});
        if !ephemeral.is_null() {
            event["ephemeral"] = ephemeral;
        }
        catalog.check(&event, 65536)
    };
    assert!(
        !viewers(Value::Null).unwrap().ephemeral,
        "stored by default"
    );
    assert!(viewers(json!(true)).unwrap().ephemeral);
    assert!(!viewers(json!(false)).unwrap().ephemeral);
    let wrong = viewers(json!("yes")).unwrap_err();
    assert_eq!(wrong.code, 40003);
    assert!(
        wrong.message.contains("ephemeral must be a boolean"),
        "{}",
        wrong.message
    );
}

#[test]
fn a_type_may_push_on_some_of_its_channels() {
    let ringing: EventType = serde_json::from_value(json!({
        "name": "call.ringing",
        "required": {"call_id": "id", "creator_id": "id", "fan_id": "id", "call_type": ["voice", "video"]},
        "optional": {"fan_name": "string"},
        "channels": ["call:{call_id}", "user:{creator_id}", "user:{fan_id}"],
        "push": {"channels": ["user:{creator_id}"], "title": "Incoming {call_type} call", "body": "{fan_name} is calling"}
    }))
    .unwrap();
    let catalog = Catalog::default().with(vec![ringing.clone()]);
    catalog.validate().unwrap();
    let event = catalog
        .check(
            &json!({"id": "r1", "type": "call.ringing", "data": {"call_id": "c", "creator_id": "ann",
                "fan_id": "bob", "call_type": "video", "fan_name": "Bob"}}),
            65536,
        )
        .unwrap();
    let (payload, on) = event.push.expect("a push");
    assert_eq!(
        on.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        ["user:ann"]
    );
    assert_eq!(
        payload["notification"],
        json!({"title": "Incoming video call", "body": "Bob is calling"})
    );
    assert_eq!(payload["data"]["type"], "call.ringing");
    assert_eq!(payload["data"]["eventId"], "r1");
    assert_eq!(payload["data"]["call_id"], "c");
    assert!(Catalog::default().check(
        &json!({"id": "r2", "type": "call.ringing", "data": {"call_id": "c", "creator_id": "ann", "fan_id": "bob", "call_type": "video"}}),
        65536,
    ).unwrap().push.is_none(), "the built-in type does not push");

    let refused = |change: &dyn Fn(&mut EventPush)| {
        let mut bad = ringing.clone();
        change(bad.push.as_mut().unwrap());
        Catalog::default().with(vec![bad]).validate().unwrap_err()
    };
    assert!(
        refused(&|p| p.channels = vec!["user:{nobody}".into()]).contains("not one of its channels")
    );
    assert!(refused(&|p| p.title = "Hi {nope}".into()).contains("{nope}"));
    assert!(refused(&|p| p.channels.clear()).contains("push needs channels"));
}
