//! One run: check the plan against this machine's limits, bring agents online, let visitors
//! arrive, hold the steady window (with the reconnect storm if asked), wind down, report.
//!
//! A sampler ticks every second: it reads the server's CPU and RSS from /proc, turns counters
//! into rates, and prints the progress line. Phases are bounded by the scenario's timeouts, so
//! a run always ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Ctx};
use crate::procfs::{self, ProcSample};
use crate::report::{
    ConnectionsReport, IdleMemory, MessagesReport, Phases, Point, Report, ResumeReport,
    RoutingReport, ServerReport,
};
use crate::scenario::Scenario;
use crate::stats::{self, get, Recorder, Summary};
use crate::wire::{self, Node, TargetKind};

/// What a run needs besides the scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: Scenario,
    pub target: TargetKind,
    /// Names the results (e.g. `parley`, `relay-round2`); defaults to the target kind.
    pub label: String,
    /// Node URLs; empty: the scenario's.
    pub urls: Vec<String>,
    /// Server processes to watch (CPU, RSS).
    pub server_pids: Vec<u32>,
    /// This process's share: (index from 0, count).
    pub shard: (usize, usize),
    pub json: Option<PathBuf>,
    pub chart: Option<PathBuf>,
    /// Print the progress line every second.
    pub progress: bool,
}

/// The clients this process plays.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Agent numbers (from 1).
    pub agents: Vec<usize>,
    /// Visitor numbers (from 0).
    pub visitors: Vec<usize>,
}

impl Plan {
    pub fn new(scenario: &Scenario, (index, count): (usize, usize)) -> Self {
        Self {
            agents: (1..=scenario.agents.count)
                .filter(|n| (n - 1) % count == index)
                .collect(),
            visitors: (0..scenario.visitors.count)
                .filter(|n| n % count == index)
                .collect(),
        }
    }

    pub fn sockets(&self) -> usize {
        self.agents.len() + self.visitors.len()
    }
}

/// Open files this process keeps for itself (stdio, epoll, runtime, report files).
const RESERVED_FILES: u64 = 64;

/// Refuses a plan this machine cannot carry, saying how to split it.
///
/// # Errors
/// Too many sockets for one process, or too many per source address.
pub fn check_plan(
    scenario: &Scenario,
    plan: &Plan,
    shard: (usize, usize),
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    let (soft, hard) = procfs::raise_open_files();
    let sockets = plan.sockets() as u64;
    if sockets + RESERVED_FILES > soft {
        let per_process = soft.saturating_sub(RESERVED_FILES).max(1);
        let processes = (scenario.agents.count + scenario.visitors.count) as u64 / per_process + 1;
        anyhow::bail!(
            "this plan opens {sockets} sockets in one process, but a process may hold only {soft} open files \
             here (hard limit {hard}; it cannot be raised on this machine). Split the run over {processes} \
             generator processes started together: `parley-load run SCENARIO --shard 1/{processes}` ... \
             `--shard {processes}/{processes}` (each plays every {processes}th client), then combine their \
             reports with `parley-load merge`."
        );
    }
    anyhow::ensure!(
        wire::source_block_fits(scenario.source_addresses, shard.1),
        "{} generator processes with {} source addresses each need more than the 254 addresses of \
         127.0.0.1 .. 127.0.0.254 (each process has its own): use fewer (--source-addresses)",
        shard.1,
        scenario.source_addresses
    );
    let reconnects = if scenario.reconnect.is_some() { 2 } else { 1 };
    let ports = procfs::ephemeral_ports();
    let per_source = (sockets * reconnects).div_ceil(scenario.source_addresses as u64);
    if per_source > ports * 9 / 10 {
        let needed = (sockets * reconnects).div_ceil(ports * 9 / 10);
        anyhow::bail!(
            "this plan needs {per_source} ports per source address but the kernel gives {ports} ephemeral \
             ports per address: use at least {needed} source addresses (--source-addresses {needed}); \
             127.0.0.0/8 addresses need no setup on Linux."
        );
    }
    let total = (scenario.agents.count + scenario.visitors.count) as u64;
    if total > 19_900 && shard.1 == 1 {
        notes.push(format!(
            "{total} sockets on one server node exceed what one process may hold here (20,000 open files): \
             expect refusals unless the run has several nodes (--url ... --url ...)."
        ));
    }
    let machine = procfs::machine();
    if machine.generator_cores == machine.cores && machine.cores <= 2 {
        notes.push(format!(
            "generator and server share {} cores; for steadier figures pin them apart: \
             `taskset -c 0 parley serve ...` and `taskset -c 1 parley-load run ...` (bench.sh --pin).",
            machine.cores
        ));
    }
    Ok(notes)
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Agents = 0,
    Arrival,
    Settle,
    Steady,
    Storm,
    Closing,
    Done,
}

impl Phase {
    fn name(v: u8) -> &'static str {
        [
            "agents", "arrival", "settle", "steady", "storm", "closing", "done",
        ]
        .get(v as usize)
        .copied()
        .unwrap_or("?")
    }
}

/// Runs a scenario and returns its report (also written as JSON and SVG if asked).
///
/// # Errors
/// The plan exceeds this machine's limits, a URL is invalid, or the report cannot be written.
pub async fn run(opts: RunOptions) -> anyhow::Result<Report> {
    let scenario = opts.scenario.clone();
    let urls = if opts.urls.is_empty() {
        scenario.urls.clone()
    } else {
        opts.urls.clone()
    };
    anyhow::ensure!(
        !urls.is_empty(),
        "no node to run against: give --url ws://HOST:PORT (or `urls` in the scenario)"
    );
    anyhow::ensure!(
        !scenario.server.needs_resume || opts.target == TargetKind::Parley,
        "scenario {} needs resume (visitor last_seq, agent resume), which only Parley implements; \
         the references have no persistence",
        scenario.name
    );
    let mut nodes = Vec::new();
    for url in &urls {
        nodes.push(Node::parse(url).await?);
    }
    let plan = Plan::new(&scenario, opts.shard);
    let notes = check_plan(&scenario, &plan, opts.shard)?;
    for note in &notes {
        eprintln!("note: {note}");
    }
    let machine = procfs::machine();

    let (storm_tx, storm_rx) = tokio::sync::watch::channel(0u64);
    let ctx = Arc::new(Ctx {
        scenario: scenario.clone(),
        wire: opts.target.wire(),
        nodes,
        rec: Recorder::new(),
        stop: CancellationToken::new(),
        agents_stop: CancellationToken::new(),
        all_arrived: CancellationToken::new(),
        storm: storm_rx,
        storm_at: Mutex::new(None),
        storm_dropped: AtomicU64::new(0),
        storm_resumed: AtomicU64::new(0),
        storm_recovered_us: AtomicU64::new(0),
        checks: Mutex::new(HashMap::new()),
        agent_open: (0..scenario.agents.count)
            .map(|_| Default::default())
            .collect(),
        assignments: Mutex::new(HashMap::new()),
        answered: AtomicU64::new(0),
        assigned_twice: AtomicU64::new(0),
        arrived: AtomicU64::new(0),
        agents_ready: AtomicU64::new(0),
    });

    let started = Instant::now();
    let at = |i: Instant| i.saturating_duration_since(started).as_secs_f64();
    let phase = Arc::new(AtomicU8::new(Phase::Agents as u8));
    let before = MemorySnapshot::take(&opts.server_pids);
    let sampler_stop = CancellationToken::new();
    let sampler = tokio::spawn(sample_loop(
        ctx.clone(),
        opts.server_pids.clone(),
        phase.clone(),
        started,
        opts.progress,
        sampler_stop.clone(),
    ));

    // Agents come online first, and the visitors wait for them (bounded).
    let mut agents = JoinSet::new();
    let agent_gap = gap(scenario.agents.arrival_rate);
    for (i, &n) in plan.agents.iter().enumerate() {
        pace(started, agent_gap, i).await;
        let source = wire::source_address(i, scenario.source_addresses, opts.shard.0);
        agents.spawn(client::agent(ctx.clone(), n, source));
    }
    let agents_deadline = Instant::now() + scenario.connect_timeout;
    wait_until(agents_deadline, || {
        get(&ctx.agents_ready) >= plan.agents.len() as u64
    })
    .await;

    phase.store(Phase::Arrival as u8, Ordering::Relaxed);
    let arrival_start = Instant::now();
    let connected_before = get(&ctx.rec.counters.connected);
    let mut visitors = JoinSet::new();
    let visitor_gap = gap(scenario.visitors.arrival_rate);
    for (i, &n) in plan.visitors.iter().enumerate() {
        pace(arrival_start, visitor_gap, i).await;
        let source = wire::source_address(
            plan.agents.len() + i,
            scenario.source_addresses,
            opts.shard.0,
        );
        visitors.spawn(client::visitor(ctx.clone(), n, source));
    }
    wait_until(Instant::now() + scenario.connect_timeout, || {
        get(&ctx.arrived) >= plan.visitors.len() as u64
    })
    .await;
    let arrival_end = Instant::now();
    let arrival_connected = get(&ctx.rec.counters.connected) - connected_before;
    ctx.all_arrived.cancel();

    phase.store(Phase::Settle as u8, Ordering::Relaxed);
    tokio::time::sleep(scenario.settle).await;
    let after = MemorySnapshot::take(&opts.server_pids);
    let open_after = get(&ctx.rec.counters.open);

    phase.store(Phase::Steady as u8, Ordering::Relaxed);
    let steady_start = Instant::now();
    let delivered_start = ctx.rec.counters.delivered();
    let cpu_start = cpu_of(&opts.server_pids);
    let mut storm_time = None;
    if let Some(storm) = &scenario.reconnect {
        tokio::time::sleep(storm.after).await;
        let now = Instant::now();
        *ctx.storm_at.lock().unwrap() = Some(now);
        storm_time = Some(now);
        phase.store(Phase::Storm as u8, Ordering::Relaxed);
        let _ = storm_tx.send(1);
        tokio::time::sleep_until(steady_start + scenario.duration).await;
    } else {
        tokio::time::sleep(scenario.duration).await;
    }
    let steady_end = Instant::now();
    let delivered_end = ctx.rec.counters.delivered();
    let cpu_end = cpu_of(&opts.server_pids);
    let routing = scenario.check_routing.then(|| {
        let loads: Vec<i64> = plan
            .agents
            .iter()
            .map(|&n| ctx.agent_open[n - 1].load(Ordering::Relaxed))
            .collect();
        RoutingReport {
            chats_started: get(&ctx.rec.counters.chats_started),
            assigned_or_queued: ctx.answered(),
            assigned_twice: get(&ctx.assigned_twice),
            agents: loads.len(),
            load_min: loads.iter().copied().min().unwrap_or(0),
            load_max: loads.iter().copied().max().unwrap_or(0),
        }
    });

    phase.store(Phase::Closing as u8, Ordering::Relaxed);
    ctx.stop.cancel();
    let closing = scenario.drain_timeout + Duration::from_secs(5);
    let left = join_within(&mut visitors, closing).await;
    if left > 0 {
        ctx.rec.error("visitor_task_timeout");
    }
    ctx.agents_stop.cancel();
    let left = join_within(&mut agents, scenario.drain_timeout + Duration::from_secs(5)).await;
    if left > 0 {
        ctx.rec.error("agent_task_timeout");
    }
    phase.store(Phase::Done as u8, Ordering::Relaxed);
    sampler_stop.cancel();
    let (series, servers) = sampler.await.context("sampler task")?;
    let finished = Instant::now();

    let totals = ctx.rec.totals.lock().unwrap().clone();
    let c = &ctx.rec.counters;
    let window = (steady_end - steady_start).as_secs_f64();
    let delivered_window = delivered_end - delivered_start;
    let cpu_window: f64 = cpu_end.iter().zip(&cpu_start).map(|(e, s)| e - s).sum();
    let arrival_secs = (arrival_end - arrival_start).as_secs_f64().max(1e-3);
    let storm = storm_time.map(|_| ResumeReport {
        dropped: get(&ctx.storm_dropped),
        resumed: get(&ctx.storm_resumed),
        full_recovery_ms: get(&ctx.storm_recovered_us) as f64 / 1000.0,
        resume_us: Summary::of(&totals.resume),
        duplicate_acks: get(&c.duplicate_acks),
    });
    let idle_memory = scenario
        .measure_idle_memory
        .then(|| IdleMemory::between(&before, &after, open_after.max(1)));
    let report = Report {
        scenario: scenario.name.clone(),
        target: opts.target,
        label: opts.label.clone(),
        urls,
        shard: format!("{}/{}", opts.shard.0 + 1, opts.shard.1),
        started_unix_ms: wire_now_ms(),
        machine,
        notes,
        plan_agents: plan.agents.len(),
        plan_visitors: plan.visitors.len(),
        phases: Phases {
            arrival_start_s: at(arrival_start),
            arrival_end_s: at(arrival_end),
            steady_start_s: at(steady_start),
            steady_end_s: at(steady_end),
            storm_s: storm_time.map(at),
            end_s: at(finished),
        },
        connections: ConnectionsReport {
            attempted: get(&c.connect_attempts),
            established: get(&c.connected),
            failed: get(&c.connect_failed),
            open_after_arrival: open_after,
            arrival_rate_per_s: arrival_connected as f64 / arrival_secs,
            connect_us: Summary::of(&totals.connect),
        },
        messages: MessagesReport {
            sent: get(&c.sent),
            delivered_v2a: get(&c.delivered_v2a),
            delivered_a2v: get(&c.delivered_a2v),
            acks: get(&c.acks),
            steady_delivered: delivered_window,
            steady_per_s: delivered_window as f64 / window.max(1e-3),
            v2a_us: Summary::of(&totals.v2a),
            a2v_us: Summary::of(&totals.a2v),
            server_cpu_us_per_message: (delivered_window > 0 && !opts.server_pids.is_empty())
                .then(|| cpu_window * 1e6 / delivered_window as f64),
        },
        chats: crate::report::ChatsReport {
            started: get(&c.chats_started),
            assigned: get(&c.assigned),
            queued: get(&c.queued),
            closed: get(&c.closed),
            time_to_agent_us: Summary::of(&totals.time_to_agent),
        },
        integrity: ctx.integrity(),
        routing,
        reconnect: storm,
        errors: ctx.rec.errors.lock().unwrap().clone(),
        servers,
        steady_server_cpu_percent: if window > 0.0 {
            cpu_window / window * 100.0
        } else {
            0.0
        },
        generator: generator_summary(&series),
        idle_memory,
        series,
        histograms: [
            ("connect", &totals.connect),
            ("time_to_agent", &totals.time_to_agent),
            ("v2a", &totals.v2a),
            ("a2v", &totals.a2v),
            ("resume", &totals.resume),
        ]
        .into_iter()
        .map(|(k, h)| (k.to_string(), stats::encode(h)))
        .collect(),
    };
    if let Some(path) = &opts.json {
        report.write_json(path)?;
    }
    if let Some(path) = &opts.chart {
        crate::chart::run_chart(&report, path)?;
    }
    Ok(report)
}

fn wire_now_ms() -> u64 {
    crate::wire::now_us() / 1000
}

fn gap(rate: f64) -> Option<Duration> {
    (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate))
}

/// Waits until client `i` is due at `rate` from `from` (none: at once). Sleeps only once every
/// millisecond's worth of clients, so high rates are not limited by timer resolution.
async fn pace(from: Instant, gap: Option<Duration>, i: usize) {
    if let Some(gap) = gap {
        let due = from + gap.mul_f64(i as f64);
        if due > Instant::now() + Duration::from_millis(1) {
            tokio::time::sleep_until(due).await;
        } else if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    } else if i % 64 == 63 {
        tokio::task::yield_now().await;
    }
}

/// Polls a counter until `done` or the deadline: phases of a load run, not test synchronisation.
async fn wait_until(deadline: Instant, done: impl Fn() -> bool) {
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Joins every task within `limit`; aborts and counts those still running.
async fn join_within(set: &mut JoinSet<()>, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    while !set.is_empty() {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(_) => {}
            Err(_) => {
                let left = set.len();
                set.abort_all();
                while set.join_next().await.is_some() {}
                return left;
            }
        }
    }
    0
}

fn cpu_of(pids: &[u32]) -> Vec<f64> {
    pids.iter()
        .map(|&p| procfs::sample(p).map(|s| s.cpu_seconds).unwrap_or(0.0))
        .collect()
}

/// Server memory and kernel socket memory at one instant.
#[derive(Debug, Clone, Default)]
pub struct MemorySnapshot {
    pub servers_rss_kib: u64,
    pub sock: procfs::SockStat,
    pub mem_available_kib: u64,
    pub slab_kib: u64,
}

impl MemorySnapshot {
    fn take(pids: &[u32]) -> Self {
        let info = procfs::meminfo();
        Self {
            servers_rss_kib: pids
                .iter()
                .filter_map(|&p| procfs::sample(p).ok())
                .map(|s| s.rss_kib)
                .sum(),
            sock: procfs::sockstat(),
            mem_available_kib: info.get("MemAvailable").copied().unwrap_or(0),
            slab_kib: info.get("Slab").copied().unwrap_or(0),
        }
    }
}

impl IdleMemory {
    fn between(before: &MemorySnapshot, after: &MemorySnapshot, connections: u64) -> Self {
        let per = |bytes: f64| bytes / connections as f64;
        let page = procfs::page_size() as f64;
        IdleMemory {
            connections,
            server_rss_before_kib: before.servers_rss_kib,
            server_rss_after_kib: after.servers_rss_kib,
            server_rss_per_connection_bytes: per((after.servers_rss_kib as f64
                - before.servers_rss_kib as f64)
                * 1024.0),
            tcp_mem_pages_before: before.sock.tcp_mem_pages,
            tcp_mem_pages_after: after.sock.tcp_mem_pages,
            kernel_tcp_per_connection_bytes: per((after.sock.tcp_mem_pages as f64
                - before.sock.tcp_mem_pages as f64)
                * page),
            slab_per_connection_bytes: per(
                (after.slab_kib as f64 - before.slab_kib as f64) * 1024.0
            ),
            machine_memory_per_connection_bytes: per((before.mem_available_kib as f64
                - after.mem_available_kib as f64)
                * 1024.0),
        }
    }
}

/// The once-a-second sampler: series points and the progress line.
async fn sample_loop(
    ctx: Arc<Ctx>,
    pids: Vec<u32>,
    phase: Arc<AtomicU8>,
    started: Instant,
    progress: bool,
    stop: CancellationToken,
) -> (Vec<Point>, Vec<ServerReport>) {
    let me = std::process::id();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let first: Vec<ProcSample> = pids
        .iter()
        .map(|&p| procfs::sample(p).unwrap_or_default())
        .collect();
    let mut servers: Vec<ServerReport> = pids
        .iter()
        .zip(&first)
        .map(|(&pid, s)| ServerReport {
            pid,
            cpu_seconds: 0.0,
            cpu_seconds_at_start: s.cpu_seconds,
            rss_start_kib: s.rss_kib,
            rss_peak_kib: s.rss_kib,
            rss_end_kib: s.rss_kib,
            fds_end: None,
        })
        .collect();
    let mut last_servers = first;
    let mut last_me = procfs::sample(me).unwrap_or_default();
    let mut last_at = Instant::now();
    let c = &ctx.rec.counters;
    let (mut last_delivered, mut last_sent, mut last_connected) = (0, 0, 0);
    let mut series = Vec::new();
    let is_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let now = Instant::now();
        let dt = (now - last_at).as_secs_f64().max(1e-3);
        last_at = now;
        let mut cpu = 0.0;
        let mut rss = 0;
        for (i, &pid) in pids.iter().enumerate() {
            if let Ok(s) = procfs::sample(pid) {
                cpu += (s.cpu_seconds - last_servers[i].cpu_seconds) / dt * 100.0;
                rss += s.rss_kib;
                let r = &mut servers[i];
                r.cpu_seconds = s.cpu_seconds - r.cpu_seconds_at_start;
                r.rss_peak_kib = r.rss_peak_kib.max(s.rss_kib);
                r.rss_end_kib = s.rss_kib;
                last_servers[i] = s;
            }
        }
        let mine = procfs::sample(me).unwrap_or_default();
        let gen_cpu = (mine.cpu_seconds - last_me.cpu_seconds) / dt * 100.0;
        last_me = mine;
        let delivered = c.delivered();
        let sent = get(&c.sent);
        let connected = get(&c.connected);
        let lat = ctx.rec.take_tick_latency();
        let errors: u64 = ctx.rec.errors.lock().unwrap().values().sum();
        let point = Point {
            t: (now - started).as_secs_f64(),
            phase: Phase::name(phase.load(Ordering::Relaxed)).to_string(),
            open: get(&c.open),
            connects_per_s: (connected - last_connected) as f64 / dt,
            sent_per_s: (sent - last_sent) as f64 / dt,
            delivered_per_s: (delivered - last_delivered) as f64 / dt,
            latency_p50_us: (!lat.is_empty()).then(|| lat.value_at_quantile(0.5)),
            latency_p99_us: (!lat.is_empty()).then(|| lat.value_at_quantile(0.99)),
            errors,
            server_cpu_percent: cpu,
            server_rss_kib: rss,
            generator_cpu_percent: gen_cpu,
        };
        (last_delivered, last_sent, last_connected) = (delivered, sent, connected);
        if progress {
            let line = point.progress_line();
            if is_tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
        }
        series.push(point);
        if stopping {
            break;
        }
    }
    if progress && is_tty {
        eprintln!();
    }
    for (r, &pid) in servers.iter_mut().zip(&pids) {
        r.fds_end = procfs::open_fds(pid);
    }
    (series, servers)
}

fn generator_summary(series: &[Point]) -> crate::report::GeneratorReport {
    let steady: Vec<f64> = series
        .iter()
        .filter(|p| p.phase == "steady" || p.phase == "storm")
        .map(|p| p.generator_cpu_percent)
        .collect();
    let mean = if steady.is_empty() {
        0.0
    } else {
        steady.iter().sum::<f64>() / steady.len() as f64
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    crate::report::GeneratorReport {
        steady_cpu_percent: mean,
        saturated: mean > 90.0 * cores,
    }
}
