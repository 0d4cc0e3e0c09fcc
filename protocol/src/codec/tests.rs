use bytes::Bytes;

use super::*;
use crate::message::{Action, Data, Message, PresenceMessage, ProtocolMessage};

fn publish(data: Data, encoding: Option<&str>) -> ProtocolMessage {
    ProtocolMessage {
        channel: Some("session:1".into()),
        msg_serial: Some(7),
        messages: Some(vec![Message {
            name: Some("update".into()),
            data: Some(data),
            encoding: encoding.map(str::to_owned),
            ..Default::default()
        }]),
        ..ProtocolMessage::new(Action::Message)
    }
}

#[test]
fn round_trips_in_both_formats() {
    let cases = [
        publish(Data::String("hello".into()), None),
        publish(Data::String(r#"{"a":1}"#.into()), Some("json")),
        publish(Data::Other(serde_json::json!({"raw": [1, 2]})), None),
        publish(Data::Other(serde_json::json!(42)), None),
    ];
    for case in cases {
        for format in [Format::Json, Format::Msgpack] {
            let bytes = encode_message(&case, format).unwrap();
            let back: ProtocolMessage = decode(&bytes, format).unwrap();
            assert_eq!(back, case, "{format:?}");
        }
    }
}

/// An edit (version, summary) and an ANNOTATION frame (action 21, binary data) keep every
/// field both ways; JSON carries the annotation's bytes as base64.
#[test]
fn edits_and_annotations_round_trip() {
    use crate::message::{message_action, Annotation, MessageAnnotations, MessageVersion};
    let mut edit = publish(Data::String("fixed".into()), None);
    if let Some(message) = edit.messages.as_mut().and_then(|m| m.first_mut()) {
        message.action = Some(message_action::UPDATE);
        message.serial = Some("01a2-0000000001".into());
        message.version = Some(MessageVersion {
            serial: Some("01a2-0000000002".into()),
            timestamp: Some(1_700_000_000_123),
            client_id: Some("mod".into()),
            description: Some("typo".into()),
            metadata: Some([("reason".to_owned(), "spelling".to_owned())].into()),
        });
        message.annotations = Some(MessageAnnotations {
            summary: [(
                "reaction:distinct.v1".to_owned(),
                serde_json::json!({"👍": {"total": 2, "clientIds": ["a", "b"], "clipped": false}}),
            )]
            .into(),
        });
    }
    let reaction = ProtocolMessage {
        channel: Some("chat:1".into()),
        msg_serial: Some(3),
        annotations: Some(vec![Annotation {
            action: 0,
            annotation_type: Some("reaction:distinct.v1".into()),
            name: Some("👍".into()),
            message_serial: Some("01a2-0000000001".into()),
            data: Some(Data::Binary(Bytes::from_static(&[1, 2]))),
            ..Default::default()
        }]),
        ..ProtocolMessage::new(Action::Annotation)
    };
    for format in [Format::Json, Format::Msgpack] {
        let bytes = encode_message(&edit, format).unwrap();
        assert_eq!(
            decode::<ProtocolMessage>(&bytes, format).unwrap(),
            edit,
            "{format:?}"
        );
    }
    let packed = encode_message(&reaction, Format::Msgpack).unwrap();
    assert_eq!(
        decode::<ProtocolMessage>(&packed, Format::Msgpack).unwrap(),
        reaction
    );
    let text = encode_message(&reaction, Format::Json).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(value["action"], 21);
    let annotation = &value["annotations"][0];
    assert_eq!(annotation["type"], "reaction:distinct.v1");
    assert_eq!(annotation["messageSerial"], "01a2-0000000001");
    assert_eq!(annotation["action"], 0, "always sent: {annotation}");
    assert_eq!(
        (&annotation["data"], &annotation["encoding"]),
        (&serde_json::json!("AQI="), &serde_json::json!("base64"))
    );
    assert_eq!(
        decode::<ProtocolMessage>(&text, Format::Json)
            .unwrap()
            .action(),
        Some(Action::Annotation)
    );
}

#[test]
fn binary_stays_binary_in_msgpack_and_becomes_base64_in_json() {
    let message = publish(Data::Binary(Bytes::from_static(&[0, 159, 255])), None);
    let packed = encode_message(&message, Format::Msgpack).unwrap();
    let back: ProtocolMessage = decode(&packed, Format::Msgpack).unwrap();
    assert_eq!(back, message);

    let text = encode_message(&message, Format::Json).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(value["messages"][0]["data"], "AJ//");
    assert_eq!(value["messages"][0]["encoding"], "base64");

    let encrypted = publish(
        Data::Binary(Bytes::from_static(b"x")),
        Some("utf-8/cipher+aes-128-cbc"),
    );
    let text = encode_message(&encrypted, Format::Json).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(
        value["messages"][0]["encoding"],
        "utf-8/cipher+aes-128-cbc/base64"
    );
}

#[test]
fn decodes_what_the_sdks_send() {
    // ably-js JSON publish, with its client-only `size` field.
    let js = br#"{"action":15,"channel":"test:one","messages":[{"name":"ev","data":"{\"hello\":\"world\"}","action":0,"encoding":"json","size":19}],"msgSerial":0}"#;
    let message: ProtocolMessage = decode(js, Format::Json).unwrap();
    assert_eq!(message.action(), Some(Action::Message));
    assert_eq!(message.msg_serial, Some(0));
    assert_eq!(
        message.messages.as_ref().unwrap()[0].encoding.as_deref(),
        Some("json")
    );

    // ably-python sends nil for absent optional fields.
    let python = rmp_serde::to_vec_named(&serde_json::json!({
        "action": 10, "channel": "chat", "params": null, "channelSerial": null, "flags": null
    }))
    .unwrap();
    let message: ProtocolMessage = decode(&python, Format::Msgpack).unwrap();
    assert_eq!(message.action(), Some(Action::Attach));
    assert_eq!(message.params, None);
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    for (bytes, format) in [
        (&b"{not json"[..], Format::Json),
        (&b"[]"[..], Format::Json),
        (&b"\xc1\xc1"[..], Format::Msgpack),
        (&b""[..], Format::Msgpack),
    ] {
        assert!(decode::<ProtocolMessage>(bytes, format).is_err());
    }
}

#[test]
fn unknown_actions_decode_so_they_can_be_refused() {
    let message: ProtocolMessage = decode(br#"{"action":99}"#, Format::Json).unwrap();
    assert_eq!(message.action(), None);
}

#[test]
fn a_frame_is_sized_without_decoding_its_messages() {
    use super::shape::frame_shape;
    let empties = vec![serde_json::json!({}); 5000];
    let frame =
        serde_json::json!({"action": 15, "channel": "x", "messages": empties, "msgSerial": 9});
    let json = serde_json::to_vec(&frame).unwrap();
    let shape = frame_shape(&json, Format::Json).unwrap();
    assert_eq!(
        (shape.action, shape.msg_serial, shape.messages.0),
        (Some(15), Some(9), 5000)
    );
    let msgpack = rmp_serde::to_vec_named(&frame).unwrap();
    let shape = frame_shape(&msgpack, Format::Msgpack).unwrap();
    assert_eq!(
        (shape.action, shape.msg_serial, shape.messages.0),
        (Some(15), Some(9), 5000)
    );
    // A frame without messages, and one that is not a ProtocolMessage at all.
    let heartbeat = frame_shape(br#"{"action":0}"#, Format::Json).unwrap();
    assert_eq!(heartbeat.messages.0, 0);
    assert!(frame_shape(b"[1,2", Format::Json).is_none());
}

#[test]
fn rest_bodies_are_sized_without_decoding_them() {
    use super::shape::{batch_shape, list_len, BatchShape};
    assert_eq!(list_len(b"[{},{},{}]", Format::Json), Some(3));
    assert_eq!(list_len(br#"{"name":"a"}"#, Format::Json), Some(1));
    let many = rmp_serde::to_vec_named(&vec![serde_json::json!({}); 100_000]).unwrap();
    assert_eq!(list_len(&many, Format::Msgpack), Some(100_000));
    let one = br#"{"channels":["a","b"],"messages":[{},{},{}]}"#;
    assert_eq!(
        batch_shape(one, Format::Json),
        Some(BatchShape {
            most_messages: 3,
            total: 6
        })
    );
    let specs = br#"[{"channels":"a","messages":{"data":1}},{"channels":["a","b","c"],"messages":[{},{}]}]"#;
    assert_eq!(
        batch_shape(specs, Format::Json),
        Some(BatchShape {
            most_messages: 2,
            total: 7
        })
    );
}

#[test]
fn deep_msgpack_nesting_is_an_error_not_a_stack_overflow() {
    // {"action":15,"messages":[{"data":[[[…1…]]]}]}, 1,000 arrays deep: within rmp-serde's own
    // limit, and past what a 2 MiB stack survives when `data` is read into a JSON value.
    let mut frame = rmp_serde::to_vec_named(&serde_json::json!({"action": 15})).unwrap();
    frame[0] += 1;
    frame.push(0xa8);
    frame.extend_from_slice(b"messages");
    frame.extend_from_slice(&[0x91, 0x81, 0xa4]);
    frame.extend_from_slice(b"data");
    frame.extend([0x91; 1000]);
    frame.push(0x01);
    assert!(decode::<ProtocolMessage>(&frame, Format::Msgpack).is_err());
    assert!(decode::<serde_json::Value>(&frame, Format::Msgpack).is_err());

    // 100 deep is fine, as in JSON.
    let nested = (0..100).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]));
    let message = publish(Data::Other(nested), None);
    let packed = encode_message(&message, Format::Msgpack).unwrap();
    assert_eq!(
        decode::<ProtocolMessage>(&packed, Format::Msgpack).unwrap(),
        message
    );
}

#[test]
fn a_frame_spelled_by_position_is_skimmed_as_it_decodes() {
    use super::shape::frame_shape;
    // rmp-serde's default encoding: the fields in declaration order, in an array (absent
    // ones left out, so every field is set here to keep the others in place).
    let frame = ProtocolMessage {
        action: 15,
        flags: Some(1),
        id: Some("id".into()),
        timestamp: Some(2),
        count: Some(3),
        error: Some(crate::ErrorCode::BadRequest.info("e")),
        connection_id: Some("c".into()),
        channel: Some("ch".into()),
        channel_serial: Some("s".into()),
        msg_serial: Some(7),
        messages: Some(vec![Message::default()]),
        presence: Some(vec![
            PresenceMessage {
                id: Some("p".into()),
                ..Default::default()
            };
            2
        ]),
        auth: Some(Default::default()),
        connection_details: Some(crate::message::ConnectionDetails {
            client_id: Some("me".into()),
            ..Default::default()
        }),
        params: Some([("a".to_owned(), "b".to_owned())].into()),
        res: Some(vec![]),
        annotations: Some(vec![]),
    };
    let positional = rmp_serde::to_vec(&frame).unwrap();
    assert_eq!(
        decode::<ProtocolMessage>(&positional, Format::Msgpack).unwrap(),
        frame
    );
    let shape = frame_shape(&positional, Format::Msgpack).unwrap();
    assert_eq!(
        (
            shape.action,
            shape.msg_serial,
            shape.messages.0,
            shape.presence.0
        ),
        (Some(15), Some(7), 1, 2)
    );
    // The shortest disagreement found: [0, 0] is a HEARTBEAT with flags 0, not msgSerial 0.
    let shape = frame_shape(&[0x92, 0, 0], Format::Msgpack).unwrap();
    assert_eq!((shape.action, shape.msg_serial), (Some(0), None));
    // A map keyed by field number: 9 is msgSerial, 10 messages.
    let by_number = rmp_serde::to_vec(&std::collections::BTreeMap::from([
        (0u8, serde_json::json!(15)),
        (9, serde_json::json!(4)),
        (10, serde_json::json!([{}, {}, {}])),
    ]))
    .unwrap();
    let decoded: ProtocolMessage = decode(&by_number, Format::Msgpack).unwrap();
    let shape = frame_shape(&by_number, Format::Msgpack).unwrap();
    assert_eq!(decoded.messages.map(|m| m.len()), Some(shape.messages.0));
    assert_eq!((shape.msg_serial, shape.messages.0), (Some(4), 3));
}
