//! `--push-*`: the transports' keys read and checked at start into a `push::Config` (each
//! transport off unless all of its settings are given), and `realtime push generate-vapid-keys`.

use std::process::ExitCode;

use super::cli::{PushArgs, PushTool};
use super::{http_host, positive};

pub(super) fn push_config(args: &PushArgs) -> Result<push::Config, String> {
    let mut config = push::Config {
        web_push: web_push(args)?,
        fcm: fcm(args)?,
        apns: apns(args)?,
        ..push::Config::default()
    };
    let delivery = &mut config.delivery;
    if let Some(n) = args.push_queue_max_jobs {
        delivery.queue_max_jobs =
            positive(n, "--push-queue-max-jobs / REALTIME_PUSH_QUEUE_MAX_JOBS")?;
    }
    if let Some(n) = args.push_senders {
        delivery.senders = positive(n, "--push-senders / REALTIME_PUSH_SENDERS")?;
    }
    if let Some(n) = args.push_max_retries {
        delivery.max_retries = n;
    }
    Ok(config)
}

/// `--push-x` and its variable, for messages.
fn named(flag: &str) -> String {
    format!(
        "--{flag} / REALTIME_{}",
        flag.to_uppercase().replace('-', "_")
    )
}

/// Every one of `settings` or none of them; `Some` with their values when all are given.
fn all_or_none<'a, const N: usize>(
    settings: [(&str, Option<&'a str>); N],
) -> Result<Option<[&'a str; N]>, String> {
    let given: Vec<&str> = settings
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(f, _)| *f)
        .collect();
    if given.is_empty() {
        return Ok(None);
    }
    if let Some((missing, _)) = settings.iter().find(|(_, v)| v.is_none()) {
        return Err(format!(
            "{}: needed with --{}",
            named(missing),
            given.join(", --")
        ));
    }
    Ok(Some(settings.map(|(_, v)| v.unwrap_or_default())))
}

fn web_push(args: &PushArgs) -> Result<Option<push::WebPushConfig>, String> {
    let Some([public, private, subject]) = all_or_none([
        (
            "push-vapid-public-key",
            args.push_vapid_public_key.as_deref(),
        ),
        (
            "push-vapid-private-key",
            args.push_vapid_private_key.as_deref(),
        ),
        ("push-vapid-subject", args.push_vapid_subject.as_deref()),
    ])?
    else {
        return Ok(None);
    };
    let keys = push::VapidKeys::from_base64url(private, Some(public))
        .map_err(|e| format!("{}: {e}", named("push-vapid-private-key")))?;
    let mut web = push::WebPushConfig::new(keys, subject)
        .map_err(|e| format!("{}: {e}", named("push-vapid-subject")))?;
    let hosts: Vec<String> = args
        .push_web_endpoint_hosts
        .iter()
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .collect();
    if !hosts.is_empty() {
        web.endpoint_hosts = hosts;
    }
    Ok(Some(web))
}

fn fcm(args: &PushArgs) -> Result<Option<push::FcmConfig>, String> {
    let Some(path) = &args.push_fcm_service_account else {
        if args.push_fcm_endpoint.is_some() {
            return Err(format!(
                "{}: needed with --push-fcm-endpoint",
                named("push-fcm-service-account")
            ));
        }
        return Ok(None);
    };
    let setting = named("push-fcm-service-account");
    let json =
        std::fs::read_to_string(path).map_err(|e| format!("{setting} {}: {e}", path.display()))?;
    let account = push::ServiceAccount::from_json(&json)
        .map_err(|e| format!("{setting} {}: {e}", path.display()))?;
    let mut config = push::FcmConfig::new(account);
    if let Some(endpoint) = &args.push_fcm_endpoint {
        config.endpoint = endpoint_url(endpoint, "push-fcm-endpoint")?;
    }
    Ok(Some(config))
}

fn apns(args: &PushArgs) -> Result<Option<push::ApnsConfig>, String> {
    let mut config = match &args.push_apns_cert_file {
        Some(cert_file) => Some(apns_with_certificate(args, cert_file)?),
        None => apns_with_token(args)?,
    };
    match (&mut config, &args.push_apns_endpoint) {
        (Some(config), Some(endpoint)) => {
            config.endpoint = endpoint_url(endpoint, "push-apns-endpoint")?;
        }
        (None, Some(_)) => {
            return Err(format!(
                "{}: needed with --push-apns-endpoint",
                named("push-apns-key-file")
            ))
        }
        _ => {}
    }
    Ok(config)
}

fn apns_with_token(args: &PushArgs) -> Result<Option<push::ApnsConfig>, String> {
    let key_file = args
        .push_apns_key_file
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let Some([path, key_id, team_id, topic]) = all_or_none([
        ("push-apns-key-file", key_file.as_deref()),
        ("push-apns-key-id", args.push_apns_key_id.as_deref()),
        ("push-apns-team-id", args.push_apns_team_id.as_deref()),
        ("push-apns-topic", args.push_apns_topic.as_deref()),
    ])?
    else {
        return Ok(None);
    };
    let setting = named("push-apns-key-file");
    let p8 = std::fs::read_to_string(path).map_err(|e| format!("{setting} {path}: {e}"))?;
    push::ApnsConfig::new(&p8, key_id, team_id, topic)
        .map(Some)
        .map_err(|e| format!("{setting} {path}: {e}"))
}

fn apns_with_certificate(
    args: &PushArgs,
    cert_file: &std::path::Path,
) -> Result<push::ApnsConfig, String> {
    let setting = named("push-apns-cert-file");
    if args.push_apns_key_file.is_some()
        || args.push_apns_key_id.is_some()
        || args.push_apns_team_id.is_some()
    {
        return Err(format!(
            "{setting}: certificate auth or token auth (--push-apns-key-file, --push-apns-key-id, --push-apns-team-id), not both"
        ));
    }
    let topic = args.push_apns_topic.as_deref().ok_or_else(|| {
        format!(
            "{}: needed with --push-apns-cert-file",
            named("push-apns-topic")
        )
    })?;
    let pem =
        std::fs::read(cert_file).map_err(|e| format!("{setting} {}: {e}", cert_file.display()))?;
    push::ApnsConfig::with_certificate(&pem, topic)
        .map_err(|e| format!("{setting} {}: {e}", cert_file.display()))
}

fn endpoint_url(url: &str, flag: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    match http_host(url) {
        Some(host) if !host.contains('/') => Ok(url.to_owned()),
        _ => Err(format!(
            "{} {url:?}: expected an origin like https://host[:port]",
            named(flag)
        )),
    }
}

/// `realtime push …`: tools that need no settings.
pub(crate) fn push_tool(tool: PushTool) -> ExitCode {
    match tool {
        PushTool::GenerateVapidKeys => {
            let keys = push::VapidKeys::generate();
            println!(
                "=======================================\n\n\
                 Public Key:\n{public}\n\n\
                 Private Key:\n{private}\n\n\
                 =======================================\n\n\
                 Pass them to the server (keep the private key secret):\n  \
                 realtime serve --push-vapid-public-key {public} \\\n    \
                 --push-vapid-private-key {private} \\\n    \
                 --push-vapid-subject mailto:ops@example.com\n\
                 or as REALTIME_PUSH_VAPID_PUBLIC_KEY, REALTIME_PUSH_VAPID_PRIVATE_KEY and \
                 REALTIME_PUSH_VAPID_SUBJECT.",
                public = keys.public_key_base64url(),
                private = keys.private_key_base64url(),
            );
            ExitCode::SUCCESS
        }
    }
}
