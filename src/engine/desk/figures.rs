//! The desk-wide gauges (`parley_agents`, `parley_agent_load`, `parley_agent_capacity`,
//! `parley_conversations_open`, `parley_queue_depth`) and the ops feed that reads them: set from
//! the backend's [`Backend::load`] once a second, the same way on one node and on many.
//!
//! Every node reads the whole desk (on Redis, from the shared routing state), so each one's
//! `/metrics` shows the desk, not its share: dashboards combine nodes with `max`. Scrapes and the
//! ops sampler read the gauges, so N scrapes cost no backend reads at all. When a read fails, the
//! gauges keep the last figures and `parley_desk_figures_age_seconds` (the ops snapshot's
//! `desk_figures_age_ms`) grows, so a dashboard can tell "no queue" from "no news".

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::DeskEngine;
use crate::engine::backend::{Backend, DeskLoad};
use crate::metrics::{CategoryLabel, Metrics, StatusLabel};

/// How often the figures are read: the ops feed's one second.
const EVERY: Duration = Duration::from_secs(1);

impl<B: Backend> DeskEngine<B> {
    /// Reads the figures every [`EVERY`] until `shutdown`, keeping the gauges and their age
    /// current. The first read is at once, so a new node shows the desk from its start.
    pub(super) fn spawn_figures(self: &Arc<Self>, shutdown: CancellationToken) {
        let desk = Arc::downgrade(self);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Before the first read nothing is known: the age counts from start-up.
            let mut last_read = Instant::now();
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                let Some(desk) = desk.upgrade() else {
                    return;
                };
                match tokio::time::timeout(EVERY * 2, desk.backend.load()).await {
                    Ok(Ok(load)) => {
                        publish(&load, &metrics);
                        last_read = Instant::now();
                        if failing {
                            tracing::info!("desk figures read again");
                        }
                        failing = false;
                    }
                    Ok(Err(err)) => {
                        if !failing {
                            tracing::warn!(error = %err, "desk figures unreadable; keeping the last ones, marked stale");
                        }
                        failing = true;
                    }
                    Err(_) => {
                        if !failing {
                            tracing::warn!(
                                "desk figures not read in time; keeping the last ones, marked stale"
                            );
                        }
                        failing = true;
                    }
                }
                metrics.desk_figures_age_seconds.set(if failing {
                    last_read.elapsed().as_secs_f64()
                } else {
                    0.0
                });
            }
        });
    }
}

/// Sets the desk-wide gauges to `load`.
fn publish(load: &DeskLoad, metrics: &Metrics) {
    for (status, n) in &load.agents {
        metrics
            .agents
            .get_or_create(&StatusLabel { status })
            .set(*n);
    }
    metrics.agent_load.set(load.load);
    metrics.agent_capacity.set(load.capacity);
    metrics.conversations_open.set(load.conversations_open);
    for (category, n) in &load.queue {
        metrics
            .queue_depth
            .get_or_create(&CategoryLabel {
                category: category.clone(),
            })
            .set(*n);
    }
}
