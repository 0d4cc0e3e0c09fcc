//! Real `redis-server` processes on free loopback ports (never the machine's own on 6379), each
//! in a directory of its own that is removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, Certificates};

/// A fresh directory under the system's temporary one, unique to this process and `port`.
fn own_dir(what: &str, port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{what}-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

fn cli(port: u16, tls: Option<&Certificates>, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(tls.map(cli_tls).unwrap_or_default())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `redis-cli`'s flags for a TLS server signed by `certificates`' CA (with the client
/// certificate, for a server that asks for one).
fn cli_tls(certificates: &Certificates) -> Vec<std::ffi::OsString> {
    vec![
        "--tls".into(),
        "--cacert".into(),
        certificates.ca.clone().into(),
        "--cert".into(),
        certificates.client_cert.clone().into(),
        "--key".into(),
        certificates.client_key.clone().into(),
    ]
}

/// `redis-server`'s flags for TLS only on `port` (no plain port), with `certificates`' server
/// certificate; with `mutual`, clients must show a certificate the CA signed.
fn server_tls(port: u16, certificates: &Certificates, mutual: bool) -> Vec<std::ffi::OsString> {
    vec![
        "--port".into(),
        "0".into(),
        "--tls-port".into(),
        port.to_string().into(),
        "--tls-cert-file".into(),
        certificates.server_cert.clone().into(),
        "--tls-key-file".into(),
        certificates.server_key.clone().into(),
        "--tls-ca-cert-file".into(),
        certificates.ca.clone().into(),
        "--tls-auth-clients".into(),
        if mutual { "yes" } else { "no" }.into(),
    ]
}

/// `--port <port>`, or TLS on it.
fn listen(port: u16, tls: Option<&Certificates>, mutual: bool) -> Vec<std::ffi::OsString> {
    match tls {
        Some(certificates) => server_tls(port, certificates, mutual),
        None => vec!["--port".into(), port.to_string().into()],
    }
}

/// How many fresh ports a first start tries: between `free_port` and the server's bind another
/// process (a parallel test's outgoing connection) can take the port, and the server exits.
const START_ATTEMPTS: usize = 5;

/// Waits (bounded) until `child` itself listens on loopback `port` (not some other process that
/// took the port: a parallel test's server); false if it exited first.
fn came_up(child: &mut Child, port: u16) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !listens(child.id(), port) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not come up on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Whether process `pid` holds a socket listening on TCP `port` (from `/proc`).
fn listens(pid: u32, port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, ..., st (0A = LISTEN), ..., inode
            if fields.len() > 9 && fields[1].ends_with(&wanted) && fields[3] == "0A" {
                inodes.push(format!("socket:[{}]", fields[9]));
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| {
            inodes
                .iter()
                .any(|inode| target.as_os_str() == inode.as_str())
        })
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One `redis-server`, killed (and its directory removed) on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    /// `--dir`: where it keeps its snapshot or append-only file, if it keeps one.
    pub dir: PathBuf,
    /// How it keeps data on disk (flags), the same on every restart.
    persistence: Vec<String>,
    /// TLS only (`rediss://`), with these certificates.
    tls: Option<Certificates>,
    /// With `tls`: clients must show a certificate.
    mutual: bool,
}

impl RedisServer {
    /// Keeping nothing on disk: a restart comes back empty.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// With `persistence` flags (e.g. `--appendonly yes`) instead of keeping nothing; files go
    /// to its own `dir`.
    pub fn start_with(persistence: &[&str]) -> RedisServer {
        RedisServer::start_on(persistence, None, false)
    }

    /// A replica of `master`, keeping nothing on disk; TLS only (replicating over TLS) when
    /// `master` is.
    pub fn start_replica_of(master: &RedisServer) -> RedisServer {
        let port = master.port.to_string();
        let mut args = vec![
            "--save",
            "",
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &port,
        ];
        if master.tls.is_some() {
            args.extend(["--tls-replication", "yes"]);
        }
        RedisServer::start_on(&args, master.tls.clone(), false)
    }

    /// TLS only, with `certificates`' server certificate (`url` is `rediss://`); keeping
    /// nothing on disk.
    pub fn start_tls(certificates: &Certificates) -> RedisServer {
        RedisServer::start_on(
            &["--save", "", "--appendonly", "no"],
            Some(certificates.clone()),
            false,
        )
    }

    /// `start_tls`, and clients must show a certificate the CA signed (mutual TLS).
    pub fn start_mutual_tls(certificates: &Certificates) -> RedisServer {
        RedisServer::start_on(
            &["--save", "", "--appendonly", "no"],
            Some(certificates.clone()),
            true,
        )
    }

    fn start_on(persistence: &[&str], tls: Option<Certificates>, mutual: bool) -> RedisServer {
        let persistence: Vec<String> = persistence.iter().map(|s| s.to_string()).collect();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let dir = own_dir("realtime-redis", port);
            let mut child = spawn(port, &dir, &persistence, tls.as_ref(), mutual);
            if came_up(&mut child, port) {
                return RedisServer {
                    port,
                    child,
                    dir,
                    persistence,
                    tls,
                    mutual,
                };
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("redis-server exited on {START_ATTEMPTS} fresh ports in a row");
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills (SIGKILL) and starts again on the same port, with what it kept on disk (by
    /// default nothing: it comes back empty).
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(
            self.port,
            &self.dir,
            &self.persistence,
            self.tls.as_ref(),
            self.mutual,
        );
        assert!(
            came_up(&mut self.child, self.port),
            "redis-server exited on restart: port {} was taken",
            self.port
        );
    }

    /// `redis-cli -p <port> <args>`'s output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, self.tls.as_ref(), args)
    }

    /// SIGKILL (until `restart`).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-server` on loopback `port`, files in `dir` (see [`came_up`]).
fn spawn(
    port: u16,
    dir: &std::path::Path,
    persistence: &[String],
    tls: Option<&Certificates>,
    mutual: bool,
) -> Child {
    Command::new("redis-server")
        .args(listen(port, tls, mutual))
        .args(["--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(persistence)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)")
}

/// A local 3-master Redis Cluster made with `redis-cli --cluster create`; every `redis-server`
/// is killed and the directory removed on drop.
pub struct RedisCluster {
    /// (port, cluster bus port) per master.
    ports: Vec<(u16, u16)>,
    children: Vec<Option<Child>>,
    dir: PathBuf,
    /// TLS only, for clients and the cluster bus, with these certificates.
    tls: Option<Certificates>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        RedisCluster::start_on(None)
    }

    /// TLS only, on client ports and the cluster bus (`url` is `rediss+cluster://`).
    pub fn start_tls(certificates: &Certificates) -> RedisCluster {
        RedisCluster::start_on(Some(certificates.clone()))
    }

    fn start_on(tls: Option<Certificates>) -> RedisCluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut cluster = RedisCluster {
            children: ports.iter().map(|_| None).collect(),
            dir: own_dir("realtime-redis-cluster", ports[0].0),
            ports,
            tls,
        };
        for i in 0..cluster.ports.len() {
            let mut attempts = 1;
            while !cluster.start_node(i) {
                assert!(attempts < START_ATTEMPTS, "redis-server keeps exiting");
                attempts += 1;
                cluster.ports[i] = (free_port(), free_port());
            }
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        let output = Command::new("redis-cli")
            .args(cluster.tls.as_ref().map(cli_tls).unwrap_or_default())
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        cluster.until_ok();
        cluster
    }

    /// (Re)starts master `i` on its ports; its nodes file keeps its slots and peers. False if
    /// it exited before accepting (a port was taken).
    fn start_node(&mut self, i: usize) -> bool {
        let (port, bus_port) = self.ports[i];
        let nodes_file = self.dir.join(format!("nodes-{port}.conf"));
        let tls_cluster: &[&str] = match self.tls {
            Some(_) => &["--tls-cluster", "yes"],
            None => &[],
        };
        let child = Command::new("redis-server")
            .args(listen(port, self.tls.as_ref(), false))
            .args(tls_cluster)
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(&nodes_file)
            .args([
                "--cluster-port",
                &bus_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let mut child = child;
        let up = came_up(&mut child, port);
        self.children[i] = Some(child);
        up
    }

    /// Waits until every master says `cluster_state:ok` and knows the other two.
    fn until_ok(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for i in 0..self.ports.len() {
            loop {
                let info = self.cli(i, &["CLUSTER", "INFO"]);
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the cluster never became ok: {info}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// All three masters as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        format!("{}://{}", self.scheme(), seeds.join(","))
    }

    /// One master as the only seed: the rest is discovered.
    pub fn seed_url(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.ports[i].0)
    }

    fn scheme(&self) -> &'static str {
        match self.tls {
            Some(_) => "rediss+cluster",
            None => "redis+cluster",
        }
    }

    /// `redis-cli` against master `i`.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        cli(self.ports[i].0, self.tls.as_ref(), args)
    }

    /// Which master (index) holds `key`'s slot, from `CLUSTER KEYSLOT` and `CLUSTER NODES`.
    pub fn master_of(&self, key: &str) -> usize {
        let slot: u16 = self
            .cli(0, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        let nodes = self.cli(0, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let port: u16 = fields[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("node address");
            let holds = fields[8..].iter().any(|range| {
                let (first, last) = range.split_once('-').unwrap_or((range, range));
                matches!((first.parse::<u16>(), last.parse::<u16>()), (Ok(f), Ok(l)) if f <= slot && slot <= l)
            });
            if holds {
                return self
                    .ports
                    .iter()
                    .position(|(p, _)| *p == port)
                    .expect("one of ours");
            }
        }
        panic!("no master holds slot {slot}: {nodes}");
    }

    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            kill(&mut child);
        }
    }

    pub fn restart_node(&mut self, i: usize) {
        self.stop_node(i);
        assert!(self.start_node(i), "redis-server exited on restart");
        self.until_ok();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.stop_node(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Sentinel-monitored pair: a master, one replica (`--replicaof`) and three sentinels
/// (`redis-server <conf> --sentinel`, their conf in their own directory since a sentinel
/// rewrites it) monitoring it as `m` with quorum 2, `down-after-milliseconds 1000` and
/// `failover-timeout 5000`. Everything is killed on drop.
pub struct RedisSentinelSet {
    /// The master at the start (it may be a replica after a failover).
    pub master: RedisServer,
    /// The replica at the start.
    pub replica: RedisServer,
    sentinels: Vec<(u16, Child)>,
    dir: PathBuf,
    /// TLS only, everywhere (clients, replication, sentinels), with these certificates.
    tls: Option<Certificates>,
}

/// The monitored master's name.
pub const SENTINEL_MASTER: &str = "m";

impl RedisSentinelSet {
    /// Starts the set and waits (bounded) until the replica is in sync and every sentinel
    /// knows the replica and the other two sentinels: a failover can happen from then on.
    pub fn start() -> RedisSentinelSet {
        RedisSentinelSet::start_on(None)
    }

    /// TLS only: the master, the replica (replicating over TLS) and the sentinels (`url` is
    /// `rediss+sentinel://`), with `certificates`' server certificate.
    pub fn start_tls(certificates: &Certificates) -> RedisSentinelSet {
        RedisSentinelSet::start_on(Some(certificates.clone()))
    }

    fn start_on(tls: Option<Certificates>) -> RedisSentinelSet {
        let master = match &tls {
            None => RedisServer::start(),
            Some(certificates) => RedisServer::start_tls(certificates),
        };
        let replica = RedisServer::start_replica_of(&master);
        let master_port = master.port.to_string();
        let mut set = RedisSentinelSet {
            dir: own_dir("realtime-sentinels", master.port),
            master,
            replica,
            sentinels: Vec::new(),
            tls,
        };
        for i in 0..3 {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let port = free_port();
                let conf = set.dir.join(format!("sentinel-{i}.conf"));
                let listen = match &set.tls {
                    None => format!("port {port}\n"),
                    // TLS to clients, and to the master, replica and other sentinels.
                    Some(c) => format!(
                        "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
                         tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                        c.server_cert.display(),
                        c.server_key.display(),
                        c.ca.display()
                    ),
                };
                std::fs::write(
                    &conf,
                    format!(
                        "{listen}bind 127.0.0.1\ndir {dir}\nsentinel resolve-hostnames no\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 5000\n",
                        dir = set.dir.display()
                    ),
                )
                .expect("a sentinel conf");
                let mut child = Command::new("redis-server")
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server (apt-get install redis-server)");
                if came_up(&mut child, port) {
                    set.sentinels.push((port, child));
                    break;
                }
                assert!(
                    attempts < START_ATTEMPTS,
                    "redis-server --sentinel keeps exiting"
                );
            }
        }
        set.until_monitored();
        set
    }

    /// Waits until the replica is in sync and each sentinel sees the replica and two peers.
    fn until_monitored(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let ready = |set: &RedisSentinelSet| {
            set.replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
                && (0..set.sentinels.len()).all(|i| {
                    let replicas = set.sentinel_cli(i, &["SENTINEL", "REPLICAS", SENTINEL_MASTER]);
                    let peers = set.sentinel_cli(i, &["SENTINEL", "SENTINELS", SENTINEL_MASTER]);
                    replicas.lines().any(|line| line == "slave")
                        && peers.lines().filter(|line| *line == "name").count() >= 2
                })
        };
        while !ready(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "the sentinels never saw the replica and each other"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+sentinel://` (`rediss+sentinel://`) with the three sentinels and the master's name.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!("{scheme}://{}/{SENTINEL_MASTER}", sentinels.join(","))
    }

    /// `redis-cli` against sentinel `i`.
    pub fn sentinel_cli(&self, i: usize, args: &[&str]) -> String {
        cli(self.sentinels[i].0, self.tls.as_ref(), args)
    }

    /// The master's port as sentinel 0 names it now.
    pub fn master_port(&self) -> Option<u16> {
        let answer =
            self.sentinel_cli(0, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER]);
        answer
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
    }
}

impl Drop for RedisSentinelSet {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            kill(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
