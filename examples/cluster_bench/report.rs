//! The result: printed as a table, written as JSON, judged clean or not.

use hdrhistogram::Histogram;

use crate::args::Args;
use crate::Report;

pub(crate) const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];
/// Redis commands printed, most time first (the JSON has them all).
const TOP_COMMANDS: usize = 8;

impl Report {
    pub(crate) fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.deliveries == self.expected
            && self.acked == self.publications
            && self.failures.is_empty()
    }

    /// `--target-p99-ms` given and p99 publish → deliver at or above it.
    pub(crate) fn p99_missed(&self, args: &Args) -> bool {
        args.target_p99_ms
            .is_some_and(|target| self.latency.value_at_quantile(0.99) as f64 / 1000.0 >= target)
    }

    /// Share of one core over the window, in percent.
    fn share(&self, cpu_seconds: f64) -> f64 {
        cpu_seconds / self.window_seconds * 100.0
    }

    /// CPU µs per acknowledged publication (0 if none was).
    fn us_per_publication(&self, cpu_seconds: f64) -> f64 {
        if self.acked == 0 {
            return 0.0;
        }
        cpu_seconds / self.acked as f64 * 1e6
    }

    /// Acknowledged publications per `EVALSHA` call: the batch size Redis saw.
    fn publications_per_evalsha(&self) -> Option<f64> {
        let calls = self
            .redis_commands
            .iter()
            .find(|c| c.name == "evalsha")?
            .calls;
        (calls > 0).then(|| self.acked as f64 / calls as f64)
    }

    pub(crate) fn print(&self, args: &Args) {
        let rate = if args.rate == 0 {
            format!(
                "as fast as ACKs allow (window {} per publisher)",
                args.window
            )
        } else {
            format!("target {}/s", args.rate)
        };
        println!(
            "\ncluster_bench: {} nodes, {} channels, {} subscribers ({}), {} publishers on {}, {rate}, {} s",
            args.nodes,
            args.channels,
            args.subscribers,
            args.format,
            args.publishers,
            if args.publish_nodes == 1 {
                "node 0".to_string()
            } else {
                format!("nodes 0..{}", args.publish_nodes)
            },
            args.duration
        );
        let row = |what: &str, value: String| println!("  {what:<34} {value}");
        row(
            "publications acknowledged",
            format!(
                "{} of {} = {:.0}/s",
                self.acked,
                self.publications,
                self.acked as f64 / self.publish_seconds
            ),
        );
        row(
            "deliveries",
            format!(
                "{} of {} = {:.0}/s over {:.2} s",
                self.deliveries,
                self.expected,
                self.deliveries as f64 / self.window_seconds,
                self.window_seconds
            ),
        );
        row(
            "lost / duplicated or reordered",
            format!("{} / {}", self.lost, self.duplicated),
        );
        let percentiles = |h: &Histogram<u64>| {
            PERCENTILES
                .iter()
                .map(|(name, q)| format!("{name} {}", millis(h.value_at_quantile(q / 100.0))))
                .collect::<Vec<_>>()
                .join("  ")
                + &format!("  max {}", millis(h.max()))
        };
        row("publish → deliver latency", percentiles(&self.latency));
        row("publish → ACK latency", percentiles(&self.ack_latency));
        row(
            "CPU (% of one core)",
            format!(
                "redis {:.0}%  nodes {}  bench {:.0}%  (machine {:.0}% of {} cores)",
                self.share(self.cpu.redis),
                self.cpu
                    .nodes
                    .iter()
                    .map(|c| format!("{:.0}%", self.share(*c)))
                    .collect::<Vec<_>>()
                    .join(" + "),
                self.share(self.cpu.bench),
                self.share(self.cpu.machine),
                cores()
            ),
        );
        row(
            "CPU µs per ACKed publication",
            format!(
                "redis {:.1}  nodes {}",
                self.us_per_publication(self.cpu.redis),
                self.cpu
                    .nodes
                    .iter()
                    .map(|c| format!("{:.1}", self.us_per_publication(*c)))
                    .collect::<Vec<_>>()
                    .join(" + ")
            ),
        );
        row(
            "publications per EVALSHA call",
            self.publications_per_evalsha()
                .map_or("no EVALSHA".to_string(), |p| format!("{p:.2}")),
        );
        for (i, command) in self.redis_commands.iter().take(TOP_COMMANDS).enumerate() {
            row(
                if i == 0 {
                    "redis commands (most time first)"
                } else {
                    ""
                },
                format!(
                    "{:<16} {:>9} calls  {:>7.2} µs/call  {:>6.1} µs/publication",
                    command.name,
                    command.calls,
                    command.usec_per_call(),
                    self.us_per_publication(command.usec as f64 / 1e6)
                ),
            );
        }
        row(
            "node RSS",
            self.node_rss_kib
                .iter()
                .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", "),
        );
        for (failure, count) in self.failures.iter().take(10) {
            println!("  failure ×{count}: {failure}");
        }
    }

    pub(crate) fn to_json(&self, args: &Args) -> serde_json::Value {
        let percentiles = |h: &Histogram<u64>| {
            let mut map = serde_json::Map::new();
            for (name, q) in PERCENTILES {
                map.insert(
                    format!("{name}_ms"),
                    (h.value_at_quantile(q / 100.0) as f64 / 1000.0).into(),
                );
            }
            map.insert("max_ms".into(), (h.max() as f64 / 1000.0).into());
            serde_json::Value::Object(map)
        };
        serde_json::json!({
            "setup": {
                "nodes": args.nodes,
                "channels": args.channels,
                "subscribers": args.subscribers,
                "publishers": args.publishers,
                "publish_nodes": args.publish_nodes,
                "format": args.format,
                "target_rate": args.rate,
                "window": args.window,
                "duration_s": args.duration,
            },
            "publications": self.publications,
            "acked": self.acked,
            "publications_per_s": self.acked as f64 / self.publish_seconds,
            "expected_deliveries": self.expected,
            "deliveries": self.deliveries,
            "deliveries_per_s": self.deliveries as f64 / self.window_seconds,
            "window_s": self.window_seconds,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "latency": percentiles(&self.latency),
            "ack_latency": percentiles(&self.ack_latency),
            "cpu_percent_of_one_core": {
                "redis": self.share(self.cpu.redis),
                "nodes": self.cpu.nodes.iter().map(|c| self.share(*c)).collect::<Vec<_>>(),
                "bench": self.share(self.cpu.bench),
                "machine": self.share(self.cpu.machine),
                "cores": cores(),
            },
            "us_per_publication": {
                "redis": self.us_per_publication(self.cpu.redis),
                "nodes": self
                    .cpu
                    .nodes
                    .iter()
                    .map(|c| self.us_per_publication(*c))
                    .collect::<Vec<_>>(),
            },
            "publications_per_evalsha": self.publications_per_evalsha(),
            "redis_commands": self
                .redis_commands
                .iter()
                .map(|c| serde_json::json!({
                    "command": c.name,
                    "calls": c.calls,
                    "usec": c.usec,
                    "usec_per_call": c.usec_per_call(),
                }))
                .collect::<Vec<_>>(),
            "node_rss_kib": self.node_rss_kib,
            "failures": self
                .failures
                .iter()
                .map(|(failure, count)| serde_json::json!({"failure": failure, "count": count}))
                .collect::<Vec<_>>(),
            "target_p99_ms": args.target_p99_ms,
            "target_p99_missed": self.p99_missed(args),
            "clean": self.clean(),
        })
    }
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn millis(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}
