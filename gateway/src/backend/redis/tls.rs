//! Clients carrying `--redis-ca-file`'s certificates: every client the back-end builds comes
//! from here, so a `rediss://` connection never falls back to the public roots alone.

use crate::config::RedisTls;

/// A client for `url`, with the configured certificates when there are any.
pub(super) fn client_for(url: &str, tls: Option<&RedisTls>) -> redis::RedisResult<redis::Client> {
    match tls {
        Some(tls) => redis::Client::build_with_tls(url, tls.certificates()),
        None => redis::Client::open(url),
    }
}
