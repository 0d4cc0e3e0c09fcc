//! Fan-out: one encoding per format, echo, slow subscribers, and splitting big deliveries.

use super::*;

/// Subscribers "a" and "b" (JSON) and "m" (msgpack) on "c", with room for `capacity` frames.
fn two_json_one_msgpack(hub: &Hub, capacity: usize) -> [TestSubscriber; 3] {
    [
        ("a", Format::Json),
        ("b", Format::Json),
        ("m", Format::Msgpack),
    ]
    .map(|(connection_id, format)| subscribe(hub, "c", connection_id, format, true, capacity))
}

#[test]
fn one_encoding_per_format_shared_by_every_subscriber() {
    let hub = Hub::default();
    let [mut json_a, mut json_b, mut packed] = two_json_one_msgpack(&hub, 8);
    publish(&hub, "c", "hello", None, None);
    let (a, b) = (
        json_a.queue.try_recv().unwrap(),
        json_b.queue.try_recv().unwrap(),
    );
    assert_eq!(
        buffer_address(&a),
        buffer_address(&b),
        "JSON subscribers share one buffer"
    );
    let m = packed.queue.try_recv().unwrap();
    assert_ne!(buffer_address(&a), buffer_address(&m));
    for (frame, format) in [(a, Format::Json), (m, Format::Msgpack)] {
        let delivered = decode(frame, format);
        assert_eq!(delivered.channel.as_deref(), Some("c"));
        let message = &delivered.messages.unwrap()[0];
        assert_eq!(message.data, Some(protocol::Data::String("hello".into())));
        assert!(message.serial.is_some());
    }
}

#[test]
fn echo_off_skips_only_the_publisher() {
    let hub = Hub::default();
    let mut quiet = subscribe(&hub, "c", "me", Format::Json, false, 8);
    let mut other = subscribe(&hub, "c", "you", Format::Json, true, 8);
    publish(&hub, "c", "mine", None, Some("me"));
    assert!(quiet.queue.try_recv().is_err());
    assert!(other.queue.try_recv().is_ok());
    publish(&hub, "c", "theirs", None, Some("you"));
    assert!(quiet.queue.try_recv().is_ok());
}

#[test]
fn a_full_queue_ends_that_subscriber_only() {
    let hub = Hub::default();
    // No room beyond the one delivery a queue always takes.
    let slow = subscribe(&hub, "c", "slow", Format::Json, true, 0);
    let mut fast = subscribe(&hub, "c", "fast", Format::Json, true, 64);
    for i in 0..10 {
        publish(&hub, "c", &i.to_string(), None, None);
    }
    assert!(slow.outbox.is_ending());
    let last_words = decode(slow.outbox.take_last_words().unwrap(), Format::Json);
    assert_eq!(last_words.action(), Some(Action::Disconnected));
    assert_eq!(last_words.error.unwrap().code, 80020);
    assert!(!fast.outbox.is_ending());
    for _ in 0..10 {
        fast.queue.try_recv().unwrap();
    }
}

/// `n` messages of `size` bytes of data each, with serials `s-000…` and no ids.
fn numbered(n: usize, size: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message {
            serial: Some(format!("s-{i:04}")),
            data: Some(protocol::Data::String("x".repeat(size))),
            ..Default::default()
        })
        .collect()
}

#[test]
fn a_big_delivery_is_split_into_frames_that_fit_in_order() {
    for format in [Format::Json, Format::Msgpack] {
        let mut outgoing = ProtocolMessage {
            id: Some("conn:7".into()),
            connection_id: Some("conn".into()),
            channel: Some("c".into()),
            timestamp: Some(5),
            channel_serial: Some("s-0999".into()),
            messages: Some(numbered(1000, 200)),
            ..ProtocolMessage::new(Action::Message)
        };
        let frames = encode_split(&mut outgoing, format, 16 * 1024).unwrap();
        assert!(frames.len() >= 12, "{} frames", frames.len());
        // The caller's message is left as it was, for the next format.
        assert_eq!(outgoing.messages.as_ref().unwrap().len(), 1000);
        assert!(
            outgoing.messages.iter().flatten().all(|m| m.id.is_none()),
            "the ids the frames carry are not left on the messages the log keeps"
        );
        assert_eq!(outgoing.channel_serial.as_deref(), Some("s-0999"));
        let mut next = 0;
        for frame in frames {
            assert!(frame.len() <= 16 * 1024, "a frame of {} bytes", frame.len());
            let part = decode(frame, format);
            assert_eq!(part.action(), Some(Action::Message));
            assert_eq!(part.connection_id.as_deref(), Some("conn"));
            assert_eq!(part.timestamp, Some(5));
            let messages = part.messages.unwrap();
            assert!(!messages.is_empty());
            for message in &messages {
                // Consecutive, none lost or repeated, each with the id the whole frame gave it.
                assert_eq!(message.serial, Some(format!("s-{next:04}")));
                assert_eq!(message.id, Some(format!("conn:7:{next}")));
                next += 1;
            }
            assert_eq!(part.channel_serial, messages.last().unwrap().serial);
        }
        assert_eq!(next, 1000);
    }
}

#[test]
fn a_delivery_that_fits_or_a_lone_big_message_goes_whole() {
    let mut small = ProtocolMessage {
        messages: Some(numbered(10, 10)),
        ..ProtocolMessage::new(Action::Message)
    };
    assert_eq!(
        encode_split(&mut small, Format::Json, 16 * 1024)
            .unwrap()
            .len(),
        1
    );
    let mut lone = ProtocolMessage {
        messages: Some(numbered(1, 64 * 1024)),
        ..ProtocolMessage::new(Action::Message)
    };
    let frames = encode_split(&mut lone, Format::Msgpack, 16 * 1024).unwrap();
    assert_eq!(frames.len(), 1);
    assert!(frames[0].len() > 64 * 1024);
}

#[test]
fn a_publication_too_big_for_one_frame_reaches_every_subscriber_in_order() {
    let hub = Hub::default();
    let [mut json, mut json_too, mut packed] = two_json_one_msgpack(&hub, 64);
    // 1,000 messages of 600 bytes: ~800 KB as one JSON frame, beyond what a frame may be.
    let messages: Vec<Message> = (0..1000)
        .map(|i| Message {
            id: Some(format!("p:0:{i}")),
            data: Some(protocol::Data::String(format!("{i:0600}"))),
            ..Default::default()
        })
        .collect();
    let serials = hub
        .publish(Publication {
            channel: "c",
            messages,
            client_ids: vec![],
            connection_id: Some("p"),
            id: Some("p:0".into()),
            timestamp: 1,
        })
        .unwrap();
    for (subscriber, format) in [
        (&mut json, Format::Json),
        (&mut json_too, Format::Json),
        (&mut packed, Format::Msgpack),
    ] {
        let mut received = Vec::new();
        let mut frames = 0;
        while let Ok(frame) = subscriber.queue.try_recv() {
            assert!(frame.len() <= MAX_DELIVERY_FRAME_BYTES);
            frames += 1;
            let part = decode(frame, format);
            let messages = part.messages.unwrap();
            assert_eq!(part.channel_serial, messages.last().unwrap().serial);
            received.extend(messages.into_iter().map(|m| m.serial));
        }
        assert!(frames > 1, "{format:?}: split");
        assert_eq!(received, serials, "{format:?}: all, in order");
    }
}

#[test]
fn a_big_presence_broadcast_is_split_too() {
    let events: Vec<PresenceMessage> = (0..200)
        .map(|i| PresenceMessage {
            id: Some(format!("c:{i}:0")),
            action: ENTER,
            client_id: Some(format!("user-{i}")),
            data: Some(protocol::Data::String("d".repeat(500))),
            ..Default::default()
        })
        .collect();
    let mut outgoing = ProtocolMessage {
        channel: Some("c".into()),
        presence: Some(events.clone()),
        ..ProtocolMessage::new(Action::Presence)
    };
    let frames = encode_split(&mut outgoing, Format::Msgpack, 16 * 1024).unwrap();
    assert!(frames.len() >= 7, "{} frames", frames.len());
    let mut received = Vec::new();
    for frame in frames {
        assert!(frame.len() <= 16 * 1024);
        let part = decode(frame, Format::Msgpack);
        assert_eq!(part.action(), Some(Action::Presence));
        received.extend(part.presence.unwrap());
    }
    assert_eq!(received, events, "every event, in order");
    assert_eq!(outgoing.presence.as_ref(), Some(&events));
}
