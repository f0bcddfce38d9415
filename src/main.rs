//! The `parley` command: thin on purpose; everything lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use parley::cli::{Cli, Command};
use parley::clock::Clock;
use parley::config::{self, LogFormat};
use parley::server::Application;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::HashToken(args) => {
            let token = match args.token {
                Some(t) => t,
                None => {
                    let mut line = String::new();
                    if std::io::stdin().read_line(&mut line).is_err() {
                        eprintln!("error: cannot read the token from standard input");
                        return ExitCode::from(2);
                    }
                    line.trim().to_string()
                }
            };
            println!("{}", config::sha256_hex(&token));
            ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            let config = match config::load(args.config.as_deref(), args.as_overrides()) {
                Ok(c) => c,
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::from(2);
                }
            };
            init_tracing(config.log_format);
            match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(config: config::Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Before start-up, so that a signal while the store opens still drains instead of
        // killing the process.
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        let app = Application::build(config, Clock::system()).await?;
        app.run_until_stopped(shutdown).await?;
        Ok(())
    })
}

/// Ctrl-C or SIGTERM starts the drain; a second one exits at once.
async fn stop_on_signal(shutdown: CancellationToken) {
    // One set of handlers for both waits: a handler registered after a signal
    // arrived would report that same signal again and skip the drain.
    let mut signals = Signals::new();
    signals.next().await;
    tracing::info!("shutdown requested; draining (signal again to exit at once)");
    shutdown.cancel();
    signals.next().await;
    tracing::warn!("second signal: exiting without completing the drain");
    std::process::exit(130);
}

struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            interrupt: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    #[cfg(not(unix))]
    fn new() -> Self {
        Self {}
    }

    #[cfg(unix)]
    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG, not a PARLEY_ variable: those are all settings.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    // Logs go to standard error, leaving standard output to commands that print results.
    // Colour only on a terminal: written to a file or a journal, escape codes are noise that
    // breaks grep. NO_COLOR (no-color.org) turns it off on a terminal too.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
