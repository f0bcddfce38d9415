//! The Redis backend's mechanisms ([`Backend`]): the decision of each is one script on the
//! shared state (append, close, placement, moves, due deadlines), with the reads around it;
//! every one bounded by the operation deadline.

use super::*;
use crate::engine::backend::{Rejoined, Waiting};

impl Backend for RedisBackend {
    fn categories(&self) -> &Categories {
        &self.categories
    }

    async fn arrive_visitor(
        &self,
        join: VisitorJoin,
        outbox: Outbox,
    ) -> Result<Option<Rejoined>, EngineError> {
        let inner = &self.inner;
        bounded(async {
            let client = ClientKey::visitor(&join.visitor);
            inner.arrive(&client).await?;
            if let Some(name) = &join.name {
                let _: Result<(), _> = redis::cmd("SET")
                    .arg(inner.keys.client(&client, "name"))
                    .arg(name)
                    .query_async(&mut inner.conn())
                    .await;
            }
            let open: Option<String> = redis::cmd("GET")
                .arg(inner.keys.visitor_open(&join.visitor))
                .query_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let open = open.and_then(|o| ConversationId::parse(&o).ok());
            let meta = match open {
                Some(id) => inner
                    .meta(id)
                    .await?
                    .filter(|m| m.state != "closed")
                    .map(|m| (id, m)),
                None => None,
            };
            let resume = meta
                .as_ref()
                .map(|(id, m)| {
                    vec![Resume {
                        conv: *id,
                        last_seq: join.last_seq.unwrap_or(Seq::ZERO),
                        agent: m.agent.as_deref().and_then(|a| AgentId::parse(a).ok()),
                    }]
                })
                .unwrap_or_default();
            let replays = inner.register(client, outbox, resume).await?;
            let Some((id, m)) = meta else {
                return Ok(None);
            };
            let (recovered, replay) = replays
                .into_iter()
                .next()
                .map(|(_, r, f)| (r, f))
                .unwrap_or((true, Vec::new()));
            let mut queued = None;
            if m.agent.is_none() {
                let position = inner.positions(&[id]).await?.into_iter().next().flatten();
                if let Some(position) = position {
                    let reason = m.queue_reason.unwrap_or(QueueReason::NoAgentAvailable);
                    // This node keeps the position fresh from now on.
                    inner.registry().waiting.insert(
                        id,
                        delivery::Waiting {
                            visitor: join.visitor.clone(),
                            last: Some(inner.wait.bucket(position)),
                            reason,
                        },
                    );
                    queued = Some(Waiting {
                        position,
                        reason,
                        estimated_wait_ms: inner.wait.estimate(position),
                    });
                }
            }
            Ok(Some(Rejoined {
                agent_name: m.agent.as_deref().map(|a| inner.agent_profile(a).0),
                record: m.record(id, m.open_state()),
                recovered,
                replay,
                queued,
            }))
        })
        .await
    }

    async fn arrive_agent(
        &self,
        join: AgentJoin,
        outbox: Outbox,
    ) -> Result<(AgentStatus, Vec<Rejoined>), EngineError> {
        let inner = &self.inner;
        bounded(async {
            let client = ClientKey::agent(&join.agent);
            inner.arrive(&client).await?;
            let stored: Option<String> = redis::cmd("GET")
                .arg(inner.keys.agent_status(&join.agent))
                .query_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let status = join
                .status
                .or_else(|| parse_status(stored.as_deref()))
                .unwrap_or(AgentStatus::Online);
            let mine: Vec<String> = redis::cmd("SMEMBERS")
                .arg(inner.keys.agent_chats(&join.agent))
                .query_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let mut metas = Vec::new();
            for id in mine.iter().filter_map(|c| ConversationId::parse(c).ok()) {
                if let Some(m) = inner.meta(id).await? {
                    if m.state != "closed" {
                        metas.push((id, m));
                    }
                }
            }
            metas.sort_by_key(|(id, _)| *id);
            let resume = metas
                .iter()
                .map(|(id, _)| Resume {
                    conv: *id,
                    last_seq: join
                        .resume
                        .iter()
                        .find(|r| r.conversation_id == *id)
                        .map_or(Seq::ZERO, |r| r.last_seq),
                    agent: Some(join.agent.clone()),
                })
                .collect();
            let replays = inner.register(client, outbox, resume).await?;
            inner.registry().agent_state.remove(&join.agent);
            let name = inner.agent_profile(join.agent.as_str()).0;
            let found = metas
                .into_iter()
                .zip(replays)
                .map(|((id, m), (_, recovered, replay))| Rejoined {
                    record: m.record(id, m.open_state()),
                    agent_name: Some(name.clone()),
                    recovered,
                    replay,
                    queued: None,
                })
                .collect();
            Ok((status, found))
        })
        .await
    }

    async fn depart(&self, client: &Client, socket: SocketId) -> Option<Absence> {
        let key = ClientKey::of(client);
        let last_here = self.inner.registry().remove(&key, socket);
        if !last_here {
            return None;
        }
        let inner = &self.inner;
        let result = bounded(async {
            let (left, generation) = inner.depart(&key).await.map_err(unavailable)?;
            if left > 0 {
                return Ok(None);
            }
            inner.absent_everywhere(key.clone(), generation).await
        })
        .await;
        match result {
            Ok(absence) => absence,
            Err(err) => {
                // Retried by the heartbeat until Redis answers ([`DeskRequest::Absent`] then).
                tracing::warn!(client = %key.0, error = %err, "leave not recorded in redis yet; will retry");
                self.inner.registry().departed.push(key);
                None
            }
        }
    }

    async fn schedule_grace(&self, absence: &Absence, at: UnixMillis) -> Result<(), EngineError> {
        bounded(self.inner.schedule_grace(absence, at)).await
    }

    async fn due_graces(&self, now: UnixMillis, limit: usize) -> Result<Vec<Absence>, EngineError> {
        bounded(self.inner.due_graces(now, limit)).await
    }

    async fn expire(&self, absence: &Absence) -> Result<Option<Expired>, EngineError> {
        bounded(self.inner.expire(absence)).await
    }

    async fn last_closed(
        &self,
        visitor: &VisitorId,
    ) -> Result<Option<(ConversationId, UnixMillis)>, EngineError> {
        let inner = &self.inner;
        if inner.settings.desk.reopen_window.is_zero() {
            return Ok(None);
        }
        bounded(async {
            let key = inner
                .keys
                .client(&ClientKey::visitor(visitor), "last_closed");
            let last: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            Ok(last.as_deref().and_then(|l| {
                let (id, at) = l.split_once('|')?;
                Some((ConversationId::parse(id).ok()?, at.parse().ok()?))
            }))
        })
        .await
    }

    async fn open(
        &self,
        visitor: &VisitorId,
        opening: Opening,
    ) -> Result<Option<ConversationRecord>, EngineError> {
        let inner = &self.inner;
        bounded(async {
            let id = match &opening {
                Opening::Reopen { id, .. } => {
                    let closed = inner.meta(*id).await?.is_some_and(|m| m.state == "closed");
                    if !closed {
                        return Ok(None);
                    }
                    *id
                }
                Opening::New(_) => ConversationId::new(),
            };
            inner.claim_open(visitor, id).await?;
            match opening {
                Opening::Reopen { .. } => inner.reopen(id).await?,
                Opening::New(new) => inner.create(id, visitor, new).await?,
            }
            Ok(inner
                .meta(id)
                .await?
                .map(|m| m.record(id, ConversationState::Queued)))
        })
        .await
    }

    async fn place(
        &self,
        id: ConversationId,
        visitor: &VisitorId,
        category: Category,
        target: Target,
        reason: QueueReason,
    ) -> Result<(), EngineError> {
        let inner = &self.inner;
        bounded(async {
            let placed: Vec<String> = inner
                .routing_invocation(&scripts::REQUEST)
                .arg(id.to_string())
                .arg(inner.categories.rank(&category))
                .arg(Inner::target_arg(&target))
                .invoke_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            match placed.first().map(String::as_str) {
                Some("assigned") => {
                    let agent = placed.get(1).cloned().unwrap_or_default();
                    inner.apply_assignments(&[id.to_string(), agent]).await?;
                }
                _ => {
                    let position: u32 = placed.get(1).and_then(|p| p.parse().ok()).unwrap_or(1);
                    tracing::info!(conversation = %id, position, "queued");
                    inner.send_queued(visitor, id, position, reason).await;
                }
            }
            Ok(())
        })
        .await
    }

    async fn close(
        &self,
        id: ConversationId,
        frame: &Frame,
    ) -> Result<Option<ConversationRecord>, EngineError> {
        bounded(self.inner.close_once(id, frame)).await
    }

    async fn wind_up(&self, closing: Closing) {
        let inner = self.inner.clone();
        let id = closing.id;
        tokio::spawn(async move {
            if let Err(err) = inner.after_close(closing).await {
                tracing::error!(conversation = %id, error = %err, "a closed conversation could not be wound up");
            }
        });
    }

    async fn set_status(
        &self,
        agent: &AgentId,
        status: AgentStatus,
        accepting: bool,
        capacity: Option<u32>,
    ) -> Result<(), EngineError> {
        let inner = &self.inner;
        if !inner.registry().has(&ClientKey::agent(agent)) {
            return Err(EngineError::NotFound);
        }
        bounded(async {
            redis::cmd("SET")
                .arg(inner.keys.agent_status(agent))
                .arg(status.as_str())
                .query_async::<()>(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let cap: Option<u32> = redis::cmd("HGET")
                .arg(inner.keys.routing("cap"))
                .arg(agent.as_str())
                .query_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let capacity = capacity
                .or(cap)
                .unwrap_or_else(|| inner.agent_profile(agent.as_str()).1);
            inner.set_agent(agent, capacity, accepting).await?;
            inner.push_agent_state(agent).await;
            Ok(())
        })
        .await
    }

    fn stats(&self) -> EngineStats {
        *self.inner.stats.lock().expect("stats lock poisoned")
    }

    async fn ready(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    async fn load(&self) -> Result<DeskLoad, EngineError> {
        // Its own connection handle: a slow read does not queue behind this node's commands.
        let mut conn = self.inner.redis.clone();
        figures::read(&mut conn, &self.inner.keys, &self.categories)
            .await
            .map_err(unavailable)
    }

    async fn append(&self, entry: Entry<'_>) -> Result<Appended, EngineError> {
        let inner = &self.inner;
        bounded(async {
            // No `resolve`: the append script checks that the conversation is open and the
            // agent's own, and names the visitor, which saves reading the whole conversation
            // on every message.
            let (id, name) = match entry.origin.map(|o| &o.client) {
                Some(Client::Visitor(v)) => (inner.open_conversation(v).await?, None),
                Some(Client::Agent(a)) => (
                    entry.conversation.ok_or(EngineError::NotFound)?,
                    Some(inner.agent_profile(a.as_str()).0),
                ),
                None => (entry.conversation.ok_or(EngineError::NotFound)?, None),
            };
            // A duplicate is answered (and published again) by `append`.
            inner
                .append(id, entry.origin, entry.cid, entry.text, name, entry.kind)
                .await
        })
        .await
    }

    async fn page(
        &self,
        id: ConversationId,
        before: Seq,
        limit: u32,
    ) -> Result<(Vec<MessageView>, bool), EngineError> {
        let inner = &self.inner;
        let page = bounded(async {
            delivery::range_before(&mut inner.conn(), &inner.keys, id, before.0, limit as usize)
                .await
                .map_err(unavailable)
        })
        .await?;
        // Numbers are contiguous from 1 here (Redis allocates them), and the stream is
        // trimmed: a short page may only mean the stream ends, so seq 1 is the sign.
        let complete = page.first().map_or(before.0 <= 1, |m| m.seq.0 == 1);
        Ok((page, complete))
    }

    async fn live(&self, id: ConversationId, after: Seq) -> Vec<MessageView> {
        // The stream holds every message any node accepted (the last `replay_window`), while
        // each node's persister writes its own behind: what the store lacks is read here.
        let inner = &self.inner;
        let read = bounded(async {
            delivery::range(
                &mut inner.conn(),
                &inner.keys,
                id,
                after.0,
                None,
                inner.settings.replay_window.max(1),
            )
            .await
            .map_err(unavailable)
        })
        .await;
        match read {
            Ok(page) => page.into_iter().map(|(m, _)| m).collect(),
            Err(err) => {
                tracing::debug!(conversation = %id, error = %err, "live messages unknown");
                Vec::new()
            }
        }
    }

    async fn deliver(&self, to: Vec<Recipient>, frame: ServerFrame) {
        let to = to
            .iter()
            .map(|r| match r {
                Recipient::Visitor(v) => ClientKey::visitor(v),
                Recipient::Agent(a) => ClientKey::agent(a),
            })
            .collect();
        self.inner.send_frame(to, frame, None).await;
    }

    async fn resolve(
        &self,
        client: &Client,
        conversation: Option<ConversationId>,
    ) -> Result<Parties, EngineError> {
        let (id, meta) = bounded(self.inner.resolve(client, conversation)).await?;
        Ok(Parties {
            id,
            visitor: meta.visitor_id,
            agent: meta.agent.as_deref().and_then(|a| AgentId::parse(a).ok()),
            last_seq: Seq(meta.seq),
        })
    }

    async fn mark_survey(
        &self,
        id: ConversationId,
        at: UnixMillis,
    ) -> Result<ConversationRecord, EngineError> {
        let inner = &self.inner;
        bounded(async {
            redis::cmd("HSET")
                .arg(inner.keys.meta(id))
                .arg("csat_at")
                .arg(at)
                .query_async::<()>(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let meta = inner.meta(id).await?.ok_or(EngineError::NotFound)?;
            Ok(meta.record(id, meta.open_state()))
        })
        .await
    }

    fn count_rate_limited(&self, client: &Client, conversation: Option<ConversationId>) {
        // Counted in the conversation's shared figures by a task. A refusal while Redis is
        // away is not counted (logged at debug level).
        let inner = self.inner.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let counted = bounded(async {
                let (id, _) = inner.resolve(&client, conversation).await?;
                redis::cmd("HINCRBY")
                    .arg(inner.keys.meta(id))
                    .arg("rate_limited")
                    .arg(1)
                    .query_async::<()>(&mut inner.conn())
                    .await
                    .map_err(unavailable)
            })
            .await;
            if let Err(err) = counted {
                tracing::debug!(error = %err, "refused message not counted");
            }
        });
    }

    async fn staffed(&self, targets: &[Target]) -> Result<Vec<bool>, EngineError> {
        bounded(self.inner.staffed(targets)).await
    }

    async fn agents(&self) -> Result<Vec<AgentPresence>, EngineError> {
        bounded(self.inner.presence()).await
    }

    fn agent_name(&self, agent: &AgentId) -> String {
        self.inner.agent_profile(agent.as_str()).0
    }

    async fn record(&self, id: ConversationId) -> Result<Option<ConversationRecord>, EngineError> {
        let inner = &self.inner;
        bounded(async {
            Ok(inner
                .meta(id)
                .await?
                .filter(|m| m.state != "closed")
                .map(|m| m.record(id, m.open_state())))
        })
        .await
    }

    async fn ring(&self) -> Result<Vec<AgentId>, EngineError> {
        bounded(self.inner.ring_agents()).await
    }

    async fn relocate(
        &self,
        id: ConversationId,
        from: Option<&AgentId>,
        to: Move,
        kind: MoveKind,
        notes: Option<MoveNotes<'_>>,
    ) -> Result<(), EngineError> {
        let inner = &self.inner;
        bounded(async {
            let meta = inner
                .meta(id)
                .await?
                .filter(|m| m.state != "closed")
                .ok_or(EngineError::NotFound)?;
            // The routing script decides, atomically: still `from`'s, the agent online with a
            // free slot.
            let (mode, to_arg) = match &to {
                Move::Team(team) => ("team", team.to_string()),
                Move::Agent(agent) => ("agent", agent.to_string()),
                Move::Requeue => ("requeue", String::new()),
            };
            inner
                .relocate(id, &meta, from, mode, &to_arg, kind, notes)
                .await
        })
        .await
    }

    async fn schedule(&self, id: ConversationId, at: UnixMillis) -> Result<(), EngineError> {
        let inner = &self.inner;
        bounded(async {
            redis::cmd("ZADD")
                .arg(inner.keys.sla())
                .arg(at)
                .arg(id.to_string())
                .query_async::<()>(&mut inner.conn())
                .await
                .map_err(unavailable)
        })
        .await
    }

    async fn due(&self, now: UnixMillis, limit: usize) -> Result<Vec<ConversationId>, EngineError> {
        let inner = &self.inner;
        bounded(async {
            // One script pops them from the shared `sla` set: each is taken by one node.
            let due: Vec<String> = scripts::SLA_DUE
                .key(inner.keys.sla())
                .arg(now)
                .arg(limit)
                .invoke_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            Ok(due
                .iter()
                .filter_map(|c| ConversationId::parse(c).ok())
                .collect())
        })
        .await
    }

    fn live_record(&self, _conversation: ConversationId) -> Option<ConversationRecord> {
        None
    }

    fn checkpoint(&self) {}
}
