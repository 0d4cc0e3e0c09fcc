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

#[test]
fn source_ips_take_lists_and_ipv4_ranges() {
    let parsed = super::parse_source_ips("127.0.0.2-127.0.0.4, ::1").unwrap();
    let expected: Vec<std::net::IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "::1"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(parsed.0, expected);
    assert!(
        super::parse_source_ips("127.0.0.4-127.0.0.2").is_err(),
        "downwards"
    );
    assert!(super::parse_source_ips("localhost").is_err());
    assert!(super::parse_source_ips("").is_err());
}
