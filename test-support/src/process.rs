//! The `realtime` binary as a child process. Its path is passed in: only the root package's tests
//! see `CARGO_BIN_EXE_realtime`.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A `realtime <role>` process on a free loopback port (`--listen 127.0.0.1:0`), killed on drop.
pub struct Realtime {
    pub child: Child,
    pub addr: SocketAddr,
    stdout: Arc<Mutex<Vec<u8>>>,
}

impl Realtime {
    /// Starts `binary <role> --listen 127.0.0.1:0 <args>` with `env` added (and no `REALTIME_*`
    /// settings inherited), and waits until it logs the address it listens on.
    pub fn start(binary: &Path, role: &str, args: &[&str], env: &[(&str, &str)]) -> Realtime {
        let mut child = Command::new(binary)
            .args([role, "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env_remove("REALTIME_KEYS")
            .env_remove("REALTIME_LISTEN")
            .env_remove("REALTIME_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start realtime");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        // Reads stderr to the end, so the process never blocks on a full pipe.
        let pid = child.id();
        std::thread::spawn(move || {
            let mut log = std::env::var("RT_TEST_LOGS")
                .ok()
                .and_then(|dir| std::fs::File::create(format!("{dir}/{pid}.log")).ok());
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(log) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(log, "{line}");
                }
                if let Some(addr) = line.split("listen=").nth(1) {
                    let addr = addr.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("realtime logged its listen address");
        // Drained to the end, so the process never blocks on a full pipe; kept for `stdout`.
        let stdout = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut out) = child.stdout.take() {
            let kept = stdout.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = out.read(&mut chunk) {
                    kept.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&chunk[..n]);
                }
            });
        }
        Realtime {
            child,
            addr: addr.parse().expect("socket address"),
            stdout,
        }
    }

    /// What it has printed (the dev-key banner). The banner comes before the listen log, so it
    /// is in the pipe by now: this waits (up to 2 s) only for the reading thread to have it all,
    /// that is for something that then stays the same for 20 ms.
    pub fn stdout(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut seen = Vec::new();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let printed = self
                .stdout
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if (!printed.is_empty() && printed == seen) || Instant::now() > deadline {
                return String::from_utf8_lossy(&printed).into_owned();
            }
            seen = printed;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM: a graceful drain (the process is still reaped on drop).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// SIGKILL, and reaped: no goodbye, no parking.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL realtime");
        self.child.wait().expect("reap realtime");
    }
}

impl Drop for Realtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
