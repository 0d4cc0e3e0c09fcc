//! The configured API keys.

use std::sync::Arc;

use protocol::Capability;

/// One API key: `appId.keyId:secret` plus what it may do.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// `appId.keyId`: the public half, named in tokens and token requests.
    pub name: String,
    pub secret: String,
    pub capability: Arc<Capability>,
    /// The sandbox app this key belongs to (`--sandbox` apps are isolated from each other and
    /// from configured keys); `None` for configured keys.
    pub app: Option<Arc<str>>,
}

impl ApiKey {
    /// Parses `appId.keyId:secret` as ably-js accepts it: a secret without `.` or `:`.
    pub fn parse(full_key: &str, capability: Capability) -> Result<ApiKey, String> {
        let (name, secret) = full_key
            .split_once(':')
            .ok_or_else(|| format!("{full_key:?} is not appId.keyId:secret"))?;
        let well_formed = name
            .split_once('.')
            .is_some_and(|(app, key)| !app.is_empty() && !key.is_empty() && !key.contains('.'))
            && !secret.is_empty()
            && !secret.contains([':', '.'])
            && !full_key.contains(char::is_whitespace);
        if !well_formed {
            return Err(format!(
                "key {name:?} is not appId.keyId:secret (secret without '.' or ':')"
            ));
        }
        Ok(ApiKey {
            name: name.to_owned(),
            secret: secret.to_owned(),
            capability: Arc::new(capability),
            app: None,
        })
    }
}
