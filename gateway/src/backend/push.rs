//! Push state: device registrations and channel push subscriptions (Ably's push admin API), by
//! app scope (`""` for the shared space, a sandbox app's id otherwise). `PushStore` is what
//! `push/` needs from a back-end; `MemoryPush` keeps it in one process, `redis/push.rs` in
//! Redis so every node sees the same registrations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{BackendFuture, Reply};

/// Ably's DeviceDetails as we store it: what the device registered, its push state, and the
/// `deviceIdentityToken` we issued it (never shown except on registration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub form_factor: String,
    pub platform: String,
    #[serde(default = "empty_object")]
    pub metadata: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_secret: Option<String>,
    pub push: DevicePush,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_identity_token: Option<String>,
    /// When the token was issued (ms), for its TokenDetails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_issued: Option<u64>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// `DeviceDetails.push`: where to send (`recipient`, e.g. `{transportType: "web", …}`) and
/// whether that still works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePush {
    pub recipient: serde_json::Value,
    /// `ACTIVE`, or `FAILED` once a transport reported the recipient gone.
    #[serde(default = "active")]
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<serde_json::Value>,
}

pub(crate) const ACTIVE: &str = "ACTIVE";
pub(crate) const FAILED: &str = "FAILED";

fn active() -> String {
    ACTIVE.to_owned()
}

impl Device {
    pub fn is_active(&self) -> bool {
        self.push.state != FAILED
    }
}

/// A channel push subscription: a device's, or every device of a clientId.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subscriber {
    Device(String),
    Client(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subscription {
    pub channel: String,
    pub subscriber: Subscriber,
}

impl Subscriber {
    /// The member stored in a channel's subscriber set: `d:<deviceId>` or `c:<clientId>`.
    pub(crate) fn member(&self) -> String {
        match self {
            Subscriber::Device(id) => format!("d:{id}"),
            Subscriber::Client(id) => format!("c:{id}"),
        }
    }

    pub(crate) fn from_member(member: &str) -> Option<Subscriber> {
        match member.split_once(':')? {
            ("d", id) => Some(Subscriber::Device(id.to_owned())),
            ("c", id) => Some(Subscriber::Client(id.to_owned())),
            _ => None,
        }
    }
}

/// Registrations and subscriptions of every app, shared by the deployment's nodes. Lists come
/// back sorted (devices by id, subscriptions by channel then subscriber), so offset paging is
/// stable.
pub(crate) trait PushStore: Send + Sync {
    /// Stores a registration (replacing the one with its id).
    fn save_device<'a>(&'a self, scope: &'a str, device: &'a Device) -> Reply<'a, ()>;

    fn device<'a>(&'a self, scope: &'a str, id: &'a str) -> Reply<'a, Option<Device>>;

    /// Every registration, or a clientId's.
    fn devices<'a>(&'a self, scope: &'a str, client_id: Option<&'a str>) -> Reply<'a, Vec<Device>>;

    /// Removes registrations and their channel subscriptions.
    fn remove_devices<'a>(&'a self, scope: &'a str, ids: &'a [String]) -> Reply<'a, ()>;

    fn subscribe<'a>(&'a self, scope: &'a str, subscription: &'a Subscription) -> Reply<'a, ()>;

    fn unsubscribe<'a>(
        &'a self,
        scope: &'a str,
        subscriptions: &'a [Subscription],
    ) -> Reply<'a, ()>;

    /// A channel's subscriptions, or every channel's.
    fn subscriptions<'a>(
        &'a self,
        scope: &'a str,
        channel: Option<&'a str>,
    ) -> Reply<'a, Vec<Subscription>>;

    /// A device's or a clientId's subscriptions, whatever the channel.
    fn subscriptions_of<'a>(
        &'a self,
        scope: &'a str,
        subscriber: &'a Subscriber,
    ) -> Reply<'a, Vec<Subscription>>;

    /// The channels with at least one subscription.
    fn channels<'a>(&'a self, scope: &'a str) -> Reply<'a, Vec<String>>;

    /// Forgets everything of an app (a deleted sandbox app).
    fn forget_app<'a>(&'a self, scope: &'a str) -> Reply<'a, ()>;

    /// One page of the devices a push on `channel` goes to: those of up to about `limit` of its
    /// subscribers, a subscribed device itself or each device of a subscribed clientId (failed
    /// ones included; the caller skips them). `cursor` is `None` for the first page, then the
    /// previous page's `next`. Every subscriber present for the whole read is reached; a device
    /// may come back on a later page (subscribed both ways, or a subscriber read twice), so the
    /// caller remembers the ids it has sent to.
    fn recipients_page<'a>(
        &'a self,
        scope: &'a str,
        channel: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> Reply<'a, RecipientsPage>;
}

/// A page of a channel's push recipients (`PushStore::recipients_page`).
#[derive(Debug, Default)]
pub(crate) struct RecipientsPage {
    /// Each once within the page.
    pub(crate) devices: Vec<Device>,
    /// Where the next page starts; `None` after the last one. Opaque: each store has its own.
    pub(crate) next: Option<String>,
}

/// Push state in one process (embedded mode).
#[derive(Default)]
pub(crate) struct MemoryPush {
    apps: Mutex<HashMap<String, AppPush>>,
}

#[derive(Default)]
struct AppPush {
    devices: BTreeMap<String, Device>,
    /// clientId -> its devices' ids.
    by_client: HashMap<String, BTreeSet<String>>,
    /// channel -> its subscribers.
    by_channel: BTreeMap<String, BTreeSet<Subscriber>>,
    /// subscriber -> its channels.
    by_subscriber: HashMap<Subscriber, BTreeSet<String>>,
}

impl AppPush {
    fn unsubscribe(&mut self, subscription: &Subscription) {
        if let Some(subscribers) = self.by_channel.get_mut(&subscription.channel) {
            subscribers.remove(&subscription.subscriber);
            if subscribers.is_empty() {
                self.by_channel.remove(&subscription.channel);
            }
        }
        if let Some(channels) = self.by_subscriber.get_mut(&subscription.subscriber) {
            channels.remove(&subscription.channel);
            if channels.is_empty() {
                self.by_subscriber.remove(&subscription.subscriber);
            }
        }
    }

    fn unindex_client(&mut self, client_id: &str, device_id: &str) {
        if let Some(ids) = self.by_client.get_mut(client_id) {
            ids.remove(device_id);
            if ids.is_empty() {
                self.by_client.remove(client_id);
            }
        }
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BackendFuture<'a, super::Result<T>> {
    Box::pin(std::future::ready(Ok(value)))
}

impl MemoryPush {
    fn with<T>(&self, scope: &str, f: impl FnOnce(&mut AppPush) -> T) -> T {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let app = apps.entry(scope.to_owned()).or_default();
        f(app)
    }
}

impl PushStore for MemoryPush {
    fn save_device<'a>(&'a self, scope: &'a str, device: &'a Device) -> Reply<'a, ()> {
        self.with(scope, |app| {
            if let Some(old) = app.devices.get(&device.id) {
                if let Some(client_id) = old.client_id.clone() {
                    app.unindex_client(&client_id, &device.id);
                }
            }
            if let Some(client_id) = &device.client_id {
                app.by_client
                    .entry(client_id.clone())
                    .or_default()
                    .insert(device.id.clone());
            }
            app.devices.insert(device.id.clone(), device.clone());
        });
        ready(())
    }

    fn device<'a>(&'a self, scope: &'a str, id: &'a str) -> Reply<'a, Option<Device>> {
        ready(self.with(scope, |app| app.devices.get(id).cloned()))
    }

    fn devices<'a>(&'a self, scope: &'a str, client_id: Option<&'a str>) -> Reply<'a, Vec<Device>> {
        ready(self.with(scope, |app| {
            match client_id {
                None => app.devices.values().cloned().collect(),
                Some(client_id) => app
                    .by_client
                    .get(client_id)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| app.devices.get(id).cloned())
                    .collect(),
            }
        }))
    }

    fn remove_devices<'a>(&'a self, scope: &'a str, ids: &'a [String]) -> Reply<'a, ()> {
        self.with(scope, |app| {
            for id in ids {
                let Some(device) = app.devices.remove(id) else {
                    continue;
                };
                if let Some(client_id) = &device.client_id {
                    app.unindex_client(client_id, id);
                }
                let subscriber = Subscriber::Device(id.clone());
                let channels = app.by_subscriber.remove(&subscriber).unwrap_or_default();
                for channel in channels {
                    app.unsubscribe(&Subscription {
                        channel,
                        subscriber: subscriber.clone(),
                    });
                }
            }
        });
        ready(())
    }

    fn subscribe<'a>(&'a self, scope: &'a str, subscription: &'a Subscription) -> Reply<'a, ()> {
        self.with(scope, |app| {
            app.by_channel
                .entry(subscription.channel.clone())
                .or_default()
                .insert(subscription.subscriber.clone());
            app.by_subscriber
                .entry(subscription.subscriber.clone())
                .or_default()
                .insert(subscription.channel.clone());
        });
        ready(())
    }

    fn unsubscribe<'a>(
        &'a self,
        scope: &'a str,
        subscriptions: &'a [Subscription],
    ) -> Reply<'a, ()> {
        self.with(scope, |app| {
            subscriptions.iter().for_each(|s| app.unsubscribe(s))
        });
        ready(())
    }

    fn subscriptions<'a>(
        &'a self,
        scope: &'a str,
        channel: Option<&'a str>,
    ) -> Reply<'a, Vec<Subscription>> {
        ready(self.with(scope, |app| {
            app.by_channel
                .iter()
                .filter(|(name, _)| channel.is_none_or(|c| c == name.as_str()))
                .flat_map(|(name, subscribers)| {
                    subscribers.iter().map(|subscriber| Subscription {
                        channel: name.clone(),
                        subscriber: subscriber.clone(),
                    })
                })
                .collect()
        }))
    }

    fn subscriptions_of<'a>(
        &'a self,
        scope: &'a str,
        subscriber: &'a Subscriber,
    ) -> Reply<'a, Vec<Subscription>> {
        ready(self.with(scope, |app| {
            app.by_subscriber
                .get(subscriber)
                .into_iter()
                .flatten()
                .map(|channel| Subscription {
                    channel: channel.clone(),
                    subscriber: subscriber.clone(),
                })
                .collect()
        }))
    }

    fn channels<'a>(&'a self, scope: &'a str) -> Reply<'a, Vec<String>> {
        ready(self.with(scope, |app| app.by_channel.keys().cloned().collect()))
    }

    fn forget_app<'a>(&'a self, scope: &'a str) -> Reply<'a, ()> {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        apps.remove(scope);
        crate::shrink::hash_map(&mut apps);
        ready(())
    }

    /// The cursor is the last subscriber's member (`d:<id>`/`c:<id>`): the next page is what
    /// sorts after it, wherever subscriptions came or went meanwhile.
    fn recipients_page<'a>(
        &'a self,
        scope: &'a str,
        channel: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> Reply<'a, RecipientsPage> {
        let after = match cursor.map(Subscriber::from_member) {
            None => Bound::Unbounded,
            Some(Some(subscriber)) => Bound::Excluded(subscriber),
            // Not one of ours: nothing follows it.
            Some(None) => return ready(RecipientsPage::default()),
        };
        ready(self.with(scope, |app| {
            let Some(subscribers) = app.by_channel.get(channel) else {
                return RecipientsPage::default();
            };
            let mut rest = subscribers.range((after, Bound::Unbounded));
            let page: Vec<&Subscriber> = rest.by_ref().take(limit.max(1)).collect();
            let next = match (page.last(), rest.next()) {
                (Some(last), Some(_)) => Some(last.member()),
                _ => None,
            };
            let mut ids = BTreeSet::new();
            for subscriber in page {
                match subscriber {
                    Subscriber::Device(id) => {
                        ids.insert(id);
                    }
                    Subscriber::Client(client_id) => {
                        ids.extend(app.by_client.get(client_id).into_iter().flatten());
                    }
                }
            }
            let devices = ids
                .into_iter()
                .filter_map(|id| app.devices.get(id).cloned())
                .collect();
            RecipientsPage { devices, next }
        }))
    }
}
