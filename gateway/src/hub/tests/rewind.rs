//! Rewind: replaying the last messages, by count or by age, on a fresh attach.

use super::*;

#[test]
fn rewind_by_count_replays_the_last_messages_then_goes_live() {
    let hub = Hub::default();
    for i in 0..10 {
        publish_now(&hub, "c", &i.to_string());
    }
    let (mut late, attached) = attach_to_c(&hub, "late", &rewind(Rewind::Messages(3)));
    assert!(has_flag(&attached, flags::HAS_BACKLOG), "{attached:?}");
    assert!(!has_flag(&attached, flags::RESUMED), "{attached:?}");
    assert_eq!(datas(&drain(&mut late)), range(7, 10));
    assert_gets_live(&hub, &mut late, "live", "then live");
}

#[test]
fn rewind_by_duration_replays_what_is_younger() {
    let hub = Hub::default();
    let now = protocol::now_ms();
    for (data, age_s) in [("a", 90), ("b", 40), ("c", 20), ("d", 5)] {
        publish_stamped(&hub, "c", data, now - age_s * 1000);
    }
    let (mut late, attached) = attach_to_c(
        &hub,
        "late",
        &rewind(Rewind::Duration(Duration::from_secs(30))),
    );
    assert!(has_flag(&attached, flags::HAS_BACKLOG), "{attached:?}");
    assert_eq!(datas(&drain(&mut late)), strings(&["c", "d"]));
}

#[test]
fn rewind_is_capped_by_max_rewind() {
    let hub = hub_with(|c| c.max_rewind = 4);
    for i in 0..10 {
        publish_now(&hub, "c", &i.to_string());
    }
    for (connection, request) in [
        ("count", rewind(Rewind::Messages(50))),
        (
            "duration",
            rewind(Rewind::Duration(Duration::from_secs(3600))),
        ),
    ] {
        let (mut late, attached) = attach_to_c(&hub, connection, &request);
        assert!(has_flag(&attached, flags::HAS_BACKLOG), "{attached:?}");
        assert_eq!(
            datas(&drain(&mut late)),
            range(6, 10),
            "{connection}: the newest max_rewind messages"
        );
    }
}

#[test]
fn rewind_on_an_empty_channel_has_no_backlog() {
    let hub = Hub::default();
    let (mut late, attached) = attach_to_c(&hub, "late", &rewind(Rewind::Messages(10)));
    assert!(!has_flag(&attached, flags::HAS_BACKLOG), "{attached:?}");
    assert!(drain(&mut late).is_empty());
}
