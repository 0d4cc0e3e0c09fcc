use serde_json::json;

use super::dispatch::Dispatcher;
use super::*;
use crate::backend::push::FAILED;
use crate::wiring::Wiring;

fn registration() -> serde_json::Value {
    json!({
        "id": "d1",
        "platform": "browser",
        "formFactor": "desktop",
        "deviceSecret": "s",
        "push": {"recipient": {"transportType": "web", "targetUrl": "https://x"}},
    })
}

#[test]
fn a_registration_is_checked_as_ably_checks_it() {
    let device = parse_device(&registration(), None).unwrap();
    assert_eq!(device.id, "d1");
    assert_eq!(device.push.state, ACTIVE);
    assert_eq!(device.metadata, json!({}));
    for (field, value) in [
        ("platform", json!("not_a_real_platform")),
        ("formFactor", json!("toaster")),
        ("push", json!({"recipient": {}})),
        ("metadata", json!("x")),
        ("id", json!(7)),
    ] {
        let mut body = registration();
        body[field] = value;
        let error = parse_device(&body, None).unwrap_err();
        assert_eq!((error.code, error.status_code), (40000, 400), "{field}");
    }
    let error = parse_device(&registration(), Some("other")).unwrap_err();
    assert_eq!(error.code, 40000, "the body's id must be the path's");
}

#[test]
fn a_device_token_names_its_app() {
    for scope in ["", "app1"] {
        let token = new_device_token(scope);
        assert!(is_device_token(&token));
        assert_eq!(token_scope(&token).as_deref(), Some(scope));
    }
    assert!(!is_device_token("rt1.abc.def"));
}

#[test]
fn concat_filters_match_either_subscriber() {
    let by_device = Subscription {
        channel: "push:a".into(),
        subscriber: Subscriber::Device("d1".into()),
    };
    let by_client = Subscription {
        channel: "push:a".into(),
        subscriber: Subscriber::Client("c1".into()),
    };
    let mut filter = SubscriptionFilter {
        channel: Some("push:a".into()),
        device_id: Some("d1".into()),
        client_id: Some("c1".into()),
        concat: false,
    };
    assert!(!filter.matches(&by_device) && !filter.matches(&by_client));
    filter.concat = true;
    assert!(filter.matches(&by_device) && filter.matches(&by_client));
    filter.channel = Some("push:b".into());
    assert!(!filter.matches(&by_device));
}

/// A transport that keeps what it is given.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<PushJob>>);

impl PushTransport for Recorder {
    fn send(&self, job: PushJob) -> Result<(), PushRefused> {
        self.0.lock().unwrap().push(job);
        Ok(())
    }
}

fn registered(id: &str, transport_type: &str) -> Device {
    serde_json::from_value(json!({
        "id": id,
        "platform": "android",
        "formFactor": "phone",
        "push": {"recipient": {"transportType": transport_type}},
    }))
    .unwrap()
}

// A current-thread runtime: the dispatcher's task runs only when the test yields, so the queue
// fills deterministically.
#[tokio::test]
async fn a_full_dispatch_queue_drops_what_comes_next_and_the_rest_reach_each_active_device() {
    let wiring = Arc::new(Wiring::new(crate::backend::Backend::of(
        Arc::new(crate::backend::memory::MemoryBackend::default()),
        Arc::new(crate::backend::memory_webhooks::MemoryState::new(Box::new(
            |_: &str| Vec::new(),
        ))),
    )));
    let store = wiring.push_store().clone();
    for device in [registered("ok", "ablyChannel"), registered("web", "web")] {
        store.save_device("", &device).await.unwrap();
    }
    let mut failed = registered("failed", "ablyChannel");
    failed.push.state = FAILED.to_owned();
    store.save_device("", &failed).await.unwrap();
    for id in ["ok", "web", "failed"] {
        let subscription = Subscription {
            channel: "push:a".into(),
            subscriber: Subscriber::Device(id.into()),
        };
        store.subscribe("", &subscription).await.unwrap();
    }
    let ours = Arc::new(Recorder::default());
    let external = Arc::new(Recorder::default());
    let transports = Arc::new(Transports {
        ably_channel: ours.clone(),
        external: Default::default(),
    });
    let dispatcher = Dispatcher::with_capacity(Arc::downgrade(&wiring), transports.clone(), 2);
    assert!(dispatcher.queue("", "push:a", vec![json!({"n": 1})]));
    assert!(dispatcher.queue("", "push:a", vec![json!({"n": 2})]));
    assert!(
        !dispatcher.queue("", "push:a", vec![json!({"n": 3})]),
        "full: dropped"
    );
    until(|| ours.0.lock().unwrap().len() >= 2).await;
    let sent: Vec<(Option<String>, serde_json::Value)> = ours
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|job| (job.device_id.clone(), job.payload.clone()))
        .collect();
    assert_eq!(
        sent,
        [
            (Some("ok".into()), json!({"n": 1})),
            (Some("ok".into()), json!({"n": 2}))
        ],
        "the failed device gets nothing, the web one has no transport yet"
    );
    // Once a transport for the rest is plugged in, `web` recipients reach it.
    let _ = transports.external.set(external.clone());
    assert!(dispatcher.queue("", "push:a", vec![json!({"n": 4})]));
    until(|| !external.0.lock().unwrap().is_empty()).await;
    assert_eq!(
        external.0.lock().unwrap()[0].device_id.as_deref(),
        Some("web")
    );
}

/// Lets the dispatcher's tasks run until `done` holds (bounded: they need a few turns, not time).
async fn until(done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the dispatcher never got there");
}
