//! The ops view: one snapshot of the gateway's load a second, kept for the last minutes.
//!
//! The dashboard at `/ops` draws these; `/v1/ops/snapshots` returns the kept ones and
//! `/v1/ops/stream` pushes each new one as a server-sent event. Figures come from the same
//! [`Metrics`] that `/metrics` exports, so the dashboard and Prometheus never disagree; rates
//! are differences between consecutive seconds. Time to agent is the exception: histogram
//! buckets are too coarse for a median, so assignments also land in a short window of exact
//! samples here.
//!
//! Agents, their load and capacity, conversations open and the queue describe the whole desk:
//! on the Redis engine every node reads them from the shared state (`engine::redis::figures`)
//! and `desk_figures_age_ms` says how old they are when Redis stops answering. Visitors,
//! rates and persistence are this node's own.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::domain::{now_millis, UnixMillis};
use crate::limits::Limit;
use crate::metrics::{
    CategoryLabel, LimitLabel, Metrics, RoleLabel, ScoreLabel, SlaLabel, StatusLabel, TimeToAgent,
    TransferLabel,
};
use crate::routing::Categories;
use crate::transcript::PersistHandle;

/// Snapshots kept: ten minutes at one a second.
pub const KEPT: usize = 600;

/// One second of the gateway, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub ts: UnixMillis,
    /// Visitor sockets on this node.
    pub visitors: i64,
    /// Connected agents by status, desk-wide.
    pub agents: AgentCounts,
    /// Chats held by agents taking chats over their summed capacity, 0..1 (0 when nobody is online).
    pub utilisation: f64,
    pub agent_load: i64,
    pub agent_capacity: i64,
    /// Queued or assigned, desk-wide.
    pub conversations_open: i64,
    /// Waiting conversations per category, desk-wide, keyed by name (`/v1/info` gives the priority order).
    pub queue: BTreeMap<String, i64>,
    pub queue_total: i64,
    /// How old the desk-wide figures above are: 0 while current; on the Redis engine, the time
    /// since they were last read while Redis does not answer (they keep their last values).
    pub desk_figures_age_ms: u64,
    /// Over the last five minutes of assignments.
    pub time_to_agent: TimeToAgent,
    pub messages_per_second: f64,
    pub messages_total: u64,
    pub rate_limited_per_second: f64,
    pub rate_limited_total: u64,
    /// Messages accepted but not yet in the store, and how long the oldest has waited.
    pub persist_pending: u64,
    pub persist_lag_ms: u64,
    pub persist_failing: bool,
    /// The support desk since this node started (reports over days are at `/v1/reports`).
    pub desk: DeskFigures,
}

/// Service levels, surveys and self-service since start, from the desk's counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeskFigures {
    /// First replies within and past target, and conversations that breached, per category
    /// (keyed by name).
    pub sla: BTreeMap<String, SlaCounts>,
    /// Met over met + missed over all categories; `None` before any first reply.
    pub sla_attainment: Option<f64>,
    pub csat_answers: u64,
    pub csat_average: Option<f64>,
    pub deflections: u64,
    pub offline_messages: u64,
    pub transfers: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SlaCounts {
    pub met: u64,
    pub missed: u64,
    pub breached: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct AgentCounts {
    pub online: i64,
    pub away: i64,
    pub offline: i64,
}

/// The kept snapshots and the feed of new ones.
pub struct OpsFeed {
    kept: Mutex<VecDeque<Snapshot>>,
    live: broadcast::Sender<Snapshot>,
}

impl OpsFeed {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
            live: broadcast::channel(16).0,
        })
    }

    pub fn kept(&self) -> Vec<Snapshot> {
        self.kept
            .lock()
            .expect("feed lock")
            .iter()
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Snapshot> {
        self.live.subscribe()
    }

    fn push(&self, snapshot: Snapshot) {
        let mut kept = self.kept.lock().expect("feed lock");
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(snapshot.clone());
        drop(kept);
        // Nobody listening is fine.
        let _ = self.live.send(snapshot);
    }
}

/// Takes a snapshot every `every` until `stop`.
pub async fn sample(
    feed: Arc<OpsFeed>,
    metrics: Arc<Metrics>,
    categories: Categories,
    persist: PersistHandle,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<(Instant, u64, u64)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = Instant::now();
        let snapshot = take(&metrics, &categories, &persist, now, &mut previous);
        feed.push(snapshot);
    }
}

fn take(
    metrics: &Metrics,
    categories: &Categories,
    persist: &PersistHandle,
    now: Instant,
    previous: &mut Option<(Instant, u64, u64)>,
) -> Snapshot {
    let role = |role| metrics.connections.get_or_create(&RoleLabel { role }).get();
    let status = |status| metrics.agents.get_or_create(&StatusLabel { status }).get();
    let messages_total: u64 = ["visitor", "agent"]
        .into_iter()
        .map(|role| metrics.messages.get_or_create(&RoleLabel { role }).get())
        .sum();
    let rate_limited_total: u64 = [
        Limit::VisitorMessages,
        Limit::VisitorConversations,
        Limit::AgentMessages,
        Limit::IpConnections,
        Limit::SocketFrames,
        Limit::KbRequests,
    ]
    .into_iter()
    .map(|limit| {
        metrics
            .rate_limited
            .get_or_create(&LimitLabel {
                limit: limit.as_str(),
            })
            .get()
    })
    .sum();
    let (messages_per_second, rate_limited_per_second) = match *previous {
        Some((at, messages, limited)) => {
            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
            (
                messages_total.saturating_sub(messages) as f64 / secs,
                rate_limited_total.saturating_sub(limited) as f64 / secs,
            )
        }
        None => (0.0, 0.0),
    };
    *previous = Some((now, messages_total, rate_limited_total));

    let queue: BTreeMap<String, i64> = categories
        .all()
        .iter()
        .map(|c| {
            let depth = metrics
                .queue_depth
                .get_or_create(&CategoryLabel {
                    category: c.to_string(),
                })
                .get();
            (c.to_string(), depth)
        })
        .collect();
    let agent_load = metrics.agent_load.get();
    let agent_capacity = metrics.agent_capacity.get();
    let persisted = persist.stats();
    Snapshot {
        ts: now_millis(),
        visitors: role("visitor"),
        agents: AgentCounts {
            online: status("online"),
            away: status("away"),
            offline: status("offline"),
        },
        utilisation: if agent_capacity > 0 {
            agent_load as f64 / agent_capacity as f64
        } else {
            0.0
        },
        agent_load,
        agent_capacity,
        conversations_open: metrics.conversations_open.get(),
        queue_total: queue.values().sum(),
        queue,
        desk_figures_age_ms: (metrics.desk_figures_age_seconds.get() * 1000.0) as u64,
        time_to_agent: metrics.recent_time_to_agent.summary(now),
        messages_per_second,
        messages_total,
        rate_limited_per_second,
        rate_limited_total,
        persist_pending: persisted.pending,
        persist_lag_ms: persisted.oldest_pending_age_ms,
        persist_failing: persisted.failing,
        desk: desk_figures(metrics, categories),
    }
}

fn desk_figures(metrics: &Metrics, categories: &Categories) -> DeskFigures {
    let d = &metrics.desk;
    let first = |category: &str, outcome| {
        d.first_responses
            .get_or_create(&SlaLabel {
                category: category.to_string(),
                outcome,
            })
            .get()
    };
    let sla: BTreeMap<String, SlaCounts> = categories
        .all()
        .iter()
        .map(|c| {
            let counts = SlaCounts {
                met: first(c.as_str(), "met"),
                missed: first(c.as_str(), "missed"),
                breached: d
                    .sla_breaches
                    .get_or_create(&CategoryLabel {
                        category: c.to_string(),
                    })
                    .get(),
            };
            (c.to_string(), counts)
        })
        .collect();
    let (met, answered) = sla
        .values()
        .fold((0, 0), |(m, a), s| (m + s.met, a + s.met + s.missed));
    let (answers, score_sum) = (1..=5u8).fold((0u64, 0u64), |(n, sum), score| {
        let k = d.csat_answers.get_or_create(&ScoreLabel { score }).get();
        (n + k, sum + k * u64::from(score))
    });
    let offline_messages = categories
        .all()
        .iter()
        .map(|c| {
            d.offline_messages
                .get_or_create(&CategoryLabel {
                    category: c.to_string(),
                })
                .get()
        })
        .sum();
    let deflections = categories
        .all()
        .iter()
        .map(|c| c.to_string())
        .chain(std::iter::once("none".to_string()))
        .map(|category| {
            metrics
                .kb_deflections
                .get_or_create(&CategoryLabel { category })
                .get()
        })
        .sum();
    let transfers = ["team", "agent", "escalation", "sla_breach"]
        .into_iter()
        .map(|kind| d.transfers.get_or_create(&TransferLabel { kind }).get())
        .sum();
    DeskFigures {
        sla,
        sla_attainment: (answered > 0).then(|| met as f64 / answered as f64),
        csat_answers: answers,
        csat_average: (answers > 0).then(|| score_sum as f64 / answers as f64),
        deflections,
        offline_messages,
        transfers,
    }
}
