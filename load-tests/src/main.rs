//! The `parley-load` command: thin; everything lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use parley_load::report::{self, Report};
use parley_load::run::{self, RunOptions};
use parley_load::scenario::Scenario;
use parley_load::wire::TargetKind;
use parley_load::{chart, relay, server_config};

/// Load generator, bare relay and side-by-side comparison for Parley.
#[derive(Debug, Parser)]
#[command(name = "parley-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play a scenario against a server and report (table on stdout, JSON and SVG if asked).
    Run(RunArgs),
    /// The bare relay: the floor Parley is compared with.
    Relay {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: std::net::SocketAddr,
    },
    /// Print a parley.toml with the scenario's agents (known tokens) and raised limits.
    ParleyConfig {
        scenario: PathBuf,
        /// Number of agents [default: the scenario's]
        #[arg(long)]
        agents: Option<usize>,
        /// Chats per agent [default: the scenario's]
        #[arg(long)]
        capacity: Option<u32>,
    },
    /// Put the reports of several runs side by side: medians per label and ratios.
    Compare {
        reports: Vec<PathBuf>,
        /// The label the others are divided by.
        #[arg(long, default_value = "relay")]
        baseline: String,
        /// Also draw the runs on the same axes (SVG).
        #[arg(long)]
        chart: Option<PathBuf>,
    },
    /// Combine the reports of the generator processes of one run (--shard).
    Merge {
        reports: Vec<PathBuf>,
        #[arg(long, short)]
        output: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The scenario file (load-tests/scenarios/*.toml).
    scenario: PathBuf,
    /// What runs at the URLs: parley and relay speak Parley's protocol, socketio Socket.IO's.
    #[arg(long, value_enum, default_value = "parley")]
    target: TargetKind,
    /// A node, ws://HOST:PORT; repeat for several nodes [default: the scenario's urls]
    #[arg(long = "url")]
    urls: Vec<String>,
    /// A server process to watch (CPU, RSS); repeat for several nodes.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Names the results [default: the target]
    #[arg(long)]
    label: Option<String>,
    /// This process's share of the clients, I/N (from 1/N to N/N).
    #[arg(long, default_value = "1/1", value_parser = parse_shard)]
    shard: (usize, usize),
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw throughput and latency over time (SVG).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Runtime worker threads [default: the cores this process may use]
    #[arg(long)]
    threads: Option<usize>,
    /// Overrides for short runs: visitors.
    #[arg(long)]
    visitors: Option<usize>,
    /// Overrides: agents.
    #[arg(long)]
    agents: Option<usize>,
    /// Overrides: the steady window, e.g. 5s.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Overrides: visitor arrival rate per second.
    #[arg(long)]
    arrival_rate: Option<f64>,
    /// Overrides: visitor think time, e.g. 500ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    think: Option<Duration>,
    /// Overrides: source addresses (127.0.0.1..N).
    #[arg(long)]
    source_addresses: Option<u8>,
    /// Exit non-zero if any error was counted.
    #[arg(long)]
    fail_on_error: bool,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 1/2")?;
    let i: usize = i.parse().map_err(|_| "I must be a number")?;
    let n: usize = n.parse().map_err(|_| "N must be a number")?;
    if n == 0 || i == 0 || i > n {
        return Err("expected 1 <= I <= N".into());
    }
    Ok((i - 1, n))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let mut scenario = Scenario::load(&args.scenario)?;
            if let Some(v) = args.visitors {
                scenario.visitors.count = v;
            }
            if let Some(a) = args.agents {
                scenario.agents.count = a;
            }
            if let Some(d) = args.duration {
                scenario.duration = d;
                if let Some(r) = scenario.reconnect.as_mut() {
                    r.after = r.after.min(d / 2);
                }
            }
            if let Some(r) = args.arrival_rate {
                scenario.visitors.arrival_rate = r;
            }
            if let Some(t) = args.think {
                scenario.visitors.think = t;
            }
            if let Some(s) = args.source_addresses {
                scenario.source_addresses = s;
            }
            scenario.validate()?;
            let fail_on_error = args.fail_on_error;
            let opts = RunOptions {
                label: args
                    .label
                    .unwrap_or_else(|| args.target.as_str().to_string()),
                scenario,
                target: args.target,
                urls: args.urls,
                server_pids: args.server_pids,
                shard: args.shard,
                json: args.json,
                chart: args.chart,
                progress: !args.quiet,
            };
            let report = runtime(args.threads)?.block_on(run::run(opts))?;
            print!("{}", report.table());
            if fail_on_error && report.total_errors() > 0 {
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Relay { listen } => {
            runtime(None)?.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                eprintln!("bare relay on ws://{listen} (visitors /v1/visitor, agents /v1/agent?token=...)");
                let shutdown = tokio_util::sync::CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    stop.cancel();
                });
                #[cfg(unix)]
                {
                    let stop = shutdown.clone();
                    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                    tokio::spawn(async move {
                        term.recv().await;
                        stop.cancel();
                    });
                }
                relay::serve(listener, shutdown).await;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ParleyConfig {
            scenario,
            agents,
            capacity,
        } => {
            let scenario = Scenario::load(&scenario)?;
            print!(
                "{}",
                server_config::parley_toml(&scenario, agents, capacity)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare {
            reports,
            baseline,
            chart: chart_path,
        } => {
            let reports = reports
                .iter()
                .map(|p| Report::read_json(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::ensure!(!reports.is_empty(), "no reports given");
            print!("{}", report::compare(&reports, &baseline));
            if let Some(path) = chart_path {
                chart::compare_chart(&reports, &path)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Merge { reports, output } => {
            let reports = reports
                .iter()
                .map(|p| Report::read_json(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let merged = report::merge(reports)?;
            merged.write_json(&output)?;
            print!("{}", merged.table());
            Ok(ExitCode::SUCCESS)
        }
    }
}
