use super::*;

#[test]
fn reads_an_emitted_event() {
    let (room, data) = parse_event(r#"["load","fanout:a:1","0:7:123:xx"]"#).unwrap();
    assert_eq!(room, "fanout:a:1");
    assert_eq!(&data[..], b"0:7:123:xx");
    assert!(parse_event(r#"["other","r","d"]"#).is_none());
}

#[test]
fn acks_resolve_subscribes_then_count_publishes() {
    let shared = Shared::default();
    let mut on_done = shared.expect(0);
    on_ack(&shared, "0[]");
    assert!(on_done.try_recv().is_ok());
    on_ack(&shared, "1[]");
    on_ack(&shared, r#"2["bad publish"]"#);
    assert_eq!(shared.acknowledged.load(Ordering::Relaxed), 1);
    assert_eq!(shared.refused.load(Ordering::Relaxed), 1);
}
