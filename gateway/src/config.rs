//! The gateway's settings. `main` fills this from flags and env; tests build it directly.

use crate::auth::supabase::SupabaseConfig;
use crate::auth::ApiKey;
use crate::hub::HubConfig;
use crate::limits::{Limits, Timing};

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// API keys; at least one (`main` generates a development key when none is configured).
    pub keys: Vec<ApiKey>,
    /// Announced to clients as `serverId`; defaults to a random id per process.
    pub server_id: Option<String>,
    /// `redis://` or `rediss://` URL: share the bus with every other process on it.
    pub redis_url: Option<String>,
    /// Accept Supabase access tokens when set.
    pub supabase: Option<SupabaseConfig>,
    pub limits: Limits,
    /// Enables `POST /apps` and `DELETE /apps/{id}`: isolated test apps made on demand, as
    /// Ably's sandbox provides for SDK test suites. Off in production.
    pub sandbox: bool,
    /// History retention, rewind and presence caps.
    pub hub: HubConfig,
    pub timing: Timing,
}
