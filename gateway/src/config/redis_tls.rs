//! Certificates for `rediss://` beyond the public roots: a private CA, a client certificate.
//! `main` reads the PEM files at start-up; the back-end hands them to every client it builds
//! (commands, pub/sub link, a cluster's shard connections).

use super::RedisTarget;

/// PEM text, as read from the files named by `--redis-ca-file`, `--redis-client-cert` and
/// `--redis-client-key`. Verification stays on: a CA given here replaces the public roots.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// The CA(s) that signed the Redis servers' certificates; none: the public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Certificate (chain) and private key, for a Redis that asks clients for one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Certificates and keys are never printed.
impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field("client", &self.client.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl RedisTls {
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self.client.clone().map(|(client_cert, client_key)| {
                redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }
            }),
            root_cert: self.ca_pem.clone(),
        }
    }

    /// Whether these certificates can be used with `target`: every URL is `rediss://` and the
    /// PEM parses (a client is built for each; nothing connects).
    pub fn check(&self, target: &RedisTarget) -> Result<(), String> {
        let urls = match target {
            RedisTarget::Node(url) => std::slice::from_ref(url),
            RedisTarget::Cluster(seeds) => seeds.as_slice(),
            // The sentinels' URLs are rediss:// exactly when the data nodes are TLS too.
            RedisTarget::Sentinel(sentinel) => sentinel.sentinels.as_slice(),
        };
        for url in urls {
            if !url.starts_with("rediss://") {
                return Err(
                    "certificates need TLS to Redis: a rediss://, rediss+cluster:// or \
                     rediss+sentinel:// URL"
                        .into(),
                );
            }
            redis::Client::build_with_tls(url.as_str(), self.certificates())
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    }
}
