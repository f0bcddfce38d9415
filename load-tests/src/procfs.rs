//! What the generator reads from /proc: the server's CPU time and RSS, kernel socket memory,
//! the machine, and this process's limits (open files, ephemeral ports).

use std::collections::BTreeMap;
use std::io;

use serde::Serialize;

/// CPU time and resident memory of one process at one instant.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    pub rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` (utime + stime) and `/proc/<pid>/status` (VmRSS).
///
/// # Errors
/// The process does not exist (any more) or /proc is not readable.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 14 (utime) and 15 (stime) of stat(5); `after` starts at field 3.
    let ticks = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    let per_second = rustix::param::clock_ticks_per_second() as f64;
    let cpu_seconds = (ticks(11) + ticks(12)) as f64 / per_second;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok(ProcSample {
        cpu_seconds,
        rss_kib,
    })
}

/// `/proc/meminfo`, in KiB.
pub fn meminfo() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// The TCP line of `/proc/net/sockstat`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SockStat {
    pub tcp_inuse: u64,
    pub tcp_time_wait: u64,
    pub tcp_alloc: u64,
    /// Kernel memory charged to TCP sockets, in pages.
    pub tcp_mem_pages: u64,
}

pub fn sockstat() -> SockStat {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let mut s = SockStat::default();
    if let Some(line) = text.lines().find(|l| l.starts_with("TCP:")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words[1..].chunks(2) {
            if let [k, v] = pair {
                let v = v.parse().unwrap_or(0);
                match *k {
                    "inuse" => s.tcp_inuse = v,
                    "tw" => s.tcp_time_wait = v,
                    "alloc" => s.tcp_alloc = v,
                    "mem" => s.tcp_mem_pages = v,
                    _ => {}
                }
            }
        }
    }
    s
}

pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// The machine, for the report: figures mean little without it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
    /// Cores this process may run on (taskset).
    pub generator_cores: usize,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1);
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    Machine {
        cores,
        cpu_model,
        mem_total_mib: meminfo().get("MemTotal").copied().unwrap_or(0) / 1024,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        generator_cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    }
}

/// Raises this process's soft open-file limit to the hard one; returns (soft, hard).
pub fn raise_open_files() -> (u64, u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum;
    if limit.current != hard {
        let mut raised = limit;
        raised.current = hard;
        let _ = setrlimit(Resource::Nofile, raised);
    }
    let now = getrlimit(Resource::Nofile);
    (
        now.current.unwrap_or(u64::MAX),
        now.maximum.unwrap_or(u64::MAX),
    )
}

/// The ephemeral port range: ports per source address for outgoing connections.
pub fn ephemeral_ports() -> u64 {
    let (lo, hi) = ephemeral_range();
    u64::from(hi - lo) + 1
}

/// The ephemeral port range, first and last (Linux's default when unreadable).
pub fn ephemeral_range() -> (u16, u16) {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .filter_map(|w| w.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if hi >= lo => (lo, hi),
        _ => (32_768, 60_999),
    }
}

/// Open file descriptors of a process (a directory listing: only read at snapshots).
pub fn open_fds(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(sockstat().tcp_alloc < u64::MAX);
        assert!(machine().cores >= 1);
        assert!(ephemeral_ports() > 1000);
    }
}
