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
mod ws;

pub use certificates::Certificates;
pub use eventually::{eventually, Outcome};
pub use http::{basic, http, raw_http, Request, Response};
pub use in_process::InProcess;
pub use process::Realtime;
pub use redis::{RedisCluster, RedisSentinelSet, RedisServer, SENTINEL_MASTER};
pub use ws::{close, connect, next_json, send_json, Socket};

/// A loopback port nothing listens on right now (the OS picks it, so parallel tests differ).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
