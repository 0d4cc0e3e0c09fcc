use std::time::Duration;

use protocol::Data;

use super::Viewer;
use crate::payload::Stamp;

fn viewer(first_ms: u64, period_ms: u64, deadline_ms: u64) -> Viewer {
    let start = tokio::time::Instant::now();
    Viewer {
        id: 3,
        channel: "reactions:room".to_owned(),
        name: "reaction",
        ephemeral: true,
        size: 64,
        window: 16,
        first: start + Duration::from_millis(first_ms),
        period: Duration::from_millis(period_ms),
        deadline: start + Duration::from_millis(deadline_ms),
    }
}

#[test]
fn due_counts_the_ticks_before_the_deadline() {
    // Ticks at 0, 1000, ..., 4000 ms: a tick on the deadline is not due.
    assert_eq!(viewer(0, 1000, 5000).due(), 5);
    // Ticks at 500, 1500, ..., 4500 ms.
    assert_eq!(viewer(500, 1000, 5000).due(), 5);
    assert_eq!(viewer(999, 1000, 1000).due(), 1);
    // A first tick at or after the deadline: none.
    assert_eq!(viewer(1000, 1000, 1000).due(), 0);
    assert_eq!(viewer(2000, 1000, 1000).due(), 0);
}

#[test]
fn a_reaction_carries_its_stamp_an_emoji_and_the_ephemeral_flag() {
    let viewer = viewer(0, 1000, 5000);
    let message = viewer.reaction(41);
    assert_eq!(message.name.as_deref(), Some("reaction"));
    assert_eq!(message.extras, Some(serde_json::json!({"ephemeral": true})));
    let Some(Data::String(data)) = &message.data else {
        panic!("string data: {message:?}");
    };
    assert!(data.len() >= 64, "padded to --size: {data:?}");
    let stamp = Stamp::parse(data.as_bytes()).expect("stamped");
    assert_eq!((stamp.publisher, stamp.seq), (3, 41));
    assert!(
        super::EMOJI.iter().any(|emoji| data.contains(emoji)),
        "{data}"
    );

    let stored = Viewer {
        ephemeral: false,
        size: 0,
        ..viewer
    };
    let message = stored.reaction(0);
    assert_eq!(message.extras, None);
    let Some(Data::String(data)) = &message.data else {
        panic!("string data: {message:?}");
    };
    assert!(!data.ends_with('x'), "no padding without --size: {data:?}");

    let chatter = Viewer {
        name: "chat.message",
        ephemeral: false,
        ..stored
    };
    assert_eq!(chatter.reaction(0).name.as_deref(), Some("chat.message"));
}
