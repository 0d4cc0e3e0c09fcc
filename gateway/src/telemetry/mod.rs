//! Prometheus metrics, all prefixed `realtime_`, recorded through the `metrics` facade (the
//! executable installs the recorder; `api` renders `/metrics`). Labels are bounded: a channel
//! appears only as its namespace (the part before `:`), and only the first `MAX_NAMESPACES`
//! namespaces seen get their own label (the rest are `other`), so clients choosing channel
//! names cannot grow the series count. Counting happens once per publication or per frame
//! batch, never per subscriber.

use std::sync::OnceLock;

use dashmap::DashMap;

/// Namespaces that get their own label; later ones count as `other`.
const MAX_NAMESPACES: usize = 64;

static NAMESPACES: OnceLock<DashMap<String, &'static str>> = OnceLock::new();

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
mod tests;
