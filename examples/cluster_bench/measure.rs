//! CPU time and memory of the processes, read from `/proc`.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use test_support::{Realtime, RedisServer};

/// CPU seconds (user + system) so far of Redis, each node and this process, and of the whole
/// machine (every process, every core: what else ran shows as the difference).
pub(crate) struct Cpu {
    pub(crate) redis: f64,
    pub(crate) nodes: Vec<f64>,
    pub(crate) bench: f64,
    pub(crate) machine: f64,
}

/// Share of one core over the window, in percent.
pub(crate) struct CpuShare {
    pub(crate) redis: f64,
    pub(crate) nodes: Vec<f64>,
    pub(crate) bench: f64,
    pub(crate) machine: f64,
}

impl Cpu {
    pub(crate) fn sample(redis: &RedisServer, nodes: &[Realtime]) -> Cpu {
        Cpu {
            redis: cpu_seconds(&redis.pid().to_string()),
            nodes: nodes
                .iter()
                .map(|n| cpu_seconds(&n.pid().to_string()))
                .collect(),
            bench: cpu_seconds("self"),
            machine: machine_cpu_seconds(),
        }
    }

    pub(crate) fn since(&self, before: &Cpu, window: Duration) -> CpuShare {
        let share = |after: f64, before: f64| (after - before) / window.as_secs_f64() * 100.0;
        CpuShare {
            redis: share(self.redis, before.redis),
            nodes: self
                .nodes
                .iter()
                .zip(&before.nodes)
                .map(|(a, b)| share(*a, *b))
                .collect(),
            bench: share(self.bench, before.bench),
            machine: share(self.machine, before.machine),
        }
    }
}

/// utime + stime of a process (all its threads), fields 14 and 15 of `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after its ')' start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / clock_ticks_per_second()
}

/// Busy time of all cores: the first line of `/proc/stat` less idle and iowait.
pub(crate) fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (ticks.iter().sum::<u64>() - idle) as f64 / clock_ticks_per_second()
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident set size (`VmRSS`), KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
