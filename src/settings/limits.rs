//! Timers, socket bounds, publish limits and the slow-consumer queue: flags and env over the
//! file over `gateway::limits` defaults.

use std::time::Duration;

use super::cli::{PublishArgs, ServeArgs, SocketArgs, TimerArgs};

/// The slow-consumer bounds: flags and env over the file over defaults.
pub(super) fn outbound_queue(
    bytes: Option<usize>,
    age_ms: Option<u64>,
) -> Result<gateway::config::OutboundQueue, String> {
    // Below these a client that reads would be cut off by an ordinary burst or a GC pause.
    const LEAST_BYTES: usize = 64 * 1024;
    const LEAST_AGE_MS: u64 = 100;
    let mut queue = gateway::config::OutboundQueue::default();
    if let Some(bytes) = bytes {
        if bytes < LEAST_BYTES {
            return Err(format!(
                "--outbound-queue-bytes / REALTIME_OUTBOUND_QUEUE_BYTES / outbound_queue_bytes: \
                 must be at least {LEAST_BYTES}"
            ));
        }
        queue.bytes = bytes;
    }
    if let Some(ms) = age_ms {
        if ms < LEAST_AGE_MS {
            return Err(format!(
                "--outbound-queue-age-ms / REALTIME_OUTBOUND_QUEUE_AGE_MS / outbound_queue_age_ms: \
                 must be at least {LEAST_AGE_MS} (ms)"
            ));
        }
        queue.age = Duration::from_millis(ms);
    }
    Ok(queue)
}

/// The connection timers: flags and env over the file's top-level keys over defaults.
pub(super) fn timing(
    args: &ServeArgs,
    file: &TimerArgs,
) -> Result<gateway::config::Timing, String> {
    let defaults = gateway::config::Timing::default();
    let ms =
        |flag: Option<u64>, file: Option<u64>, least: u64, name: &str, default: Duration| match (
            flag, file,
        ) {
            (Some(ms), _) => Ok(Duration::from_millis(ms)),
            (None, Some(ms)) if ms < least => {
                Err(format!("--config {name}: must be at least {least} (ms)"))
            }
            (None, Some(ms)) => Ok(Duration::from_millis(ms)),
            (None, None) => Ok(default),
        };
    let max_idle_interval = ms(
        args.timers.max_idle_interval_ms,
        file.max_idle_interval_ms,
        100,
        "max_idle_interval_ms",
        defaults.max_idle_interval,
    )?;
    Ok(gateway::config::Timing {
        max_idle_interval,
        // Pongs answer our pings once per interval: allow three missed ones, never less than
        // the default's 45 s.
        peer_idle_timeout: defaults.peer_idle_timeout.max(max_idle_interval * 3),
        connection_state_ttl: ms(
            args.timers.connection_state_ttl_ms,
            file.connection_state_ttl_ms,
            1000,
            "connection_state_ttl_ms",
            defaults.connection_state_ttl,
        )?,
        presence_grace: ms(
            args.timers.presence_grace_ms,
            file.presence_grace_ms,
            0,
            "presence_grace_ms",
            defaults.presence_grace,
        )?,
        token_renew_lead: Duration::from_millis(args.token_renew_lead_ms),
        node_lease: Duration::from_millis(args.node_lease_ms),
        shutdown_grace: Duration::from_millis(args.drain_ms),
        ..defaults
    })
}

/// Applies the publish settings to `limits`: flags and env over `[publish]` over defaults.
pub(super) fn publish_limits(
    limits: &mut gateway::config::Limits,
    args: &PublishArgs,
    file: &PublishArgs,
) -> Result<(), String> {
    macro_rules! set {
        ($target:expr, $field:ident) => {
            if let Some(value) = args.$field.or(file.$field) {
                $target = value;
            }
        };
    }
    set!(limits.max_messages_per_publish, max_messages);
    set!(limits.max_batch_messages, max_batch_messages);
    let connection = &mut limits.connection_publish_rate;
    set!(connection.messages_per_sec, connection_messages_per_sec);
    set!(connection.burst_messages, connection_burst_messages);
    set!(connection.bytes_per_sec, connection_bytes_per_sec);
    set!(connection.burst_bytes, connection_burst_bytes);
    let key = &mut limits.key_publish_rate;
    set!(key.messages_per_sec, key_messages_per_sec);
    set!(key.burst_messages, key_burst_messages);
    set!(key.bytes_per_sec, key_bytes_per_sec);
    set!(key.burst_bytes, key_burst_bytes);
    let max = limits.max_messages_per_publish;
    if max == 0 {
        return Err("--publish-max-messages: must be at least 1".into());
    }
    // With Redis, a publication's messages go to the stream as one entry, its bodies unpacked
    // in one Lua call (at most 8,000 values, two per message).
    if max > MAX_MESSAGES_PER_ENTRY {
        return Err(format!(
            "--publish-max-messages: at most {MAX_MESSAGES_PER_ENTRY} (a publication is one Redis stream entry)"
        ));
    }
    if limits.max_batch_messages < max {
        return Err(format!(
            "--publish-max-batch-messages: must be at least --publish-max-messages ({max})"
        ));
    }
    for (name, rate) in [
        ("connection", &limits.connection_publish_rate),
        ("key", &limits.key_publish_rate),
    ] {
        if rate.is_unlimited() {
            continue;
        }
        // A publish the buckets could never hold would be refused forever.
        if (rate.burst_messages as usize) < max {
            return Err(format!(
                "--publish-{name}-burst-messages: must be at least --publish-max-messages ({max})"
            ));
        }
        if rate.burst_bytes < limits.max_message_bytes as u64 || rate.bytes_per_sec == 0 {
            return Err(format!(
                "--publish-{name}-burst-bytes / -bytes-per-sec: the burst must hold the largest \
                 publish ({} bytes) and the rate be above 0",
                limits.max_message_bytes
            ));
        }
    }
    Ok(())
}

/// File descriptors kept out of `--max-connections`' default: Redis, logs, the spare slots that
/// answer connections over the cap.
pub(super) const RESERVED_FDS: u64 = 256;

/// The socket bounds (flags and env win over the file); sets the peer idle timeout in `timing`.
pub(super) fn sockets_config(
    args: &SocketArgs,
    file: Option<SocketArgs>,
    timing: &mut gateway::config::Timing,
) -> Result<gateway::config::Sockets, String> {
    let file = file.unwrap_or_default();
    let defaults = gateway::config::Sockets::default();
    let at_least = |value: Option<u64>, least: u64, name: &str| match value {
        Some(ms) if ms < least => Err(format!(
            "--{} / [sockets] {name}: must be at least {least} (ms)",
            name.replace('_', "-")
        )),
        other => Ok(other.map(Duration::from_millis)),
    };
    let header_timeout = at_least(
        args.header_timeout_ms.or(file.header_timeout_ms),
        100,
        "header_timeout_ms",
    )?
    .unwrap_or(defaults.header_timeout);
    let keep_alive_timeout = at_least(
        args.keep_alive_timeout_ms.or(file.keep_alive_timeout_ms),
        100,
        "keep_alive_timeout_ms",
    )?
    .unwrap_or(defaults.keep_alive_timeout);
    let body_timeout = at_least(
        args.body_timeout_ms.or(file.body_timeout_ms),
        100,
        "body_timeout_ms",
    )?
    .unwrap_or(defaults.body_timeout);
    let least_idle = timing.max_idle_interval.as_millis() as u64 * 2;
    if let Some(idle) = at_least(
        args.peer_idle_timeout_ms.or(file.peer_idle_timeout_ms),
        least_idle,
        "peer_idle_timeout_ms",
    )? {
        timing.peer_idle_timeout = idle;
    }
    let max_connections = match args.max_connections.or(file.max_connections) {
        Some(n) => n,
        None => match rlimit::getrlimit(rlimit::Resource::NOFILE) {
            Ok((soft, _)) if soft > 2 * RESERVED_FDS => {
                usize::try_from(soft - RESERVED_FDS).unwrap_or(usize::MAX)
            }
            // Tiny or unknown: the accept backoff is all there is.
            _ => 0,
        },
    };
    Ok(gateway::config::Sockets {
        header_timeout,
        keep_alive_timeout,
        body_timeout,
        max_connections,
        max_connections_per_ip: args
            .max_connections_per_ip
            .or(file.max_connections_per_ip)
            .unwrap_or(defaults.max_connections_per_ip),
    })
}

/// Most messages one publication may hold: its bodies are unpacked into one `XADD` from Lua.
const MAX_MESSAGES_PER_ENTRY: usize = 3_000;
