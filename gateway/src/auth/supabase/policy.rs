//! The policy: Supabase claims -> Ably capability.
//!
//! Rules match on `role`, `aal` and `is_anonymous`; every matching rule adds its capability. Channel
//! patterns may name string claims in braces (`user:{sub}`, `org:{app_metadata.org_id}:*`).
//! `user_metadata` is refused: users can edit it themselves. A substituted value that is empty or
//! contains a pattern character (`*`, `:`, `[`, `]`, `{`, `}`) drops that resource, so a crafted
//! claim can never widen a pattern.

use std::collections::BTreeMap;

use protocol::Capability;
use serde_json::{Map, Value};

use crate::config::{Policy, Rule};

impl Policy {
    /// Checks what a loaded file can get wrong; `main` reports it naming the file.
    pub fn validate(&self) -> Result<(), String> {
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.capability.is_empty() {
                return Err(format!("rule {}: empty capability", index + 1));
            }
            for (pattern, ops) in &rule.capability {
                if ops.is_empty() {
                    return Err(format!("rule {}: no operations for {pattern:?}", index + 1));
                }
            }
            if let Some((pattern, rate)) = rule.publish_rate.iter().find(|(_, r)| **r <= 0.0) {
                return Err(format!(
                    "rule {}: publish_rate {rate} for {pattern:?} must be above 0",
                    index + 1
                ));
            }
            let templates = rule
                .capability
                .keys()
                .chain(rule.publish_rate.keys())
                .chain(
                    rule.user_claim
                        .iter()
                        .flat_map(|(pattern, claim)| [pattern, claim]),
                );
            for pattern in templates {
                for path in template_paths(pattern)? {
                    if path == "user_metadata" || path.starts_with("user_metadata.") {
                        return Err(format!(
                            "rule {}: {pattern:?} uses user_metadata, which users can edit themselves",
                            index + 1
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn capability_for(&self, claims: &Map<String, Value>) -> Capability {
        let mut entries: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rule in self.rules.iter().filter(|rule| rule.matches(claims)) {
            for (pattern, ops) in &rule.capability {
                if let Some(resource) = substitute(pattern, claims) {
                    let entry = entries.entry(resource).or_default();
                    entry.extend(ops.iter().cloned());
                    entry.sort();
                    entry.dedup();
                }
            }
        }
        Capability::from_entries(entries)
    }

    /// A user's per-attachment publish limits, by channel pattern: every matching rule's, in
    /// order (the first that covers a channel applies).
    pub fn attachment_rates_for(&self, claims: &Map<String, Value>) -> Vec<(String, f64)> {
        self.rules
            .iter()
            .filter(|rule| rule.matches(claims))
            .flat_map(|rule| &rule.publish_rate)
            .filter_map(|(pattern, rate)| Some((substitute(pattern, claims)?, *rate)))
            .collect()
    }

    /// The `userClaim`s of a user, by channel pattern: every matching rule's, in order. A claim
    /// whose value is missing (or empty) gives none.
    pub fn user_claims_for(&self, claims: &Map<String, Value>) -> Vec<(String, String)> {
        self.rules
            .iter()
            .filter(|rule| rule.matches(claims))
            .flat_map(|rule| &rule.user_claim)
            .filter_map(|(pattern, template)| {
                Some((substitute(pattern, claims)?, fill(template, claims)?))
            })
            .collect()
    }
}

/// `template` with each `{claim.path}` replaced by the claim's text, whatever it holds (it
/// is shown, never matched); `None` if one is missing or empty.
fn fill(template: &str, claims: &Map<String, Value>) -> Option<String> {
    replace_claims(template, claims, |_| true)
}

impl Rule {
    fn matches(&self, claims: &Map<String, Value>) -> bool {
        let role = claims.get("role").and_then(Value::as_str);
        let role_ok = match (&self.role, &self.roles) {
            (None, None) => true,
            (one, many) => role.is_some_and(|role| {
                one.as_deref() == Some(role) || many.iter().flatten().any(|r| r == role)
            }),
        };
        let aal_ok = self
            .aal
            .as_deref()
            .is_none_or(|aal| claims.get("aal").and_then(Value::as_str) == Some(aal));
        let anonymous = claims
            .get("is_anonymous")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let anonymous_ok = self.is_anonymous.is_none_or(|wanted| wanted == anonymous);
        role_ok && aal_ok && anonymous_ok
    }
}

fn template_paths(pattern: &str) -> Result<Vec<&str>, String> {
    let paths = protocol::event::placeholders(pattern)
        .ok_or_else(|| format!("{pattern:?}: unclosed {{"))?;
    if paths.iter().any(|path| path.is_empty()) {
        return Err(format!("{pattern:?}: empty {{}}"));
    }
    Ok(paths)
}

/// The pattern with every `{path}` replaced by its string claim, or `None` if a claim is missing
/// or could change the pattern's meaning.
fn substitute(pattern: &str, claims: &Map<String, Value>) -> Option<String> {
    replace_claims(pattern, claims, |value| {
        !value.contains(['*', ':', '[', ']', '{', '}'])
    })
}

/// `text` with every `{path}` replaced by its string claim; `None` if one is missing, empty or
/// not `allowed`.
fn replace_claims(
    text: &str,
    claims: &Map<String, Value>,
    allowed: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let value = lookup(claims, &after[..close])?;
        if value.is_empty() || !allowed(value) {
            return None;
        }
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a str> {
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    value.as_str()
}

#[cfg(test)]
mod tests {
    use protocol::{ChannelName, Operation};
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn allows(capability: &Capability, channel: &str, op: Operation) -> bool {
        capability.allows(&ChannelName::parse(channel).unwrap(), op)
    }

    /// `user_claim` gives each matching rule's claims, filled from the token (any text, as it
    /// is only shown), keyed by patterns filled safely; a missing claim gives none, and
    /// `user_metadata` (the user's own to edit) is refused at load.
    #[test]
    fn user_claims_come_from_matching_rules() {
        let policy: Policy = serde_json::from_value(json!({"rule": [
            {"role": "authenticated", "capability": {"room:*": ["publish"]},
             "user_claim": {"room:*": "{app_metadata.tier}: {app_metadata.name}", "user:{sub}": "self"},
             "publish_rate": {"room:*": 0.5}},
            {"role": "service_role", "capability": {"[*]*": ["*"]}, "user_claim": {"*": "staff"}},
        ]}))
        .unwrap();
        policy.validate().unwrap();
        let user = claims(json!({"sub": "u1", "role": "authenticated",
                                 "app_metadata": {"tier": "gold", "name": "Ann: the *best*"}}));
        let mut got = policy.user_claims_for(&user);
        got.sort();
        assert_eq!(
            got,
            [
                ("room:*".to_owned(), "gold: Ann: the *best*".to_owned()),
                ("user:u1".to_owned(), "self".to_owned()),
            ]
        );
        assert_eq!(
            policy.attachment_rates_for(&user),
            [("room:*".to_owned(), 0.5)]
        );
        let untiered = claims(json!({"sub": "u2", "role": "authenticated"}));
        assert_eq!(
            policy.user_claims_for(&untiered),
            [("user:u2".to_owned(), "self".to_owned())]
        );
        let sneaky = claims(json!({"sub": "*", "role": "authenticated"}));
        assert!(
            policy.user_claims_for(&sneaky).is_empty(),
            "a pattern claim cannot widen"
        );

        let editable: Result<Policy, _> = serde_json::from_value(json!({"rule": [
            {"capability": {"room:*": ["publish"]}, "user_claim": {"room:*": "{user_metadata.name}"}},
        ]}));
        assert!(editable
            .unwrap()
            .validate()
            .unwrap_err()
            .contains("user_metadata"));
    }

    #[test]
    fn default_policy_fits_digis() {
        let policy = Policy::default();
        let user = policy.capability_for(&claims(json!({"sub": "u1", "role": "authenticated"})));
        assert!(allows(&user, "session:9", Operation::Subscribe));
        assert!(allows(&user, "call:9", Operation::Presence));
        assert!(!allows(&user, "session:9", Operation::Publish));
        assert!(allows(&user, "user:u1", Operation::Subscribe));
        assert!(!allows(&user, "user:u2", Operation::Subscribe));

        let service = policy.capability_for(&claims(json!({"sub": "s", "role": "service_role"})));
        assert!(allows(&service, "user:u2", Operation::Publish));
        assert!(allows(&service, "[meta]x", Operation::Subscribe));

        let anon = policy.capability_for(&claims(json!({"role": "anon"})));
        assert!(anon.is_empty());
    }

    #[test]
    fn crafted_claims_cannot_widen_a_pattern() {
        let policy = Policy::default();
        for sub in ["*", "a:*", "", "x]y"] {
            let capability =
                policy.capability_for(&claims(json!({"sub": sub, "role": "authenticated"})));
            assert!(
                !allows(&capability, "user:someone", Operation::Subscribe),
                "{sub:?}"
            );
            assert!(
                !allows(&capability, "user:a:b", Operation::Subscribe),
                "{sub:?}"
            );
        }
    }

    #[test]
    fn rules_match_on_role_aal_and_anonymity_and_use_nested_claims() {
        let policy: Policy = serde_json::from_value(json!({
            "rule": [
                {"roles": ["authenticated"], "aal": "aal2", "is_anonymous": false,
                 "capability": {"org:{app_metadata.org}:*": ["publish"]}},
            ]
        }))
        .unwrap();
        policy.validate().unwrap();
        let strong = claims(
            json!({"role": "authenticated", "aal": "aal2", "app_metadata": {"org": "acme"}}),
        );
        assert!(allows(
            &policy.capability_for(&strong),
            "org:acme:1",
            Operation::Publish
        ));
        let weak = claims(
            json!({"role": "authenticated", "aal": "aal1", "app_metadata": {"org": "acme"}}),
        );
        assert!(policy.capability_for(&weak).is_empty());
        let anonymous = claims(
            json!({"role": "authenticated", "aal": "aal2", "is_anonymous": true, "app_metadata": {"org": "acme"}}),
        );
        assert!(policy.capability_for(&anonymous).is_empty());
    }

    #[test]
    fn user_metadata_is_refused() {
        let policy: Policy = serde_json::from_value(json!({
            "rule": [{"capability": {"team:{user_metadata.team}": ["subscribe"]}}]
        }))
        .unwrap();
        assert!(policy.validate().unwrap_err().contains("user_metadata"));
    }
}
