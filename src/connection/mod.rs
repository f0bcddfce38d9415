//! One WebSocket, from upgrade to close, for either role.
//!
//! [`run`] drives a socket the same way for visitors and agents: it waits (bounded) for `hello`,
//! then splits the socket into a reader (this task) and a writer task joined by the socket's
//! [`Outbox`]. The reader parses frames, applies the per-socket limits and hands each frame to
//! the role's [`Session`]; the writer drains the outbox, sends pings, and sends the close frame.
//! When either side ends, the shared [`Closer`] ends the other. Errors become error frames or
//! close codes here, in one place.

pub mod agent;
pub mod visitor;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::Authenticator;
use crate::engine::{Client, EngineError, Origin, SharedEngine};
use crate::limits::{Limit, Limited, RateLimits};
use crate::metrics::{ConnectionGauge, Metrics};
use crate::outbox::{Closer, Frame, Outbox};
use crate::protocol::{
    close_code, parse_client_frame, ErrorCode, ErrorFrame, FrameError, ServerFrame,
};

/// Socket settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct SocketSettings {
    pub outbound_queue: usize,
    pub hello_timeout: Duration,
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    pub text_max_chars: usize,
    /// The category of a `start` that names none.
    pub default_category: String,
}

/// What every socket task shares. Cheap handles only.
pub struct Context {
    pub engine: SharedEngine,
    pub limits: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Authenticator>,
    pub settings: SocketSettings,
    /// Cancelled when the server drains: every socket closes with 1012.
    pub drain: CancellationToken,
    /// Tracks socket tasks, so the drain waits for them (axum's graceful shutdown does not see
    /// upgraded connections).
    pub tracker: TaskTracker,
    /// Answers satisfaction surveys (checked against the store, whichever engine runs).
    pub surveys: Arc<crate::desk::csat::Surveys>,
}

/// A frame refused without closing the socket.
pub struct Refusal {
    pub error: ErrorFrame,
    /// Counts towards the flood limit (rate-limited, malformed or unknown frames do).
    pub strike: bool,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorFrame::new(code, message),
            strike: false,
        }
    }

    pub fn limited(limit: Limit, limited: Limited, metrics: &Metrics) -> Self {
        metrics.rate_limited(limit.as_str());
        Self {
            error: ErrorFrame::new(ErrorCode::RateLimited, "rate limit exceeded; slow down")
                .retry_after(limited.retry_after_ms()),
            strike: true,
        }
    }

    pub fn with_cid(mut self, cid: Option<crate::domain::ClientMessageId>) -> Self {
        self.error.cid = cid;
        self
    }
}

impl From<EngineError> for Refusal {
    fn from(err: EngineError) -> Self {
        if let EngineError::Store(inner) = &err {
            // Logged here, where the request ends; the client gets the stable code only.
            tracing::warn!(error = %inner, "store error answering a client");
        }
        Self {
            error: err.to_frame(),
            strike: false,
        }
    }
}

impl From<crate::desk::csat::SurveyError> for Refusal {
    fn from(err: crate::desk::csat::SurveyError) -> Self {
        use crate::desk::csat::SurveyError;
        match &err {
            SurveyError::InvalidScore => Refusal::new(ErrorCode::InvalidScore, err.to_string()),
            SurveyError::Unavailable => Refusal::new(ErrorCode::SurveyUnavailable, err.to_string()),
            SurveyError::Store(store) => {
                tracing::warn!(error = %store, "store error answering a survey");
                Self {
                    error: ErrorFrame::new(ErrorCode::Unavailable, err.to_string())
                        .retry_after(1000),
                    strike: false,
                }
            }
        }
    }
}

impl From<FrameError> for Refusal {
    fn from(err: FrameError) -> Self {
        Self {
            error: ErrorFrame::new(err.code, err.message),
            strike: true,
        }
    }
}

/// The first frame was not an acceptable `hello`: the socket closes with `code`.
pub struct Rejection {
    pub code: u16,
    pub reason: &'static str,
    pub error: ErrorFrame,
}

/// What the first frame produced: the session, and what to send before anything else.
pub struct Hello<S> {
    pub session: S,
    pub initial: Vec<Frame>,
}

/// A role's behaviour on top of the shared socket handling.
#[async_trait::async_trait]
pub trait Session: Send + Sized + 'static {
    type Inbound: DeserializeOwned + Send;
    /// What the HTTP layer learnt before the upgrade (the agent's identity, for example).
    type Upgrade: Send + 'static;
    const ROLE: &'static str;

    /// Handles the first frame: authenticates, joins the engine with `outbox`.
    async fn hello(
        ctx: &Context,
        upgrade: Self::Upgrade,
        frame: Self::Inbound,
        outbox: Outbox,
    ) -> Result<Hello<Self>, Rejection>;

    fn origin(&self) -> &Origin;

    /// Handles one frame after `hello`; an answer other than broadcasts goes to `outbox`.
    async fn handle(
        &mut self,
        ctx: &Context,
        frame: Self::Inbound,
        outbox: &Outbox,
    ) -> Result<(), Refusal>;
}

/// Serves one upgraded socket until it closes.
///
/// Memory: an idle socket's cost is mostly this future (the task axum spawns holds it inline),
/// so its long-lived state is kept small. The socket is split before the future is built, so
/// the future holds two lock handles rather than the whole `WebSocket`; the hello phase (its
/// timer, the role's `hello`, a rejection's close) runs in a boxed future that is freed once
/// the socket is live. What stays for the socket's life is [`read_loop`]'s state.
pub fn run<S: Session>(
    socket: WebSocket,
    ctx: Arc<Context>,
    upgrade: S::Upgrade,
) -> impl Future<Output = ()> + Send {
    // Info, not debug: info-level events inside it ("started", "flooding; closing") rely on the
    // span for the client's identity, which docs/operations.md promises in the logs.
    let span = tracing::info_span!("connection", role = S::ROLE, client = tracing::field::Empty);
    let (sink, stream) = socket.split();
    async move {
        let _gauge = ConnectionGauge::open(&ctx.metrics, S::ROLE);
        let Some(live) = Box::pin(open::<S>(&ctx, sink, stream, upgrade)).await else {
            return;
        };
        let Live {
            mut session,
            mut stream,
            outbox,
            closer,
            writer,
            client,
        } = live;
        read_loop(&ctx, &mut session, &mut stream, &outbox, &closer).await;
        closer.close(close_code::NORMAL, "bye");
        let _ = writer.await;
        ctx.engine.leave(&client, outbox.id()).await;
        tracing::debug!(close = ?closer.reason(), "left");
    }
    .instrument(span)
}

/// A socket past `hello`: what its reader needs for the rest of its life.
struct Live<S> {
    session: S,
    stream: SplitStream<WebSocket>,
    outbox: Outbox,
    closer: Closer,
    writer: tokio::task::JoinHandle<()>,
    client: Client,
}

/// The hello phase: waits for `hello`, then starts the writer. `None` when the socket was
/// refused (the error frame and the close are sent here) or closed first.
async fn open<S: Session>(
    ctx: &Arc<Context>,
    mut sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    upgrade: S::Upgrade,
) -> Option<Live<S>> {
    let closer = Closer::new();
    let (outbox, rx) = Outbox::new(ctx.settings.outbound_queue, closer.clone());

    let hello = match first_frame::<S>(ctx, &mut stream, upgrade, outbox.clone()).await {
        Ok(hello) => hello,
        Err(rejection) => {
            if let Some(error) = rejection.error_frame() {
                ctx.metrics.error_sent(error.code);
                let _ = sink
                    .send(Message::Text(text(&ServerFrame::Error(error).to_text())))
                    .await;
            }
            send_close(&mut sink, &ctx.metrics, rejection.code, rejection.reason).await;
            return None;
        }
    };
    let session = hello.session;
    let client = session.origin().client.clone();
    tracing::Span::current().record("client", tracing::field::debug(&client));
    tracing::debug!("joined");

    let writer = ctx
        .tracker
        .spawn(write_loop(sink, rx, hello.initial, closer.clone(), ctx.clone()).in_current_span());
    Some(Live {
        session,
        stream,
        outbox,
        closer,
        writer,
        client,
    })
}

impl Rejection {
    /// The error frame sent before the close: none after a timeout, nor after a frame that
    /// broke the WebSocket rules (as after `hello`, the close code says it all).
    fn error_frame(&self) -> Option<ErrorFrame> {
        let said_by_the_code = matches!(
            self.code,
            close_code::TIMEOUT
                | close_code::PROTOCOL_ERROR
                | close_code::INVALID_PAYLOAD
                | close_code::MESSAGE_TOO_BIG
        );
        (!said_by_the_code).then(|| self.error.clone())
    }
}

/// Waits for `hello` and lets the session handle it.
async fn first_frame<S: Session>(
    ctx: &Context,
    stream: &mut SplitStream<WebSocket>,
    upgrade: S::Upgrade,
    outbox: Outbox,
) -> Result<Hello<S>, Rejection> {
    let timeout = Rejection {
        code: close_code::TIMEOUT,
        reason: "no hello in time",
        error: ErrorFrame::new(ErrorCode::HelloRequired, "no hello in time"),
    };
    let deadline = tokio::time::sleep(ctx.settings.hello_timeout);
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            _ = &mut deadline => return Err(timeout),
            _ = ctx.drain.cancelled() => return Err(Rejection {
                code: close_code::SERVICE_RESTART,
                reason: "server restarting",
                error: ErrorFrame::new(ErrorCode::Unavailable, "server restarting").retry_after(1000),
            }),
            m = stream.next() => m,
        };
        let bad_hello = |message: String| Rejection {
            code: close_code::BAD_HELLO,
            reason: "hello required",
            error: ErrorFrame::new(ErrorCode::HelloRequired, message),
        };
        match message {
            Some(Ok(Message::Text(t))) => {
                let frame = parse_client_frame::<S::Inbound>(t.as_str()).map_err(|e| {
                    bad_hello(format!(
                        "the first frame must be a valid hello ({})",
                        e.message
                    ))
                })?;
                return S::hello(ctx, upgrade, frame, outbox).await;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_))) => {
                return Err(bad_hello("frames are JSON text; send hello first".into()))
            }
            // Closed before saying anything; nothing to answer.
            Some(Ok(Message::Close(_))) | None => {
                return Err(Rejection {
                    code: close_code::NORMAL,
                    reason: "bye",
                    error: ErrorFrame::new(ErrorCode::HelloRequired, "closed before hello"),
                })
            }
            // A frame that breaks the WebSocket rules gets the same RFC 6455 code as after
            // `hello` (1002, 1007, 1009), not a polite 1000.
            Some(Err(err)) => {
                tracing::debug!(error = %err, "read failed before hello");
                let (code, reason) = read_error(err);
                return Err(Rejection {
                    code,
                    reason,
                    error: ErrorFrame::new(ErrorCode::HelloRequired, reason),
                });
            }
        }
    }
}

async fn read_loop<S: Session>(
    ctx: &Context,
    session: &mut S,
    stream: &mut SplitStream<WebSocket>,
    outbox: &Outbox,
    closer: &Closer,
) {
    let guard = ctx.limits.socket_guard();
    // Made once, not per frame: a new cancellation future registers and unregisters a waiter
    // each time, and a new timeout adds and removes a timer. The idle timer is not moved on
    // every frame either; when it fires it checks the time of the last frame and re-arms.
    let closed = closer.closed();
    let drained = ctx.drain.cancelled();
    let idle = tokio::time::sleep(ctx.settings.idle_timeout);
    tokio::pin!(closed, drained, idle);
    let mut last_frame = Instant::now();
    loop {
        let next = tokio::select! {
            _ = &mut closed => return,
            _ = &mut drained => {
                closer.close(close_code::SERVICE_RESTART, "server restarting");
                return;
            }
            _ = &mut idle => {
                let quiet_until = last_frame + ctx.settings.idle_timeout;
                if Instant::now() >= quiet_until {
                    closer.close(close_code::TIMEOUT, "idle timeout");
                    return;
                }
                idle.as_mut().reset(quiet_until);
                continue;
            }
            n = stream.next() => n,
        };
        let message = match next {
            None | Some(Ok(Message::Close(_))) => return,
            Some(Err(err)) => {
                tracing::debug!(error = %err, "read failed");
                let (code, reason) = read_error(err);
                closer.close(code, reason);
                return;
            }
            Some(Ok(m)) => m,
        };
        let refusal = match message {
            Message::Text(t) => match guard.frame() {
                Err(limited) => Some(Refusal::limited(Limit::SocketFrames, limited, &ctx.metrics)),
                Ok(()) => match parse_client_frame::<S::Inbound>(t.as_str()) {
                    Err(e) => Some(Refusal::from(e)),
                    Ok(frame) => session.handle(ctx, frame, outbox).await.err(),
                },
            },
            Message::Binary(_) => Some(Refusal {
                error: ErrorFrame::new(ErrorCode::UnsupportedFrame, "frames are JSON text"),
                strike: true,
            }),
            // Pongs only prove liveness (the idle timer restarted); pings are answered by the
            // WebSocket layer.
            Message::Ping(_) | Message::Pong(_) => None,
            Message::Close(_) => return,
        };
        if let Some(refusal) = refusal {
            ctx.metrics.error_sent(refusal.error.code);
            outbox.push(&ServerFrame::Error(refusal.error).to_text());
            if refusal.strike && guard.strike() {
                tracing::info!("flooding; closing");
                closer.close(
                    close_code::POLICY_VIOLATION,
                    "flooding: too many refused frames",
                );
                return;
            }
        }
        // After handling: time the server spends on a frame is not the client's silence.
        last_frame = Instant::now();
    }
}

/// Why a read failed, as a close code and reason: over the size cap is 1009, text that is not
/// UTF-8 is 1007, anything else unreadable breaks the WebSocket protocol (1002).
fn read_error(err: axum::Error) -> (u16, &'static str) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match err.into_inner().downcast::<WsError>().map(|e| *e) {
        Ok(WsError::Capacity(_)) => (close_code::MESSAGE_TOO_BIG, "frame too large"),
        Ok(WsError::Utf8(_)) => (close_code::INVALID_PAYLOAD, "invalid frame"),
        _ => (close_code::PROTOCOL_ERROR, "invalid frame"),
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Frame>,
    initial: Vec<Frame>,
    closer: Closer,
    ctx: Arc<Context>,
) {
    let first = async {
        for frame in initial {
            if sink.feed(Message::Text(text(&frame))).await.is_err() {
                return false;
            }
        }
        sink.flush().await.is_ok()
    };
    match guarded(&closer, first).await {
        Step::Written => {}
        Step::Failed => {
            closer.close(close_code::NORMAL, "write failed");
            return;
        }
        Step::TooSlow => {
            Box::pin(finish(sink, rx, closer, ctx)).await;
            return;
        }
    }
    let mut ping = tokio::time::interval(ctx.settings.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    // Made once, not per frame (see `read_loop`), from clones, because `finish` below takes
    // `closer` and `ctx`.
    let drained = ctx.drain.clone().cancelled_owned();
    let watched = closer.clone();
    let closed = watched.closed();
    tokio::pin!(drained, closed);
    loop {
        let step = tokio::select! {
            biased;
            _ = &mut drained => {
                closer.close(close_code::SERVICE_RESTART, "server restarting");
                break;
            }
            _ = &mut closed => break,
            frame = rx.recv() => match frame {
                Some(frame) => {
                    // Batch what is already queued into one flush: fewer syscalls under load.
                    let batch = async {
                        let mut ok = sink.feed(Message::Text(text(&frame))).await.is_ok();
                        while ok {
                            match rx.try_recv() {
                                Ok(more) => {
                                    ok = sink.feed(Message::Text(text(&more))).await.is_ok();
                                }
                                Err(_) => break,
                            }
                        }
                        ok && sink.flush().await.is_ok()
                    };
                    guarded(&closer, batch).await
                }
                None => break,
            },
            _ = ping.tick() => {
                let send = async { sink.send(Message::Ping(Default::default())).await.is_ok() };
                guarded(&closer, send).await
            }
        };
        match step {
            Step::Written => {}
            Step::Failed => {
                closer.close(close_code::NORMAL, "write failed");
                return;
            }
            Step::TooSlow => break,
        }
    }
    // Boxed: the closing phase's timers would otherwise add to this task's size for the
    // socket's whole life.
    Box::pin(finish(sink, rx, closer, ctx)).await;
}

/// How a write to the socket ended.
enum Step {
    Written,
    Failed,
    /// The socket was closed as too slow while the write waited.
    TooSlow,
}

/// Runs one write, unless the socket is closed as too slow meanwhile. A client that stopped
/// reading blocks writes once its TCP buffers are full; its outbox then fills and it is closed
/// with 4009, and the writer must stop waiting for it, or the socket's task (and the client's
/// presence) would live until the client read again, which may be never.
async fn guarded(closer: &Closer, write: impl Future<Output = bool>) -> Step {
    let too_slow = async {
        closer.closed().await;
        if closer.reason().map(|r| r.0) != Some(close_code::TOO_SLOW) {
            // Any other close lets the write finish: what it carries is still wanted.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        ok = write => if ok { Step::Written } else { Step::Failed },
        _ = too_slow => Step::TooSlow,
    }
}

/// The writer's last act: what is still queued, then the close frame.
async fn finish(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Frame>,
    closer: Closer,
    ctx: Arc<Context>,
) {
    let (code, reason) = closer.reason().unwrap_or((close_code::NORMAL, "bye"));
    // Frames already queued (the error that explains a flood close, for example) go out before
    // the close frame, within a bound. A client closed for being too slow is the exception:
    // its queue is what it could not read, and it resumes from its last seen seq anyway. Its
    // close frame follows what is already in flight; if the client does not read that within
    // the bound either, the connection is dropped without one.
    if code != close_code::TOO_SLOW {
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
            while let Ok(frame) = rx.try_recv() {
                if sink.feed(Message::Text(text(&frame))).await.is_err() {
                    return;
                }
            }
            let _ = sink.flush().await;
        })
        .await;
    }
    send_close(&mut sink, &ctx.metrics, code, reason).await;
}

/// How long a closing socket may take to write what was queued, and then its close frame: a
/// client that does not read must not hold up the drain.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

async fn send_close(
    sink: &mut SplitSink<WebSocket, Message>,
    metrics: &Metrics,
    code: u16,
    reason: &'static str,
) {
    metrics.close_sent(code);
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
        let _ = sink.send(close).await;
        let _ = sink.close().await;
    })
    .await;
}

fn text(frame: &Frame) -> Utf8Bytes {
    Utf8Bytes::from(&**frame)
}

/// Checks message text: not blank, not over the cap. Text is data and is never interpreted
/// (clients render it as text, not HTML).
pub fn check_text(text: &str, max_chars: usize) -> Result<(), Refusal> {
    if text.trim().is_empty() {
        return Err(Refusal::new(ErrorCode::InvalidText, "text is empty"));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(Refusal::new(
            ErrorCode::TextTooLong,
            format!("text has {chars} characters; the limit is {max_chars}"),
        ));
    }
    Ok(())
}

/// Shortens free text from clients (names, page URLs) to a bound, dropping control characters.
pub fn clean_label(s: &str, max_chars: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

/// The identity the engine knows a socket by.
pub fn origin_of(client: Client, outbox: &Outbox) -> Origin {
    Origin {
        client,
        socket: outbox.id(),
    }
}
