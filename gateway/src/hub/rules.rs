//! Which rules a channel gets: its sandbox app's namespace rules first (an app made with
//! `namespaces: [{id: "mutable", mutableMessages: true}]`), then the configured namespace rules,
//! then the hub's defaults. A hub key is `scope APP_SEPARATOR name` for an app's channel and the
//! bare name otherwise; the namespace is the name's part before the first `:` (the whole name
//! when it has none, as Ably has it).

use crate::auth::APP_SEPARATOR;
use crate::config::{ChannelRules, Retention};

/// What an Ably Chat room's channel name ends with.
const CHAT_SUFFIX: &str = "::$chat";

use super::Hub;

impl Hub {
    /// The rules for the channel with hub key `channel`.
    pub fn rules_for(&self, channel: &str) -> ChannelRules {
        let (scope, name) = match channel.split_once(APP_SEPARATOR) {
            Some((scope, name)) => (Some(scope), name),
            None => (None, channel),
        };
        let namespace = name.split(':').next().unwrap_or(name);
        let app_rules = scope
            .and_then(|scope| self.app_rules.get(scope))
            .and_then(|rules| find(&rules, namespace));
        let rules = app_rules.or_else(|| find(&self.config.namespace_rules, namespace));
        // An Ably Chat room's channel: chat messages can always be edited, deleted and reacted
        // to, and are kept as a mutable namespace's are.
        if name.ends_with(CHAT_SUFFIX) {
            let retention = rules.as_ref().map_or(Retention::PERSISTED, |r| r.retention);
            return ChannelRules {
                retention,
                mutable_messages: true,
                ..rules.unwrap_or_default()
            };
        }
        rules.unwrap_or(ChannelRules {
            retention: self.config.retention,
            ..ChannelRules::default()
        })
    }

    /// The retention a channel of no namespace rule gets.
    pub(crate) fn retention(&self) -> Retention {
        self.config.retention
    }

    /// Sets a sandbox app's namespace rules (replacing any it had). A channel already held
    /// keeps the retention it was made with until it is swept.
    pub(crate) fn set_app_rules(&self, scope: &str, rules: Vec<(String, ChannelRules)>) {
        self.app_rules.insert(scope.to_owned(), rules);
    }

    /// Forgets a deleted sandbox app's namespace rules.
    pub(crate) fn remove_app_rules(&self, scope: &str) {
        self.app_rules.remove(scope);
    }
}

fn find(rules: &[(String, ChannelRules)], namespace: &str) -> Option<ChannelRules> {
    rules
        .iter()
        .find(|(name, _)| name == namespace)
        .map(|(_, rules)| rules.clone())
}
