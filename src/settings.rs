//! Flags, `REALTIME_*` env and the optional TOML file, validated into the crates' `Config`s.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use gateway::auth::supabase::{Policy, SupabaseConfig};
use gateway::auth::ApiKey;
use protocol::Capability;
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "realtime",
    version,
    about = "Self-hosted, Ably-compatible realtime gateway",
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Plain `realtime` is `realtime serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Gateway and REST API on one port, in-memory (the default command).
    Serve(ServeArgs),
    /// Only the WebSocket gateway (with /time and the probes): one role of a cluster; needs --redis.
    Gateway(ServeArgs),
    /// Only the REST API: one role of a cluster; needs --redis.
    Api(ServeArgs),
    /// Validates the same flags, env and file as `serve` without starting; exit 64 naming the
    /// first bad setting.
    CheckConfig(ServeArgs),
}

impl Command {
    pub(crate) fn args(&self) -> &ServeArgs {
        match self {
            Command::Serve(args)
            | Command::Gateway(args)
            | Command::Api(args)
            | Command::CheckConfig(args) => args,
        }
    }

    /// The role and its settings.
    pub(crate) fn split(self) -> (api::Role, ServeArgs) {
        match self {
            Command::Serve(args) => (api::Role::Both, args),
            Command::Gateway(args) => (api::Role::Gateway, args),
            Command::Api(args) => (api::Role::Api, args),
            Command::CheckConfig(args) => (api::Role::Both, args),
        }
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ServeArgs {
    /// Address to listen on, for WebSocket and REST alike. Default 127.0.0.1:8080 (this machine
    /// only); 0.0.0.0:8080 accepts other machines (the Docker image and the Kubernetes manifests
    /// set it).
    #[arg(long, env = "REALTIME_LISTEN")]
    pub listen: Option<String>,
    /// API keys: comma-separated `appId.keyId:secret`, each optionally followed by `=` and a
    /// capability JSON (default {"*":["*"]}).
    #[arg(long, env = "REALTIME_KEYS")]
    pub keys: Option<String>,
    /// TOML settings file: `listen`, `[[keys]]` (`key`, optional `capability`), the timers
    /// (`max_idle_interval_ms`, `connection_state_ttl_ms`, `presence_grace_ms`,
    /// `webhook_debounce_ms`), `cors_origins`, `supabase_revoke_keys` and the tables
    /// `[history]`, `[presence]`, `[sockets]`, `[publish]`, `[[webhooks]]`, `[[events.types]]`
    /// (README, "Configuration"). Flags and `REALTIME_*` variables win over it.
    #[arg(long, env = "REALTIME_CONFIG")]
    pub config: Option<PathBuf>,
    /// Supabase project JWT secret: accept its HS256 access tokens.
    #[arg(long, env = "REALTIME_SUPABASE_JWT_SECRET", hide_env_values = true)]
    pub supabase_jwt_secret: Option<String>,
    /// Supabase project URL: accept ES256/RS256 access tokens signed by its keys
    /// ({url}/auth/v1/.well-known/jwks.json) and require iss = {url}/auth/v1.
    #[arg(long, env = "REALTIME_SUPABASE_URL")]
    pub supabase_url: Option<String>,
    /// Where to fetch the signing keys, if not under --supabase-url.
    #[arg(long, env = "REALTIME_SUPABASE_JWKS_URL")]
    pub supabase_jwks_url: Option<String>,
    /// Accepted `aud` values, comma-separated.
    #[arg(
        long,
        env = "REALTIME_SUPABASE_AUDIENCE",
        default_value = "authenticated"
    )]
    pub supabase_audience: String,
    /// At most one JWKS fetch per this many milliseconds (an unknown kid triggers one).
    #[arg(
        long,
        env = "REALTIME_SUPABASE_JWKS_REFRESH_MS",
        default_value_t = 5000
    )]
    pub supabase_jwks_refresh_ms: u64,
    /// Redis URL (`redis://[:password@]host:port`, `rediss://` for TLS): every process on it
    /// shares one bus. A Redis Cluster: `redis+cluster://[:password@]host:port[,host:port...]`
    /// (seed nodes; channels spread over the shards by hash slot, sharded pub/sub). Without it,
    /// one process runs everything in memory.
    #[arg(long, env = "REALTIME_REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// How long before a token expires the server asks the client to renew it (AUTH), in ms.
    /// Tokens with less left than this are not asked and expire into 40142.
    #[arg(long, env = "REALTIME_TOKEN_RENEW_LEAD_MS", default_value_t = 30_000)]
    pub token_renew_lead_ms: u64,
    /// With `--redis`: how long a node that stopped renewing its lease (killed, partitioned)
    /// is still counted alive; after it, its connections can be resumed elsewhere and the
    /// presence members of clients that do not come back leave after the presence grace. In ms.
    #[arg(long, env = "REALTIME_NODE_LEASE_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(300..))]
    pub node_lease_ms: u64,
    /// Longest the server stays silent to a client: a HEARTBEAT (a WebSocket ping for
    /// `heartbeats=false` clients) goes out at least this often. CONNECTED announces it as
    /// `maxIdleInterval`; clients drop a transport silent for it plus their request timeout.
    /// In ms; default 15000, as Ably.
    #[arg(long, env = "REALTIME_MAX_IDLE_INTERVAL_MS", value_parser = clap::value_parser!(u64).range(100..))]
    pub max_idle_interval_ms: Option<u64>,
    /// How long a dropped connection stays resumable (`connectionStateTtl` in CONNECTED); a
    /// resume after it is refused with 80008. In ms; default 120000, as Ably.
    #[arg(long, env = "REALTIME_CONNECTION_STATE_TTL_MS", value_parser = clap::value_parser!(u64).range(1000..))]
    pub connection_state_ttl_ms: Option<u64>,
    /// After an abrupt drop, how long a connection's presence members stay before they leave,
    /// unless it resumes (a client's `remainPresentFor` overrides it). In ms; default 15000, as
    /// Ably.
    #[arg(long, env = "REALTIME_PRESENCE_GRACE_MS")]
    pub presence_grace_ms: Option<u64>,
    /// A second address serving only `/metrics`, `/healthz` and `/readyz`, so metrics need not
    /// be public; when set, the main port does not serve `/metrics`.
    #[arg(long, env = "REALTIME_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Browser origins allowed to call the REST API with credentials (comma-separated, e.g.
    /// `https://digis.cc,https://www.digis.cc`); ably-js sends `credentials: include` with an
    /// `Authorization` header, so its origin must be listed. Default: none listed, any origin
    /// answered with `*` and no credentials.
    #[arg(long, env = "REALTIME_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Key names (`appId.keyId`, comma-separated) whose `revokeTokens` also revokes Supabase
    /// users (a `clientId:<sub>` target). Default: none; every key revokes only tokens it issued.
    #[arg(long, env = "REALTIME_SUPABASE_REVOKE_KEYS", value_delimiter = ',')]
    pub supabase_revoke_keys: Vec<String>,
    /// On SIGTERM: how long to take handing clients over to other nodes (each told to reconnect
    /// at a random moment in the first 60%), in ms; the process exits when the last is gone or
    /// at the end. Keep Kubernetes' terminationGracePeriodSeconds above it.
    #[arg(long, env = "REALTIME_DRAIN_MS", default_value_t = 10_000)]
    pub drain_ms: u64,
    /// Log lines as human-readable text or as JSON (one object per line, for log shippers).
    /// Filter with RUST_LOG (e.g. `info`, `gateway=debug`).
    #[arg(long, env = "REALTIME_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// This process's name in CONNECTED (`serverId`) and in logs, e.g. the pod name; default
    /// a random `rt-…`.
    #[arg(long, env = "REALTIME_SERVER_ID")]
    pub server_id: Option<String>,
    /// Test-app provisioning (`POST /apps`, `DELETE /apps/{id}`) for SDK test suites. Never in
    /// production: anyone can create an app.
    #[arg(long, env = "REALTIME_SANDBOX")]
    pub sandbox: bool,
    /// TOML policy mapping Supabase claims to capabilities (default: the Digis policy).
    #[arg(long, env = "REALTIME_POLICY")]
    pub policy: Option<PathBuf>,
    /// Bytes of deliveries (other connections' messages and presence) queued for one
    /// connection before it counts as a slow consumer and is disconnected (DISCONNECTED 80020);
    /// replies to its own requests never count. Default 4194304 (4 MiB).
    #[arg(long, env = "REALTIME_OUTBOUND_QUEUE_BYTES")]
    pub outbound_queue_bytes: Option<usize>,
    /// A frame unsent this long (the client is not reading) makes the connection a slow
    /// consumer too. In ms; default 10000.
    #[arg(long, env = "REALTIME_OUTBOUND_QUEUE_AGE_MS")]
    pub outbound_queue_age_ms: Option<u64>,
    #[command(flatten)]
    pub sockets: SocketArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
}

/// Publish limits (`[publish]` in the file; flags and env win). Defaults in
/// `gateway::limits::Limits` and the README.
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishArgs {
    /// Most messages in one publish (realtime MESSAGE, REST publish, one batch spec); more:
    /// 40030. Default 1000.
    #[arg(long = "publish-max-messages", env = "REALTIME_PUBLISH_MAX_MESSAGES")]
    pub max_messages: Option<usize>,
    /// Most messages × channels one batch publish (`POST /messages`) makes. Default 10000.
    #[arg(
        long = "publish-max-batch-messages",
        env = "REALTIME_PUBLISH_MAX_BATCH_MESSAGES"
    )]
    pub max_batch_messages: Option<usize>,
    /// Per realtime connection: messages per second (0: no rate limit). Default 1000.
    #[arg(
        long = "publish-connection-messages-per-sec",
        env = "REALTIME_PUBLISH_CONNECTION_MESSAGES_PER_SEC"
    )]
    pub connection_messages_per_sec: Option<u32>,
    /// Per realtime connection: messages it may publish at once. Default 2000.
    #[arg(
        long = "publish-connection-burst-messages",
        env = "REALTIME_PUBLISH_CONNECTION_BURST_MESSAGES"
    )]
    pub connection_burst_messages: Option<u32>,
    /// Per realtime connection: bytes (Ably's message size) per second. Default 4194304.
    #[arg(
        long = "publish-connection-bytes-per-sec",
        env = "REALTIME_PUBLISH_CONNECTION_BYTES_PER_SEC"
    )]
    pub connection_bytes_per_sec: Option<u64>,
    /// Per realtime connection: bytes it may publish at once. Default 16777216.
    #[arg(
        long = "publish-connection-burst-bytes",
        env = "REALTIME_PUBLISH_CONNECTION_BURST_BYTES"
    )]
    pub connection_burst_bytes: Option<u64>,
    /// Per key, REST publishes on this node: messages per second (0: no rate limit). Default 5000.
    #[arg(
        long = "publish-key-messages-per-sec",
        env = "REALTIME_PUBLISH_KEY_MESSAGES_PER_SEC"
    )]
    pub key_messages_per_sec: Option<u32>,
    /// Per key, REST: messages at once. Default 10000.
    #[arg(
        long = "publish-key-burst-messages",
        env = "REALTIME_PUBLISH_KEY_BURST_MESSAGES"
    )]
    pub key_burst_messages: Option<u32>,
    /// Per key, REST: bytes per second. Default 16777216.
    #[arg(
        long = "publish-key-bytes-per-sec",
        env = "REALTIME_PUBLISH_KEY_BYTES_PER_SEC"
    )]
    pub key_bytes_per_sec: Option<u64>,
    /// Per key, REST: bytes at once. Default 33554432.
    #[arg(
        long = "publish-key-burst-bytes",
        env = "REALTIME_PUBLISH_KEY_BURST_BYTES"
    )]
    pub key_burst_bytes: Option<u64>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub(crate) struct Settings {
    pub listen: SocketAddr,
    pub gateway: gateway::Config,
    pub api: api::Config,
    /// Set when no key was configured and one was made up for this run.
    pub generated_key: Option<String>,
}

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
            format!(
                "history: {} messages, {} s per channel",
                config.hub.retention.max_messages,
                config.hub.retention.max_age.as_secs()
            ),
            format!(
                "presence: at most {} members per channel",
                config.hub.max_presence_members
            ),
            format!("events: {} types", config.events.types.len()),
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
                "sockets: header timeout {} ms, body timeout {} ms, at most {} connections ({} per address)",
                config.sockets.header_timeout.as_millis(),
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
        if config.sandbox {
            lines.push("sandbox: on (test apps can be created: never in production)".to_owned());
        }
        lines.join("\n")
    }
}

fn describe_rate(rate: &gateway::limits::PublishRate) -> String {
    if rate.is_unlimited() {
        return "unlimited".into();
    }
    format!(
        "{} msg/s (burst {}), {} B/s (burst {})",
        rate.messages_per_sec, rate.burst_messages, rate.bytes_per_sec, rate.burst_bytes
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    #[serde(default)]
    keys: Vec<FileKey>,
    history: Option<FileHistory>,
    presence: Option<FilePresence>,
    events: Option<FileEvents>,
    /// How long `channel.closed` and presence leaves wait for a re-occupy / re-enter (ms).
    webhook_debounce_ms: Option<u64>,
    /// Same as `--max-idle-interval-ms`, `--connection-state-ttl-ms`, `--presence-grace-ms`.
    max_idle_interval_ms: Option<u64>,
    connection_state_ttl_ms: Option<u64>,
    presence_grace_ms: Option<u64>,
    #[serde(default)]
    webhooks: Vec<FileWebhook>,
    /// Same as `--cors-origins`; the flag, when given, replaces the file's list.
    #[serde(default)]
    cors_origins: Vec<String>,
    /// `[sockets]`: the same as the socket flags.
    sockets: Option<FileSockets>,
    /// Same as `--supabase-revoke-keys`; the flag, when given, replaces the file's list.
    #[serde(default)]
    supabase_revoke_keys: Vec<String>,
    /// `[publish]`: the same settings as the `--publish-*` flags.
    publish: Option<PublishArgs>,
    /// Same as `--outbound-queue-bytes` and `--outbound-queue-age-ms`.
    outbound_queue_bytes: Option<usize>,
    outbound_queue_age_ms: Option<u64>,
}

/// `[events]`: the types `POST /events` accepts. `[[events.types]]` add to the built-in Digis
/// types (one with a built-in's name replaces it); `builtin = false` starts from none.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEvents {
    builtin: Option<bool>,
    #[serde(default)]
    types: Vec<protocol::event::EventType>,
}

/// `[[webhooks]]`: one webhook rule; only `url`, `channels`, `events` and `secret` are needed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhook {
    /// Names the webhook's queue (and `webhookId`); default: derived from url and channels.
    id: Option<String>,
    url: String,
    channels: String,
    events: Vec<String>,
    secret: String,
    batch_max_items: Option<usize>,
    batch_ms: Option<u64>,
    timeout_ms: Option<u64>,
    retry_initial_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    queue_max_items: Option<usize>,
    breaker_failures: Option<u32>,
    breaker_cooldown_ms: Option<u64>,
}

/// `[history]`: retention per channel, and per namespace (`[[history.namespace]]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHistory {
    max_messages: Option<usize>,
    max_age_secs: Option<u64>,
    /// Most messages a `rewind` replays.
    max_rewind: Option<usize>,
    #[serde(default)]
    namespace: Vec<FileNamespace>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNamespace {
    /// The part of a channel name before the first `:` (`user` for `user:42`).
    name: String,
    max_messages: Option<usize>,
    max_age_secs: Option<u64>,
}

/// `[presence]`: members per channel.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePresence {
    max_members: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    key: String,
    capability: Option<String>,
}

/// Flags and env win over the file; the file over defaults.
pub(crate) fn resolve(args: ServeArgs) -> Result<Settings, String> {
    let args_supabase = SupabaseArgs {
        jwt_secret: args.supabase_jwt_secret.clone(),
        url: args.supabase_url.clone(),
        jwks_url: args.supabase_jwks_url.clone(),
        audience: args.supabase_audience.clone(),
        refresh_ms: args.supabase_jwks_refresh_ms,
        policy: args.policy.clone(),
    };
    let file = match &args.config {
        None => FileConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--config {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("--config {}: {e}", path.display()))?
        }
    };
    let listen_text = args
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|e| format!("--listen / REALTIME_LISTEN {listen_text:?}: {e}"))?;

    let mut keys = Vec::new();
    if let Some(list) = &args.keys {
        for entry in split_top_level(list) {
            keys.push(parse_key_entry(entry).map_err(|e| format!("--keys / REALTIME_KEYS: {e}"))?);
        }
    }
    for entry in file.keys {
        let capability = parse_capability(entry.capability.as_deref())
            .map_err(|e| format!("--config keys: {e}"))?;
        keys.push(
            ApiKey::parse(&entry.key, capability).map_err(|e| format!("--config keys: {e}"))?,
        );
    }
    let mut generated_key = None;
    if keys.is_empty() {
        let key = generate_dev_key();
        keys.push(
            ApiKey::parse(&key, Capability::all()).map_err(|e| format!("generated key: {e}"))?,
        );
        generated_key = Some(key);
    }
    let supabase = supabase_config(&args_supabase)?;
    let file_timing = FileTiming {
        max_idle_interval_ms: file.max_idle_interval_ms,
        connection_state_ttl_ms: file.connection_state_ttl_ms,
        presence_grace_ms: file.presence_grace_ms,
    };
    let hub = hub_config(file.history, file.presence)?;
    let events = events_catalog(file.events)?;
    let webhooks = webhooks_config(file.webhooks, file.webhook_debounce_ms)?;
    let mut timing = timing(&args, &file_timing)?;
    let sockets = sockets_config(&args.sockets, file.sockets, &mut timing)?;
    let cors_origins = cors_origins(if args.cors_origins.is_empty() {
        file.cors_origins
    } else {
        args.cors_origins.clone()
    })?;
    let supabase_revoke_keys = supabase_revoke_keys(
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
    let mut settings = Settings {
        listen,
        gateway: gateway::Config {
            keys,
            supabase,
            supabase_revoke_keys,
            sandbox: args.sandbox,
            server_id: args.server_id.clone().filter(|id| !id.is_empty()),
            cors_origins,
            redis: args
                .redis
                .as_deref()
                .map(gateway::RedisTarget::parse)
                .transpose()
                .map_err(|e| format!("--redis / REALTIME_REDIS_URL: {e}"))?,
            hub,
            events,
            webhooks,
            timing,
            sockets,
            ..Default::default()
        },
        api: api::Config {
            admin_listen,
            ..api::Config::default()
        },
        generated_key,
    };
    publish_limits(&mut settings.gateway.limits, &args.publish, &file_publish)?;
    settings.gateway.limits.outbound_queue = outbound_queue(
        args.outbound_queue_bytes.or(file.outbound_queue_bytes),
        args.outbound_queue_age_ms.or(file.outbound_queue_age_ms),
    )?;
    Ok(settings)
}

/// The slow-consumer bounds: flags and env over the file over defaults.
fn outbound_queue(
    bytes: Option<usize>,
    age_ms: Option<u64>,
) -> Result<gateway::limits::OutboundQueue, String> {
    // Below these a client that reads would be cut off by an ordinary burst or a GC pause.
    const LEAST_BYTES: usize = 64 * 1024;
    const LEAST_AGE_MS: u64 = 100;
    let mut queue = gateway::limits::OutboundQueue::default();
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
        queue.age = std::time::Duration::from_millis(ms);
    }
    Ok(queue)
}

/// The connection timers the config file may set (flags and env win).
/// Each entry names a configured key (a typo would silently leave the key unable to revoke).
fn supabase_revoke_keys(list: Vec<String>, keys: &[ApiKey]) -> Result<Vec<String>, String> {
    list.into_iter()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .map(|name| {
            if keys.iter().any(|key| key.name == name) {
                Ok(name)
            } else {
                Err(format!(
                    "--supabase-revoke-keys / REALTIME_SUPABASE_REVOKE_KEYS {name:?}: not a configured key name (appId.keyId)"
                ))
            }
        })
        .collect()
}

/// Each entry is an origin as browsers send it (`scheme://host[:port]`, no path).
fn cors_origins(list: Vec<String>) -> Result<Vec<String>, String> {
    list.into_iter()
        .map(|origin| origin.trim().trim_end_matches('/').to_owned())
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(['/', '*', ' ', ',']) => {
                    Ok(origin)
                }
                _ => Err(format!(
                    "--cors-origins / REALTIME_CORS_ORIGINS {origin:?}: expected an origin like https://app.example.com"
                )),
            }
        })
        .collect()
}

struct FileTiming {
    max_idle_interval_ms: Option<u64>,
    connection_state_ttl_ms: Option<u64>,
    presence_grace_ms: Option<u64>,
}

fn timing(args: &ServeArgs, file: &FileTiming) -> Result<gateway::limits::Timing, String> {
    use std::time::Duration;
    let defaults = gateway::limits::Timing::default();
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
        args.max_idle_interval_ms,
        file.max_idle_interval_ms,
        100,
        "max_idle_interval_ms",
        defaults.max_idle_interval,
    )?;
    Ok(gateway::limits::Timing {
        max_idle_interval,
        // Pongs answer our pings once per interval: allow three missed ones, never less than
        // the default's 45 s.
        peer_idle_timeout: defaults.peer_idle_timeout.max(max_idle_interval * 3),
        connection_state_ttl: ms(
            args.connection_state_ttl_ms,
            file.connection_state_ttl_ms,
            1000,
            "connection_state_ttl_ms",
            defaults.connection_state_ttl,
        )?,
        presence_grace: ms(
            args.presence_grace_ms,
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
fn publish_limits(
    limits: &mut gateway::limits::Limits,
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

fn hub_config(
    history: Option<FileHistory>,
    presence: Option<FilePresence>,
) -> Result<gateway::HubConfig, String> {
    let mut hub = gateway::HubConfig::default();
    let positive = |value: usize, setting: &str| {
        if value == 0 {
            Err(format!("--config {setting}: must be at least 1"))
        } else {
            Ok(value)
        }
    };
    if let Some(history) = history {
        if let Some(n) = history.max_messages {
            hub.retention.max_messages = positive(n, "history.max_messages")?;
        }
        if let Some(secs) = history.max_age_secs {
            positive(secs as usize, "history.max_age_secs")?;
            hub.retention.max_age = std::time::Duration::from_secs(secs);
        }
        if let Some(n) = history.max_rewind {
            hub.max_rewind = n;
        }
        for namespace in history.namespace {
            if namespace.name.is_empty() || namespace.name.contains(':') {
                return Err(format!(
                    "--config history.namespace {:?}: a namespace is the part before the first ':'",
                    namespace.name
                ));
            }
            let mut retention = hub.retention;
            if let Some(n) = namespace.max_messages {
                retention.max_messages = positive(n, "history.namespace.max_messages")?;
            }
            if let Some(secs) = namespace.max_age_secs {
                positive(secs as usize, "history.namespace.max_age_secs")?;
                retention.max_age = std::time::Duration::from_secs(secs);
            }
            hub.namespace_retention.push((namespace.name, retention));
        }
    }
    if let Some(n) = presence.and_then(|p| p.max_members) {
        hub.max_presence_members = positive(n, "presence.max_members")?;
    }
    Ok(hub)
}

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

fn webhooks_config(
    rules: Vec<FileWebhook>,
    debounce_ms: Option<u64>,
) -> Result<gateway::webhooks::WebhooksConfig, String> {
    use gateway::webhooks::{Source, WebhookConfig};
    use std::time::Duration;
    let mut config = gateway::webhooks::WebhooksConfig::default();
    if let Some(ms) = debounce_ms {
        config.debounce = Duration::from_millis(ms);
    }
    for (index, rule) in rules.into_iter().enumerate() {
        let at = format!("--config webhooks[{index}]");
        let url = rule.url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || url.contains(char::is_whitespace)
        {
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
        let positive = |value: u64, setting: &str| {
            if value == 0 {
                Err(format!("{at}.{setting}: must be at least 1"))
            } else {
                Ok(value)
            }
        };
        if let Some(n) = rule.batch_max_items {
            webhook.batch_max_items = positive(n as u64, "batch_max_items")? as usize;
        }
        if let Some(ms) = rule.batch_ms {
            webhook.batch_window = Duration::from_millis(ms);
        }
        if let Some(ms) = rule.timeout_ms {
            webhook.attempt_timeout = Duration::from_millis(positive(ms, "timeout_ms")?);
        }
        if let Some(ms) = rule.retry_initial_ms {
            webhook.retry_initial = Duration::from_millis(positive(ms, "retry_initial_ms")?);
        }
        if let Some(ms) = rule.retry_max_ms {
            webhook.retry_max = Duration::from_millis(positive(ms, "retry_max_ms")?);
        }
        if let Some(n) = rule.queue_max_items {
            webhook.queue_max_items = positive(n as u64, "queue_max_items")? as usize;
        }
        if let Some(n) = rule.breaker_failures {
            webhook.breaker_failures = positive(u64::from(n), "breaker_failures")? as u32;
        }
        if let Some(ms) = rule.breaker_cooldown_ms {
            webhook.breaker_cooldown = Duration::from_millis(positive(ms, "breaker_cooldown_ms")?);
        }
        if config.rules.iter().any(|r| r.id == webhook.id) {
            return Err(format!("{at}: another webhook has id {:?}", webhook.id));
        }
        config.rules.push(webhook);
    }
    Ok(config)
}

struct SupabaseArgs {
    jwt_secret: Option<String>,
    url: Option<String>,
    jwks_url: Option<String>,
    audience: String,
    refresh_ms: u64,
    policy: Option<PathBuf>,
}

fn supabase_config(args: &SupabaseArgs) -> Result<Option<SupabaseConfig>, String> {
    let http_url = |value: &str, setting: &str| -> Result<String, String> {
        let trimmed = value.trim().trim_end_matches('/');
        let ok = (trimmed.starts_with("https://") || trimmed.starts_with("http://"))
            && trimmed.len() > "https://".len()
            && !trimmed.contains(char::is_whitespace);
        if ok {
            Ok(trimmed.to_owned())
        } else {
            Err(format!("{setting} {value:?}: expected an http(s) URL"))
        }
    };
    let url = args
        .url
        .as_deref()
        .map(|url| http_url(url, "--supabase-url / REALTIME_SUPABASE_URL"))
        .transpose()?;
    let jwks_url = match (&args.jwks_url, &url) {
        (Some(jwks), _) => Some(http_url(
            jwks,
            "--supabase-jwks-url / REALTIME_SUPABASE_JWKS_URL",
        )?),
        (None, Some(url)) => Some(format!("{url}/auth/v1/.well-known/jwks.json")),
        (None, None) => None,
    };
    if let Some(secret) = &args.jwt_secret {
        if secret.trim().is_empty() {
            return Err("--supabase-jwt-secret / REALTIME_SUPABASE_JWT_SECRET is empty".into());
        }
    }
    let policy = match &args.policy {
        None => Policy::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--policy {}: {e}", path.display()))?;
            let policy: Policy =
                toml::from_str(&text).map_err(|e| format!("--policy {}: {e}", path.display()))?;
            policy
                .validate()
                .map_err(|e| format!("--policy {}: {e}", path.display()))?;
            policy
        }
    };
    if args.jwt_secret.is_none() && jwks_url.is_none() {
        if args.policy.is_some() {
            return Err(
                "--policy needs --supabase-jwt-secret, --supabase-url or --supabase-jwks-url"
                    .into(),
            );
        }
        return Ok(None);
    }
    let audience: Vec<String> = args
        .audience
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if audience.is_empty() {
        return Err("--supabase-audience / REALTIME_SUPABASE_AUDIENCE is empty".into());
    }
    Ok(Some(SupabaseConfig {
        jwt_secret: args.jwt_secret.clone(),
        jwks_url,
        issuer: url.map(|url| format!("{url}/auth/v1")),
        audience,
        policy,
        jwks_min_refresh_interval: std::time::Duration::from_millis(args.refresh_ms),
        ..SupabaseConfig::default()
    }))
}

/// Splits on commas outside braces/brackets, so capability JSON may contain commas.
fn split_top_level(list: &str) -> Vec<&str> {
    let mut entries = Vec::new();
    let (mut depth, mut start, mut in_string, mut escaped) = (0i32, 0, false, false);
    for (i, c) in list.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '{' | '[' if !in_string => depth += 1,
            '}' | ']' if !in_string => depth -= 1,
            ',' if depth == 0 && !in_string => {
                entries.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    entries.push(&list[start..]);
    entries
        .into_iter()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect()
}

fn parse_key_entry(entry: &str) -> Result<ApiKey, String> {
    let (key, capability) = match entry.split_once('=') {
        Some((key, capability)) => (key, Some(capability)),
        None => (entry, None),
    };
    ApiKey::parse(key.trim(), parse_capability(capability)?)
}

fn parse_capability(json: Option<&str>) -> Result<Capability, String> {
    match json {
        None => Ok(Capability::all()),
        Some(json) => Capability::parse(json.trim()).map_err(|e| e.message),
    }
}

fn generate_dev_key() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    let mut rng = rand::thread_rng();
    format!(
        "dev.{}:{}",
        Alphanumeric.sample_string(&mut rng, 6),
        Alphanumeric.sample_string(&mut rng, 24)
    )
}

pub(crate) fn print_dev_key(key: &str, local: SocketAddr) {
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        local.ip().to_string()
    };
    println!(
        "No key configured; generated a development key for this run:\n  new Ably.Rest({{ key: '{key}', endpoint: '{host}', port: {port}, tls: false, fallbackHosts: [] }})",
        port = local.port()
    );
}

// --- Sockets: request deadlines, connection caps, silent peers (issue 18) ---

/// Bounds on what one socket may hold: request deadlines and connection caps.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct SocketArgs {
    /// A request's head (the WebSocket upgrade included) must arrive within this, counted from
    /// when the server starts waiting for it; a silent socket, a slowloris client and an idle
    /// keep-alive connection are closed after it. In ms; default 10000.
    #[arg(long, env = "REALTIME_HEADER_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(100..))]
    pub header_timeout_ms: Option<u64>,
    /// A request body must arrive completely within this after its head (else 408, closed).
    /// In ms; default 30000.
    #[arg(long, env = "REALTIME_BODY_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(100..))]
    pub body_timeout_ms: Option<u64>,
    /// Most connections (HTTP and WebSocket) held at once; over it a request gets 503 (50003)
    /// and a WebSocket DISCONNECTED (50003), then the socket closes. Default: the process's file
    /// limit (raised to its hard limit at start) minus 256; 0: no cap.
    #[arg(long, env = "REALTIME_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections held at once from one source address, answered as over
    /// `--max-connections`. Default 0: no cap (behind a proxy or load balancer every client has
    /// its address).
    #[arg(long, env = "REALTIME_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// A WebSocket peer silent this long (no frame, not even a pong to our pings) is dropped.
    /// In ms; default the larger of 45000 and three `--max-idle-interval-ms`; at least two
    /// `--max-idle-interval-ms`.
    #[arg(long, env = "REALTIME_PEER_IDLE_TIMEOUT_MS")]
    pub peer_idle_timeout_ms: Option<u64>,
}

/// `[sockets]` in the config file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSockets {
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    peer_idle_timeout_ms: Option<u64>,
}

/// File descriptors kept out of `--max-connections`' default: Redis, logs, the spare slots that
/// answer connections over the cap.
const RESERVED_FDS: u64 = 256;

/// The socket bounds (flags and env win over the file); sets the peer idle timeout in `timing`.
fn sockets_config(
    args: &SocketArgs,
    file: Option<FileSockets>,
    timing: &mut gateway::limits::Timing,
) -> Result<gateway::limits::Sockets, String> {
    use std::time::Duration;
    let file = file.unwrap_or(FileSockets {
        header_timeout_ms: None,
        body_timeout_ms: None,
        max_connections: None,
        max_connections_per_ip: None,
        peer_idle_timeout_ms: None,
    });
    let defaults = gateway::limits::Sockets::default();
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
    Ok(gateway::limits::Sockets {
        header_timeout,
        body_timeout,
        max_connections,
        max_connections_per_ip: args
            .max_connections_per_ip
            .or(file.max_connections_per_ip)
            .unwrap_or(defaults.max_connections_per_ip),
    })
}

// --- end of Sockets ---

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keys_outside_json() {
        let list = r#"a.b:c, a.d:e={"x:*":["publish","subscribe"],"y":["*"]},a.f:g"#;
        assert_eq!(
            split_top_level(list),
            vec![
                "a.b:c",
                r#"a.d:e={"x:*":["publish","subscribe"],"y":["*"]}"#,
                "a.f:g"
            ]
        );
        let key = parse_key_entry(split_top_level(list)[1]).unwrap();
        assert_eq!(key.name, "a.d");
    }

    fn with_file(name: &str, toml: &str) -> Result<Settings, String> {
        let path =
            std::env::temp_dir().join(format!("realtime-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, toml).unwrap();
        resolve(ServeArgs {
            config: Some(path),
            ..args("127.0.0.1:0", "a.b:c")
        })
    }

    /// Flags as clap gives them with only `--listen` and `--keys` set.
    fn args(listen: &str, keys: &str) -> ServeArgs {
        ServeArgs {
            listen: Some(listen.into()),
            keys: Some(keys.into()),
            config: None,
            supabase_jwt_secret: None,
            supabase_url: None,
            supabase_jwks_url: None,
            supabase_audience: "authenticated".into(),
            supabase_jwks_refresh_ms: 5000,
            policy: None,
            sandbox: false,
            token_renew_lead_ms: 30_000,
            node_lease_ms: 5_000,
            log_format: LogFormat::Text,
            drain_ms: 10_000,
            max_idle_interval_ms: None,
            connection_state_ttl_ms: None,
            presence_grace_ms: None,
            admin_listen: None,
            cors_origins: Vec::new(),
            supabase_revoke_keys: Vec::new(),
            server_id: None,
            redis: None,
            outbound_queue_bytes: None,
            outbound_queue_age_ms: None,
            sockets: SocketArgs::default(),
            publish: PublishArgs::default(),
        }
    }

    #[test]
    fn outbound_queue_bounds_come_from_flags_over_the_file() {
        let defaults = resolve(args("127.0.0.1:0", "a.b:c")).unwrap();
        assert_eq!(
            defaults.gateway.limits.outbound_queue,
            gateway::limits::OutboundQueue::default()
        );
        let settings = with_file(
            "outbound",
            "outbound_queue_bytes = 1048576
outbound_queue_age_ms = 2500
",
        )
        .unwrap();
        let queue = settings.gateway.limits.outbound_queue;
        assert_eq!(queue.bytes, 1 << 20);
        assert_eq!(queue.age, std::time::Duration::from_millis(2500));
        let flagged = resolve(ServeArgs {
            outbound_queue_age_ms: Some(700),
            ..args("127.0.0.1:0", "a.b:c")
        })
        .unwrap();
        assert_eq!(
            flagged.gateway.limits.outbound_queue.age,
            std::time::Duration::from_millis(700)
        );
        let error = with_file(
            "outbound-bad",
            "outbound_queue_bytes = 10
",
        )
        .err()
        .unwrap();
        assert!(error.contains("outbound-queue-bytes"), "{error}");
    }

    #[test]
    fn publish_limits_come_from_flags_over_the_file() {
        let settings = with_file(
            "publish",
            "[publish]\nmax_messages = 50\nconnection_messages_per_sec = 20\nconnection_burst_messages = 60\nkey_messages_per_sec = 0\n",
        )
        .unwrap();
        let limits = &settings.gateway.limits;
        assert_eq!(limits.max_messages_per_publish, 50);
        assert_eq!(limits.connection_publish_rate.messages_per_sec, 20);
        assert_eq!(limits.connection_publish_rate.burst_messages, 60);
        assert!(limits.key_publish_rate.is_unlimited());
        let flagged = resolve(ServeArgs {
            publish: PublishArgs {
                connection_messages_per_sec: Some(7),
                ..PublishArgs::default()
            },
            ..args("127.0.0.1:0", "a.b:c")
        })
        .unwrap();
        assert_eq!(
            flagged
                .gateway
                .limits
                .connection_publish_rate
                .messages_per_sec,
            7
        );
        // A burst smaller than the largest publish could never be met.
        let error = with_file("publish-bad", "[publish]\nconnection_burst_messages = 10\n")
            .err()
            .unwrap();
        assert!(error.contains("burst-messages"), "{error}");
    }

    #[test]
    fn history_and_presence_limits_come_from_the_file() {
        let settings = with_file(
            "limits",
            "[history]\nmax_messages = 100\nmax_age_secs = 60\nmax_rewind = 10\n\n[[history.namespace]]\nname = \"user\"\nmax_age_secs = 86400\n\n[presence]\nmax_members = 5000\n",
        )
        .unwrap();
        let hub = settings.gateway.hub;
        assert_eq!(hub.retention.max_messages, 100);
        assert_eq!(hub.retention.max_age.as_secs(), 60);
        assert_eq!(hub.max_rewind, 10);
        assert_eq!(hub.max_presence_members, 5000);
        let (name, user) = &hub.namespace_retention[0];
        assert_eq!(name, "user");
        assert_eq!(user.max_age.as_secs(), 86400);
        assert_eq!(
            user.max_messages, 100,
            "unset fields inherit the channel default"
        );

        let error = with_file("zero", "[history]\nmax_messages = 0\n")
            .err()
            .unwrap();
        assert!(error.contains("history.max_messages"), "{error}");
        let error = with_file("ns", "[[history.namespace]]\nname = \"a:b\"\n")
            .err()
            .unwrap();
        assert!(error.contains("history.namespace"), "{error}");
    }

    #[test]
    fn event_types_come_from_the_file() {
        let settings = with_file(
            "events",
            "[events]\nbuiltin = false\n\n[[events.types]]\nname = \"order.shipped\"\nrequired = { order_id = \"id\", carrier = [\"ups\", \"dhl\"] }\noptional = { eta = \"integer\" }\nchannels = [\"order:{order_id}\"]\n",
        )
        .unwrap();
        let types = settings.gateway.events.types;
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].channels, ["order:{order_id}"]);
        let defaults = with_file("events-default", "").unwrap();
        assert!(defaults.gateway.events.get("call.ringing").is_some());
        let error = with_file(
            "events-bad",
            "[[events.types]]\nname = \"x\"\nchannels = [\"x:{missing}\"]\n",
        )
        .err()
        .unwrap();
        assert!(
            error.contains("events.types") && error.contains("{missing}"),
            "{error}"
        );
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let error = resolve(args("nope", "a.b:c")).err().unwrap();
        assert!(error.contains("--listen"), "{error}");
        let error = resolve(args("127.0.0.1:0", "not-a-key")).err().unwrap();
        assert!(error.contains("--keys"), "{error}");
        let error = resolve(args("127.0.0.1:0", "a.b:c={bad json"))
            .err()
            .unwrap();
        assert!(error.contains("--keys"), "{error}");
    }

    #[test]
    fn supabase_revoke_keys_name_configured_keys() {
        let allowed = |list: &[&str]| {
            resolve(ServeArgs {
                supabase_revoke_keys: list.iter().map(|s| s.to_string()).collect(),
                ..args("127.0.0.1:0", "a.b:c,a.d:e")
            })
            .map(|settings| settings.gateway.supabase_revoke_keys)
        };
        assert_eq!(allowed(&[]).unwrap(), Vec::<String>::new());
        assert_eq!(allowed(&["a.d"]).unwrap(), vec!["a.d".to_owned()]);
        let error = allowed(&["a.x"]).err().unwrap();
        assert!(error.contains("--supabase-revoke-keys"), "{error}");
    }

    #[test]
    fn a_redis_url_selects_one_server_or_a_cluster() {
        let redis = |url: &str| {
            resolve(ServeArgs {
                redis: Some(url.into()),
                ..args("127.0.0.1:0", "a.b:c")
            })
            .map(|settings| settings.gateway.redis)
        };
        assert_eq!(
            redis("redis://127.0.0.1:6380").unwrap(),
            Some(gateway::RedisTarget::Node("redis://127.0.0.1:6380".into()))
        );
        assert_eq!(
            redis("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001").unwrap(),
            Some(gateway::RedisTarget::Cluster(vec![
                "redis://:pw@10.0.0.1:7000".into(),
                "redis://:pw@10.0.0.2:7001".into()
            ]))
        );
        for bad in [
            "http://x:1",
            "redis+cluster://",
            "redis+cluster://host",
            "redis+cluster://a:1,:2",
            "redis+cluster://a:99999",
        ] {
            let error = redis(bad).err().unwrap();
            assert!(error.contains("--redis"), "{bad}: {error}");
        }
    }

    #[test]
    fn webhooks_come_from_the_file() {
        let settings = with_file(
            "webhooks",
            r#"
webhook_debounce_ms = 1500
[[webhooks]]
url = "https://api.example.com/hooks/realtime"
channels = "call:*"
events = ["channel.lifecycle", "channel.presence"]
secret = "whsec_x"
batch_max_items = 10
"#,
        )
        .unwrap();
        let webhooks = &settings.gateway.webhooks;
        assert_eq!(webhooks.debounce.as_millis(), 1500);
        assert_eq!(webhooks.rules.len(), 1);
        assert_eq!(webhooks.rules[0].batch_max_items, 10);
        assert_eq!(webhooks.rules[0].id.len(), 12);
        for (name, bad) in [
            ("event", r#"events = ["channel.nope"]"#),
            ("url", r#"url = "ftp://x""#),
            ("secret", r#"secret = """#),
        ] {
            let mut rule = vec![
                ("url", r#"url = "http://127.0.0.1:1/h""#),
                ("channels", r#"channels = "*""#),
                ("event", r#"events = ["channel.message"]"#),
                ("secret", r#"secret = "s""#),
            ];
            for entry in &mut rule {
                if entry.0 == name {
                    entry.1 = bad;
                }
            }
            let text: Vec<&str> = rule.iter().map(|(_, line)| *line).collect();
            let error = with_file(
                &format!("webhook-{name}"),
                &format!("[[webhooks]]\n{}\n", text.join("\n")),
            )
            .err()
            .unwrap();
            assert!(error.contains("webhooks[0]"), "{name}: {error}");
        }
    }

    #[test]
    fn socket_bounds_come_from_the_file_and_flags_win() {
        let settings = with_file(
            "sockets",
            "[sockets]\nheader_timeout_ms = 5000\nbody_timeout_ms = 7000\nmax_connections = 7\nmax_connections_per_ip = 2\npeer_idle_timeout_ms = 60000\n",
        )
        .unwrap();
        let sockets = &settings.gateway.sockets;
        assert_eq!(sockets.header_timeout.as_millis(), 5000);
        assert_eq!(sockets.body_timeout.as_millis(), 7000);
        assert_eq!(sockets.max_connections, 7);
        assert_eq!(sockets.max_connections_per_ip, 2);
        assert_eq!(settings.gateway.timing.peer_idle_timeout.as_secs(), 60);

        let mut flags = args("127.0.0.1:0", "a.b:c");
        flags.sockets.max_connections = Some(0);
        flags.sockets.peer_idle_timeout_ms = Some(1000);
        let error = resolve(flags.clone()).err().unwrap();
        assert!(error.contains("peer_idle_timeout_ms"), "{error}");
        flags.sockets.peer_idle_timeout_ms = None;
        let settings = resolve(flags).unwrap();
        assert_eq!(settings.gateway.sockets.max_connections, 0, "0: no cap");
        assert_eq!(settings.gateway.sockets.header_timeout.as_secs(), 10);
    }
}
