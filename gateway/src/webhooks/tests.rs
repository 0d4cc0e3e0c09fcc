use super::*;
use crate::backend::WebhookState;

#[test]
fn channel_patterns_match_like_globs() {
    for (pattern, name, matches) in [
        ("call:*", "call:42", true),
        ("call:*", "call:", true),
        ("call:*", "stream:42", false),
        ("*", "anything", true),
        ("*:live", "stream:live", true),
        ("*:live", "stream:live:x", false),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("exact", "exact", true),
        ("exact", "exactly", false),
    ] {
        assert_eq!(glob_matches(pattern, name), matches, "{pattern} {name}");
    }
}

#[test]
fn the_signature_is_base64_hmac_sha256_of_the_body() {
    // echo -n '{"items":[]}' | openssl dgst -sha256 -hmac secret -binary | base64
    assert_eq!(
        signature("secret", br#"{"items":[]}"#),
        "VG7phuhMZ8ubMWF9x6TFoO6EEA8OcgVmAEp85CWHv7E="
    );
}

fn memory_state() -> MemoryState {
    MemoryState::new(Box::new(|_: &str| Vec::new()))
}

fn rule() -> WebhookConfig {
    WebhookConfig::new(
        "http://127.0.0.1:1/",
        "call:*",
        vec![Source::Lifecycle, Source::Presence],
        "s",
    )
}

#[tokio::test]
async fn a_re_occupy_within_the_debounce_cancels_the_close() {
    let store = memory_state();
    let key = vacate_key("call:1");
    assert!(store.occupy("call:1", &key).await.unwrap());
    assert!(store.vacate("n", "call:1", &key, "p1", 10).await.unwrap());
    // Back before it was due: neither a close nor a second open.
    assert!(!store.occupy("call:1", &key).await.unwrap());
    assert_eq!(store.due(10).await.unwrap(), vec!["p1".to_owned()]);
    assert!(!store.fire(&key, "p1").await.unwrap());
    // Gone for good: the close fires once.
    assert!(store.vacate("n", "call:1", &key, "p2", 20).await.unwrap());
    assert!(store.due(19).await.unwrap().is_empty());
    assert!(store.fire(&key, "p2").await.unwrap());
    assert!(!store.fire(&key, "p2").await.unwrap());
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_says_how_many() {
    let store = memory_state();
    let items = |range: std::ops::Range<u32>| range.map(|i| i.to_string()).collect();
    assert_eq!(store.push("w", 3, items(0..2)).await.unwrap(), 0);
    assert_eq!(store.push("w", 3, items(2..5)).await.unwrap(), 2);
    let queued = store.peek("w", 10).await.unwrap();
    let values: Vec<&str> = queued.iter().map(|(_, item)| item.as_str()).collect();
    assert_eq!(values, ["2", "3", "4"]);
    store
        .ack(
            "w",
            queued.iter().take(2).map(|(id, _)| id.clone()).collect(),
        )
        .await
        .unwrap();
    assert_eq!(store.peek("w", 10).await.unwrap().len(), 1);
}

#[test]
fn ids_are_stable_and_rules_filter_by_source_and_channel() {
    assert_eq!(rule().id, rule().id);
    assert!(rule().wants(Source::Lifecycle, "call:1"));
    assert!(!rule().wants(Source::Message, "call:1"));
    assert!(!rule().wants(Source::Presence, "stream:1"));
}
