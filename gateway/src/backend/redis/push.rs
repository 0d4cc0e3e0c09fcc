//! Push state in Redis, so every node sees the same registrations. Per app (`scope`) one hash
//! tag, `rt:push:{push:<scope>}:` (`{push}` for the shared space), so a Redis Cluster keeps an
//! app's push keys in one slot and its scripts never cross slots:
//! - `dev`: hash, device id -> registration JSON;
//! - `cdev:<clientId>`: set of that clientId's device ids;
//! - `sub:<channel>`: set of subscribers, `d:<deviceId>` / `c:<clientId>`;
//! - `subs:<member>`: set of a subscriber's channels;
//! - `chans`: set of channels with at least one subscriber.
//!
//! Scripts name the keys they touch from the prefix they are given (`KEYS[1]`): all share its
//! hash tag, so on a Cluster they are in the script's slot.
//!
//! Writes are one script each (`push_save.lua`, `push_remove.lua`, `push_subscribe.lua`,
//! `push_forget.lua`), so the indexes never disagree; `push_read.lua` gathers a page of a
//! channel's recipients in one round trip (`SSCAN` over `sub:<channel>`, its cursor the page's).

use super::RedisBackend;
use crate::backend::push::{Device, PushStore, RecipientsPage, Subscriber, Subscription};
use crate::backend::{BackendError, Reply, Result};

const SAVE_SCRIPT: &str = include_str!("scripts/push_save.lua");
const REMOVE_SCRIPT: &str = include_str!("scripts/push_remove.lua");
const SUBSCRIBE_SCRIPT: &str = include_str!("scripts/push_subscribe.lua");
const READ_SCRIPT: &str = include_str!("scripts/push_read.lua");
const FORGET_SCRIPT: &str = include_str!("scripts/push_forget.lua");

fn prefix(scope: &str) -> String {
    if scope.is_empty() {
        "rt:push:{push}:".to_owned()
    } else {
        format!("rt:push:{{push:{scope}}}:")
    }
}

fn unavailable(error: redis::RedisError) -> BackendError {
    super::unavailable("push state", "push store", "try again")(error)
}

fn parse(json: &str) -> Option<Device> {
    serde_json::from_str(json)
        .inspect_err(|error| tracing::warn!(%error, "unreadable push registration in Redis"))
        .ok()
}

fn sorted_subscriptions(pairs: Vec<String>) -> Vec<Subscription> {
    let mut out: Vec<Subscription> = pairs
        .chunks_exact(2)
        .filter_map(|pair| {
            Some(Subscription {
                channel: pair[0].clone(),
                subscriber: Subscriber::from_member(&pair[1])?,
            })
        })
        .collect();
    out.sort();
    out
}

impl PushStore for RedisBackend {
    fn save_device<'a>(&'a self, scope: &'a str, device: &'a Device) -> Reply<'a, ()> {
        Box::pin(async move {
            let json = serde_json::to_string(device).map_err(|source| BackendError::Encode {
                what: "a push registration",
                source,
            })?;
            let args = vec![
                device.id.clone(),
                json,
                device.client_id.clone().unwrap_or_default(),
            ];
            self.commands
                .invoke::<i64>(redis::Script::new(SAVE_SCRIPT), vec![prefix(scope)], args)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn device<'a>(&'a self, scope: &'a str, id: &'a str) -> Reply<'a, Option<Device>> {
        Box::pin(async move {
            let json: Option<String> = self
                .commands
                .query(
                    redis::cmd("HGET")
                        .arg(format!("{}dev", prefix(scope)))
                        .arg(id)
                        .to_owned(),
                )
                .await
                .map_err(unavailable)?;
            Ok(json.as_deref().and_then(parse))
        })
    }

    fn devices<'a>(&'a self, scope: &'a str, client_id: Option<&'a str>) -> Reply<'a, Vec<Device>> {
        Box::pin(async move {
            let prefix = prefix(scope);
            let jsons: Vec<String> = match client_id {
                None => {
                    let all: Vec<(String, String)> = self
                        .commands
                        .query(redis::cmd("HGETALL").arg(format!("{prefix}dev")).to_owned())
                        .await
                        .map_err(unavailable)?;
                    all.into_iter().map(|(_, json)| json).collect()
                }
                Some(client_id) => {
                    let ids: Vec<String> = self
                        .commands
                        .query(
                            redis::cmd("SMEMBERS")
                                .arg(format!("{prefix}cdev:{client_id}"))
                                .to_owned(),
                        )
                        .await
                        .map_err(unavailable)?;
                    if ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    let found: Vec<Option<String>> = self
                        .commands
                        .query(
                            redis::cmd("HMGET")
                                .arg(format!("{prefix}dev"))
                                .arg(ids)
                                .to_owned(),
                        )
                        .await
                        .map_err(unavailable)?;
                    found.into_iter().flatten().collect()
                }
            };
            let mut devices: Vec<Device> = jsons.iter().filter_map(|json| parse(json)).collect();
            devices.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(devices)
        })
    }

    fn remove_devices<'a>(&'a self, scope: &'a str, ids: &'a [String]) -> Reply<'a, ()> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            self.commands
                .invoke::<i64>(
                    redis::Script::new(REMOVE_SCRIPT),
                    vec![prefix(scope)],
                    ids.to_vec(),
                )
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, scope: &'a str, subscription: &'a Subscription) -> Reply<'a, ()> {
        Box::pin(self.change_subscriptions(scope, true, std::slice::from_ref(subscription)))
    }

    fn unsubscribe<'a>(
        &'a self,
        scope: &'a str,
        subscriptions: &'a [Subscription],
    ) -> Reply<'a, ()> {
        Box::pin(self.change_subscriptions(scope, false, subscriptions))
    }

    fn subscriptions<'a>(
        &'a self,
        scope: &'a str,
        channel: Option<&'a str>,
    ) -> Reply<'a, Vec<Subscription>> {
        Box::pin(async move {
            let pairs: Vec<String> = self
                .commands
                .invoke(
                    redis::Script::new(READ_SCRIPT),
                    vec![prefix(scope)],
                    vec!["subs".to_owned(), channel.unwrap_or_default().to_owned()],
                )
                .await
                .map_err(unavailable)?;
            Ok(sorted_subscriptions(pairs))
        })
    }

    fn subscriptions_of<'a>(
        &'a self,
        scope: &'a str,
        subscriber: &'a Subscriber,
    ) -> Reply<'a, Vec<Subscription>> {
        Box::pin(async move {
            let mut channels: Vec<String> = self
                .commands
                .query(
                    redis::cmd("SMEMBERS")
                        .arg(format!("{}subs:{}", prefix(scope), subscriber.member()))
                        .to_owned(),
                )
                .await
                .map_err(unavailable)?;
            channels.sort();
            Ok(channels
                .into_iter()
                .map(|channel| Subscription {
                    channel,
                    subscriber: subscriber.clone(),
                })
                .collect())
        })
    }

    fn channels<'a>(&'a self, scope: &'a str) -> Reply<'a, Vec<String>> {
        Box::pin(async move {
            let mut channels: Vec<String> = self
                .commands
                .query(
                    redis::cmd("SMEMBERS")
                        .arg(format!("{}chans", prefix(scope)))
                        .to_owned(),
                )
                .await
                .map_err(unavailable)?;
            channels.sort();
            Ok(channels)
        })
    }

    fn forget_app<'a>(&'a self, scope: &'a str) -> Reply<'a, ()> {
        Box::pin(async move {
            self.commands
                .invoke::<i64>(
                    redis::Script::new(FORGET_SCRIPT),
                    vec![prefix(scope)],
                    Vec::new(),
                )
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    /// The cursor is `SSCAN`'s over the channel's subscriber set; one script call per page.
    fn recipients_page<'a>(
        &'a self,
        scope: &'a str,
        channel: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> Reply<'a, RecipientsPage> {
        Box::pin(async move {
            let args = vec![
                "recipients".to_owned(),
                channel.to_owned(),
                cursor.unwrap_or("0").to_owned(),
                limit.max(1).to_string(),
            ];
            let reply: Vec<String> = self
                .commands
                .invoke(redis::Script::new(READ_SCRIPT), vec![prefix(scope)], args)
                .await
                .map_err(unavailable)?;
            let mut reply = reply.into_iter();
            let next = reply.next().filter(|cursor| cursor != "0");
            Ok(RecipientsPage {
                devices: reply.filter_map(|json| parse(&json)).collect(),
                next,
            })
        })
    }
}

impl RedisBackend {
    async fn change_subscriptions(
        &self,
        scope: &str,
        add: bool,
        subscriptions: &[Subscription],
    ) -> Result<()> {
        if subscriptions.is_empty() {
            return Ok(());
        }
        let mut args = vec![if add { "1" } else { "0" }.to_owned()];
        for subscription in subscriptions {
            args.push(subscription.channel.clone());
            args.push(subscription.subscriber.member());
        }
        self.commands
            .invoke::<i64>(
                redis::Script::new(SUBSCRIBE_SCRIPT),
                vec![prefix(scope)],
                args,
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
