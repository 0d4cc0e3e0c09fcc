//! `realtime-load`: a load generator that speaks the Ably protocol itself, so one workload can run
//! against our server (and, through small adapters, against its peers).
//!
//! It is a client, not a server: it depends on `protocol` for the wire types and codecs and on
//! nothing of the gateway. Start at `scenario` (idle, fanout, storm, sessions); every scenario
//! talks to the server through the `target::Target` seam, whose main implementation is
//! `target::ably`
//! (and `target::raw` for the bare-bones `ceiling` server). `ledger` is how loss and duplication are counted, `report` how a run ends.

pub mod ceiling;
pub mod cli;
pub mod clock;
pub mod ledger;
pub mod payload;
pub mod plot;
pub mod proc_stat;
pub mod progress;
pub mod report;
pub mod rest;
pub mod scenario;
pub mod target;
