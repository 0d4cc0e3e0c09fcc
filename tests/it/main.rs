//! Process-level tests of the `realtime` binary: settings, the development key, shutdown,
//! sockets, floods, memory, metrics and moderation (against a moderator the test runs) on one
//! process; several processes on one `redis-server` (cluster, auth, state, dashboard, events,
//! webhooks, Redis restarts) and on a Redis Cluster;
//! the bus contract on both back-ends. Harnesses live in `support/` and `test-support`.

mod support;

mod annotations;
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
mod moderation;
mod mutable;
mod pipeline;
mod process;
mod push;
mod redis_cluster;
mod redis_restart;
mod redis_silence;
mod redis_tls;
mod sentinel;
mod sockets;
mod webhooks;
