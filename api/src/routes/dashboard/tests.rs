use super::*;

#[test]
fn totals_merge_latency_buckets() {
    let node = |count: u64, bucket: usize| {
        let mut buckets = vec![0; 22];
        buckets[bucket] = count;
        NodePulse {
            connections: 2,
            in_per_second: 1.5,
            latency: Latency::from_buckets(buckets),
            ..NodePulse::default()
        }
    };
    let totals = totals(&[node(99, 1), node(1, 10)]);
    assert_eq!(totals.connections, 4);
    assert_eq!(totals.in_per_second, 3.0);
    assert_eq!(totals.latency.count, 100);
    assert_eq!(totals.latency.p50, Some(1));
    assert_eq!(totals.latency.p99, Some(1));
}
