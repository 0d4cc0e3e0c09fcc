use super::*;

#[test]
fn rates_come_from_the_last_second_of_readings() {
    let pulse = Pulse::default();
    pulse.sample(1_000);
    pulse.messages_in(5);
    pulse.messages_out(50);
    pulse.sample(2_000);
    let snapshot = pulse.snapshot(2_500);
    assert_eq!(snapshot.messages_in, 5);
    assert_eq!(snapshot.messages_out, 50);
    assert_eq!(snapshot.in_per_second, 5.0);
    assert_eq!(snapshot.out_per_second, 50.0);
    assert_eq!(snapshot.series.in_per_second, vec![5.0]);
}

#[test]
fn latency_percentiles_are_bucket_bounds_over_the_window() {
    let pulse = Pulse::default();
    pulse.sample(0);
    for _ in 0..98 {
        pulse.latency_ms(1);
    }
    pulse.latency_ms(40);
    pulse.latency_ms(9_000);
    let latency = pulse.snapshot(500).latency;
    assert_eq!(latency.count, 100);
    assert_eq!(latency.p50, Some(1));
    assert_eq!(latency.p90, Some(1));
    assert_eq!(latency.p99, Some(50));
    assert_eq!(
        percentile(&latency.buckets, 1.0),
        Some(5000),
        "slowest bucket"
    );
}

#[test]
fn old_readings_leave_the_window_and_memory_is_bounded() {
    let pulse = Pulse::default();
    pulse.latency_ms(3);
    for second in 0..300 {
        pulse.sample(second * 1000);
    }
    let snapshot = pulse.snapshot(300_000);
    assert_eq!(
        snapshot.latency.count, 0,
        "the old observation left the window"
    );
    assert_eq!(snapshot.series.in_per_second.len(), WINDOW_SAMPLES);
    assert_eq!(pulse.samples.lock().unwrap().len(), KEPT_SAMPLES);
}

#[test]
fn no_observations_no_percentiles() {
    assert_eq!(Pulse::default().snapshot(0).latency.p50, None);
}
