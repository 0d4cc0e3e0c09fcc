//! Channel names, validated once.
//!
//! A name may carry a qualifier prefix: `[?rewind=1]chat`, `[meta]log`. The qualified string is
//! what the client calls the channel (and what deliveries must say); the base name after the
//! qualifier is the channel itself, used for routing and capability checks.

use std::fmt;

use crate::error::{ErrorCode, ErrorInfo};

/// Longest channel name accepted, in bytes. Generous for `session:{uuid}`-style names while keeping
/// per-channel keys small.
pub const MAX_CHANNEL_NAME_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelName {
    full: String,
    /// Byte offset where the base name starts (0 when unqualified).
    base_start: usize,
}

impl ChannelName {
    pub fn parse(name: &str) -> Result<ChannelName, ErrorInfo> {
        let invalid = |why: &str| {
            ErrorCode::InvalidChannelName.info(format!("invalid channel name {name:?}: {why}"))
        };
        if name.is_empty() {
            return Err(invalid("empty"));
        }
        if name.len() > MAX_CHANNEL_NAME_BYTES {
            return Err(invalid("too long"));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("control characters"));
        }
        let base_start = if let Some(rest) = name.strip_prefix('[') {
            let close = rest
                .find(']')
                .ok_or_else(|| invalid("unclosed qualifier"))?;
            let qualifier = &rest[..close];
            let known = qualifier.starts_with('?')
                || qualifier == "meta"
                || qualifier.starts_with("filter=");
            if !known {
                return Err(invalid("unknown qualifier"));
            }
            close + 2
        } else {
            0
        };
        if base_start >= name.len() {
            return Err(invalid("empty after qualifier"));
        }
        if name[base_start..].starts_with(':') {
            return Err(invalid("starts with ':'"));
        }
        Ok(ChannelName {
            full: name.to_owned(),
            base_start,
        })
    }

    /// The name as the client wrote it, qualifier included.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The channel proper: routing key and what capabilities match.
    pub fn base(&self) -> &str {
        &self.full[self.base_start..]
    }

    /// Params from a `[?a=1&b=2]` qualifier, or after a filter's (`[filter=…?a=1]`).
    pub fn params(&self) -> Vec<(String, String)> {
        let qualifier = &self.full[..self.base_start];
        let query = match qualifier.strip_prefix("[filter=") {
            Some(filter) => filter.split_once('?').map(|(_, query)| query),
            None => qualifier.strip_prefix("[?"),
        };
        let Some(query) = query.and_then(|q| q.strip_suffix(']')) else {
            return Vec::new();
        };
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// A filtered (derived) channel, `[filter=…]name`: subscribed to, never published to.
    pub fn is_filtered(&self) -> bool {
        self.full.starts_with("[filter=")
    }

    /// `[meta]` channels are outside `*` capabilities.
    pub fn is_meta(&self) -> bool {
        self.full.starts_with("[meta]")
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_qualified_names() {
        let plain = ChannelName::parse("session:123").unwrap();
        assert_eq!(
            (plain.as_str(), plain.base()),
            ("session:123", "session:123")
        );
        let rewind = ChannelName::parse("[?rewind=1]chat").unwrap();
        assert_eq!(rewind.base(), "chat");
        assert_eq!(rewind.params(), vec![("rewind".to_owned(), "1".to_owned())]);
        let filtered = ChannelName::parse("[filter=bmFtZQ==?rewind=1]chat").unwrap();
        assert_eq!(filtered.base(), "chat");
        assert_eq!(
            filtered.params(),
            vec![("rewind".to_owned(), "1".to_owned())]
        );
        assert!(ChannelName::parse("[filter=bmFtZQ==]chat")
            .unwrap()
            .params()
            .is_empty());
        assert!(plain.params().is_empty());
        assert!(ChannelName::parse("[meta]log").unwrap().is_meta());
    }

    #[test]
    fn refuses_bad_names_with_40010() {
        for bad in [
            "",
            "[bogus]x",
            "[?rewind=1]",
            "[unclosed",
            "a\u{0}b",
            ":hell",
            "::",
            &"x".repeat(2000),
        ] {
            let error = ChannelName::parse(bad).unwrap_err();
            assert_eq!(error.code, 40010, "{bad:?}");
        }
    }
}
