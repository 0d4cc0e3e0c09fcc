//! `realtime-load compare`: our server, the bare-bones ceiling and each peer found on this machine
//! (Socket.IO, Soketi, Sockudo over Pusher and over its Ably facade), started one at a time as
//! child processes pinned with `taskset -c <server-cpus>` (one worker thread where the server has
//! a knob for it), and the same workloads run against each from this process:
//!
//! - `idle`: `--idle-connections` held open for `--idle-duration`: RSS and CPU per connection.
//! - per fanout shape (`--shapes 1x1000,1000x10`: channels × subscribers): an open-loop run
//!   (saturation: each publisher keeps `--window` unconfirmed), then a fixed-rate run at half the
//!   publications/s the open loop reached (the latency target is stated there).
//!
//! Run the tool itself on the other core (`taskset -c 1 realtime-load compare ...`). Writes
//! `<out>.md` (the tables), `<out>.json` (every run's full summary) and, with `--plot`, bars of
//! deliveries/s per server and shape. A peer whose binary or script is missing is skipped with a
//! note in the table; peers are never part of this repository (load-tests/README.md says how to
//! install them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::cli::{parse_duration, FanoutArgs, IdleArgs, Shared};
use crate::report::Report;
use crate::scenario::{fanout, idle};

mod peers;
mod table;

pub use peers::ServerKind;
use peers::{missing, start, which};
use table::tables;

/// After a server stops, time for its port and sockets to be released before the next starts.
const BETWEEN_SERVERS: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Servers to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "realtime,ceiling,socketio,soketi,sockudo,sockudo-ably"
    )]
    pub servers: Vec<ServerKind>,
    /// Our server's release binary.
    #[arg(long, env = "REALTIME_BIN", default_value = "target/release/realtime")]
    pub realtime_bin: PathBuf,
    /// Node.js, for the Socket.IO server (Soketi's bin finds its own through `env`).
    #[arg(long, env = "NODE_BIN", default_value = "node")]
    pub node_bin: PathBuf,
    /// Our Socket.IO fan-out server (`npm ci` in its folder first).
    #[arg(
        long,
        env = "SOCKETIO_SERVER",
        default_value = "load-tests/peers/socketio-server.mjs"
    )]
    pub socketio_server: PathBuf,
    /// Soketi's installed bin (`npm install @soketi/soketi@1.6.1` outside this repository), a
    /// path or a name on the PATH.
    #[arg(long, env = "SOKETI_BIN", default_value = "soketi")]
    pub soketi_bin: PathBuf,
    /// Sockudo built with `--features ably-compat` (`cargo install sockudo --features
    /// ably-compat`), a path or a name on the PATH.
    #[arg(long, env = "SOCKUDO_BIN", default_value = "sockudo")]
    pub sockudo_bin: PathBuf,
    /// CPUs the server under test is pinned to (`taskset -c`).
    #[arg(long, default_value = "0")]
    pub server_cpus: String,
    /// Loopback port the servers listen on (Soketi also takes the next two).
    #[arg(long, default_value_t = 18_100)]
    pub port: u16,
    /// Fanout shapes, `CHANNELSxSUBSCRIBERS`.
    #[arg(long, value_delimiter = ',', default_value = "1x1000,1000x10")]
    pub shapes: Vec<String>,
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Open loop: unconfirmed publications per publisher.
    #[arg(long, default_value_t = 32)]
    pub window: u64,
    /// Open loop: deliveries per subscriber not yet received, at most.
    #[arg(long, default_value_t = 64)]
    pub backlog: u64,
    /// Idle connections per server (0: no idle run).
    #[arg(long, default_value_t = 10_000)]
    pub idle_connections: usize,
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub idle_duration: Duration,
    /// Writes `<out>.md` and `<out>.json`; server logs go to `<out>-<server>.log`.
    #[arg(long, default_value = "compare")]
    pub out: PathBuf,
    /// Run nothing: rebuild the tables and the plot from an earlier run's `<out>.json`.
    #[arg(long)]
    pub from_json: Option<PathBuf>,
}

/// One workload against one server.
struct Run {
    server: ServerKind,
    workload: String,
    /// The run's summary (`Report::to_json`), or why it did not run.
    outcome: Result<Value, String>,
}

pub async fn run(shared: &Shared, args: &CompareArgs) -> anyhow::Result<Report> {
    let shapes = args
        .shapes
        .iter()
        .map(|shape| parse_shape(shape))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (runs, notes) = match &args.from_json {
        Some(path) => load(path)?,
        None => run_all(shared, args, &shapes).await?,
    };
    let markdown = tables(&runs, &notes, shared, args);
    let json = json!({
        "runs": runs.iter().map(|run| json!({
            "server": run.server.name(),
            "protocol": run.server.protocol().name(),
            "workload": run.workload,
            "summary": match &run.outcome { Ok(v) => v.clone(), Err(e) => json!({ "error": e }) },
        })).collect::<Vec<_>>(),
        "notes": notes,
    });
    write(&args.out.with_extension("md"), &markdown)?;
    write(
        &args.out.with_extension("json"),
        &(serde_json::to_string_pretty(&json)? + "\n"),
    )?;
    if let Some(path) = &shared.plot {
        let groups: Vec<(String, Vec<(String, f64)>)> = shapes
            .iter()
            .map(|(channels, subscribers)| {
                let shape = format!("fanout {channels}x{subscribers} ");
                let bars = args
                    .servers
                    .iter()
                    .filter_map(|&server| {
                        let best = best_clean_rate(&runs, server, &shape)?;
                        Some((server.name().to_owned(), best))
                    })
                    .collect();
                (
                    format!("{channels} channel(s) x {subscribers} subscribers"),
                    bars,
                )
            })
            .collect();
        crate::plot::write_bars(path, "deliveries/s, best run without loss", &groups)?;
    }
    print!("{markdown}");

    let mut report = Report::new("compare");
    report.metric("runs", runs.len());
    for run in &runs {
        match &run.outcome {
            Ok(summary) if summary["ok"] == Value::Bool(true) => {}
            Ok(summary) => report.fail(format!(
                "{} {}: {}",
                run.server.name(),
                run.workload,
                summary["failures"]
            )),
            Err(error) => report.fail(format!("{} {}: {error}", run.server.name(), run.workload)),
        }
    }
    Ok(report)
}

/// The highest deliveries/s of `server`'s clean runs (nothing lost, duplicated or dropped) whose
/// workload starts with `shape`.
fn best_clean_rate(runs: &[Run], server: ServerKind, shape: &str) -> Option<f64> {
    runs.iter()
        .filter(|run| run.server == server && run.workload.starts_with(shape))
        .filter_map(|run| {
            let summary = run.outcome.as_ref().ok()?;
            (summary["ok"] == Value::Bool(true)).then_some(())?;
            summary["deliveries_per_s"].as_f64()
        })
        .reduce(f64::max)
}

/// The runs and notes of an earlier `<out>.json`.
fn load(path: &Path) -> anyhow::Result<(Vec<Run>, Vec<String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let saved: Value = serde_json::from_str(&text)?;
    let mut runs = Vec::new();
    for run in saved["runs"].as_array().into_iter().flatten() {
        let name = run["server"].as_str().unwrap_or_default();
        let Some(server) = ServerKind::value_variants()
            .iter()
            .copied()
            .find(|server| server.name() == name)
        else {
            bail!("{}: unknown server {name:?}", path.display());
        };
        let summary = &run["summary"];
        let outcome = match summary["error"].as_str() {
            Some(error) => Err(error.to_owned()),
            None => Ok(summary.clone()),
        };
        runs.push(Run {
            server,
            workload: run["workload"].as_str().unwrap_or_default().to_owned(),
            outcome,
        });
    }
    let notes = saved["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|note| Some(note.as_str()?.to_owned()))
        .collect();
    Ok((runs, notes))
}

async fn run_all(
    shared: &Shared,
    args: &CompareArgs,
    shapes: &[(usize, usize)],
) -> anyhow::Result<(Vec<Run>, Vec<String>)> {
    let taskset = which("taskset");
    let mut runs = Vec::new();
    let mut notes = Vec::new();
    for &server in &args.servers {
        let mut process = match start(server, args, taskset.as_deref()) {
            Ok(Some(process)) => process,
            Ok(None) => {
                notes.push(format!(
                    "{}: skipped, {}",
                    server.name(),
                    missing(server, args)
                ));
                continue;
            }
            Err(error) => {
                notes.push(format!("{}: did not start: {error:#}", server.name()));
                continue;
            }
        };
        eprintln!("compare: {} (pid {})", server.name(), process.pid);
        let mut on = shared.clone();
        on.url = format!("http://127.0.0.1:{}", args.port);
        on.key = server.key();
        on.protocol = server.protocol();
        on.server_pid = Some(process.pid);
        on.json = None;
        on.plot = None;

        if args.idle_connections > 0 {
            let mut idle_shared = on.clone();
            idle_shared.duration = Some(args.idle_duration);
            let idle_args = IdleArgs {
                connections: args.idle_connections,
                attach: false,
            };
            let outcome = idle::run(&idle_shared, &idle_args).await;
            runs.push(finish(server, "idle".to_owned(), outcome));
        }
        for &(channels, subscribers) in shapes {
            let mut fanout_args = FanoutArgs {
                channels,
                subscribers,
                publishers: args.publishers,
                rate: 0.0,
                size: args.size,
                window: args.window,
                backlog: args.backlog,
                ephemeral: false,
                node_pids: Vec::new(),
                redis_pid: None,
                cluster: Default::default(),
            };
            let shape = format!("{channels}x{subscribers}");
            let saturated = fanout::run(&on, &fanout_args).await;
            let max_rate = saturated
                .as_ref()
                .ok()
                .and_then(|report| report.get("publications_per_s")?.as_f64())
                .unwrap_or(0.0);
            runs.push(finish(
                server,
                format!("fanout {shape} open loop"),
                saturated,
            ));
            if max_rate >= 2.0 {
                fanout_args.rate = (max_rate / 2.0).floor();
                let outcome = fanout::run(&on, &fanout_args).await;
                runs.push(finish(server, format!("fanout {shape} half rate"), outcome));
            }
            if process.exited() {
                break;
            }
        }
        if process.exited() {
            notes.push(format!(
                "{}: the server exited during the runs",
                server.name()
            ));
        }
        drop(process);
        tokio::time::sleep(BETWEEN_SERVERS).await;
    }

    Ok((runs, notes))
}

fn finish(server: ServerKind, workload: String, outcome: anyhow::Result<Report>) -> Run {
    let outcome = outcome
        .map(|report| report.to_json())
        .map_err(|error| format!("{error:#}"));
    match &outcome {
        Ok(summary) => eprintln!(
            "compare: {} {workload}: deliveries/s {} p99 {} ms ok {}",
            server.name(),
            summary["deliveries_per_s"],
            summary["latency_ms_p99"],
            summary["ok"]
        ),
        Err(error) => eprintln!("compare: {} {workload}: {error}", server.name()),
    }
    Run {
        server,
        workload,
        outcome,
    }
}

fn parse_shape(shape: &str) -> anyhow::Result<(usize, usize)> {
    let (channels, subscribers) = shape
        .split_once('x')
        .with_context(|| format!("shape {shape:?} is not CHANNELSxSUBSCRIBERS"))?;
    Ok((channels.trim().parse()?, subscribers.trim().parse()?))
}

fn humantime(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests;
