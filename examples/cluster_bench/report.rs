//! The result: printed as a table, written as JSON, judged clean or not.

use hdrhistogram::Histogram;

use crate::args::Args;
use crate::Report;

pub(crate) const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

impl Report {
    pub(crate) fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.deliveries == self.expected
            && self.acked == self.publications
            && self.failures.is_empty()
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
            "\ncluster_bench: {} nodes, {} channels, {} subscribers ({}), {} publishers on node 0, {rate}, {} s",
            args.nodes, args.channels, args.subscribers, args.format, args.publishers, args.duration
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
                self.cpu.redis,
                self.cpu
                    .nodes
                    .iter()
                    .map(|c| format!("{c:.0}%"))
                    .collect::<Vec<_>>()
                    .join(" + "),
                self.cpu.bench,
                self.cpu.machine,
                cores()
            ),
        );
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
                "redis": self.cpu.redis,
                "nodes": self.cpu.nodes,
                "bench": self.cpu.bench,
                "machine": self.cpu.machine,
                "cores": cores(),
            },
            "node_rss_kib": self.node_rss_kib,
            "failures": self
                .failures
                .iter()
                .map(|(failure, count)| serde_json::json!({"failure": failure, "count": count}))
                .collect::<Vec<_>>(),
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
