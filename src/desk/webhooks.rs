//! Signed webhooks: desk events POSTed to the endpoints a team configures (`[[webhooks]]`).
//!
//! The engine calls [`Webhooks::emit`] while it holds its synchronous lock, so emitting never
//! waits: the event is serialised once and offered to the bounded queue of every endpoint
//! subscribed to its type; a full queue drops it (counted and logged) rather than push back on
//! the chat. Each endpoint has a dispatcher task that starts one delivery task per event; a
//! delivery retries with exponential backoff and full jitter until it is delivered, refused, too
//! old or out of attempts. A semaphore bounds the requests in flight per endpoint, but a delivery
//! waiting for its next attempt holds no permit, so one slow event never stalls the others.
//!
//! Everything is in memory: a crash loses what was not delivered yet. Receivers deduplicate on
//! the event `id`, which stays the same on every attempt. docs/desk.md ("Webhooks") is the
//! receiver's guide: payloads, headers, how to verify the signature, retries and guarantees.
//!
//! The HTTP client is reqwest with rustls: a well-kept client with per-request timeouts,
//! connection pooling and TLS with the Mozilla roots compiled in (no OpenSSL to install, no
//! system certificate store needed in a slim container), on the hyper stack the server already
//! uses. Redirects are not followed: a signed event goes only where it was configured to go.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use hmac::{Hmac, Mac};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Defined with the configuration that names them; re-exported where events are sent.
pub use crate::config::EventType;
use crate::config::{WebhookConfig, WebhookDelivery};
use crate::domain::{now_millis, ConversationId, Role, UnixMillis};
use crate::metrics::{EndpointLabel, Metrics, WebhookAttemptLabel, WebhookOutcomeLabel};
use crate::protocol::{CloseReason, ConversationState, ConversationView, MessageView, Participant};

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "Parley-Signature";
/// The event type, also in the body: lets a receiver route before parsing.
pub const EVENT_HEADER: &str = "Parley-Event";
/// The event id, the same on every attempt: the receiver's deduplication key.
pub const DELIVERY_HEADER: &str = "Parley-Delivery";
/// 1 for the first attempt, 2 for the first retry...
pub const ATTEMPT_HEADER: &str = "Parley-Attempt";
pub const USER_AGENT: &str = concat!("Parley/", env!("CARGO_PKG_VERSION"));

/// Dropped events are logged at most this often per endpoint: a receiver down under load would
/// otherwise log once per message. The metric counts every one.
const DROP_WARN_EVERY_MS: u64 = 10_000;
/// At shutdown, the part of the drain budget kept to stop what is still running and count it.
const STOP_MARGIN: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// This type's bit in an endpoint's subscription mask.
fn bit(kind: EventType) -> u8 {
    1 << (kind as u8)
}

/// One event, as every endpoint receives it (the JSON body of the request).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookEvent {
    /// UUIDv7: unique per event, the same on every attempt, sortable by time.
    id: Uuid,
    #[serde(rename = "type")]
    kind: EventType,
    /// When it happened (not when it was sent), Unix milliseconds.
    created_at: UnixMillis,
    data: Value,
}

/// A conversation as webhooks show it: `recovered` only means something in `welcome`.
fn plain(conversation: &ConversationView) -> ConversationView {
    ConversationView {
        recovered: None,
        ..conversation.clone()
    }
}

impl WebhookEvent {
    /// An event of `kind` with the given `data`, stamped now with a new id. The typed
    /// constructors below are preferred: they keep each type's `data` the documented shape.
    pub fn new(kind: EventType, data: Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            kind,
            created_at: now_millis(),
            data,
        }
    }

    /// A visitor opened a conversation (`data.conversation`, queued or already assigned). Its
    /// first message follows as `message.created`.
    pub fn conversation_created(conversation: &ConversationView) -> Self {
        Self::new(
            EventType::ConversationCreated,
            json!({ "conversation": plain(conversation) }),
        )
    }

    /// An agent got the conversation (`data.conversation.agent`), from `start` or from the queue.
    pub fn conversation_assigned(conversation: &ConversationView) -> Self {
        Self::new(
            EventType::ConversationAssigned,
            json!({ "conversation": plain(conversation) }),
        )
    }

    /// The conversation moved to another agent or team: `data.conversation` as it is now,
    /// `data.from` the agent who had it (`null` when it came from a queue).
    pub fn conversation_transferred(
        conversation: &ConversationView,
        from: Option<&Participant>,
    ) -> Self {
        Self::new(
            EventType::ConversationTransferred,
            json!({ "conversation": plain(conversation), "from": from }),
        )
    }

    /// The conversation ended: who ended it, the agent's verdict (`null` unless an agent closed
    /// it) and why, as in the `closed` frame.
    pub fn conversation_closed(
        conversation: &ConversationView,
        by: Role,
        resolved: Option<bool>,
        reason: CloseReason,
    ) -> Self {
        let conversation = ConversationView {
            state: ConversationState::Closed,
            ..plain(conversation)
        };
        Self::new(
            EventType::ConversationClosed,
            json!({
                "conversation": conversation,
                "by": by,
                "resolved": resolved,
                "reason": reason,
            }),
        )
    }

    /// A message was accepted into a transcript (a resent `cid` is not a new message).
    pub fn message_created(message: &MessageView) -> Self {
        Self::new(EventType::MessageCreated, json!({ "message": message }))
    }

    /// The visitor answered the satisfaction survey: a score from 1 to 5, maybe a comment.
    pub fn csat_received(
        conversation_id: ConversationId,
        score: u8,
        comment: Option<&str>,
    ) -> Self {
        Self::new(
            EventType::CsatReceived,
            json!({
                "conversation_id": conversation_id,
                "score": score,
                "comment": comment,
            }),
        )
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn kind(&self) -> EventType {
        self.kind
    }

    pub fn created_at(&self) -> UnixMillis {
        self.created_at
    }

    pub fn data(&self) -> &Value {
        &self.data
    }
}

// ---------------------------------------------------------------------------------------------
// Signing and retry policy: pure functions, tested exactly
// ---------------------------------------------------------------------------------------------

/// The `Parley-Signature` value for `body` sent at `timestamp` (Unix seconds). The timestamp is
/// signed with the body so a receiver can refuse an old request replayed by someone who
/// captured it: the signature is only valid for that `t`, and the receiver checks `t` is recent.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS Architecture
/// Blog): before retry `n` (1 for the first retry), wait a uniform draw from zero to
/// `min(cap, base * 2^(n-1))`. Full jitter spreads the retries of many events that failed
/// together (a receiver restarting) instead of bringing them back in one wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Off: wait exactly the ceiling (predictable, for tests and receivers that prefer it).
    pub jitter: bool,
}

impl Backoff {
    /// The longest wait before retry `n` (from 1): `min(cap, base * 2^(n-1))`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32
            .checked_pow(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The wait before retry `n`, drawn from `rng` (injected, so tests are exact).
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        if self.jitter {
            ceiling.mul_f64(rng.gen::<f64>())
        } else {
            ceiling
        }
    }
}

/// What one answer means for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Delivered,
    /// The receiver read the request and refused it: sending the same bytes again gets the same
    /// answer (a 400 for a bad signature, a 404 for a wrong path, a 410 for an endpoint that is
    /// gone), so it is not retried. Redirects (3xx) are not followed, and count here too.
    Refused(u16),
    /// Worth another attempt: 408, 429, 5xx, a timeout or a connection error. `after` is the
    /// receiver's `Retry-After` (429 and 503 only).
    Retry {
        after: Option<Duration>,
    },
}

fn judge(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        429 | 503 => Verdict::Retry { after: retry_after },
        408 | 500..=599 => Verdict::Retry { after: None },
        _ => Verdict::Refused(status),
    }
}

/// `Retry-After` is seconds or an HTTP date (RFC 9110, 10.2.3); a date in the past means now.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How one event ended at one endpoint: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// Refused by the receiver (see [`Verdict::Refused`]).
    Rejected,
    /// Out of attempts, or too old for another.
    GivenUp,
    /// The queue was full when it was emitted.
    Dropped,
    /// Still undelivered when the server shut down.
    Abandoned,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Delivered,
        Outcome::Rejected,
        Outcome::GivenUp,
        Outcome::Dropped,
        Outcome::Abandoned,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Rejected => "rejected",
            Outcome::GivenUp => "given_up",
            Outcome::Dropped => "dropped",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// What one attempt got: the `result` label.
const ATTEMPT_RESULTS: [&str; 6] = ["2xx", "3xx", "4xx", "5xx", "timeout", "error"];

fn status_class(status: u16) -> usize {
    match status {
        200..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        _ => 3,
    }
}

// ---------------------------------------------------------------------------------------------
// The handle and the delivery tasks
// ---------------------------------------------------------------------------------------------

/// Why webhooks could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// Checked by `Config::validate` already; kept so a bad URL can never panic here.
    #[error("invalid setting `webhooks[{0}].url`: not a URL")]
    Url(usize),
}

/// The handle the engine holds: cheap to clone, and with no endpoint configured `emit` is a
/// single branch.
#[derive(Clone, Default)]
pub struct Webhooks {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    endpoints: Vec<Arc<Endpoint>>,
    /// Every type at least one endpoint wants: an event nobody wants is not even serialised.
    wanted: u8,
    /// Cancelled when the drain starts: deliveries waiting for a retry try once more at once,
    /// and nothing waits for another attempt after that.
    closing: CancellationToken,
    /// Cancelled at the drain deadline: whatever still runs stops and is counted as abandoned.
    stop: CancellationToken,
}

/// One event, serialised once and shared by every endpoint and attempt.
struct Prepared {
    id: String,
    kind: EventType,
    /// For `max_age`: monotonic, so a clock step does not expire or revive events.
    created: Instant,
    body: Bytes,
}

struct Endpoint {
    /// `host[:port]` (with `#index` if two endpoints share it): the label and what logs show.
    /// Never the full URL, whose path or query may carry a token.
    name: String,
    url: reqwest::Url,
    secret: Vec<u8>,
    /// Bits of the [`EventType`]s this endpoint receives.
    events: u8,
    client: reqwest::Client,
    settings: WebhookDelivery,
    backoff: Backoff,
    /// Into the dispatcher. Unbounded as a channel because `depth` is the bound: it counts the
    /// events held anywhere (queued, in flight, waiting to retry), which a channel's own
    /// capacity cannot see once a delivery task has taken them out.
    queue: mpsc::UnboundedSender<Arc<Prepared>>,
    depth: AtomicUsize,
    /// Woken when `depth` reaches zero, for the drain.
    idle: Notify,
    /// Requests in flight at once (`webhook_delivery.concurrency`).
    permits: Semaphore,
    dropped: AtomicU64,
    last_drop_warn_ms: AtomicU64,
    abandoned: AtomicUsize,
    closing: CancellationToken,
    stop: CancellationToken,
    depth_gauge: Gauge,
    /// Indexed like [`Outcome::ALL`] and [`ATTEMPT_RESULTS`]: fetched once, so counting on the
    /// engine's hot path allocates nothing.
    outcomes: Vec<Counter>,
    attempts: Vec<Counter>,
}

impl Webhooks {
    /// Starts one dispatcher per endpoint. With no endpoint, nothing runs and `emit` does
    /// nothing. Call from within the Tokio runtime.
    ///
    /// # Errors
    /// When the HTTP client cannot be built, or a URL does not parse (validation prevents it).
    pub fn start(
        endpoints: &[WebhookConfig],
        delivery: &WebhookDelivery,
        metrics: &Metrics,
    ) -> Result<Self, WebhookError> {
        if endpoints.is_empty() {
            return Ok(Self::default());
        }
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(delivery.timeout)
            .build()?;
        let closing = CancellationToken::new();
        let stop = CancellationToken::new();
        let mut names: Vec<String> = Vec::new();
        let mut built = Vec::with_capacity(endpoints.len());
        let mut wanted = 0u8;
        for (i, config) in endpoints.iter().enumerate() {
            let url = reqwest::Url::parse(&config.url).map_err(|_| WebhookError::Url(i))?;
            let mut name = match (url.host_str(), url.port()) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                (Some(host), None) => host.to_string(),
                (None, _) => return Err(WebhookError::Url(i)),
            };
            if names.contains(&name) {
                name = format!("{name}#{i}");
            }
            names.push(name.clone());
            if url.scheme() == "http" && !is_loopback(&url) {
                tracing::warn!(endpoint = %name,
                    "webhook endpoint uses plain http: events cross the network unencrypted (the signature still proves they came from Parley); use https");
            }
            let kinds = &config.events;
            let events = kinds.iter().fold(0u8, |mask, e| mask | bit(*e));
            wanted |= events;
            let label = |outcome| WebhookOutcomeLabel {
                endpoint: name.clone(),
                outcome,
            };
            let outcomes = Outcome::ALL
                .iter()
                .map(|o| {
                    metrics
                        .webhook_deliveries
                        .get_or_create(&label(o.as_str()))
                        .clone()
                })
                .collect();
            let attempts = ATTEMPT_RESULTS
                .iter()
                .map(|&result| {
                    metrics
                        .webhook_attempts
                        .get_or_create(&WebhookAttemptLabel {
                            endpoint: name.clone(),
                            result,
                        })
                        .clone()
                })
                .collect();
            let depth_gauge = metrics
                .webhook_queue_depth
                .get_or_create(&EndpointLabel {
                    endpoint: name.clone(),
                })
                .clone();
            let (queue, receiver) = mpsc::unbounded_channel();
            let endpoint = Arc::new(Endpoint {
                name,
                url,
                secret: config.secret.as_bytes().to_vec(),
                events,
                client: client.clone(),
                settings: delivery.clone(),
                backoff: Backoff {
                    base: delivery.backoff_base,
                    cap: delivery.backoff_cap,
                    jitter: delivery.jitter,
                },
                queue,
                depth: AtomicUsize::new(0),
                idle: Notify::new(),
                permits: Semaphore::new(delivery.concurrency.max(1)),
                dropped: AtomicU64::new(0),
                last_drop_warn_ms: AtomicU64::new(0),
                abandoned: AtomicUsize::new(0),
                closing: closing.clone(),
                stop: stop.clone(),
                depth_gauge,
                outcomes,
                attempts,
            });
            tracing::info!(endpoint = %endpoint.name,
                events = ?kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(), "webhook endpoint");
            tokio::spawn(dispatch(endpoint.clone(), receiver));
            built.push(endpoint);
        }
        Ok(Self {
            inner: Some(Arc::new(Inner {
                endpoints: built,
                wanted,
                closing,
                stop,
            })),
        })
    }

    /// Whether any endpoint receives `kind`: a caller on a hot path can skip building the event.
    pub fn wants(&self, kind: EventType) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.wanted & bit(kind) != 0)
    }

    /// Queues `event` for every endpoint subscribed to its type. Never waits and never fails:
    /// at an endpoint's `queue_size` the event is dropped for that endpoint, counted
    /// (`parley_webhook_deliveries_total{outcome="dropped"}`) and logged.
    pub fn emit(&self, event: WebhookEvent) {
        let Some(inner) = &self.inner else {
            return;
        };
        let bit = bit(event.kind);
        if inner.wanted & bit == 0 {
            return;
        }
        let prepared = Arc::new(Prepared {
            id: event.id.to_string(),
            kind: event.kind,
            created: Instant::now(),
            // Plain data with string keys: serialising cannot fail.
            body: Bytes::from(serde_json::to_vec(&event).expect("events always serialise")),
        });
        for endpoint in inner.endpoints.iter().filter(|e| e.events & bit != 0) {
            endpoint.offer(&prepared);
        }
    }

    /// The drain: deliveries waiting for a retry get one last attempt at once, queued ones get
    /// their first, all within `within`; what is still undelivered then is stopped, counted as
    /// `abandoned` and logged with its count. Returns that count.
    pub async fn drain(&self, within: Duration) -> usize {
        let Some(inner) = &self.inner else {
            return 0;
        };
        let pending: usize = inner
            .endpoints
            .iter()
            .map(|e| e.depth.load(Ordering::Acquire))
            .sum();
        inner.closing.cancel();
        let margin = STOP_MARGIN.min(within / 10);
        let finished = tokio::time::timeout(within.saturating_sub(margin), inner.wait_idle())
            .await
            .is_ok();
        // Also ends the dispatchers, so an event emitted from now on is abandoned at once.
        inner.stop.cancel();
        if !finished {
            let _ = tokio::time::timeout(margin, inner.wait_idle()).await;
        }
        let undelivered: usize = inner
            .endpoints
            .iter()
            .map(|e| e.abandoned.load(Ordering::Acquire) + e.depth.load(Ordering::Acquire))
            .sum();
        if undelivered > 0 {
            tracing::warn!(
                undelivered,
                "webhook events not delivered by the end of the drain: they were held in memory only and are lost"
            );
        } else if pending > 0 {
            tracing::info!(
                pending,
                "pending webhook deliveries completed during the drain"
            );
        }
        undelivered
    }
}

impl Inner {
    async fn wait_idle(&self) {
        for endpoint in &self.endpoints {
            endpoint.wait_idle().await;
        }
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Endpoint {
    fn offer(&self, event: &Arc<Prepared>) {
        if self.depth.fetch_add(1, Ordering::AcqRel) >= self.settings.queue_size {
            self.release();
            self.outcomes[outcome_index(Outcome::Dropped)].inc();
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            self.warn_dropped(event, dropped);
            return;
        }
        self.depth_gauge.inc();
        if self.queue.send(event.clone()).is_err() {
            // The dispatcher stopped: the drain deadline has passed.
            self.finish(Outcome::Abandoned);
        }
    }

    fn warn_dropped(&self, event: &Prepared, dropped: u64) {
        let now = now_millis();
        let last = self.last_drop_warn_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < DROP_WARN_EVERY_MS
            || self
                .last_drop_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        tracing::warn!(
            endpoint = %self.name,
            event = event.kind.as_str(),
            id = %event.id,
            queue_size = self.settings.queue_size,
            dropped_so_far = dropped,
            "webhook queue full: event dropped; the receiver is down or too slow (logged at most every 10s; parley_webhook_deliveries_total{{outcome=\"dropped\"}} counts each)"
        );
    }

    /// Records how an accepted event ended and frees its place in the queue.
    fn finish(&self, outcome: Outcome) {
        self.outcomes[outcome_index(outcome)].inc();
        if outcome == Outcome::Abandoned {
            self.abandoned.fetch_add(1, Ordering::AcqRel);
        }
        self.depth_gauge.dec();
        self.release();
    }

    fn release(&self) {
        if self.depth.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so a wake-up between the two is not lost.
            idle.as_mut().enable();
            if self.depth.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Attempts until the event is delivered, refused, out of attempts or too old, or the
    /// server shuts down.
    async fn deliver(&self, event: &Prepared) -> Outcome {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let verdict = tokio::select! {
                _ = self.stop.cancelled() => return Outcome::Abandoned,
                verdict = self.attempt(event, attempt) => verdict,
            };
            let after = match verdict {
                Verdict::Delivered => return Outcome::Delivered,
                Verdict::Refused(status) => {
                    if status == 410 {
                        tracing::warn!(endpoint = %self.name, event = event.kind.as_str(), id = %event.id,
                            "webhook endpoint answered 410 Gone: event not retried; remove the endpoint from [[webhooks]] if it is retired");
                    } else {
                        tracing::warn!(endpoint = %self.name, event = event.kind.as_str(), id = %event.id, status,
                            "webhook refused by the receiver: event not retried (check the endpoint's URL and secret)");
                    }
                    return Outcome::Rejected;
                }
                Verdict::Retry { after } => after,
            };
            if attempt >= self.settings.max_attempts {
                tracing::warn!(endpoint = %self.name, event = event.kind.as_str(), id = %event.id, attempts = attempt,
                    "webhook given up: every attempt failed");
                return Outcome::GivenUp;
            }
            if self.closing.is_cancelled() {
                // That was its last chance: the server is shutting down.
                return Outcome::Abandoned;
            }
            let delay = match after {
                Some(after) => after.min(self.settings.backoff_cap),
                None => self.backoff.delay(attempt, &mut rand::thread_rng()),
            };
            if event.created.elapsed() + delay > self.settings.max_age {
                tracing::warn!(endpoint = %self.name, event = event.kind.as_str(), id = %event.id, attempts = attempt,
                    "webhook given up: older than webhook_delivery.max_age by the next attempt");
                return Outcome::GivenUp;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Outcome::Abandoned,
                // Shutting down: try once more now rather than after the wait.
                _ = self.closing.cancelled() => {}
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn attempt(&self, event: &Prepared, attempt: u32) -> Verdict {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        // Signed at send time, so `t` is fresh on every attempt and receivers can keep a short
        // replay window even for events that were retried for an hour.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sent = self
            .client
            .post(self.url.clone())
            .timeout(self.settings.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, event.kind.as_str())
            .header(DELIVERY_HEADER, &event.id)
            .header(ATTEMPT_HEADER, attempt)
            .header(SIGNATURE_HEADER, signature(&self.secret, t, &event.body))
            .body(event.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                self.attempts[status_class(status)].inc();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                // The body is not read: receivers are told to answer fast with an empty one.
                let verdict = judge(status, retry_after);
                if let Verdict::Retry { .. } = verdict {
                    tracing::debug!(endpoint = %self.name, id = %event.id, attempt, status, "webhook attempt failed");
                }
                verdict
            }
            Err(err) => {
                let result = if err.is_timeout() { 4 } else { 5 };
                self.attempts[result].inc();
                tracing::debug!(endpoint = %self.name, id = %event.id, attempt, error = %describe(&err), "webhook attempt failed");
                Verdict::Retry { after: None }
            }
        }
    }
}

fn outcome_index(outcome: Outcome) -> usize {
    Outcome::ALL
        .iter()
        .position(|o| *o == outcome)
        .expect("every outcome is listed")
}

/// What went wrong, without the URL: reqwest's own message names it, and it may carry a token.
fn describe(err: &reqwest::Error) -> String {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut cause: &dyn std::error::Error = err;
    let mut deepest = None;
    while let Some(source) = cause.source() {
        deepest = Some(source);
        cause = source;
    }
    match deepest {
        Some(cause) => format!("{what}: {cause}"),
        None => what.to_string(),
    }
}

/// Takes events off an endpoint's queue and starts a delivery task for each. One task per event
/// rather than a fixed set of workers, so that events waiting to retry do not hold a worker
/// while fresh ones wait behind them; `depth` bounds how many exist.
async fn dispatch(endpoint: Arc<Endpoint>, mut queue: mpsc::UnboundedReceiver<Arc<Prepared>>) {
    loop {
        let event = tokio::select! {
            _ = endpoint.stop.cancelled() => break,
            next = queue.recv() => match next {
                Some(event) => event,
                None => return,
            },
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let outcome = endpoint.deliver(&event).await;
            endpoint.finish(outcome);
        });
    }
    // Past the drain deadline: what never left the queue is abandoned too.
    queue.close();
    while let Ok(_event) = queue.try_recv() {
        endpoint.finish(Outcome::Abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Seq, UnixMillis};
    use crate::protocol::Sender;
    use rand::rngs::mock::StepRng;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn the_signature_matches_an_independent_hmac() {
        // Computed with Python's hmac module: the algorithm docs/desk.md tells receivers to use.
        let body = br#"{"id":"evt","type":"message.created"}"#;
        assert_eq!(
            signature(b"0123456789abcdef-secret", 1_700_000_000, body),
            "t=1700000000,v1=236f67ca5399380e2000f7ce24bd86ca8735687c561eb0a8351097e35ea8aee4"
        );
    }

    #[test]
    fn the_signature_depends_on_the_timestamp_the_body_and_the_secret() {
        let base = signature(b"0123456789abcdef", 100, b"{}");
        assert_ne!(base, signature(b"0123456789abcdef", 101, b"{}"));
        assert_ne!(base, signature(b"0123456789abcdef", 100, b"{ }"));
        assert_ne!(base, signature(b"0123456789abcdeg", 100, b"{}"));
    }

    fn backoff(jitter: bool) -> Backoff {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
            jitter,
        }
    }

    #[test]
    fn the_backoff_ceiling_doubles_from_base_up_to_cap() {
        let ceilings: Vec<u64> = (1..=8)
            .map(|n| backoff(true).ceiling(n).as_millis() as u64)
            .collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]
        );
        // Far past any overflow of base * 2^n.
        assert_eq!(backoff(true).ceiling(200), Duration::from_secs(10));
        assert_eq!(backoff(true).ceiling(0), Duration::from_millis(500));
    }

    #[test]
    fn full_jitter_draws_between_zero_and_the_ceiling() {
        // StepRng yields a fixed u64; rand maps it to a float in [0, 1) by its top 53 bits.
        let mut zero = StepRng::new(0, 0);
        let mut half = StepRng::new(1 << 63, 0);
        let mut top = StepRng::new(u64::MAX, 0);
        for n in 1..=7 {
            let ceiling = backoff(true).ceiling(n);
            assert_eq!(backoff(true).delay(n, &mut zero), Duration::ZERO);
            assert_eq!(backoff(true).delay(n, &mut half), ceiling / 2);
            let near = backoff(true).delay(n, &mut top);
            assert!(near <= ceiling && ceiling - near < Duration::from_micros(1));
        }
    }

    #[test]
    fn a_seeded_schedule_is_reproducible_and_within_the_ceilings() {
        let schedule = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..=10)
                .map(|n| backoff(true).delay(n, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
        for (i, d) in schedule(7).into_iter().enumerate() {
            assert!(
                d <= backoff(true).ceiling(i as u32 + 1),
                "retry {}: {d:?}",
                i + 1
            );
        }
    }

    #[test]
    fn without_jitter_the_wait_is_the_ceiling() {
        let mut rng = StepRng::new(0, 0);
        for n in 1..=7 {
            assert_eq!(backoff(false).delay(n, &mut rng), backoff(false).ceiling(n));
        }
    }

    #[test]
    fn statuses_are_judged_as_documented() {
        let after = Some(Duration::from_secs(3));
        assert_eq!(judge(200, None), Verdict::Delivered);
        assert_eq!(judge(204, None), Verdict::Delivered);
        for retried in [408, 500, 502, 504] {
            assert_eq!(
                judge(retried, after),
                Verdict::Retry { after: None },
                "{retried}"
            );
        }
        assert_eq!(judge(429, after), Verdict::Retry { after });
        assert_eq!(judge(503, after), Verdict::Retry { after });
        for refused in [301, 302, 400, 401, 403, 404, 410, 413, 422] {
            assert_eq!(
                judge(refused, after),
                Verdict::Refused(refused),
                "{refused}"
            );
        }
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn event_types_have_stable_names() {
        let names: Vec<&str> = EventType::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "conversation.created",
                "conversation.assigned",
                "conversation.transferred",
                "conversation.closed",
                "message.created",
                "csat.received",
            ]
        );
        for e in EventType::ALL {
            assert_eq!(EventType::parse(e.as_str()), Some(e));
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        assert_eq!(EventType::parse("message.deleted"), None);
        let bits: u8 = EventType::ALL.iter().fold(0, |m, e| m | bit(*e));
        assert_eq!(bits.count_ones(), 6);
    }

    fn conversation() -> ConversationView {
        ConversationView {
            id: ConversationId::new(),
            category: "account".into(),
            state: ConversationState::Assigned,
            visitor: Participant {
                id: "v-1".into(),
                name: Some("Vera".into()),
            },
            agent: Some(Participant {
                id: "alice".into(),
                name: Some("Alice".into()),
            }),
            created_at: 1_700_000_000_000 as UnixMillis,
            last_seq: Seq(3),
            recovered: Some(true),
            page: None,
            metadata: None,
            team: None,
            sla: None,
            contact: None,
            offline: false,
            transfers: 0,
            reopened: 0,
        }
    }

    #[test]
    fn an_event_serialises_to_the_documented_envelope() {
        let view = conversation();
        let event = WebhookEvent::conversation_closed(
            &view,
            Role::Agent,
            Some(true),
            CloseReason::AgentClosed,
        );
        let json = serde_json::to_value(&event).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 4, "{json}");
        assert_eq!(json["type"], "conversation.closed");
        let id = Uuid::parse_str(json["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert!(json["created_at"].as_u64().unwrap() >= 1_700_000_000_000);
        let data = &json["data"];
        assert_eq!(data["by"], "agent");
        assert_eq!(data["resolved"], true);
        assert_eq!(data["reason"], "agent_closed");
        assert_eq!(data["conversation"]["state"], "closed");
        assert_eq!(data["conversation"]["id"], view.id.to_string());
        assert!(
            data["conversation"].get("recovered").is_none(),
            "recovered is for welcome only"
        );

        let visitor_closed = WebhookEvent::conversation_closed(
            &view,
            Role::Visitor,
            None,
            CloseReason::VisitorClosed,
        );
        assert_eq!(visitor_closed.data()["resolved"], Value::Null);
        assert_ne!(visitor_closed.id(), event.id(), "one id per event");
    }

    #[test]
    fn every_constructor_sets_its_type() {
        let view = conversation();
        let message = MessageView {
            conversation_id: view.id,
            seq: Seq(1),
            sender: Sender {
                role: Role::Visitor,
                id: "v-1".into(),
                name: None,
            },
            text: "hello".into(),
            ts: 1,
            cid: None,
            kind: Default::default(),
        };
        let from = Participant {
            id: "bob".into(),
            name: None,
        };
        let cases = [
            (
                WebhookEvent::conversation_created(&view),
                EventType::ConversationCreated,
            ),
            (
                WebhookEvent::conversation_assigned(&view),
                EventType::ConversationAssigned,
            ),
            (
                WebhookEvent::conversation_transferred(&view, Some(&from)),
                EventType::ConversationTransferred,
            ),
            (
                WebhookEvent::message_created(&message),
                EventType::MessageCreated,
            ),
            (
                WebhookEvent::csat_received(view.id, 5, Some("quick")),
                EventType::CsatReceived,
            ),
        ];
        for (event, kind) in cases {
            assert_eq!(event.kind(), kind);
        }
        let csat = WebhookEvent::csat_received(view.id, 4, None);
        assert_eq!(csat.data()["score"], 4);
        assert_eq!(csat.data()["comment"], Value::Null);
        let moved = WebhookEvent::conversation_transferred(&view, Some(&from));
        assert_eq!(moved.data()["from"]["id"], "bob");
        assert_eq!(
            WebhookEvent::message_created(&message).data()["message"]["text"],
            "hello"
        );
    }

    #[test]
    fn emit_without_endpoints_does_nothing() {
        let hooks = Webhooks::default();
        assert!(!hooks.wants(EventType::MessageCreated));
        hooks.emit(WebhookEvent::csat_received(ConversationId::new(), 5, None));
    }

    /// A receiver that accepts connections and never answers.
    async fn hung_receiver() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app =
            axum::Router::new().route("/hook", axum::routing::post(std::future::pending::<()>));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn the_drain_stops_at_its_deadline_and_counts_what_is_left() {
        let metrics = Metrics::new();
        let endpoint = WebhookConfig {
            url: hung_receiver().await,
            secret: "0123456789abcdef".into(),
            events: vec![EventType::CsatReceived],
        };
        let delivery = WebhookDelivery {
            timeout: Duration::from_secs(60),
            concurrency: 1,
            ..WebhookDelivery::default()
        };
        let hooks = Webhooks::start(&[endpoint], &delivery, &metrics).unwrap();
        assert!(hooks.wants(EventType::CsatReceived));
        assert!(!hooks.wants(EventType::MessageCreated));
        hooks.emit(WebhookEvent::message_created(&MessageView {
            conversation_id: ConversationId::new(),
            seq: Seq(1),
            sender: Sender {
                role: Role::Visitor,
                id: "v".into(),
                name: None,
            },
            text: "not subscribed".into(),
            ts: 1,
            cid: None,
            kind: Default::default(),
        }));
        for score in 1..=3 {
            hooks.emit(WebhookEvent::csat_received(
                ConversationId::new(),
                score,
                None,
            ));
        }
        let started = Instant::now();
        let left = hooks.drain(Duration::from_millis(500)).await;
        assert_eq!(
            left, 3,
            "one in flight, two queued; the unsubscribed event never counted"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        let text = metrics.encode();
        assert!(
            text.contains("parley_webhook_deliveries_total{endpoint=\"127.0.0.1:")
                && text
                    .lines()
                    .any(|l| l.contains("outcome=\"abandoned\"") && l.ends_with(" 3")),
            "{text}"
        );
        // After the drain, an event is abandoned at once rather than held.
        hooks.emit(WebhookEvent::csat_received(ConversationId::new(), 5, None));
        assert!(text.contains("parley_webhook_queue_depth{endpoint=\"127.0.0.1:"));
        assert!(metrics
            .encode()
            .lines()
            .any(|l| l.starts_with("parley_webhook_queue_depth") && l.ends_with(" 0")));
    }
}
