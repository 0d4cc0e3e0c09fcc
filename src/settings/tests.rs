use super::file::FileConfig;
use super::*;

#[test]
fn splits_keys_outside_json() {
    let list = r#"a.b:c, a.d:e={"x:*":["publish","subscribe"],"y":["*"]},a.f:g"#;
    assert_eq!(
        keys::split_top_level(list),
        vec![
            "a.b:c",
            r#"a.d:e={"x:*":["publish","subscribe"],"y":["*"]}"#,
            "a.f:g"
        ]
    );
    let key = keys::parse_key_entry(keys::split_top_level(list)[1]).unwrap();
    assert_eq!(key.name, "a.d");
}

/// `realtime` with these flags, as clap parses them (env fallbacks and defaults included).
fn parse(flags: &[&str]) -> ServeArgs {
    let argv = std::iter::once("realtime").chain(flags.iter().copied());
    Cli::try_parse_from(argv).expect("flags parse").serve
}

/// `--listen 127.0.0.1:0 --keys a.b:c` and `extra`.
fn flags(extra: &[&str]) -> ServeArgs {
    let mut all = vec!["--listen", "127.0.0.1:0", "--keys", "a.b:c"];
    all.extend_from_slice(extra);
    parse(&all)
}

/// The settings with `toml` as the config file.
fn with_file(toml: &str) -> Result<Settings, String> {
    let file: FileConfig = toml::from_str(toml).map_err(|e| e.to_string())?;
    resolve_with(flags(&[]), file)
}

/// Why `with_file(toml)` is refused.
fn refused_file(toml: &str) -> String {
    with_file(toml).err().expect("refused")
}

/// `with_file(toml)` is refused, naming `setting`.
fn assert_file_refused(toml: &str, setting: &str) {
    let error = refused_file(toml);
    assert!(error.contains(setting), "{error}");
}

/// These flags are refused, naming `setting`.
fn assert_refused(args: ServeArgs, setting: &str) {
    let error = resolve(args).err().expect("refused");
    assert!(error.contains(setting), "{error}");
}

#[test]
fn outbound_queue_bounds_come_from_flags_over_the_file() {
    let defaults = resolve(flags(&[])).unwrap();
    assert_eq!(
        defaults.gateway.limits.outbound_queue,
        gateway::config::OutboundQueue::default()
    );
    let settings = with_file(
        "outbound_queue_bytes = 1048576
outbound_queue_age_ms = 2500
",
    )
    .unwrap();
    let queue = settings.gateway.limits.outbound_queue;
    assert_eq!(queue.bytes, 1 << 20);
    assert_eq!(queue.age, std::time::Duration::from_millis(2500));
    let flagged = resolve(flags(&["--outbound-queue-age-ms", "700"])).unwrap();
    assert_eq!(
        flagged.gateway.limits.outbound_queue.age,
        std::time::Duration::from_millis(700)
    );
    assert_file_refused("outbound_queue_bytes = 10", "outbound-queue-bytes");
}

#[test]
fn publish_limits_come_from_flags_over_the_file() {
    let settings = with_file(
        r#"
[publish]
max_messages = 50
connection_messages_per_sec = 20
connection_burst_messages = 60
key_messages_per_sec = 0
"#,
    )
    .unwrap();
    let limits = &settings.gateway.limits;
    assert_eq!(limits.max_messages_per_publish, 50);
    assert_eq!(limits.connection_publish_rate.messages_per_sec, 20);
    assert_eq!(limits.connection_publish_rate.burst_messages, 60);
    assert!(limits.key_publish_rate.is_unlimited());
    let flagged = resolve(flags(&["--publish-connection-messages-per-sec", "7"])).unwrap();
    assert_eq!(
        flagged
            .gateway
            .limits
            .connection_publish_rate
            .messages_per_sec,
        7
    );
    // More than one Redis stream entry can take from Lua.
    assert_file_refused(
        r#"
[publish]
max_messages = 3001
max_batch_messages = 5000
connection_burst_messages = 5000
key_burst_messages = 5000
"#,
        "at most 3000",
    );
    // A burst smaller than the largest publish could never be met.
    assert_file_refused(
        r#"
[publish]
connection_burst_messages = 10
"#,
        "burst-messages",
    );
}

#[test]
fn history_and_presence_limits_come_from_the_file() {
    let settings = with_file(
        r#"
[history]
max_messages = 100
max_age_secs = 60
max_rewind = 10

[[history.namespace]]
name = "user"
max_age_secs = 86400

[presence]
max_members = 5000
"#,
    )
    .unwrap();
    let hub = settings.gateway.hub;
    assert_eq!(hub.retention.max_messages, 100);
    assert_eq!(hub.retention.max_age.as_secs(), 60);
    assert_eq!(hub.max_rewind, 10);
    assert_eq!(hub.max_presence_members, 5000);
    let (name, user) = &hub.namespace_rules[0];
    assert_eq!(name, "user");
    assert_eq!(user.retention.max_age.as_secs(), 86400);
    assert_eq!(
        user.retention.max_messages, 100,
        "unset fields inherit the channel default"
    );
    assert!(!user.mutable_messages);

    assert_file_refused(
        r#"
[history]
max_messages = 0
"#,
        "history.max_messages",
    );
    assert_file_refused(
        r#"
[[history.namespace]]
name = "a:b"
"#,
        "history.namespace",
    );
}

#[test]
fn a_namespace_can_batch_or_conflate_but_not_both() {
    let settings = with_file(
        r#"
[[history.namespace]]
name = "live"
batching_interval_ms = 100

[[history.namespace]]
name = "prices"
conflation_interval_ms = 500
conflation_key = "headers.market"

[[history.namespace]]
name = "scores"
conflation_interval_ms = 250
conflation_key = "name"
"#,
    )
    .unwrap();
    let rules = &settings.gateway.hub.namespace_rules;
    let batching = |i: usize| rules[i].1.batching.clone().unwrap();
    assert_eq!(batching(0).interval.as_millis(), 100);
    assert_eq!(batching(0).conflate, None);
    assert_eq!(
        batching(1).conflate,
        Some(gateway::config::ConflationKey::Header("market".into()))
    );
    assert_eq!(batching(1).interval.as_millis(), 500);
    assert_eq!(
        batching(2).conflate,
        Some(gateway::config::ConflationKey::Name)
    );
    let summary = settings.summary();
    assert!(summary.contains("namespace live: "), "{summary}");
    assert!(summary.contains("batched every 100 ms"), "{summary}");
    assert!(
        summary.contains("conflated by headers.market every 500 ms"),
        "{summary}"
    );

    for (toml, why) in [
        (
            "batching_interval_ms = 100\nconflation_interval_ms = 100\nconflation_key = \"name\"",
            "exclusive",
        ),
        ("conflation_interval_ms = 100", "needs both"),
        (
            "conflation_interval_ms = 100\nconflation_key = \"extras\"",
            "headers.<header>",
        ),
        ("batching_interval_ms = 0", "at least 1"),
    ] {
        assert_file_refused(
            &format!("[[history.namespace]]\nname = \"x\"\n{toml}\n"),
            why,
        );
    }
}

#[test]
fn a_namespace_can_turn_on_mutable_messages() {
    let settings = with_file(
        r#"
[history]
max_messages = 100
max_age_secs = 60

[[history.namespace]]
name = "chat"
mutable_messages = true

[[history.namespace]]
name = "dm"
mutable_messages = true
max_age_secs = 3600

[[history.namespace]]
name = "user"
"#,
    )
    .unwrap();
    let rules = &settings.gateway.hub.namespace_rules;
    let (name, chat) = &rules[0];
    assert_eq!(name, "chat");
    assert!(chat.mutable_messages);
    assert_eq!(chat.retention.max_messages, 10_000, "persisted, as on Ably");
    assert_eq!(chat.retention.max_age.as_secs(), 24 * 60 * 60);
    let (_, dm) = &rules[1];
    assert!(dm.mutable_messages);
    assert_eq!(dm.retention.max_age.as_secs(), 3600, "a given limit wins");
    assert_eq!(dm.retention.max_messages, 10_000);
    let (_, user) = &rules[2];
    assert!(!user.mutable_messages, "off unless turned on");
    assert_eq!(user.retention.max_messages, 100);

    assert_file_refused(
        r#"
[[history.namespace]]
name = "chat"
mutable_messages = "yes"
"#,
        "mutable_messages",
    );

    let summary = settings.summary();
    assert!(
        summary.contains("namespace user: 100 messages, 60 s\n"),
        "{summary}"
    );
    assert!(
        summary.contains("namespace chat: 10000 messages, 86400 s, mutable messages"),
        "{summary}"
    );
}

#[test]
fn a_namespace_can_turn_on_push() {
    let settings = with_file(
        r#"
[[history.namespace]]
name = "alerts"
push_enabled = true

[[history.namespace]]
name = "chat"
"#,
    )
    .unwrap();
    let rules = &settings.gateway.hub.namespace_rules;
    assert!(rules[0].1.push_enabled);
    assert!(!rules[1].1.push_enabled, "off unless turned on");
    assert!(
        settings.summary().contains("namespace alerts: ")
            && settings.summary().contains("push enabled"),
        "{}",
        settings.summary()
    );
    assert_file_refused(
        r#"
[[history.namespace]]
name = "alerts"
push_enabled = 1
"#,
        "push_enabled",
    );
}

#[test]
fn event_types_come_from_the_file() {
    let settings = with_file(
        r#"
[events]
builtin = false

[[events.types]]
name = "order.shipped"
required = { order_id = "id", carrier = ["ups", "dhl"] }
optional = { eta = "integer" }
channels = ["order:{order_id}"]
"#,
    )
    .unwrap();
    let types = settings.gateway.events.types;
    assert_eq!(types.len(), 1);
    assert_eq!(types[0].channels, ["order:{order_id}"]);
    let defaults = with_file("").unwrap();
    assert!(defaults.gateway.events.get("call.ringing").is_some());
    let error = refused_file(
        r#"
[[events.types]]
name = "x"
channels = ["x:{missing}"]
"#,
    );
    assert!(
        error.contains("events.types") && error.contains("{missing}"),
        "{error}"
    );
}

#[test]
fn bad_settings_name_the_setting() {
    assert_refused(parse(&["--listen", "nope", "--keys", "a.b:c"]), "--listen");
    assert_refused(
        parse(&["--listen", "127.0.0.1:0", "--keys", "not-a-key"]),
        "--keys",
    );
    assert_refused(
        parse(&["--listen", "127.0.0.1:0", "--keys", "a.b:c={bad json"]),
        "--keys",
    );
}

#[test]
fn supabase_revoke_keys_name_configured_keys() {
    let allowed = |list: &[&str]| {
        let names = list.join(",");
        let mut all = vec!["--listen", "127.0.0.1:0", "--keys", "a.b:c,a.d:e"];
        if !list.is_empty() {
            all.extend(["--supabase-revoke-keys", &names]);
        }
        resolve(parse(&all)).map(|settings| settings.gateway.supabase_revoke_keys)
    };
    assert_eq!(allowed(&[]).unwrap(), Vec::<String>::new());
    assert_eq!(allowed(&["a.d"]).unwrap(), vec!["a.d".to_owned()]);
    let error = allowed(&["a.x"]).err().unwrap();
    assert!(error.contains("--supabase-revoke-keys"), "{error}");
}

#[test]
fn a_redis_url_selects_one_server_or_a_cluster() {
    let redis =
        |url: &str| resolve(flags(&["--redis", url])).map(|settings| settings.gateway.redis);
    assert_eq!(
        redis("redis://127.0.0.1:6380").unwrap(),
        Some(gateway::RedisTarget::Node("redis://127.0.0.1:6380".into()))
    );
    assert_eq!(
        redis("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001").unwrap(),
        Some(gateway::RedisTarget::Cluster(vec![
            "redis://:pw@10.0.0.1:7000".into(),
            "redis://:pw@10.0.0.2:7001".into()
        ]))
    );
    assert_eq!(
        redis("rediss+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001").unwrap(),
        Some(gateway::RedisTarget::Cluster(vec![
            "rediss://:pw@10.0.0.1:7000".into(),
            "rediss://:pw@10.0.0.2:7001".into()
        ])),
        "TLS to every seed"
    );
    assert_eq!(
        redis("rediss://:pw@10.0.0.1:6380").unwrap(),
        Some(gateway::RedisTarget::Node(
            "rediss://:pw@10.0.0.1:6380".into()
        ))
    );
    for bad in [
        "http://x:1",
        "redis+cluster://",
        "redis+cluster://host",
        "redis+cluster://a:1,:2",
        "redis+cluster://a:99999",
        "rediss+cluster://a",
        "rediss+cluster://0.0.0.0:7000",
    ] {
        let error = redis(bad).err().unwrap();
        assert!(error.contains("--redis"), "{bad}: {error}");
    }
}

#[test]
fn a_sentinel_url_names_the_sentinels_and_the_master() {
    let redis =
        |url: &str| resolve(flags(&["--redis", url])).map(|settings| settings.gateway.redis);
    assert_eq!(
        redis("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380/m?db=2&sentinel_password=sp")
            .unwrap(),
        Some(gateway::RedisTarget::Sentinel(gateway::SentinelTarget {
            sentinels: vec![
                "redis://:sp@10.0.0.1:26379".into(),
                "redis://:sp@10.0.0.2:26380".into()
            ],
            master: "m".into(),
            credentials: ":pw@".into(),
            db: 2,
            tls: false,
        }))
    );
    let Some(gateway::RedisTarget::Sentinel(tls)) =
        redis("rediss+sentinel://h:26379/mymaster").unwrap()
    else {
        panic!("a sentinel target");
    };
    assert_eq!(tls.sentinels, vec!["rediss://h:26379".to_owned()]);
    assert!(tls.tls);
    for bad in [
        "redis+sentinel://h:26379",
        "redis+sentinel://h:26379/",
        "redis+sentinel://h/m",
        "redis+sentinel://0.0.0.0:26379/m",
        "redis+sentinel://h:1/m?db=x",
        "redis+sentinel://h:1/m?what=1",
    ] {
        let error = redis(bad).err().unwrap();
        assert!(error.contains("--redis"), "{bad}: {error}");
    }
}

#[test]
fn min_replicas_need_one_redis_or_sentinel() {
    let settings = resolve(flags(&[
        "--redis",
        "redis://127.0.0.1:6380",
        "--redis-min-replicas",
        "1",
        "--redis-min-replicas-timeout",
        "300",
    ]))
    .unwrap();
    assert_eq!(
        settings.gateway.redis_min_replicas,
        gateway::MinReplicas {
            count: 1,
            timeout: std::time::Duration::from_millis(300)
        }
    );
    for without in [
        vec!["--redis-min-replicas", "1"],
        vec![
            "--redis",
            "redis+cluster://h:1",
            "--redis-min-replicas",
            "1",
        ],
    ] {
        let error = resolve(flags(&without)).err().unwrap();
        assert!(error.contains("--redis-min-replicas"), "{error}");
    }
}

#[test]
fn redis_certificates_are_read_at_start_for_a_tls_url() {
    let dir = std::env::temp_dir().join(format!("realtime-settings-tls-{}", std::process::id()));
    let made = test_support::Certificates::make(&dir);
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (ca, cert, key) = (
        path(&made.ca),
        path(&made.client_cert),
        path(&made.client_key),
    );
    let tls = |extra: &[&str]| resolve(flags(extra)).map(|settings| settings.gateway.redis_tls);

    let read = tls(&["--redis", "rediss://127.0.0.1:6380", "--redis-ca-file", &ca])
        .unwrap()
        .expect("certificates");
    assert_eq!(read.ca_pem, Some(std::fs::read(&made.ca).unwrap()));
    assert!(read.client.is_none());
    let read = tls(&[
        "--redis",
        "rediss+cluster://127.0.0.1:7000",
        "--redis-ca-file",
        &ca,
        "--redis-client-cert",
        &cert,
        "--redis-client-key",
        &key,
    ])
    .unwrap()
    .expect("certificates");
    assert_eq!(
        read.client,
        Some((
            std::fs::read(&made.client_cert).unwrap(),
            std::fs::read(&made.client_key).unwrap()
        ))
    );
    assert!(tls(&["--redis", "rediss://127.0.0.1:6380"])
        .unwrap()
        .is_none());
    let read = tls(&[
        "--redis",
        "rediss+sentinel://127.0.0.1:26379/m",
        "--redis-ca-file",
        &ca,
    ])
    .unwrap()
    .expect("certificates for the sentinels and the data nodes");
    assert_eq!(read.ca_pem, Some(std::fs::read(&made.ca).unwrap()));

    let missing = dir.join("missing.pem");
    let refused: [(&[&str], &str); 6] = [
        (
            &[
                "--redis",
                "rediss://h:1",
                "--redis-ca-file",
                &path(&missing),
            ],
            "missing.pem",
        ),
        // A key is no certificate.
        (
            &["--redis", "rediss://h:1", "--redis-ca-file", &key],
            "no PEM certificate",
        ),
        (
            &["--redis", "redis://h:1", "--redis-ca-file", &ca],
            "rediss://",
        ),
        (
            &["--redis", "redis+cluster://h:1", "--redis-ca-file", &ca],
            "rediss+cluster://",
        ),
        (
            &["--redis", "redis+sentinel://h:1/m", "--redis-ca-file", &ca],
            "rediss+sentinel://",
        ),
        (&["--redis-ca-file", &ca], "need --redis"),
    ];
    for (extra, said) in refused {
        let error = tls(extra).err().unwrap();
        assert!(
            error.contains("--redis-ca-file") && error.contains(said),
            "{extra:?}: {error}"
        );
    }
    // A certificate where the key belongs.
    let error = tls(&[
        "--redis",
        "rediss://h:1",
        "--redis-client-cert",
        &cert,
        "--redis-client-key",
        &cert,
    ])
    .err()
    .unwrap();
    assert!(error.contains("--redis-client-cert"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn webhooks_come_from_the_file() {
    let settings = with_file(
        r#"
webhook_debounce_ms = 1500
[[webhooks]]
url = "https://api.example.com/hooks/realtime"
channels = "call:*"
events = ["channel.lifecycle", "channel.presence"]
secret = "whsec_x"
batch_max_items = 10
"#,
    )
    .unwrap();
    let webhooks = &settings.gateway.webhooks;
    assert_eq!(webhooks.debounce.as_millis(), 1500);
    assert_eq!(webhooks.rules.len(), 1);
    assert_eq!(webhooks.rules[0].batch_max_items, 10);
    assert_eq!(webhooks.rules[0].id.len(), 12);
    for (name, bad) in [
        ("event", r#"events = ["channel.nope"]"#),
        ("url", r#"url = "ftp://x""#),
        ("secret", r#"secret = """#),
    ] {
        let mut rule = vec![
            ("url", r#"url = "http://127.0.0.1:1/h""#),
            ("channels", r#"channels = "*""#),
            ("event", r#"events = ["channel.message"]"#),
            ("secret", r#"secret = "s""#),
        ];
        for entry in &mut rule {
            if entry.0 == name {
                entry.1 = bad;
            }
        }
        let text: Vec<&str> = rule.iter().map(|(_, line)| *line).collect();
        let error = with_file(&format!("[[webhooks]]\n{}\n", text.join("\n")))
            .err()
            .unwrap();
        assert!(error.contains("webhooks[0]"), "{name}: {error}");
    }
}

#[test]
fn moderation_rules_come_from_the_file() {
    let settings = with_file(
        r#"
[[moderation]]
channels = "stream:*"
url = "https://user:pw@mod.example.com/check?token=t"

[[moderation]]
channels = "dm:*"
url = "http://127.0.0.1:9/m"
timeout_ms = 5000
retries = 2
fail = "open"
secret = "s"
ephemeral = true
max_in_flight = 8
"#,
    )
    .unwrap();
    let rules = &settings.gateway.moderation;
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].timeout.as_millis(), 1000);
    assert_eq!(rules[0].retries, 0);
    assert_eq!(rules[0].fail, gateway::config::FailMode::Closed);
    assert!(rules[0].secret.is_none() && !rules[0].ephemeral);
    assert_eq!(rules[1].timeout.as_millis(), 5000);
    assert_eq!(rules[1].retries, 2);
    assert_eq!(rules[1].fail, gateway::config::FailMode::Open);
    assert_eq!(rules[1].secret.as_deref(), Some("s"));
    assert!(rules[1].ephemeral);
    assert_eq!(rules[1].max_in_flight, 8);
    let summary = settings.summary();
    assert!(
        summary.contains(
            "moderation: stream:* -> mod.example.com (1000 ms, 0 retries, fail closed, 256 in flight)"
        ),
        "{summary}"
    );
    assert!(
        !summary.contains("pw") && !summary.contains("token"),
        "{summary}"
    );
    for (bad, says) in [
        (r#"url = "ftp://x""#, "url"),
        (
            r#"url = "http://x"
channels = "room-*""#,
            "whole",
        ),
        (
            r#"url = "http://x"
timeout_ms = 5001"#,
            "timeout_ms 5001: at most 5000",
        ),
        (
            r#"url = "http://x"
timeout_ms = 0"#,
            "timeout_ms",
        ),
        (
            r#"url = "http://x"
fail = "maybe""#,
            "fail",
        ),
        (
            r#"url = "http://x"
max_in_flight = 0"#,
            "max_in_flight",
        ),
    ] {
        let channels = if bad.contains("channels") {
            ""
        } else {
            "channels = \"*\"\n"
        };
        let error = with_file(&format!("[[moderation]]\n{channels}{bad}\n"))
            .err()
            .unwrap();
        assert!(
            error.contains("moderation[0]") && error.contains(says),
            "{bad}: {error}"
        );
    }
}

#[test]
fn socket_bounds_come_from_the_file_and_flags_win() {
    let settings = with_file(
        r#"
[sockets]
header_timeout_ms = 5000
keep_alive_timeout_ms = 90000
body_timeout_ms = 7000
max_connections = 7
max_connections_per_ip = 2
peer_idle_timeout_ms = 60000
"#,
    )
    .unwrap();
    let sockets = &settings.gateway.sockets;
    assert_eq!(sockets.header_timeout.as_millis(), 5000);
    assert_eq!(sockets.keep_alive_timeout.as_secs(), 90);
    assert_eq!(sockets.body_timeout.as_millis(), 7000);
    assert_eq!(sockets.max_connections, 7);
    assert_eq!(sockets.max_connections_per_ip, 2);
    assert_eq!(settings.gateway.timing.peer_idle_timeout.as_secs(), 60);

    assert_refused(
        flags(&["--max-connections", "0", "--peer-idle-timeout-ms", "1000"]),
        "peer_idle_timeout_ms",
    );
    let settings = resolve(flags(&["--max-connections", "0"])).unwrap();
    assert_eq!(settings.gateway.sockets.max_connections, 0, "0: no cap");
    assert_eq!(settings.gateway.sockets.header_timeout.as_secs(), 10);
    assert_eq!(settings.gateway.sockets.keep_alive_timeout.as_secs(), 75);
}

#[test]
fn push_transports_come_from_flags_and_are_checked_at_start() {
    let off = resolve(flags(&[])).unwrap().push;
    assert!(off.web_push.is_none() && off.fcm.is_none() && off.apns.is_none());

    let keys = push::VapidKeys::generate();
    let (public, private) = (keys.public_key_base64url(), keys.private_key_base64url());
    let web = resolve(flags(&[
        "--push-vapid-public-key",
        &public,
        "--push-vapid-private-key",
        &private,
        "--push-vapid-subject",
        "mailto:ops@digis.example",
        "--push-senders",
        "4",
    ]))
    .unwrap()
    .push;
    let web_push = web.web_push.unwrap();
    assert_eq!(web_push.vapid.public_key_base64url(), public);
    assert_eq!(
        web_push.endpoint_hosts,
        push::BROWSER_PUSH_SERVICES,
        "by default"
    );
    assert_eq!(web.delivery.senders, 4);
    let hosts = resolve(flags(&[
        "--push-vapid-public-key",
        &public,
        "--push-vapid-private-key",
        &private,
        "--push-vapid-subject",
        "mailto:ops@digis.example",
        "--push-web-endpoint-hosts",
        "push.example.com, 127.0.0.1",
    ]))
    .unwrap()
    .push;
    assert_eq!(
        hosts.web_push.unwrap().endpoint_hosts,
        ["push.example.com", "127.0.0.1"]
    );

    let other = push::VapidKeys::generate().public_key_base64url();
    let (public, private, other) = (public.as_str(), private.as_str(), other.as_str());
    let refused: [(&[&str], &str); 7] = [
        (
            &["--push-vapid-public-key", public],
            "--push-vapid-private-key",
        ),
        (
            &[
                "--push-vapid-public-key",
                other,
                "--push-vapid-private-key",
                private,
                "--push-vapid-subject",
                "mailto:ops@digis.example",
            ],
            "does not match",
        ),
        (
            &[
                "--push-vapid-public-key",
                public,
                "--push-vapid-private-key",
                private,
                "--push-vapid-subject",
                "ops@digis.example",
            ],
            "--push-vapid-subject",
        ),
        (
            &["--push-apns-key-id", "K", "--push-apns-team-id", "T"],
            "--push-apns-key-file",
        ),
        (
            &["--push-fcm-service-account", "/nonexistent/account.json"],
            "--push-fcm-service-account",
        ),
        (&["--push-apns-cert-file", "/x.pem"], "--push-apns-topic"),
        (
            &[
                "--push-apns-cert-file",
                "/x.pem",
                "--push-apns-key-id",
                "K",
                "--push-apns-topic",
                "t",
            ],
            "not both",
        ),
    ];
    for (extra, said) in refused {
        let error = resolve(flags(extra)).err().expect("refused");
        assert!(error.contains(said), "{extra:?}: {error}");
    }
    assert_refused(flags(&["--push-senders", "0"]), "--push-senders");
}
