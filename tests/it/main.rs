//! Process-level tests of the `realtime` binary: settings, the development key, shutdown.

mod support;

mod cluster;
mod cors;
mod process;
