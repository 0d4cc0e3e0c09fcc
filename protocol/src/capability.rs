//! Capabilities: which operations a principal may perform on which channels.
//!
//! Resource patterns match as Ably documents: `*` is every normal channel (not `[meta]`), `[*]*`
//! is everything, a `*` segment replaces one whole `:`-delimited segment, and a trailing `*`
//! segment matches any depth (`ns:*` matches `ns:a` and `ns:a:b`). Anything else is literal.
//! A qualifier narrows or widens a pattern: `[meta]p` is meta channels only, `[filter]p` filtered
//! ones only (`[filter=…]name`: a subscriber that may see only what a filter lets through), `[*]p`
//! the channels `p` matches under any qualifier. An unqualified pattern covers filtered channels
//! too: a filter only narrows what the channel shows.

use std::collections::BTreeMap;

use crate::channel::ChannelName;
use crate::error::{ErrorCode, ErrorInfo};
use crate::message::Modes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Subscribe,
    Publish,
    Presence,
    History,
    Stats,
    ChannelMetadata,
    AnnotationPublish,
    AnnotationSubscribe,
    MessageUpdateOwn,
    MessageUpdateAny,
    MessageDeleteOwn,
    MessageDeleteAny,
    PushSubscribe,
    PushAdmin,
}

/// Every operation name Ably accepts in a capability.
const KNOWN_OPERATIONS: &[&str] = &[
    "subscribe",
    "publish",
    "presence",
    "history",
    "stats",
    "channel-metadata",
    "push-subscribe",
    "push-admin",
    "privileged-headers",
    "object-subscribe",
    "object-publish",
    "annotation-subscribe",
    "annotation-publish",
    "message-update-own",
    "message-update-any",
    "message-delete-own",
    "message-delete-any",
];

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Subscribe => "subscribe",
            Operation::Publish => "publish",
            Operation::Presence => "presence",
            Operation::History => "history",
            Operation::Stats => "stats",
            Operation::ChannelMetadata => "channel-metadata",
            Operation::AnnotationPublish => "annotation-publish",
            Operation::AnnotationSubscribe => "annotation-subscribe",
            Operation::MessageUpdateOwn => "message-update-own",
            Operation::MessageUpdateAny => "message-update-any",
            Operation::MessageDeleteOwn => "message-delete-own",
            Operation::MessageDeleteAny => "message-delete-any",
            Operation::PushSubscribe => "push-subscribe",
            Operation::PushAdmin => "push-admin",
        }
    }
}

/// Resource pattern -> operations, as in Ably's capability JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    entries: BTreeMap<String, Vec<String>>,
}

impl Capability {
    /// `{"*":["*"]}`: everything on every normal channel.
    pub fn all() -> Capability {
        Capability {
            entries: BTreeMap::from([("*".to_owned(), vec!["*".to_owned()])]),
        }
    }

    /// Nothing at all: what a policy grants a principal no rule matches.
    pub fn none() -> Capability {
        Capability {
            entries: BTreeMap::new(),
        }
    }

    /// From resource -> operations pairs already in hand (a policy's output).
    pub fn from_entries(entries: BTreeMap<String, Vec<String>>) -> Capability {
        let entries = entries
            .into_iter()
            .filter(|(_, ops)| !ops.is_empty())
            .collect();
        Capability { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn parse(json: &str) -> Result<Capability, ErrorInfo> {
        let invalid = |why: String| {
            ErrorCode::InvalidParameterValue.info(format!("invalid capability: {why}"))
        };
        let entries: BTreeMap<String, Vec<String>> =
            serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        if entries.is_empty() {
            return Err(invalid("no resources".into()));
        }
        for (resource, ops) in &entries {
            if ops.is_empty() {
                return Err(invalid(format!("no operations for {resource:?}")));
            }
            if ops.len() > 1 && ops.iter().any(|op| op == "*") {
                return Err(invalid(format!("{resource:?}: \"*\" must stand alone")));
            }
            if let Some(op) = ops
                .iter()
                .find(|op| *op != "*" && !KNOWN_OPERATIONS.contains(&op.as_str()))
            {
                return Err(invalid(format!("{resource:?}: unknown operation {op:?}")));
            }
        }
        Ok(Capability { entries })
    }

    /// Canonical JSON (keys and operations sorted), as it goes into TokenDetails.
    pub fn to_json(&self) -> String {
        let mut sorted = self.entries.clone();
        for ops in sorted.values_mut() {
            ops.sort();
            ops.dedup();
        }
        serde_json::to_string(&sorted).unwrap_or_else(|_| "{}".to_owned())
    }

    pub fn allows(&self, channel: &ChannelName, operation: Operation) -> bool {
        self.entries.iter().any(|(resource, ops)| {
            resource_matches(resource, channel)
                && ops.iter().any(|op| op == "*" || op == operation.as_str())
        })
    }

    /// Whether `operation` is granted on any resource at all: what an operation that names no
    /// channel (push device registrations) needs.
    pub fn allows_somewhere(&self, operation: Operation) -> bool {
        self.entries
            .values()
            .any(|ops| ops.iter().any(|op| op == "*" || op == operation.as_str()))
    }

    /// The mode flags an ATTACHED grants on this channel.
    pub fn modes(&self, channel: &ChannelName) -> Modes {
        let mut modes = Modes::empty();
        if self.allows(channel, Operation::Publish) {
            modes |= Modes::PUBLISH;
        }
        if self.allows(channel, Operation::Subscribe) {
            modes |= Modes::SUBSCRIBE | Modes::PRESENCE_SUBSCRIBE;
        }
        if self.allows(channel, Operation::Presence) {
            modes |= Modes::PRESENCE;
        }
        if self.allows(channel, Operation::AnnotationPublish) {
            modes |= Modes::ANNOTATION_PUBLISH;
        }
        if self.allows(channel, Operation::AnnotationSubscribe) {
            modes |= Modes::ANNOTATION_SUBSCRIBE;
        }
        modes
    }

    /// What a token may do, given what it asked for and what its key allows: for every pair of a
    /// requested and a key resource where one pattern covers the other, the narrower pattern with
    /// the operations both allow. Errors with 40160 when nothing is left.
    pub fn intersect(&self, requested: &Capability) -> Result<Capability, ErrorInfo> {
        let mut entries: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (asked, asked_ops) in &requested.entries {
            for (granted, granted_ops) in &self.entries {
                let narrower = if pattern_covers(granted, asked) {
                    asked
                } else if pattern_covers(asked, granted) {
                    granted
                } else {
                    continue;
                };
                let ops = intersect_ops(asked_ops, granted_ops);
                if !ops.is_empty() {
                    let entry = entries.entry(narrower.clone()).or_default();
                    entry.extend(ops);
                    entry.sort();
                    entry.dedup();
                }
            }
        }
        if entries.is_empty() {
            return Err(ErrorCode::CapabilityDenied
                .info("requested capability is not allowed by the key (empty intersection)"));
        }
        Ok(Capability { entries })
    }
}

fn intersect_ops(a: &[String], b: &[String]) -> Vec<String> {
    let has_all = |ops: &[String]| ops.iter().any(|op| op == "*");
    match (has_all(a), has_all(b)) {
        (true, true) => vec!["*".to_owned()],
        (true, false) => b.to_vec(),
        (false, true) => a.to_vec(),
        (false, false) => a.iter().filter(|op| b.contains(op)).cloned().collect(),
    }
}

/// Whether a capability resource pattern covers `channel` (what `allows` matches with).
pub fn resource_matches(resource: &str, channel: &ChannelName) -> bool {
    if resource == "[*]*" {
        return true;
    }
    let base = channel.base();
    if let Some(pattern) = resource.strip_prefix("[*]") {
        return base_matches(pattern, base);
    }
    if let Some(pattern) = resource.strip_prefix("[filter]") {
        return channel.is_filtered() && base_matches(pattern, base);
    }
    if channel.is_meta() {
        return match resource.strip_prefix("[meta]") {
            Some(pattern) => segments_match(pattern, base),
            None => false,
        };
    }
    base_matches(resource, base)
}

/// An unqualified pattern against a channel's base name.
fn base_matches(resource: &str, base: &str) -> bool {
    // A chat room's channel (`room::$chat`) answers to capabilities written for the room, as
    // Ably's Chat has it ("my-chat-room", "dms:*").
    segments_match(resource, base)
        || base
            .split_once("::$")
            .is_some_and(|(room, _)| segments_match(resource, room))
}

fn segments_match(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let pattern: Vec<&str> = pattern.split(':').collect();
    let name: Vec<&str> = name.split(':').collect();
    for (i, segment) in pattern.iter().enumerate() {
        let last = i == pattern.len() - 1;
        match name.get(i) {
            None => return false,
            Some(_) if *segment == "*" && last => return true,
            Some(_) if *segment == "*" => {}
            Some(part) if part == segment => {}
            Some(_) => return false,
        }
    }
    pattern.len() == name.len()
}

/// Whether every channel `inner` can match is also matched by `outer`.
fn pattern_covers(outer: &str, inner: &str) -> bool {
    if outer == inner || outer == "[*]*" {
        return true;
    }
    if inner == "[*]*" {
        return false;
    }
    let (outer_qualifier, outer) = qualified(outer);
    let (inner_qualifier, inner) = qualified(inner);
    let qualifier_covered = match (outer_qualifier, inner_qualifier) {
        (Some("*"), _) => true,
        (_, Some("*")) => false,
        (None, Some("filter")) => true,
        (o, i) => o == i,
    };
    // A pattern is a channel-name shape; treating `inner` as a name checks segment coverage.
    qualifier_covered && (outer == inner || segments_match(outer, inner))
}

/// A pattern's qualifier (`meta`, `filter`, `*`) and the pattern after it.
fn qualified(pattern: &str) -> (Option<&str>, &str) {
    for qualifier in ["meta", "filter", "*"] {
        if let Some(rest) = pattern
            .strip_prefix('[')
            .and_then(|p| p.strip_prefix(qualifier))
            .and_then(|p| p.strip_prefix(']'))
        {
            return (Some(qualifier), rest);
        }
    }
    (None, pattern)
}

#[cfg(test)]
mod tests;
