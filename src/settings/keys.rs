//! API keys from `--keys` and the file's `[[keys]]`, or a development key made up for the run.

use std::net::SocketAddr;

use gateway::config::ApiKey;
use protocol::Capability;

use super::file::FileKey;

/// The keys of `--keys` then the file's; with none, a generated full-rights key, also returned
/// on its own so `main` can print it.
pub(super) fn keys(
    flag: Option<&str>,
    file: Vec<FileKey>,
) -> Result<(Vec<ApiKey>, Option<String>), String> {
    let mut keys = Vec::new();
    for entry in split_top_level(flag.unwrap_or_default()) {
        keys.push(parse_key_entry(entry).map_err(|e| format!("--keys / REALTIME_KEYS: {e}"))?);
    }
    for entry in file {
        let capability = parse_capability(entry.capability.as_deref())
            .map_err(|e| format!("--config keys: {e}"))?;
        keys.push(
            ApiKey::parse(&entry.key, capability).map_err(|e| format!("--config keys: {e}"))?,
        );
    }
    if !keys.is_empty() {
        return Ok((keys, None));
    }
    let key = generate_dev_key();
    let parsed =
        ApiKey::parse(&key, Capability::all()).map_err(|e| format!("generated key: {e}"))?;
    Ok((vec![parsed], Some(key)))
}

/// Splits on commas outside braces/brackets, so capability JSON may contain commas.
pub(super) fn split_top_level(list: &str) -> Vec<&str> {
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

pub(super) fn parse_key_entry(entry: &str) -> Result<ApiKey, String> {
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
