//! The command connection: one multiplexed connection to a single Redis, or a cluster
//! connection (routed by key slot, following MOVED/ASK) to a Redis Cluster. Both are used
//! through `Connection`, so the bus's commands and scripts read the same in either mode; what
//! differs is spelled out where it matters (`Commands::sharded`): a pipeline must stay within
//! one slot on a cluster, and a channel's topic is published with `SPUBLISH`.

use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;

use super::REDIS_TIMEOUT;
use crate::config::RedisTarget;

/// A connection to either kind of Redis; clones share it.
#[derive(Clone)]
pub(super) enum Connection {
    Node(MultiplexedConnection),
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
            Connection::Node(connection) => pipe.query_async(connection).await,
            Connection::Cluster(connection) => {
                let replies = futures_util::future::join_all(pipe.cmd_iter().map(|cmd| {
                    let mut connection = connection.clone();
                    async move { cmd.query_async::<redis::Value>(&mut connection).await }
                }))
                .await
                .into_iter()
                .collect::<redis::RedisResult<Vec<_>>>()?;
                T::from_owned_redis_value(redis::Value::Array(replies))
            }
        }
    }
}

#[derive(Clone)]
enum Client {
    Node(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// The command connection, reconnected on demand: a failed command drops it, and the next one
/// connects afresh (bounded by `REDIS_TIMEOUT`), so a Redis restart heals by itself.
#[derive(Clone)]
pub(super) struct Commands {
    client: Client,
    connection: Arc<Mutex<Option<Connection>>>,
}

impl Commands {
    pub(super) async fn connect(target: &RedisTarget) -> Result<Commands, String> {
        let client = match target {
            RedisTarget::Node(url) => Client::Node(
                redis::Client::open(url.as_str()).map_err(|e| format!("redis URL: {e}"))?,
            ),
            RedisTarget::Cluster(seeds) => Client::Cluster(
                redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT)
                    // Each command is bounded by `REDIS_TIMEOUT` as a whole; a few quick
                    // retries cover a MOVED or a failover inside that.
                    .retries(3)
                    .min_retry_wait(20)
                    .max_retry_wait(200)
                    .build()
                    .map_err(|e| format!("redis cluster URL: {e}"))?,
            ),
        };
        let commands = Commands {
            client,
            connection: Arc::new(Mutex::new(None)),
        };
        commands
            .get()
            .await
            .map_err(|e| format!("cannot reach Redis: {e}"))?;
        Ok(commands)
    }

    /// Whether Redis is a cluster: channel topics are sharded (`SPUBLISH`), pipelines keep to
    /// one slot.
    pub(super) fn sharded(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    async fn get(&self) -> redis::RedisResult<Connection> {
        let cached = self
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(connection) = cached {
            return Ok(connection);
        }
        let connect = async {
            match &self.client {
                Client::Node(client) => client
                    .get_multiplexed_async_connection()
                    .await
                    .map(Connection::Node),
                Client::Cluster(client) => {
                    client.get_async_connection().await.map(Connection::Cluster)
                }
            }
        };
        let connection = tokio::time::timeout(REDIS_TIMEOUT, connect)
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::IoError, "connect timed out"))
            })??;
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(connection.clone());
        Ok(connection)
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

    /// Runs a command (bounded); any failure forgets the connection so the next call reconnects.
    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        command: impl FnOnce(
            Connection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = redis::RedisResult<T>> + Send>,
        >,
    ) -> redis::RedisResult<T> {
        let started = std::time::Instant::now();
        let result = match self.get().await {
            Ok(connection) => tokio::time::timeout(REDIS_TIMEOUT, command(connection))
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "command timed out",
                    )))
                }),
            Err(error) => Err(error),
        };
        ::metrics::histogram!("realtime_redis_command_seconds").record(started.elapsed());
        if result.is_err() {
            ::metrics::counter!("realtime_redis_command_errors_total").increment(1);
            *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        result
    }
}
