//! `realtime-load`: a load generator that speaks the Ably protocol itself, so one workload can run
//! against our server (and, through small adapters, against its peers).
//!
//! It is a client: it depends on `protocol` for the wire types and codecs and on nothing of the
//! gateway (the one server here, `ceiling`, is a bare-bones broadcast baseline). Start at
//! `scenario` (idle, fanout, storm, sessions, soak, churn, reactions, edits); every scenario talks
//! to the server through the `target::Target` seam, implemented by `target::ably` (and
//! `target::raw` for `ceiling`), except `soak`, whose clients live the whole connection lifecycle
//! (`scenario::soak::client`), and `reactions` and `edits`, which use `target::ably`'s own
//! extras (ephemeral messages, updates, frame counts).
//! `ledger` is how loss and duplication are counted, `report` how a run ends. Peers speak their
//! own protocols through `target::socketio` and `target::pusher` (Sockudo's Ably facade through
//! `target::ably`); `compare` starts each server in turn and runs the same workloads on it.

pub mod ceiling;
pub mod cli;
pub mod clock;
pub mod compare;
pub mod ledger;
pub mod payload;
pub mod plot;
pub mod proc_stat;
pub mod progress;
pub mod report;
pub mod rest;
pub mod scenario;
pub mod target;
