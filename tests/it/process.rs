use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::{block_on, connect, next_json, publish_as, rest, send_json, Server};

/// A scratch directory named `name` (and this process's id), and in it a `realtime.toml`
/// holding `toml`.
fn config_file(name: &str, toml: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("realtime.toml");
    std::fs::write(&file, toml).unwrap();
    (dir, file)
}

/// The line starting `prefix` that `realtime check-config --config file` prints, with the
/// setting's env var set to `env` and its flag given `flag`, each when `Some`.
fn checked_line(
    file: &Path,
    (env_var, flag_name): (&str, &str),
    env: Option<&str>,
    flag: Option<&str>,
    prefix: &str,
) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_realtime"));
    command
        .args(["check-config", "--keys", "a.b:c", "--config"])
        .arg(file)
        .env_remove(env_var)
        .env_remove("REALTIME_KEYS");
    if let Some(env) = env {
        command.env(env_var, env);
    }
    if let Some(flag) = flag {
        command.args([flag_name, flag]);
    }
    let output = command.output().expect("run realtime");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("a {prefix:?} line"))
}

#[test]
fn bad_settings_exit_64_naming_the_setting() {
    let cases: [(&[&str], &str); 16] = [
        (&["--listen", "not-an-address"], "--listen"),
        (&["--listen", "127.0.0.1:notaport"], "--listen"),
        (&["--admin-listen", "nowhere"], "--admin-listen"),
        (&["--redis", "http://localhost"], "--redis"),
        (&["--log-format", "xml"], "--log-format"),
        (&["--node-lease-ms", "soon"], "--node-lease-ms"),
        (&["--max-idle-interval-ms", "5"], "--max-idle-interval-ms"),
        (
            &["--connection-state-ttl-ms", "10"],
            "--connection-state-ttl-ms",
        ),
        (&["--keys", "no-colon-here"], "--keys"),
        (&["--keys", r#"a.b:c={"broken"#], "--keys"),
        (&["--config", "/nonexistent/realtime.toml"], "--config"),
        (&["--supabase-url", "ftp://nope"], "--supabase-url"),
        // The redis client refuses wildcard hosts; said at start-up, naming the setting.
        (
            &["--redis", "redis://0.0.0.0:6379"],
            "--redis / REALTIME_REDIS_URL: 0.0.0.0 is a wildcard address",
        ),
        (
            &["--redis", "redis+cluster://[::]:7000"],
            "--redis / REALTIME_REDIS_URL: [::] is a wildcard address",
        ),
        (&["--supabase-jwt-secret", " "], "--supabase-jwt-secret"),
        (
            &[
                "--supabase-jwt-secret",
                "s",
                "--policy",
                "/nonexistent/policy.toml",
            ],
            "--policy",
        ),
    ];
    for (args, setting) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_realtime"))
            .arg("serve")
            .args(args)
            .env_remove("REALTIME_KEYS")
            .output()
            .expect("run realtime");
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(setting), "{args:?}: {stderr}");
    }
}

#[test]
fn check_config_validates_without_starting() {
    let (dir, file) = config_file("rt-check", "[history]\nmax_messages = 50\n");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_realtime"))
            .arg("check-config")
            .args(args)
            .env_remove("REALTIME_KEYS")
            .env_remove("REALTIME_LISTEN")
            .env_remove("REALTIME_CONFIG")
            .output()
            .expect("run realtime")
    };
    // Port 1 needs privileges to bind: check-config must not try.
    let ok = run(&[
        "--config",
        file.to_str().unwrap(),
        "--keys",
        "app.k:secret",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(stdout.contains("configuration ok"), "{stdout}");
    assert!(
        stdout.contains("50 messages"),
        "the file was read: {stdout}"
    );
    assert!(!stdout.contains("secret"), "no secrets printed: {stdout}");

    let bad = run(&["--listen", "127.0.0.1:notaport"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--listen"));
    std::fs::write(&file, "[history]\nmax_messages = 0\n").unwrap();
    let bad = run(&["--config", file.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("history.max_messages"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn push_generate_vapid_keys_prints_a_pair_that_serve_takes() {
    let output = Command::new(env!("CARGO_BIN_EXE_realtime"))
        .args(["push", "generate-vapid-keys"])
        .output()
        .expect("run realtime");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let after = |label: &str| {
        let mut lines = stdout.lines().skip_while(|l| *l != label);
        lines
            .nth(1)
            .unwrap_or_else(|| panic!("{label} in {stdout}"))
            .to_owned()
    };
    let (public, private) = (after("Public Key:"), after("Private Key:"));
    push::VapidKeys::from_base64url(&private, Some(&public)).expect("a matching P-256 pair");
    // As printed, the pair passes check-config, the public key summarised, the private one not.
    let checked = Command::new(env!("CARGO_BIN_EXE_realtime"))
        .args(["check-config", "--keys", "a.b:c"])
        .env("REALTIME_PUSH_VAPID_PUBLIC_KEY", &public)
        .env("REALTIME_PUSH_VAPID_PRIVATE_KEY", &private)
        .env("REALTIME_PUSH_VAPID_SUBJECT", "mailto:ops@digis.example")
        .output()
        .expect("run realtime");
    assert_eq!(checked.status.code(), Some(0), "{checked:?}");
    let summary = String::from_utf8_lossy(&checked.stdout);
    assert!(
        summary.contains(&format!("push: web (VAPID public key {public})")),
        "{summary}"
    );
    assert!(!summary.contains(&private), "{summary}");
}

#[test]
fn a_flag_beats_its_env_var_which_beats_the_file() {
    let (dir, file) = config_file("rt-precedence", "listen = \"127.0.0.1:1111\"\n");
    let listen = |env, flag| {
        checked_line(
            &file,
            ("REALTIME_LISTEN", "--listen"),
            env,
            flag,
            "listen: ",
        )
    };
    assert_eq!(listen(None, None), "127.0.0.1:1111", "the file");
    assert_eq!(
        listen(Some("127.0.0.1:2222"), None),
        "127.0.0.1:2222",
        "env over file"
    );
    assert_eq!(
        listen(Some("127.0.0.1:2222"), Some("127.0.0.1:3333")),
        "127.0.0.1:3333",
        "flag over env"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `maxIdleInterval`, `connectionStateTtl` and the presence grace come from flag, env or file, in
/// that order, and CONNECTED announces what was set.
#[test]
fn connection_timers_are_settings_and_connected_announces_them() {
    let (dir, file) = config_file(
        "rt-timers",
        "max_idle_interval_ms = 1111\nconnection_state_ttl_ms = 60000\npresence_grace_ms = 700\n",
    );
    let timing = |env, flag| {
        checked_line(
            &file,
            ("REALTIME_MAX_IDLE_INTERVAL_MS", "--max-idle-interval-ms"),
            env,
            flag,
            "timing: ",
        )
    };
    assert_eq!(
        timing(None, None),
        "maxIdleInterval 1111 ms, connectionStateTtl 60000 ms, presence grace 700 ms",
        "the file"
    );
    assert!(timing(Some("2222"), None).starts_with("maxIdleInterval 2222 ms"));
    assert!(timing(Some("2222"), Some("3333")).starts_with("maxIdleInterval 3333 ms"));
    std::fs::write(&file, "max_idle_interval_ms = 5\n").unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_realtime"))
        .args(["check-config", "--config"])
        .arg(&file)
        .env_remove("REALTIME_MAX_IDLE_INTERVAL_MS")
        .output()
        .expect("run realtime");
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("max_idle_interval_ms"));
    let _ = std::fs::remove_dir_all(&dir);

    let server = Server::start(&[
        "--keys",
        "app.k:s",
        "--max-idle-interval-ms",
        "700",
        "--connection-state-ttl-ms",
        "5000",
    ]);
    block_on(async {
        let mut socket = connect(server.addr, "key=app.k:s&format=json").await;
        let connected = next_json(&mut socket).await;
        assert_eq!(connected["action"], 4, "{connected}");
        assert_eq!(connected["connectionDetails"]["maxIdleInterval"], 700);
        assert_eq!(connected["connectionDetails"]["connectionStateTtl"], 5000);
    });
}

#[test]
fn config_file_keys_and_listen_are_used() {
    let (_, path) = config_file(
        "realtime-config",
        "listen = \"127.0.0.1:0\"\n[[keys]]\nkey = \"app.file:filesecret\"\ncapability = '{\"files:*\":[\"publish\"]}'\n",
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    block_on(async {
        let publish = |channel: &str| publish_as("app.file:filesecret", channel, r#"{"data":"x"}"#);
        assert_eq!(rest(server.addr, publish("files:1")).await.0, 201);
        let (status, body) = rest(server.addr, publish("other")).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("40160"), "{body}");
    });
}

/// What a new user does: start with no key, paste the printed key, see a message arrive.
#[test]
fn generated_dev_key_works_for_publish_and_subscribe() {
    let server = Server::start(&[]);
    let stdout = server.stdout();
    let key = stdout
        .split("key: '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no key in banner: {stdout:?}"))
        .to_owned();
    assert!(stdout.contains(&format!("port: {}", server.addr.port())));
    block_on(async {
        let mut socket = connect(server.addr, &format!("key={key}&format=json")).await;
        assert_eq!(next_json(&mut socket).await["action"], 4);
        send_json(&mut socket, json!({"action": 10, "channel": "session:123"})).await;
        assert_eq!(next_json(&mut socket).await["action"], 11);

        let body = r#"[{"name":"update","data":"hello"}]"#;
        let request = publish_as(&key, "session:123", body);
        assert_eq!(rest(server.addr, request).await.0, 201);
        let delivered = next_json(&mut socket).await;
        assert_eq!(delivered["action"], 15);
        assert_eq!(delivered["messages"][0]["data"], "hello");
    });
}

#[test]
fn sigterm_tells_clients_to_reconnect_and_exits() {
    let mut server = Server::start(&["--keys", "app.k:secret"]);
    block_on(async {
        let mut socket = connect(server.addr, "key=app.k:secret&format=json").await;
        assert_eq!(next_json(&mut socket).await["action"], 4);
        server.terminate();
        let goodbye = next_json(&mut socket).await;
        assert_eq!(goodbye["action"], 6, "{goodbye}");
        assert_eq!(goodbye["error"]["code"], 80003);
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn json_logs_carry_the_connection_span_and_never_the_secret() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_realtime"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--keys",
            "app.k:topsecret",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let parsed = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            if tx.send(parsed).is_err() {
                return;
            }
        }
    });
    let next = |what: &str, pred: &dyn Fn(&serde_json::Value) -> bool| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no log line: {what}"));
        assert!(
            !line.to_string().contains("topsecret"),
            "a secret in the logs: {line}"
        );
        if pred(&line) {
            return line;
        }
    };
    let serving = next("serving", &|l| l["message"] == "realtime serving");
    let addr: std::net::SocketAddr = serving["listen"].as_str().unwrap().parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let connection_id = runtime.block_on(async {
        let mut socket = connect(addr, "key=app.k:topsecret&clientId=carol&format=json").await;
        let connected = next_json(&mut socket).await;
        connected["connectionId"].as_str().unwrap().to_owned()
    });
    let line = next("connected", &|l| l["message"] == "connected");
    assert_eq!(line["span"]["name"], "connection", "{line}");
    assert_eq!(line["span"]["id"], connection_id.as_str(), "{line}");
    assert_eq!(line["span"]["client_id"], "carol", "{line}");
    let _ = child.kill();
    let _ = child.wait();
}
