//! Process-level tests of the `realtime` binary: settings, the development key, shutdown.

mod support;

mod cors;
mod process;
