use super::*;

fn ch(name: &str) -> ChannelName {
    ChannelName::parse(name).unwrap()
}

#[test]
fn matches_resources_as_ably_documents() {
    let table = [
        ("*", "chat", true),
        ("*", "a:b:c", true),
        ("*", "[meta]log", false),
        ("[*]*", "[meta]log", true),
        ("[meta]*", "[meta]log", true),
        ("chat:*", "chat:1", true),
        ("chat:*", "chat:1:2", true),
        ("chat:*", "chat", false),
        ("chat:*", "chatter:1", false),
        ("foo:*:baz", "foo:bar:baz", true),
        ("foo:*:baz", "foo:bar:qux", false),
        ("foo*", "foo*", true),
        ("foo*", "food", false),
        ("session:1", "session:1", true),
        ("session:1", "session:12", false),
        ("chat:*", "[?rewind=1]chat:1", true),
        // Filtered channels: `[filter=…]` is base64 of `name == 'x'`.
        ("chat:*", "[filter=bmFtZSA9PSAneCc=]chat:1", true),
        ("[filter]chat:*", "[filter=bmFtZSA9PSAneCc=]chat:1", true),
        ("[filter]chat:*", "chat:1", false),
        ("[filter]chat:*", "[meta]chat:1", false),
        ("[*]chat:*", "chat:1", true),
        ("[*]chat:*", "[filter=bmFtZSA9PSAneCc=]chat:1", true),
        ("[*]chat:*", "[meta]chat:1", true),
        ("[*]chat:*", "news", false),
    ];
    for (resource, channel, expected) in table {
        let capability = Capability::parse(&format!(r#"{{"{resource}":["subscribe"]}}"#)).unwrap();
        assert_eq!(
            capability.allows(&ch(channel), Operation::Subscribe),
            expected,
            "{resource} vs {channel}"
        );
    }
}

#[test]
fn operations_and_modes() {
    let capability = Capability::parse(r#"{"chat:*":["publish"],"*":["subscribe"]}"#).unwrap();
    assert!(capability.allows(&ch("chat:1"), Operation::Publish));
    assert!(capability.allows(&ch("chat:1"), Operation::Subscribe));
    assert!(!capability.allows(&ch("other"), Operation::Publish));
    assert!(!capability.allows(&ch("chat:1"), Operation::Presence));
    assert_eq!(
        capability.modes(&ch("chat:1")),
        Modes::PUBLISH | Modes::SUBSCRIBE | Modes::PRESENCE_SUBSCRIBE
    );
    assert_eq!(
        Capability::all().modes(&ch("x")),
        Modes::DEFAULT | Modes::ANNOTATION_SUBSCRIBE
    );
}

#[test]
fn intersection_keeps_the_narrower_pattern_and_common_operations() {
    let key =
        Capability::parse(r#"{"chat:*":["publish","subscribe"],"news":["subscribe"]}"#).unwrap();
    let asked = Capability::parse(r#"{"*":["subscribe","presence"]}"#).unwrap();
    let token = key.intersect(&asked).unwrap();
    assert_eq!(
        token.to_json(),
        r#"{"chat:*":["subscribe"],"news":["subscribe"]}"#
    );

    let asked = Capability::parse(r#"{"chat:1":["*"]}"#).unwrap();
    assert_eq!(
        key.intersect(&asked).unwrap().to_json(),
        r#"{"chat:1":["publish","subscribe"]}"#
    );

    let asked = Capability::parse(r#"{"other":["publish"]}"#).unwrap();
    assert_eq!(key.intersect(&asked).unwrap_err().code, 40160);

    // A token asking for filtered access only gets it within what the key allows, and a
    // key for filtered access only gives nothing unfiltered.
    let asked = Capability::parse(r#"{"[filter]chat:*":["subscribe"]}"#).unwrap();
    assert_eq!(
        key.intersect(&asked).unwrap().to_json(),
        r#"{"[filter]chat:*":["subscribe"]}"#
    );
    let filtered_key = Capability::parse(r#"{"[filter]chat:*":["subscribe"]}"#).unwrap();
    let asked = Capability::parse(r#"{"chat:1":["subscribe"]}"#).unwrap();
    assert_eq!(filtered_key.intersect(&asked).unwrap_err().code, 40160);
    let everywhere = Capability::parse(r#"{"[*]chat:*":["subscribe"]}"#).unwrap();
    assert_eq!(
        everywhere.intersect(&asked).unwrap().to_json(),
        r#"{"chat:1":["subscribe"]}"#
    );
}

#[test]
fn refuses_malformed_capabilities() {
    for bad in [
        "",
        "[]",
        "{}",
        r#"{"a":[]}"#,
        r#"{"a":"publish"}"#,
        r#"{"channel0":["publish_"]}"#,
        r#"{"channel0":["*","publish"]}"#,
    ] {
        assert!(Capability::parse(bad).is_err(), "{bad}");
    }
}

/// The mode bits on the wire are Ably's; the word's low bits (HAS_PRESENCE, RESUMED, ...) are
/// not modes.
#[test]
fn modes_keep_their_wire_values() {
    for (mode, bit) in [
        (Modes::PRESENCE, 16),
        (Modes::PUBLISH, 17),
        (Modes::SUBSCRIBE, 18),
        (Modes::PRESENCE_SUBSCRIBE, 19),
        (Modes::ANNOTATION_PUBLISH, 21),
        (Modes::ANNOTATION_SUBSCRIBE, 22),
        (Modes::OBJECT_SUBSCRIBE, 24),
        (Modes::OBJECT_PUBLISH, 25),
    ] {
        assert_eq!(mode.bits(), 1 << bit, "{mode:?}");
    }
    assert_eq!(Modes::DEFAULT.bits(), 0b10_1111 << 16);
    assert_eq!(Modes::all().bits(), 0xFFFF_0000);
    let word = (1 << 20) | (1 << 31) | crate::message::flags::RESUMED | (1 << 40);
    assert_eq!(
        Modes::from_bits_truncate(word).bits(),
        (1 << 20) | (1 << 31)
    );
}

/// A chat room's channel `room::$chat` is allowed by capabilities written for the room (Ably
/// Chat's rule), by ones written for the channel itself, and by no other room's.
#[test]
fn chat_channels_answer_to_their_rooms_capabilities() {
    let capability = Capability::parse(
        r#"{"lobby":["publish","subscribe"],"dms:*":["subscribe"],"exact::$chat":["presence"]}"#,
    )
    .unwrap();
    let channel = |name: &str| ChannelName::parse(name).unwrap();
    assert!(capability.allows(&channel("lobby::$chat"), Operation::Publish));
    assert!(capability.allows(&channel("dms:ann:bob::$chat"), Operation::Subscribe));
    assert!(!capability.allows(&channel("dms:ann:bob::$chat"), Operation::Publish));
    assert!(capability.allows(&channel("exact::$chat"), Operation::Presence));
    assert!(!capability.allows(&channel("lobby2::$chat"), Operation::Subscribe));
    assert!(!capability.allows(&channel("other::$chat"), Operation::Subscribe));
    assert!(
        !capability.allows(&channel("lobbyx"), Operation::Subscribe),
        "a plain channel is not a room"
    );
}
