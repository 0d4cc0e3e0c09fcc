//! A server per test and the load tool run against it, one test at a time (each run opens a few
//! hundred connections; running them side by side on two cores only invites timeouts).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gateway::{ApiKey, Config};
use protocol::Capability;
use serde_json::Value;
use test_support::{InProcess, RedisServer};

pub(crate) const KEY: &str = "load.smoke:secret";

/// A whole run, setup and drain included, gets this long before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `realtime-load <args>` against a fresh in-process server of ours and returns its JSON
/// report after checking it exited as the report says (0 = ok, 1 = failures).
pub(crate) fn run_load(args: &[&str]) -> Value {
    run_against(Server::Ours(Box::new(config())), args)
}

/// The same against our server configured as `config` (which holds the test key).
pub(crate) fn run_load_with(config: Config, args: &[&str]) -> Value {
    run_against(Server::Ours(Box::new(config)), args)
}

/// The same against `nodes` in-process servers of ours sharing a fresh `redis-server`, given to
/// the tool as a `--url` list.
pub(crate) fn run_load_on_cluster(nodes: usize, args: &[&str]) -> Value {
    run_against(Server::Cluster(nodes), args)
}

/// The same against the bare-bones broadcast server (`realtime-load ceiling`).
pub(crate) fn run_load_on_ceiling(args: &[&str]) -> Value {
    run_against(Server::Ceiling, args)
}

/// The same against `crate::broken::serve`, a server that breaks its promises.
pub(crate) fn run_load_on_broken(args: &[&str]) -> Value {
    run_against(Server::Broken, args)
}

/// Our server's default configuration with the test key.
pub(crate) fn config() -> Config {
    Config {
        keys: vec![ApiKey::parse(KEY, Capability::all()).unwrap()],
        ..Default::default()
    }
}

enum Server {
    Ours(Box<Config>),
    /// This many of ours on one Redis.
    Cluster(usize),
    Ceiling,
    Broken,
}

fn run_against(server: Server, args: &[&str]) -> Value {
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Killed on drop, after the servers on it.
    let mut redis = None;
    let (addrs, shutdown) = runtime.block_on(async {
        let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
        let addrs = match server {
            Server::Ours(config) => serve_ours(vec![*config], on_shutdown).await,
            Server::Cluster(nodes) => {
                let url = redis.insert(RedisServer::start()).url();
                // Distinct ids: a node ignores what Redis brings back from its own id.
                let configs = (0..nodes)
                    .map(|k| Config {
                        redis: Some(gateway::RedisTarget::Node(url.clone())),
                        server_id: Some(format!("smoke-{k}")),
                        ..config()
                    })
                    .collect();
                serve_ours(configs, on_shutdown).await
            }
            Server::Broken => vec![serve_until(on_shutdown, crate::broken::serve).await],
            Server::Ceiling => vec![serve_until(on_shutdown, load_tests::ceiling::serve).await],
        };
        (addrs, shutdown)
    });

    let json = report_path(args);
    let url = addrs
        .iter()
        .map(|addr| format!("http://{addr}"))
        .collect::<Vec<_>>()
        .join(",");
    let pid = std::process::id().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_realtime-load"));
    command
        .args(["--url", &url, "--key", KEY, "--quiet", "--server-pid", &pid])
        .arg("--json")
        .arg(&json)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("realtime-load runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            panic!("realtime-load {args:?} still running after {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let _ = shutdown.send(());
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(redis);

    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); exit {status}; stderr: {stderr}"));
    let _ = std::fs::remove_file(&json);
    let report: Value = serde_json::from_str(&text).unwrap();
    let ok = report["ok"].as_bool().unwrap();
    assert_eq!(
        status.code(),
        Some(if ok { 0 } else { 1 }),
        "exit code disagrees with the report: {report}"
    );
    report
}

/// Our server with each of `configs`, until `shutdown` resolves; returns their addresses.
async fn serve_ours(
    configs: Vec<Config>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for config in configs {
        servers.push(InProcess::start(config).await);
    }
    let addrs = servers.iter().map(|server| server.addr).collect();
    // Dropped (their shutdown futures resolved) when the run is over.
    tokio::spawn(async move {
        let _ = shutdown.await;
        drop(servers);
    });
    addrs
}

/// `serve` on `127.0.0.1:0` until `shutdown` resolves; returns the address.
async fn serve_until<F, Fut>(shutdown: tokio::sync::oneshot::Receiver<()>, serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: std::future::Future + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = serve(listener);
    tokio::spawn(async move {
        tokio::select! {
            _ = serving => {}
            _ = shutdown => {}
        }
    });
    addr
}

/// The checks every scenario's report must pass.
pub(crate) fn assert_clean(report: &Value) {
    assert_eq!(report["lost"], 0, "{report:#}");
    assert_eq!(report["duplicated"], 0, "{report:#}");
    assert_eq!(report["misrouted"], 0, "{report:#}");
    assert_eq!(report["connect_failures"], 0, "{report:#}");
    assert_eq!(report["subscribers_dropped"], 0, "{report:#}");
    assert_eq!(
        report["deliveries"], report["expected_deliveries"],
        "{report:#}"
    );
    assert_eq!(report["ok"], true, "{report:#}");
}

fn report_path(args: &[&str]) -> PathBuf {
    // The scenario name and a short form of the rest: long argument lists make names too long.
    let mut hash = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(args, &mut hash);
    let name = format!(
        "realtime-load-smoke-{}-{}-{:x}.json",
        std::process::id(),
        args.iter().find(|a| !a.starts_with('-')).unwrap_or(&"run"),
        std::hash::Hasher::finish(&hash)
    );
    std::env::temp_dir().join(name)
}
