//! Following a master through Redis Sentinel (`redis+sentinel://`).
//!
//! redis-rs finds the master (`SentinelClient` asks the sentinels and checks `ROLE` on the
//! answer, over TLS with `--redis-ca-file`'s certificates to both) but neither watches
//! failovers nor rebuilds connections. One task per node does:
//! it resolves on start, on every `+switch-master` heard from a sentinel, every
//! `RESOLVE_INTERVAL` (the event is lost when the sentinel that would send it sits on the
//! dying master's host), and when a caller asks (an I/O error, `READONLY`). The resolved
//! master is published through a `watch`: the command connection and the pub/sub link read
//! it and rebuild themselves on a change, and no lock is held across an await.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::IntoConnectionInfo;
use tokio::sync::{watch, Notify};

use super::tls::client_for;
use super::REDIS_TIMEOUT;
use crate::config::{RedisTls, SentinelTarget};

/// How often the master is resolved without being asked: bounds how long a node stays on a
/// demoted master when no `+switch-master` reached it.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);

/// At most one resolution per this long: every command failing during a failover asks.
const RESOLVE_AT_MOST_EVERY: Duration = Duration::from_millis(100);

/// The current master (a client for it), and a way to ask for it to be resolved again.
/// Clones share the task.
#[derive(Clone)]
pub(super) struct Master {
    current: watch::Receiver<redis::Client>,
    ask: Arc<Notify>,
}

impl Master {
    /// Resolves the master once (failing if no sentinel names a reachable master) and starts
    /// the task that follows it; the task ends when every `Master` is dropped.
    pub(super) async fn follow(
        target: &SentinelTarget,
        tls: Option<&RedisTls>,
    ) -> redis::RedisResult<Master> {
        let mut resolver = Resolver {
            sentinel: sentinel_client(target, tls)?,
            sentinels: target.sentinels.clone(),
            tls: tls.cloned(),
        };
        let first = resolver.resolve().await?;
        tracing::info!(master = %address(&first), name = %target.master, "Redis master found through Sentinel");
        let (publish, current) = watch::channel(first);
        let ask = Arc::new(Notify::new());
        tokio::spawn(resolver.run(publish, ask.clone()));
        Ok(Master { current, ask })
    }

    /// A client for the master as last resolved.
    pub(super) fn client(&self) -> redis::Client {
        self.current.borrow().clone()
    }

    /// Resolve again soon: the master may have changed.
    pub(super) fn ask(&self) {
        self.ask.notify_one();
    }

    /// A receiver that sees every change of master from now on.
    pub(super) fn changes(&self) -> watch::Receiver<redis::Client> {
        let mut changes = self.current.clone();
        changes.borrow_and_update();
        changes
    }
}

/// Whether `a` and `b` reach the same server.
pub(super) fn same_server(a: &redis::Client, b: &redis::Client) -> bool {
    address(a) == address(b)
}

fn address(client: &redis::Client) -> &redis::ConnectionAddr {
    client.get_connection_info().addr()
}

/// Asks the sentinels (their own credentials) for the master and reaches it with the data
/// nodes' credentials and database; over TLS when the URL said so, verified against
/// `--redis-ca-file` (and showing its client certificate) when given, else the public roots.
fn sentinel_client(
    target: &SentinelTarget,
    tls: Option<&RedisTls>,
) -> redis::RedisResult<SentinelClient> {
    let sentinels = target
        .sentinels
        .iter()
        .map(|url| url.as_str().into_connection_info())
        .collect::<redis::RedisResult<Vec<_>>>()?;
    let own = sentinels.first().map(|info| info.redis_settings().clone());
    let mut builder = SentinelClientBuilder::new(
        sentinels.iter().map(|info| info.addr().clone()),
        &target.master,
        SentinelServerType::Master,
    )?;
    if let Some(own) = own {
        if let Some(user) = own.username() {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = own.password() {
            builder = builder.set_client_to_sentinel_password(password);
        }
    }
    let node =
        format!("redis://{}127.0.0.1/{}", target.credentials, target.db).into_connection_info()?;
    let node = node.redis_settings();
    builder = builder.set_client_to_redis_db(node.db());
    if let Some(user) = node.username() {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = node.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if target.tls {
        builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
        if let Some(tls) = tls {
            builder = builder
                .set_client_to_sentinel_certificates(tls.certificates())
                .set_client_to_redis_certificates(tls.certificates());
        }
    }
    builder.build()
}

struct Resolver {
    sentinel: SentinelClient,
    /// Where `+switch-master` is listened for, one sentinel at a time, in turn.
    sentinels: Vec<String>,
    tls: Option<RedisTls>,
}

impl Resolver {
    async fn resolve(&mut self) -> redis::RedisResult<redis::Client> {
        let lookup = self.sentinel.async_get_client();
        tokio::time::timeout(REDIS_TIMEOUT, lookup)
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "Sentinel did not answer",
                )))
            })
    }

    async fn run(mut self, publish: watch::Sender<redis::Client>, ask: Arc<Notify>) {
        let mut tick = tokio::time::interval(RESOLVE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut switches = None;
        let mut next_sentinel = 0;
        loop {
            if switches.is_none() {
                switches = self.listen_for_switches(next_sentinel).await;
                next_sentinel += 1;
            }
            tokio::select! {
                _ = publish.closed() => return,
                _ = tick.tick() => {}
                _ = ask.notified() => {}
                switch = next_switch(&mut switches) => {
                    if switch.is_none() {
                        switches = None;
                    }
                }
            }
            match self.resolve().await {
                Ok(client) => {
                    publish.send_if_modified(|current| {
                        if same_server(current, &client) {
                            return false;
                        }
                        tracing::warn!(from = %address(current), to = %address(&client), "Redis master changed (Sentinel failover)");
                        *current = client;
                        true
                    });
                }
                Err(error) => tracing::debug!(%error, "Sentinel: no master right now"),
            }
            tokio::time::sleep(RESOLVE_AT_MOST_EVERY).await;
        }
    }

    /// `SUBSCRIBE +switch-master` on the `turn`-th sentinel (modulo their number); none if it
    /// cannot be reached (the next tick tries the next one).
    async fn listen_for_switches(&self, turn: usize) -> Option<Switches> {
        let url = &self.sentinels[turn % self.sentinels.len()];
        let listen = async {
            let mut pubsub = client_for(url, self.tls.as_ref())?
                .get_async_pubsub()
                .await?;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, redis::RedisError>(pubsub.split())
        };
        match tokio::time::timeout(REDIS_TIMEOUT, listen).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot listen for +switch-master");
                None
            }
            Err(_) => None,
        }
    }
}

/// A sentinel connection subscribed to `+switch-master` (the sink kept: it holds the
/// connection open).
type Switches = (redis::aio::PubSubSink, redis::aio::PubSubStream);

/// The next `+switch-master` message; `None` when the listening connection ended. Pending
/// while there is none.
async fn next_switch(switches: &mut Option<Switches>) -> Option<()> {
    match switches {
        Some((_, stream)) => stream.next().await.map(|_| ()),
        None => std::future::pending().await,
    }
}
