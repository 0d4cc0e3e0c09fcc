//! The servers under test: which ones, how each is started fairly (pinned, one clean
//! environment, a log file each), and what to say when one is not installed here.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::ValueEnum;

use super::{write, CompareArgs};
use crate::cli::Protocol;

/// How long a server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The credentials every server is started with.
const OUR_KEY: &str = "load.bench:secret";
const APP_ID: &str = "load";
const APP_KEY: &str = "loadkey";
const APP_SECRET: &str = "loadsecret";

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
    pub(super) fn name(self) -> &'static str {
        match self {
            ServerKind::Realtime => "realtime (ours)",
            ServerKind::Ceiling => "ceiling",
            ServerKind::Socketio => "socket.io",
            ServerKind::Soketi => "soketi",
            ServerKind::Sockudo => "sockudo",
            ServerKind::SockudoAbly => "sockudo (ably)",
        }
    }

    pub(super) fn slug(self) -> &'static str {
        match self {
            ServerKind::Realtime => "realtime",
            ServerKind::Ceiling => "ceiling",
            ServerKind::Socketio => "socketio",
            ServerKind::Soketi => "soketi",
            ServerKind::Sockudo => "sockudo",
            ServerKind::SockudoAbly => "sockudo-ably",
        }
    }

    pub(super) fn protocol(self) -> Protocol {
        match self {
            ServerKind::Realtime | ServerKind::SockudoAbly => Protocol::Ably,
            ServerKind::Ceiling => Protocol::Raw,
            ServerKind::Socketio => Protocol::Socketio,
            ServerKind::Soketi | ServerKind::Sockudo => Protocol::Pusher,
        }
    }

    pub(super) fn key(self) -> String {
        match self {
            ServerKind::Realtime => OUR_KEY.to_owned(),
            ServerKind::SockudoAbly => format!("{APP_KEY}:{APP_SECRET}"),
            ServerKind::Soketi | ServerKind::Sockudo => format!("{APP_ID}:{APP_KEY}:{APP_SECRET}"),
            ServerKind::Ceiling | ServerKind::Socketio => String::new(),
        }
    }
}

/// A server under test; killed (and reaped) on drop.
pub(super) struct Process {
    child: Child,
    pub(super) pid: u32,
}

impl Process {
    pub(super) fn exited(&mut self) -> bool {
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
pub(super) fn start(
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

pub(super) fn missing(server: ServerKind, args: &CompareArgs) -> String {
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
pub(super) fn cpu_count(list: &str) -> usize {
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

/// `name` on the PATH.
pub(super) fn which(name: &str) -> Option<PathBuf> {
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
