use super::peers::{cpu_count, missing, start};
use super::table::number;
use super::*;

#[test]
fn shapes_are_channels_by_subscribers() {
    assert_eq!(parse_shape("1x1000").unwrap(), (1, 1000));
    assert_eq!(parse_shape("1000x10").unwrap(), (1000, 10));
    assert!(parse_shape("1000").is_err());
}

#[test]
fn numbers_are_grouped_and_rounded() {
    assert_eq!(number(&json!(1234567.891), 0), "1,234,568");
    assert_eq!(number(&json!(12.345), 1), "12.3");
    assert_eq!(number(&json!(999), 0), "999");
    assert_eq!(number(&Value::Null, 0), "–");
}

#[test]
fn a_missing_peer_is_skipped_not_started() {
    let args = CompareArgs {
        servers: vec![ServerKind::Soketi],
        realtime_bin: "/nonexistent/realtime".into(),
        node_bin: "node".into(),
        socketio_server: "/nonexistent/socketio-server.mjs".into(),
        soketi_bin: "/nonexistent/soketi".into(),
        sockudo_bin: "/nonexistent/sockudo".into(),
        server_cpus: "0".into(),
        port: 1,
        shapes: vec![],
        publishers: 1,
        size: 100,
        window: 1,
        backlog: 64,
        idle_connections: 0,
        idle_duration: Duration::from_secs(1),
        out: std::env::temp_dir().join("realtime-compare-test"),
        from_json: None,
    };
    for server in [
        ServerKind::Realtime,
        ServerKind::Socketio,
        ServerKind::Soketi,
        ServerKind::Sockudo,
    ] {
        assert!(start(server, &args, None).unwrap().is_none(), "{server:?}");
        assert!(missing(server, &args).contains("/nonexistent/"));
    }
}

#[test]
fn worker_threads_follow_the_pinned_cpus() {
    assert_eq!(cpu_count("0"), 1);
    assert_eq!(cpu_count("0-3"), 4);
    assert_eq!(cpu_count("0,2-3"), 3);
}
