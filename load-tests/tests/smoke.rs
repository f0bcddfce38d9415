//! The CI smoke run: a tiny scenario for a couple of seconds against a real Parley (in-process,
//! port 0) and against the bare relay, through the real generator. It keeps the tool working:
//! messages must be delivered both ways with zero errors, nothing lost or duplicated, and the
//! JSON report and the chart must be written. Every phase of a run is bounded by the scenario's
//! timeouts, and the whole test by [`LIMIT`].

use std::path::Path;
use std::time::Duration;

use parley::config::{AgentConfig, Config};
use parley_load::report::Report;
use parley_load::run::{self, RunOptions};
use parley_load::scenario::Scenario;
use parley_load::wire::TargetKind;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);

fn scenario() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let mut s = Scenario::load(&path).expect("smoke scenario");
    // Even smaller than the shipped smoke scenario: CI machines are shared.
    s.visitors.count = 12;
    s.agents.count = 3;
    s.duration = Duration::from_millis(1500);
    s
}

fn parley_config(scenario: &Scenario, data_dir: &Path) -> Config {
    let mut c = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    c.auth.demo = Some(false);
    c.agents = (1..=scenario.agents.count)
        .map(|n| {
            let (id, token) = scenario.agent_identity(n);
            AgentConfig {
                id,
                name: format!("Load agent {n}"),
                token_sha256: parley::config::sha256_hex(&token),
                capacity: Some(scenario.agents.capacity),
                teams: Vec::new(),
            }
        })
        .collect();
    // Independent chats, as the generator plays them (see server_config.rs).
    c.desk.reopen_window = std::time::Duration::ZERO;
    let r = &mut c.rate_limits;
    r.visitor_messages_per_second = 1000;
    r.visitor_message_burst = 1000;
    r.visitor_conversations_per_hour = 100_000;
    r.ip_connections_per_minute = 100_000;
    r.frames_per_second = 1000;
    r.frame_burst = 1000;
    r.agent_messages_per_second = 1000;
    r.agent_message_burst = 1000;
    c
}

async fn run_against(target: TargetKind, url: String, dir: &Path) -> Report {
    let json = dir.join(format!("{}.json", target.as_str()));
    let chart = dir.join(format!("{}.svg", target.as_str()));
    let report = tokio::time::timeout(
        LIMIT,
        run::run(RunOptions {
            scenario: scenario(),
            target,
            label: target.as_str().into(),
            urls: vec![url],
            // In-process: the figures include the generator, which is fine for a smoke run.
            server_pids: vec![std::process::id()],
            shard: (0, 1),
            json: Some(json.clone()),
            chart: Some(chart.clone()),
            progress: false,
        }),
    )
    .await
    .expect("the run ends in time")
    .expect("the run succeeds");
    let written = Report::read_json(&json).expect("the JSON report is written and parses");
    assert_eq!(written.messages.sent, report.messages.sent);
    let svg = std::fs::read_to_string(&chart).expect("the chart is written");
    assert!(svg.starts_with("<svg"), "an SVG chart");
    report
}

fn assert_healthy(report: &Report) {
    let table = report.table();
    assert!(
        report.errors.is_empty(),
        "errors: {:?}\n{table}",
        report.errors
    );
    assert_eq!(report.connections.failed, 0, "{table}");
    assert!(report.messages.delivered_v2a > 0, "{table}");
    assert!(report.messages.delivered_a2v > 0, "{table}");
    assert!(
        report.messages.v2a_us.count > 0,
        "latency recorded\n{table}"
    );
    assert!(report.chats.assigned > 0, "{table}");
    assert_eq!(report.integrity.lost, 0, "{table}");
    assert_eq!(report.integrity.duplicated, 0, "{table}");
    assert!(report.integrity.conversations_checked > 0, "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_scenario_runs_against_parley_and_the_relay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = scenario();

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let parley_addr = listener.local_addr().unwrap();
    let stop_parley = CancellationToken::new();
    let parley = tokio::spawn(parley::server::serve(
        parley_config(&scenario, &dir.path().join("data")),
        listener,
        stop_parley.clone(),
    ));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let relay_addr = listener.local_addr().unwrap();
    let stop_relay = CancellationToken::new();
    let relay = tokio::spawn(parley_load::relay::serve(listener, stop_relay.clone()));

    let report = run_against(
        TargetKind::Parley,
        format!("ws://{parley_addr}"),
        dir.path(),
    )
    .await;
    assert_healthy(&report);
    merging_shards_of_different_nodes_adds_their_memory(&report);
    let report = run_against(TargetKind::Relay, format!("ws://{relay_addr}"), dir.path()).await;
    assert_healthy(&report);

    stop_parley.cancel();
    stop_relay.cancel();
    tokio::time::timeout(LIMIT, parley)
        .await
        .expect("parley drains in time")
        .expect("parley task")
        .expect("clean shutdown");
    tokio::time::timeout(LIMIT, relay)
        .await
        .expect("relay stops in time")
        .expect("relay task");
}

/// Two shards that each watched their own node: connections, RSS and servers add up; two that
/// watched the same node: only connections do.
fn merging_shards_of_different_nodes_adds_their_memory(report: &Report) {
    let shard = |pid: u32, connections: u64, before: u64, after: u64| {
        let mut r = report.clone();
        r.servers.truncate(1);
        r.servers[0].pid = pid;
        r.idle_memory = Some(parley_load::report::IdleMemory {
            connections,
            server_rss_before_kib: before,
            server_rss_after_kib: after,
            server_rss_per_connection_bytes: 0.0,
            tcp_mem_pages_before: 0,
            tcp_mem_pages_after: 0,
            kernel_tcp_per_connection_bytes: 0.0,
            slab_per_connection_bytes: 0.0,
            machine_memory_per_connection_bytes: 0.0,
        });
        r
    };
    let merged = parley_load::report::merge(vec![
        shard(101, 1000, 10_000, 17_000),
        shard(102, 1000, 12_000, 19_000),
    ])
    .unwrap();
    let idle = merged.idle_memory.unwrap();
    assert_eq!(idle.connections, 2000);
    assert_eq!(
        (idle.server_rss_before_kib, idle.server_rss_after_kib),
        (22_000, 36_000)
    );
    assert_eq!(
        idle.server_rss_per_connection_bytes,
        14_000.0 * 1024.0 / 2000.0
    );
    assert_eq!(merged.servers.len(), 2);

    let merged = parley_load::report::merge(vec![
        shard(101, 1000, 10_000, 24_000),
        shard(101, 1000, 10_000, 24_000),
    ])
    .unwrap();
    let idle = merged.idle_memory.unwrap();
    assert_eq!(idle.connections, 2000);
    assert_eq!(
        idle.server_rss_per_connection_bytes,
        14_000.0 * 1024.0 / 2000.0
    );
    assert_eq!(merged.servers.len(), 1);
}

#[test]
fn a_plan_over_the_open_file_limit_is_refused_with_advice() {
    let (_, hard) = parley_load::procfs::raise_open_files();
    if hard > 2_000_000 {
        // A machine without a practical limit: nothing to refuse.
        return;
    }
    let mut s = scenario();
    s.visitors.count = hard as usize + 1_000;
    let plan = run::Plan::new(&s, (0, 1));
    let err = run::check_plan(&s, &plan, (0, 1)).unwrap_err().to_string();
    assert!(err.contains("--shard"), "{err}");
    // Split in two, each share is half.
    let plan = run::Plan::new(&s, (0, 2));
    assert_eq!(plan.visitors.len(), s.visitors.count.div_ceil(2));
}
