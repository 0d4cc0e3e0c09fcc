//! The server's resident memory and CPU time, read from `/proc/<pid>` (Linux only).

/// Linux reports CPU time in clock ticks of `USER_HZ`, which is 100 on every mainstream arch.
const TICKS_PER_SECOND: u64 = 100;

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub rss_bytes: u64,
    /// user + system CPU time, in microseconds.
    pub cpu_us: u64,
}

pub fn sample(pid: u32) -> std::io::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or_else(|| std::io::Error::other("no VmRSS in /proc/<pid>/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may contain spaces: fields count from after it.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other("malformed /proc/<pid>/stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `fields[0]` is field 3 (state).
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
    let (utime, stime) = ticks(11)
        .zip(ticks(12))
        .ok_or_else(|| std::io::Error::other("no utime/stime in /proc/<pid>/stat"))?;
    Ok(Sample {
        rss_bytes: rss_kib * 1024,
        cpu_us: (utime + stime) * 1_000_000 / TICKS_PER_SECOND,
    })
}

#[cfg(test)]
mod tests;
