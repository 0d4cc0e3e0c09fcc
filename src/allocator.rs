//! The process's allocator, chosen at build time (`load-tests/RESULTS.md`, "Memory after a
//! connection flood", has the numbers behind the default).
//!
//! - `jemalloc` (default): with its background threads on, freed pages go back to the system on
//!   a timer (`dirty_decay_ms`, 10 s) even when the process is idle; without them jemalloc purges
//!   only while threads keep allocating, and a server left idle after a flood holds on to it.
//! - `mimalloc`: when built `--no-default-features --features mimalloc`.
//! - glibc's malloc (`--no-default-features`): keeps most of a flood's memory (one arena per
//!   busy thread; freed chunks in the middle of an arena stay resident).

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Which allocator this binary was built with (logged at start).
pub(crate) const NAME: &str = if cfg!(feature = "jemalloc") {
    "jemalloc"
} else if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system"
};

/// Turns jemalloc's background purging threads on, unless the operator configured jemalloc
/// (`_RJEM_MALLOC_CONF`), which then decides. Call once at start.
pub(crate) fn start() {
    #[cfg(feature = "jemalloc")]
    if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
        if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
            tracing::warn!(%error, "could not start jemalloc's background threads");
        }
    }
}
