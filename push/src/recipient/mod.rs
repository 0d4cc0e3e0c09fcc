//! Ably's `push.recipient` JSON, checked once in `send` into the transport's own target.

use serde_json::Value;

use crate::config::decode_base64_any;
use crate::Refused;

/// Where one job goes, already validated.
pub(crate) enum Target {
    Web {
        endpoint: reqwest::Url,
        p256dh: p256::PublicKey,
        auth: [u8; 16],
    },
    Fcm {
        registration_token: String,
    },
    Apns {
        device_token: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Web,
    Fcm,
    Apns,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Web => "web",
            Kind::Fcm => "fcm",
            Kind::Apns => "apns",
        }
    }
}

impl Target {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Target::Web { .. } => Kind::Web,
            Target::Fcm { .. } => Kind::Fcm,
            Target::Apns { .. } => Kind::Apns,
        }
    }

    pub(crate) fn parse(recipient: &Value) -> Result<Target, Refused> {
        let field = |name| text_field(recipient, name);
        match field("transportType")? {
            "web" => {
                let endpoint = web_endpoint(field("targetUrl")?)?;
                let keys = recipient.get("encryptionKey");
                let key = |name: &str| -> Result<Vec<u8>, Refused> {
                    keys.and_then(|k| k.get(name))
                        .and_then(Value::as_str)
                        .and_then(decode_base64_any)
                        .ok_or_else(|| {
                            Refused::Malformed(format!(
                                "recipient.encryptionKey.{name}: missing or not base64"
                            ))
                        })
                };
                let p256dh = p256::PublicKey::from_sec1_bytes(&key("p256dh")?).map_err(|_| {
                    Refused::Malformed("recipient.encryptionKey.p256dh: not a P-256 point".into())
                })?;
                let auth: [u8; 16] = key("auth")?.try_into().map_err(|_| {
                    Refused::Malformed("recipient.encryptionKey.auth: not 16 bytes".into())
                })?;
                Ok(Target::Web {
                    endpoint,
                    p256dh,
                    auth,
                })
            }
            "fcm" | "gcm" => Ok(Target::Fcm {
                registration_token: field("registrationToken")?.to_owned(),
            }),
            "apns" => {
                let device_token = field("deviceToken")?;
                // A path segment of the request: hex, as Apple issues them.
                if !device_token.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(Refused::Malformed(
                        "recipient.deviceToken: expected hex".into(),
                    ));
                }
                Ok(Target::Apns {
                    device_token: device_token.to_owned(),
                })
            }
            other => Err(Refused::Malformed(format!(
                "recipient.transportType {other:?}: expected web, fcm, gcm or apns"
            ))),
        }
    }
}

fn text_field<'a>(recipient: &'a Value, name: &str) -> Result<&'a str, Refused> {
    recipient
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Refused::Malformed(format!("recipient.{name}: missing")))
}

/// ably-js sends the subscription's endpoint base64-encoded (`btoa(endpoint)`); a plain URL
/// (a server registering for a browser) is taken as it is.
fn web_endpoint(target_url: &str) -> Result<reqwest::Url, Refused> {
    let text = if target_url.starts_with("https://") || target_url.starts_with("http://") {
        target_url.to_owned()
    } else {
        decode_base64_any(target_url)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                Refused::Malformed("recipient.targetUrl: neither a URL nor base64 of one".into())
            })?
    };
    match reqwest::Url::parse(&text) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => Ok(url),
        _ => Err(Refused::Malformed(
            "recipient.targetUrl: not an http(s) URL".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
