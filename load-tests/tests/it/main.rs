//! The smoke of every scenario against our server: `api::serve` in this process on a loopback
//! port, the `realtime-load` binary as a child process with `--json`, and assertions on what it
//! counted: nothing lost, nothing duplicated, every publication delivered to every subscriber.
//! Never a timing: these run on loaded 2-core machines. Start at `support`.

mod broken;
mod smoke;
mod soak;
mod support;
