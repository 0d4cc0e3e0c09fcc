use std::sync::Arc;

use bytes::Bytes;

use super::*;

fn delivery(publisher: u32, seq: u64) -> Delivery {
    let stamp = Stamp {
        publisher,
        seq,
        sent_us: 0,
    };
    Delivery {
        channel: String::new(),
        payload: Bytes::from(stamp.encode(16)),
        received_us: 5,
    }
}

#[test]
fn tells_duplicates_and_misroutes_apart() {
    let schedule: Schedule = Arc::new(|publisher, seq| ((publisher as u64 + seq) % 2) as usize);
    let mut ledger = Ledger::new(0, schedule.clone(), Arc::default());
    for (publisher, seq) in [(0, 0), (0, 2), (0, 2), (1, 1), (0, 1)] {
        ledger.record(&delivery(publisher, seq));
    }
    assert_eq!(
        (ledger.unique, ledger.duplicated, ledger.misrouted),
        (3, 1, 1)
    );
    assert_eq!(owed_per_channel(2, &[4, 2], &schedule), vec![3, 3]);
}

#[test]
fn a_loss_fails_the_report() {
    let schedule: Schedule = Arc::new(|_, _| 0);
    let mut ledger = Ledger::new(0, schedule, Arc::default());
    ledger.record(&delivery(0, 0));
    ledger.record(&delivery(0, 0));
    let mut report = crate::report::Report::new("test");
    crate::scenario::account(&mut report, &[(ledger, None)], &[2]);
    assert_eq!(report.get("lost"), Some(&1.into()));
    assert_eq!(report.get("duplicated"), Some(&1.into()));
    assert!(!report.ok());
}
