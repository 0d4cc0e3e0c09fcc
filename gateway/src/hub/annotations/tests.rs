use serde_json::{json, Value};

use super::summary::{Aggregates, Delta, Kind};

const MAX: usize = 64 * 1024;

/// `(delete, client, name, count)`: one annotation.
type Row<'a> = (bool, Option<&'a str>, Option<&'a str>, Option<u64>);

/// Applies the rows to one type and returns its summary entry.
fn summarize(annotation_type: &str, rows: &[Row<'_>]) -> Value {
    let kind = Kind::of(annotation_type).expect("a known type");
    let mut aggregates = Aggregates::default();
    for (delete, client_id, name, count) in rows {
        let delta = Delta {
            delete: *delete,
            client_id: *client_id,
            name: *name,
            count: *count,
        };
        aggregates.apply(annotation_type, kind, delta);
    }
    aggregates
        .summary("serial", MAX)
        .remove(annotation_type)
        .unwrap_or(Value::Null)
}

fn create<'a>(client: &'a str, name: &'a str) -> Row<'a> {
    (false, Some(client), Some(name), None)
}

fn delete<'a>(client: &'a str, name: &'a str) -> Row<'a> {
    (true, Some(client), Some(name), None)
}

#[test]
fn kinds_are_read_from_the_summarization_after_the_namespace() {
    assert_eq!(Kind::of("reaction:distinct.v1"), Some(Kind::Distinct));
    assert_eq!(Kind::of("a:b:multiple.v1"), Some(Kind::Multiple));
    assert_eq!(Kind::of("total.v1"), Some(Kind::Total));
    assert_eq!(Kind::of("reaction:distinct.v2"), None);
    assert!(Kind::Flag.needs_client_id() && !Kind::Multiple.needs_client_id());
}

#[test]
fn total_counts_every_annotation_and_a_delete_takes_one_off() {
    let rows = [
        (false, None, None, None),
        (false, Some("a"), None, None),
        (false, Some("a"), None, None),
        (true, Some("b"), None, None),
    ];
    assert_eq!(summarize("t:total.v1", &rows), json!({"total": 2}));
    let under = [(true, None, None, None)];
    assert_eq!(
        summarize("t:total.v1", &under),
        Value::Null,
        "nothing counted, left out"
    );
}

#[test]
fn flag_counts_each_client_once_and_a_delete_removes_it() {
    let rows = [
        (false, Some("a"), None, None),
        (false, Some("b"), None, None),
        (false, Some("a"), None, None),
        (false, Some("c"), None, None),
        (true, Some("b"), None, None),
    ];
    assert_eq!(
        summarize("f:flag.v1", &rows),
        json!({"total": 2, "clientIds": ["a", "c"], "clipped": false})
    );
}

#[test]
fn distinct_counts_each_client_once_per_name() {
    let rows = [
        create("a", "👍"),
        create("b", "👍"),
        create("a", "👍"),
        create("a", "😕"),
        delete("b", "👍"),
        delete("b", "😕"),
    ];
    assert_eq!(
        summarize("r:distinct.v1", &rows),
        json!({
            "👍": {"total": 1, "clientIds": ["a"], "clipped": false},
            "😕": {"total": 1, "clientIds": ["a"], "clipped": false},
        })
    );
    let gone = [create("a", "👍"), delete("a", "👍")];
    assert_eq!(
        summarize("r:distinct.v1", &gone),
        Value::Null,
        "an emptied type is left out"
    );
}

#[test]
fn unique_moves_a_client_to_its_new_name_and_a_delete_removes_its_choice() {
    let rows = [
        create("a", "👍"),
        create("b", "👍"),
        create("a", "😕"),
        create("a", "😕"),
    ];
    assert_eq!(
        summarize("r:unique.v1", &rows),
        json!({
            "👍": {"total": 1, "clientIds": ["b"], "clipped": false},
            "😕": {"total": 1, "clientIds": ["a"], "clipped": false},
        })
    );
    let mut deleted = rows.to_vec();
    deleted.push((true, Some("a"), None, None));
    assert_eq!(
        summarize("r:unique.v1", &deleted),
        json!({"👍": {"total": 1, "clientIds": ["b"], "clipped": false}})
    );
}

#[test]
fn multiple_adds_counts_per_client_keeps_unidentified_apart_and_a_delete_removes_all() {
    let rows = [
        (false, Some("a"), Some("👍"), Some(3)),
        (false, Some("b"), Some("👍"), None),
        (false, Some("a"), Some("👍"), Some(2)),
        (false, None, Some("👍"), Some(4)),
        (false, Some("c"), Some("👍"), Some(7)),
        (true, Some("c"), Some("👍"), None),
    ];
    assert_eq!(
        summarize("r:multiple.v1", &rows),
        json!({"👍": {
            "total": 10,
            "clientIds": {"a": 5, "b": 1},
            "totalUnidentified": 4,
            "clipped": false,
            "totalClientIds": 2,
        }})
    );
}

/// 3,000 clients with 20-byte ids are ~75 KB of `clientIds`, just over the 64 KiB limit: the
/// list is halved once, keeping the first contributors, totals exact.
#[test]
fn a_summary_over_the_limit_is_clipped_keeping_the_earliest_contributors() {
    let mut aggregates = Aggregates::default();
    let clients: Vec<String> = (0..3000).map(|i| format!("client-{i:013}")).collect();
    for client in &clients {
        let delta = Delta {
            delete: false,
            client_id: Some(client),
            name: Some("👍"),
            count: None,
        };
        aggregates.apply("r:distinct.v1", Kind::Distinct, delta);
        let delta = Delta {
            name: None,
            ..delta
        };
        aggregates.apply("r:total.v1", Kind::Total, delta);
    }
    let summary = aggregates.summary("serial", MAX);
    let encoded = serde_json::to_vec(&json!({
        "action": 4, "serial": "serial", "annotations": {"summary": &summary},
    }))
    .unwrap();
    assert!(encoded.len() <= MAX, "{} bytes", encoded.len());
    let entry = &summary["r:distinct.v1"]["👍"];
    assert_eq!(entry["total"], 3000);
    assert_eq!(entry["clipped"], true);
    let shown = entry["clientIds"].as_array().unwrap();
    assert_eq!(shown.len(), 1500, "halved once");
    assert_eq!(shown[0], clients[0]);
    assert_eq!(shown[1499], clients[1499]);
    assert_eq!(summary["r:total.v1"], json!({"total": 3000}));

    let unclipped = aggregates.summary("serial", 1024 * 1024);
    assert_eq!(unclipped["r:distinct.v1"]["👍"]["clipped"], false);
    assert_eq!(
        unclipped["r:distinct.v1"]["👍"]["clientIds"]
            .as_array()
            .unwrap()
            .len(),
        3000
    );
}

#[test]
fn multiple_clipping_keeps_total_client_ids_exact() {
    let mut aggregates = Aggregates::default();
    for i in 0..4000 {
        let client = format!("c{i:015}");
        let delta = Delta {
            delete: false,
            client_id: Some(&client),
            name: Some("x"),
            count: Some(2),
        };
        aggregates.apply("r:multiple.v1", Kind::Multiple, delta);
    }
    let summary = aggregates.summary("serial", MAX);
    let entry = &summary["r:multiple.v1"]["x"];
    assert_eq!(entry["total"], 8000);
    assert_eq!(entry["totalClientIds"], 4000);
    assert_eq!(entry["clipped"], true);
    let shown = entry["clientIds"].as_object().unwrap();
    assert!(shown.len() < 4000 && shown.contains_key("c000000000000000"));
}
