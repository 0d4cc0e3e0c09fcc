//! Ably's push admin API behind the REST routes (`Push`, reached by `Gateway::push`): device
//! registrations, channel push subscriptions, direct publish, each with Ably's rules on who may
//! do it; and the dispatch of channel messages' `extras.push` (`dispatch.rs`) to transports
//! (`PushTransport`; `ablyChannel`, Ably's test transport, is ours: `ably_channel.rs`).
//!
//! Who may do what (Ably's): `push-admin` anything; `push-subscribe` subscribe and unsubscribe
//! its own clientId, or a device it holds credentials for; a device its own registration and
//! subscriptions, with the `deviceIdentityToken` we issued it at registration
//! (`X-Ably-DeviceToken`, or as a Bearer token) or its `deviceSecret` (`X-Ably-DeviceSecret`).
//! State lives in the back-end's `PushStore` (memory, or Redis so every node agrees).

mod ably_channel;
mod dispatch;
mod services;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Weak};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use protocol::{ChannelName, ErrorCode, ErrorInfo, Operation};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};

use crate::auth::{constant_time_eq, Auth, Principal};
pub use crate::backend::push::{Device, Subscriber, Subscription};
use crate::backend::push::{DevicePush, PushStore, ACTIVE, FAILED};
use crate::hub::Hub;
use crate::publish::Publisher;
use crate::wiring::Wiring;
use dispatch::{Dispatcher, Transports};
pub use dispatch::{PushJob, PushRefused, PushTransport};
pub use services::Services;

/// What a device identity token starts with, so a Bearer credential is told from our tokens.
const DEVICE_TOKEN_PREFIX: &str = "dit1.";

/// How long a device identity token is said to last (Ably's do not lapse while registered).
const DEVICE_TOKEN_TTL_MS: u64 = 10 * 365 * 24 * 60 * 60 * 1000;

const PLATFORMS: &[&str] = &["android", "ios", "browser"];
const FORM_FACTORS: &[&str] = &[
    "phone", "tablet", "desktop", "tv", "watch", "car", "embedded", "other",
];

/// Who calls: an authenticated principal, device credentials, or both.
#[derive(Debug, Default, Clone)]
pub struct PushCaller {
    pub principal: Option<Principal>,
    /// `X-Ably-DeviceToken`, or a Bearer credential that is a device identity token.
    pub device_token: Option<String>,
    /// `X-Ably-DeviceSecret`.
    pub device_secret: Option<String>,
}

impl PushCaller {
    /// The app the call acts in: the principal's, else the one its device token names.
    fn scope(&self) -> Result<String, ErrorInfo> {
        if let Some(principal) = &self.principal {
            return Ok(principal.scope.as_deref().unwrap_or_default().to_owned());
        }
        self.device_token
            .as_deref()
            .and_then(token_scope)
            .ok_or_else(|| ErrorCode::Unauthorized.info("no credentials for the push API"))
    }

    fn is_admin(&self) -> bool {
        self.principal
            .as_ref()
            .is_some_and(|p| p.capability.allows_somewhere(Operation::PushAdmin))
    }

    fn is_admin_of(&self, channel: &ChannelName) -> bool {
        self.principal
            .as_ref()
            .is_some_and(|p| p.allows(channel, Operation::PushAdmin))
    }

    /// `is_admin_of` for a stored channel name (one that does not parse is nobody's).
    fn is_admin_of_name(&self, channel: &str) -> bool {
        ChannelName::parse(channel).is_ok_and(|channel| self.is_admin_of(&channel))
    }

    fn may_subscribe(&self, channel: &ChannelName) -> bool {
        self.principal.as_ref().is_some_and(|p| {
            p.allows(channel, Operation::PushSubscribe) || p.allows(channel, Operation::PushAdmin)
        })
    }

    fn identity(&self) -> Option<&str> {
        self.principal.as_ref().and_then(Principal::identity)
    }

    /// Holds credentials for `device`: its identity token or its secret.
    fn holds(&self, device: &Device) -> bool {
        let matches = |given: &Option<String>, held: &Option<String>| match (given, held) {
            (Some(given), Some(held)) => {
                !given.is_empty() && constant_time_eq(given.as_bytes(), held.as_bytes())
            }
            _ => false,
        };
        matches(&self.device_token, &device.device_identity_token)
            || matches(&self.device_secret, &device.device_secret)
    }
}

/// Whether a Bearer credential is a device identity token (not an Ably token).
pub fn is_device_token(token: &str) -> bool {
    token.starts_with(DEVICE_TOKEN_PREFIX)
}

fn token_scope(token: &str) -> Option<String> {
    let rest = token.strip_prefix(DEVICE_TOKEN_PREFIX)?;
    let (scope, _) = rest.split_once('.')?;
    String::from_utf8(URL_SAFE_NO_PAD.decode(scope).ok()?).ok()
}

fn new_device_token(scope: &str) -> String {
    let random = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    format!(
        "{DEVICE_TOKEN_PREFIX}{}.{random}",
        URL_SAFE_NO_PAD.encode(scope)
    )
}

fn denied(what: &str) -> ErrorInfo {
    ErrorCode::CapabilityDenied.info(format!("{what} is not permitted (push-admin, push-subscribe or the device's own credentials needed)"))
}

fn bad(why: impl Into<String>) -> ErrorInfo {
    ErrorCode::BadRequest.info(why.into())
}

fn no_device(id: &str) -> ErrorInfo {
    ErrorCode::NotFound.info(format!("no device registration {id:?}"))
}

/// A registration as the API shows it: everything but our token.
pub fn view(device: &Device) -> Value {
    let mut device = device.clone();
    device.device_identity_token = None;
    device.token_issued = None;
    serde_json::to_value(device).unwrap_or_default()
}

/// What `POST /push/deviceRegistrations` answers: the registration with its
/// `deviceIdentityToken` as TokenDetails.
pub fn view_registered(device: &Device) -> Value {
    let mut out = view(device);
    let issued = device.token_issued.unwrap_or_default();
    out["deviceIdentityToken"] = json!({
        "token": device.device_identity_token,
        "issued": issued,
        "expires": issued + DEVICE_TOKEN_TTL_MS,
        "capability": "",
        "clientId": device.client_id,
    });
    out
}

/// A subscription as the API shows it: `{channel, deviceId}` or `{channel, clientId}`.
pub fn view_subscription(subscription: &Subscription) -> Value {
    match &subscription.subscriber {
        Subscriber::Device(id) => json!({"channel": subscription.channel, "deviceId": id}),
        Subscriber::Client(id) => json!({"channel": subscription.channel, "clientId": id}),
    }
}

/// Filters of `GET|DELETE /push/deviceRegistrations`.
#[derive(Debug, Default, Clone)]
pub struct DeviceFilter {
    pub device_id: Option<String>,
    pub client_id: Option<String>,
}

/// Filters of `GET|DELETE /push/channelSubscriptions`; `concat` (`concatFilters`): deviceId and
/// clientId match either, not both.
#[derive(Debug, Default, Clone)]
pub struct SubscriptionFilter {
    pub channel: Option<String>,
    pub device_id: Option<String>,
    pub client_id: Option<String>,
    pub concat: bool,
}

impl SubscriptionFilter {
    fn matches(&self, subscription: &Subscription) -> bool {
        if self
            .channel
            .as_ref()
            .is_some_and(|c| *c != subscription.channel)
        {
            return false;
        }
        let device = self
            .device_id
            .as_ref()
            .map(|id| matches!(&subscription.subscriber, Subscriber::Device(d) if d == id));
        let client = self
            .client_id
            .as_ref()
            .map(|id| matches!(&subscription.subscriber, Subscriber::Client(c) if c == id));
        match (device, client) {
            (None, None) => true,
            (Some(d), None) => d,
            (None, Some(c)) => c,
            (Some(d), Some(c)) if self.concat => d || c,
            (Some(d), Some(c)) => d && c,
        }
    }
}

/// A page of a sorted list: `offset` items skipped, at most `limit` taken.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

/// One page and whether more follow.
pub struct Paged<T> {
    pub items: Vec<T>,
    pub more: bool,
}

fn page<T>(all: Vec<T>, page: Page) -> Paged<T> {
    let more = all.len() > page.offset + page.limit;
    let items = all.into_iter().skip(page.offset).take(page.limit).collect();
    Paged { items, more }
}

/// The push admin API and dispatch, one per gateway.
pub struct Push {
    wiring: Arc<Wiring>,
    hub: Arc<Hub>,
    transports: Arc<Transports>,
}

impl Push {
    /// Builds the API and starts dispatch: stored publications' `extras.push` reach the
    /// dispatcher through `Wiring`, `ablyChannel` notifications are published by `publisher`.
    pub(crate) fn start(
        wiring: Arc<Wiring>,
        hub: Arc<Hub>,
        auth: Arc<Auth>,
        publisher: Weak<Publisher>,
    ) -> Push {
        let transports = Arc::new(Transports {
            ably_channel: Arc::new(ably_channel::AblyChannel::start(publisher, auth)),
            external: Default::default(),
        });
        let dispatcher = Dispatcher::start(Arc::downgrade(&wiring), transports.clone());
        wiring.set_push(Arc::new(dispatcher));
        Push {
            wiring,
            hub,
            transports,
        }
    }

    /// The transport for every recipient but `ablyChannel` (Web Push, FCM, APNs); set once.
    pub fn set_transport(&self, transport: Arc<dyn PushTransport>) {
        let _ = self.transports.external.set(transport);
    }

    /// Forgets a deleted sandbox app's registrations and subscriptions, in the background.
    pub(crate) fn forget_app(&self, app: &str) {
        let store = self.store().clone();
        let app = app.to_owned();
        tokio::spawn(async move {
            if let Err(error) = store.forget_app(&app).await {
                tracing::warn!(%app, %error, "a deleted app's push state was not forgotten");
            }
        });
    }

    fn store(&self) -> &Arc<dyn PushStore> {
        self.wiring.push_store()
    }

    /// A transport reports a recipient gone (unregistered, bad token): the registration is
    /// marked `FAILED` with `reason` and gets no more notifications.
    /// Stores a registration whose recipient its transport could deliver to (a Web Push
    /// endpoint on a listed push service, an ablyChannel with its channel and key); else 40000.
    async fn store_device(&self, scope: &str, device: Device) -> Result<Device, ErrorInfo> {
        self.transports
            .accepts(&device.push.recipient)
            .map_err(|refused| bad(refused.to_string()))?;
        self.store().save_device(scope, &device).await?;
        Ok(device)
    }

    pub async fn gone(
        &self,
        app: &str,
        device_id: &str,
        reason: ErrorInfo,
    ) -> Result<(), ErrorInfo> {
        let Some(mut device) = self.store().device(app, device_id).await? else {
            return Ok(());
        };
        device.push.state = FAILED.to_owned();
        device.push.error_reason = Some(serde_json::to_value(&reason).unwrap_or_default());
        self.store().save_device(app, &device).await?;
        ::metrics::counter!("realtime_push_devices_failed_total").increment(1);
        Ok(())
    }

    /// `POST /push/deviceRegistrations`: a device registers (or registers again) and gets its
    /// `deviceIdentityToken`.
    pub async fn register(&self, caller: &PushCaller, body: &Value) -> Result<Device, ErrorInfo> {
        let scope = caller.scope()?;
        let principal = caller.principal.as_ref().ok_or_else(|| {
            ErrorCode::Unauthorized.info("registering a device needs credentials")
        })?;
        if !principal
            .capability
            .allows_somewhere(Operation::PushSubscribe)
            && !caller.is_admin()
        {
            return Err(denied("registering a device"));
        }
        let mut device = parse_device(body, None)?;
        if device.client_id.is_none() {
            device.client_id = caller.identity().map(str::to_owned);
        }
        let existing = self.store().device(&scope, &device.id).await?;
        let existing_secret = existing.as_ref().and_then(|d| d.device_secret.clone());
        let same_device = existing_secret.is_some() && existing_secret == device.device_secret;
        if let Some(existing) = &existing {
            if !caller.is_admin() && !same_device && !caller.holds(existing) {
                return Err(denied("registering over another device"));
            }
        }
        let was = existing.as_ref().and_then(|d| d.client_id.as_deref());
        self.check_client(caller, device.client_id.as_deref(), was)?;
        keep_or_issue_token(&scope, &mut device, existing.as_ref());
        self.store_device(&scope, device).await
    }

    /// `PUT /push/deviceRegistrations/{id}`: replaces a registration (admin, or the device).
    pub async fn save(
        &self,
        caller: &PushCaller,
        id: &str,
        body: &Value,
    ) -> Result<Device, ErrorInfo> {
        let scope = caller.scope()?;
        let mut device = parse_device(body, Some(id))?;
        let existing = self.store().device(&scope, id).await?;
        self.check_own(caller, existing.as_ref(), "saving this device registration")?;
        let was = existing.as_ref().and_then(|d| d.client_id.as_deref());
        self.check_client(caller, device.client_id.as_deref(), was)?;
        if let Some(existing) = &existing {
            device.device_secret = device.device_secret.or(existing.device_secret.clone());
        }
        keep_or_issue_token(&scope, &mut device, existing.as_ref());
        self.store_device(&scope, device).await
    }

    /// `PATCH /push/deviceRegistrations/{id}`: changes some fields of a registration.
    pub async fn update(
        &self,
        caller: &PushCaller,
        id: &str,
        body: &Value,
    ) -> Result<Device, ErrorInfo> {
        let scope = caller.scope()?;
        let existing = self.store().device(&scope, id).await?;
        self.check_own(
            caller,
            existing.as_ref(),
            "updating this device registration",
        )?;
        let existing = existing.ok_or_else(|| no_device(id))?;
        let mut merged = serde_json::to_value(&existing).unwrap_or_default();
        let Some(changes) = body.as_object() else {
            return Err(bad("the body must be an object"));
        };
        for (field, value) in changes {
            match field.as_str() {
                "id" | "deviceSecret" | "deviceIdentityToken" => {}
                "push" => {
                    if let Some(recipient) = value.get("recipient") {
                        merged["push"]["recipient"] = recipient.clone();
                        // A new recipient is a fresh start.
                        merged["push"]["state"] = json!(ACTIVE);
                        merged["push"]["errorReason"] = Value::Null;
                    }
                }
                _ => merged[field] = value.clone(),
            }
        }
        let mut device = parse_device(&merged, Some(id))?;
        self.check_client(
            caller,
            device.client_id.as_deref(),
            existing.client_id.as_deref(),
        )?;
        device.device_secret = existing.device_secret;
        device.device_identity_token = existing.device_identity_token;
        device.token_issued = existing.token_issued;
        self.store_device(&scope, device).await
    }

    /// `GET /push/deviceRegistrations/{id}`.
    pub async fn device(&self, caller: &PushCaller, id: &str) -> Result<Device, ErrorInfo> {
        let scope = caller.scope()?;
        let existing = self.store().device(&scope, id).await?;
        self.check_own(
            caller,
            existing.as_ref(),
            "reading this device registration",
        )?;
        existing.ok_or_else(|| no_device(id))
    }

    /// `DELETE /push/deviceRegistrations/{id}`: gone, with its subscriptions.
    pub async fn remove(&self, caller: &PushCaller, id: &str) -> Result<(), ErrorInfo> {
        let scope = caller.scope()?;
        let existing = self.store().device(&scope, id).await?;
        self.check_own(
            caller,
            existing.as_ref(),
            "removing this device registration",
        )?;
        self.store()
            .remove_devices(&scope, &[id.to_owned()])
            .await?;
        Ok(())
    }

    /// `GET /push/deviceRegistrations`: admin, or a device listing itself.
    pub async fn devices(
        &self,
        caller: &PushCaller,
        filter: &DeviceFilter,
        at: Page,
    ) -> Result<Paged<Device>, ErrorInfo> {
        let scope = caller.scope()?;
        let devices = self.matching_devices(caller, &scope, filter).await?;
        Ok(page(devices, at))
    }

    /// `DELETE /push/deviceRegistrations?deviceId=|clientId=`.
    pub async fn remove_where(
        &self,
        caller: &PushCaller,
        filter: &DeviceFilter,
    ) -> Result<(), ErrorInfo> {
        if filter.device_id.is_none() && filter.client_id.is_none() {
            return Err(bad(
                "removing device registrations needs deviceId or clientId",
            ));
        }
        let scope = caller.scope()?;
        let ids: Vec<String> = self
            .matching_devices(caller, &scope, filter)
            .await?
            .into_iter()
            .map(|device| device.id)
            .collect();
        self.store().remove_devices(&scope, &ids).await?;
        Ok(())
    }

    async fn matching_devices(
        &self,
        caller: &PushCaller,
        scope: &str,
        filter: &DeviceFilter,
    ) -> Result<Vec<Device>, ErrorInfo> {
        if !caller.is_admin() {
            // A device may see (and remove) itself only.
            let Some(id) = &filter.device_id else {
                return Err(denied("listing device registrations"));
            };
            let device = self.store().device(scope, id).await?;
            return match device {
                Some(device) if caller.holds(&device) => Ok(vec![device]),
                _ => Err(denied("listing device registrations")),
            };
        }
        let mut devices = self
            .store()
            .devices(scope, filter.client_id.as_deref())
            .await?;
        if let Some(id) = &filter.device_id {
            devices.retain(|device| device.id == *id);
        }
        Ok(devices)
    }

    /// `POST /push/channelSubscriptions`: `{channel, deviceId}` or `{channel, clientId}`.
    pub async fn subscribe(
        &self,
        caller: &PushCaller,
        body: &Value,
    ) -> Result<Subscription, ErrorInfo> {
        let scope = caller.scope()?;
        let field = |name: &str| {
            body.get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        let channel_name = field("channel").ok_or_else(|| bad("a subscription needs a channel"))?;
        let channel = ChannelName::parse(channel_name)?;
        let subscriber = match (field("deviceId"), field("clientId")) {
            (Some(id), None) => Subscriber::Device(id.to_owned()),
            (None, Some(id)) => Subscriber::Client(id.to_owned()),
            _ => {
                return Err(bad(
                    "a subscription needs exactly one of deviceId and clientId",
                ))
            }
        };
        self.check_push_enabled(&scope, &channel)?;
        self.check_subscriber(caller, &scope, &channel, &subscriber)
            .await?;
        if let Subscriber::Device(id) = &subscriber {
            if self.store().device(&scope, id).await?.is_none() {
                return Err(no_device(id));
            }
        }
        let subscription = Subscription {
            channel: channel.base().to_owned(),
            subscriber,
        };
        self.store().subscribe(&scope, &subscription).await?;
        Ok(subscription)
    }

    /// `GET /push/channelSubscriptions`.
    pub async fn subscriptions(
        &self,
        caller: &PushCaller,
        filter: &SubscriptionFilter,
        at: Page,
    ) -> Result<Paged<Subscription>, ErrorInfo> {
        let scope = caller.scope()?;
        let all = self.matching_subscriptions(caller, &scope, filter).await?;
        Ok(page(all, at))
    }

    /// `DELETE /push/channelSubscriptions`: by deviceId or clientId (and channel).
    pub async fn unsubscribe(
        &self,
        caller: &PushCaller,
        filter: &SubscriptionFilter,
    ) -> Result<(), ErrorInfo> {
        if filter.device_id.is_none() && filter.client_id.is_none() {
            return Err(bad("removing subscriptions needs deviceId or clientId"));
        }
        let scope = caller.scope()?;
        let matching = self.matching_subscriptions(caller, &scope, filter).await?;
        self.store().unsubscribe(&scope, &matching).await?;
        Ok(())
    }

    async fn matching_subscriptions(
        &self,
        caller: &PushCaller,
        scope: &str,
        filter: &SubscriptionFilter,
    ) -> Result<Vec<Subscription>, ErrorInfo> {
        let channel = filter
            .channel
            .as_deref()
            .map(ChannelName::parse)
            .transpose()?;
        let admin = match &channel {
            Some(channel) => caller.is_admin_of(channel),
            None => caller.is_admin(),
        };
        if !admin {
            // One's own: a device it holds credentials for, or its own clientId.
            let own_device = match &filter.device_id {
                Some(id) => self
                    .store()
                    .device(scope, id)
                    .await?
                    .is_some_and(|device| caller.holds(&device)),
                None => false,
            };
            let own_client = filter.client_id.is_some()
                && filter.client_id.as_deref() == caller.identity()
                && caller
                    .principal
                    .as_ref()
                    .is_some_and(|p| p.capability.allows_somewhere(Operation::PushSubscribe));
            let only_own = if filter.concat {
                (filter.device_id.is_none() || own_device)
                    && (filter.client_id.is_none() || own_client)
            } else {
                own_device || own_client
            };
            if !only_own || (filter.device_id.is_none() && filter.client_id.is_none()) {
                return Err(denied("listing these push subscriptions"));
            }
        }
        let all = match (&filter.channel, &filter.device_id, &filter.client_id) {
            (Some(channel), _, _) => self.store().subscriptions(scope, Some(channel)).await?,
            (None, Some(id), None) => {
                self.store()
                    .subscriptions_of(scope, &Subscriber::Device(id.clone()))
                    .await?
            }
            (None, None, Some(id)) => {
                self.store()
                    .subscriptions_of(scope, &Subscriber::Client(id.clone()))
                    .await?
            }
            _ => self.store().subscriptions(scope, None).await?,
        };
        // An admin of some channels, listing across channels, sees those channels' only.
        let in_reach =
            |s: &Subscription| !admin || channel.is_some() || caller.is_admin_of_name(&s.channel);
        Ok(all
            .into_iter()
            .filter(|s| filter.matches(s) && in_reach(s))
            .collect())
    }

    /// `GET /push/channels`: the channels with at least one subscription (admin).
    pub async fn channels(
        &self,
        caller: &PushCaller,
        at: Page,
    ) -> Result<Paged<String>, ErrorInfo> {
        let scope = caller.scope()?;
        if !caller.is_admin() {
            return Err(denied("listing push channels"));
        }
        let mut channels = self.store().channels(&scope).await?;
        channels.retain(|channel| caller.is_admin_of_name(channel));
        Ok(page(channels, at))
    }

    /// `POST /push/publish`: `{recipient, notification, data, …}` to a device, to every device
    /// of a clientId, or to a raw recipient (`{transportType, …}`).
    pub async fn publish(&self, caller: &PushCaller, body: &Value) -> Result<(), ErrorInfo> {
        let scope = caller.scope()?;
        if !caller.is_admin() {
            return Err(denied("publishing a push notification"));
        }
        let Some(fields) = body.as_object() else {
            return Err(bad("the body must be an object"));
        };
        let recipient = fields
            .get("recipient")
            .filter(|r| r.is_object())
            .ok_or_else(|| bad("a push publish needs a recipient object"))?;
        let payload: serde_json::Map<String, Value> = fields
            .iter()
            .filter(|(name, _)| *name != "recipient")
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        if payload.is_empty() {
            return Err(bad(
                "a push publish needs a payload (notification, data, …)",
            ));
        }
        let payload = Value::Object(payload);
        let field = |name: &str| recipient.get(name).and_then(Value::as_str);
        if let Some(id) = field("deviceId") {
            let device = self
                .store()
                .device(&scope, id)
                .await?
                .ok_or_else(|| no_device(id))?;
            self.transports
                .send_to_devices(&scope, std::slice::from_ref(&device), &payload)
                .await;
        } else if let Some(client_id) = field("clientId") {
            let devices = self.store().devices(&scope, Some(client_id)).await?;
            self.transports
                .send_to_devices(&scope, &devices, &payload)
                .await;
        } else if field("transportType").is_some() {
            let job = PushJob {
                app: scope,
                device_id: None,
                recipient: recipient.clone(),
                payload,
            };
            self.transports.send(job).map_err(|refused| match refused {
                PushRefused::Full => ErrorCode::ServiceUnavailable.info(refused.to_string()),
                _ => bad(refused.to_string()),
            })?;
        } else {
            return Err(bad(
                "the recipient needs deviceId, clientId or transportType",
            ));
        }
        Ok(())
    }

    fn check_push_enabled(&self, scope: &str, channel: &ChannelName) -> Result<(), ErrorInfo> {
        let key = if scope.is_empty() {
            channel.base().to_owned()
        } else {
            format!("{scope}{}{}", crate::auth::APP_SEPARATOR, channel.base())
        };
        if self.hub.rules_for(&key).push_enabled {
            Ok(())
        } else {
            Err(bad(format!(
                "push is not enabled on channel {:?}: its namespace needs push_enabled (Ably's pushEnabled rule)",
                channel.as_str()
            )))
        }
    }

    /// Subscribing (or unsubscribing) `subscriber` to `channel`: push-admin there, or
    /// push-subscribe for one's own clientId or a device one holds credentials for.
    async fn check_subscriber(
        &self,
        caller: &PushCaller,
        scope: &str,
        channel: &ChannelName,
        subscriber: &Subscriber,
    ) -> Result<(), ErrorInfo> {
        if caller.is_admin_of(channel) {
            return Ok(());
        }
        let own = match subscriber {
            Subscriber::Client(id) => {
                caller.may_subscribe(channel) && caller.identity() == Some(id)
            }
            Subscriber::Device(id) => {
                (caller.principal.is_none() || caller.may_subscribe(channel))
                    && self
                        .store()
                        .device(scope, id)
                        .await?
                        .is_some_and(|device| caller.holds(&device))
            }
        };
        if own {
            Ok(())
        } else {
            Err(denied("subscribing this device or clientId to the channel"))
        }
    }

    /// Acting on one registration: admin, or the device itself.
    fn check_own(
        &self,
        caller: &PushCaller,
        device: Option<&Device>,
        what: &str,
    ) -> Result<(), ErrorInfo> {
        if caller.is_admin() || device.is_some_and(|device| caller.holds(device)) {
            Ok(())
        } else {
            Err(denied(what))
        }
    }

    /// A registration's clientId (`was` the stored one): unchanged, or any for an admin or a
    /// key, else the caller's own. A device acting with its own credentials alone cannot take
    /// another clientId (and with it that clientId's notifications).
    fn check_client(
        &self,
        caller: &PushCaller,
        client_id: Option<&str>,
        was: Option<&str>,
    ) -> Result<(), ErrorInfo> {
        let Some(client_id) = client_id else {
            return Ok(());
        };
        let allowed = was == Some(client_id)
            || caller.is_admin()
            || caller
                .principal
                .as_ref()
                .is_some_and(|principal| principal.may_act_as(client_id));
        if allowed {
            Ok(())
        } else {
            Err(ErrorCode::CapabilityDenied.info(format!(
                "the device's clientId {client_id:?} is not the caller's"
            )))
        }
    }
}

/// A registration from a request body, checked; `id` is the path's (the body's must agree).
/// A registration keeps the identity token its device already has; a new one gets one.
fn keep_or_issue_token(scope: &str, device: &mut Device, existing: Option<&Device>) {
    match existing.filter(|e| e.device_identity_token.is_some()) {
        Some(existing) => {
            device.device_identity_token = existing.device_identity_token.clone();
            device.token_issued = existing.token_issued;
        }
        None => {
            device.device_identity_token = Some(new_device_token(scope));
            device.token_issued = Some(protocol::now_ms());
        }
    }
}

fn parse_device(body: &Value, id: Option<&str>) -> Result<Device, ErrorInfo> {
    let Some(fields) = body.as_object() else {
        return Err(bad("a device registration must be an object"));
    };
    let text = |name: &str| -> Result<Option<String>, ErrorInfo> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(bad(format!("{name} must be a string"))),
        }
    };
    let body_id = text("id")?;
    let id = match (id, body_id) {
        (Some(path), Some(body)) if path != body => {
            return Err(bad("the body's id is not the path's"));
        }
        (Some(path), _) => path.to_owned(),
        (None, Some(body)) => body,
        (None, None) => return Err(bad("a device registration needs an id")),
    };
    if id.is_empty() || id.len() > 256 {
        return Err(bad("a device id is 1 to 256 characters"));
    }
    let platform = text("platform")?.unwrap_or_default();
    if !PLATFORMS.contains(&platform.as_str()) {
        return Err(bad(format!(
            "platform must be one of {PLATFORMS:?}, not {platform:?}"
        )));
    }
    let form_factor = text("formFactor")?.unwrap_or_default();
    if !FORM_FACTORS.contains(&form_factor.as_str()) {
        return Err(bad(format!(
            "formFactor must be one of {FORM_FACTORS:?}, not {form_factor:?}"
        )));
    }
    let push = fields.get("push").and_then(Value::as_object);
    let recipient = push
        .and_then(|push| push.get("recipient"))
        .filter(|r| r.get("transportType").and_then(Value::as_str).is_some())
        .ok_or_else(|| bad("push.recipient with a transportType is required"))?;
    let state = push
        .and_then(|push| push.get("state"))
        .and_then(Value::as_str)
        .filter(|state| *state == FAILED)
        .unwrap_or(ACTIVE);
    let metadata = match fields.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(object @ Value::Object(_)) => object.clone(),
        Some(_) => return Err(bad("metadata must be an object")),
    };
    Ok(Device {
        id,
        client_id: text("clientId")?.filter(|c| !c.is_empty()),
        form_factor,
        platform,
        metadata,
        device_secret: text("deviceSecret")?,
        push: DevicePush {
            recipient: recipient.clone(),
            state: state.to_owned(),
            error_reason: push
                .and_then(|push| push.get("errorReason"))
                .filter(|_| state == FAILED)
                .cloned(),
        },
        device_identity_token: None,
        token_issued: None,
    })
}
