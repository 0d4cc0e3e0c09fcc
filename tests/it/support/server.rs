//! `realtime` processes of this package's binary, and the HTTP requests the tests make to them.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::Duration;

use test_support::{Realtime, RedisServer, Request};

/// The key every multi-node test starts its nodes with.
pub(crate) const KEY: &str = "app.k:secret";

/// A `realtime` process on a free loopback port, killed on drop (test-support's `Realtime`,
/// started from this package's binary).
pub(crate) struct Server(Realtime);

impl Server {
    /// Starts `realtime serve` with `--listen 127.0.0.1:0` plus `args`, and waits for its listen
    /// log.
    pub(crate) fn start(args: &[&str]) -> Server {
        Server::start_role("serve", args)
    }

    /// `start` for `realtime <role>` (`serve`, `gateway`, `api`).
    pub(crate) fn start_role(role: &str, args: &[&str]) -> Server {
        Server::start_with_env(role, args, &[])
    }

    /// `start_role` with more environment variables for the process.
    pub(crate) fn start_with_env(role: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let binary = Path::new(env!("CARGO_BIN_EXE_realtime"));
        Server(Realtime::start(binary, role, args, env))
    }
}

impl Deref for Server {
    type Target = Realtime;
    fn deref(&self) -> &Realtime {
        &self.0
    }
}

impl DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Realtime {
        &mut self.0
    }
}

/// `n` nodes on `redis`, each with the test key and `extra` flags.
pub(crate) fn nodes(redis: &RedisServer, n: usize, extra: &[&str]) -> Vec<Server> {
    nodes_at(&redis.url(), n, extra)
}

/// Runs `test` on a fresh runtime (`block_on`) with a Redis and `n` nodes on it (`nodes`).
pub(crate) fn on_nodes(
    n: usize,
    extra: &[&str],
    test: impl AsyncFnOnce(&RedisServer, Vec<Server>),
) {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, n, extra);
    super::block_on(test(&redis, nodes));
}

/// `n` nodes on the Redis at `url` (a server or a cluster), each with the test key and `extra`.
pub(crate) fn nodes_at(url: &str, n: usize, extra: &[&str]) -> Vec<Server> {
    (0..n)
        .map(|_| {
            let mut args = vec!["--keys", KEY, "--redis", url];
            args.extend_from_slice(extra);
            Server::start(&args)
        })
        .collect()
}

/// A well-formed request; returns (status, body).
pub(crate) async fn rest(addr: SocketAddr, request: Request<'_>) -> (u16, String) {
    let response = test_support::http(addr, request).await;
    (response.status, response.text())
}

/// Bytes sent as they are (malformed or hand-made requests); returns (status, body).
pub(crate) async fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let response = test_support::raw_http(addr, request.as_bytes()).await;
    (response.status, response.text())
}

/// `POST /channels/{channel}/messages` with `body` (JSON text) as `key`.
pub(crate) fn publish_as<'a>(key: &str, channel: &str, body: &str) -> Request<'a> {
    let path = format!("/channels/{channel}/messages");
    Request::post(path, "application/json", body.as_bytes().to_vec()).basic(key)
}

/// `POST /channels/{channel}/messages` with `body` (JSON text) as the test key.
pub(crate) fn publish<'a>(channel: &str, body: &str) -> Request<'a> {
    publish_as(KEY, channel, body)
}

/// `publish` as raw text, for tests that send their own bytes.
pub(crate) fn publish_request(channel: &str, body: &str) -> String {
    format!(
        "POST /channels/{channel}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        test_support::basic(KEY),
        body.len()
    )
}

/// Publishes message "n" with data `n`; returns the serial from the 201 body.
pub(crate) async fn publish_serial(node: &Server, channel: &str, n: usize) -> String {
    publish_returning_serial(node, channel, &format!(r#"{{"name":"n","data":"{n}"}}"#)).await
}

/// Publishes `body` (JSON text) as the test key; returns the serial from the 201 body.
pub(crate) async fn publish_returning_serial(node: &Server, channel: &str, body: &str) -> String {
    let (status, body) = rest(node.addr, publish(channel, body)).await;
    assert_eq!(status, 201, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    body["serials"][0].as_str().unwrap().to_owned()
}

/// `PATCH /channels/{channel}/messages/{serial}` with `op` as the test key: (status, answer).
pub(crate) async fn patch_message(
    node: &Server,
    channel: &str,
    serial: &str,
    op: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let request = Request::new("PATCH", format!("/channels/{channel}/messages/{serial}"))
        .with_body("application/json", op.to_string().into_bytes())
        .basic(KEY);
    let (status, body) = rest(node.addr, request).await;
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// `GET /metrics` (no credentials: it is the admin listener's or open).
pub(crate) async fn scrape(addr: SocketAddr) -> (u16, String) {
    rest(addr, Request::get("/metrics")).await
}

/// The value of the sample `name{...}` whose labels include every pair in `labels` (0 if none).
pub(crate) fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// Polls `/readyz` until it answers `status` (bounded): readiness follows the bus's own probe.
pub(crate) async fn until_readyz(node: &Server, status: u16) {
    test_support::eventually(
        format!("/readyz answers {status}"),
        Duration::from_secs(10),
        || async {
            let (got, body) = rest(node.addr, Request::get("/readyz")).await;
            if got == status {
                Ok(())
            } else {
                Err((got, body))
            }
        },
    )
    .await;
}
