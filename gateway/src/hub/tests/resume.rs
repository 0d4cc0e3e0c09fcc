//! Resume from a channelSerial: exactly what was missed, or 90003 when the log cannot prove it.

use super::*;

#[test]
fn resume_replays_exactly_the_messages_after_the_channel_serial() {
    let hub = Hub::default();
    let (mut subscriber, _) = attach_to_c(&hub, "conn", &AttachRequest::default());
    publish_now(&hub, "c", "0");
    publish_now(&hub, "c", "1");
    let seen = drain(&mut subscriber);
    assert_eq!(datas(&seen), range(0, 2));
    let last_seen = seen[1].channel_serial.clone().unwrap();
    // The transport drops; the connection leaves the channel; messages go on.
    hub.detach("c", "conn");
    let missed: Vec<String> = (2..6)
        .map(|i| publish_now(&hub, "c", &i.to_string()))
        .collect();

    let (mut resumed, attached) = attach_to_c(&hub, "conn", &resume_from(&last_seen));
    assert!(has_flag(&attached, flags::RESUMED), "{attached:?}");
    assert!(!has_flag(&attached, flags::HAS_BACKLOG), "{attached:?}");
    assert!(attached.error.is_none(), "{attached:?}");
    // Clients keep the channelSerial of every ATTACHED (ably-js RTL15b): one whose transport dies
    // before the replay is read resumes from it, so it must not be past anything replayed.
    let attached_serial = attached.channel_serial.clone().expect("channelSerial");
    assert!(
        attached_serial < missed[0],
        "ATTACHED says {attached_serial}, past the replay that starts at {}",
        missed[0]
    );
    let replay = drain(&mut resumed);
    assert_eq!(
        datas(&replay),
        range(2, 6),
        "exactly the missed ones, in order"
    );
    let replay_serials: Vec<String> = replay
        .iter()
        .flat_map(|f| f.messages.clone().unwrap_or_default())
        .map(|m| m.serial.expect("serial"))
        .collect();
    assert_eq!(replay_serials, missed);
    for frame in &replay {
        let last = frame
            .messages
            .as_ref()
            .and_then(|m| m.last()?.serial.clone());
        assert_eq!(
            frame.channel_serial, last,
            "a frame's channelSerial is its last message's"
        );
    }
    assert_gets_live(&hub, &mut resumed, "6", "then live, once");
}

#[test]
fn resume_from_the_newest_serial_replays_nothing() {
    let hub = Hub::default();
    let newest = (0..3)
        .map(|i| publish_now(&hub, "c", &i.to_string()))
        .last()
        .unwrap();
    assert!(resumed_replay(&hub, "conn", &newest).is_empty());
}

#[test]
fn resume_from_the_start_of_an_empty_channel_is_kept() {
    let hub = Hub::default();
    let (_, first) = attach_to_c(&hub, "conn", &AttachRequest::default());
    hub.detach("c", "conn");
    publish_now(&hub, "c", "while away");
    let position = first.channel_serial.unwrap();
    assert_eq!(
        resumed_replay(&hub, "conn", &position),
        strings(&["while away"])
    );
}

#[test]
fn resume_is_refused_when_the_connection_resume_failed() {
    let hub = Hub::default();
    let serial = publish_now(&hub, "c", "0");
    publish_now(&hub, "c", "1");
    let request = AttachRequest {
        resume_allowed: false,
        ..resume_from(&serial)
    };
    refused_resume(&hub, "conn", &request, "resume not allowed");
}

#[test]
fn resume_from_an_evicted_serial_is_refused_with_90003_and_no_replay() {
    let hub = hub_with(|c| c.retention.max_messages = 3);
    let serials: Vec<String> = (0..10)
        .map(|i| publish_now(&hub, "c", &i.to_string()))
        .collect();
    // The log holds 7, 8 and 9; 6 was the last evicted, so a client that saw 6 missed nothing
    // the log lacks, while one that saw only 5 missed 6.
    assert_eq!(resumed_replay(&hub, "saw-6", &serials[6]), range(7, 10));

    for seen in [5, 2, 0] {
        let connection = format!("saw-{seen}");
        let request = resume_from(&serials[seen]);
        let mut refused = refused_resume(&hub, &connection, &request, &connection);
        let context = format!("{connection}: live from now on");
        assert_gets_live(&hub, &mut refused, "live", &context);
    }
}

#[test]
fn resume_from_a_serial_that_aged_out_is_refused() {
    let hub = Hub::default();
    let now = protocol::now_ms();
    let eleven_minutes_ago = now - 11 * 60 * 1000;
    let expired = publish_stamped(&hub, "c", "expired", eleven_minutes_ago);
    publish_stamped(&hub, "c", "expired too", eleven_minutes_ago + 1);
    publish_now(&hub, "c", "fresh");
    let context = "a message after it aged out of the log";
    refused_resume(&hub, "conn", &resume_from(&expired), context);
}

#[test]
fn unusable_channel_serials_are_not_resumed() {
    let hub = Hub::default();
    let before = publish_now(&hub, "before", "x");
    let serials: Vec<String> = (0..3)
        .map(|i| publish_now(&hub, "c", &i.to_string()))
        .collect();
    let after = publish_now(&hub, "after", "x");
    let (epoch, n) = serial_parts(&serials[2]);
    let future = format!("{epoch:012x}-{:010x}", n + 5);
    let candidates = [
        ("garbage", "garbage".to_owned()),
        ("empty", String::new()),
        ("upper-case hex", serials[0].to_uppercase()),
        ("trailing junk", format!("{}x", serials[0])),
        ("truncated", serials[0][..20].to_owned()),
        ("from the future", future),
        ("the largest serial", "ffffffffffff-ffffffffff".to_owned()),
        ("another channel's, older", before),
        ("another channel's, newer", after),
        ("a sync cursor", "abcdefgh:1".to_owned()),
    ];
    for (what, serial) in candidates {
        refused_resume(&hub, what, &resume_from(&serial), what);
    }
}

#[test]
fn across_a_sweep_resume_is_kept_only_where_nothing_was_lost() {
    let hub = Hub::default();
    // An old incarnation whose two messages age out, after which the idle channel is swept.
    let first = publish_stamped(&hub, "c", "first", 1);
    let last = publish_stamped(&hub, "c", "last", 2);
    hub.sweep(AFTER_RETENTION + 1);
    assert_eq!(hub.channel_count(), 0);
    let next = publish_now(&hub, "c", "new incarnation");
    // The channel goes on where it left off: a reader of serials sees no gap and no restart.
    assert_eq!(Some(next.clone()), log::next(&last), "{last} then {next}");

    // A client that saw the old incarnation's last message missed only what the new one holds.
    assert_eq!(
        resumed_replay(&hub, "saw-last", &last),
        strings(&["new incarnation"])
    );
    // One that saw only the first missed "last", which aged out: continuity cannot be kept.
    let context = "a message after it aged out before the sweep";
    refused_resume(&hub, "saw-first", &resume_from(&first), context);
}

#[test]
fn a_serial_from_a_long_gone_incarnation_is_refused() {
    let hub = Hub::default();
    let old = publish_stamped(&hub, "c", "old incarnation", 1);
    hub.sweep(AFTER_RETENTION);
    assert_eq!(hub.channel_count(), 0);
    // A day later whatever was remembered of the old incarnation is gone too.
    hub.sweep(AFTER_RETENTION + 24 * 60 * 60 * 1000);
    publish_now(&hub, "c", "new incarnation");
    refused_resume(
        &hub,
        "conn",
        &resume_from(&old),
        "an old incarnation's serial",
    );
}
