use bytes::Bytes;
use protocol::message::{message_action, Data, MessageVersion};
use protocol::Message;

use super::*;

fn original() -> Message {
    Message {
        id: Some("orig:0".into()),
        name: Some("original-message".into()),
        data: Some(Data::String("Hello".into())),
        client_id: Some("alice".into()),
        connection_id: Some("conn".into()),
        timestamp: Some(1_000),
        extras: Some(serde_json::json!({"headers": {"k": "v"}})),
        action: Some(message_action::CREATE),
        serial: Some("000000000001-0000000001".into()),
        ..Message::default()
    }
}

fn op(action: u8) -> Message {
    Message {
        id: Some("op:0".into()),
        action: Some(action),
        serial: Some("000000000001-0000000001".into()),
        client_id: Some("mallory".into()),
        timestamp: Some(2_000),
        version: Some(MessageVersion {
            serial: Some("000000000001-0000000002".into()),
            timestamp: Some(2_000),
            client_id: Some("moderator".into()),
            description: Some("why".into()),
            metadata: None,
        }),
        ..Message::default()
    }
}

#[test]
fn an_update_replaces_what_it_gives_and_keeps_the_rest_and_the_identity() {
    let update = Message {
        data: Some(Data::String("{}".into())),
        encoding: Some("json".into()),
        ..op(message_action::UPDATE)
    };
    let applied = apply(&original(), &update).unwrap();
    let latest = &applied.latest;
    assert_eq!(latest.action, Some(message_action::UPDATE));
    assert_eq!(latest.data, Some(Data::String("{}".into())));
    assert_eq!(
        latest.encoding.as_deref(),
        Some("json"),
        "the encoding goes with the data"
    );
    assert_eq!(
        latest.name.as_deref(),
        Some("original-message"),
        "an omitted name is kept"
    );
    assert_eq!(latest.extras, original().extras, "omitted extras are kept");
    assert_eq!(
        latest.client_id.as_deref(),
        Some("alice"),
        "the original's identity"
    );
    assert_eq!(latest.id.as_deref(), Some("orig:0"));
    assert_eq!(latest.timestamp, Some(1_000));
    assert_eq!(latest.serial, original().serial);
    assert_eq!(latest.version, update.version, "the operation's version");
    assert_eq!(applied.delivered, applied.latest);
}

#[test]
fn data_without_an_encoding_clears_the_old_encoding() {
    let stored = Message {
        data: Some(Data::String("{\"a\":1}".into())),
        encoding: Some("json".into()),
        ..original()
    };
    let update = Message {
        data: Some(Data::String("plain".into())),
        ..op(message_action::UPDATE)
    };
    let latest = apply(&stored, &update).unwrap().latest;
    assert_eq!(latest.encoding, None);
}

#[test]
fn a_delete_keeps_the_data_unless_it_sets_it() {
    let applied = apply(&original(), &op(message_action::DELETE)).unwrap();
    assert_eq!(applied.latest.action, Some(message_action::DELETE));
    assert_eq!(applied.latest.data, Some(Data::String("Hello".into())));
}

#[test]
fn an_append_rolls_up_into_an_update_and_goes_out_as_the_fragment() {
    let append = Message {
        data: Some(Data::String(" World".into())),
        ..op(message_action::APPEND)
    };
    let applied = apply(&original(), &append).unwrap();
    assert_eq!(applied.latest.action, Some(message_action::UPDATE));
    assert_eq!(
        applied.latest.data,
        Some(Data::String("Hello World".into()))
    );
    assert_eq!(applied.latest.version, append.version);
    assert_eq!(applied.delivered.action, Some(message_action::APPEND));
    assert_eq!(applied.delivered.data, Some(Data::String(" World".into())));
    assert_eq!(applied.delivered.name.as_deref(), Some("original-message"));
    assert_eq!(applied.delivered.client_id.as_deref(), Some("alice"));
}

#[test]
fn binary_appends_to_binary() {
    let stored = Message {
        data: Some(Data::Binary(Bytes::from_static(b"ab"))),
        ..original()
    };
    let append = Message {
        data: Some(Data::Binary(Bytes::from_static(b"cd"))),
        ..op(message_action::APPEND)
    };
    let latest = apply(&stored, &append).unwrap().latest;
    assert_eq!(latest.data, Some(Data::Binary(Bytes::from_static(b"abcd"))));
}

#[test]
fn appends_that_cannot_join_are_refused() {
    let text = |data: &str| Message {
        data: Some(Data::String(data.into())),
        ..op(message_action::APPEND)
    };
    let deleted = Message {
        action: Some(message_action::DELETE),
        ..original()
    };
    assert_eq!(
        apply(&deleted, &text("x")).err(),
        Some(Refusal::AppendToDeleted)
    );
    let json = Message {
        encoding: Some("json".into()),
        ..original()
    };
    assert_eq!(apply(&json, &text("x")).err(), Some(Refusal::NotAppendable));
    let binary = Message {
        data: Some(Data::Binary(Bytes::from_static(b"x"))),
        ..op(message_action::APPEND)
    };
    assert_eq!(
        apply(&original(), &binary).err(),
        Some(Refusal::NotAppendable)
    );
    assert_eq!(
        apply(&original(), &op(message_action::APPEND)).err(),
        Some(Refusal::NotAppendable),
        "an append with no data"
    );
}

#[test]
fn versions_keep_creates_updates_and_deletes_but_not_appends() {
    let create = std::sync::Arc::new(original());
    let mut versions = Versions::default();
    let append = Message {
        data: Some(Data::String("!".into())),
        ..op(message_action::APPEND)
    };
    assert!(versions.apply(&append, |_| Some(create.clone())).is_some());
    assert!(versions
        .apply(&op(message_action::UPDATE), |_| None)
        .is_some());
    let serial = create.serial.as_deref().unwrap();
    let kept: Vec<Option<u8>> = versions
        .versions(serial)
        .unwrap()
        .iter()
        .map(|v| v.action)
        .collect();
    assert_eq!(kept, [Some(0), Some(1)]);
    assert_eq!(
        versions.latest(serial).unwrap().data,
        Some(Data::String("Hello!".into())),
        "the update kept the appended data"
    );
    versions.evicted(&create);
    assert!(versions.latest(serial).is_none());
}

#[test]
fn an_operation_on_a_message_not_held_is_not_applied() {
    let mut versions = Versions::default();
    assert!(versions
        .apply(&op(message_action::UPDATE), |_| None)
        .is_none());
}
