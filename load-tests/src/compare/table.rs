//! The Markdown tables `compare` prints and writes: fanout runs, idle runs, notes, failures.

use std::fmt::Write as _;

use serde_json::Value;

use super::{humantime, CompareArgs, Run};
use crate::cli::Shared;

pub(super) fn tables(
    runs: &[Run],
    notes: &[String],
    shared: &Shared,
    args: &CompareArgs,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Fanout: {} publishers, {} B payloads, {} per run (open loop: {} unconfirmed per \
         publisher and at most {} deliveries per subscriber not yet received; half rate: half the \
         open loop's publications/s). Server pinned to CPU {}.\n",
        args.publishers,
        args.size,
        humantime(shared.duration()),
        args.window,
        args.backlog,
        args.server_cpus
    );
    out.push_str(
        "| server | protocol | workload | publications/s | deliveries/s | p50 ms | p99 ms | max ms \
         | lost | dup | server CPU % | server RSS MiB | ok |\n",
    );
    out.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for run in runs.iter().filter(|run| run.workload.starts_with("fanout")) {
        let workload = run.workload.trim_start_matches("fanout ");
        row(&mut out, run, &[workload], FANOUT_COLUMNS);
    }
    let idle: Vec<&Run> = runs.iter().filter(|run| run.workload == "idle").collect();
    if !idle.is_empty() {
        let _ = writeln!(
            out,
            "\nIdle: {} connections held {} (no subscriptions; each protocol's own heartbeat).\n",
            args.idle_connections,
            humantime(args.idle_duration)
        );
        out.push_str(
            "| server | protocol | connections | RSS before MiB | RSS loaded MiB \
             | KiB per connection | CPU µs per connection per s | connect p99 ms | ok |\n",
        );
        out.push_str("|---|---|--:|--:|--:|--:|--:|--:|---|\n");
        for run in idle {
            row(&mut out, run, &[], IDLE_COLUMNS);
        }
    }
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    let failed: Vec<String> = runs
        .iter()
        .filter_map(|run| {
            let summary = run.outcome.as_ref().ok()?;
            (summary["ok"] != Value::Bool(true)).then(|| {
                format!(
                    "- {} {}: {}",
                    run.server.name(),
                    run.workload,
                    summary["failures"]
                )
            })
        })
        .collect();
    if !failed.is_empty() {
        out.push_str("\nFailed runs:\n");
        for line in failed {
            let _ = writeln!(out, "{line:.400}");
        }
    }
    out
}

/// The fanout table's metrics after the workload, each with its decimals.
const FANOUT_COLUMNS: &[(&str, usize)] = &[
    ("publications_per_s", 0),
    ("deliveries_per_s", 0),
    ("latency_ms_p50", 1),
    ("latency_ms_p99", 1),
    ("latency_ms_max", 1),
    ("lost", 0),
    ("duplicated", 0),
    ("server_cpu_percent", 0),
    ("server_rss_mib", 0),
];

/// The idle table's metrics, each with its decimals.
const IDLE_COLUMNS: &[(&str, usize)] = &[
    ("connections", 0),
    ("server_rss_baseline_mib", 0),
    ("server_rss_loaded_mib", 0),
    ("server_rss_kib_per_connection", 1),
    ("server_cpu_us_per_connection_per_s", 2),
    ("connect_ms_p99", 0),
];

/// One run's row: server, protocol, the `lead` cells, `columns` of its summary and the verdict;
/// a run that did not run says why and leaves the rest of the row empty.
fn row(out: &mut String, run: &Run, lead: &[&str], columns: &[(&str, usize)]) {
    let _ = write!(
        out,
        "| {} | {} |",
        run.server.name(),
        run.server.protocol().name()
    );
    for cell in lead {
        let _ = write!(out, " {cell} |");
    }
    match &run.outcome {
        Ok(summary) => {
            for (key, decimals) in columns {
                let _ = write!(out, " {} |", number(&summary[*key], *decimals));
            }
            let _ = writeln!(out, " {} |", verdict(summary));
        }
        Err(error) => {
            let _ = writeln!(
                out,
                " did not run: {error} |{}",
                "|".repeat(columns.len() + 1)
            );
        }
    }
}

fn verdict(summary: &Value) -> &'static str {
    if summary["ok"] == Value::Bool(true) {
        "yes"
    } else {
        "**no**"
    }
}

/// A metric with `decimals` places and thousands separators; `–` when absent.
pub(super) fn number(value: &Value, decimals: usize) -> String {
    let Some(number) = value.as_f64() else {
        return "–".to_owned();
    };
    let text = format!("{number:.decimals$}");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, digits) = whole
        .strip_prefix('-')
        .map_or(("", whole), |digits| ("-", digits));
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if fraction.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{fraction}")
    }
}
