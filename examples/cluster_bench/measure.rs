//! CPU time and memory of the processes, read from `/proc`.

use std::process::Command;
use std::sync::OnceLock;

use test_support::{Realtime, RedisServer};

/// CPU seconds (user + system) of Redis, each node and this process, and of the whole machine
/// (every process, every core: what else ran shows as the difference): so far, or over a window.
#[derive(Clone, Debug)]
pub(crate) struct Cpu {
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

    /// CPU seconds spent between `before` and this sample.
    pub(crate) fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            redis: self.redis - before.redis,
            nodes: self
                .nodes
                .iter()
                .zip(&before.nodes)
                .map(|(a, b)| a - b)
                .collect(),
            bench: self.bench - before.bench,
            machine: self.machine - before.machine,
        }
    }
}

/// One line of Redis's `INFO commandstats`: calls and total microseconds of a command over the
/// window (since `CONFIG RESETSTAT`). Commands run by a script count both on their own line and
/// inside the script's `evalsha` time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CommandStat {
    pub(crate) name: String,
    pub(crate) calls: u64,
    pub(crate) usec: u64,
}

impl CommandStat {
    pub(crate) fn usec_per_call(&self) -> f64 {
        self.usec as f64 / self.calls.max(1) as f64
    }
}

/// Zeroes Redis's command statistics: the start of the measured window.
pub(crate) fn reset_command_stats(redis: &RedisServer) {
    redis.cli(&["CONFIG", "RESETSTAT"]);
}

/// Redis's command statistics since the last reset, most time first.
pub(crate) fn command_stats(redis: &RedisServer) -> Vec<CommandStat> {
    let mut stats = parse_command_stats(&redis.cli(&["INFO", "commandstats"]));
    stats.sort_by(|a, b| b.usec.cmp(&a.usec).then_with(|| a.name.cmp(&b.name)));
    stats
}

/// `cmdstat_evalsha:calls=12,usec=345,usec_per_call=28.75,rejected_calls=0,failed_calls=0`.
fn parse_command_stats(info: &str) -> Vec<CommandStat> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some(CommandStat {
                name: name.to_string(),
                calls: field("calls")?,
                usec: field("usec")?,
            })
        })
        .collect()
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

#[cfg(test)]
mod tests;
