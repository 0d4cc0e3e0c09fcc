//! One small run of each scenario: a few hundred connections for a couple of seconds.

use crate::support::{
    assert_clean, run_load, run_load_on_ceiling, run_load_on_cluster, run_load_with,
};

/// Arguments written as one line, split at spaces.
fn words(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}

fn number(report: &serde_json::Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {report:#}"))
}

const FANOUT: [&str; 13] = [
    "fanout",
    "--channels",
    "4",
    "--subscribers",
    "50",
    "--publishers",
    "2",
    "--rate",
    "200",
    "--size",
    "128",
    "--duration",
    "2s",
];

/// `FANOUT` followed by `extra`.
fn fanout_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [&FANOUT[..], extra].concat()
}

fn assert_fanout_clean(report: &serde_json::Value) {
    assert_clean(report);
    let publications = number(report, "publications");
    assert!(publications > 0, "{report:#}");
    assert_eq!(number(report, "publications_refused"), 0);
    assert_eq!(number(report, "subscribers"), 200);
    assert_eq!(
        number(report, "deliveries"),
        publications * 50,
        "{report:#}"
    );
}

#[test]
fn fanout_raw_against_the_ceiling() {
    let args = fanout_with(&["--protocol", "raw"]);
    assert_fanout_clean(&run_load_on_ceiling(&args));
}

#[test]
fn fanout_json_with_a_plot() {
    let plot = std::env::temp_dir().join(format!("realtime-load-smoke-{}.svg", std::process::id()));
    let plot_arg = plot.to_str().unwrap();
    let args = fanout_with(&["--format", "json", "--plot", plot_arg]);
    assert_fanout_clean(&run_load(&args));
    let svg = std::fs::read_to_string(&plot).unwrap();
    let _ = std::fs::remove_file(&plot);
    assert!(svg.starts_with("<svg"), "{svg:.200}");
}

/// Cluster mode: two nodes on one real Redis behind a `--url` list. Subscribers alternate nodes
/// (with 4 channels, channels 0 and 2 are read on node 0, 1 and 3 on node 1) and the two
/// publishers are one on each and publish to every channel, so half of what each publishes
/// reaches its subscribers only through Redis; nothing may be lost, and each node's count is
/// reported.
#[test]
fn fanout_over_two_nodes_through_redis() {
    let report = run_load_on_cluster(2, &FANOUT);
    assert_fanout_clean(&report);
    assert_eq!(report["nodes"], 2, "{report:#}");
    assert_eq!(
        report["subscribers_per_node"],
        serde_json::json!([100, 100]),
        "{report:#}"
    );
    let per_node: Vec<u64> = report["deliveries_per_node"]
        .as_array()
        .unwrap_or_else(|| panic!("no deliveries_per_node in {report:#}"))
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert!(per_node.iter().all(|n| *n > 0), "{report:#}");
    assert_eq!(
        per_node.iter().sum::<u64>(),
        number(&report, "deliveries"),
        "{report:#}"
    );
}

#[test]
fn fanout_msgpack() {
    assert_fanout_clean(&run_load(&fanout_with(&["--format", "msgpack"])));
}

#[test]
fn idle_attached() {
    // From two loopback source addresses in turn (how a big box gets past ~28k connections).
    let report = run_load(&words(
        "--duration 2s --source-ips 127.0.0.2-127.0.0.3 idle --connections 300 --attach",
    ));
    assert_clean(&report);
    // One batch publication reached each of the 300 user channels.
    assert_eq!(number(&report, "deliveries"), 300);
    assert!(
        report.get("server_rss_kib_per_connection").is_some(),
        "{report:#}"
    );
}

#[test]
fn storm_with_tokens() {
    let report = run_load(&["storm", "--connections", "300", "--auth", "token"]);
    assert_clean(&report);
    assert_eq!(number(&report, "deliveries"), 300);
}

#[test]
fn sessions_shape() {
    let report = run_load(&words(
        "--duration 2s sessions --sessions 30 --live 2 --viewers 100 --rate 100 --workers 4",
    ));
    assert_clean(&report);
    assert!(number(&report, "publications") > 0, "{report:#}");
    assert_eq!(number(&report, "publish_errors"), 0);
}

#[test]
fn churn_two_small_rounds() {
    // The server is this test process: its RSS says nothing, so the slack is wide.
    let report = run_load(&words(
        "churn --connections 200 --rounds 2 --hold 200ms --settle 1s --rss-slack-mib 100000",
    ));
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(number(&report, "connect_failures"), 0);
    let rounds = report["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{report:#}");
    for round in rounds {
        assert_eq!(number(round, "connections"), 200, "{report:#}");
        assert!(round["rss_peak_mib"].as_f64() >= round["rss_before_mib"].as_f64());
    }
}

/// The test server with the `reactions` namespace batching (100 ms) and `edits` holding mutable
/// messages.
fn reactions_config() -> gateway::Config {
    use gateway::config::{Batching, ChannelRules};
    let mut config = crate::support::config();
    let retention = config.hub.retention;
    config.hub.namespace_rules.extend([
        (
            "reactions".to_owned(),
            ChannelRules {
                retention,
                batching: Some(Batching {
                    interval: std::time::Duration::from_millis(100),
                    conflate: None,
                }),
                ..Default::default()
            },
        ),
        (
            "edits".to_owned(),
            ChannelRules {
                retention: gateway::config::Retention::PERSISTED,
                mutable_messages: true,
                ..Default::default()
            },
        ),
    ]);
    config
}

fn assert_reactions_clean(report: &serde_json::Value, viewers: u64) {
    assert_clean(report);
    let publications = number(report, "publications");
    assert!(publications > 0, "{report:#}");
    assert_eq!(number(report, "publications_refused"), 0);
    // Every viewer got every reaction, its own included.
    assert_eq!(
        number(report, "deliveries"),
        publications * viewers,
        "{report:#}"
    );
    let message_frames = number(report, "message_frames_received");
    assert!(message_frames > 0, "{report:#}");
    assert!(message_frames <= number(report, "deliveries"), "{report:#}");
    assert!(number(report, "frames_received") >= message_frames);
    assert!(number(report, "bytes_received") > 0);
}

/// Cluster mode for a live room: viewers alternate over two nodes on one Redis, each receiving
/// every reaction, those published on the other node included.
#[test]
fn reactions_ephemeral_over_two_nodes_through_redis() {
    let report = run_load_on_cluster(
        2,
        &words("--duration 1s reactions --viewers 40 --rate 2 --ephemeral --channel room:two"),
    );
    assert_reactions_clean(&report, 40);
    assert_eq!(report["nodes"], 2, "{report:#}");
}

#[test]
fn reactions_stored_and_ephemeral_batched() {
    let stored = run_load(&words(
        "--duration 1s reactions --viewers 50 --rate 2 --channel room:stored",
    ));
    assert_reactions_clean(&stored, 50);
    // Ephemeral, in a batching namespace, with 5 of the viewers chatting (stored messages)
    // instead: still each message to each viewer exactly once.
    let batched = run_load_with(
        reactions_config(),
        &words("--duration 1s --format msgpack reactions --viewers 50 --rate 2 --ephemeral --chatters 5 --chat-rate 3 --channel reactions:room"),
    );
    assert_reactions_clean(&batched, 50);
    assert_eq!(batched["ephemeral"], true, "{batched:#}");
    assert_eq!(batched["chatters"], 5, "{batched:#}");
}

#[test]
fn edits_update_every_message() {
    let report = run_load_with(
        reactions_config(),
        &words("--duration 1s edits --rate 100 --subscribers 5 --idle 0s"),
    );
    assert_clean(&report);
    let publishes = number(&report, "publishes");
    assert!(publishes > 0, "{report:#}");
    assert_eq!(number(&report, "updates"), publishes, "{report:#}");
    assert_eq!(number(&report, "updates_refused"), 0);
    // Each subscriber got each message and then its update.
    assert_eq!(
        number(&report, "deliveries"),
        2 * publishes * 5,
        "{report:#}"
    );
    // --server-pid is this test process: the figures exist, whatever they say.
    assert!(report["server_cpu_us_per_update"].is_number(), "{report:#}");
}
