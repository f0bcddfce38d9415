//! Placements and moves in the hub: assignments told to both sides, queue positions pushed to
//! those who wait, a conversation moved to another team or agent.

use super::*;
use crate::engine::desk::{assigned, Waited};

impl Shared {
    /// Gives queued conversations to their agents and tells both sides.
    pub(super) fn apply_assignments(&self, hub: &mut Hub, made: Vec<Assignment>) {
        let now = self.clock.now_millis();
        for Assignment {
            conversation,
            agent,
        } in made
        {
            let agent_name = hub.agents.get(&agent).map(|a| a.name.clone());
            let Some(c) = hub.conversations.get_mut(&conversation) else {
                continue;
            };
            let first_assignment = c.assigned_at.is_none();
            c.agent = Some(agent.clone());
            c.assigned_at = Some(now);
            c.last_queued = None;
            c.queue_reason = QueueReason::NoAgentAvailable;
            let queued = c.queued_since.take();
            if let Some((since, position)) = queued {
                hub.wait_per_position_ms = Some(policy::learn_wait(
                    hub.wait_per_position_ms,
                    since.elapsed().as_millis() as u64,
                    u32::try_from(position).unwrap_or(u32::MAX),
                ));
            }
            c.dirty = false;
            let view = self.agent_view(c, agent_name.as_deref(), None);
            assigned(
                &self.persist,
                &self.metrics,
                &self.webhooks,
                c.record(ConversationState::Assigned),
                &view,
                Waited::of(queued.map(|(since, _)| since.elapsed()), first_assignment),
            );
            // Its newest messages: an agent taking over a long conversation needs its end, and
            // fetches the rest with `history` (`recovered: false`).
            let skip = c.window.len().saturating_sub(self.settings.takeover_max);
            let history_complete = c.window.get(skip).is_none_or(|m| m.seq.0 <= 1);
            let assigned = ServerFrame::Assigned {
                conversation: c.visitor_view(agent_name.as_deref(), None),
            }
            .to_text();
            let for_agent = ServerFrame::Assigned {
                conversation: self.agent_view(c, agent_name.as_deref(), Some(history_complete)),
            }
            .to_text();
            let history: Vec<Frame> = c
                .window
                .iter()
                .skip(skip)
                .map(|m| ServerFrame::Message(message_view(m)).to_text())
                .collect();
            let visitor = c.visitor.clone();
            tracing::info!(conversation = %conversation, agent = %agent, "assigned");
            if let Some(v) = hub.visitors.get(&visitor) {
                push_all(&v.sockets, &assigned, None);
            }
            if let Some(a) = hub.agents.get_mut(&agent) {
                a.conversations.insert(conversation);
                push_all(&a.sockets, &for_agent, None);
                for frame in &history {
                    push_all(&a.sockets, frame, None);
                }
            }
            self.push_agent_state(hub, &agent);
        }
    }

    /// Pushes `queued` to every waiting visitor whose position or estimate changed. Those in
    /// `forced` get a frame whatever changed, with `forced_reason`.
    pub(super) fn refresh_queue(
        &self,
        hub: &mut Hub,
        forced_reason: QueueReason,
        forced: &[ConversationId],
    ) {
        let per_position = hub.wait_per_position_ms;
        let order: Vec<(ConversationId, usize)> = hub
            .router
            .queue_positions()
            .into_iter()
            .map(|(c, _, position)| (c, position))
            .collect();
        for (id, position) in &order {
            let (id, position) = (id, *position);
            let Some(c) = hub.conversations.get_mut(id) else {
                continue;
            };
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            let estimate = policy::estimated_wait_ms(per_position, position);
            let bucket = policy::estimate_bucket(position, estimate);
            let is_forced = forced.contains(id);
            if !is_forced && c.last_queued == Some(bucket) {
                continue;
            }
            c.last_queued = Some(bucket);
            let reason = if is_forced {
                forced_reason
            } else {
                c.queue_reason
            };
            let frame = ServerFrame::Queued {
                conversation_id: *id,
                position,
                estimated_wait_ms: estimate,
                reason,
            }
            .to_text();
            if let Some(v) = hub.visitors.get(&c.visitor) {
                push_all(&v.sockets, &frame, None);
            }
        }
    }

    pub(super) fn push_agent_state(&self, hub: &mut Hub, agent: &AgentId) {
        let queue_length = u32::try_from(hub.router.queue_len()).unwrap_or(u32::MAX);
        let Some(entry) = hub.agents.get_mut(agent) else {
            return;
        };
        let open = u32::try_from(entry.conversations.len()).unwrap_or(u32::MAX);
        let state = (entry.status, open, entry.capacity, queue_length);
        if entry.last_state == Some(state) || entry.sockets.is_empty() {
            return;
        }
        entry.last_state = Some(state);
        let frame = ServerFrame::AgentState {
            status: entry.status,
            open,
            capacity: entry.capacity,
            queue_length,
        }
        .to_text();
        push_all(&entry.sockets, &frame, None);
    }

    /// Moves a conversation to another team or agent, or back to the queue, and tells
    /// everyone concerned: the agent it leaves (`transferred`), the visitor (`transferred`,
    /// then `assigned` or `queued`), the receiving agent (`assigned` with the history).
    pub(super) fn relocate(
        &self,
        hub: &mut Hub,
        id: ConversationId,
        to: Move,
        kind: MoveKind,
    ) -> Result<(), EngineError> {
        let c = hub.conversations.get(&id).ok_or(EngineError::NotFound)?;
        let from = c.agent.clone();
        let (placement, made) = match (&to, &from) {
            (Move::Team(team), Some(_)) => hub
                .router
                .transfer(id, Target::Team(team.clone()))
                .map_err(transfer_error)?,
            (Move::Team(team), None) => {
                let (position, made) = hub
                    .router
                    .promote(&id, Some(Target::Team(team.clone())))
                    .ok_or(EngineError::NotFound)?;
                (Placement::Queued { position }, made)
            }
            (Move::Agent(agent), Some(_)) => {
                let made = hub
                    .router
                    .transfer_to_agent(id, agent)
                    .map_err(transfer_error)?;
                (Placement::Assigned(agent.clone()), made)
            }
            (Move::Agent(_), None) => return Err(EngineError::NotFound),
            (Move::Requeue, Some(_)) => {
                let (position, made) = hub.router.requeue(id).map_err(transfer_error)?;
                (Placement::Queued { position }, made)
            }
            (Move::Requeue, None) => {
                let (position, made) =
                    hub.router.promote(&id, None).ok_or(EngineError::NotFound)?;
                (Placement::Queued { position }, made)
            }
        };
        let target = hub.router.target_of(&id).cloned().unwrap_or(Target::Any);
        let team_name = self.settings.directory.target_name(&target);
        let label = policy::transfer_label(kind, matches!(to, Move::Agent(_)));
        self.metrics
            .desk
            .transfers
            .get_or_create(&TransferLabel { kind: label })
            .inc();
        let receiving = match &placement {
            Placement::Assigned(a) => Some(Participant {
                id: a.to_string(),
                name: hub.agents.get(a).map(|e| e.name.clone()),
            }),
            Placement::Queued { .. } => None,
        };
        let moved = matches!(to, Move::Team(_) | Move::Agent(_));
        let Some(c) = hub.conversations.get_mut(&id) else {
            return Err(EngineError::NotFound);
        };
        c.target = target;
        if moved {
            c.desk.transfers += 1;
        }
        if kind == MoveKind::Escalation {
            c.desk.escalated = true;
        }
        c.agent = None;
        c.last_queued = None;
        c.dirty = true;
        let frame = ServerFrame::Transferred {
            conversation_id: id,
            team: team_name,
            agent: receiving,
            escalated: kind == MoveKind::Escalation,
        }
        .to_text();
        let visitor = c.visitor.clone();
        if let Placement::Queued { .. } = placement {
            c.queued_since = Some((Instant::now(), 1));
            c.queue_reason = policy::requeue_reason(kind, moved);
            self.persist
                .conversation(c.record(ConversationState::Queued));
        }
        if let Some(agent) = &from {
            if let Some(a) = hub.agents.get_mut(agent) {
                a.conversations.remove(&id);
                push_all(&a.sockets, &frame, None);
            }
        }
        if let Some(v) = hub.visitors.get(&visitor) {
            if moved {
                push_all(&v.sockets, &frame, None);
            }
        }
        tracing::info!(conversation = %id, from = ?from.as_ref().map(AgentId::as_str), kind = label, "moved");
        if let Placement::Assigned(agent) = placement {
            self.apply_assignments(
                hub,
                vec![Assignment {
                    conversation: id,
                    agent,
                }],
            );
        } else {
            let reason = hub.conversations[&id].queue_reason;
            self.refresh_queue(hub, reason, &[id]);
        }
        self.apply_assignments(hub, made);
        self.refresh_queue(hub, QueueReason::NoAgentAvailable, &[]);
        if let Some(agent) = &from {
            self.push_agent_state(hub, agent);
        }
        if let Some(c) = hub.conversations.get(&id) {
            let from = from.as_ref().map(|a| Participant {
                id: a.to_string(),
                name: hub.agents.get(a).map(|e| e.name.clone()),
            });
            let agent_name = c
                .agent
                .as_ref()
                .and_then(|a| hub.agents.get(a))
                .map(|a| a.name.as_str());
            self.webhooks.emit(WebhookEvent::conversation_transferred(
                &self.agent_view(c, agent_name, None),
                from.as_ref(),
            ));
        }
        Ok(())
    }

    /// Asks for a look at a conversation's first-response clock when it would warn, unless
    /// it was answered already (see [`super::desk::DeskEngine::check_first_responses`]).
    pub(super) fn schedule_first_response(&self, hub: &mut Hub, id: ConversationId) {
        let Some(c) = hub.conversations.get(&id) else {
            return;
        };
        let (Some(due_at), None) = (c.desk.first_response_due_at, c.desk.first_response_at) else {
            return;
        };
        let clock = FirstResponseClock {
            created_at: c.created_at,
            due_at,
            first_response_at: None,
        };
        let at = clock.warn_at(self.settings.desk.sla_warning_percent);
        hub.deadlines.schedule(id, at);
    }
}
