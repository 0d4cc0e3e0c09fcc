//! Sandbox apps (`--sandbox`): isolated apps made on demand, the way Ably's sandbox serves SDK
//! test suites. Each app has its own keys, and its channels (history, presence) are scoped by
//! its id, so apps never see each other's traffic.

use std::sync::Arc;

use dashmap::DashMap;
use protocol::{Capability, Data, PresenceMessage};
use rand::distributions::{Alphanumeric, DistString};
use serde::Deserialize;

use crate::auth::{Auth, APP_SEPARATOR};
use crate::config::{ApiKey, ChannelRules, Retention};
use crate::error::Error;
use crate::hub::Hub;
use crate::stats::Stats;

/// The `post_apps` body of ably-common's `test-app-setup.json` (fields we act on).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AppSpec {
    pub keys: Vec<KeySpec>,
    pub namespaces: Vec<NamespaceSpec>,
    pub channels: Vec<ChannelSpec>,
}

/// A namespace rule, as the test app setup sends them: `{id: "mutable", mutableMessages: true}`,
/// `{id: "persisted", persisted: true}`, `{id: "pushenabled", pushEnabled: true}`; other rules are
/// accepted and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {
    /// The namespace: the part of a channel name before the first `:`.
    pub id: String,
    #[serde(default)]
    pub mutable_messages: bool,
    /// History kept for a day (`Retention::PERSISTED`); mutable messages imply it, as on Ably.
    #[serde(default)]
    pub persisted: bool,
    /// Push subscriptions allowed on the namespace's channels.
    #[serde(default)]
    pub push_enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct KeySpec {
    /// Capability JSON, as a string or an object; all rights when absent.
    #[serde(default)]
    pub capability: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChannelSpec {
    pub name: String,
    #[serde(default)]
    pub presence: Vec<PresenceSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceSpec {
    pub client_id: String,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    #[serde(default)]
    pub encoding: Option<String>,
}

/// The connection id fixture members are held under; they stay for the app's life.
const FIXTURE_CONNECTION: &str = "fixtures";

/// A channel's presence fixtures: the gateway enters them through the bus when the app is
/// made (so on Redis they are stored like any member, and a node catching the channel up does
/// not see them missing), and makes them leave when it is deleted.
#[derive(Clone)]
pub(crate) struct Fixture {
    /// The app-scoped channel key.
    pub(crate) channel: String,
    /// Their ENTERs.
    pub(crate) members: Vec<PresenceMessage>,
}

impl Fixture {
    /// The members' LEAVEs, as the server makes them.
    pub(crate) fn leaves(&self) -> Vec<PresenceMessage> {
        let now = protocol::now_ms();
        self.members
            .iter()
            .map(|member| crate::hub::server_leave(member.clone(), now))
            .collect()
    }
}

/// The sandbox apps made on this node, with what making and removing one touches.
pub(crate) struct Apps {
    /// App id -> its presence fixtures.
    apps: DashMap<String, Vec<Fixture>>,
    auth: Arc<Auth>,
    hub: Arc<Hub>,
    stats: Arc<Stats>,
}

impl Apps {
    pub(crate) fn new(auth: Arc<Auth>, hub: Arc<Hub>, stats: Arc<Stats>) -> Apps {
        Apps {
            apps: DashMap::new(),
            auth,
            hub,
            stats,
        }
    }

    /// Creates an app with the given keys (in order) and namespace rules; returns its presence
    /// fixtures, checked, for the caller to enter.
    pub(crate) fn create(
        &self,
        spec: &AppSpec,
    ) -> Result<(String, Vec<ApiKey>, Vec<Fixture>), Error> {
        let app_id = Alphanumeric.sample_string(&mut rand::thread_rng(), 10);
        let scope: Arc<str> = app_id.as_str().into();
        let mut keys = Vec::new();
        let specs: Vec<&KeySpec> = if spec.keys.is_empty() {
            vec![&KeySpec { capability: None }]
        } else {
            spec.keys.iter().collect()
        };
        for (index, key_spec) in specs.into_iter().enumerate() {
            let capability = match &key_spec.capability {
                None => Capability::all(),
                Some(serde_json::Value::String(json)) => Capability::parse(json)?,
                Some(object) => Capability::parse(&object.to_string())?,
            };
            let secret = Alphanumeric.sample_string(&mut rand::thread_rng(), 24);
            let mut key = ApiKey::parse(&format!("{app_id}.key{index}:{secret}"), capability)
                .map_err(Error::InvalidAppKey)?;
            key.app = Some(scope.clone());
            self.auth.add_app_key(key.clone());
            keys.push(key);
        }
        // Before the fixtures, so a fixture channel is made with its namespace's retention.
        self.hub
            .set_app_rules(&app_id, Apps::namespace_rules(spec, self.hub.retention()));
        let fixtures = match self.fixtures(&app_id, &spec.channels) {
            Ok(fixtures) => fixtures,
            Err(error) => {
                self.hub.remove_app_rules(&app_id);
                self.auth.remove_app(&app_id);
                return Err(error);
            }
        };
        self.apps.insert(app_id.clone(), fixtures.clone());
        tracing::info!(%app_id, keys = keys.len(), "sandbox app created");
        Ok((app_id, keys, fixtures))
    }

    /// The rules of the app's namespaces that change anything: mutable or persisted ones keep a
    /// day of history, push-enabled ones take push subscriptions. The others leave the
    /// configured rules in force.
    fn namespace_rules(spec: &AppSpec, retention: Retention) -> Vec<(String, ChannelRules)> {
        spec.namespaces
            .iter()
            .filter(|namespace| {
                namespace.persisted || namespace.mutable_messages || namespace.push_enabled
            })
            .map(|namespace| {
                let rules = ChannelRules {
                    retention: if namespace.persisted || namespace.mutable_messages {
                        Retention::PERSISTED
                    } else {
                        retention
                    },
                    mutable_messages: namespace.mutable_messages,
                    batching: None,
                    push_enabled: namespace.push_enabled,
                };
                (namespace.id.clone(), rules)
            })
            .collect()
    }

    /// The presence fixtures of the app's channels, checked as a client's ENTERs would be.
    fn fixtures(&self, app_id: &str, channels: &[ChannelSpec]) -> Result<Vec<Fixture>, Error> {
        let mut fixtures = Vec::with_capacity(channels.len());
        for channel in channels {
            let name = protocol::ChannelName::parse(&channel.name)?;
            let channel_key = format!("{app_id}{APP_SEPARATOR}{}", name.base());
            let now = protocol::now_ms();
            let members = channel
                .presence
                .iter()
                .enumerate()
                .map(|(index, member)| PresenceMessage {
                    id: Some(format!("{FIXTURE_CONNECTION}:0:{index}")),
                    action: 2,
                    client_id: Some(member.client_id.clone()),
                    connection_id: Some(FIXTURE_CONNECTION.to_owned()),
                    data: member.data.clone().map(|data| match data {
                        serde_json::Value::String(text) => Data::String(text),
                        other => Data::Other(other),
                    }),
                    encoding: member.encoding.clone(),
                    timestamp: Some(now),
                    ..Default::default()
                })
                .collect::<Vec<_>>();
            if !members.is_empty() {
                self.hub.check_presence(&channel_key, &members)?;
                fixtures.push(Fixture {
                    channel: channel_key,
                    members,
                });
            }
        }
        Ok(fixtures)
    }

    /// The app's presence fixtures; None for an unknown app.
    pub(crate) fn fixtures_of(&self, app_id: &str) -> Option<Vec<Fixture>> {
        self.apps.get(app_id).map(|fixtures| fixtures.clone())
    }

    /// Removes an app's keys and namespace rules (its channels age out with their history; the
    /// caller made its fixtures leave).
    pub(crate) fn delete(&self, app_id: &str) -> bool {
        if self.apps.remove(app_id).is_none() {
            return false;
        }
        self.hub.remove_app_rules(app_id);
        self.auth.remove_app(app_id);
        self.stats.remove_app(app_id);
        true
    }

    /// Gives back the room a burst of apps made and deleted held (the sweep calls this).
    pub(crate) fn sweep(&self) {
        crate::shrink::dash_map(&self.apps);
    }
}
