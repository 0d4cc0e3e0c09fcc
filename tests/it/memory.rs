//! Memory comes back after a connection flood: the server's RSS after two rounds of opening and
//! closing many connections (identified, attached, some in presence) must not grow round over
//! round. A table that kept something per connection (a registry entry, a subscriber, a
//! member, a socket count) would hold it for every round's connections and fail this.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

use crate::support::{close, connect, next_json, send_json, Server, Socket};

const KEY: &str = "mem.key:secret";
/// Connections per round.
const CONNECTIONS: usize = 2_000;
/// Opened (and closed) this many at a time.
const BATCH: usize = 150;
/// RSS after the second round may exceed RSS after the first by this much (seen: +0.5 to
/// +1.8 MiB with nothing leaking, jemalloc's own bookkeeping). A leak of 1.5 KiB or more per
/// connection (its state, its outbox and buffers, a task) fails; a map entry of a few hundred
/// bytes is below the noise at this size and is `gateway::shrink`'s unit tests' to catch.
const SLACK_BYTES: u64 = 3 * 1024 * 1024;
/// How long RSS may take to come back.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The server's jemalloc settings: background purging as in production, over a shorter decay.
const FAST_PURGE: &str = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_after_a_second_flood_comes_back_to_where_the_first_left_it() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // jemalloc purges over 1 s rather than 10 s, so "RSS stopped falling" is its floor.
    let server = Server::start_with_env(
        "serve",
        &["--keys", KEY],
        &[("_RJEM_MALLOC_CONF", FAST_PURGE)],
    );
    let pid = server.child.id();
    let baseline = rss(pid);

    flood(&server, 0).await;
    let first = settled(pid, 0).await;
    flood(&server, 0).await;
    let limit = first + SLACK_BYTES;
    let second = settled(pid, limit).await;
    eprintln!(
        "RSS: {} KiB before, {} KiB after round 1, {} KiB after round 2",
        baseline / 1024,
        first / 1024,
        second / 1024
    );
    assert!(
        second <= limit,
        "RSS grew round over round: {} KiB after the first flood, {} KiB after the second",
        first / 1024,
        second / 1024
    );
}

/// Opens `CONNECTIONS` clients numbered from `first`, then closes them all. Both rounds are the
/// same users coming back (same clientIds and channels), as after a deploy or a network blip.
async fn flood(server: &Server, first: usize) {
    let addr = server.addr;
    let mut open: Vec<Socket> = Vec::with_capacity(CONNECTIONS);
    for batch in (first..first + CONNECTIONS)
        .collect::<Vec<_>>()
        .chunks(BATCH)
    {
        open.extend(join_all(batch.iter().map(|&n| client(addr, n))).await);
    }
    let mut open = open.into_iter();
    loop {
        let batch: Vec<Socket> = open.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            break;
        }
        join_all(batch.into_iter().map(close)).await;
    }
}

/// Client `n`: identified; every other one attached to its own channel, one in five also in
/// presence on one of ten shared ones.
async fn client(addr: std::net::SocketAddr, n: usize) -> Socket {
    let mut socket = connect(addr, &format!("key={KEY}&clientId=u{n}&format=json&v=3")).await;
    assert_eq!(next_json(&mut socket).await["action"], 4, "CONNECTED");
    if n.is_multiple_of(2) {
        attach(&mut socket, &format!("user:{n}")).await;
    }
    if n.is_multiple_of(5) {
        let session = format!("session:{}", n % 10);
        attach(&mut socket, &session).await;
        send_json(
            &mut socket,
            json!({"action": 14, "channel": session, "msgSerial": 0, "presence": [{"action": 2}]}),
        )
        .await;
        while next_json(&mut socket).await["action"] != 1 {}
    }
    socket
}

async fn attach(socket: &mut Socket, channel: &str) {
    send_json(socket, json!({"action": 10, "channel": channel})).await;
    while next_json(socket).await["action"] != 11 {}
}

/// RSS once it is at most `limit`, or stopped falling for 3 s (0: just stopped falling), within
/// `SETTLE_TIMEOUT`.
async fn settled(pid: u32, limit: u64) -> u64 {
    let started = Instant::now();
    let mut lowest = rss(pid);
    let mut lowest_at = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss(pid);
        if now < lowest {
            lowest = now;
            lowest_at = Instant::now();
        }
        let stable = lowest_at.elapsed() >= Duration::from_secs(3);
        if (limit > 0 && now <= limit)
            || (limit == 0 && stable)
            || started.elapsed() >= SETTLE_TIMEOUT
        {
            return now;
        }
    }
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}
