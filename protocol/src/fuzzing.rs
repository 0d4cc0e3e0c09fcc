//! The proptest strategies and run settings that property tests share: the codec's here, the
//! REST body decoder's in `api`, which enables the `fuzzing` feature for its tests.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

/// `cases` unless `PROPTEST_CASES` asks for more (or fewer).
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Short strings, often ones that mean something on the wire (empty, a NUL, a channel name).
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["", "a", "chat:1", "[meta]x", "\u{0}", "é✓", "\"\\"])
            .prop_map(str::to_owned),
        prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
    ]
}

/// JSON values without floats (JSON does not promise to round-trip them bit for bit).
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}
