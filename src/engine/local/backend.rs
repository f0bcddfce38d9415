//! The in-process backend's mechanisms ([`Backend`]): each one critical section under the
//! hub's lock, with no `.await` inside.

use super::*;
use crate::engine::backend::{DeskLoad, Rejoined, Waiting};

impl Backend for LocalBackend {
    fn categories(&self) -> &Categories {
        &self.categories
    }

    async fn arrive_visitor(
        &self,
        join: VisitorJoin,
        outbox: Outbox,
    ) -> Result<Option<Rejoined>, EngineError> {
        let mut hub = self.shared.lock();
        hub.generation += 1;
        let generation = hub.generation;
        let entry = hub
            .visitors
            .entry(join.visitor.clone())
            .or_insert_with(|| VisitorEntry::new(None));
        entry.generation = generation;
        if join.name.is_some() {
            entry.name = join.name;
        }
        entry.sockets.push(outbox);
        let Some(c) = entry.open.and_then(|id| hub.conversations.get(&id)) else {
            return Ok(None);
        };
        let mut budget = self.shared.settings.takeover_max;
        let (recovered, replay) = Shared::replay(
            c,
            join.last_seq.unwrap_or(Seq::ZERO),
            Role::Visitor,
            &mut budget,
        );
        let queued = hub.router.position(&c.id).map(|position| {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            Waiting {
                position,
                reason: c.queue_reason,
                estimated_wait_ms: policy::estimated_wait_ms(hub.wait_per_position_ms, position),
            }
        });
        Ok(Some(Rejoined {
            record: c.record(c.open_state()),
            agent_name: c
                .agent
                .as_ref()
                .and_then(|a| hub.agents.get(a))
                .map(|a| a.name.clone()),
            recovered,
            replay,
            queued,
        }))
    }

    async fn arrive_agent(
        &self,
        join: AgentJoin,
        outbox: Outbox,
    ) -> Result<(AgentStatus, Vec<Rejoined>), EngineError> {
        let mut hub = self.shared.lock();
        hub.generation += 1;
        let generation = hub.generation;
        let entry = hub.agents.entry(join.agent.clone()).or_insert_with(|| {
            AgentEntry::new(
                join.name.clone(),
                join.capacity,
                join.status.unwrap_or(AgentStatus::Online),
            )
        });
        entry.generation = generation;
        entry.name = join.name;
        entry.capacity = join.capacity;
        if let Some(status) = join.status {
            entry.status = status;
        }
        entry.sockets.push(outbox);
        entry.last_state = None;
        let status = entry.status;
        let agent_name = entry.name.clone();
        let mine: Vec<ConversationId> = entry.conversations.iter().copied().collect();
        let mut found = Vec::new();
        let mut budget = self.shared.settings.takeover_max;
        for id in mine {
            let Some(c) = hub.conversations.get(&id) else {
                continue;
            };
            let last_seq = join
                .resume
                .iter()
                .find(|r| r.conversation_id == id)
                .map_or(Seq::ZERO, |r| r.last_seq);
            let (recovered, replay) = Shared::replay(c, last_seq, Role::Agent, &mut budget);
            found.push(Rejoined {
                record: c.record(c.open_state()),
                agent_name: Some(agent_name.clone()),
                recovered,
                replay,
                queued: None,
            });
        }
        Ok((status, found))
    }

    async fn depart(&self, client: &Client, socket: SocketId) -> Option<Absence> {
        let shared = &self.shared;
        let mut hub = shared.lock();
        let generation = match client {
            Client::Visitor(v) => {
                let entry = hub.visitors.get_mut(v)?;
                entry.sockets.retain(|o| o.id() != socket);
                if !entry.sockets.is_empty() {
                    return None;
                }
                if entry.open.is_none() {
                    hub.visitors.remove(v);
                    return None;
                }
                entry.generation
            }
            Client::Agent(a) => {
                let entry = hub.agents.get_mut(a)?;
                entry.sockets.retain(|o| o.id() != socket);
                if !entry.sockets.is_empty() {
                    return None;
                }
                if entry.conversations.is_empty() {
                    hub.agents.remove(a);
                    hub.router.remove_agent(a);
                    return None;
                }
                let generation = entry.generation;
                hub.router.pause_agent(a);
                generation
            }
        };
        Some(Absence {
            client: client.clone(),
            generation,
        })
    }

    async fn schedule_grace(&self, absence: &Absence, at: UnixMillis) -> Result<(), EngineError> {
        self.shared.lock().graces.schedule(absence.clone(), at);
        Ok(())
    }

    async fn due_graces(&self, now: UnixMillis, limit: usize) -> Result<Vec<Absence>, EngineError> {
        Ok(self.shared.lock().graces.due(now, limit))
    }

    async fn expire(&self, absence: &Absence) -> Result<Option<Expired>, EngineError> {
        let shared = &self.shared;
        let mut hub = shared.lock();
        let expired = match &absence.client {
            Client::Visitor(visitor) => {
                let Some(entry) = hub.visitors.get(visitor) else {
                    return Ok(None);
                };
                if entry.generation != absence.generation || !entry.sockets.is_empty() {
                    return Ok(None);
                }
                let open = entry.open;
                // Kept while it has a conversation open: a join finds it there. Forgotten
                // when that closes ([`Backend::close`]).
                if open.is_none() {
                    hub.visitors.remove(visitor);
                }
                Expired::Visitor(open)
            }
            Client::Agent(agent) => {
                let Some(entry) = hub.agents.get(agent) else {
                    return Ok(None);
                };
                if entry.generation != absence.generation || !entry.sockets.is_empty() {
                    return Ok(None);
                }
                hub.agents.remove(agent);
                let requeued = shared.requeue_orphans(&mut hub, agent);
                Expired::Agent { requeued }
            }
        };
        Ok(Some(expired))
    }

    async fn last_closed(
        &self,
        visitor: &VisitorId,
    ) -> Result<Option<(ConversationId, UnixMillis)>, EngineError> {
        Ok(self.shared.lock().recently_closed.get(visitor).copied())
    }

    async fn open(
        &self,
        visitor: &VisitorId,
        opening: Opening,
    ) -> Result<Option<ConversationRecord>, EngineError> {
        let shared = &self.shared;
        let check = |hub: &Hub| -> Result<Option<String>, EngineError> {
            let entry = hub
                .visitors
                .get(visitor)
                .ok_or(EngineError::NoConversation)?;
            if entry.open.is_some() {
                return Err(EngineError::ConversationOpen);
            }
            Ok(entry.name.clone())
        };
        let conversation = match opening {
            Opening::Reopen { id, fallback } => {
                check(&shared.lock())?;
                // Read back from the store (rare, so worth the flush), then checked again
                // under the lock: it may have been reopened meanwhile.
                let Some((record, tail)) = self.load_closed(id).await? else {
                    return Ok(None);
                };
                let mut hub = shared.lock();
                let name = check(&hub)?;
                if hub.recently_closed.get(visitor).map(|r| r.0) != Some(id) {
                    return Ok(None);
                }
                hub.recently_closed.remove(visitor);
                let category = self.categories.parse(&record.category).unwrap_or(fallback);
                let target = shared.target_of_record(&record, &category);
                // Closed after a flush: every message is stored, nothing to skip.
                let window = shared.settings.replay_window;
                let mut c = Conversation::from_record(&record, category, target, tail, window, 0);
                c.reopened += 1;
                c.agent = None;
                c.assigned_at = None;
                if name.is_some() {
                    c.visitor_name = name;
                }
                (hub, c)
            }
            Opening::New(new) => {
                let hub = shared.lock();
                let name = check(&hub)?;
                let c = Conversation {
                    id: ConversationId::new(),
                    visitor: visitor.clone(),
                    visitor_name: name,
                    category: new.category,
                    agent: None,
                    created_at: shared.clock.now_millis(),
                    assigned_at: None,
                    queued_since: None,
                    page: new.page,
                    metadata: new.metadata,
                    last_seq: Seq::ZERO,
                    window: VecDeque::new(),
                    window_floor: Seq::ZERO,
                    cids: HashMap::new(),
                    last_queued: None,
                    queue_reason: QueueReason::NoAgentAvailable,
                    target: new.target,
                    reopened: 0,
                    desk: DeskRecord {
                        contact: new.contact,
                        offline: new.offline,
                        first_response_due_at: Some(new.due_at),
                        ..DeskRecord::default()
                    },
                    dirty: false,
                };
                (hub, c)
            }
        };
        let (mut hub, c) = conversation;
        let id = c.id;
        let record = c.record(ConversationState::Queued);
        hub.conversations.insert(id, c);
        if let Some(entry) = hub.visitors.get_mut(visitor) {
            entry.open = Some(id);
        }
        Ok(Some(record))
    }

    async fn place(
        &self,
        id: ConversationId,
        _visitor: &VisitorId,
        category: Category,
        target: Target,
        reason: QueueReason,
    ) -> Result<(), EngineError> {
        let shared = &self.shared;
        let mut hub = shared.lock();
        if !hub.conversations.contains_key(&id) {
            return Err(EngineError::NotFound); // closed meanwhile
        }
        match hub.router.request(id, category, target) {
            Placement::Assigned(agent) => {
                shared.apply_assignments(
                    &mut hub,
                    vec![Assignment {
                        conversation: id,
                        agent,
                    }],
                );
            }
            Placement::Queued { position } => {
                tracing::info!(conversation = %id, position, "queued");
                if let Some(c) = hub.conversations.get_mut(&id) {
                    c.queued_since = Some((Instant::now(), position));
                    c.queue_reason = reason;
                }
                shared.refresh_queue(&mut hub, reason, &[id]);
            }
        }
        Ok(())
    }

    async fn close(
        &self,
        id: ConversationId,
        _frame: &Frame,
    ) -> Result<Option<ConversationRecord>, EngineError> {
        let mut hub = self.shared.lock();
        let Some(c) = hub.conversations.remove(&id) else {
            return Ok(None);
        };
        hub.deadlines.cancel(&id);
        if let Some(v) = hub.visitors.get_mut(&c.visitor) {
            if v.open == Some(id) {
                v.open = None;
            }
            // Away (within its grace period) with nothing open now: nothing to keep.
            if v.open.is_none() && v.sockets.is_empty() {
                hub.visitors.remove(&c.visitor);
            }
        }
        Ok(Some(c.record(c.open_state())))
    }

    async fn wind_up(&self, closing: Closing) {
        let shared = &self.shared;
        let Closing {
            id,
            visitor,
            agent,
            frame,
            survey,
            closed_at,
        } = closing;
        // Stored first: acks wait for the store here, so the acks of the conversation's
        // messages reach their sockets before `closed` does, and the survey's answer is checked
        // against a stored record. A failing store answers at once (its retries go on), so the
        // close does not wait for it.
        if let Err(err) = shared.persist.flush().await {
            tracing::warn!(conversation = %id, error = %err, "flush before close failed; will retry");
        }
        let mut hub = shared.lock();
        remember_closed(&mut hub, visitor.clone(), id, closed_at);
        if let Some(v) = hub.visitors.get(&visitor) {
            push_all(&v.sockets, &frame, None);
            if survey {
                let request = ServerFrame::CsatRequest {
                    conversation_id: id,
                }
                .to_text();
                push_all(&v.sockets, &request, None);
            }
        }
        if let Some(agent) = &agent {
            if let Some(a) = hub.agents.get_mut(agent) {
                a.conversations.remove(&id);
                push_all(&a.sockets, &frame, None);
            }
        }
        let was_queued = hub.router.position(&id).is_some();
        let made = hub.router.release(&id);
        let queue_changed = was_queued || !made.is_empty();
        if let Some(agent) = &agent {
            shared.push_agent_state(&mut hub, agent);
        }
        shared.apply_assignments(&mut hub, made);
        if queue_changed {
            shared.refresh_queue(&mut hub, QueueReason::NoAgentAvailable, &[]);
        }
    }

    async fn set_status(
        &self,
        agent: &AgentId,
        status: AgentStatus,
        accepting: bool,
        capacity: Option<u32>,
    ) -> Result<(), EngineError> {
        let shared = &self.shared;
        let mut hub = shared.lock();
        let Some(entry) = hub.agents.get_mut(agent) else {
            return Err(EngineError::NotFound);
        };
        entry.status = status;
        if let Some(capacity) = capacity {
            entry.capacity = capacity;
        }
        let capacity = entry.capacity;
        let teams = shared.settings.directory.teams_of(agent);
        let made = hub.router.set_agent(agent, capacity, accepting, teams);
        shared.apply_assignments(&mut hub, made);
        shared.refresh_queue(&mut hub, QueueReason::NoAgentAvailable, &[]);
        shared.push_agent_state(&mut hub, agent);
        Ok(())
    }

    fn checkpoint(&self) {
        let mut hub = self.shared.lock();
        for c in hub.conversations.values_mut().filter(|c| c.dirty) {
            c.dirty = false;
            let state = if c.agent.is_some() {
                ConversationState::Assigned
            } else {
                ConversationState::Queued
            };
            self.shared.persist.conversation(c.record(state));
        }
    }

    fn live_record(&self, conversation: ConversationId) -> Option<ConversationRecord> {
        let hub = self.shared.lock();
        hub.conversations.get(&conversation).map(|c| {
            c.record(if c.agent.is_some() {
                ConversationState::Assigned
            } else {
                ConversationState::Queued
            })
        })
    }

    async fn load(&self) -> Result<DeskLoad, EngineError> {
        let hub = self.shared.lock();
        let (_, load, capacity) = hub.router.utilisation();
        let mut agents: HashMap<&'static str, i64> = [("online", 0), ("away", 0), ("offline", 0)]
            .into_iter()
            .collect();
        // Connected: an agent within its grace period has no socket and is not counted.
        for a in hub.agents.values().filter(|a| !a.sockets.is_empty()) {
            *agents.entry(a.status.as_str()).or_default() += 1;
        }
        let mut depth: HashMap<&Category, i64> = HashMap::new();
        for (_, category, _) in hub.router.queue_positions() {
            *depth.entry(category).or_default() += 1;
        }
        Ok(DeskLoad {
            agents,
            load: i64::from(load),
            capacity: i64::from(capacity),
            conversations_open: hub.conversations.len() as i64,
            queue: self
                .categories
                .all()
                .iter()
                .map(|c| (c.to_string(), depth.get(c).copied().unwrap_or(0)))
                .collect(),
        })
    }

    fn stats(&self) -> EngineStats {
        let hub = self.shared.lock();
        EngineStats {
            conversations_open: hub.conversations.len(),
            queued: hub.router.queue_len(),
        }
    }

    async fn append(&self, entry: Entry<'_>) -> Result<Appended, EngineError> {
        let shared = &self.shared;
        let mut hub = shared.lock();
        let id = match entry.origin {
            Some(origin) => shared.resolve(&hub, &origin.client, entry.conversation)?,
            None => entry
                .conversation
                .filter(|id| hub.conversations.contains_key(id))
                .ok_or(EngineError::NotFound)?,
        };
        if let (Some(origin), Some(cid)) = (entry.origin, &entry.cid) {
            let key = (role_of(&origin.client), cid.clone());
            if let Some(&seq) = hub.conversations[&id].cids.get(&key) {
                let ack = ack_frame(id, cid.clone(), seq, true);
                if let Some(o) = shared.origin_outbox(&hub, origin) {
                    // The original may still be on its way to the store: the same wait.
                    shared.persist.push_when_stored(o.clone(), ack);
                }
                return Ok(Appended::Duplicate { seq });
            }
        }
        let seq = shared.append(
            &mut hub,
            id,
            entry.origin,
            entry.cid,
            entry.text,
            entry.kind,
        );
        Ok(Appended::Stored { seq })
    }

    async fn page(
        &self,
        id: ConversationId,
        before: Seq,
        limit: u32,
    ) -> Result<(Vec<MessageView>, bool), EngineError> {
        // The newest `limit` before `before`, so a page shorter than asked for reaches the
        // beginning. Numbers may skip after a crash: a range of seqs would not do.
        // From memory when the window holds the whole page: no store read, and it works while
        // the store is stalled (the documented way to recover is `history`).
        {
            let hub = self.shared.lock();
            if let Some(c) = hub.conversations.get(&id) {
                let end = c.window.partition_point(|m| m.seq < before);
                let from_start = c.window_floor == Seq::ZERO;
                if end >= limit as usize || from_start {
                    let start = end.saturating_sub(limit as usize);
                    let page: Vec<MessageView> = c
                        .window
                        .range(start..end)
                        .map(|m| message_view(m))
                        .collect();
                    return Ok((page, from_start && start == 0));
                }
            }
        }
        // What the store lacks is still in the persister's buffer: flush it first.
        self.shared.persist.flush().await?;
        let messages = self.shared.store.newest_before(id, before, limit).await?;
        let complete = messages.len() < limit as usize;
        Ok((messages.iter().map(message_view).collect(), complete))
    }

    async fn live(&self, id: ConversationId, after: Seq) -> Vec<MessageView> {
        let hub = self.shared.lock();
        hub.conversations
            .get(&id)
            .map(|c| {
                c.window
                    .iter()
                    .filter(|m| m.seq > after)
                    .map(|m| message_view(m))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn deliver(&self, to: Vec<Recipient>, frame: ServerFrame) {
        let frame = frame.to_text();
        let hub = self.shared.lock();
        for recipient in &to {
            let sockets = match recipient {
                Recipient::Visitor(v) => hub.visitors.get(v).map(|e| &e.sockets),
                Recipient::Agent(a) => hub.agents.get(a).map(|e| &e.sockets),
            };
            if let Some(sockets) = sockets {
                push_all(sockets, &frame, None);
            }
        }
    }

    async fn resolve(
        &self,
        client: &Client,
        conversation: Option<ConversationId>,
    ) -> Result<Parties, EngineError> {
        let hub = self.shared.lock();
        let id = self.shared.resolve(&hub, client, conversation)?;
        let c = &hub.conversations[&id];
        Ok(Parties {
            id,
            visitor: c.visitor.clone(),
            agent: c.agent.clone(),
            last_seq: c.last_seq,
        })
    }

    async fn mark_survey(
        &self,
        id: ConversationId,
        at: UnixMillis,
    ) -> Result<ConversationRecord, EngineError> {
        let mut hub = self.shared.lock();
        let c = hub
            .conversations
            .get_mut(&id)
            .ok_or(EngineError::NotFound)?;
        c.desk.csat_requested_at = Some(at);
        Ok(c.record(c.open_state()))
    }

    fn count_rate_limited(&self, client: &Client, conversation: Option<ConversationId>) {
        let mut hub = self.shared.lock();
        let id = match client {
            Client::Visitor(v) => hub.visitors.get(v).and_then(|e| e.open),
            Client::Agent(a) => conversation.filter(|id| {
                hub.conversations
                    .get(id)
                    .is_some_and(|c| c.agent.as_ref() == Some(a))
            }),
        };
        if let Some(c) = id.and_then(|id| hub.conversations.get_mut(&id)) {
            c.desk.rate_limited += 1;
            c.dirty = true;
        }
    }

    async fn staffed(&self, targets: &[Target]) -> Result<Vec<bool>, EngineError> {
        let hub = self.shared.lock();
        Ok(targets
            .iter()
            .map(|t| hub.router.anyone_accepting(t))
            .collect())
    }

    async fn agents(&self) -> Result<Vec<AgentPresence>, EngineError> {
        let hub = self.shared.lock();
        let mut present: Vec<AgentPresence> = hub
            .agents
            .iter()
            // An agent within its grace period has no socket: nobody to hand a chat to.
            .filter(|(_, a)| !a.sockets.is_empty())
            .map(|(id, a)| AgentPresence {
                agent: id.clone(),
                status: a.status,
                open: a.conversations.len() as u32,
                capacity: a.capacity,
            })
            .collect();
        present.sort_by(|a, b| a.agent.as_str().cmp(b.agent.as_str()));
        Ok(present)
    }

    fn agent_name(&self, agent: &AgentId) -> String {
        let hub = self.shared.lock();
        hub.agents
            .get(agent)
            .map_or_else(|| self.shared.agent_profile(agent).0, |a| a.name.clone())
    }

    async fn record(&self, id: ConversationId) -> Result<Option<ConversationRecord>, EngineError> {
        let hub = self.shared.lock();
        Ok(hub.conversations.get(&id).map(|c| c.record(c.open_state())))
    }

    async fn ring(&self) -> Result<Vec<AgentId>, EngineError> {
        Ok(self.shared.lock().agents.keys().cloned().collect())
    }

    async fn relocate(
        &self,
        id: ConversationId,
        from: Option<&AgentId>,
        to: Move,
        kind: MoveKind,
        notes: Option<MoveNotes<'_>>,
    ) -> Result<(), EngineError> {
        let shared = &self.shared;
        let mut hub = shared.lock();
        let c = hub.conversations.get(&id).ok_or(EngineError::NotFound)?;
        if c.agent.as_ref() != from {
            return Err(EngineError::NotFound);
        }
        if let Move::Agent(agent) = &to {
            let (load, capacity, accepting) = hub
                .router
                .agent_load(agent)
                .ok_or(EngineError::TargetUnavailable)?;
            if !accepting || load >= capacity {
                return Err(EngineError::TargetUnavailable);
            }
        }
        // Decided: under this lock nothing can refuse the move now. The history the receiving
        // side reads says who moved it where, and why.
        if let Some(notes) = notes {
            let needed = 1 + usize::from(notes.agent.is_some());
            let reserved = (0..needed)
                .take_while(|_| shared.persist.try_reserve())
                .count();
            if reserved < needed {
                (0..reserved).for_each(|_| shared.persist.unreserve());
                return Err(EngineError::Busy {
                    retry_after_ms: 1000,
                });
            }
            shared.append(&mut hub, id, None, None, notes.system, MessageKind::Note);
            if let Some(note) = notes.agent {
                shared.append(
                    &mut hub,
                    id,
                    Some(notes.origin),
                    None,
                    note,
                    MessageKind::Note,
                );
            }
        }
        shared.relocate(&mut hub, id, to, kind)
    }

    async fn schedule(&self, id: ConversationId, at: UnixMillis) -> Result<(), EngineError> {
        self.shared.lock().deadlines.schedule(id, at);
        Ok(())
    }

    async fn due(&self, now: UnixMillis, limit: usize) -> Result<Vec<ConversationId>, EngineError> {
        Ok(self.shared.lock().deadlines.due(now, limit))
    }

    async fn ready(&self) -> bool {
        true
    }
}
