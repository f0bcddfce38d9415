//! Placements and moves: assignments the routing scripts made, told to both sides; a
//! conversation moved by the `TRANSFER` script; the queue's wait estimate.

use super::*;
use crate::engine::desk::{assigned, Waited};

impl Inner {
    /// Tells a visitor its conversation waits; its node keeps the position fresh.
    pub(super) async fn send_queued(
        &self,
        visitor: &VisitorId,
        id: ConversationId,
        position: u32,
        reason: QueueReason,
    ) {
        // Kept, so a visitor who reconnects while waiting is told the same reason; when and
        // where it entered the queue teach the wait estimate once it is assigned (system time,
        // as on one node: a wait is real seconds whatever the desk's clock says).
        let kept: Result<(), _> = redis::cmd("HSET")
            .arg(self.keys.meta(id))
            .arg("queue_reason")
            .arg(serde_json::to_string(&reason).unwrap_or_default())
            .arg("queued_since")
            .arg(format!("{}|{position}", now_millis()))
            .query_async(&mut self.conn())
            .await;
        if let Err(err) = kept {
            tracing::debug!(conversation = %id, error = %err, "queue reason not kept");
        }
        self.send_frame(
            vec![ClientKey::visitor(visitor)],
            self.queued_frame(id, position, reason),
            Some((id, position, reason)),
        )
        .await;
    }

    /// Records assignments made by a routing script and tells both sides.
    pub(super) async fn apply_assignments(&self, flat: &[String]) -> R<()> {
        for pair in flat.chunks(2) {
            let [conv, agent] = pair else { continue };
            let Ok(conv) = ConversationId::parse(conv) else {
                continue;
            };
            let now = self.clock.now_millis();
            // Written before anyone is told: a message appended from now on names the agent,
            // so it is published to the agent's node too.
            let (before, queued_since): (Option<u64>, Option<String>) = redis::pipe()
                .cmd("HGET")
                .arg(self.keys.meta(conv))
                .arg("assigned_at")
                .cmd("HGET")
                .arg(self.keys.meta(conv))
                .arg("queued_since")
                .cmd("HDEL")
                .arg(self.keys.meta(conv))
                .arg("queued_since")
                .ignore()
                .cmd("HSET")
                .arg(self.keys.meta(conv))
                .arg("agent")
                .arg(agent)
                .arg("state")
                .arg("assigned")
                .arg("assigned_at")
                .arg(now)
                .ignore()
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            let Some(meta) = self.meta(conv).await? else {
                continue;
            };
            tracing::info!(conversation = %conv, agent = %agent, "assigned");
            // A wait in the queue teaches the estimate (system time, as on one node: a wait is
            // real seconds whatever the desk's clock says).
            let queued = queued_since.as_deref().and_then(|q| {
                let (at, position) = q.split_once('|')?;
                Some((at.parse::<u64>().ok()?, position.parse::<u32>().ok()?))
            });
            let waited = queued.map(|(since, _)| now_millis().saturating_sub(since));
            if let (Some(waited), Some((_, position))) = (waited, queued) {
                self.learn_wait(waited, position).await;
            }
            let view = self.view(conv, &meta);
            assigned(
                &self.persist,
                &self.metrics,
                &self.webhooks,
                meta.record(conv, ConversationState::Assigned),
                &view,
                Waited::of(waited.map(Duration::from_millis), before.is_none()),
            );
            let mut targets = vec![ClientKey(format!("a:{agent}"))];
            targets.push(ClientKey(format!("v:{}", meta.visitor)));
            self.publish(
                &targets,
                Wire::Assigned {
                    conv,
                    visitor: meta.visitor.clone(),
                    agent: agent.clone(),
                    view: Box::new(view),
                },
            )
            .await;
            if let Ok(a) = AgentId::parse(agent) {
                self.push_agent_state(&a).await;
            }
        }
        Ok(())
    }

    /// Runs the `TRANSFER` script (`mode`: `team`, `agent` or `requeue`) and tells everyone
    /// concerned, as `relocate` does on one node: the agent it leaves (`transferred`), the
    /// visitor (`transferred` unless it is only requeued, then `assigned` or `queued`), the
    /// receiving agent (`assigned` with the history, on whichever node).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn relocate(
        &self,
        id: ConversationId,
        meta: &Meta,
        from: Option<&AgentId>,
        mode: &str,
        to_arg: &str,
        kind: MoveKind,
        notes: Option<MoveNotes<'_>>,
    ) -> R<()> {
        let directory = &self.settings.directory;
        let moved = mode != "requeue";
        let escalation = kind == MoveKind::Escalation;
        let out: Vec<String> = self
            .routing_invocation(&scripts::TRANSFER)
            .arg(id.to_string())
            .arg(from.map_or("", AgentId::as_str))
            .arg(mode)
            .arg(to_arg)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let (outcome, value) = (
            out.first().map(String::as_str).unwrap_or_default(),
            out.get(1).cloned().unwrap_or_default(),
        );
        let made = out.get(2..).unwrap_or_default();
        let receiving = match outcome {
            "assigned" => Some(value.clone()),
            "queued" => None,
            _ => {
                return Err(match value.as_str() {
                    "forbidden" => EngineError::Forbidden,
                    "unavailable" => EngineError::TargetUnavailable,
                    _ => EngineError::NotFound,
                })
            }
        };
        // The history the receiving side reads says who moved it where, and why: written once
        // the move is decided, still as `from`'s (the conversation's agent is rewritten below),
        // so the notes reach `from` as on one node and are there when the receiver reads.
        // The move is made: a note that cannot be written now is logged, and everyone is still
        // told where the conversation went.
        if let Some(notes) = notes {
            let mut written = self
                .append_reserved(id, None, None, notes.system, None, MessageKind::Note)
                .await
                .map(|_| ());
            if let (Ok(()), Some(text)) = (&written, notes.agent) {
                written = self
                    .append_reserved(
                        id,
                        Some(notes.origin),
                        None,
                        text,
                        Some(notes.by),
                        MessageKind::Note,
                    )
                    .await
                    .map(|_| ());
            }
            if let Err(err) = written {
                tracing::warn!(conversation = %id, error = %err, "transfer note not written");
            }
        }
        // The conversation's figures and where it now is, before anyone is told: a message
        // appended from now on no longer names `from`.
        let team = if mode == "team" {
            to_arg.to_string()
        } else {
            meta.team.clone().unwrap_or_default()
        };
        let mut write = redis::pipe();
        write
            .cmd("HSET")
            .arg(self.keys.meta(id))
            .arg("team")
            .arg(&team)
            .ignore();
        if moved {
            write
                .cmd("HINCRBY")
                .arg(self.keys.meta(id))
                .arg("transfers")
                .arg(1)
                .ignore();
        }
        if escalation {
            write
                .cmd("HSET")
                .arg(self.keys.meta(id))
                .arg("escalated")
                .arg("1")
                .ignore();
        }
        if receiving.is_none() {
            write
                .cmd("HSET")
                .arg(self.keys.meta(id))
                .arg("agent")
                .arg("")
                .arg("state")
                .arg("queued")
                .ignore();
        }
        write
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let label_kind = policy::transfer_label(kind, mode == "agent");
        self.metrics
            .desk
            .transfers
            .get_or_create(&TransferLabel { kind: label_kind })
            .inc();
        let team_name = TeamId::parse(&team)
            .ok()
            .and_then(|t| directory.team(&t).map(|t| t.name.clone()));
        let frame = ServerFrame::Transferred {
            conversation_id: id,
            team: team_name,
            agent: receiving.as_ref().map(|a| Participant {
                id: a.clone(),
                name: Some(self.agent_profile(a).0),
            }),
            escalated: escalation,
        }
        .to_text()
        .to_string();
        tracing::info!(conversation = %id, from = ?from.map(AgentId::as_str), kind = label_kind, "moved");
        let mut told = Vec::new();
        if let Some(from) = from {
            told.push(ClientKey::agent(from));
        }
        if moved {
            told.push(ClientKey(format!("v:{}", meta.visitor)));
        }
        self.publish(
            &told,
            Wire::Transferred {
                conv: id,
                // Empty: the visitor is not told (only requeued, it hears `queued`).
                visitor: if moved {
                    meta.visitor.clone()
                } else {
                    String::new()
                },
                from: from.map_or_else(String::new, ToString::to_string),
                frame,
            },
        )
        .await;
        match receiving {
            Some(agent) => self.apply_assignments(&[id.to_string(), agent]).await?,
            None => {
                let position: u32 = value.parse().unwrap_or(1);
                if let Some(meta) = self.meta(id).await? {
                    self.persist
                        .conversation(meta.record(id, ConversationState::Queued));
                }
                let reason = policy::requeue_reason(kind, moved);
                if let Ok(v) = VisitorId::parse(&meta.visitor) {
                    self.send_queued(&v, id, position, reason).await;
                }
            }
        }
        if let Some(now) = self.meta(id).await? {
            let from = from.map(|a| Participant {
                id: a.to_string(),
                name: Some(self.agent_profile(a.as_str()).0),
            });
            self.webhooks.emit(WebhookEvent::conversation_transferred(
                &self.view(id, &now),
                from.as_ref(),
            ));
        }
        self.apply_assignments(made).await?;
        if let Some(from) = from {
            self.push_agent_state(from).await;
        }
        Ok(())
    }

    /// Positions of conversations in their targets' queues (`None`: not queued).
    pub(super) async fn positions(&self, ids: &[ConversationId]) -> R<Vec<Option<u32>>> {
        let mut inv = self.routing_invocation(&scripts::POSITIONS);
        for id in ids {
            inv.arg(id.to_string());
        }
        let out: Vec<u32> = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(out.into_iter().map(|p| (p > 0).then_some(p)).collect())
    }

    pub(super) fn queued_frame(
        &self,
        id: ConversationId,
        position: u32,
        reason: QueueReason,
    ) -> ServerFrame {
        ServerFrame::Queued {
            conversation_id: id,
            position,
            estimated_wait_ms: self.wait.estimate(position),
            reason,
        }
    }

    /// Reads the desk's learnt wait per position, which every node's assignments feed.
    pub(super) async fn read_wait_estimate(&self) {
        let learnt: Result<Option<f64>, _> = redis::cmd("GET")
            .arg(self.keys.routing("wait_per_position"))
            .query_async(&mut self.conn())
            .await;
        if let Ok(Some(ms)) = learnt {
            self.wait.set(ms);
        }
    }

    /// Feeds one assignment's wait into the shared estimate, as one node does with its own
    /// ([`policy::learn_wait`]). Two nodes learning at once may each smooth from the same
    /// previous figure and one sample is lost: an estimate, not a count, so no script for it.
    pub(super) async fn learn_wait(&self, waited_ms: u64, position: u32) {
        let key = self.keys.routing("wait_per_position");
        let previous: Result<Option<f64>, _> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.conn())
            .await;
        let Ok(previous) = previous else {
            return;
        };
        let learnt = policy::learn_wait(previous, waited_ms, position);
        self.wait.set(learnt);
        let _: Result<(), _> = redis::cmd("SET")
            .arg(&key)
            .arg(learnt)
            .query_async(&mut self.conn())
            .await;
    }
}
