//! Cluster mode, shared by the scenarios that run against several servers (`soak`, `fanout`):
//! the servers' addresses (`--url a,b,c`) in round-robin order (what a balancer does), which one
//! is draining, how many of our clients each holds; a `Target` that spreads connections over
//! them; and, with `--spawn`, the `realtime` processes themselves (on a `redis-server` of their
//! own on a free loopback port when there are several, or with `--redis`), started, drained,
//! restarted and watched through /proc (RSS, CPU, open fds).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;

use crate::target::{ws_base, Target};

/// How long a server or Redis gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// After SIGTERM, how long past its `--drain-ms` a node may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// Where a scenario's servers are: started by `--spawn`, or named by `--url`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Start the servers: this `realtime` binary, `--nodes` of them (on a `redis-server` of
    /// their own when more than one, or with `--redis`). Without it, `--url` names them (a
    /// comma-separated list, used round-robin).
    #[arg(long)]
    pub spawn: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// With `--spawn`: the nodes share a `redis-server` of their own even when there is one.
    #[arg(long)]
    pub redis: bool,
    /// More flags for every spawned node (`--server-arg=--max-idle-interval-ms=2000`).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    #[arg(long, env = "REDIS_SERVER", default_value = "redis-server")]
    pub redis_bin: PathBuf,
    /// Spawned nodes log to `<prefix>-node<k>.log` (default in the temp directory).
    #[arg(long)]
    pub server_logs: Option<PathBuf>,
}

impl Default for ClusterArgs {
    fn default() -> ClusterArgs {
        ClusterArgs {
            spawn: None,
            nodes: 1,
            redis: false,
            server_args: Vec::new(),
            redis_bin: PathBuf::from("redis-server"),
            server_logs: None,
        }
    }
}

impl ClusterArgs {
    /// How to start the nodes when `--spawn` was given; `name` prefixes their `--server-id`
    /// and log files.
    pub(crate) fn spawn(&self, name: &'static str, key: &str, run: &str) -> Option<Spawn> {
        self.spawn.as_ref().map(|bin| Spawn {
            bin: bin.clone(),
            name,
            nodes: self.nodes.max(1),
            key: key.to_owned(),
            token_renew_lead: None,
            drain: None,
            extra: self.server_args.clone(),
            redis: self.redis,
            redis_bin: self.redis_bin.clone(),
            log_prefix: Spawn::log_prefix(self.server_logs.as_ref(), name, run),
        })
    }
}

/// `--url`: one server, or several separated by commas.
pub(crate) fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Connections spread over several servers' targets: client `i` on `targets[i % n]`, so
/// subscribers go round the nodes and so do publishers, numbered after them.
pub struct Spread<T> {
    targets: Vec<T>,
}

impl<T: Target> Spread<T> {
    /// One target per URL of `urls` (comma-separated), made by `make`.
    pub fn new(
        urls: &str,
        make: impl Fn(&str) -> anyhow::Result<T>,
    ) -> anyhow::Result<Arc<Spread<T>>> {
        let targets = split_urls(urls)
            .iter()
            .map(|url| make(url))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if targets.is_empty() {
            bail!("no server URL");
        }
        Ok(Arc::new(Spread { targets }))
    }

    /// The node client `client` is on.
    pub fn node_of(&self, client: usize) -> usize {
        client % self.targets.len()
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// One target per node, in `--url` order.
    pub fn targets(&self) -> &[T] {
        &self.targets
    }
}

impl<T: Target> Target for Spread<T> {
    type Connection = T::Connection;

    async fn connect(&self, client: usize) -> anyhow::Result<T::Connection> {
        self.targets[self.node_of(client)].connect(client).await
    }
}

pub(crate) struct Endpoints {
    urls: Vec<String>,
    ws: Vec<String>,
    draining: Vec<AtomicBool>,
    /// Our clients connected to each node now.
    live: Vec<AtomicI64>,
    next: AtomicUsize,
}

impl Endpoints {
    /// `urls`: each node's HTTP base (`http://host:port`).
    pub(crate) fn new(urls: Vec<String>) -> anyhow::Result<Endpoints> {
        if urls.is_empty() {
            bail!("no server URL");
        }
        let ws = urls
            .iter()
            .map(|url| ws_base(url))
            .collect::<anyhow::Result<_>>()?;
        Ok(Endpoints {
            draining: urls.iter().map(|_| AtomicBool::new(false)).collect(),
            live: urls.iter().map(|_| AtomicI64::new(0)).collect(),
            urls,
            ws,
            next: AtomicUsize::new(0),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.urls.len()
    }

    /// The next node in turn, passing over one that is draining (unless all are).
    pub(crate) fn pick(&self) -> usize {
        let n = self.urls.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (first + i) % n)
            .find(|node| !self.is_draining(*node))
            .unwrap_or(first % n)
    }

    pub(crate) fn ws(&self, node: usize) -> &str {
        &self.ws[node]
    }

    pub(crate) fn is_draining(&self, node: usize) -> bool {
        self.draining[node].load(Ordering::Acquire)
    }

    pub(crate) fn set_draining(&self, node: usize, draining: bool) {
        self.draining[node].store(draining, Ordering::Release);
    }

    pub(crate) fn joined(&self, node: usize) {
        self.live[node].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn left(&self, node: usize) {
        self.live[node].fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn live(&self, node: usize) -> i64 {
        self.live[node].load(Ordering::Relaxed)
    }
}

/// How `--spawn` starts each node.
pub(crate) struct Spawn {
    pub(crate) bin: PathBuf,
    /// The scenario: node `k` is `--server-id <name>-<k>`.
    pub(crate) name: &'static str,
    pub(crate) nodes: usize,
    pub(crate) key: String,
    /// The nodes' `--token-renew-lead-ms`, when not the server's default.
    pub(crate) token_renew_lead: Option<Duration>,
    /// The nodes' `--drain-ms`, when not the server's default.
    pub(crate) drain: Option<Duration>,
    /// Passed to every node as they are (`--server-arg=--max-idle-interval-ms=2000`).
    pub(crate) extra: Vec<String>,
    /// A `redis-server` of their own even for one node (always for several).
    pub(crate) redis: bool,
    pub(crate) redis_bin: PathBuf,
    /// Where the nodes' logs go (`<prefix>-node<k>.log`).
    pub(crate) log_prefix: PathBuf,
}

impl Spawn {
    /// The key spawned nodes are started with: the one given (`--key`), else `default`.
    pub(crate) fn key_or(given: &str, default: &str) -> String {
        if given.is_empty() { default } else { given }.to_owned()
    }

    /// Where a scenario's node logs go: `--server-logs`, else `<tmp>/realtime-<scenario>-<run>`.
    pub(crate) fn log_prefix(server_logs: Option<&PathBuf>, scenario: &str, run: &str) -> PathBuf {
        server_logs
            .cloned()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("realtime-{scenario}-{run}")))
    }
}

/// The processes `--spawn` started; killed (and reaped) on drop.
pub(crate) struct Cluster {
    spawn: Spawn,
    redis: Option<(Child, u16)>,
    nodes: Vec<Node>,
}

struct Node {
    port: u16,
    child: Option<Child>,
    started: Instant,
}

impl Cluster {
    /// Starts `spawn` when `--spawn` was given; without it the run targets a server already
    /// running, which needs `--key`.
    pub(crate) async fn start_if(
        spawn: Option<Spawn>,
        key_given: bool,
    ) -> anyhow::Result<Option<Cluster>> {
        match spawn {
            Some(spawn) => Ok(Some(Cluster::start(spawn).await?)),
            None if !key_given => {
                anyhow::bail!("--key (or REALTIME_LOAD_KEY) is required without --spawn")
            }
            None => Ok(None),
        }
    }

    pub(crate) async fn start(spawn: Spawn) -> anyhow::Result<Cluster> {
        let bin = std::fs::canonicalize(&spawn.bin)
            .with_context(|| format!("--spawn {}", spawn.bin.display()))?;
        let spawn = Spawn { bin, ..spawn };
        let redis = if spawn.nodes > 1 || spawn.redis {
            let port = free_port()?;
            let child = Command::new(&spawn.redis_bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", spawn.redis_bin.display()))?;
            let mut redis = (child, port);
            wait_listening(port, &mut redis.0, "redis-server").await?;
            Some(redis)
        } else {
            None
        };
        let mut cluster = Cluster {
            spawn,
            redis,
            nodes: Vec::new(),
        };
        for k in 0..cluster.spawn.nodes {
            let port = free_port()?;
            let child = cluster.start_node(k, port).await?;
            cluster.nodes.push(Node {
                port,
                child: Some(child),
                started: Instant::now(),
            });
        }
        Ok(cluster)
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("http://127.0.0.1:{}", node.port))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The `redis-server`'s process id, when the nodes have one.
    pub(crate) fn redis_pid(&self) -> Option<u32> {
        self.redis.as_ref().map(|(child, _)| child.id())
    }

    /// Node `k`'s process id and when it started, while it runs.
    pub(crate) fn pid(&self, k: usize) -> Option<(u32, Instant)> {
        let node = &self.nodes[k];
        node.child.as_ref().map(|child| (child.id(), node.started))
    }

    /// Whether node `k` has exited (when nobody asked it to).
    pub(crate) fn exited(&mut self, k: usize) -> bool {
        let node = &mut self.nodes[k];
        node.child
            .as_mut()
            .is_some_and(|child| !matches!(child.try_wait(), Ok(None)))
    }

    pub(crate) fn log(&self, k: usize) -> PathBuf {
        log_path(&self.spawn.log_prefix, k)
    }

    /// SIGTERM to node `k` (it hands its clients over for `--drain-ms`), waits for it to exit,
    /// then starts it again on the same port.
    pub(crate) async fn drain(&mut self, k: usize) -> anyhow::Result<()> {
        let Some(mut child) = self.nodes[k].child.take() else {
            bail!("node {k} is not running");
        };
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("kill -TERM")?;
        if !killed.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        let drain = self.spawn.drain.unwrap_or_default();
        let deadline = Instant::now() + drain + EXIT_GRACE;
        let exited = loop {
            if !matches!(child.try_wait(), Ok(None)) {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.nodes[k].port;
        let restarted = self.start_node(k, port).await?;
        self.nodes[k].child = Some(restarted);
        self.nodes[k].started = Instant::now();
        if !exited {
            bail!(
                "node {k} still running {:?} after SIGTERM (killed; see {})",
                drain + EXIT_GRACE,
                self.log(k).display()
            );
        }
        Ok(())
    }

    async fn start_node(&self, k: usize, port: u16) -> anyhow::Result<Child> {
        let spawn = &self.spawn;
        let log = log_path(&spawn.log_prefix, k);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(&spawn.bin);
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--keys", &spawn.key])
            .args(["--server-id", &format!("{}-{k}", spawn.name)]);
        if let Some(lead) = spawn.token_renew_lead {
            command.arg(format!("--token-renew-lead-ms={}", lead.as_millis()));
        }
        if let Some(drain) = spawn.drain {
            command.arg(format!("--drain-ms={}", drain.as_millis()));
        }
        if let Some((_, redis_port)) = &self.redis {
            command.args(["--redis", &format!("redis://127.0.0.1:{redis_port}")]);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command
            .args(&spawn.extra)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", spawn.bin.display()))?;
        let what = format!("node {k} (see {})", log.display());
        if let Err(error) = wait_listening(port, &mut child, &what).await {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        Ok(child)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().filter_map(|node| node.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((child, _)) = &mut self.redis {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn log_path(prefix: &Path, k: usize) -> PathBuf {
    PathBuf::from(format!("{}-node{k}.log", prefix.display()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_listening(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if !matches!(child.try_wait(), Ok(None)) {
            bail!("{what} exited at start");
        }
        if started.elapsed() > START_TIMEOUT {
            bail!("{what} not listening after {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Open file descriptors of process `pid` (Linux).
pub(crate) fn open_fds(pid: u32) -> std::io::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}
