use std::time::{Duration, Instant};

use super::*;

const RATE: PublishRate = PublishRate {
    messages_per_sec: 10,
    burst_messages: 20,
    bytes_per_sec: 1000,
    burst_bytes: 1500,
};

/// A bucket of `RATE`, full, and the instant it was made.
fn fresh_bucket() -> (Instant, RateBucket) {
    let start = Instant::now();
    (start, RateBucket::new(&RATE, start))
}

#[test]
fn a_bucket_allows_its_burst_then_its_rate() {
    let (start, mut bucket) = fresh_bucket();
    assert_eq!(bucket.take(&RATE, 20, 0, start), Ok(()));
    assert_eq!(bucket.take(&RATE, 1, 0, start), Err(Exceeded::Messages));
    // Half a second refills 5 messages, no more.
    let later = start + Duration::from_millis(500);
    assert_eq!(bucket.take(&RATE, 6, 0, later), Err(Exceeded::Messages));
    assert_eq!(bucket.take(&RATE, 5, 0, later), Ok(()));
    assert!(!bucket.is_full(&RATE, later));
    assert!(bucket.is_full(&RATE, later + Duration::from_secs(2)));
}

#[test]
fn bytes_run_out_separately_and_a_refusal_takes_nothing() {
    let (start, mut bucket) = fresh_bucket();
    assert_eq!(bucket.take(&RATE, 1, 1400, start), Ok(()));
    assert_eq!(bucket.take(&RATE, 1, 200, start), Err(Exceeded::Bytes));
    assert_eq!(bucket.take(&RATE, 19, 100, start), Ok(()));
    let unlimited = PublishRate {
        messages_per_sec: 0,
        ..RATE
    };
    assert_eq!(bucket.take(&unlimited, 1_000_000, 1 << 30, start), Ok(()));
}

/// A pace below one message a second (Ably's `maxRate` 0.5) lets one through, then one per two
/// seconds; a pace of 3 allows a burst of 3.
#[test]
fn a_pace_allows_its_rate_with_a_burst_of_one_second() {
    use std::time::Duration;
    let start = std::time::Instant::now();
    let mut slow = super::Pace::new(0.5, start);
    assert!(slow.take(start));
    assert!(!slow.take(start));
    assert!(!slow.take(start + Duration::from_millis(1900)));
    assert!(slow.take(start + Duration::from_millis(4000)));
    let mut quick = super::Pace::new(3.0, start);
    assert_eq!((0..5).filter(|_| quick.take(start)).count(), 3);
    assert!(quick.take(start + Duration::from_millis(340)));
}
