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

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::cli::{parse_duration, FanoutArgs, IdleArgs, Protocol, Shared};
use crate::report::Report;
use crate::scenario::{fanout, idle};

/// How long a server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// After a server stops, time for its port and sockets to be released before the next starts.
const BETWEEN_SERVERS: Duration = Duration::from_secs(2);
/// The credentials every server is started with.
const OUR_KEY: &str = "load.bench:secret";
const APP_ID: &str = "load";
const APP_KEY: &str = "loadkey";
const APP_SECRET: &str = "loadsecret";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    /// Ours: `realtime serve`, Ably protocol.
    Realtime,
    /// `realtime-load ceiling` (this binary), raw frames.
    Ceiling,
    /// Socket.IO 4 with our fan-out script.
    Socketio,
    /// Soketi, Pusher protocol.
    Soketi,
    /// Sockudo, Pusher protocol.
    Sockudo,
    /// Sockudo's Ably facade.
    SockudoAbly,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Realtime => "realtime (ours)",
            ServerKind::Ceiling => "ceiling",
            ServerKind::Socketio => "socket.io",
            ServerKind::Soketi => "soketi",
            ServerKind::Sockudo => "sockudo",
            ServerKind::SockudoAbly => "sockudo (ably)",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            ServerKind::Realtime => "realtime",
            ServerKind::Ceiling => "ceiling",
            ServerKind::Socketio => "socketio",
            ServerKind::Soketi => "soketi",
            ServerKind::Sockudo => "sockudo",
            ServerKind::SockudoAbly => "sockudo-ably",
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            ServerKind::Realtime | ServerKind::SockudoAbly => Protocol::Ably,
            ServerKind::Ceiling => Protocol::Raw,
            ServerKind::Socketio => Protocol::Socketio,
            ServerKind::Soketi | ServerKind::Sockudo => Protocol::Pusher,
        }
    }

    fn key(self) -> String {
        match self {
            ServerKind::Realtime => OUR_KEY.to_owned(),
            ServerKind::SockudoAbly => format!("{APP_KEY}:{APP_SECRET}"),
            ServerKind::Soketi | ServerKind::Sockudo => format!("{APP_ID}:{APP_KEY}:{APP_SECRET}"),
            ServerKind::Ceiling | ServerKind::Socketio => String::new(),
        }
    }
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

/// A server under test; killed (and reaped) on drop.
struct Process {
    child: Child,
    pid: u32,
}

impl Process {
    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `server` and waits until it listens; `None` when it is not installed here.
fn start(
    server: ServerKind,
    args: &CompareArgs,
    taskset: Option<&Path>,
) -> anyhow::Result<Option<Process>> {
    let port = args.port;
    let listen = format!("127.0.0.1:{port}");
    let work_dir = std::env::temp_dir().join(format!("realtime-compare-{}", server.slug()));
    std::fs::create_dir_all(&work_dir)?;
    // As many tokio workers as the server has cores (Node is single-threaded anyway).
    let workers = cpu_count(&args.server_cpus).to_string();
    let (program, program_args, env): (PathBuf, Vec<String>, Vec<(String, String)>) = match server {
        ServerKind::Realtime => {
            if !args.realtime_bin.exists() {
                return Ok(None);
            }
            (
                std::fs::canonicalize(&args.realtime_bin)?,
                vec![
                    "serve".into(),
                    "--listen".into(),
                    listen.clone(),
                    "--keys".into(),
                    OUR_KEY.into(),
                    // The open loop saturates one connection on purpose, as with the peers.
                    "--publish-connection-messages-per-sec".into(),
                    "0".into(),
                ],
                vec![("TOKIO_WORKER_THREADS".into(), workers.clone())],
            )
        }
        ServerKind::Ceiling => (
            std::env::current_exe()?,
            vec!["ceiling".into(), "--listen".into(), listen.clone()],
            vec![("TOKIO_WORKER_THREADS".into(), workers.clone())],
        ),
        ServerKind::Socketio => {
            let script = &args.socketio_server;
            let installed = script
                .parent()
                .map(|dir| dir.join("node_modules/socket.io").exists())
                .unwrap_or(false);
            if !script.exists() || !installed || which_path(&args.node_bin).is_none() {
                return Ok(None);
            }
            (
                args.node_bin.clone(),
                vec![std::fs::canonicalize(script)?.display().to_string()],
                vec![
                    ("HOST".into(), "127.0.0.1".into()),
                    ("PORT".into(), port.to_string()),
                ],
            )
        }
        ServerKind::Soketi => {
            let Some(soketi) = which_path(&args.soketi_bin) else {
                return Ok(None);
            };
            let mut env: Vec<(String, String)> = [
                ("SOKETI_HOST", "127.0.0.1".to_owned()),
                ("SOKETI_PORT", port.to_string()),
                ("SOKETI_DEFAULT_APP_ID", APP_ID.to_owned()),
                ("SOKETI_DEFAULT_APP_KEY", APP_KEY.to_owned()),
                ("SOKETI_DEFAULT_APP_SECRET", APP_SECRET.to_owned()),
                ("SOKETI_DEFAULT_APP_MAX_CONNS", "-1".to_owned()),
                (
                    "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC",
                    "-1".to_owned(),
                ),
                ("SOKETI_METRICS_ENABLED", "false".to_owned()),
                ("SOKETI_METRICS_SERVER_PORT", (port + 2).to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            env.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
            (soketi, vec!["start".into()], env)
        }
        ServerKind::Sockudo | ServerKind::SockudoAbly => {
            let Some(sockudo) = which_path(&args.sockudo_bin) else {
                return Ok(None);
            };
            let config = work_dir.join("sockudo.toml");
            write(&config, &sockudo_config(port))?;
            (
                sockudo,
                vec!["--config".into(), config.display().to_string()],
                vec![("TOKIO_WORKER_THREADS".into(), workers.clone())],
            )
        }
    };
    let log_path = PathBuf::from(format!("{}-{}.log", args.out.display(), server.slug()));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = match taskset {
        Some(taskset) => {
            let mut command = Command::new(taskset);
            command.arg("-c").arg(&args.server_cpus).arg(&program);
            command
        }
        None => Command::new(&program),
    };
    // A clean environment: Sockudo and Soketi read generic names (HOST, PORT) and `.env` files.
    command
        .args(&program_args)
        .env_clear()
        .envs(env)
        .current_dir(&work_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if server == ServerKind::Socketio {
        command.env("PATH", std::env::var("PATH").unwrap_or_default());
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut process = Process {
        pid: child.id(),
        child,
    };
    let address: SocketAddr = listen.parse()?;
    let started = Instant::now();
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            break;
        }
        if process.exited() {
            bail!("exited at start (see {})", log_path.display());
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "not listening after {START_TIMEOUT:?} (see {})",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Listening is not always ready (Soketi's app manager, Node's first ticks).
    std::thread::sleep(Duration::from_millis(500));
    Ok(Some(process))
}

fn missing(server: ServerKind, args: &CompareArgs) -> String {
    match server {
        ServerKind::Realtime => format!(
            "no {} (cargo build --release -p realtime)",
            args.realtime_bin.display()
        ),
        ServerKind::Ceiling => "this binary cannot start itself".to_owned(),
        ServerKind::Socketio => format!(
            "no {} with node_modules/socket.io beside it (npm ci there), or no {}",
            args.socketio_server.display(),
            args.node_bin.display()
        ),
        ServerKind::Soketi => format!(
            "no {} (see load-tests/README.md, \"Peers\")",
            args.soketi_bin.display()
        ),
        ServerKind::Sockudo | ServerKind::SockudoAbly => {
            format!(
                "no {} (see load-tests/README.md, \"Peers\")",
                args.sockudo_bin.display()
            )
        }
    }
}

/// Sockudo started fairly (peers.md): in-memory adapter and app, no rate limiter, no metrics
/// listener, the Ably facade on, the app's limits out of the way.
fn sockudo_config(port: u16) -> String {
    format!(
        r#"host = "127.0.0.1"
port = {port}
mode = "production"
debug = false

[adapter]
driver = "local"

[app_manager]
driver = "memory"

[[app_manager.array.apps]]
id = "{APP_ID}"
key = "{APP_KEY}"
secret = "{APP_SECRET}"
enabled = true

[app_manager.array.apps.policy.limits]
max_connections = 1000000
max_client_events_per_second = 1000000
max_backend_events_per_second = 1000000

[rate_limiter]
enabled = false

[metrics]
enabled = false

[ably_compat]
enabled = true

[push]
allow_memory_drivers = true
"#
    )
}

/// CPUs in a `taskset -c` list such as `0`, `0-3` or `0,2-3` (at least 1).
fn cpu_count(list: &str) -> usize {
    list.split(',')
        .map(|part| match part.trim().split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum::<usize>()
        .max(1)
}

fn tables(runs: &[Run], notes: &[String], shared: &Shared, args: &CompareArgs) -> String {
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
        match &run.outcome {
            Ok(s) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {workload} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    run.server.name(),
                    run.server.protocol().name(),
                    number(&s["publications_per_s"], 0),
                    number(&s["deliveries_per_s"], 0),
                    number(&s["latency_ms_p50"], 1),
                    number(&s["latency_ms_p99"], 1),
                    number(&s["latency_ms_max"], 1),
                    number(&s["lost"], 0),
                    number(&s["duplicated"], 0),
                    number(&s["server_cpu_percent"], 0),
                    number(&s["server_rss_mib"], 0),
                    verdict(s),
                );
            }
            Err(error) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {workload} | did not run: {error} |||||||||||",
                    run.server.name(),
                    run.server.protocol().name(),
                );
            }
        }
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
            match &run.outcome {
                Ok(s) => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        run.server.name(),
                        run.server.protocol().name(),
                        number(&s["connections"], 0),
                        number(&s["server_rss_baseline_mib"], 0),
                        number(&s["server_rss_loaded_mib"], 0),
                        number(&s["server_rss_kib_per_connection"], 1),
                        number(&s["server_cpu_us_per_connection_per_s"], 2),
                        number(&s["connect_ms_p99"], 0),
                        verdict(s),
                    );
                }
                Err(error) => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | did not run: {error} |||||||",
                        run.server.name(),
                        run.server.protocol().name()
                    );
                }
            }
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

fn verdict(summary: &Value) -> &'static str {
    if summary["ok"] == Value::Bool(true) {
        "yes"
    } else {
        "**no**"
    }
}

/// A metric with `decimals` places and thousands separators; `–` when absent.
fn number(value: &Value, decimals: usize) -> String {
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

fn humantime(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `name` on the PATH.
fn which(name: &str) -> Option<PathBuf> {
    which_path(Path::new(name))
}

fn which_path(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.exists().then(|| program.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests;
