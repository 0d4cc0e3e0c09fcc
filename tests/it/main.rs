//! Process-level tests of the `realtime` binary: settings, the development key, shutdown.

mod support;

mod cluster;
mod cluster_auth;
mod cluster_state;
mod contract;
mod cors;
mod dashboard;
mod events;
mod floods;
mod memory;
mod metrics;
mod process;
mod redis_cluster;
mod redis_restart;
mod sockets;
mod webhooks;
