//! The api crate end to end: `api::serve` on a loopback port, real WebSocket and HTTP clients.
//! Start at `support` for the harness.

mod annotations;
mod auth;
mod bad_input;
mod bursts;
mod chat;
mod coalescing;
mod conformance;
mod continuity;
mod dashboard;
mod edges;
mod heartbeats;
mod mutable;
mod openapi;
mod publish_limits;
mod push;
mod realtime;
mod rest;
mod sandbox;
mod shutdown;
mod slow_consumer;
mod stats;
mod support;
