use super::Stamp;

#[test]
fn round_trips_at_any_size() {
    let stamp = Stamp {
        publisher: 7,
        seq: 123_456,
        sent_us: 987_654_321,
    };
    for size in [0, 10, 64, 1024] {
        let text = stamp.encode(size);
        assert!(text.len() >= size);
        assert_eq!(Stamp::parse(text.as_bytes()), Some(stamp));
    }
    assert_eq!(Stamp::parse(b"not a stamp"), None);
}
