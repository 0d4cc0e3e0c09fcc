use super::*;

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

fn rule() -> WebhookConfig {
    WebhookConfig::new(
        "http://127.0.0.1:1/",
        "call:*",
        vec![Source::Lifecycle, Source::Presence],
        "s",
    )
}

#[test]
fn ids_are_stable_and_rules_filter_by_source_and_channel() {
    assert_eq!(rule().id, rule().id);
    assert!(rule().wants(Source::Lifecycle, "call:1"));
    assert!(!rule().wants(Source::Message, "call:1"));
    assert!(!rule().wants(Source::Presence, "stream:1"));
}
