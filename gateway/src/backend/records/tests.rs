use super::*;

#[test]
fn records_expire_and_stay_bounded() {
    let records = MemoryRecords::default();
    records.record_channel("a/e1", 0, "s0", 0);
    assert_eq!(records.record_answer("a/e1", "first".into(), 1), "first");
    assert_eq!(
        records.record_answer("a/e1", "second".into(), 2),
        "first",
        "the first answer stands"
    );
    records.record_channel("a/e1", 0, "", 3);
    assert_eq!(
        records.get("a/e1", 3).channels[&0],
        "s0",
        "a repeat keeps the serial"
    );
    let ttl = EVENT_RECORD_TTL.as_millis() as u64;
    assert!(
        records.get("a/e1", ttl - 1).answer.is_some(),
        "kept for the TTL"
    );
    assert!(records.get("a/e1", ttl).answer.is_none(), "gone after it");

    for n in 0..=MAX_EVENT_RECORDS {
        records.record_channel(&format!("a/{n}"), 0, "s", ttl + 1);
    }
    assert!(
        records.get("a/0", ttl + 1).channels.is_empty(),
        "the oldest went"
    );
    assert!(!records.get("a/1", ttl + 1).channels.is_empty());
}
