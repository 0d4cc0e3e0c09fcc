//! `[[webhooks]]`: each rule checked and turned into a `WebhookConfig`.

use super::file::FileWebhook;
use super::{http_host, positive};

pub(super) fn webhooks_config(
    rules: Vec<FileWebhook>,
    debounce_ms: Option<u64>,
) -> Result<gateway::config::WebhooksConfig, String> {
    use gateway::config::{Source, WebhookConfig};
    use std::time::Duration;
    let mut config = gateway::config::WebhooksConfig::default();
    if let Some(ms) = debounce_ms {
        config.debounce = Duration::from_millis(ms);
    }
    for (index, rule) in rules.into_iter().enumerate() {
        let at = format!("--config webhooks[{index}]");
        let url = rule.url.trim();
        if http_host(url).is_none() {
            return Err(format!("{at}.url {url:?}: expected an http(s) URL"));
        }
        if rule.channels.trim().is_empty() {
            return Err(format!(
                "{at}.channels: empty (use \"*\" for every channel)"
            ));
        }
        if rule.secret.is_empty() {
            return Err(format!("{at}.secret: empty; deliveries must be signed"));
        }
        let mut sources = Vec::new();
        for name in &rule.events {
            sources.push(Source::parse(name).ok_or_else(|| {
                format!("{at}.events {name:?}: expected channel.lifecycle, channel.presence or channel.message")
            })?);
        }
        if sources.is_empty() {
            return Err(format!("{at}.events: empty"));
        }
        let mut webhook = WebhookConfig::new(url, rule.channels.trim(), sources, &rule.secret);
        if let Some(id) = rule.id {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!("{at}.id {id:?}: letters, digits, - and _ only"));
            }
            webhook.id = id;
        }
        if let Some(n) = rule.batch_max_items {
            webhook.batch_max_items = positive(n, format!("{at}.batch_max_items"))?;
        }
        if let Some(ms) = rule.batch_ms {
            webhook.batch_window = Duration::from_millis(ms);
        }
        if let Some(ms) = rule.timeout_ms {
            webhook.attempt_timeout =
                Duration::from_millis(positive(ms, format!("{at}.timeout_ms"))?);
        }
        if let Some(ms) = rule.retry_initial_ms {
            webhook.retry_initial =
                Duration::from_millis(positive(ms, format!("{at}.retry_initial_ms"))?);
        }
        if let Some(ms) = rule.retry_max_ms {
            webhook.retry_max = Duration::from_millis(positive(ms, format!("{at}.retry_max_ms"))?);
        }
        if let Some(n) = rule.queue_max_items {
            webhook.queue_max_items = positive(n, format!("{at}.queue_max_items"))?;
        }
        if let Some(n) = rule.breaker_failures {
            webhook.breaker_failures = positive(n, format!("{at}.breaker_failures"))?;
        }
        if let Some(ms) = rule.breaker_cooldown_ms {
            webhook.breaker_cooldown =
                Duration::from_millis(positive(ms, format!("{at}.breaker_cooldown_ms"))?);
        }
        if config.rules.iter().any(|r| r.id == webhook.id) {
            return Err(format!("{at}: another webhook has id {:?}", webhook.id));
        }
        config.rules.push(webhook);
    }
    Ok(config)
}
