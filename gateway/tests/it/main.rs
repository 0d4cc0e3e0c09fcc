//! The gateway's integration tests: checks on the crate as a whole (its end-to-end tests drive
//! the binary from the root package and `api`).

mod layering;
