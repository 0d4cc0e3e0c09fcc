//! What the api serves beyond the gateway's settings: the process's role and `/metrics`.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// `main` fills this from flags; tests build it directly.
#[derive(Clone, Default)]
pub struct Config {
    pub role: Role,
    /// A second listener for `/metrics`, the probes and the dashboard (`--admin-listen`); when
    /// set, the main port does not serve `/metrics`.
    pub admin_listen: Option<SocketAddr>,
    /// The installed recorder `/metrics` renders (the executable installs it, once per
    /// process); none: `/metrics` answers an empty exposition.
    pub metrics: Option<PrometheusHandle>,
}

/// What one process serves. Kubernetes runs `Gateway` pods (WebSockets) and `Api` pods (REST)
/// sharing one Redis; `Both` is `realtime serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Both,
    Gateway,
    Api,
}

/// The recorder `/metrics` expects, for the executable to install: latency histograms
/// (`*_seconds`) get buckets from 0.5 ms to 5 s.
pub fn prometheus() -> PrometheusBuilder {
    let latency = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .expect("the bucket list is not empty")
}
