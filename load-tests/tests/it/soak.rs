//! The soak, short: a few seconds of everything it does against our server on short timers
//! (nothing may fail), and against a server that breaks its promises (the checks must say so).

use std::time::Duration;

use crate::support::{config, run_load_on_broken, run_load_with};

fn count(report: &serde_json::Value, group: &str, name: &str) -> u64 {
    report[group][name].as_u64().unwrap_or(0)
}

#[test]
fn a_short_soak_keeps_every_promise() {
    let mut config = config();
    config.timing.max_idle_interval = Duration::from_secs(1);
    config.timing.token_renew_lead = Duration::from_secs(2);
    let report = run_load_with(
        config,
        &[
            "--duration",
            "8s",
            "soak",
            "--clients",
            "60",
            "--sessions",
            "4",
            "--streams",
            "2",
            "--ramp",
            "1s",
            "--token-ttl",
            "4s",
            "--short-token-ttl",
            "1500ms",
            "--token-renew-lead",
            "2s",
            "--drop-every",
            "4s",
            "--reconnect-every",
            "8s",
            "--presence-every",
            "1s",
            "--rate",
            "20",
            "--event-rate",
            "4",
            // The server is this test process: its RSS is the test harness's, not measured.
            "--warmup",
            "1h",
        ],
    );
    assert_eq!(
        report["failures_by_reason"],
        serde_json::json!({}),
        "{report:#}"
    );
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(report["publications"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["events"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["deliveries"].as_u64().unwrap() > 0, "{report:#}");
    for done in [
        "renewals",
        "token expiries (expected)",
        "resumes",
        "drops",
        "clean reconnects",
        "presence enters",
    ] {
        assert!(
            count(&report, "expected_events", done) > 0,
            "no {done}: {report:#}"
        );
    }
}

#[test]
fn the_soak_catches_silence_and_a_lost_message() {
    let report = run_load_on_broken(&[
        "--duration",
        "3s",
        "soak",
        "--clients",
        "4",
        "--sessions",
        "1",
        "--streams",
        "1",
        "--ramp",
        "0s",
        "--rate",
        "0",
        "--event-rate",
        "0",
        "--short-token-share",
        "0",
        "--drop-every",
        "1h",
        "--reconnect-every",
        "1h",
        "--presence-every",
        "1h",
        "--warmup",
        "1h",
    ]);
    assert_eq!(report["ok"], false, "{report:#}");
    let failures = report["failures_by_reason"].as_object().unwrap();
    // Two of the four clients ask for heartbeats; 300 ms + 1 s of silence passes within 3 s.
    let silences = count(
        &report,
        "failures_by_reason",
        "silence longer than maxIdleInterval + slack",
    );
    assert!(silences >= 2, "{report:#}");
    // Each client's three channels skipped one serial after ATTACHED.
    assert_eq!(
        count(&report, "failures_by_reason", "lost"),
        12,
        "{report:#}"
    );
    assert_eq!(failures.len(), 2, "nothing else failed: {report:#}");
}
