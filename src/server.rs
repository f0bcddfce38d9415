//! Start-up, the accept loop and the graceful drain.
//!
//! Start-up is split as in zero2prod: [`Application::build`] binds the listener (port 0 in
//! tests), builds every part and reports the address it got; [`Application::run_until_stopped`]
//! serves until the shutdown token is cancelled, then drains. [`serve`] is both in one call for
//! a listener bound elsewhere, so `main`, the tests and the load tests start Parley the same way.
//!
//! The accept loop is ours rather than `axum::serve`'s because it must bound the number of
//! connections, time out slow request headers (slowloris), and hand upgraded sockets to a drain
//! that axum's graceful shutdown does not cover (axum issue 3003).
//!
//! Drain order on shutdown: stop accepting; tell every socket to close with 1012 (clients
//! reconnect and resume elsewhere or after the restart); wait for socket tasks; then flush the
//! transcripts while pending webhook deliveries get a last attempt. Everything happens within
//! `shutdown.drain_timeout`; if it does not complete, we say what is left and exit anyway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::Config;
use crate::connection::{Context, SocketSettings};
use crate::desk::csat::Surveys;
use crate::desk::teams::Directory;
use crate::desk::webhooks::{WebhookError, Webhooks};
use crate::desk::{ContentStore, Desk};
use crate::engine::backend::{Backend, DeskRequest, Services};
use crate::engine::desk::DeskEngine;
use crate::engine::local::LocalBackend;
use crate::engine::redis::{RedisBackend, RedisSettings};
use crate::engine::EngineSettings;
use crate::engine::SharedEngine;
use crate::http::sockets::ConnectionSlot;
use crate::http::{self, AppState};
use crate::limits::{RateLimits, SharedBudget};
use crate::metrics::{Metrics, ReasonLabel};
use crate::ops::{self, OpsFeed};
use crate::transcript::{
    self, PersistConfig, PersistHandle, PersistOutcome, PostgresStore, SqliteStore, TranscriptStore,
};

/// Why the server could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address} (setting `listen`)")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the transcript store: {0}")]
    Store(#[from] transcript::StoreError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("cannot restore open conversations: {0}")]
    Restore(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Webhooks(#[from] WebhookError),
    #[error("cannot load the knowledge base: {0}")]
    Desk(#[from] crate::desk::DeskError),
    #[error("cannot use redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the drain did not complete within {timeout:?}: {unflushed} messages not stored")]
    DrainIncomplete { timeout: Duration, unflushed: u64 },
}

/// How often the ops view takes a snapshot.
const OPS_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How often idle rate-limit keys are forgotten.
const LIMITS_CLEANUP: Duration = Duration::from_secs(60);

/// Pending connections the kernel holds before `accept`. tokio's default (1,024) overflows when
/// thousands of clients reconnect at once after a restart, and the dropped SYNs come back only
/// after a 1 s retransmit; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// The HTTP/1.1 request head (request line and headers) always accepted: hyper's default read
/// buffer bound (8 KiB + 100 x 4 KiB = 408 KiB), set here so that it is stated and a hyper
/// upgrade cannot move it unnoticed. A head whose end has not arrived once this much is buffered
/// is answered 431 and the connection closed. hyper reads into whatever room the buffer has, so
/// a head somewhat over it may still end within one read and pass; 1 MiB does not. It also
/// bounds what a slow client makes one connection buffer. (Header fields are limited to
/// hyper's default of 100, left as it is: setting it moves them from the stack to the heap.)
pub const MAX_REQUEST_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// The header list an HTTP/2 request may carry, advertised in `SETTINGS_MAX_HEADER_LIST_SIZE`
/// (hyper's default).
pub const MAX_HTTP2_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Runs Parley on `listener` until `shutdown` is cancelled, then drains.
///
/// # Errors
/// When start-up fails (store, keys, restore), or the drain left messages unstored.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_with_clock(config, listener, shutdown, Clock::system()).await
}

/// [`serve`] with the desk reading `clock`: tests pass a [`Clock::manual`] to move time.
///
/// # Errors
/// As [`serve`].
pub async fn serve_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    clock: Clock,
) -> Result<(), ServeError> {
    Application::with_listener(config, listener, clock)
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// Parley built and listening, not yet accepting: every part is ready, so an address reported
/// by [`Application::address`] is one that serves as soon as [`Application::run_until_stopped`]
/// runs (connections made before wait in the kernel's backlog).
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    config: Config,
    app: axum::Router,
    metrics: Arc<Metrics>,
    sockets: Sockets,
    background: Background,
}

/// The socket tasks and the signal that closes them, shared with every socket's [`Context`].
struct Sockets {
    /// Tracks socket tasks, so the drain waits for upgraded sockets too.
    tracker: TaskTracker,
    /// Cancelled when the drain starts: every socket closes with 1012.
    drain: CancellationToken,
}

/// What runs behind the sockets, stopped in order once they are closed.
struct Background {
    /// Kept for the drain, which asks the engine to hand over unwritten figures.
    engine: SharedEngine,
    /// Stops the engine's timers and the housekeeping tasks (limits, knowledge base, ops feed).
    stop: CancellationToken,
    persist: PersistHandle,
    /// Stops the persister after its last flush.
    persist_stop: CancellationToken,
    persist_task: JoinHandle<PersistOutcome>,
    webhooks: Webhooks,
    /// On one node, the store to mark as stopped cleanly once everything is stored, so that
    /// the next start knows no sequence number was handed out and lost.
    run_marker: Option<(Arc<dyn TranscriptStore>, Clock)>,
}

/// The parts the engine and the HTTP surface share, built before either.
struct Parts {
    store: Arc<dyn TranscriptStore>,
    persist: PersistHandle,
    metrics: Arc<Metrics>,
    webhooks: Webhooks,
    clock: Clock,
}

impl Application {
    /// Binds `config.listen` (port 0: any free port, see [`Application::port`]) and builds
    /// every part: stores, engine, persister, limits, metrics, the HTTP routes.
    ///
    /// # Errors
    /// When the address cannot be bound, or a part cannot start (store, keys, restore, Redis).
    pub async fn build(config: Config, clock: Clock) -> Result<Self, ServeError> {
        let listener = bind(config.listen).map_err(|source| ServeError::Listen {
            address: config.listen,
            source,
        })?;
        Self::with_listener(config, listener, clock).await
    }

    /// As [`Application::build`], on a listener bound by the caller.
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn with_listener(
        config: Config,
        listener: TcpListener,
        clock: Clock,
    ) -> Result<Self, ServeError> {
        let address = listener.local_addr().map_err(|source| ServeError::Listen {
            address: config.listen,
            source,
        })?;
        let (store, content) = open_stores(&config).await?;
        let metrics = Arc::new(Metrics::new());
        let desk = Desk::open(content, metrics.clone()).await?;
        if let Some(url) = &config.redis.url {
            crate::engine::redis::share_visitor_key(
                url,
                config.redis.cluster,
                &config.redis.key_prefix,
                &config.data_dir,
            )
            .await;
        }
        let auth = Arc::new(Authenticator::from_config(&config)?);
        let webhooks = Webhooks::start(&config.webhooks, &config.webhook_delivery, &metrics)?;
        let persist_stop = CancellationToken::new();
        let (persist, persist_task) = start_persister(&config, store.clone(), &persist_stop);
        let parts = Parts {
            store,
            persist,
            metrics,
            webhooks,
            clock,
        };
        let stop = CancellationToken::new();
        let engine = start_engine(&config, &auth, &parts, &stop).await?;
        let run_marker = config
            .redis
            .url
            .is_none()
            .then(|| (parts.store.clone(), parts.clock.clone()));
        let limits = Arc::new(rate_limits(&config).await?);
        spawn_housekeeping(&config, &limits, &desk, &stop);
        let sockets = Sockets {
            tracker: TaskTracker::new(),
            drain: CancellationToken::new(),
        };
        let ctx = Arc::new(socket_context(
            &config,
            &parts,
            engine.clone(),
            limits,
            auth,
            &sockets,
        ));
        let ops = start_ops_feed(&parts, &ctx, &stop);
        let app = http::router(app_state(&config, &parts, ctx, ops, desk));
        Ok(Self {
            listener,
            address,
            config,
            app,
            metrics: parts.metrics,
            sockets,
            background: Background {
                engine,
                stop,
                persist: parts.persist,
                persist_stop,
                persist_task,
                webhooks: parts.webhooks,
                run_marker,
            },
        })
    }

    /// The address Parley listens on, with the port the system chose if `listen` asked for 0.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The port Parley listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves until `shutdown` is cancelled, then drains.
    ///
    /// # Errors
    /// When the drain left messages unstored.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let address = self.address;
        // Logged once everything is ready, so "Parley on" means it serves.
        tracing::info!(
            "Parley on http://{address}: visitors ws://{address}/v1/visitor, agents ws://{address}/v1/agent, metrics /metrics"
        );
        accept_loop(
            &self.listener,
            &self.app,
            &self.config,
            &self.metrics,
            &self.sockets.tracker,
            &shutdown,
        )
        .await;
        drop(self.listener);
        let started = Instant::now();
        let deadline = self.config.shutdown.drain_timeout;
        close_sockets(&self.sockets, &self.metrics, deadline).await;
        self.background.stop(started, deadline).await
    }
}

/// Binds with a backlog of [`LISTEN_BACKLOG`] and, as `TcpListener::bind` does, `SO_REUSEADDR`
/// so that a restarted server can take its port back at once.
fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// PostgreSQL when several nodes share the transcripts; SQLite (one file) otherwise. The desk's
/// content lives in the same database.
async fn open_stores(
    config: &Config,
) -> Result<(Arc<dyn TranscriptStore>, Arc<dyn ContentStore>), ServeError> {
    let database = config.database_url();
    let busy = config.transcripts.store_busy_timeout;
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        let pg = Arc::new(PostgresStore::open(&database, busy).await?);
        return Ok((pg.clone(), pg));
    }
    let sqlite =
        Arc::new(SqliteStore::open_synced(&database, busy, config.transcripts.fsync).await?);
    if config.redis.url.is_some() && config.database.is_none() {
        // Allowed (one node on Redis, a trial), but several nodes must share one store.
        tracing::warn!(
            "redis is set but transcripts go to this node's own SQLite file: other nodes cannot serve them; with several nodes, set --database postgres://…"
        );
    }
    Ok((sqlite.clone(), sqlite))
}

/// The write-behind persister; it stops, after a last flush, when `stop` is cancelled.
fn start_persister(
    config: &Config,
    store: Arc<dyn TranscriptStore>,
    stop: &CancellationToken,
) -> (PersistHandle, JoinHandle<PersistOutcome>) {
    transcript::spawn(
        store,
        PersistConfig {
            batch_size: config.transcripts.batch_size,
            flush_interval: config.transcripts.flush_interval,
            max_pending: config.transcripts.max_pending,
            group_commit_wait: config.transcripts.group_commit_wait,
        },
        stop.clone(),
    )
}

/// The in-process engine without `redis.url` (everything in this process, exactly as a single
/// node always was), the Redis one with it. The in-process engine restores the conversations
/// the store holds open.
async fn start_engine(
    config: &Config,
    auth: &Authenticator,
    parts: &Parts,
    stop: &CancellationToken,
) -> Result<SharedEngine, ServeError> {
    let agents: HashMap<_, _> = auth
        .agents()
        .map(|p| (p.id.clone(), (p.name.clone(), p.capacity)))
        .collect();
    let settings = EngineSettings::from_config(config, agents);
    // The desk's rules run once, above either backend.
    fn desk<B: Backend>(
        backend: Arc<B>,
        services: &Services,
        requests: mpsc::UnboundedReceiver<DeskRequest>,
    ) -> SharedEngine {
        let desk = Arc::new(DeskEngine::new(backend, services));
        desk.spawn_ticker(services.shutdown.clone());
        desk.serve_requests(requests);
        desk
    }
    // What a backend asks of the desk on its own (a visitor's grace period ran out).
    let (to_desk, requests) = mpsc::unbounded_channel();
    let services = Services {
        settings,
        persist: parts.persist.clone(),
        metrics: parts.metrics.clone(),
        webhooks: parts.webhooks.clone(),
        shutdown: stop.clone(),
        clock: parts.clock.clone(),
        requests: to_desk,
    };
    let Some(url) = &config.redis.url else {
        let backend = Arc::new(LocalBackend::new(services.clone(), parts.store.clone()));
        let restored = backend.restore().await?;
        if restored > 0 {
            tracing::info!(conversations = restored, "restored open conversations");
        }
        return Ok(desk(backend, &services, requests));
    };
    let redis = RedisSettings::from_config(&config.redis, url);
    let backend = RedisBackend::start(services.clone(), redis, parts.store.clone()).await?;
    Ok(desk(Arc::new(backend), &services, requests))
}

/// Per-process limits; with Redis, the visitor message budget is shared by every node.
async fn rate_limits(config: &Config) -> Result<RateLimits, ServeError> {
    let limits = RateLimits::new(&config.rate_limits);
    let Some(url) = &config.redis.url else {
        return Ok(limits);
    };
    let shared = SharedBudget::new(
        crate::engine::redis::conn::Conn::open(
            url,
            config.redis.cluster,
            Duration::from_millis(500),
        )
        .await?,
        crate::engine::redis::keys::Keys::new(&config.redis.key_prefix),
        &config.rate_limits,
    );
    Ok(limits.with_shared(shared))
}

/// Tasks that keep state fresh until `stop`: forgetting idle rate-limit keys, and reloading the
/// articles that other nodes (or an admin's script on the same SQLite file) may change.
fn spawn_housekeeping(
    config: &Config,
    limits: &Arc<RateLimits>,
    desk: &Desk,
    stop: &CancellationToken,
) {
    tokio::spawn(forget_idle_limits(limits.clone(), stop.clone()));
    tokio::spawn(
        desk.kb
            .clone()
            .keep_fresh(config.kb.refresh_interval, stop.clone()),
    );
}

/// What every socket task shares.
fn socket_context(
    config: &Config,
    parts: &Parts,
    engine: SharedEngine,
    limits: Arc<RateLimits>,
    auth: Arc<Authenticator>,
    sockets: &Sockets,
) -> Context {
    Context {
        engine,
        limits,
        metrics: parts.metrics.clone(),
        auth,
        settings: SocketSettings {
            outbound_queue: config.limits.outbound_queue,
            hello_timeout: config.limits.hello_timeout,
            idle_timeout: config.limits.idle_timeout,
            ping_interval: config.limits.ping_interval,
            text_max_chars: config.limits.text_max_chars,
            default_category: config.routing.default_category.clone(),
        },
        drain: sockets.drain.clone(),
        tracker: sockets.tracker.clone(),
        surveys: Arc::new(Surveys {
            store: parts.store.clone(),
            persist: parts.persist.clone(),
            clock: parts.clock.clone(),
            window: config.desk.csat_window,
            metrics: parts.metrics.clone(),
            webhooks: parts.webhooks.clone(),
        }),
    }
}

/// The ops view, sampled every [`OPS_SAMPLE_EVERY`] until `stop`.
fn start_ops_feed(parts: &Parts, ctx: &Context, stop: &CancellationToken) -> Arc<OpsFeed> {
    let ops = OpsFeed::new();
    tokio::spawn(ops::sample(
        ops.clone(),
        parts.metrics.clone(),
        ctx.engine.categories().clone(),
        parts.persist.clone(),
        OPS_SAMPLE_EVERY,
        stop.clone(),
    ));
    ops
}

/// The HTTP surface's shared state.
fn app_state(
    config: &Config,
    parts: &Parts,
    ctx: Arc<Context>,
    ops: Arc<OpsFeed>,
    desk: Desk,
) -> AppState {
    AppState {
        ctx,
        store: parts.store.clone(),
        persist: parts.persist.clone(),
        ops,
        desk,
        frame_max_bytes: config.limits.frame_max_bytes,
        clock: parts.clock.clone(),
        report_zone: http::reports::ReportZone {
            // Validated at start-up, so the fallback is never taken.
            tz: jiff::tz::TimeZone::get(&config.desk.timezone).unwrap_or(jiff::tz::TimeZone::UTC),
            name: config.desk.timezone.clone(),
        },
        directory: Arc::new(Directory::from_config(config)),
        csat: config.desk.csat,
        category_labels: Arc::new(http::health::CategoryLabels::from_config(config)),
    }
}

/// The drain's first step: every socket is told to close with 1012, and given until `deadline`.
///
/// The sockets are counted by the connections gauge, not by the tracker: the tracker also holds
/// each socket's writer task and every plain HTTP connection, so its length said two per socket.
async fn close_sockets(sockets: &Sockets, metrics: &Metrics, deadline: Duration) {
    let tracker = &sockets.tracker;
    tracing::info!(
        sockets = metrics.open_sockets(),
        "draining: closing sockets with 1012"
    );
    sockets.drain.cancel();
    tracker.close();
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            sockets = metrics.open_sockets(),
            tasks = tracker.len(),
            "sockets did not close in time"
        );
    }
}

impl Background {
    /// The drain's second step, once the sockets are closed: the engine hands over its figures,
    /// its timers stop, and the transcripts flush while webhooks get a last attempt, all within
    /// what is left of `deadline` since `started`.
    async fn stop(self, started: Instant, deadline: Duration) -> Result<(), ServeError> {
        self.engine.checkpoint();
        self.stop.cancel();
        self.persist_stop.cancel();
        let remaining = deadline.saturating_sub(started.elapsed());
        // What webhooks leave undelivered is logged there and does not fail the drain (they are
        // best effort, in memory).
        let (flushed, _undelivered) = tokio::join!(
            tokio::time::timeout(remaining, self.persist_task),
            self.webhooks.drain(remaining)
        );
        let unflushed = match flushed {
            Ok(Ok(outcome)) => outcome.unflushed,
            Ok(Err(join)) => {
                tracing::error!(error = %join, "persister task failed");
                self.persist.stats().pending
            }
            Err(_) => self.persist.stats().pending,
        };
        if unflushed > 0 {
            tracing::error!(
                unflushed,
                "drain did not complete within {deadline:?}; terminating now"
            );
            return Err(ServeError::DrainIncomplete {
                timeout: deadline,
                unflushed,
            });
        }
        if let Some((store, clock)) = &self.run_marker {
            if let Err(error) = store.end_run(clock.now_millis()).await {
                // The next start then skips sequence numbers it need not skip: harmless.
                tracing::warn!(%error, "could not record the clean stop");
            }
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "drained; transcripts flushed"
        );
        Ok(())
    }
}

async fn accept_loop(
    listener: &TcpListener,
    app: &axum::Router,
    config: &Config,
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(config.limits.max_connections));
    let header_timeout = config.limits.header_read_timeout;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Usually EMFILE: out of file descriptors. Back off briefly instead of
                    // spinning; existing connections keep being served.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // At the bound: answer 503 at once rather than leave the client hanging.
            metrics
                .connections_refused
                .get_or_create(&ReasonLabel {
                    reason: "max_connections",
                })
                .inc();
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        let slot = ConnectionSlot(Arc::new(permit));
        tracker.spawn(serve_connection(
            stream,
            peer,
            slot,
            app,
            header_timeout,
            shutdown,
        ));
    }
}

/// One TCP connection: HTTP/1.1 (with upgrades) or HTTP/2.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    app: axum::Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let service = app.map_request(
        move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req.extensions_mut().insert(slot.clone());
            req
        },
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    builder
        .http2()
        .max_header_list_size(MAX_HTTP2_HEADER_LIST_BYTES);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            // Plain HTTP keep-alive connections finish their request and close; upgraded
            // sockets were handed off already and are drained by their own tasks.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn refuse_busy(mut stream: TcpStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
    )
    .await;
}

async fn forget_idle_limits(limits: Arc<RateLimits>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(LIMITS_CLEANUP);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => limits.retain_recent(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn build_binds_port_zero_and_reports_the_port_it_serves_on() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let app = Application::build(config, Clock::system()).await.unwrap();
        let address = app.address();
        assert_ne!(app.port(), 0, "the system's choice, not the 0 asked for");
        assert_eq!(address.port(), app.port());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let health = reqwest::get(format!("http://{address}/healthz"))
            .await
            .unwrap();
        assert!(health.status().is_success(), "{}", health.status());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("drained in time")
            .expect("no panic")
            .expect("a clean drain");
    }
}
