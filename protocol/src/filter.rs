//! Subscription filters: the JMESPath expressions of Ably's derived channels.
//!
//! A client attaches to `[filter=<base64 expression>]channel` (ably-js `channels.getDerived`) and
//! is sent only the messages for which the expression is truthy. The expression sees one object,
//! `{"name": <message name>, "headers": <message extras.headers>}`; anything else is null.
//!
//! The grammar is the part of JMESPath a flat object needs: field paths (`name`,
//! `headers.flavor`, `headers."key.with.dots"`), JSON literals in backticks, raw strings in single
//! quotes, `==` `!=` `<` `<=` `>` `>=`, `&&` `||` `!`, parentheses, and the builtin functions that
//! act on scalars (`contains`, `starts_with`, `ends_with`, `length`, `not_null`, `to_string`,
//! `to_number`, `type`). Projections, slices, pipes and multi-selects are refused: over
//! `{name, headers}` they select nothing a filter can use.
//!
//! Semantics are JMESPath's: `&&`/`||` yield an operand, truthiness is JMESPath's (`0` is true,
//! `""`, `[]`, `{}`, `false` and null are false), ordering compares numbers only (anything else is
//! null), and a function given the wrong types makes the message not match.
//!
//! Parsing is bounded (length and nesting) and never panics; a parsed `Filter` evaluates without
//! allocating for paths and literals. `Filter` compares and hashes by its source text, so callers
//! can share one per distinct filter.

mod eval;
mod parse;

use std::fmt;
use std::hash::{Hash, Hasher};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::{ErrorCode, ErrorInfo};
use crate::message::Message;

/// Longest expression accepted, in bytes. Ably's examples are under 100 bytes; the qualifier's
/// base64 (4/3 of this) must still fit `MAX_CHANNEL_NAME_BYTES`.
pub const MAX_FILTER_BYTES: usize = 700;

/// Deepest nesting accepted (parentheses, `!`, function arguments, chained comparisons), so
/// neither parsing nor evaluation can recurse without bound.
pub const MAX_FILTER_DEPTH: usize = 32;

/// A parsed subscription filter.
#[derive(Debug, Clone)]
pub struct Filter {
    source: String,
    expr: parse::Expr,
}

impl Filter {
    /// Parses a JMESPath filter expression; anything outside the grammar above is refused.
    pub fn parse(source: &str) -> Result<Filter, FilterError> {
        if source.len() > MAX_FILTER_BYTES {
            return Err(FilterError::TooLong {
                max: MAX_FILTER_BYTES,
            });
        }
        let expr = parse::parse(source)?;
        Ok(Filter {
            source: source.to_owned(),
            expr,
        })
    }

    /// The expression as the client wrote it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether a message passes: its `name` and its `extras.headers` (when that is an object).
    pub fn matches(&self, message: &Message) -> bool {
        let headers = message
            .extras
            .as_ref()
            .and_then(|extras| extras.get("headers"))
            .and_then(Value::as_object);
        self.matches_fields(message.name.as_deref(), headers)
    }

    /// Whether a message with this name and these headers passes; missing ones are null.
    pub fn matches_fields(&self, name: Option<&str>, headers: Option<&Map<String, Value>>) -> bool {
        eval::matches(&self.expr, &eval::Root { name, headers })
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Filter) -> bool {
        self.source == other.source
    }
}

impl Eq for Filter {}

impl Hash for Filter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A channel name's `[filter=…]` qualifier, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterQualifier<'a> {
    pub filter: Filter,
    /// What followed `?` inside the brackets (`[filter=…?rewind=1]` gives `rewind=1`).
    pub params: Option<&'a str>,
    /// The channel proper, after the `]`.
    pub base: &'a str,
}

/// Recognises `[filter=<base64>]name` and `[filter=<base64>?params]name`. Any other name
/// (`chat`, `[?rewind=1]chat`, `[meta]log`) is `Ok(None)`: this only speaks for filters.
///
/// ably-js writes standard base64 with padding; the URL-safe alphabet and missing padding are
/// taken too.
pub fn split_qualifier(channel: &str) -> Result<Option<FilterQualifier<'_>>, FilterError> {
    let Some(rest) = channel.strip_prefix("[filter=") else {
        return Ok(None);
    };
    let close = rest
        .find(']')
        .ok_or(FilterError::Qualifier("no closing ']'"))?;
    let (encoded, params) = match rest[..close].split_once('?') {
        Some((encoded, params)) => (encoded, Some(params)),
        None => (&rest[..close], None),
    };
    let base = &rest[close + 1..];
    if base.is_empty() {
        return Err(FilterError::Qualifier(
            "no channel name after the qualifier",
        ));
    }
    // Refuse before decoding so an oversized qualifier costs nothing.
    if encoded.len() > MAX_FILTER_BYTES.div_ceil(3) * 4 {
        return Err(FilterError::TooLong {
            max: MAX_FILTER_BYTES,
        });
    }
    let standard: String = encoded
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            other => other,
        })
        .collect();
    let bytes = BASE64
        .decode(standard)
        .map_err(|_| FilterError::Qualifier("the filter is not base64"))?;
    let source =
        String::from_utf8(bytes).map_err(|_| FilterError::Qualifier("the filter is not UTF-8"))?;
    Ok(Some(FilterQualifier {
        filter: Filter::parse(&source)?,
        params,
        base,
    }))
}

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a filter was refused. All are the client's fault and reach it as 40010 (invalid channel
/// name), the code Ably gives a malformed `[...]` qualifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filter expression longer than {max} bytes")]
    TooLong { max: usize },
    #[error("filter expression nested deeper than {max}")]
    TooDeep { max: usize },
    #[error("invalid filter expression at byte {at}: {why}")]
    Syntax { at: usize, why: String },
    #[error("invalid filter qualifier: {0}")]
    Qualifier(&'static str),
}

impl FilterError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidChannelName
    }

    pub fn info(&self) -> ErrorInfo {
        self.code().info(self.to_string())
    }
}

impl From<FilterError> for ErrorInfo {
    fn from(error: FilterError) -> ErrorInfo {
        error.info()
    }
}

#[cfg(test)]
mod tests;
