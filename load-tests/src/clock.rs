//! One clock for the whole run. Publishers stamp payloads and readers time arrivals against the
//! same `Instant`, so publish→deliver latency needs no clock synchronisation (both ends are in
//! this process).

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the first call in this process.
pub fn now_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}
