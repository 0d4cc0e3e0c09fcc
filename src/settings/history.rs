//! `[history]` and `[presence]`: retention per channel, rules per namespace (retention, mutable
//! messages), rewind, members.

use super::file::{FileHistory, FileNamespace, FilePresence};
use super::positive;

pub(super) fn hub_config(
    history: Option<FileHistory>,
    presence: Option<FilePresence>,
) -> Result<gateway::HubConfig, String> {
    let mut hub = gateway::HubConfig::default();
    if let Some(history) = history {
        if let Some(n) = history.max_messages {
            hub.retention.max_messages = positive(n, "--config history.max_messages")?;
        }
        if let Some(secs) = history.max_age_secs {
            positive(secs, "--config history.max_age_secs")?;
            hub.retention.max_age = std::time::Duration::from_secs(secs);
        }
        if let Some(n) = history.max_rewind {
            hub.max_rewind = n;
        }
        for namespace in history.namespace {
            if namespace.name.is_empty() || namespace.name.contains(':') {
                return Err(format!(
                    "--config history.namespace {:?}: a namespace is the part before the first ':'",
                    namespace.name
                ));
            }
            // A mutable namespace is persisted (Ably): a day of history unless told otherwise.
            let mut retention = if namespace.mutable_messages {
                gateway::config::Retention::PERSISTED
            } else {
                hub.retention
            };
            if let Some(n) = namespace.max_messages {
                retention.max_messages = positive(n, "--config history.namespace.max_messages")?;
            }
            if let Some(secs) = namespace.max_age_secs {
                positive(secs, "--config history.namespace.max_age_secs")?;
                retention.max_age = std::time::Duration::from_secs(secs);
            }
            let rules = gateway::config::ChannelRules {
                retention,
                mutable_messages: namespace.mutable_messages,
                batching: batching(&namespace)?,
                push_enabled: namespace.push_enabled,
            };
            hub.namespace_rules.push((namespace.name, rules));
        }
    }
    if let Some(n) = presence.and_then(|p| p.max_members) {
        hub.max_presence_members = positive(n, "--config presence.max_members")?;
    }
    Ok(hub)
}

/// A namespace's batching or conflation (not both: Ably has them exclusive).
fn batching(namespace: &FileNamespace) -> Result<Option<gateway::config::Batching>, String> {
    let name = &namespace.name;
    let interval = |ms: u64, what: &str| -> Result<std::time::Duration, String> {
        positive(ms, format!("--config history.namespace {name:?} {what}"))?;
        Ok(std::time::Duration::from_millis(ms))
    };
    match (
        namespace.batching_interval_ms,
        namespace.conflation_interval_ms,
        &namespace.conflation_key,
    ) {
        (None, None, None) => Ok(None),
        (Some(ms), None, None) => Ok(Some(gateway::config::Batching {
            interval: interval(ms, "batching_interval_ms")?,
            conflate: None,
        })),
        (None, Some(ms), Some(key)) => {
            let conflate = gateway::config::ConflationKey::parse(key).ok_or_else(|| {
                format!(
                    "--config history.namespace {name:?} conflation_key {key:?}: `name` or `headers.<header>`"
                )
            })?;
            Ok(Some(gateway::config::Batching {
                interval: interval(ms, "conflation_interval_ms")?,
                conflate: Some(conflate),
            }))
        }
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(format!(
            "--config history.namespace {name:?}: batching_interval_ms and conflation are exclusive; pick one"
        )),
        (None, _, _) => Err(format!(
            "--config history.namespace {name:?}: conflation needs both conflation_interval_ms and conflation_key"
        )),
    }
}
