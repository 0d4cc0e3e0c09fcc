//! The command connection: redis's `ConnectionManager` (one multiplexed connection, replaced
//! when it is lost) to a single Redis, or a cluster connection (routed by key slot, following
//! MOVED/ASK) to a Redis Cluster. Both are used through `Connection`, so the back-end's
//! commands and scripts read the same in either mode; what differs is spelled out where it
//! matters (`Commands::sharded`): a pipeline must stay within one slot on a cluster, and a
//! channel's topic is published with `SPUBLISH`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use tokio::sync::watch;

use super::sentinel::{same_server, Master};
use super::tls::client_for;
use super::{start_error, REDIS_TIMEOUT};
use crate::backend::BackendError;
use crate::config::{MinReplicas, RedisTarget, RedisTls};

/// A connection to either kind of Redis; clones share it.
#[derive(Clone)]
pub(super) enum Connection {
    /// Boxed: the manager is large, the cluster connection a handle.
    Node(Box<ConnectionManager>),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Node(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Node(connection) => connection.req_packed_commands(cmd, offset, count),
            Connection::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Connection {
    /// Runs `pipe` as one pipeline on one Redis. On a cluster a pipeline must keep to one slot,
    /// so there its commands go out as separate commands, all at once (each routed to its
    /// slot's master), and their replies come back in order as if pipelined.
    pub(super) async fn query_pipeline<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            Connection::Node(connection) => pipe.query_async(connection.as_mut()).await,
            Connection::Cluster(connection) => {
                let replies = futures_util::future::join_all(pipe.cmd_iter().map(|cmd| {
                    let mut connection = connection.clone();
                    async move { cmd.query_async::<redis::Value>(&mut connection).await }
                }))
                .await
                .into_iter()
                .collect::<redis::RedisResult<Vec<_>>>()?;
                Ok(T::from_redis_value(redis::Value::Array(replies))?)
            }
        }
    }
}

/// The command connection: redis's `ConnectionManager` on one Redis (a connection lost to an
/// I/O error is replaced in the background, so a Redis restart heals by itself), the cluster
/// connection on a Redis Cluster (it follows `MOVED` and reconnects itself). Clones share it.
#[derive(Clone)]
pub(super) struct Commands {
    shared: Arc<Shared>,
}

struct Shared {
    /// Cloned out for each command, never held across an await.
    connection: RwLock<Connection>,
    /// With `--redis-min-replicas`: stored writes' own connection, since `WAIT` blocks the
    /// connection it is sent on (probes, loads and presence must not queue behind it).
    /// Replaced with `connection`.
    stored: Option<RwLock<Connection>>,
    min_replicas: MinReplicas,
    /// Where a new connection goes when the current one must be replaced.
    source: Source,
    replacing: AtomicBool,
}

/// Where the command connection is made: one Redis, the master Sentinel names (followed
/// across failovers), or a cluster (which reconnects itself).
enum Source {
    /// Boxed: the client and its settings are large.
    Fixed(Box<(redis::Client, ConnectionManagerConfig)>),
    Sentinel(Master, ConnectionManagerConfig),
    Cluster,
}

impl Source {
    /// Where a new connection goes now.
    fn target(&self) -> Option<(redis::Client, ConnectionManagerConfig)> {
        match self {
            Source::Fixed(fixed) => Some((**fixed).clone()),
            Source::Sentinel(master, config) => Some((master.client(), config.clone())),
            Source::Cluster => None,
        }
    }
}

impl Commands {
    pub(super) async fn connect(
        target: &RedisTarget,
        tls: Option<&RedisTls>,
        min_replicas: MinReplicas,
    ) -> Result<Commands, BackendError> {
        let (connection, source) = match target {
            RedisTarget::Node(url) => {
                let client = client_for(url, tls).map_err(start_error("redis URL"))?;
                let config = manager_config();
                let manager = new_manager(client.clone(), config.clone())
                    .await
                    .map_err(start_error("cannot reach Redis"))?;
                (
                    Connection::Node(Box::new(manager)),
                    Source::Fixed(Box::new((client, config))),
                )
            }
            RedisTarget::Sentinel(sentinel) => {
                let master = Master::follow(sentinel, tls)
                    .await
                    .map_err(start_error("cannot find the Redis master through Sentinel"))?;
                let config = manager_config();
                let manager = new_manager(master.client(), config.clone())
                    .await
                    .map_err(start_error("cannot reach the Redis master"))?;
                (
                    Connection::Node(Box::new(manager)),
                    Source::Sentinel(master, config),
                )
            }
            RedisTarget::Cluster(seeds) => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.clone());
                if let Some(tls) = tls {
                    builder = builder.certs(tls.certificates());
                }
                let client = builder
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT)
                    // Each command is bounded by `REDIS_TIMEOUT` as a whole (`run`), as before
                    // redis 1.x added its own overall bound; a few quick retries cover a MOVED
                    // or a failover inside that.
                    .overall_response_timeout(None)
                    .retries(3)
                    .min_retry_wait(20)
                    .max_retry_wait(200)
                    .build()
                    .map_err(start_error("redis cluster URL"))?;
                let cluster = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_connection())
                    .await
                    .unwrap_or_else(|_| Err(timed_out("connect timed out")))
                    .map_err(start_error("cannot reach Redis"))?;
                (Connection::Cluster(cluster), Source::Cluster)
            }
        };
        let mut stored = None;
        if min_replicas.count > 0 {
            let Some((client, config)) = source.target() else {
                return Err(start_error("--redis-min-replicas")(
                    redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "not available on a Redis Cluster",
                    )),
                ));
            };
            let manager = new_manager(client, config)
                .await
                .map_err(start_error("cannot reach Redis"))?;
            stored = Some(RwLock::new(Connection::Node(Box::new(manager))));
        }
        let commands = Commands {
            shared: Arc::new(Shared {
                connection: RwLock::new(connection),
                stored,
                min_replicas,
                source,
                replacing: AtomicBool::new(false),
            }),
        };
        if let Source::Sentinel(master, _) = &commands.shared.source {
            tokio::spawn(follow_master(
                Arc::downgrade(&commands.shared),
                master.changes(),
            ));
        }
        Ok(commands)
    }

    /// The master Sentinel names, when Redis is reached through Sentinel.
    pub(super) fn master(&self) -> Option<Master> {
        match &self.shared.source {
            Source::Sentinel(master, _) => Some(master.clone()),
            _ => None,
        }
    }

    fn connection(&self) -> Connection {
        read(&self.shared.connection)
    }

    /// Replaces the connection in the background (one replacement at a time). The manager
    /// itself replaces a connection that errors, but not one that went silent (a partition, a
    /// host gone without a reset: after a timed-out command) nor one to a server that turned
    /// replica (`READONLY`): later commands must not wait on the dead socket or keep failing.
    fn reconnect(&self, reason: &'static str) {
        reconnect(&self.shared, reason);
    }

    /// Whether Redis is a cluster: channel topics are sharded (`SPUBLISH`), pipelines keep to
    /// one slot.
    pub(super) fn sharded(&self) -> bool {
        matches!(self.shared.source, Source::Cluster)
    }

    /// One command, as `run` runs it (bounded, timed, the connection replaced on a broken link).
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        command: redis::Cmd,
    ) -> redis::RedisResult<T> {
        self.run(move |mut connection| {
            Box::pin(async move { command.query_async(&mut connection).await })
        })
        .await
    }

    /// One Lua script call with its keys and arguments, as `run` runs it.
    pub(super) async fn invoke<T: redis::FromRedisValue + Send + 'static>(
        &self,
        script: redis::Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> redis::RedisResult<T> {
        self.run(move |mut connection| {
            Box::pin(async move {
                let mut invocation = script.prepare_invoke();
                for key in keys {
                    invocation.key(key);
                }
                for arg in args {
                    invocation.arg(arg);
                }
                invocation.invoke_async(&mut connection).await
            })
        })
        .await
    }

    /// Whether stored writes are followed by `WAIT` (`--redis-min-replicas`).
    pub(super) fn waits_for_replicas(&self) -> bool {
        self.shared.stored.is_some()
    }

    /// A stored write's script call: with `--redis-min-replicas N`, on the stored writes'
    /// connection and pipelined with `WAIT N timeout` (which covers the writes sent before it
    /// on that connection), failing when fewer than N replicas confirmed it; else `invoke`.
    pub(super) async fn invoke_stored<T: redis::FromRedisValue + Send + 'static>(
        &self,
        script: redis::Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> redis::RedisResult<T> {
        let Some(stored) = &self.shared.stored else {
            return self.invoke(script, keys, args).await;
        };
        let MinReplicas { count, timeout } = self.shared.min_replicas;
        let started = std::time::Instant::now();
        let result = self
            .run_on(read(stored), move |mut connection| {
                Box::pin(async move {
                    let mut pipe = redis::pipe();
                    pipe.cmd("EVALSHA")
                        .arg(script.get_hash())
                        .arg(keys.len())
                        .arg(keys)
                        .arg(args)
                        .cmd("WAIT")
                        .arg(count)
                        .arg(timeout.as_millis() as u64);
                    let replies: (redis::Value, u32) = match connection.query_pipeline(&pipe).await
                    {
                        Err(error)
                            if error.kind()
                                == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                        {
                            script.prepare_invoke().load_async(&mut connection).await?;
                            connection.query_pipeline(&pipe).await?
                        }
                        replies => replies?,
                    };
                    let (reply, confirmed) = replies;
                    if confirmed < count {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "not confirmed by enough replicas",
                            format!("{confirmed} of {count} within {timeout:?}"),
                        )));
                    }
                    Ok(T::from_redis_value(reply)?)
                })
            })
            .await;
        ::metrics::histogram!("realtime_redis_wait_seconds").record(started.elapsed());
        result
    }

    /// Runs a command, bounded by `REDIS_TIMEOUT`, timed and counted.
    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        command: impl FnOnce(
            Connection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = redis::RedisResult<T>> + Send>,
        >,
    ) -> redis::RedisResult<T> {
        self.run_on(self.connection(), command).await
    }

    /// `run` on a given connection.
    async fn run_on<T: redis::FromRedisValue>(
        &self,
        connection: Connection,
        command: impl FnOnce(
            Connection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = redis::RedisResult<T>> + Send>,
        >,
    ) -> redis::RedisResult<T> {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(REDIS_TIMEOUT, command(connection)).await {
            Ok(result) => result,
            Err(_) => {
                self.reconnect("command timed out");
                Err(timed_out("command timed out"))
            }
        };
        if let Err(error) = &result {
            if is_read_only(error) {
                self.reconnect("the server is a replica (READONLY)");
            } else if error.is_io_error() && matches!(self.shared.source, Source::Sentinel(..)) {
                // A killed master: the manager would reconnect to its address forever.
                self.reconnect("the master is unreachable");
            }
        }
        ::metrics::histogram!("realtime_redis_command_seconds").record(started.elapsed());
        if result.is_err() {
            ::metrics::counter!("realtime_redis_command_errors_total").increment(1);
        }
        result
    }
}

/// Replaces the connection in the background, one replacement at a time, on wherever the
/// source points now; again if that moved meanwhile (a failover resolved while connecting).
fn reconnect(shared: &Arc<Shared>, reason: &'static str) {
    if let Source::Sentinel(master, _) = &shared.source {
        master.ask();
    }
    if shared.source.target().is_none() || shared.replacing.swap(true, Ordering::AcqRel) {
        return;
    }
    tracing::debug!(reason, "replacing the Redis command connection");
    let shared = shared.clone();
    tokio::spawn(async move {
        let moved = |built: &redis::Client| matches!(shared.source.target(), Some((now, _)) if !same_server(&now, built));
        let Some((mut client, mut config)) = shared.source.target() else {
            return;
        };
        loop {
            if let Ok(manager) = new_manager(client.clone(), config.clone()).await {
                *shared
                    .connection
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Connection::Node(Box::new(manager));
            }
            if let Some(stored) = &shared.stored {
                if let Ok(manager) = new_manager(client.clone(), config).await {
                    *stored
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                        Connection::Node(Box::new(manager));
                }
            }
            match shared.source.target() {
                Some((now, now_config)) if !same_server(&now, &client) => {
                    (client, config) = (now, now_config);
                }
                _ => break,
            }
        }
        shared.replacing.store(false, Ordering::Release);
        // A change seen by nobody while this one finished.
        if moved(&client) {
            reconnect(&shared, "the master changed");
        }
    });
}

/// Rebuilds the connection on each new master Sentinel names: a demoted master keeps its
/// sockets open, and nothing else would make this node leave it.
async fn follow_master(shared: Weak<Shared>, mut changes: watch::Receiver<redis::Client>) {
    while changes.changed().await.is_ok() {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        reconnect(&shared, "the master changed");
    }
}

/// A clone of the connection in `slot` (the lock is never held across an await).
fn read(slot: &RwLock<Connection>) -> Connection {
    slot.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        // One attempt per reconnect: the next failed command tries again.
        .set_number_of_retries(0)
}

/// A write refused because the server is (now) a replica.
fn is_read_only(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

async fn new_manager(
    client: redis::Client,
    config: ConnectionManagerConfig,
) -> redis::RedisResult<ConnectionManager> {
    tokio::time::timeout(
        REDIS_TIMEOUT,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .unwrap_or_else(|_| Err(timed_out("connect timed out")))
}

/// An I/O error of kind `TimedOut`, so `RedisError::is_timeout` tells it apart.
fn timed_out(what: &'static str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}
