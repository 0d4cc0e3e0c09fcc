use std::collections::BTreeMap;

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
    let dispatcher = Dispatcher::with_limits(Arc::downgrade(&wiring), transports.clone(), 2, 1000);
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

/// A transport that passes each job on as it takes it.
struct Inbox(tokio::sync::mpsc::UnboundedSender<PushJob>);

impl PushTransport for Inbox {
    fn send(&self, job: PushJob) -> Result<(), PushRefused> {
        let _ = self.0.send(job);
        Ok(())
    }
}

/// A channel of 150 devices read 7 subscribers a page: each active device gets each payload
/// once, though 50 of them are subscribed both directly and through their clientId (on other
/// pages), and the failed one gets nothing. On both stores: Redis pages with SSCAN.
#[tokio::test]
async fn a_channel_larger_than_a_page_notifies_each_device_once() {
    crate::backend::tests::for_each_backend(|subject| async move {
        let name = subject.name;
        let wiring = Arc::new(Wiring::new(subject.backend.clone()));
        let store = wiring.push_store().clone();
        let subscribe = |subscriber: Subscriber| {
            let store = store.clone();
            async move {
                let subscription = Subscription {
                    channel: "push:big".into(),
                    subscriber,
                };
                store.subscribe("", &subscription).await.unwrap();
            }
        };
        for n in 0..150 {
            let mut device = registered(&format!("dev{n:03}"), "ablyChannel");
            device.client_id = Some(format!("user{}", n % 30));
            if n == 42 {
                device.push.state = FAILED.to_owned();
            }
            store.save_device("", &device).await.unwrap();
            subscribe(Subscriber::Device(device.id)).await;
        }
        for n in 0..10 {
            subscribe(Subscriber::Client(format!("user{n}"))).await;
        }
        let (jobs, mut arrived) = tokio::sync::mpsc::unbounded_channel();
        let transports = Arc::new(Transports {
            ably_channel: Arc::new(Inbox(jobs)),
            external: Default::default(),
        });
        let dispatcher = Dispatcher::with_limits(Arc::downgrade(&wiring), transports, 4, 7);
        assert!(dispatcher.queue("", "push:big", vec![json!({"n": 1}), json!({"n": 2})]));
        // Publications go out in order: once the marker has reached all 149, anything the
        // first one sent twice would have come before it.
        assert!(dispatcher.queue("", "push:big", vec![json!({"marker": true})]));
        let mut sent: BTreeMap<(String, u64), usize> = BTreeMap::new();
        let mut markers = 0;
        while markers < 149 {
            let job = tokio::time::timeout(std::time::Duration::from_secs(10), arrived.recv())
                .await
                .unwrap_or_else(|_| panic!("{name}: {markers} markers, then nothing"))
                .unwrap();
            if job.payload == json!({"marker": true}) {
                markers += 1;
            } else {
                *sent
                    .entry((
                        job.device_id.unwrap_or_default(),
                        job.payload["n"].as_u64().unwrap(),
                    ))
                    .or_default() += 1;
            }
        }
        let expected: BTreeMap<(String, u64), usize> = (0..150)
            .filter(|&n| n != 42)
            .flat_map(|n| [1, 2].map(|payload| ((format!("dev{n:03}"), payload), 1)))
            .collect();
        assert_eq!(sent, expected, "{name}");
    })
    .await;
}
