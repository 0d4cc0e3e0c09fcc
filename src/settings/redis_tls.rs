//! `--redis-ca-file`, `--redis-client-cert`, `--redis-client-key`: the PEM files read now, so a
//! missing or unreadable one stops the start naming it, and checked against `--redis`.

use std::path::Path;

use super::ServeArgs;

pub(super) fn redis_tls(
    args: &ServeArgs,
    target: Option<&gateway::RedisTarget>,
) -> Result<Option<gateway::RedisTls>, String> {
    let ca_pem = args
        .redis_ca_file
        .as_deref()
        .map(|path| {
            let setting = "--redis-ca-file / REALTIME_REDIS_CA_FILE";
            let pem = read(path, setting)?;
            // rustls reads a file without a PEM block as no certificate at all: it would trust
            // nothing and fail only at connect.
            const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
            if pem.windows(BEGIN.len()).any(|window| window == BEGIN) {
                Ok(pem)
            } else {
                Err(format!(
                    "{setting} {}: no PEM certificate in it",
                    path.display()
                ))
            }
        })
        .transpose()?;
    let client = match (&args.redis_client_cert, &args.redis_client_key) {
        (Some(cert), Some(key)) => Some((
            read(cert, "--redis-client-cert / REALTIME_REDIS_CLIENT_CERT")?,
            read(key, "--redis-client-key / REALTIME_REDIS_CLIENT_KEY")?,
        )),
        _ => None,
    };
    if ca_pem.is_none() && client.is_none() {
        return Ok(None);
    }
    let tls = gateway::RedisTls { ca_pem, client };
    let Some(target) = target else {
        return Err("--redis-ca-file / --redis-client-cert: need --redis".into());
    };
    tls.check(target)
        .map_err(|e| format!("--redis-ca-file / --redis-client-cert: {e}"))?;
    Ok(Some(tls))
}

fn read(path: &Path, setting: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{setting} {}: {e}", path.display()))
}
