//! The command line: clap flags, each with its `REALTIME_*` env fallback.
//!
//! A flag's variable is named after it (`--publish-max-messages`: `REALTIME_PUBLISH_MAX_MESSAGES`)
//! by `with_env`, so the fields do not spell it again; only `--redis` names its own.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
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

impl Cli {
    /// Parses `argv` as `Parser::try_parse_from` does, each flag given its variable. Named like
    /// it so that `Cli::try_parse_from` never skips the variables.
    pub(crate) fn try_parse_from<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = <Cli as CommandFactory>::command()
            .mut_args(with_env)
            .mut_subcommands(|subcommand| subcommand.mut_args(with_env));
        let mut matches = command.try_get_matches_from_mut(argv)?;
        Cli::from_arg_matches_mut(&mut matches).map_err(|error| error.format(&mut command))
    }

    /// `try_parse_from` on this process's arguments.
    pub(crate) fn try_parse() -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::env::args_os())
    }
}

/// `--some-flag` falls back to `REALTIME_SOME_FLAG`, unless it names its own variable.
fn with_env(arg: Arg) -> Arg {
    match arg.get_long() {
        Some(long) if arg.get_env().is_none() => {
            let name = format!("REALTIME_{}", long.to_uppercase().replace('-', "_"));
            arg.env(name)
        }
        _ => arg,
    }
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
    /// Push notification tools.
    #[command(subcommand)]
    Push(PushTool),
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub(crate) enum PushTool {
    /// Prints a new VAPID key pair for Web Push and the flags that take it.
    GenerateVapidKeys,
}

/// What a command line asks for.
pub(crate) enum Run {
    /// Serve in `role` (`check_only`: validate the settings and stop).
    Serve {
        role: api::Role,
        args: Box<ServeArgs>,
        check_only: bool,
    },
    Push(PushTool),
}

impl Cli {
    pub(crate) fn run(self) -> Run {
        let serve = |role, args, check_only| Run::Serve {
            role,
            args: Box::new(args),
            check_only,
        };
        match self.command {
            None => serve(api::Role::Both, self.serve, false),
            Some(Command::Serve(args)) => serve(api::Role::Both, args, false),
            Some(Command::Gateway(args)) => serve(api::Role::Gateway, args, false),
            Some(Command::Api(args)) => serve(api::Role::Api, args, false),
            Some(Command::CheckConfig(args)) => serve(api::Role::Both, args, true),
            Some(Command::Push(tool)) => Run::Push(tool),
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
    #[arg(long)]
    pub listen: Option<String>,
    /// API keys: comma-separated `appId.keyId:secret`, each optionally followed by `=` and a
    /// capability JSON (default {"*":["*"]}).
    #[arg(long)]
    pub keys: Option<String>,
    /// TOML settings file: `listen`, `[[keys]]` (`key`, optional `capability`), the timers
    /// (`max_idle_interval_ms`, `connection_state_ttl_ms`, `presence_grace_ms`,
    /// `webhook_debounce_ms`), `cors_origins`, `supabase_revoke_keys` and the tables
    /// `[history]`, `[presence]`, `[sockets]`, `[publish]`, `[[webhooks]]`, `[[events.types]]`
    /// (README, "Configuration"). Flags and `REALTIME_*` variables win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Supabase project JWT secret: accept its HS256 access tokens.
    #[arg(long, hide_env_values = true)]
    pub supabase_jwt_secret: Option<String>,
    /// Supabase project URL: accept ES256/RS256 access tokens signed by its keys
    /// ({url}/auth/v1/.well-known/jwks.json) and require iss = {url}/auth/v1.
    #[arg(long)]
    pub supabase_url: Option<String>,
    /// Where to fetch the signing keys, if not under --supabase-url.
    #[arg(long)]
    pub supabase_jwks_url: Option<String>,
    /// Accepted `aud` values, comma-separated.
    #[arg(long, default_value = "authenticated")]
    pub supabase_audience: String,
    /// At most one JWKS fetch per this many milliseconds (an unknown kid triggers one).
    #[arg(long, default_value_t = 5000)]
    pub supabase_jwks_refresh_ms: u64,
    /// Redis URL (`redis://[:password@]host:port`, `rediss://` for TLS): every process on it
    /// shares one bus. A Redis Cluster: `redis+cluster://[:password@]host:port[,host:port...]`
    /// (`rediss+cluster://` for TLS; seed nodes; channels spread over the shards by hash slot,
    /// sharded pub/sub). Without it,
    /// one process runs everything in memory.
    #[arg(long, env = "REALTIME_REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// With a `rediss://` (or `rediss+cluster://`) URL: a PEM file of the CA(s) that signed the
    /// Redis servers' certificates, trusted instead of the public roots. Verification stays on.
    #[arg(long)]
    pub redis_ca_file: Option<PathBuf>,
    /// With `rediss://`: a PEM client certificate (chain) for a Redis that asks for one (mutual
    /// TLS); needs --redis-client-key.
    #[arg(long, requires = "redis_client_key")]
    pub redis_client_cert: Option<PathBuf>,
    /// The PEM private key of --redis-client-cert.
    #[arg(long, requires = "redis_client_cert")]
    pub redis_client_key: Option<PathBuf>,
    /// How long before a token expires the server asks the client to renew it (AUTH), in ms.
    /// Tokens with less left than this are not asked and expire into 40142.
    #[arg(long, default_value_t = 30_000)]
    pub token_renew_lead_ms: u64,
    /// With `--redis`: how long a node that stopped renewing its lease (killed, partitioned)
    /// is still counted alive; after it, its connections can be resumed elsewhere and the
    /// presence members of clients that do not come back leave after the presence grace. In ms.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(300..))]
    pub node_lease_ms: u64,
    /// With `--redis`: every stored publish waits (`WAIT`) until this many replicas have it
    /// before it is acknowledged, or is refused (NACK 50003 / HTTP 503): an acknowledged
    /// publish then survives a failover. 0: acknowledged once the master has it.
    #[arg(long, default_value_t = 0)]
    pub redis_min_replicas: u32,
    /// How long a publish waits for `--redis-min-replicas`, in ms.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..1500))]
    pub redis_min_replicas_timeout: u64,
    #[command(flatten)]
    pub timers: TimerArgs,
    /// A second address serving only `/metrics`, `/healthz` and `/readyz`, so metrics need not
    /// be public; when set, the main port does not serve `/metrics`.
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Browser origins allowed to call the REST API with credentials (comma-separated, e.g.
    /// `https://digis.cc,https://www.digis.cc`); ably-js sends `credentials: include` with an
    /// `Authorization` header, so its origin must be listed. Default: none listed, any origin
    /// answered with `*` and no credentials.
    #[arg(long, value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Key names (`appId.keyId`, comma-separated) whose `revokeTokens` also revokes Supabase
    /// users (a `clientId:<sub>` target). Default: none; every key revokes only tokens it issued.
    #[arg(long, value_delimiter = ',')]
    pub supabase_revoke_keys: Vec<String>,
    /// On SIGTERM: how long to take handing clients over to other nodes (each told to reconnect
    /// at a random moment in the first 60%), in ms; the process exits when the last is gone or
    /// at the end. Keep Kubernetes' terminationGracePeriodSeconds above it.
    #[arg(long, default_value_t = 10_000)]
    pub drain_ms: u64,
    /// Log lines as human-readable text or as JSON (one object per line, for log shippers).
    /// Filter with RUST_LOG (e.g. `info`, `gateway=debug`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// This process's name in CONNECTED (`serverId`) and in logs, e.g. the pod name; default
    /// a random `rt-…`.
    #[arg(long)]
    pub server_id: Option<String>,
    /// Test-app provisioning (`POST /apps`, `DELETE /apps/{id}`) for SDK test suites. Never in
    /// production: anyone can create an app.
    #[arg(long)]
    pub sandbox: bool,
    /// TOML policy mapping Supabase claims to capabilities (default: the Digis policy).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Bytes of deliveries (other connections' messages and presence) queued for one
    /// connection before it counts as a slow consumer and is disconnected (DISCONNECTED 80020);
    /// replies to its own requests never count. Default 4194304 (4 MiB).
    #[arg(long)]
    pub outbound_queue_bytes: Option<usize>,
    /// A frame unsent this long (the client is not reading) makes the connection a slow
    /// consumer too. In ms; default 10000.
    #[arg(long)]
    pub outbound_queue_age_ms: Option<u64>,
    #[command(flatten)]
    pub sockets: SocketArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
    #[command(flatten)]
    pub push: PushArgs,
}

/// Push notification transports (README, "Push notifications"); each is off until its
/// settings are given.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct PushArgs {
    /// Web Push: the VAPID public key (base64url, as `realtime push generate-vapid-keys` prints
    /// it); browsers subscribe with it. Needs --push-vapid-private-key and --push-vapid-subject.
    #[arg(long)]
    pub push_vapid_public_key: Option<String>,
    /// Web Push: the VAPID private key (base64url).
    #[arg(long, hide_env_values = true)]
    pub push_vapid_private_key: Option<String>,
    /// Web Push: the contact push services may reach (`mailto:ops@example.com` or an https URL).
    #[arg(long)]
    pub push_vapid_subject: Option<String>,
    /// Web Push: the push services subscriptions may be on, comma-separated hosts or domains
    /// (default: the browsers' own, FCM, Mozilla, Apple and Windows); anything else is refused
    /// rather than sent to, since an endpoint comes from whoever registers the device.
    #[arg(long, value_delimiter = ',')]
    pub push_web_endpoint_hosts: Vec<String>,
    /// FCM HTTP v1: the service account's JSON key file (Firebase console, Project settings,
    /// Service accounts).
    #[arg(long)]
    pub push_fcm_service_account: Option<PathBuf>,
    /// FCM: where messages go. Default https://fcm.googleapis.com.
    #[arg(long)]
    pub push_fcm_endpoint: Option<String>,
    /// APNs: the token-auth key file (`AuthKey_XXXXXXXXXX.p8`). Needs --push-apns-key-id,
    /// --push-apns-team-id and --push-apns-topic.
    #[arg(long)]
    pub push_apns_key_file: Option<PathBuf>,
    /// APNs with certificate auth instead of a key: a PEM file with the push certificate and its
    /// private key (`openssl pkcs12 -in apns.p12 -out apns.pem -nodes`). Needs --push-apns-topic.
    #[arg(long)]
    pub push_apns_cert_file: Option<PathBuf>,
    /// APNs: the key's id (10 characters).
    #[arg(long)]
    pub push_apns_key_id: Option<String>,
    /// APNs: the Apple developer team id.
    #[arg(long)]
    pub push_apns_team_id: Option<String>,
    /// APNs: the app's bundle id (`apns-topic`).
    #[arg(long)]
    pub push_apns_topic: Option<String>,
    /// APNs: where notifications go. Default https://api.push.apple.com; development builds
    /// need https://api.sandbox.push.apple.com.
    #[arg(long)]
    pub push_apns_endpoint: Option<String>,
    /// Per transport: notifications waiting to be sent before more are refused. Default 10000.
    #[arg(long)]
    pub push_queue_max_jobs: Option<usize>,
    /// Per transport: requests in flight at once. Default 16.
    #[arg(long)]
    pub push_senders: Option<usize>,
    /// Further attempts after a 429, a 5xx or a network error. Default 3.
    #[arg(long)]
    pub push_max_retries: Option<u32>,
}

/// The connection timers; the file sets them as top-level keys of the same names.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct TimerArgs {
    /// Longest the server stays silent to a client: a HEARTBEAT (a WebSocket ping for
    /// `heartbeats=false` clients) goes out at least this often. CONNECTED announces it as
    /// `maxIdleInterval`; clients drop a transport silent for it plus their request timeout.
    /// In ms; default 15000, as Ably.
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..))]
    pub max_idle_interval_ms: Option<u64>,
    /// How long a dropped connection stays resumable (`connectionStateTtl` in CONNECTED); a
    /// resume after it is refused with 80008. In ms; default 120000, as Ably.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1000..))]
    pub connection_state_ttl_ms: Option<u64>,
    /// After an abrupt drop, how long a connection's presence members stay before they leave,
    /// unless it resumes (a client's `remainPresentFor` overrides it). In ms; default 15000, as
    /// Ably.
    #[arg(long)]
    pub presence_grace_ms: Option<u64>,
}

/// Publish limits (`[publish]` in the file; flags and env win). Defaults in
/// `gateway::config::Limits` and the README.
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishArgs {
    /// Most messages in one publish (realtime MESSAGE, REST publish, one batch spec); more:
    /// 40030. Default 1000.
    #[arg(long = "publish-max-messages")]
    pub max_messages: Option<usize>,
    /// Most messages × channels one batch publish (`POST /messages`) makes. Default 10000.
    #[arg(long = "publish-max-batch-messages")]
    pub max_batch_messages: Option<usize>,
    /// Per realtime connection: messages per second (0: no rate limit). Default 1000.
    #[arg(long = "publish-connection-messages-per-sec")]
    pub connection_messages_per_sec: Option<u32>,
    /// Per realtime connection: messages it may publish at once. Default 2000.
    #[arg(long = "publish-connection-burst-messages")]
    pub connection_burst_messages: Option<u32>,
    /// Per realtime connection: bytes (Ably's message size) per second. Default 4194304.
    #[arg(long = "publish-connection-bytes-per-sec")]
    pub connection_bytes_per_sec: Option<u64>,
    /// Per realtime connection: bytes it may publish at once. Default 16777216.
    #[arg(long = "publish-connection-burst-bytes")]
    pub connection_burst_bytes: Option<u64>,
    /// Per key, REST publishes on this node: messages per second (0: no rate limit). Default 5000.
    #[arg(long = "publish-key-messages-per-sec")]
    pub key_messages_per_sec: Option<u32>,
    /// Per key, REST: messages at once. Default 10000.
    #[arg(long = "publish-key-burst-messages")]
    pub key_burst_messages: Option<u32>,
    /// Per key, REST: bytes per second. Default 16777216.
    #[arg(long = "publish-key-bytes-per-sec")]
    pub key_bytes_per_sec: Option<u64>,
    /// Per key, REST: bytes at once. Default 33554432.
    #[arg(long = "publish-key-burst-bytes")]
    pub key_burst_bytes: Option<u64>,
}

/// Bounds on what one socket may hold: request deadlines and connection caps (`[sockets]` in the
/// file; flags and env win).
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SocketArgs {
    /// A request's head (the WebSocket upgrade included) must arrive within this, counted from
    /// the connection's start or the head's first byte; a silent socket and a slowloris client
    /// are closed after it. In ms; default 10000.
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..))]
    pub header_timeout_ms: Option<u64>,
    /// An idle keep-alive connection is closed after this (keep it above your load balancer's
    /// idle timeout, so that it closes first). In ms; default 75000.
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..))]
    pub keep_alive_timeout_ms: Option<u64>,
    /// A request body must arrive completely within this after its head (else 408, closed).
    /// In ms; default 30000.
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..))]
    pub body_timeout_ms: Option<u64>,
    /// Most connections (HTTP and WebSocket) held at once; over it a request gets 503 (50003)
    /// and a WebSocket DISCONNECTED (50003), then the socket closes. Default: the process's file
    /// limit (raised to its hard limit at start) minus 256; 0: no cap.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Most connections held at once from one source address, answered as over
    /// `--max-connections`. Default 0: no cap (behind a proxy or load balancer every client has
    /// its address).
    #[arg(long)]
    pub max_connections_per_ip: Option<usize>,
    /// A WebSocket peer silent this long (no frame, not even a pong to our pings) is dropped.
    /// In ms; default the larger of 45000 and three `--max-idle-interval-ms`; at least two
    /// `--max-idle-interval-ms`.
    #[arg(long)]
    pub peer_idle_timeout_ms: Option<u64>,
}
