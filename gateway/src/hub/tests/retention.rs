//! Retention and sweeping: what the log and the channel map keep, and the room they give back.

use super::*;
use crate::config::{ChannelRules, Retention};

#[test]
fn idle_channels_are_swept_and_occupancy_counts_modes() {
    let hub = Hub::default();
    let _subscriber = subscribe(&hub, "busy", "a", Format::Json, true, 8);
    publish(&hub, "quiet", "x", None, None);
    assert_eq!(hub.occupancy("busy").subscribers, 1);
    assert_eq!(hub.occupancy("busy").publishers, 1);
    hub.sweep(10);
    assert_eq!(
        hub.channel_count(),
        2,
        "history keeps a channel nobody is attached to"
    );
    hub.sweep(AFTER_RETENTION);
    assert_eq!(
        hub.channel_count(),
        1,
        "once its history has aged out it is gone"
    );
    hub.detach("busy", "a");
    assert_eq!(hub.occupancy("busy").connections, 0);
    hub.sweep(AFTER_RETENTION);
    assert_eq!(hub.channel_count(), 0);
}

#[test]
fn the_log_keeps_at_most_max_messages() {
    let hub = hub_with(|c| c.retention.max_messages = 5);
    for i in 0..12 {
        publish_now(&hub, "c", &i.to_string());
    }
    assert_eq!(
        history_data(&hub, "c"),
        strings(&["11", "10", "9", "8", "7"])
    );
}

#[test]
fn the_log_drops_messages_older_than_max_age() {
    let hub = hub_with(|c| {
        c.retention = Retention {
            max_messages: 1000,
            max_age: Duration::from_secs(60),
        }
    });
    let now = protocol::now_ms();
    publish_stamped(&hub, "c", "ancient", now - 100_000);
    publish_stamped(&hub, "c", "old", now - 50_000);
    publish_stamped(&hub, "c", "recent", now - 10_000);
    assert_eq!(
        history_data(&hub, "c"),
        strings(&["recent", "old"]),
        "'ancient' is past the 60 s max age"
    );
    // 20 s on, "old" is 70 s old.
    hub.sweep(now + 20_000);
    assert_eq!(history_data(&hub, "c"), strings(&["recent"]));
    // A minute on, "recent" has gone too, and with it the channel.
    hub.sweep(now + 60_000);
    assert!(history_data(&hub, "c").is_empty());
    assert_eq!(hub.channel_count(), 0);
}

/// `payments:*` keeps 50 messages for an hour.
fn payments_kept_an_hour() -> Vec<(String, ChannelRules)> {
    let retention = Retention {
        max_messages: 50,
        max_age: Duration::from_secs(3600),
    };
    let rules = ChannelRules {
        retention,
        ..ChannelRules::default()
    };
    vec![("payments".into(), rules)]
}

#[test]
fn a_namespace_rule_overrides_the_default_retention() {
    let hub = hub_with(|c| {
        c.retention = Retention {
            max_messages: 3,
            max_age: Duration::from_secs(10 * 60),
        };
        c.namespace_rules = payments_kept_an_hour();
    });
    let twenty_minutes_ago = protocol::now_ms() - 20 * 60 * 1000;
    for channel in ["payments:eu", "chat:eu", "paymentsx:eu"] {
        publish_stamped(&hub, channel, "early", twenty_minutes_ago);
        for i in 0..10 {
            publish_now(&hub, channel, &i.to_string());
        }
    }
    let payments = history_data(&hub, "payments:eu");
    assert_eq!(
        payments.len(),
        11,
        "payments keeps 50 for an hour: {payments:?}"
    );
    assert_eq!(payments.last().map(String::as_str), Some("early"));
    assert_eq!(history_data(&hub, "chat:eu"), strings(&["9", "8", "7"]));
    assert_eq!(
        history_data(&hub, "paymentsx:eu"),
        strings(&["9", "8", "7"]),
        "a namespace matches whole, not as a prefix"
    );
}

#[test]
fn a_channel_named_like_the_namespace_is_in_it() {
    // Ably: "If the channel name contains no colon, the namespace is the entire channel name."
    let hub = hub_with(|c| {
        c.retention.max_messages = 3;
        c.namespace_rules = payments_kept_an_hour();
    });
    for i in 0..10 {
        publish_now(&hub, "payments", &i.to_string());
    }
    assert_eq!(history_data(&hub, "payments").len(), 10);
}

#[test]
fn a_flood_of_subscribers_and_members_gives_its_room_back_when_it_leaves() {
    let hub = Hub::new(HubConfig::default());
    let mut subscribers = Vec::new();
    for n in 0..500 {
        let connection_id = format!("c{n}");
        subscribers.push(subscribe(
            &hub,
            "live",
            &connection_id,
            Format::Json,
            true,
            8,
        ));
        enter(&hub, "live", &format!("u{n}"), &connection_id).unwrap();
    }
    let room = |hub: &Hub| {
        let channel = hub.existing("live").expect("live channel");
        let state = channel.lock();
        (state.subscribers.capacity(), state.presence.capacity())
    };
    let (subscribers_full, members_full) = room(&hub);
    assert!(subscribers_full >= 500 && members_full >= 500);
    for n in 10..500 {
        let connection_id = format!("c{n}");
        hub.apply_presence("live", hub.leave_events("live", &connection_id));
        hub.detach("live", &connection_id);
    }
    assert_eq!(hub.occupancy("live").subscribers, 10);
    assert_eq!(hub.presence_members("live").len(), 10);
    let (subscribers_left, members_left) = room(&hub);
    assert!(
        subscribers_left <= 4 * 10 + MIN_ROOM && members_left <= 4 * 10 + MIN_ROOM,
        "room kept: {subscribers_left} subscribers, {members_left} members"
    );
    drop(subscribers);
}

/// What `shrink` leaves alone.
const MIN_ROOM: usize = crate::shrink::MIN_CAPACITY * 2;

#[test]
fn the_sweep_shrinks_the_channel_map_after_a_flood_of_channels() {
    let hub = Hub::new(HubConfig::default());
    for n in 0..5_000 {
        drop(subscribe(
            &hub,
            &format!("user:{n}"),
            &format!("c{n}"),
            Format::Json,
            true,
            8,
        ));
        hub.detach(&format!("user:{n}"), &format!("c{n}"));
    }
    let full = hub.channels.capacity();
    assert!(full >= 5_000);
    hub.sweep(10);
    assert_eq!(hub.channel_count(), 0);
    assert!(
        hub.channels.capacity() < full / 10,
        "channel map kept room for {} of {full}",
        hub.channels.capacity()
    );
}
