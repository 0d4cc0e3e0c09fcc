//! Delivering one webhook's queue: oldest first, up to `batch_max_items` per request (the
//! first item waits `batch_window` for company), signed, each attempt bounded by
//! `attempt_timeout`. Items leave the queue only after a 2xx, so delivery is at least once and
//! in queue order; a receiver de-duplicates by item `id`. Failures back off exponentially with
//! jitter; `breaker_failures` in a row open the breaker (logged, `realtime_webhook_breaker_open`
//! = 1) for `breaker_cooldown` between attempts until one succeeds. Clustered, one node at a
//! time delivers a webhook (a lease in Redis), so another node's delivery cannot reorder it.

use std::sync::Weak;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng as _;

use super::Webhooks;
use crate::config::WebhookConfig;

/// How long an idle queue waits before looking again (other nodes queue into Redis).
const IDLE_POLL: Duration = Duration::from_millis(250);
/// How long a node that does not hold a webhook's delivery lease waits before trying for it.
const LEASE_RETRY: Duration = Duration::from_secs(1);

/// `X-Ably-Signature`: base64 (standard, padded) HMAC-SHA256 of the raw body under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub(super) async fn run(webhooks: Weak<Webhooks>, rule: WebhookConfig) {
    let client = match reqwest::Client::builder()
        .timeout(rule.attempt_timeout)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(webhook = %rule.id, %error, "webhook HTTP client not built; nothing will be delivered");
            return;
        }
    };
    let lease_ms = rule.attempt_timeout.as_millis() as u64 + 5_000;
    let mut failures: u32 = 0;
    // The queue was empty last time: a new first item waits the batch window.
    let mut idle = true;
    loop {
        let Some(strong) = webhooks.upgrade() else {
            return;
        };
        match strong.store.may_deliver(&rule.id, lease_ms).await {
            Ok(true) => {}
            Ok(false) => {
                drop(strong);
                tokio::time::sleep(LEASE_RETRY).await;
                continue;
            }
            Err(error) => {
                tracing::debug!(webhook = %rule.id, %error, "webhook delivery lease not taken");
                drop(strong);
                tokio::time::sleep(LEASE_RETRY).await;
                continue;
            }
        }
        let batch = match strong.store.peek(&rule.id, rule.batch_max_items).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(webhook = %rule.id, %error, "webhook queue not read");
                drop(strong);
                tokio::time::sleep(LEASE_RETRY).await;
                continue;
            }
        };
        if batch.is_empty() {
            idle = true;
            let _ = tokio::time::timeout(IDLE_POLL, strong.queued.notified()).await;
            continue;
        }
        if idle && batch.len() < rule.batch_max_items {
            idle = false;
            drop(strong);
            tokio::time::sleep(rule.batch_window).await;
            continue;
        }
        idle = false;
        let (ids, items): (Vec<String>, Vec<String>) = batch.into_iter().unzip();
        let body = format!("{{\"items\":[{}]}}", items.join(","));
        let outcome = client
            .post(&rule.url)
            .header("content-type", "application/json")
            .header("x-ably-version", "1.2")
            .header("x-ably-signature", signature(&rule.secret, body.as_bytes()))
            .body(body)
            .send()
            .await;
        let failure = match outcome {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("HTTP {}", response.status().as_u16())),
            Err(error) if error.is_timeout() => Some("timed out".to_owned()),
            Err(error) => Some(error.to_string()),
        };
        let Some(failure) = failure else {
            ::metrics::counter!("realtime_webhook_deliveries_total", "webhook" => rule.id.clone(), "outcome" => "success")
                .increment(1);
            ::metrics::counter!("realtime_webhook_items_delivered_total", "webhook" => rule.id.clone())
                .increment(ids.len() as u64);
            if failures >= rule.breaker_failures {
                tracing::info!(webhook = %rule.id, "webhook delivered again; breaker closed");
                ::metrics::gauge!("realtime_webhook_breaker_open", "webhook" => rule.id.clone())
                    .set(0.0);
            }
            failures = 0;
            if let Err(error) = strong.store.ack(&rule.id, ids).await {
                // They will be sent again: at least once.
                tracing::warn!(webhook = %rule.id, %error, "delivered webhook items not removed");
            }
            continue;
        };
        drop(strong);
        failures += 1;
        ::metrics::counter!("realtime_webhook_deliveries_total", "webhook" => rule.id.clone(), "outcome" => "failure")
            .increment(1);
        let wait = if failures >= rule.breaker_failures {
            if failures == rule.breaker_failures {
                tracing::error!(webhook = %rule.id, url = %rule.url, %failure, failures, "webhook keeps failing; breaker open");
                ::metrics::gauge!("realtime_webhook_breaker_open", "webhook" => rule.id.clone())
                    .set(1.0);
            }
            rule.breaker_cooldown
        } else {
            tracing::warn!(webhook = %rule.id, %failure, attempt = failures, "webhook delivery failed; will retry");
            backoff(&rule, failures)
        };
        tokio::time::sleep(wait).await;
    }
}

/// `retry_initial · 2^(failures-1)`, capped at `retry_max`, then a random half to all of it,
/// so many gateways retrying one receiver spread out.
fn backoff(rule: &WebhookConfig, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let full = rule
        .retry_initial
        .saturating_mul(1 << exponent)
        .min(rule.retry_max);
    full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}
