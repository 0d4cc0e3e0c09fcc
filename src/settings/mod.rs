//! Flags, `REALTIME_*` env and the optional TOML file, validated into the crates' `Config`s.
//!
//! `cli.rs` declares the flags and `file.rs` the file; `resolve` lays flags over the file over
//! each crate's defaults, one module per part (`keys`, `supabase`, `history`, `webhooks`,
//! `moderation`, `limits`, `push_settings`), and stops at the first bad setting, naming it. `summary.rs` is `check-config`.

mod cli;
mod file;
mod history;
mod keys;
mod limits;
mod moderation;
mod push_settings;
mod redis_tls;
mod summary;
mod supabase;
mod webhooks;

use std::fmt::Display;
use std::net::SocketAddr;

pub(crate) use cli::{Cli, LogFormat, Run, ServeArgs};
use file::{FileConfig, FileEvents};
pub(crate) use keys::print_dev_key;
pub(crate) use push_settings::push_tool;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub(crate) struct Settings {
    pub listen: SocketAddr,
    pub gateway: gateway::Config,
    pub api: api::Config,
    /// The push transports, for the gateway to start (`push::Push::start`).
    pub push: push::Config,
    /// Set when no key was configured and one was made up for this run.
    pub generated_key: Option<String>,
}

/// Flags and env win over the file (`--config`); the file over defaults.
pub(crate) fn resolve(args: ServeArgs) -> Result<Settings, String> {
    let file = match &args.config {
        None => FileConfig::default(),
        Some(path) => file::read(path)?,
    };
    resolve_with(args, file)
}

/// `resolve` with the file already parsed.
fn resolve_with(args: ServeArgs, file: FileConfig) -> Result<Settings, String> {
    let listen_text = args
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|e| format!("--listen / REALTIME_LISTEN {listen_text:?}: {e}"))?;
    let (keys, generated_key) = keys::keys(args.keys.as_deref(), file.keys)?;
    let supabase = supabase::supabase_config(&args)?;
    let file_timers = cli::TimerArgs {
        max_idle_interval_ms: file.max_idle_interval_ms,
        connection_state_ttl_ms: file.connection_state_ttl_ms,
        presence_grace_ms: file.presence_grace_ms,
    };
    let hub = history::hub_config(file.history, file.presence)?;
    let events = events_catalog(file.events)?;
    let webhooks = webhooks::webhooks_config(file.webhooks, file.webhook_debounce_ms)?;
    let moderation = moderation::moderation_rules(file.moderation)?;
    let mut timing = limits::timing(&args, &file_timers)?;
    let sockets = limits::sockets_config(&args.sockets, file.sockets, &mut timing)?;
    let cors_origins = cors_origins(if args.cors_origins.is_empty() {
        file.cors_origins
    } else {
        args.cors_origins.clone()
    })?;
    let supabase_revoke_keys = supabase::supabase_revoke_keys(
        if args.supabase_revoke_keys.is_empty() {
            file.supabase_revoke_keys
        } else {
            args.supabase_revoke_keys.clone()
        },
        &keys,
    )?;
    let file_publish = file.publish.unwrap_or_default();
    let admin_listen = args
        .admin_listen
        .as_deref()
        .map(|a| {
            a.parse()
                .map_err(|e| format!("--admin-listen / REALTIME_ADMIN_LISTEN {a:?}: {e}"))
        })
        .transpose()?;
    let redis = args
        .redis
        .as_deref()
        .map(gateway::RedisTarget::parse)
        .transpose()
        .map_err(|e| format!("--redis / REALTIME_REDIS_URL: {e}"))?;
    let redis_tls = redis_tls::redis_tls(&args, redis.as_ref())?;
    let push = push_settings::push_config(&args.push)?;
    let mut settings = Settings {
        listen,
        gateway: gateway::Config {
            keys,
            supabase,
            supabase_revoke_keys,
            sandbox: args.sandbox,
            server_id: args.server_id.clone().filter(|id| !id.is_empty()),
            cors_origins,
            redis,
            redis_tls,
            hub,
            events,
            webhooks,
            moderation,
            timing,
            sockets,
            ..Default::default()
        },
        api: api::Config {
            admin_listen,
            ..api::Config::default()
        },
        push,
        generated_key,
    };
    settings.gateway.redis_min_replicas = gateway::MinReplicas {
        count: args.redis_min_replicas,
        timeout: std::time::Duration::from_millis(args.redis_min_replicas_timeout),
    };
    if args.redis_min_replicas > 0
        && !matches!(
            settings.gateway.redis,
            Some(gateway::RedisTarget::Node(_) | gateway::RedisTarget::Sentinel(_))
        )
    {
        return Err(
            "--redis-min-replicas / REALTIME_REDIS_MIN_REPLICAS: needs --redis with one Redis or Sentinel (not a Redis Cluster)".into(),
        );
    }
    limits::publish_limits(&mut settings.gateway.limits, &args.publish, &file_publish)?;
    settings.gateway.limits.outbound_queue = limits::outbound_queue(
        args.outbound_queue_bytes.or(file.outbound_queue_bytes),
        args.outbound_queue_age_ms.or(file.outbound_queue_age_ms),
    )?;
    Ok(settings)
}

/// `value`, refused when zero: a zero cap, count or timeout would stop what it bounds.
fn positive<T: PartialEq + Default>(value: T, setting: impl Display) -> Result<T, String> {
    if value == T::default() {
        Err(format!("{setting}: must be at least 1"))
    } else {
        Ok(value)
    }
}

/// The host part of an `http://` or `https://` URL, if it has one and no whitespace.
fn http_host(url: &str) -> Option<&str> {
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    (!host.is_empty() && !url.contains(char::is_whitespace)).then_some(host)
}

/// Each entry is an origin as browsers send it (`scheme://host[:port]`, no path).
fn cors_origins(list: Vec<String>) -> Result<Vec<String>, String> {
    list.into_iter()
        .map(|origin| origin.trim().trim_end_matches('/').to_owned())
        .filter(|origin| !origin.is_empty())
        .map(|origin| match http_host(&origin) {
            Some(host) if !host.contains(['/', '*', ',']) => Ok(origin),
            _ => Err(format!(
                "--cors-origins / REALTIME_CORS_ORIGINS {origin:?}: expected an origin like https://app.example.com"
            )),
        })
        .collect()
}

/// `[events]`: the built-in Digis types (unless `builtin = false`) with the file's added.
fn events_catalog(events: Option<FileEvents>) -> Result<protocol::event::Catalog, String> {
    use protocol::event::Catalog;
    let Some(events) = events else {
        return Ok(Catalog::default());
    };
    let base = if events.builtin.unwrap_or(true) {
        Catalog::default()
    } else {
        Catalog { types: Vec::new() }
    };
    let catalog = base.with(events.types);
    catalog
        .validate()
        .map_err(|e| format!("--config events.types: {e}"))?;
    Ok(catalog)
}

#[cfg(test)]
mod tests;
