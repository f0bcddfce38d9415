//! The report of a run: printed as a table, written as JSON, and compared or merged afterwards.
//!
//! `compare` groups reports by label (one label per target, several rounds each), takes each
//! figure's median over the rounds, and prints the ratios to a baseline (the bare relay):
//! Parley's overhead is the ratio to the floor. `merge` adds up the reports of several generator
//! processes of one run (`--shard`), merging their histograms exactly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::client::Integrity;
use crate::procfs::Machine;
use crate::stats::{self, Summary};
use crate::wire::TargetKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub target: TargetKind,
    pub label: String,
    pub urls: Vec<String>,
    pub shard: String,
    pub started_unix_ms: u64,
    pub machine: Machine,
    pub notes: Vec<String>,
    pub plan_agents: usize,
    pub plan_visitors: usize,
    pub phases: Phases,
    pub connections: ConnectionsReport,
    pub messages: MessagesReport,
    pub chats: ChatsReport,
    pub integrity: Integrity,
    pub routing: Option<RoutingReport>,
    pub reconnect: Option<ResumeReport>,
    pub errors: BTreeMap<String, u64>,
    pub servers: Vec<ServerReport>,
    /// Server CPU over the steady window, percent of one core (all nodes added).
    pub steady_server_cpu_percent: f64,
    pub generator: GeneratorReport,
    pub idle_memory: Option<IdleMemory>,
    pub series: Vec<Point>,
    /// HdrHistogram V2, base64: for exact merging.
    pub histograms: BTreeMap<String, String>,
}

/// Seconds from the start of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phases {
    pub arrival_start_s: f64,
    pub arrival_end_s: f64,
    pub steady_start_s: f64,
    pub steady_end_s: f64,
    pub storm_s: Option<f64>,
    pub end_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionsReport {
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    pub open_after_arrival: u64,
    /// Visitors connected per second during the arrival phase.
    pub arrival_rate_per_s: f64,
    /// TCP connect to `welcome`.
    pub connect_us: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagesReport {
    pub sent: u64,
    pub delivered_v2a: u64,
    pub delivered_a2v: u64,
    pub acks: u64,
    /// Delivered (both directions) during the steady window.
    pub steady_delivered: u64,
    pub steady_per_s: f64,
    pub v2a_us: Summary,
    pub a2v_us: Summary,
    /// Server CPU time per delivered message during the steady window.
    pub server_cpu_us_per_message: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatsReport {
    pub started: u64,
    pub assigned: u64,
    pub queued: u64,
    pub closed: u64,
    /// `start` sent to `assigned` received.
    pub time_to_agent_us: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoutingReport {
    pub chats_started: u64,
    pub assigned_or_queued: u64,
    pub assigned_twice: u64,
    pub agents: usize,
    pub load_min: i64,
    pub load_max: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeReport {
    pub dropped: u64,
    pub resumed: u64,
    /// From the drop until the last client resumed (welcome, resends acknowledged).
    pub full_recovery_ms: f64,
    pub resume_us: Summary,
    pub duplicate_acks: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerReport {
    pub pid: u32,
    /// CPU seconds used during the run.
    pub cpu_seconds: f64,
    pub cpu_seconds_at_start: f64,
    pub rss_start_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_end_kib: u64,
    pub fds_end: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratorReport {
    /// Percent of one core, mean over the steady window.
    pub steady_cpu_percent: f64,
    /// The generator used nearly all its cores: the server was not the bottleneck.
    pub saturated: bool,
}

/// Memory per idle connection, from readings before and after everyone connected.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleMemory {
    pub connections: u64,
    pub server_rss_before_kib: u64,
    pub server_rss_after_kib: u64,
    pub server_rss_per_connection_bytes: f64,
    pub tcp_mem_pages_before: u64,
    pub tcp_mem_pages_after: u64,
    /// /proc/net/sockstat TCP `mem`: both ends of each loopback connection.
    pub kernel_tcp_per_connection_bytes: f64,
    /// /proc/meminfo Slab (socket structures, dentries for socket fds...), both ends.
    pub slab_per_connection_bytes: f64,
    /// /proc/meminfo MemAvailable drop: server, generator and kernel together.
    pub machine_memory_per_connection_bytes: f64,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub t: f64,
    pub phase: String,
    pub open: u64,
    pub connects_per_s: f64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub latency_p50_us: Option<u64>,
    pub latency_p99_us: Option<u64>,
    pub errors: u64,
    pub server_cpu_percent: f64,
    pub server_rss_kib: u64,
    pub generator_cpu_percent: f64,
}

impl Point {
    pub fn progress_line(&self) -> String {
        let ms =
            |v: Option<u64>| v.map_or("-".to_string(), |us| format!("{:.2}ms", us as f64 / 1000.0));
        format!(
            "[{:>5.0}s {:<8}] open {:>6}  conn/s {:>6.0}  msg/s {:>7.0}  p50 {:>8} p99 {:>8}  errors {:>4}  server cpu {:>4.0}% rss {:>6.1} MiB  gen cpu {:>4.0}%",
            self.t,
            self.phase,
            self.open,
            self.connects_per_s,
            self.delivered_per_s,
            ms(self.latency_p50_us),
            ms(self.latency_p99_us),
            self.errors,
            self.server_cpu_percent,
            self.server_rss_kib as f64 / 1024.0,
            self.generator_cpu_percent,
        )
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn summary_row(out: &mut String, name: &str, s: &Summary) {
    if s.count == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "  {name:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  (n={})",
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.p999),
        ms(s.max),
        format!("{:.2}", s.mean / 1000.0),
        s.count
    );
}

impl Report {
    /// # Errors
    /// The file cannot be written.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// # Errors
    /// The file cannot be read or is not a report.
    pub fn read_json(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a report", path.display()))
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The summary table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "\n== {} against {} ({}), shard {} ==",
            self.scenario,
            self.label,
            self.urls.join(" "),
            self.shard
        );
        let _ = writeln!(
            out,
            "machine: {} cores ({}), {} MiB, kernel {}; generator on {} core(s)",
            m.cores, m.cpu_model, m.mem_total_mib, m.kernel, m.generator_cores
        );
        let c = &self.connections;
        let _ = writeln!(
            out,
            "connections: {} established of {} attempted ({} failed), {} open after arrival, {:.0}/s during arrival",
            c.established, c.attempted, c.failed, c.open_after_arrival, c.arrival_rate_per_s
        );
        let msg = &self.messages;
        let _ = writeln!(
            out,
            "messages: {} sent, {} delivered visitor->agent, {} agent->visitor; steady window {:.0} msg/s delivered",
            msg.sent, msg.delivered_v2a, msg.delivered_a2v, msg.steady_per_s
        );
        let ch = &self.chats;
        let _ = writeln!(
            out,
            "chats: {} started, {} assigned, {} queued first, {} closed",
            ch.started, ch.assigned, ch.queued, ch.closed
        );
        let _ = writeln!(
            out,
            "\n  {:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}   (milliseconds)",
            "", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        summary_row(&mut out, "connect (to welcome)", &c.connect_us);
        summary_row(&mut out, "time to agent", &ch.time_to_agent_us);
        summary_row(&mut out, "latency visitor->agent", &msg.v2a_us);
        summary_row(&mut out, "latency agent->visitor", &msg.a2v_us);
        if let Some(r) = &self.reconnect {
            summary_row(&mut out, "resume (drop to resumed)", &r.resume_us);
        }
        out.push('\n');
        for s in &self.servers {
            let _ = writeln!(
                out,
                "server pid {}: {:.2} CPU s, RSS {:.1} MiB at start, {:.1} MiB peak, {:.1} MiB at end, {} fds at end",
                s.pid,
                s.cpu_seconds,
                s.rss_start_kib as f64 / 1024.0,
                s.rss_peak_kib as f64 / 1024.0,
                s.rss_end_kib as f64 / 1024.0,
                s.fds_end.map_or("?".into(), |f| f.to_string())
            );
        }
        if !self.servers.is_empty() {
            let _ = writeln!(
                out,
                "server CPU in the steady window: {:.0}% of one core{}",
                self.steady_server_cpu_percent,
                msg.server_cpu_us_per_message
                    .map_or(String::new(), |us| format!(
                        ", {us:.1} µs per delivered message"
                    ))
            );
        }
        let _ = writeln!(
            out,
            "generator CPU in the steady window: {:.0}% of one core{}",
            self.generator.steady_cpu_percent,
            if self.generator.saturated {
                " (SATURATED: the generator, not the server, set the pace)"
            } else {
                ""
            }
        );
        if let Some(i) = &self.idle_memory {
            let _ = writeln!(
                out,
                "idle memory over {} connections: server RSS {:.0} -> {:.0} KiB = {:.0} bytes per connection; \
                 kernel TCP {:.0} bytes, slab {:.0} bytes, machine {:.0} bytes per connection (both ends)",
                i.connections,
                i.server_rss_before_kib,
                i.server_rss_after_kib,
                i.server_rss_per_connection_bytes,
                i.kernel_tcp_per_connection_bytes,
                i.slab_per_connection_bytes,
                i.machine_memory_per_connection_bytes
            );
        }
        if let Some(r) = &self.routing {
            let _ = writeln!(
                out,
                "routing: {} of {} chats assigned or queued, {} assigned twice; {} agents hold {}..{} chats (spread {})",
                r.assigned_or_queued,
                r.chats_started,
                r.assigned_twice,
                r.agents,
                r.load_min,
                r.load_max,
                r.load_max - r.load_min
            );
        }
        if let Some(r) = &self.reconnect {
            let _ = writeln!(
                out,
                "reconnect storm: {} sockets dropped, {} resumed, full recovery in {:.0} ms; {} resends acknowledged as duplicates",
                r.dropped, r.resumed, r.full_recovery_ms, r.duplicate_acks
            );
        }
        let i = &self.integrity;
        let _ = writeln!(
            out,
            "integrity: {} conversations checked on both sides, {} lost, {} duplicated ({} not closed by the end)",
            i.conversations_checked, i.lost, i.duplicated, i.conversations_unclosed
        );
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors: none");
        } else {
            let _ = writeln!(out, "errors:");
            for (code, n) in &self.errors {
                let _ = writeln!(out, "  {code:<40} {n}");
            }
        }
        out
    }
}

/// The figures `compare` puts side by side, in order: (name, value, higher is better).
fn figures(r: &Report) -> Vec<(&'static str, Option<f64>, bool)> {
    let lat = |s: &Summary, f: fn(&Summary) -> u64| (s.count > 0).then(|| f(s) as f64 / 1000.0);
    let mut v = vec![
        (
            "delivered msg/s (steady)",
            Some(r.messages.steady_per_s),
            true,
        ),
        ("v->a p50 ms", lat(&r.messages.v2a_us, |s| s.p50), false),
        ("v->a p99 ms", lat(&r.messages.v2a_us, |s| s.p99), false),
        ("v->a p99.9 ms", lat(&r.messages.v2a_us, |s| s.p999), false),
        ("a->v p50 ms", lat(&r.messages.a2v_us, |s| s.p50), false),
        ("a->v p99 ms", lat(&r.messages.a2v_us, |s| s.p99), false),
        ("a->v p99.9 ms", lat(&r.messages.a2v_us, |s| s.p999), false),
        (
            "time to agent p50 ms",
            lat(&r.chats.time_to_agent_us, |s| s.p50),
            false,
        ),
        (
            "time to agent p99 ms",
            lat(&r.chats.time_to_agent_us, |s| s.p99),
            false,
        ),
        (
            "connect p99 ms",
            lat(&r.connections.connect_us, |s| s.p99),
            false,
        ),
        (
            "server CPU % (steady)",
            (!r.servers.is_empty()).then_some(r.steady_server_cpu_percent),
            false,
        ),
        (
            "server CPU µs/msg",
            r.messages.server_cpu_us_per_message,
            false,
        ),
        (
            "server RSS peak MiB",
            (!r.servers.is_empty())
                .then(|| r.servers.iter().map(|s| s.rss_peak_kib).sum::<u64>() as f64 / 1024.0),
            false,
        ),
        ("errors", Some(r.total_errors() as f64), false),
    ];
    if let Some(i) = &r.idle_memory {
        v.push((
            "idle RSS bytes/conn",
            Some(i.server_rss_per_connection_bytes),
            false,
        ));
    }
    v
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// Side-by-side medians and ratios to `baseline` (a label).
pub fn compare(reports: &[Report], baseline: &str) -> String {
    let mut labels: Vec<&str> = Vec::new();
    for r in reports {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    let mut out = String::new();
    let rounds: Vec<usize> = labels
        .iter()
        .map(|l| reports.iter().filter(|r| &r.label == l).count())
        .collect();
    let _ = writeln!(
        out,
        "scenario {}: medians over rounds ({})",
        reports.first().map_or("?", |r| r.scenario.as_str()),
        labels
            .iter()
            .zip(&rounds)
            .map(|(l, n)| format!("{l}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = write!(out, "{:<26}", "figure");
    for l in &labels {
        let _ = write!(out, " {l:>12}");
    }
    for l in labels.iter().filter(|l| **l != baseline) {
        let _ = write!(out, " {:>16}", format!("{l}/{baseline}"));
    }
    out.push('\n');
    let names: Vec<&str> = reports
        .first()
        .map_or(Vec::new(), |r| figures(r).iter().map(|f| f.0).collect());
    for name in names {
        let per_label: Vec<Option<f64>> = labels
            .iter()
            .map(|l| {
                median(
                    reports
                        .iter()
                        .filter(|r| &r.label == l)
                        .filter_map(|r| figures(r).into_iter().find(|f| f.0 == name)?.1)
                        .collect(),
                )
            })
            .collect();
        if per_label.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(out, "{name:<26}");
        for v in &per_label {
            let _ = write!(out, " {:>12}", v.map_or("-".into(), |v| format!("{v:.2}")));
        }
        let base = labels
            .iter()
            .position(|l| *l == baseline)
            .and_then(|i| per_label[i]);
        for (l, v) in labels.iter().zip(&per_label) {
            if *l == baseline {
                continue;
            }
            let ratio = match (v, base) {
                (Some(v), Some(b)) if b != 0.0 => format!("{:.2}x", v / b),
                _ => "-".into(),
            };
            let _ = write!(out, " {ratio:>16}");
        }
        out.push('\n');
    }
    out
}

/// Adds up the reports of the generator processes of one run.
///
/// # Errors
/// No reports, or histograms that cannot be decoded.
pub fn merge(reports: Vec<Report>) -> anyhow::Result<Report> {
    let mut it = reports.into_iter();
    let mut out = it.next().context("nothing to merge")?;
    let mut hists = BTreeMap::new();
    for (k, v) in &out.histograms {
        hists.insert(k.clone(), stats::decode(v)?);
    }
    for r in it {
        let (a, b) = (&mut out, &r);
        a.plan_agents += b.plan_agents;
        a.plan_visitors += b.plan_visitors;
        a.connections.attempted += b.connections.attempted;
        a.connections.established += b.connections.established;
        a.connections.failed += b.connections.failed;
        a.connections.open_after_arrival += b.connections.open_after_arrival;
        a.connections.arrival_rate_per_s += b.connections.arrival_rate_per_s;
        a.messages.sent += b.messages.sent;
        a.messages.delivered_v2a += b.messages.delivered_v2a;
        a.messages.delivered_a2v += b.messages.delivered_a2v;
        a.messages.acks += b.messages.acks;
        a.messages.steady_delivered += b.messages.steady_delivered;
        a.messages.steady_per_s += b.messages.steady_per_s;
        a.chats.started += b.chats.started;
        a.chats.assigned += b.chats.assigned;
        a.chats.queued += b.chats.queued;
        a.chats.closed += b.chats.closed;
        a.integrity.conversations_checked += b.integrity.conversations_checked;
        a.integrity.conversations_unclosed += b.integrity.conversations_unclosed;
        a.integrity.lost += b.integrity.lost;
        a.integrity.duplicated += b.integrity.duplicated;
        for (code, n) in &b.errors {
            *a.errors.entry(code.clone()).or_default() += n;
        }
        if let (Some(x), Some(y)) = (a.routing.as_mut(), b.routing.as_ref()) {
            x.chats_started += y.chats_started;
            x.assigned_or_queued += y.assigned_or_queued;
            x.assigned_twice += y.assigned_twice;
            x.agents += y.agents;
            x.load_min = x.load_min.min(y.load_min);
            x.load_max = x.load_max.max(y.load_max);
        }
        if let (Some(x), Some(y)) = (a.reconnect.as_mut(), b.reconnect.as_ref()) {
            x.dropped += y.dropped;
            x.resumed += y.resumed;
            x.full_recovery_ms = x.full_recovery_ms.max(y.full_recovery_ms);
            x.duplicate_acks += y.duplicate_acks;
        }
        // Processes that watched the same servers read the same memory; processes that each
        // watched their own node (`--url` and `--server-pid` of one node per shard) read
        // different servers, whose memory adds up.
        let own_servers = !b.servers.is_empty()
            && b.servers
                .iter()
                .all(|y| a.servers.iter().all(|x| x.pid != y.pid));
        if let (Some(x), Some(y)) = (a.idle_memory.as_mut(), b.idle_memory.as_ref()) {
            x.connections += y.connections;
            if own_servers {
                x.server_rss_before_kib += y.server_rss_before_kib;
                x.server_rss_after_kib += y.server_rss_after_kib;
            }
        }
        if own_servers {
            a.servers.extend(b.servers.iter().cloned());
        }
        a.shard = format!("merged {}+{}", a.shard, b.shard);
        for (k, v) in &b.histograms {
            let h = stats::decode(v)?;
            match hists.get_mut(k) {
                Some(mine) => mine.add(&h).map_err(|e| anyhow::anyhow!("{e:?}"))?,
                None => {
                    hists.insert(k.clone(), h);
                }
            }
        }
    }
    if let Some(i) = out.idle_memory.as_mut() {
        let n = i.connections.max(1) as f64;
        i.server_rss_per_connection_bytes =
            (i.server_rss_after_kib as f64 - i.server_rss_before_kib as f64) * 1024.0 / n;
        i.kernel_tcp_per_connection_bytes = (i.tcp_mem_pages_after as f64
            - i.tcp_mem_pages_before as f64)
            * crate::procfs::page_size() as f64
            / n;
    }
    let summary = |k: &str| hists.get(k).map(Summary::of).unwrap_or_default();
    out.connections.connect_us = summary("connect");
    out.chats.time_to_agent_us = summary("time_to_agent");
    out.messages.v2a_us = summary("v2a");
    out.messages.a2v_us = summary("a2v");
    if let Some(r) = out.reconnect.as_mut() {
        r.resume_us = summary("resume");
    }
    out.histograms = hists
        .iter()
        .map(|(k, h)| (k.clone(), stats::encode(h)))
        .collect();
    Ok(out)
}
