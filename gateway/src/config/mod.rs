//! The gateway's settings, as plain data: `main` fills them from flags and env; tests build them
//! directly. A leaf: feature modules import their settings from here, and nothing here imports
//! a feature (linkerd's config-as-data), so each `Default` is the one place a default is set.

mod hub;
mod keys;
mod limits;
mod moderation;
mod redis_tls;
mod supabase;
mod webhooks;

pub use hub::{Batching, ChannelRules, ConflationKey, HubConfig, Retention};
pub use keys::ApiKey;
pub use limits::{Limits, OutboundQueue, PublishRate, Sockets, Timing};
pub use moderation::{FailMode, ModerationRule, MAX_MODERATION_TIMEOUT};
pub use redis_tls::RedisTls;
pub(crate) use supabase::Rule;
pub use supabase::{Policy, SupabaseConfig};
pub use webhooks::{Source, WebhookConfig, WebhooksConfig};

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// API keys; at least one (`main` generates a development key when none is configured).
    pub keys: Vec<ApiKey>,
    /// Announced to clients as `serverId`; defaults to a random id per process.
    pub server_id: Option<String>,
    /// The Redis (or Redis Cluster) every process shares the bus through; none: embedded.
    pub redis: Option<RedisTarget>,
    /// A private CA or a client certificate for `rediss://` (none: the public roots).
    pub redis_tls: Option<RedisTls>,
    /// How many replicas must confirm a stored publish before it is acknowledged.
    pub redis_min_replicas: MinReplicas,
    /// Accept Supabase access tokens when set.
    pub supabase: Option<SupabaseConfig>,
    /// Keys (by name) whose `revokeTokens` also reaches Supabase users' tokens; any other key
    /// revokes only tokens it issued itself.
    pub supabase_revoke_keys: Vec<String>,
    pub limits: Limits,
    /// Enables `POST /apps` and `DELETE /apps/{id}`: isolated test apps made on demand, as
    /// Ably's sandbox provides for SDK test suites. Off in production.
    pub sandbox: bool,
    /// History retention, rewind and presence caps.
    pub hub: HubConfig,
    pub timing: Timing,
    /// Header and body deadlines and connection caps for the listener.
    pub sockets: Sockets,
    /// Origins whose browsers may call the REST API with credentials (`--cors-origins`); empty:
    /// any origin, answered with `*` and no credentials.
    pub cors_origins: Vec<String>,
    /// The event types `POST /events` accepts and where each goes (default: the Digis types).
    pub events: protocol::event::Catalog,
    /// Lifecycle, presence and message webhooks (none by default).
    pub webhooks: WebhooksConfig,
    /// Before-publish moderation rules, in file order (none by default).
    pub moderation: Vec<ModerationRule>,
}

/// Where the Redis bus lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis server: `redis://[:password@]host:port` (or `rediss://`).
    Node(String),
    /// A Redis Cluster, given by seed nodes (`redis://[:password@]host:port` each, `rediss://`
    /// for TLS; any one reachable is enough, the rest of the cluster is discovered from it).
    Cluster(Vec<String>),
    /// A master found through Redis Sentinel, followed across failovers.
    Sentinel(SentinelTarget),
}

/// `--redis-min-replicas`: every stored publish waits (`WAIT count timeout`) until `count`
/// replicas have it, or is refused; so an acknowledged publish survives its master's death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinReplicas {
    /// 0: acknowledged once the master has it (Redis replicates asynchronously).
    pub count: u32,
    /// How long `WAIT` waits; below the 2 s every Redis command is bounded by.
    pub timeout: std::time::Duration,
}

impl Default for MinReplicas {
    fn default() -> MinReplicas {
        MinReplicas {
            count: 0,
            timeout: std::time::Duration::from_millis(500),
        }
    }
}

/// `redis+sentinel://[user:password@]host:port[,host:port…]/master-name[?db=N&sentinel_user=…&sentinel_password=…]`
/// (`rediss+sentinel://` for TLS to sentinels and data nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The sentinels, as `redis://[user:password@]host:port` (their own credentials).
    pub sentinels: Vec<String>,
    /// The monitored master's name (`sentinel monitor <name> …`).
    pub master: String,
    /// The data nodes' credentials as a URL's userinfo (`user:password@`, or empty).
    pub credentials: String,
    /// The data nodes' database.
    pub db: i64,
    pub tls: bool,
}

impl RedisTarget {
    /// `redis://…` / `rediss://…` is one server; `redis+cluster://[user:password@]host:port[,host:port…]`
    /// a Redis Cluster by its seed nodes (`rediss+cluster://`: over TLS).
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let cluster = match url.strip_prefix("redis+cluster://") {
            Some(rest) => Some(("redis", rest)),
            None => url
                .strip_prefix("rediss+cluster://")
                .map(|rest| ("rediss", rest)),
        };
        if let Some((scheme, rest)) = cluster {
            let (credentials, hosts) = match rest.rsplit_once('@') {
                Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
                None => (String::new(), rest),
            };
            let mut seeds = Vec::new();
            for host in hosts.trim_end_matches('/').split(',') {
                if !is_host_port(host) {
                    return Err(format!("{host:?} is not host:port"));
                }
                let seed = format!("{scheme}://{credentials}{host}");
                refuse_wildcard(&seed)?;
                seeds.push(seed);
            }
            return Ok(RedisTarget::Cluster(seeds));
        }
        for (scheme, tls) in [("redis+sentinel://", false), ("rediss+sentinel://", true)] {
            if let Some(rest) = url.strip_prefix(scheme) {
                return parse_sentinel(rest, tls).map(RedisTarget::Sentinel);
            }
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            refuse_wildcard(url)?;
            return Ok(RedisTarget::Node(url.to_owned()));
        }
        Err("expected a redis://, rediss://, redis+cluster://, rediss+cluster:// or redis+sentinel:// URL".into())
    }
}

/// `host:port`, with a non-empty host and a port above 0.
fn is_host_port(host: &str) -> bool {
    host.rsplit_once(':').is_some_and(|(name, port)| {
        !name.is_empty() && !name.contains('/') && port.parse::<u16>().is_ok_and(|port| port > 0)
    })
}

/// What follows `redis+sentinel://`.
fn parse_sentinel(rest: &str, tls: bool) -> Result<SentinelTarget, String> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, rest)) => (format!("{credentials}@"), rest),
        None => (String::new(), rest),
    };
    let Some((hosts, master)) = rest.split_once('/') else {
        return Err("expected redis+sentinel://host:port[,host:port...]/master-name".into());
    };
    if master.is_empty() || master.contains('/') {
        return Err(format!("{master:?} is not a master name"));
    }
    let (mut db, mut sentinel_user, mut sentinel_password) = (0i64, None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("db", value)) => {
                db = value
                    .parse()
                    .map_err(|_| format!("db={value:?}: not a number"))?;
            }
            Some(("sentinel_user", value)) => sentinel_user = Some(value),
            Some(("sentinel_password", value)) => sentinel_password = Some(value),
            _ => return Err(format!("unknown parameter {pair:?}")),
        }
    }
    let sentinel_credentials = match (sentinel_user, sentinel_password) {
        (None, None) => String::new(),
        (user, password) => format!(
            "{}:{}@",
            user.unwrap_or_default(),
            password.unwrap_or_default()
        ),
    };
    let scheme = if tls { "rediss" } else { "redis" };
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        if !is_host_port(host) {
            return Err(format!("{host:?} is not host:port"));
        }
        let sentinel = format!("{scheme}://{sentinel_credentials}{host}");
        refuse_wildcard(&sentinel)?;
        sentinels.push(sentinel);
    }
    Ok(SentinelTarget {
        sentinels,
        master: master.to_owned(),
        credentials,
        db,
        tls,
    })
}

/// The redis client refuses to connect to a wildcard address (`0.0.0.0`, `::`: where a server
/// listens, not an address to reach it at); said when the settings are read, not at connect.
fn refuse_wildcard(url: &str) -> Result<(), String> {
    let host = redis::parse_redis_url(url).and_then(|url| url.host_str().map(str::to_owned));
    match host.as_deref() {
        Some(host @ ("0.0.0.0" | "[::]")) => Err(format!(
            "{host} is a wildcard address, not one to connect to: give the Redis server's address (e.g. 127.0.0.1)"
        )),
        _ => Ok(()),
    }
}
