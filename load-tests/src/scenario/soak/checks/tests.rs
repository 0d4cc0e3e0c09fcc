use super::{ChannelOrder, Seen, Tally};

fn serial(epoch: u64, n: u64) -> String {
    format!("{epoch:012x}-{n:010x}")
}

#[test]
fn consecutive_serials_are_in_order_and_gaps_are_counted() {
    let mut order = ChannelOrder::default();
    order.start(Some(&serial(7, 3)));
    assert_eq!(order.see(&serial(7, 4)), Seen::InOrder);
    assert_eq!(order.see(&serial(7, 4)), Seen::Duplicated);
    assert_eq!(order.see(&serial(7, 8)), Seen::Lost(3));
    assert_eq!(order.see(&serial(7, 5)), Seen::Reordered);
    assert_eq!(order.see(&serial(9, 2)), Seen::NewIncarnation(1));
    assert_eq!(order.see("nope"), Seen::Unreadable);
    assert_eq!(order.position(), Some(serial(9, 2)));
}

#[test]
fn owed_counts_what_was_published_after_the_last_seen() {
    let mut order = ChannelOrder::default();
    order.start(Some(&serial(7, 3)));
    assert_eq!(
        order.owed_until(&serial(7, 3)),
        0,
        "published before the attach"
    );
    assert_eq!(order.owed_until(&serial(7, 5)), 2);
    assert_eq!(order.owed_until(&serial(8, 2)), 2, "a new incarnation");
    order.start(None);
    assert_eq!(
        order.see(&serial(7, 10)),
        Seen::InOrder,
        "empty channel at attach"
    );
}

#[test]
fn the_tally_counts_by_reason_and_keeps_a_few_examples() {
    let tally = Tally::default();
    for i in 0..5 {
        tally.fail("silence", 1, || format!("client {i}"));
    }
    tally.fail("lost", 0, || unreachable!("nothing failed"));
    tally.count("renewed");
    let failures = tally.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].1, 5);
    assert_eq!(failures[0].2.len(), 3);
    assert_eq!(tally.event("renewed"), 1);
}
