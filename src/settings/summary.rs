//! What `check-config` prints.

use super::Settings;

impl Settings {
    /// What `check-config` prints: the resolved settings, secrets left out.
    pub(crate) fn summary(&self) -> String {
        let config = &self.gateway;
        let key_names: Vec<&str> = config.keys.iter().map(|k| k.name.as_str()).collect();
        let mut lines = vec![
            "configuration ok".to_owned(),
            format!("listen: {}", self.listen),
            format!(
                "keys: {}",
                if self.generated_key.is_some() {
                    "none (a development key would be generated)".to_owned()
                } else {
                    key_names.join(", ")
                }
            ),
            format!(
                "bus: {}",
                if config.redis.is_some() {
                    "Redis"
                } else {
                    "embedded (in memory)"
                }
            ),
            format!(
                "supabase: {}",
                if config.supabase.is_some() {
                    "on"
                } else {
                    "off"
                }
            ),
            format!(
                "revoke Supabase users: {}",
                if config.supabase_revoke_keys.is_empty() {
                    "no key".to_owned()
                } else {
                    config.supabase_revoke_keys.join(", ")
                }
            ),
            format!("history: {}", describe_history(&config.hub)),
            format!(
                "presence: at most {} members per channel",
                config.hub.max_presence_members
            ),
            format!("events: {} types", config.events.types.len()),
            format!("push: {}", describe_push(&self.push)),
            format!(
                "publish: at most {} messages and {} bytes per publish, {} per batch; \
                 per connection {}, per key (REST, this node) {}",
                config.limits.max_messages_per_publish,
                config.limits.max_message_bytes,
                config.limits.max_batch_messages,
                describe_rate(&config.limits.connection_publish_rate),
                describe_rate(&config.limits.key_publish_rate)
            ),
            format!(
                "outbound queue: slow consumer past {} bytes of deliveries or a frame unsent {} ms",
                config.limits.outbound_queue.bytes,
                config.limits.outbound_queue.age.as_millis()
            ),
            format!(
                "timing: maxIdleInterval {} ms, connectionStateTtl {} ms, presence grace {} ms",
                config.timing.max_idle_interval.as_millis(),
                config.timing.connection_state_ttl.as_millis(),
                config.timing.presence_grace.as_millis()
            ),
            format!(
                "sockets: header timeout {} ms, keep-alive {} ms, body timeout {} ms, at most {} connections ({} per address)",
                config.sockets.header_timeout.as_millis(),
                config.sockets.keep_alive_timeout.as_millis(),
                config.sockets.body_timeout.as_millis(),
                config.sockets.max_connections,
                config.sockets.max_connections_per_ip
            ),
        ];
        if !config.webhooks.rules.is_empty() {
            let ids: Vec<&str> = config
                .webhooks
                .rules
                .iter()
                .map(|r| r.id.as_str())
                .collect();
            lines.push(format!(
                "webhooks: {} (debounce {} ms)",
                ids.join(", "),
                config.webhooks.debounce.as_millis()
            ));
        }
        for rule in &config.moderation {
            lines.push(format!(
                "moderation: {} -> {} ({} ms, {} retries, fail {}, {} in flight)",
                rule.channels,
                url_host(&rule.url),
                rule.timeout.as_millis(),
                rule.retries,
                match rule.fail {
                    gateway::config::FailMode::Open => "open",
                    gateway::config::FailMode::Closed => "closed",
                },
                rule.max_in_flight
            ));
        }
        if config.sandbox {
            lines.push("sandbox: on (test apps can be created: never in production)".to_owned());
        }
        lines.join("\n")
    }
}

/// A URL's host, without scheme, credentials, path or query (which may hold secrets).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// The default retention, then each namespace's rules: `500 messages, 600 s per channel;
/// namespace chat: 10000 messages, 86400 s, mutable messages`.
fn describe_history(hub: &gateway::HubConfig) -> String {
    let describe = |retention: &gateway::config::Retention| {
        format!(
            "{} messages, {} s",
            retention.max_messages,
            retention.max_age.as_secs()
        )
    };
    let mut text = format!("{} per channel", describe(&hub.retention));
    for (namespace, rules) in &hub.namespace_rules {
        text += &format!("; namespace {namespace}: {}", describe(&rules.retention));
        if rules.mutable_messages {
            text += ", mutable messages";
        }
        if rules.push_enabled {
            text += ", push enabled";
        }
        if let Some(batching) = &rules.batching {
            let every = batching.interval.as_millis();
            text += &match &batching.conflate {
                None => format!(", batched every {every} ms"),
                Some(gateway::config::ConflationKey::Name) => {
                    format!(", conflated by name every {every} ms")
                }
                Some(gateway::config::ConflationKey::Header(header)) => {
                    format!(", conflated by headers.{header} every {every} ms")
                }
            };
        }
    }
    text
}

fn describe_rate(rate: &gateway::config::PublishRate) -> String {
    if rate.is_unlimited() {
        return "unlimited".into();
    }
    format!(
        "{} msg/s (burst {}), {} B/s (burst {})",
        rate.messages_per_sec, rate.burst_messages, rate.bytes_per_sec, rate.burst_bytes
    )
}

/// The configured push transports, keys left out.
fn describe_push(push: &push::Config) -> String {
    let mut on = Vec::new();
    if let Some(web) = &push.web_push {
        on.push(format!(
            "web (VAPID public key {})",
            web.vapid.public_key_base64url()
        ));
    }
    if let Some(fcm) = &push.fcm {
        on.push(format!("fcm (project {})", fcm.account.project_id));
    }
    if let Some(apns) = &push.apns {
        on.push(format!("apns (topic {}, {})", apns.topic, apns.endpoint));
    }
    if on.is_empty() {
        "off".to_owned()
    } else {
        on.join(", ")
    }
}
