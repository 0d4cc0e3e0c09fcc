//! Test harnesses shared by every crate's tests (dev-only), in the shape of nats.rs's
//! `nats-server`: every server listens on a dynamic loopback port so tests run in parallel, and
//! every helper owns what it starts (`Drop` kills the processes and removes their directories).
//!
//! Not a test framework: no assertions about the server's behaviour live here, only ways to
//! start things and talk to them. Start at [`RedisServer`], [`Realtime`] (the binary as a
//! process) and [`InProcess`] (`api::serve` in this process); [`eventually`] is the one way to
//! wait for a condition that no event announces.

mod certificates;
mod eventually;
mod http;
mod in_process;
mod process;
mod redis;
mod web_push;
mod ws;

pub use certificates::Certificates;
pub use eventually::{eventually, Outcome};
pub use http::{basic, http, raw_http, Request, Response};
pub use in_process::InProcess;
pub use process::Realtime;
pub use redis::{RedisCluster, RedisSentinelSet, RedisServer, SENTINEL_MASTER};
pub use web_push::WebPushSubscription;
pub use ws::{close, connect, next_json, next_json_within, send_json, Socket};

/// A loopback port nothing listens on right now, below the kernel's ephemeral range where it can
/// (picked at random), so no outgoing connection or `bind(0)` of a parallel test takes it between
/// here and the server's bind, nor while a test restarts a server on it.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    if low > 12_000 {
        for _ in 0..64 {
            let port = 10_000 + (random() % u64::from(low - 10_000)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos()),
    );
    hasher.finish()
}
