use serde_json::json;

use super::*;

const MINUTE: u64 = 60_000;

fn ms(id: &str) -> u64 {
    parse_interval_id(id).unwrap().0
}

#[test]
fn interval_ids_parse_and_print_by_unit() {
    let cases = [
        ("2024-02-29:23:59", Unit::Minute, 1_709_251_140_000),
        ("2024-02-29:23", Unit::Hour, 1_709_247_600_000),
        ("2024-02-29", Unit::Day, 1_709_164_800_000),
        ("2024-02", Unit::Month, 1_706_745_600_000),
        ("1970-01-01:00:00", Unit::Minute, 0),
    ];
    for (id, unit, start) in cases {
        assert_eq!(parse_interval_id(id), Some((start, unit)), "{id}");
    }
    let t = ms("2024-02-29:23:59") + 30_000;
    assert_eq!(Unit::Minute.interval_id(t), "2024-02-29:23:59");
    assert_eq!(Unit::Hour.interval_id(t), "2024-02-29:23");
    assert_eq!(Unit::Day.interval_id(t), "2024-02-29:00");
    assert_eq!(Unit::Month.interval_id(t), "2024-02-01:00");
    assert_eq!(second_id(t), "2024-02-29:23:59:30");
}

#[test]
fn malformed_interval_ids_are_refused() {
    for id in [
        "",
        "2024",
        "2024-2-03",
        "2024-02-30",
        "2023-02-29",
        "2024-13-01",
        "2024-02-03:24",
        "2024-02-03:15:60",
        "2024-02-03:15:04:05",
        "2024-02:15",
        "1969-12-31:23:59",
        "abcd-02-03",
        "+024-02-03",
    ] {
        assert_eq!(parse_interval_id(id), None, "{id:?}");
    }
}

#[test]
fn units_step_over_month_and_year_ends() {
    let t = ms("2023-12-31:23:59") + 1;
    assert_eq!(Unit::Minute.next(t), ms("2024-01-01:00:00"));
    assert_eq!(Unit::Hour.next(t), ms("2024-01-01:00:00"));
    assert_eq!(Unit::Day.next(t), ms("2024-01-01"));
    assert_eq!(Unit::Month.next(t), ms("2024-01"));
    assert_eq!(Unit::Month.floor(t), ms("2023-12"));
    assert_eq!(Unit::Month.next(ms("2024-02-10")), ms("2024-03"));
}

fn query(unit: Unit, start: u64, end: u64, forwards: bool, limit: usize) -> StatsQuery {
    StatsQuery {
        unit,
        start,
        end,
        forwards,
        limit,
    }
}

#[test]
fn fixtures_become_schema_entries_with_their_aggregates() {
    let stats = Stats::default();
    stats
        .add_fixtures(
            "app",
            &[json!({
                "intervalId": "2024-02-03:15:05",
                "inbound": {"realtime": {"messages": {"count": 70, "data": 7000}}},
                "outbound": {"realtime": {"messages": {"count": 40, "data": 4000}}},
                "persisted": {"presence": {"count": 20, "data": 2000}},
                "connections": {"tls": {"peak": 20, "opened": 10}},
                "channels": {"peak": 50, "opened": 30},
                "apiRequests": {"succeeded": 50, "failed": 10},
                "tokenRequests": {"succeeded": 60, "failed": 20},
            })],
        )
        .unwrap();
    let page = stats.query("app", &query(Unit::Minute, 0, u64::MAX / 2, true, 10), 0);
    let entries = &page.records[0].entries;
    for (key, value) in [
        ("messages.inbound.realtime.messages.count", 70.0),
        ("messages.inbound.realtime.all.count", 70.0),
        ("messages.inbound.all.messages.count", 70.0),
        ("messages.inbound.all.all.data", 7000.0),
        ("messages.outbound.all.messages.count", 40.0),
        ("messages.all.messages.count", 110.0),
        ("messages.all.all.data", 11000.0),
        ("messages.persisted.presence.count", 20.0),
        ("messages.persisted.all.count", 20.0),
        ("connections.all.peak", 20.0),
        ("connections.all.opened", 10.0),
        ("channels.peak", 50.0),
        ("apiRequests.other.succeeded", 50.0),
        ("apiRequests.tokenRequests.failed", 20.0),
        ("apiRequests.all.succeeded", 110.0),
    ] {
        assert_eq!(entries.get(key), Some(&value), "{key} in {entries:?}");
    }
}

#[test]
fn roll_ups_sum_counts_and_keep_peaks() {
    let stats = Stats::default();
    let fixture = |id: &str, count: u64, peak: u64| {
        json!({
            "intervalId": id,
            "inbound": {"rest": {"messages": {"count": count}}},
            "channels": {"peak": peak},
        })
    };
    stats
        .add_fixtures(
            "app",
            &[
                fixture("2024-02-03:15:03", 1, 5),
                fixture("2024-02-03:15:04", 2, 9),
                fixture("2024-02-03:16:00", 4, 3),
                fixture("2024-03-01:00:00", 8, 1),
            ],
        )
        .unwrap();
    let all = u64::MAX / 2;
    let sums = |unit| {
        stats
            .query("app", &query(unit, 0, all, true, 100), 0)
            .records
            .iter()
            .map(|r| {
                (
                    r.interval_id(),
                    r.entries["messages.inbound.all.messages.count"],
                    r.entries["channels.peak"],
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(sums(Unit::Minute).len(), 4);
    assert_eq!(
        sums(Unit::Hour),
        [
            ("2024-02-03:15".to_owned(), 3.0, 9.0),
            ("2024-02-03:16".to_owned(), 4.0, 3.0),
            ("2024-03-01:00".to_owned(), 8.0, 1.0),
        ]
    );
    assert_eq!(
        sums(Unit::Day),
        [
            ("2024-02-03:00".to_owned(), 7.0, 9.0),
            ("2024-03-01:00".to_owned(), 8.0, 1.0),
        ]
    );
    assert_eq!(
        sums(Unit::Month),
        [
            ("2024-02-01:00".to_owned(), 7.0, 9.0),
            ("2024-03-01:00".to_owned(), 8.0, 1.0),
        ]
    );
    // Backwards with a limit: newest first, and more beyond the page.
    let page = stats.query("app", &query(Unit::Minute, 0, all, false, 2), 0);
    assert!(page.more);
    assert_eq!(page.records[0].interval_id(), "2024-03-01:00:00");
    assert_eq!(page.records[1].interval_id(), "2024-02-03:16:00");
}

#[test]
fn live_publishes_count_in_the_current_minute_and_are_in_progress() {
    let stats = Stats::default();
    let now = ms("2024-02-03:15:04") + 12_345;
    stats.record_publish("app", Transport::Rest, 2, 10, now);
    stats.record_publish("app", Transport::Realtime, 1, 5, now);
    let page = stats.query("app", &query(Unit::Hour, 0, now, false, 1), now);
    let record = &page.records[0];
    assert_eq!(record.interval_id(), "2024-02-03:15");
    assert_eq!(record.in_progress.as_deref(), Some("2024-02-03:15:04:12"));
    assert_eq!(record.entries["messages.inbound.rest.messages.count"], 2.0);
    assert_eq!(
        record.entries["messages.inbound.realtime.messages.data"],
        5.0
    );
    assert_eq!(record.entries["messages.inbound.all.all.count"], 3.0);
    let later = now + 3_600_000;
    let page = stats.query("app", &query(Unit::Hour, 0, later, false, 1), later);
    assert_eq!(page.records[0].in_progress, None);
    assert!(stats
        .query("other", &query(Unit::Hour, 0, later, false, 1), later)
        .records
        .is_empty());
}

#[test]
fn an_app_keeps_a_bounded_number_of_minutes() {
    let stats = Stats::default();
    for minute in 0..MAX_MINUTES_PER_APP as u64 + 10 {
        stats.record_publish("app", Transport::Rest, 1, 1, minute * MINUTE);
    }
    let page = stats.query(
        "app",
        &query(Unit::Minute, 0, u64::MAX / 2, true, usize::MAX),
        0,
    );
    assert_eq!(page.records.len(), MAX_MINUTES_PER_APP);
    assert_eq!(page.records[0].start, 10 * MINUTE, "the oldest went first");
}

#[test]
fn bad_fixtures_are_refused_whole() {
    let stats = Stats::default();
    for fixture in [
        json!("not an object"),
        json!({"inbound": {}}),
        json!({"intervalId": "2024-02-03:15"}),
        json!({"intervalId": 12}),
        json!({"intervalId": "2024-02-03:15:03", "inbound": {"rest": {"messages": {"count": "x"}}}}),
    ] {
        let good = json!({"intervalId": "2024-02-03:15:03", "channels": {"peak": 1}});
        assert!(
            stats.add_fixtures("app", &[good, fixture.clone()]).is_err(),
            "{fixture}"
        );
    }
    assert!(stats
        .query("app", &query(Unit::Minute, 0, u64::MAX / 2, true, 10), 0)
        .records
        .is_empty());
}
