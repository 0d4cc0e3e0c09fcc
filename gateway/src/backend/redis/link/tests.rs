//! When a link counts as having carried everything (`ProbeEchoes::fresh`).

use super::*;

/// Echoes of a link with `connections` connections, up since `up_ms_ago`.
fn echoes(connections: usize, up_ms_ago: u64) -> ProbeEchoes {
    ProbeEchoes {
        heard_at_ms: vec![0; connections],
        up_at_ms: protocol::now_ms() - up_ms_ago,
        watched: connections > 1,
    }
}

#[test]
fn a_link_just_up_is_fresh_before_its_first_probe() {
    assert!(echoes(1, 100).fresh());
    assert!(echoes(3, PROBE_STALE_MS - 500).fresh());
}

#[test]
fn a_connection_that_never_heard_the_probe_goes_stale() {
    let mut echoes = echoes(2, PROBE_STALE_MS + 1_000);
    assert!(!echoes.fresh());
    echoes.heard_at_ms[0] = protocol::now_ms();
    assert!(!echoes.fresh(), "the other connection never heard it");
    echoes.heard_at_ms[1] = protocol::now_ms() - 100;
    assert!(echoes.fresh());
}

#[test]
fn a_probe_heard_too_long_ago_is_not_fresh() {
    let mut echoes = echoes(1, 10 * PROBE_STALE_MS);
    echoes.heard_at_ms[0] = protocol::now_ms() - PROBE_STALE_MS - 100;
    assert!(!echoes.fresh());
}
