use bytes::Bytes;
use protocol::message::Data;

use super::*;

/// A MESSAGE frame as a fan-out makes it: the envelope carries the publish's id,
/// connectionId and timestamp, the messages only what they were given, `channelSerial` is the
/// last message's serial.
fn delivery(channel: &str, publisher: &str, n: u64, messages: Vec<Message>) -> ProtocolMessage {
    ProtocolMessage {
        id: Some(format!("{publisher}:{n}")),
        connection_id: Some(publisher.to_owned()),
        timestamp: Some(1_000 + n),
        channel: Some(channel.to_owned()),
        channel_serial: messages.last().and_then(|m| m.serial.clone()),
        messages: Some(messages),
        ..ProtocolMessage::new(Action::Message)
    }
}

fn message(serial: &str, data: Data) -> Message {
    Message {
        name: Some(serial.to_owned()),
        data: Some(data),
        serial: Some(serial.to_owned()),
        ..Default::default()
    }
}

/// A version as an edit carries it.
fn edit() -> protocol::MessageVersion {
    protocol::MessageVersion {
        serial: Some("s:9".into()),
        timestamp: Some(9),
        client_id: Some("alice".into()),
        description: Some("typo".into()),
        metadata: Some([("reason".to_owned(), "typo".to_owned())].into()),
    }
}

fn encode(message: &ProtocolMessage, format: Format) -> Frame {
    Frame::encode(message, format).unwrap()
}

fn decode_frame(frame: &Frame, format: Format) -> ProtocolMessage {
    protocol::codec::decode(frame.as_bytes(), format).unwrap()
}

/// What a client makes of a frame: its messages with the inherited fields filled in.
fn as_client_sees(mut frame: ProtocolMessage) -> Vec<Message> {
    explicit(&mut frame)
}

#[test]
fn a_run_merges_in_order_with_each_message_as_the_client_would_have_seen_it() {
    for format in [Format::Json, Format::Msgpack] {
        let frames = [
            delivery(
                "room",
                "alice",
                0,
                vec![
                    message("s:0", Data::String("a".into())),
                    message("s:1", Data::Binary(Bytes::from_static(&[0, 159, 255]))),
                ],
            ),
            delivery(
                "room",
                "bob",
                7,
                vec![Message {
                    id: Some("explicit-id".into()),
                    connection_id: Some("carol".into()),
                    timestamp: Some(5),
                    ..message("s:2", Data::Other(serde_json::json!({"k": [1, 2]})))
                }],
            ),
            delivery(
                "room",
                "alice",
                1,
                vec![Message {
                    action: Some(protocol::message::message_action::UPDATE),
                    version: Some(edit()),
                    annotations: Some(protocol::MessageAnnotations {
                        summary: [(
                            "reaction:distinct.v1".to_owned(),
                            serde_json::json!({"👍": {"total": 1, "clientIds": ["bob"]}}),
                        )]
                        .into(),
                    }),
                    ..message("s:3", Data::String("d".into()))
                }],
            ),
        ];
        let encoded: Vec<Frame> = frames.iter().map(|f| encode(f, format)).collect();
        let expected: Vec<Message> = encoded
            .iter()
            .flat_map(|f| as_client_sees(decode_frame(f, format)))
            .collect();

        let mut run = Run::start(encoded[0].clone(), format).ok().unwrap();
        assert!(run.push(&encoded[1]));
        assert!(run.push(&encoded[2]));
        assert_eq!(
            run.bytes(),
            encoded.iter().map(Frame::len).sum::<usize>(),
            "{format:?}"
        );
        let merged = decode_frame(&run.finish().unwrap(), format);
        assert_eq!(merged.action(), Some(Action::Message));
        assert_eq!(merged.channel.as_deref(), Some("room"));
        assert_eq!(
            merged.channel_serial.as_deref(),
            Some("s:3"),
            "the last frame's channelSerial, so a resume continues after it"
        );
        assert_eq!(
            merged.id, None,
            "no frame id that other frames' messages would inherit"
        );
        assert_eq!(merged.connection_id, None);
        let messages = merged.messages.clone().unwrap();
        assert_eq!(messages, expected, "{format:?}");
        assert_eq!(as_client_sees(merged), expected, "nothing left to inherit");
        assert_eq!(
            messages[3].version,
            Some(edit()),
            "an edit's version survives the merge"
        );
        assert!(messages[3].annotations.is_some(), "and its summary");
        let ids: Vec<_> = messages.iter().map(|m| m.id.clone().unwrap()).collect();
        assert_eq!(ids, ["alice:0:0", "alice:0:1", "explicit-id", "alice:1:0"]);
        let from: Vec<_> = messages
            .iter()
            .map(|m| (m.connection_id.clone().unwrap(), m.timestamp.unwrap()))
            .collect();
        assert_eq!(
            from,
            [
                ("alice".to_owned(), 1000),
                ("alice".to_owned(), 1000),
                ("carol".to_owned(), 5),
                ("alice".to_owned(), 1001)
            ]
        );
    }
}

#[test]
fn another_channel_or_action_ends_a_run_and_a_lone_frame_goes_as_it_was() {
    let format = Format::Json;
    let first = encode(
        &delivery("a", "p", 0, vec![message("1", Data::String("x".into()))]),
        format,
    );
    let other_channel = encode(
        &delivery("b", "p", 1, vec![message("2", Data::String("y".into()))]),
        format,
    );
    let presence = encode(&ProtocolMessage::new(Action::Presence), format);
    let mut run = Run::start(first.clone(), format).ok().unwrap();
    assert!(!run.push(&other_channel));
    assert!(!run.push(&presence));
    assert_eq!(
        run.finish().unwrap().as_bytes(),
        first.as_bytes(),
        "unchanged: not re-encoded"
    );
    assert!(
        Run::start(presence.clone(), format).is_err(),
        "only MESSAGE frames start a run"
    );
}

#[test]
fn channel_tags_are_never_zero_and_tell_names_apart() {
    assert_ne!(channel_tag(""), 0);
    assert_eq!(channel_tag("room:1"), channel_tag("room:1"));
    assert_ne!(channel_tag("room:1"), channel_tag("room:2"));
}
