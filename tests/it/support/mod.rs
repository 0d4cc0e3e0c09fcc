//! The root package's harness: the `realtime` binary as processes (`server`), and JSON clients
//! with the protocol steps the process tests share (`client`). Redis, the raw clients and
//! `eventually` come from the `test-support` crate.

mod client;
mod receiver;
mod server;

pub(crate) use client::*;
pub(crate) use receiver::*;
pub(crate) use server::*;
pub(crate) use test_support::{
    close, connect, eventually, next_json, send_json, RedisCluster, RedisServer, Request, Socket,
};

/// Runs `future` to completion on a fresh multi-threaded runtime: the body of a process test,
/// whose servers are started (blocking) outside it.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(future)
}
