//! Prometheus series, served at `/metrics`.
//!
//! One [`Metrics`] per server (not a global recorder), so tests can run several servers in one
//! process and read each one's figures. Label values come from closed sets (roles, categories,
//! error codes, close codes) so cardinality stays bounded whatever clients send.
//!
//! Two kinds of series. Per node: what this process did or holds (its sockets, the messages
//! it accepted, its store and webhooks); a Prometheus user sums them over nodes. Desk-wide:
//! what describes the shared desk (agents, their load and capacity, conversations open, the
//! queue); on the Redis engine every node reports the whole desk (read from Redis, see
//! `engine::redis::figures`), so summing them over nodes multiplies them: aggregate with
//! `max`. Their HELP text says `desk-wide` ([`DESK_WIDE`]), and `docs/operations.md` lists them.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::transcript::persister::PersistStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabel {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GraceLabel {
    pub role: &'static str,
    /// `returned` (a socket came back in time) or `expired`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlaLabel {
    pub category: String,
    /// `met` or `missed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabel {
    /// `team`, `agent`, `escalation`, or `sla_breach` (moved by `desk.sla_breach_action`).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScoreLabel {
    pub score: u8,
}

/// A webhook endpoint, as `host[:port]`: never its URL, whose path may carry a token. Endpoints
/// are configured, so the set is bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookOutcomeLabel {
    pub endpoint: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookAttemptLabel {
    pub endpoint: String,
    pub result: &'static str,
}

type GaugeF64 = Gauge<f64, AtomicU64>;

/// Ends the HELP text of every desk-wide series, so that a reader of `/metrics` (and the test
/// that checks the Grafana queries) can tell them from per-node ones.
pub const DESK_WIDE: &str =
    "(desk-wide: every node reports the whole desk; aggregate nodes with max, never sum)";

fn desk_wide(help: &str) -> String {
    format!("{help} {DESK_WIDE}")
}

/// Every series Parley exports. Fields are public so each module increments its own.
pub struct Metrics {
    registry: Registry,
    /// Open sockets by role: the headline load figure.
    pub connections: Family<RoleLabel, Gauge>,
    /// Sockets accepted since start, by role: the connect rate.
    pub connections_total: Family<RoleLabel, Counter>,
    /// Upgrades or connections turned away before a socket existed, by reason.
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// Messages accepted into transcripts, by sender role.
    pub messages: Family<RoleLabel, Counter>,
    pub conversations_started: Family<CategoryLabel, Counter>,
    /// Conversations queued or assigned, desk-wide.
    pub conversations_open: Gauge,
    /// Conversations waiting for an agent, by category, desk-wide.
    pub queue_depth: Family<CategoryLabel, Gauge>,
    /// From conversation start to an agent being assigned.
    pub time_to_agent: Family<CategoryLabel, Histogram>,
    /// Frames refused by a rate limit, by limit.
    pub rate_limited: Family<LimitLabel, Counter>,
    /// Error frames sent, by code.
    pub errors: Family<CodeLabel, Counter>,
    /// Close frames Parley sent, by close code.
    pub closes: Family<CloseLabel, Counter>,
    /// Connected agents by status, desk-wide.
    pub agents: Family<StatusLabel, Gauge>,
    /// Chats held by agents that take chats, and their summed capacity: utilisation =
    /// load/capacity. Desk-wide.
    pub agent_load: Gauge,
    pub agent_capacity: Gauge,
    /// Seconds since the desk-wide series were last read from the shared state: 0 while they
    /// are current (always on one node, which holds the desk itself); growing while Redis does
    /// not answer and they keep their last values.
    pub desk_figures_age_seconds: GaugeF64,
    pub persist_pending: Gauge,
    /// Age of the oldest message not yet in the store.
    pub persist_lag_seconds: GaugeF64,
    pub persist_failing: Gauge,
    pub persisted_messages: Counter,
    pub persist_failures: Counter,
    /// How each webhook event ended per endpoint: delivered, rejected, given_up, dropped (queue
    /// full) or abandoned (shutdown).
    pub webhook_deliveries: Family<WebhookOutcomeLabel, Counter>,
    /// Every webhook request, by result: 2xx, 3xx, 4xx, 5xx, timeout or error.
    pub webhook_attempts: Family<WebhookAttemptLabel, Counter>,
    /// Webhook events held per endpoint: queued, in flight or waiting to retry.
    pub webhook_queue_depth: Family<EndpointLabel, Gauge>,
    /// Knowledge-base searches answered (REST and sockets).
    pub kb_searches: Counter,
    /// "This article solved my question", by the visitor's category (`none` without one).
    pub kb_deflections: Family<CategoryLabel, Counter>,
    /// Grace periods this node ended, by role and outcome.
    pub grace_periods_ended: Family<GraceLabel, Counter>,
    /// Exact recent samples of `time_to_agent`, for the ops view's median and p95.
    pub recent_time_to_agent: TimeToAgentWindow,
    /// Last persister totals seen, so the counters above advance by the difference.
    persist_seen: Mutex<(u64, u64)>,
    /// The support desk (docs/desk.md).
    pub desk: DeskMetrics,
}

/// The support desk's series: service levels, transfers, surveys, offline messages.
#[derive(Default)]
pub struct DeskMetrics {
    /// First agent replies, by category and whether they came within the target.
    pub first_responses: Family<SlaLabel, Counter>,
    /// Conversations whose first-response target passed with no reply, by category.
    pub sla_breaches: Family<CategoryLabel, Counter>,
    pub transfers: Family<TransferLabel, Counter>,
    /// Survey answers by score (1 to 5).
    pub csat_answers: Family<ScoreLabel, Counter>,
    /// Conversations started while nobody answered their category, by category.
    pub offline_messages: Family<CategoryLabel, Counter>,
    /// Conversations a returning visitor reopened.
    pub reopened: Counter,
    /// Open conversations the shared state (Redis) lost, told to their sockets on this node.
    pub conversations_lost: Counter,
}

impl DeskMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "sla_first_responses",
            "First agent replies by category and outcome (met or missed the target)",
            self.first_responses.clone(),
        );
        r.register(
            "sla_breaches",
            "Conversations that passed their first-response target with no reply",
            self.sla_breaches.clone(),
        );
        r.register(
            "transfers",
            "Conversations moved to another team or agent, by kind",
            self.transfers.clone(),
        );
        r.register(
            "csat_answers",
            "Satisfaction survey answers by score",
            self.csat_answers.clone(),
        );
        r.register(
            "offline_messages",
            "Conversations started while nobody answered, by category",
            self.offline_messages.clone(),
        );
        r.register(
            "conversations_reopened",
            "Conversations reopened by a returning visitor",
            self.reopened.clone(),
        );
        r.register(
            "conversations_lost",
            "Open conversations Redis lost (it restarted empty), ended with reason state_lost for their sockets on this node",
            self.conversations_lost.clone(),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("parley");
        let time_to_agent = Family::<CategoryLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ])
        });
        let m = Self {
            registry: Registry::default(),
            connections: Family::default(),
            connections_total: Family::default(),
            connections_refused: Family::default(),
            messages: Family::default(),
            conversations_started: Family::default(),
            conversations_open: Gauge::default(),
            queue_depth: Family::default(),
            time_to_agent,
            rate_limited: Family::default(),
            errors: Family::default(),
            closes: Family::default(),
            agents: Family::default(),
            agent_load: Gauge::default(),
            agent_capacity: Gauge::default(),
            desk_figures_age_seconds: GaugeF64::default(),
            persist_pending: Gauge::default(),
            persist_lag_seconds: GaugeF64::default(),
            persist_failing: Gauge::default(),
            persisted_messages: Counter::default(),
            persist_failures: Counter::default(),
            webhook_deliveries: Family::default(),
            webhook_attempts: Family::default(),
            webhook_queue_depth: Family::default(),
            kb_searches: Counter::default(),
            kb_deflections: Family::default(),
            grace_periods_ended: Family::default(),
            recent_time_to_agent: Default::default(),
            persist_seen: Mutex::new((0, 0)),
            desk: DeskMetrics::default(),
        };
        let r = &mut registry;
        r.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        r.register(
            "connections_accepted",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        r.register(
            "connections_refused",
            "Connections or upgrades refused",
            m.connections_refused.clone(),
        );
        r.register(
            "messages",
            "Messages accepted into transcripts",
            m.messages.clone(),
        );
        r.register(
            "conversations_started",
            "Conversations started",
            m.conversations_started.clone(),
        );
        r.register(
            "conversations_open",
            desk_wide("Conversations queued or assigned"),
            m.conversations_open.clone(),
        );
        r.register(
            "queue_depth",
            desk_wide("Conversations waiting for an agent"),
            m.queue_depth.clone(),
        );
        r.register(
            "time_to_agent_seconds",
            "Time from start to assignment",
            m.time_to_agent.clone(),
        );
        r.register(
            "rate_limited",
            "Frames or connections refused by a rate limit",
            m.rate_limited.clone(),
        );
        r.register("errors", "Error frames sent to clients", m.errors.clone());
        r.register("closes", "Close frames sent to clients", m.closes.clone());
        r.register(
            "agents",
            desk_wide("Connected agents by status"),
            m.agents.clone(),
        );
        r.register(
            "agent_load",
            desk_wide("Chats held by agents taking chats"),
            m.agent_load.clone(),
        );
        r.register(
            "agent_capacity",
            desk_wide("Summed capacity of agents taking chats"),
            m.agent_capacity.clone(),
        );
        r.register(
            "desk_figures_age_seconds",
            "Seconds since this node last read the desk-wide series (0: current; growing: Redis unreachable, last values kept)",
            m.desk_figures_age_seconds.clone(),
        );
        r.register(
            "persist_pending",
            "Messages waiting for the store",
            m.persist_pending.clone(),
        );
        r.register(
            "persist_lag_seconds",
            "Age of the oldest message not yet stored",
            m.persist_lag_seconds.clone(),
        );
        r.register(
            "persist_failing",
            "1 while writes to the store fail",
            m.persist_failing.clone(),
        );
        r.register(
            "persisted_messages",
            "Messages written to the store",
            m.persisted_messages.clone(),
        );
        r.register(
            "persist_failures",
            "Failed writes to the store",
            m.persist_failures.clone(),
        );
        m.desk.register(r);
        r.register(
            "webhook_deliveries",
            "Webhook events by how they ended",
            m.webhook_deliveries.clone(),
        );
        r.register(
            "webhook_attempts",
            "Webhook requests by result",
            m.webhook_attempts.clone(),
        );
        r.register(
            "webhook_queue_depth",
            "Webhook events held: queued, in flight or waiting to retry",
            m.webhook_queue_depth.clone(),
        );
        r.register(
            "kb_searches",
            "Knowledge-base searches answered",
            m.kb_searches.clone(),
        );
        r.register(
            "kb_deflections",
            "Questions answered by a knowledge-base article, by category",
            m.kb_deflections.clone(),
        );
        r.register(
            "grace_periods_ended",
            "Grace periods ended after a client's last socket closed, by role and outcome",
            m.grace_periods_ended.clone(),
        );
        Self { registry, ..m }
    }

    /// Copies the persister's figures into the series; called just before each scrape.
    pub fn observe_persister(&self, stats: PersistStats) {
        self.persist_pending.set(stats.pending as i64);
        self.persist_lag_seconds
            .set(stats.oldest_pending_age_ms as f64 / 1000.0);
        self.persist_failing.set(i64::from(stats.failing));
        let mut seen = self.persist_seen.lock().expect("metrics lock");
        self.persisted_messages
            .inc_by(stats.persisted_total.saturating_sub(seen.0));
        self.persist_failures
            .inc_by(stats.failures_total.saturating_sub(seen.1));
        *seen = (
            stats.persisted_total.max(seen.0),
            stats.failures_total.max(seen.1),
        );
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn error_sent(&self, code: crate::protocol::ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    pub fn close_sent(&self, code: u16) {
        self.closes.get_or_create(&CloseLabel { code }).inc();
    }

    pub fn assigned_after(&self, category: &str, waited: std::time::Duration) {
        self.time_to_agent
            .get_or_create(&CategoryLabel {
                category: category.to_string(),
            })
            .observe(waited.as_secs_f64());
        self.recent_time_to_agent.record(waited);
    }

    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitLabel { limit }).inc();
    }

    /// Open WebSockets of both roles, as `parley_connections` shows them: what the drain reports.
    pub fn open_sockets(&self) -> i64 {
        ["visitor", "agent"]
            .into_iter()
            .map(|role| self.connections.get_or_create(&RoleLabel { role }).get())
            .sum()
    }
}

/// A gauge of connected sockets that cannot be left behind: dropped with the socket.
pub struct ConnectionGauge<'a> {
    gauge: &'a Family<RoleLabel, Gauge>,
    role: &'static str,
}

impl<'a> ConnectionGauge<'a> {
    pub fn open(metrics: &'a Metrics, role: &'static str) -> Self {
        metrics.connections.get_or_create(&RoleLabel { role }).inc();
        metrics
            .connections_total
            .get_or_create(&RoleLabel { role })
            .inc();
        Self {
            gauge: &metrics.connections,
            role,
        }
    }
}

impl Drop for ConnectionGauge<'_> {
    fn drop(&mut self) {
        self.gauge
            .get_or_create(&RoleLabel { role: self.role })
            .dec();
    }
}

/// Time-to-agent samples older than this leave the percentiles.
const TIME_TO_AGENT_WINDOW: Duration = Duration::from_secs(300);
/// At most this many samples are kept, so a burst cannot grow the window without bound.
const TIME_TO_AGENT_SAMPLES: usize = 20_000;

/// Percentiles of the recent times to agent, for the ops view.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TimeToAgent {
    pub samples: usize,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
}

/// Exact time-to-agent samples of the last few minutes (the histogram's buckets are too coarse
/// for the ops view's percentiles), kept beside the histogram that counts the same assignments.
#[derive(Default)]
pub struct TimeToAgentWindow {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl TimeToAgentWindow {
    pub fn record(&self, waited: Duration) {
        let mut samples = self.samples.lock().expect("window lock");
        if samples.len() == TIME_TO_AGENT_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((Instant::now(), waited.as_millis() as u64));
    }

    /// The percentiles of the samples taken within the window before `now`.
    pub fn summary(&self, now: Instant) -> TimeToAgent {
        let mut samples = self.samples.lock().expect("window lock");
        while samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > TIME_TO_AGENT_WINDOW)
        {
            samples.pop_front();
        }
        let mut ms: Vec<u64> = samples.iter().map(|(_, ms)| *ms).collect();
        drop(samples);
        ms.sort_unstable();
        TimeToAgent {
            samples: ms.len(),
            p50_ms: percentile(&ms, 0.50),
            p95_ms: percentile(&ms, 0.95),
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.95), Some(95));
        assert_eq!(percentile(&[7], 0.95), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn the_window_forgets_old_samples_and_stays_bounded() {
        let w = TimeToAgentWindow::default();
        for ms in [100, 200, 300] {
            w.record(Duration::from_millis(ms));
        }
        let now = Instant::now();
        assert_eq!(w.summary(now).samples, 3);
        assert_eq!(w.summary(now).p50_ms, Some(200));
        let later = now + TIME_TO_AGENT_WINDOW + Duration::from_secs(1);
        assert_eq!(w.summary(later).samples, 0);
        for _ in 0..TIME_TO_AGENT_SAMPLES + 10 {
            w.record(Duration::ZERO);
        }
        assert_eq!(w.summary(Instant::now()).samples, TIME_TO_AGENT_SAMPLES);
    }
}
