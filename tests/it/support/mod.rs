//! The root package's harness: the `realtime` binary as processes (`server`), and JSON clients
//! with the protocol steps the process tests share (`client`). Redis, the raw clients and
//! `eventually` come from the `test-support` crate.

mod client;
mod server;

pub(crate) use client::*;
pub(crate) use server::*;
pub(crate) use test_support::{
    close, connect, eventually, next_json, send_json, RedisCluster, RedisServer, Request, Socket,
};
