use std::time::Duration;

#[test]
fn durations() {
    for (text, expected) in [
        ("10s", Duration::from_secs(10)),
        ("250ms", Duration::from_millis(250)),
        ("2m", Duration::from_secs(120)),
        ("3", Duration::from_secs(3)),
        ("1.5s", Duration::from_millis(1500)),
    ] {
        assert_eq!(super::parse_duration(text), Ok(expected));
    }
    assert!(super::parse_duration("ten").is_err());
    assert!(super::parse_duration("10x").is_err());
}
