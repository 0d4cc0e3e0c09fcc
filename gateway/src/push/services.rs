//! The push services (Web Push, FCM, APNs: the `push` crate) behind `PushTransport`. A device a
//! service reports gone is marked failed in its registration and not sent to again.

use protocol::{ErrorCode, ErrorInfo};

use super::{PushJob, PushRefused, PushTransport};

pub struct Services(::push::Push);

impl Services {
    /// Starts the configured services' queues and senders; `gone(app, device, reason)` is
    /// called for a registration a service says no longer exists.
    pub fn start(
        config: ::push::Config,
        gone: impl Fn(String, String, ErrorInfo) + Send + Sync + 'static,
    ) -> Services {
        let on_gone = move |report: ::push::Gone| {
            let Some((app, device)) = report.device_id.as_deref().and_then(untag) else {
                return;
            };
            let reason = ErrorCode::BadRequest.info(format!(
                "the push service no longer knows this device: {}",
                report.reason
            ));
            gone(app, device, reason);
        };
        Services(::push::Push::start(config, std::sync::Arc::new(on_gone)))
    }

    /// The VAPID public key browsers subscribe with, if Web Push is configured.
    pub fn vapid_public_key(&self) -> Option<&str> {
        self.0.vapid_public_key()
    }

    pub fn metrics(&self) -> ::push::Metrics {
        self.0.metrics()
    }
}

impl PushTransport for Services {
    fn send(&self, job: PushJob) -> Result<(), PushRefused> {
        self.0.send(job_of(job)).map_err(refused)
    }

    fn send_waiting(
        &self,
        job: PushJob,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PushRefused>> + Send + '_>>
    {
        Box::pin(async move { self.0.send_waiting(job_of(job)).await.map_err(refused) })
    }

    fn accepts(&self, recipient: &serde_json::Value) -> Result<(), PushRefused> {
        match self.0.check(recipient) {
            // Registered all the same; it may be configured later.
            Err(::push::Refused::NotConfigured(_)) => Ok(()),
            other => other.map_err(refused),
        }
    }
}

fn job_of(job: PushJob) -> ::push::Job {
    ::push::Job {
        device_id: job.device_id.map(|device| tag(&job.app, &device)),
        recipient: job.recipient,
        payload: job.payload,
    }
}

fn refused(refused: ::push::Refused) -> PushRefused {
    match refused {
        ::push::Refused::QueueFull(_) => PushRefused::Full,
        ::push::Refused::NotConfigured(kind) => PushRefused::Unsupported(kind.to_owned()),
        ::push::Refused::Malformed(why) => PushRefused::InvalidRecipient(why),
    }
}

/// The push crate hands a job's device id back as it got it: the app rides along with it.
fn tag(app: &str, device: &str) -> String {
    serde_json::json!([app, device]).to_string()
}

fn untag(tagged: &str) -> Option<(String, String)> {
    serde_json::from_str(tagged).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_device_and_its_app_come_back_as_they_went() {
        let tagged = super::tag("app-1", "dev\n\"x\"");
        assert_eq!(
            super::untag(&tagged),
            Some(("app-1".to_owned(), "dev\n\"x\"".to_owned()))
        );
        assert_eq!(super::untag("dev"), None);
    }
}
