//! Which rules a channel gets: its sandbox app's namespace, the configured namespace, or the
//! defaults.

use super::*;
use crate::auth::APP_SEPARATOR;
use crate::config::{ChannelRules, Retention};

fn mutable(retention: Retention) -> ChannelRules {
    ChannelRules {
        retention,
        mutable_messages: true,
        ..ChannelRules::default()
    }
}

#[test]
fn a_configured_namespace_turns_on_mutable_messages_for_its_channels_only() {
    let hub =
        hub_with(|c| c.namespace_rules = vec![("chat".into(), mutable(Retention::PERSISTED))]);
    for channel in ["chat", "chat:room", "chat:room:1"] {
        let rules = hub.rules_for(channel);
        assert!(rules.mutable_messages, "{channel}");
        assert_eq!(rules.retention.max_messages, 10_000, "{channel}");
    }
    for channel in ["chatx:room", "room", "room:chat"] {
        let rules = hub.rules_for(channel);
        assert!(!rules.mutable_messages, "{channel}");
        assert_eq!(rules.retention.max_messages, 500, "{channel}: the default");
    }
    let in_an_app = format!("app{APP_SEPARATOR}chat:room");
    assert!(
        hub.rules_for(&in_an_app).mutable_messages,
        "configured rules hold in sandbox apps too"
    );
}

#[test]
fn an_apps_namespace_rules_hold_in_that_app_until_it_goes() {
    let hub = hub_with(|c| c.retention.max_messages = 3);
    hub.set_app_rules(
        "one",
        vec![("mutable".into(), mutable(Retention::PERSISTED))],
    );
    let key = |scope: &str, name: &str| format!("{scope}{APP_SEPARATOR}{name}");

    assert!(hub.rules_for(&key("one", "mutable:x")).mutable_messages);
    assert!(!hub.rules_for(&key("one", "x")).mutable_messages);
    assert!(
        !hub.rules_for(&key("two", "mutable:x")).mutable_messages,
        "another app's channel"
    );
    assert!(
        !hub.rules_for("mutable:x").mutable_messages,
        "a channel of no app"
    );

    // The log of a channel made in the namespace keeps what the rule says.
    let channel = key("one", "mutable:x");
    for i in 0..10 {
        publish_now(&hub, &channel, &i.to_string());
    }
    assert_eq!(history_data(&hub, &channel).len(), 10);

    hub.remove_app_rules("one");
    let rules = hub.rules_for(&key("one", "mutable:x"));
    assert!(!rules.mutable_messages, "gone with the app");
    assert_eq!(rules.retention.max_messages, 3);
}
