//! Start-up, the accept loop and the graceful drain.
//!
//! [`serve`] takes a bound listener, so `main` and the tests start Parley the same way (tests
//! bind port 0). The accept loop is ours rather than `axum::serve`'s because it must bound the
//! number of connections, time out slow request headers (slowloris), and hand upgraded sockets
//! to a drain that axum's graceful shutdown does not cover (axum issue 3003).
//!
//! Drain order on shutdown: stop accepting; tell every socket to close with 1012 (clients
//! reconnect and resume elsewhere or after the restart); wait for socket tasks; then flush the
//! transcripts while pending webhook deliveries get a last attempt. Everything happens within `shutdown.drain_timeout`; if it does not complete, we
//! say what is left and exit anyway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
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
use crate::engine::local::LocalEngine;
use crate::engine::redis::{RedisEngine, RedisSettings};
use crate::engine::EngineSettings;
use crate::engine::SharedEngine;
use crate::http::sockets::ConnectionSlot;
use crate::http::{self, AppState};
use crate::limits::{RateLimits, SharedBudget};
use crate::metrics::{Metrics, ReasonLabel};
use crate::ops::{self, OpsFeed};
use crate::transcript::{self, PersistConfig, PostgresStore, SqliteStore, TranscriptStore};

/// Why the server could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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
    let database = config.database_url();
    // PostgreSQL when several nodes share the transcripts; SQLite (one file) otherwise. The
    // desk's content lives in the same database.
    let (store, content): (Arc<dyn TranscriptStore>, Arc<dyn ContentStore>) = if database
        .starts_with("postgres://")
        || database.starts_with("postgresql://")
    {
        let pg =
            Arc::new(PostgresStore::open(&database, config.transcripts.store_busy_timeout).await?);
        (pg.clone(), pg)
    } else {
        let sqlite =
            Arc::new(SqliteStore::open(&database, config.transcripts.store_busy_timeout).await?);
        (sqlite.clone(), sqlite)
    };
    let metrics = Arc::new(Metrics::new());
    if config.redis.url.is_some() && config.database.is_none() {
        // Allowed (one node on Redis, a trial), but several nodes must share one store.
        tracing::warn!(
            "redis is set but transcripts go to this node's own SQLite file: other nodes cannot serve them; with several nodes, set --database postgres://…"
        );
    }
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
    let (persist, persist_task) = transcript::spawn(
        store.clone(),
        PersistConfig {
            batch_size: config.transcripts.batch_size,
            flush_interval: config.transcripts.flush_interval,
            max_pending: config.transcripts.max_pending,
        },
        persist_stop.clone(),
    );

    let engine_stop = CancellationToken::new();
    let agents: HashMap<_, _> = auth
        .agents()
        .map(|p| (p.id.clone(), (p.name.clone(), p.capacity)))
        .collect();
    let settings = EngineSettings::from_config(&config, agents);
    // No Redis setting: everything in this process, exactly as a single node always was.
    let (engine, limits): (SharedEngine, RateLimits) = match &config.redis.url {
        None => {
            let engine = LocalEngine::new(
                settings,
                persist.clone(),
                store.clone(),
                metrics.clone(),
                webhooks.clone(),
                engine_stop.clone(),
                clock.clone(),
            );
            let restored = engine.restore().await?;
            if restored > 0 {
                tracing::info!(conversations = restored, "restored open conversations");
            }
            (Arc::new(engine), RateLimits::new(&config.rate_limits))
        }
        Some(url) => {
            let engine = RedisEngine::start(
                settings,
                RedisSettings::from_config(&config.redis, url),
                persist.clone(),
                metrics.clone(),
                webhooks.clone(),
                engine_stop.clone(),
                clock.clone(),
            )
            .await?;
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
            (
                Arc::new(engine),
                RateLimits::new(&config.rate_limits).with_shared(shared),
            )
        }
    };

    // Kept for the drain, which asks the engine to hand over unwritten figures.
    let app_engine = engine.clone();
    let limits = Arc::new(limits);
    tokio::spawn(forget_idle_limits(limits.clone(), engine_stop.clone()));
    // Other nodes (or an admin's script on the same SQLite file) may change the articles.
    tokio::spawn(
        desk.kb
            .clone()
            .keep_fresh(config.kb.refresh_interval, engine_stop.clone()),
    );

    let tracker = TaskTracker::new();
    let drain = CancellationToken::new();
    let ctx = Arc::new(Context {
        engine,
        limits,
        metrics: metrics.clone(),
        auth,
        settings: SocketSettings {
            outbound_queue: config.limits.outbound_queue,
            hello_timeout: config.limits.hello_timeout,
            idle_timeout: config.limits.idle_timeout,
            ping_interval: config.limits.ping_interval,
            text_max_chars: config.limits.text_max_chars,
            default_category: config.routing.default_category.clone(),
        },
        drain: drain.clone(),
        tracker: tracker.clone(),
        surveys: Arc::new(Surveys {
            store: store.clone(),
            persist: persist.clone(),
            clock: clock.clone(),
            window: config.desk.csat_window,
            metrics: metrics.clone(),
            webhooks: webhooks.clone(),
        }),
    });
    let ops = OpsFeed::new();
    tokio::spawn(ops::sample(
        ops.clone(),
        metrics.clone(),
        ctx.engine.categories().clone(),
        persist.clone(),
        OPS_SAMPLE_EVERY,
        engine_stop.clone(),
    ));
    let app = http::router(AppState {
        ctx,
        store,
        persist: persist.clone(),
        ops,
        desk,
        frame_max_bytes: config.limits.frame_max_bytes,
        clock: clock.clone(),
        report_zone: http::reports::ReportZone {
            // Validated at start-up, so the fallback is never taken.
            tz: jiff::tz::TimeZone::get(&config.desk.timezone).unwrap_or(jiff::tz::TimeZone::UTC),
            name: config.desk.timezone.clone(),
        },
        directory: Arc::new(Directory::from_config(&config)),
        csat: config.desk.csat,
    });

    // Logged once everything is ready, so "Parley on" means it serves.
    if let Ok(address) = listener.local_addr() {
        tracing::info!(
            "Parley on http://{address}: visitors ws://{address}/v1/visitor, agents ws://{address}/v1/agent, metrics /metrics"
        );
    }
    accept_loop(&listener, &app, &config, &metrics, &tracker, &shutdown).await;
    drop(listener);

    // The drain.
    let started = Instant::now();
    let deadline = config.shutdown.drain_timeout;
    tracing::info!(
        sockets = tracker.len(),
        "draining: closing sockets with 1012"
    );
    drain.cancel();
    tracker.close();
    let sockets_closed = tokio::time::timeout(deadline, tracker.wait()).await.is_ok();
    if !sockets_closed {
        tracing::warn!(left = tracker.len(), "sockets did not close in time");
    }
    app_engine.checkpoint();
    engine_stop.cancel();
    persist_stop.cancel();
    let remaining = deadline.saturating_sub(started.elapsed());
    // Webhooks get their last chance while the transcripts flush; what they leave undelivered
    // is logged there and does not fail the drain (they are best effort, in memory).
    let (flushed, _undelivered) = tokio::join!(
        tokio::time::timeout(remaining, persist_task),
        webhooks.drain(remaining)
    );
    let unflushed = match flushed {
        Ok(Ok(outcome)) => outcome.unflushed,
        Ok(Err(join)) => {
            tracing::error!(error = %join, "persister task failed");
            persist.stats().pending
        }
        Err(_) => persist.stats().pending,
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
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "drained; transcripts flushed"
    );
    Ok(())
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
        .header_read_timeout(header_timeout);
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
