//! Prometheus metrics (`/metrics`), all prefixed `realtime_`. Labels are bounded: a channel
//! appears only as its namespace (the part before `:`), and only the first `MAX_NAMESPACES`
//! namespaces seen get their own label (the rest are `other`), so clients choosing channel
//! names cannot grow the series count. Counting happens once per publication or per frame
//! batch, never per subscriber.

use std::sync::OnceLock;

use dashmap::DashMap;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Namespaces that get their own label; later ones count as `other`.
const MAX_NAMESPACES: usize = 64;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static NAMESPACES: OnceLock<DashMap<String, &'static str>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls reuse it).
pub fn install() {
    HANDLE.get_or_init(|| {
        let latency = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .ok()?;
        match builder.install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed");
                None
            }
        }
    });
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    install();
    HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| {
            h.run_upkeep();
            h.render()
        })
        .unwrap_or_default()
}

/// The bounded `namespace` label of a channel (app scope and qualifiers ignored).
pub fn namespace(channel: &str) -> &'static str {
    let name = channel
        .split_once(crate::auth::APP_SEPARATOR)
        .map_or(channel, |(_, name)| name);
    let name = name.strip_prefix("[meta]").unwrap_or(name);
    let name = match name.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(_, n)| n),
        None => name,
    };
    let Some((namespace, _)) = name.split_once(':') else {
        return "none";
    };
    let namespaces = NAMESPACES.get_or_init(DashMap::new);
    if let Some(label) = namespaces.get(namespace) {
        return *label;
    }
    if namespaces.len() >= MAX_NAMESPACES {
        return "other";
    }
    // Leaked once per namespace, at most MAX_NAMESPACES times per process.
    let label: &'static str = Box::leak(namespace.to_owned().into_boxed_str());
    *namespaces.entry(namespace.to_owned()).or_insert(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_bounded_and_ignore_scope_and_qualifiers() {
        assert_eq!(namespace("session:1"), "session");
        assert_eq!(namespace("[?rewind=1]call:2"), "call");
        assert_eq!(namespace("plain"), "none");
        for n in 0..200 {
            let label = namespace(&format!("ns{n}:x"));
            assert!(label == format!("ns{n}") || label == "other");
        }
        assert_eq!(namespace("ns199:x"), "other", "past the cap");
        assert_eq!(
            namespace("session:9"),
            "session",
            "known ones keep their label"
        );
    }
}
