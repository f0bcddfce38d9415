//! The in-process engine: the single-node default.
//!
//! All state lives in one [`Hub`] behind one synchronous mutex. Every operation is a short
//! critical section with no `.await` inside: it updates the state, serialises each outgoing frame
//! once and pushes it into the outboxes of the sockets concerned (never waiting; see
//! [`crate::outbox`]). Holding the lock while fanning out is what keeps every socket's view of a
//! conversation in sequence order. Awaiting (store reads, flushes) happens after the lock is
//! released.
//!
//! Grace periods are timers that carry a generation number: a reconnect bumps the generation, so
//! an expired timer whose generation is stale does nothing. That is cheaper and simpler than
//! cancelling timers.
//!
//! The desk (docs/desk.md) lives here too: each conversation carries its target (any agent or a
//! team), its first-response clock and its report figures ([`DeskRecord`]). A ticker checks the
//! clocks every `desk.sla_check_interval`, tells agents about warnings and breaches, applies the
//! breach action, and writes the snapshots of conversations whose figures changed (at most one
//! per conversation per tick, so a busy chat does not double the store's writes).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::backend::Services;
use super::backend::{
    Appended, Backend, Closing, DeskRequest, DeskRequests, Entry, FirstResponse, Move, MoveNotes,
    Opening, Parties, Recipient,
};
use super::deadlines::Deadlines;
use super::desk::{accepted, message_view};
use super::{
    ack_frame, AgentJoin, AgentPresence, Client, EngineError, EngineStats, Joined, MoveKind,
    Origin, VisitorJoin, SYSTEM_ID,
};
use crate::clock::Clock;
use crate::desk::policy::{self};
use crate::desk::sla::FirstResponseClock;
use crate::desk::webhooks::{WebhookEvent, Webhooks};
use crate::domain::{
    AgentId, Category, ClientMessageId, ConversationId, Role, Seq, UnixMillis, VisitorId,
};
use crate::metrics::{CategoryLabel, Metrics, StatusLabel, TransferLabel};
use crate::outbox::{Frame, Outbox, SocketId};
use crate::protocol::{
    AgentStatus, ConversationState, ConversationView, MessageKind, MessageView, Participant,
    QueueReason, ServerFrame,
};
use crate::routing::{Assignment, Categories, Placement, Router, Target, TransferError};
use crate::transcript::store::TranscriptStore;
use crate::transcript::{
    ConversationFilter, ConversationRecord, DeskRecord, PersistHandle, StoredMessage, MAX_PAGE,
};

pub use super::settings::EngineSettings;

/// How often agents get their `agent_state` refreshed (queue length moves too fast to push on
/// every change to every agent).
const AGENT_STATE_TICK: Duration = Duration::from_secs(1);
/// How often recently closed conversations older than the reopen window are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Recently closed conversations remembered for reopening, at most; past it the oldest are
/// forgotten early (their visitors then start a new conversation instead of reopening).
const RECENTLY_CLOSED_MAX: usize = 200_000;

pub struct LocalBackend {
    shared: Arc<Shared>,
    categories: Categories,
}

struct Shared {
    hub: Mutex<Hub>,
    /// Where accepted messages go to become durable (write-behind).
    persist: PersistHandle,
    /// Read side of the transcripts, for `history`.
    store: Arc<dyn TranscriptStore>,
    metrics: Arc<Metrics>,
    /// Desk events for the CRM: `emit` never waits, so it is called with the lock held.
    webhooks: Webhooks,
    settings: EngineSettings,
    /// Stops grace timers and the agent-state ticker when the server drains.
    shutdown: CancellationToken,
    /// Message times, SLA deadlines and report figures read this clock (tests move it).
    clock: Clock,
    /// What this backend asks of the desk: closing after a visitor's grace period.
    requests: DeskRequests,
}

/// The whole desk, in memory.
struct Hub {
    router: Router,
    conversations: HashMap<ConversationId, Conversation>,
    visitors: HashMap<VisitorId, VisitorEntry>,
    agents: HashMap<AgentId, AgentEntry>,
    /// Milliseconds of waiting per queue position, smoothed over recent assignments.
    wait_per_position_ms: Option<f64>,
    /// Each visitor's last closed conversation and when it closed: a `start` within the reopen
    /// window reopens it. Bounded by [`RECENTLY_CLOSED_MAX`] and pruned every [`PRUNE_EVERY`].
    recently_closed: HashMap<VisitorId, (ConversationId, UnixMillis)>,
    /// When each unanswered conversation's first-response clock is looked at next.
    deadlines: Deadlines<ConversationId>,
}

struct Conversation {
    id: ConversationId,
    visitor: VisitorId,
    visitor_name: Option<String>,
    category: Category,
    agent: Option<AgentId>,
    created_at: UnixMillis,
    assigned_at: Option<UnixMillis>,
    /// When it last entered the queue, and at which position: feeds the wait estimate.
    queued_since: Option<(Instant, usize)>,
    page: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    last_seq: Seq,
    /// The most recent messages, for resume and for an agent taking the conversation over.
    window: VecDeque<Arc<StoredMessage>>,
    /// `cid` -> seq for the messages in `window`: a resent `cid` is acknowledged, not stored.
    cids: HashMap<(Role, ClientMessageId), Seq>,
    /// The (position, estimate bucket) last pushed to the visitor, to push only changes.
    last_queued: Option<(u32, u64)>,
    /// Why it waits, as `queued` tells the visitor (also after a reconnect).
    queue_reason: QueueReason,
    /// Any agent, or the team its category or a transfer gave it.
    target: Target,
    reopened: u32,
    /// The report figures and the first-response deadline.
    desk: DeskRecord,
    /// Figures changed since the last snapshot: the ticker writes one.
    dirty: bool,
}

struct VisitorEntry {
    sockets: Vec<Outbox>,
    name: Option<String>,
    open: Option<ConversationId>,
    /// Bumped on every join: a grace timer started for an older generation does nothing.
    generation: u64,
}

struct AgentEntry {
    sockets: Vec<Outbox>,
    name: String,
    capacity: u32,
    status: AgentStatus,
    conversations: BTreeSet<ConversationId>,
    generation: u64,
    /// The last `agent_state` pushed, to push only changes.
    last_state: Option<(AgentStatus, u32, u32, u32)>,
}

impl LocalBackend {
    /// Builds the engine and starts its background ticker. Call [`LocalBackend::restore`] before
    /// serving to bring back the conversations that were open when the server last stopped.
    pub fn new(services: Services, store: Arc<dyn TranscriptStore>) -> Self {
        let Services {
            settings,
            persist,
            metrics,
            webhooks,
            shutdown,
            clock,
            requests,
        } = services;
        let categories = Categories::new(&settings.categories);
        let shared = Arc::new(Shared {
            hub: Mutex::new(Hub {
                router: Router::new(categories.clone()),
                conversations: HashMap::new(),
                visitors: HashMap::new(),
                agents: HashMap::new(),
                wait_per_position_ms: None,
                recently_closed: HashMap::new(),
                deadlines: Deadlines::default(),
            }),
            persist,
            store,
            metrics,
            webhooks,
            settings,
            shutdown,
            clock,
            requests,
        });
        tokio::spawn(agent_state_ticker(Arc::downgrade(&shared)));
        tokio::spawn(housekeeping_ticker(Arc::downgrade(&shared)));
        Self { shared, categories }
    }

    /// Reloads the open conversations from the store: queued ones go back in the queue in their
    /// original order; assigned ones stay with their agent, who has a grace period to reconnect,
    /// as after a dropped connection. Their visitors get a grace period too.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn restore(&self) -> Result<usize, EngineError> {
        let records = self.shared.store.open_conversations().await?;
        let recently_closed = self.recently_closed().await?;
        let window = u32::try_from(self.shared.settings.replay_window).unwrap_or(u32::MAX);
        let mut loaded = Vec::with_capacity(records.len());
        for record in records {
            let tail = self.shared.store.tail(record.id, window).await?;
            loaded.push((record, tail));
        }
        let count = loaded.len();
        let mut timers = Vec::new();
        {
            let mut hub = self.shared.lock();
            for (record, tail) in loaded {
                let category = self.categories.parse(&record.category).unwrap_or_else(|| {
                    tracing::warn!(conversation = %record.id, category = %record.category,
                        "category no longer configured; restoring it with the lowest priority");
                    self.categories
                        .all()
                        .last()
                        .expect("categories are never empty")
                        .clone()
                });
                let target = self.shared.target_of_record(&record, &category);
                let mut conversation =
                    Conversation::from_record(&record, category.clone(), target.clone(), tail);
                let visitor = hub
                    .visitors
                    .entry(record.visitor_id.clone())
                    .or_insert_with(|| VisitorEntry::new(record.visitor_name.clone()));
                visitor.open = Some(record.id);
                timers.push((
                    Client::Visitor(record.visitor_id.clone()),
                    visitor.generation,
                ));
                match (&record.state, &record.agent_id) {
                    (ConversationState::Assigned, Some(agent)) => {
                        let (name, capacity) = self.shared.agent_profile(agent);
                        let teams = self.shared.settings.directory.teams_of(agent);
                        hub.router.restore_assignment(
                            record.id,
                            agent,
                            capacity,
                            teams,
                            category.clone(),
                            target,
                        );
                        let entry = hub.agents.entry(agent.clone()).or_insert_with(|| {
                            AgentEntry::new(name, capacity, AgentStatus::Online)
                        });
                        entry.conversations.insert(record.id);
                        timers.push((Client::Agent(agent.clone()), entry.generation));
                        hub.conversations.insert(record.id, conversation);
                    }
                    _ => {
                        conversation.agent = None;
                        hub.conversations.insert(record.id, conversation);
                        if let Placement::Queued { position } =
                            hub.router.request(record.id, category, target)
                        {
                            if let Some(c) = hub.conversations.get_mut(&record.id) {
                                c.queued_since = Some((Instant::now(), position));
                            }
                        }
                    }
                }
                // Told again after a restart: the agents connected now have not heard it.
                self.shared.schedule_first_response(&mut hub, record.id);
            }
            for record in recently_closed {
                if let Some(closed_at) = record.closed_at {
                    if !hub.visitors.contains_key(&record.visitor_id) {
                        remember_closed(&mut hub, record.visitor_id, record.id, closed_at);
                    }
                }
            }
            self.shared.refresh_gauges(&hub);
        }
        for (client, generation) in timers {
            self.shared.clone().start_grace(client, generation);
        }
        Ok(count)
    }

    /// A closed conversation and its last messages, read back from the store to reopen it;
    /// `None` if the store does not have it closed (it was reopened elsewhere meanwhile).
    async fn load_closed(
        &self,
        id: ConversationId,
    ) -> Result<Option<(ConversationRecord, Vec<StoredMessage>)>, EngineError> {
        self.shared.persist.flush().await?;
        let Some(record) = self.shared.store.conversation(id).await? else {
            return Ok(None);
        };
        if record.state != ConversationState::Closed {
            return Ok(None);
        }
        let window = u32::try_from(self.shared.settings.replay_window).unwrap_or(u32::MAX);
        let tail = self.shared.store.tail(id, window).await?;
        Ok(Some((record, tail)))
    }

    /// Conversations closed within the reopen window, newest first, so a visitor coming back
    /// after a restart still reopens theirs.
    async fn recently_closed(&self) -> Result<Vec<ConversationRecord>, EngineError> {
        let window = self.shared.settings.desk.reopen_window.as_millis() as u64;
        let since = self.shared.clock.now_millis().saturating_sub(window);
        let mut out = Vec::new();
        loop {
            let page = self
                .shared
                .store
                .list_conversations(&ConversationFilter {
                    state: Some(ConversationState::Closed),
                    closed_after: Some(since),
                    limit: MAX_PAGE,
                    offset: u32::try_from(out.len()).unwrap_or(u32::MAX),
                    ..ConversationFilter::default()
                })
                .await?;
            let done = page.len() < MAX_PAGE as usize;
            out.extend(page);
            if done || out.len() >= RECENTLY_CLOSED_MAX {
                return Ok(out);
            }
        }
    }
}

/// Remembers a visitor's last closed conversation for reopening, within the bound.
fn remember_closed(hub: &mut Hub, visitor: VisitorId, id: ConversationId, closed_at: UnixMillis) {
    if hub.recently_closed.len() >= RECENTLY_CLOSED_MAX
        && !hub.recently_closed.contains_key(&visitor)
    {
        // At the bound: forget the oldest, so the newest closes can still be reopened.
        if let Some(oldest) = hub
            .recently_closed
            .iter()
            .min_by_key(|(_, (_, at))| *at)
            .map(|(v, _)| v.clone())
        {
            hub.recently_closed.remove(&oldest);
        }
    }
    let newer = hub
        .recently_closed
        .get(&visitor)
        .is_none_or(|(_, at)| *at <= closed_at);
    if newer {
        hub.recently_closed.insert(visitor, (id, closed_at));
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Hub> {
        // A panic while holding the lock is a bug; carrying on with possibly half-updated state
        // is worse than stopping, so poisoning propagates.
        self.hub.lock().expect("engine state lock poisoned")
    }

    fn agent_profile(&self, agent: &AgentId) -> (String, u32) {
        self.settings
            .agents
            .get(agent)
            .cloned()
            .unwrap_or_else(|| (agent.to_string(), self.settings.default_capacity))
    }

    fn start_grace(self: Arc<Self>, client: Client, generation: u64) {
        let grace = match client {
            Client::Visitor(_) => self.settings.visitor_grace,
            Client::Agent(_) => self.settings.agent_grace,
        };
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(grace) => self.grace_expired(client, generation),
            }
        });
    }

    /// A client stayed away for its whole grace period.
    fn grace_expired(&self, client: Client, generation: u64) {
        let mut hub = self.lock();
        match client {
            Client::Visitor(visitor) => {
                let Some(entry) = hub.visitors.get(&visitor) else {
                    return;
                };
                if entry.generation != generation || !entry.sockets.is_empty() {
                    return;
                }
                let open = entry.open;
                // An offline message waits for an agent whether or not its visitor stays: the
                // answer is there when they come back.
                if open
                    .and_then(|id| hub.conversations.get(&id))
                    .is_some_and(|c| c.desk.offline)
                {
                    return;
                }
                hub.visitors.remove(&visitor);
                if let Some(id) = open {
                    // The desk closes it (and stops if it is shutting down).
                    let _ = self.requests.send(DeskRequest::VisitorLeft(id));
                }
            }
            Client::Agent(agent) => {
                let Some(entry) = hub.agents.get(&agent) else {
                    return;
                };
                if entry.generation != generation || !entry.sockets.is_empty() {
                    return;
                }
                hub.agents.remove(&agent);
                let orphans = hub.router.remove_agent(&agent);
                if !orphans.is_empty() {
                    tracing::info!(agent = %agent, chats = orphans.len(),
                        "agent did not come back; returning chats to the front of the queue");
                }
                let orphans: Vec<_> = orphans
                    .into_iter()
                    .filter(|o| hub.conversations.contains_key(&o.conversation))
                    .collect();
                for o in &orphans {
                    if let Some(c) = hub.conversations.get_mut(&o.conversation) {
                        c.agent = None;
                        c.assigned_at = None;
                        c.queued_since = Some((Instant::now(), 1));
                        c.last_queued = None;
                        c.queue_reason = QueueReason::AgentDisconnected;
                    }
                }
                hub.router.requeue_front(&orphans);
                let orphans: Vec<ConversationId> = orphans.iter().map(|o| o.conversation).collect();
                for id in &orphans {
                    if let Some(c) = hub.conversations.get(id) {
                        self.persist
                            .conversation(c.record(ConversationState::Queued));
                    }
                }
                // Tell the visitors first (they are at the front now), then hand out what can
                // be: a visitor whose chat moves to another agent at once still learns why.
                self.refresh_queue(&mut hub, QueueReason::AgentDisconnected, &orphans);
                let made = hub.router.dispatch();
                self.apply_assignments(&mut hub, made);
                self.refresh_queue(&mut hub, QueueReason::NoAgentAvailable, &[]);
            }
        }
        self.refresh_gauges(&hub);
    }

    /// Gives queued conversations to their agents and tells both sides.
    fn apply_assignments(&self, hub: &mut Hub, made: Vec<Assignment>) {
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
            if let Some((since, position)) = c.queued_since.take() {
                let waited = since.elapsed();
                self.metrics.assigned_after(c.category.as_str(), waited);
                hub.wait_per_position_ms = Some(policy::learn_wait(
                    hub.wait_per_position_ms,
                    waited.as_millis() as u64,
                    u32::try_from(position).unwrap_or(u32::MAX),
                ));
            } else if first_assignment {
                // Straight to an agent: no wait. A transfer's direct hand-over is not a first
                // assignment and is not a time to agent either.
                self.metrics
                    .assigned_after(c.category.as_str(), Duration::ZERO);
            }
            c.dirty = false;
            self.persist
                .conversation(c.record(ConversationState::Assigned));
            self.webhooks
                .emit(WebhookEvent::conversation_assigned(&self.agent_view(
                    c,
                    agent_name.as_deref(),
                    None,
                )));
            let history_complete = c.window.front().is_none_or(|m| m.seq.0 <= 1);
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
    fn refresh_queue(&self, hub: &mut Hub, forced_reason: QueueReason, forced: &[ConversationId]) {
        let per_position = hub.wait_per_position_ms;
        let order: Vec<(ConversationId, usize)> = hub
            .router
            .queue_positions()
            .into_iter()
            .map(|(c, _, position)| (c, position))
            .collect();
        let mut depth: HashMap<Category, i64> = HashMap::new();
        for (id, position) in &order {
            let (id, position) = (id, *position);
            let Some(c) = hub.conversations.get_mut(id) else {
                continue;
            };
            *depth.entry(c.category.clone()).or_default() += 1;
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
        for category in self.settings.categories.iter() {
            let n = depth
                .iter()
                .find(|(c, _)| c.as_str() == category)
                .map_or(0, |(_, n)| *n);
            self.metrics
                .queue_depth
                .get_or_create(&CategoryLabel {
                    category: category.clone(),
                })
                .set(n);
        }
    }

    fn push_agent_state(&self, hub: &mut Hub, agent: &AgentId) {
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

    fn refresh_gauges(&self, hub: &Hub) {
        self.metrics
            .conversations_open
            .set(hub.conversations.len() as i64);
        let (_, load, capacity) = hub.router.utilisation();
        self.metrics.agent_load.set(i64::from(load));
        self.metrics.agent_capacity.set(i64::from(capacity));
        let mut by_status: HashMap<&'static str, i64> =
            [("online", 0), ("away", 0), ("offline", 0)]
                .into_iter()
                .collect();
        for a in hub.agents.values().filter(|a| !a.sockets.is_empty()) {
            *by_status.entry(a.status.as_str()).or_default() += 1;
        }
        for (status, n) in by_status {
            self.metrics
                .agents
                .get_or_create(&StatusLabel { status })
                .set(n);
        }
    }

    /// Resolves which conversation a client means and checks it may use it.
    fn resolve(
        &self,
        hub: &Hub,
        client: &Client,
        conversation: Option<ConversationId>,
    ) -> Result<ConversationId, EngineError> {
        match client {
            Client::Visitor(visitor) => hub
                .visitors
                .get(visitor)
                .and_then(|v| v.open)
                .ok_or(EngineError::NoConversation),
            Client::Agent(agent) => {
                let id = conversation.ok_or(EngineError::NotFound)?;
                let c = hub.conversations.get(&id).ok_or(EngineError::NotFound)?;
                if c.agent.as_ref() == Some(agent) {
                    Ok(id)
                } else {
                    Err(EngineError::Forbidden)
                }
            }
        }
    }

    /// Appends one entry to a conversation's transcript and delivers it: a message to both
    /// sides, a note to agents only. `origin` is `None` for notes Parley writes itself. The
    /// caller has already reserved room in the persister.
    fn append(
        &self,
        hub: &mut Hub,
        id: ConversationId,
        origin: Option<&Origin>,
        cid: Option<ClientMessageId>,
        text: String,
        kind: MessageKind,
    ) -> Seq {
        let (role, sender_id, sender_name) = match origin.map(|o| &o.client) {
            Some(Client::Visitor(v)) => (
                Role::Visitor,
                v.to_string(),
                hub.visitors.get(v).and_then(|e| e.name.clone()),
            ),
            Some(Client::Agent(a)) => (
                Role::Agent,
                a.to_string(),
                hub.agents.get(a).map(|e| e.name.clone()),
            ),
            None => (Role::System, SYSTEM_ID.to_string(), None),
        };
        let window_size = self.settings.replay_window.max(1);
        let now = self.clock.now_millis();
        let c = hub
            .conversations
            .get_mut(&id)
            .expect("resolved conversation exists");
        let seq = c.last_seq.next();
        c.last_seq = seq;
        let first_response = if kind == MessageKind::Text {
            self.count_response(c, role, now)
        } else {
            None
        };
        let message = Arc::new(StoredMessage {
            conversation_id: id,
            seq,
            sender_role: role,
            sender_id,
            sender_name,
            text,
            ts: now,
            cid: cid.clone(),
            kind,
        });
        if let Some(cid) = &cid {
            c.cids.insert((role, cid.clone()), seq);
        }
        c.window.push_back(message.clone());
        while c.window.len() > window_size {
            if let Some(old) = c.window.pop_front() {
                if let Some(cid) = &old.cid {
                    c.cids.remove(&(old.sender_role, cid.clone()));
                }
            }
        }
        // Under the lock: the persister gets each conversation in sequence order.
        accepted(
            &self.persist,
            &self.metrics,
            &self.webhooks,
            &message,
            first_response.as_ref(),
        );
        let frame = ServerFrame::Message(message_view(&message)).to_text();
        let ack = cid.map(|cid| ack_frame(id, cid, seq, false));
        let visitor = c.visitor.clone();
        let agent = c.agent.clone();
        let origin_socket = origin.map(|o| o.socket);
        let except = ack.as_ref().and(origin_socket);
        let to_visitor = match kind {
            MessageKind::Text => hub.visitors.get(&visitor).map(|v| &v.sockets),
            MessageKind::Note => None,
        };
        for sockets in [
            to_visitor,
            agent
                .as_ref()
                .and_then(|a| hub.agents.get(a))
                .map(|a| &a.sockets),
        ]
        .into_iter()
        .flatten()
        {
            push_all(sockets, &frame, except);
            if let (Some(ack), Some(socket)) = (&ack, origin_socket) {
                if let Some(o) = sockets.iter().find(|o| o.id() == socket) {
                    o.push(ack);
                }
            }
        }
        seq
    }

    /// Keeps the report figures as a message goes in ([`policy::count_response`]); the first
    /// reply is returned for the first-response figures.
    fn count_response(
        &self,
        c: &mut Conversation,
        role: Role,
        now: UnixMillis,
    ) -> Option<FirstResponse> {
        if role == Role::Agent {
            c.dirty = true;
        }
        policy::count_response(&mut c.desk, role, now).map(|_| FirstResponse {
            category: c.category.to_string(),
            due_at: c.desk.first_response_due_at,
        })
    }

    /// The outbox of the socket a frame came from.
    fn origin_outbox<'h>(&self, hub: &'h Hub, origin: &Origin) -> Option<&'h Outbox> {
        let sockets = match &origin.client {
            Client::Visitor(v) => &hub.visitors.get(v)?.sockets,
            Client::Agent(a) => &hub.agents.get(a)?.sockets,
        };
        sockets.iter().find(|o| o.id() == origin.socket)
    }

    /// Frames that bring a joining socket up to date on one conversation: messages after
    /// `last_seq`, all or nothing. A partial replay is never passed off as complete. Visitors
    /// get no notes.
    fn replay(c: &Conversation, last_seq: Seq, audience: Role) -> (bool, Vec<Frame>) {
        if last_seq >= c.last_seq {
            return (true, Vec::new());
        }
        let first_kept = c.window.front().map_or(c.last_seq.next(), |m| m.seq);
        if first_kept.0 > last_seq.0 + 1 {
            return (false, Vec::new());
        }
        let frames = c
            .window
            .iter()
            .filter(|m| m.seq > last_seq && visible_to(m, audience))
            .map(|m| ServerFrame::Message(message_view(m)).to_text())
            .collect();
        (true, frames)
    }
}

impl Shared {
    /// The agents' view of a conversation: everything, the first-response clock included.
    fn agent_view(
        &self,
        c: &Conversation,
        agent_name: Option<&str>,
        recovered: Option<bool>,
    ) -> ConversationView {
        policy::agent_view(
            &c.record(ConversationState::Queued),
            agent_name,
            recovered,
            self.clock.now_millis(),
            self.settings.desk.sla_warning_percent,
        )
    }

    /// Where a restored conversation goes ([`policy::target_of`]).
    fn target_of_record(&self, record: &ConversationRecord, category: &Category) -> Target {
        policy::target_of(&self.settings.directory, record.team.as_ref(), category)
    }

    /// Moves a conversation to another team or agent, or back to the queue, and tells
    /// everyone concerned: the agent it leaves (`transferred`), the visitor (`transferred`,
    /// then `assigned` or `queued`), the receiving agent (`assigned` with the history).
    fn relocate(
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
        self.refresh_gauges(hub);
        Ok(())
    }

    /// One pass of the housekeeping ticker: snapshots of changed figures (at most one per
    /// conversation per tick, so a busy chat does not double the store's writes), and
    /// forgetting old closes.
    fn housekeeping(&self, prune: bool) {
        let now = self.clock.now_millis();
        let mut hub = self.lock();
        for c in hub.conversations.values_mut().filter(|c| c.dirty) {
            c.dirty = false;
            self.persist.conversation(c.record(c.open_state()));
        }
        if prune {
            let window = self.settings.desk.reopen_window;
            hub.recently_closed
                .retain(|_, (_, at)| policy::reopens(*at, now, window));
        }
    }

    /// Asks for a look at a conversation's first-response clock when it would warn, unless
    /// it was answered already (see [`super::desk::DeskEngine::check_first_responses`]).
    fn schedule_first_response(&self, hub: &mut Hub, id: ConversationId) {
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

fn transfer_error(err: TransferError) -> EngineError {
    match err {
        TransferError::NotAssigned => EngineError::NotFound,
        TransferError::AgentUnavailable => EngineError::TargetUnavailable,
    }
}

/// Whether an entry goes to this audience: visitors never get notes.
fn visible_to(m: &StoredMessage, audience: Role) -> bool {
    audience != Role::Visitor || m.kind == MessageKind::Text
}

impl Backend for LocalBackend {
    fn categories(&self) -> &Categories {
        &self.categories
    }

    async fn join_visitor(&self, join: VisitorJoin, outbox: Outbox) -> Result<Joined, EngineError> {
        let shared = &self.shared;
        let mut hub = shared.lock();
        let entry = hub
            .visitors
            .entry(join.visitor.clone())
            .or_insert_with(|| VisitorEntry::new(None));
        entry.generation += 1;
        if join.name.is_some() {
            entry.name = join.name;
        }
        entry.sockets.push(outbox);
        let open = entry.open;
        let mut conversations = Vec::new();
        let mut replay = Vec::new();
        if let Some(id) = open {
            if let Some(c) = hub.conversations.get(&id) {
                let (recovered, frames) =
                    Shared::replay(c, join.last_seq.unwrap_or(Seq::ZERO), Role::Visitor);
                let agent_name = c
                    .agent
                    .as_ref()
                    .and_then(|a| hub.agents.get(a))
                    .map(|a| a.name.clone());
                conversations.push(c.visitor_view(agent_name.as_deref(), Some(recovered)));
                replay = frames;
                if let Some(position) = hub.router.position(&id) {
                    let position = u32::try_from(position).unwrap_or(u32::MAX);
                    replay.push(
                        ServerFrame::Queued {
                            conversation_id: id,
                            position,
                            estimated_wait_ms: policy::estimated_wait_ms(
                                hub.wait_per_position_ms,
                                position,
                            ),
                            reason: c.queue_reason,
                        }
                        .to_text(),
                    );
                }
            }
        }
        Ok(Joined {
            conversations,
            status: None,
            replay,
        })
    }

    async fn join_agent(&self, join: AgentJoin, outbox: Outbox) -> Result<Joined, EngineError> {
        let shared = &self.shared;
        let mut hub = shared.lock();
        let entry = hub.agents.entry(join.agent.clone()).or_insert_with(|| {
            AgentEntry::new(
                join.name.clone(),
                join.capacity,
                join.status.unwrap_or(AgentStatus::Online),
            )
        });
        entry.generation += 1;
        entry.name = join.name;
        entry.capacity = join.capacity;
        if let Some(status) = join.status {
            entry.status = status;
        }
        entry.sockets.push(outbox);
        entry.last_state = None;
        let status = entry.status;
        let capacity = entry.capacity;
        let mine: Vec<ConversationId> = entry.conversations.iter().copied().collect();
        let agent_name = entry.name.clone();
        let mut conversations = Vec::new();
        let mut replay = Vec::new();
        for id in mine {
            let Some(c) = hub.conversations.get(&id) else {
                continue;
            };
            let last_seq = join
                .resume
                .iter()
                .find(|r| r.conversation_id == id)
                .map_or(Seq::ZERO, |r| r.last_seq);
            let (recovered, frames) = Shared::replay(c, last_seq, Role::Agent);
            conversations.push(shared.agent_view(c, Some(&agent_name), Some(recovered)));
            replay.extend(frames);
        }
        let made = hub.router.set_agent(
            &join.agent,
            capacity,
            status == AgentStatus::Online,
            shared.settings.directory.teams_of(&join.agent),
        );
        tracing::info!(agent = %join.agent, status = status.as_str(), chats = conversations.len(), "agent joined");
        shared.apply_assignments(&mut hub, made);
        shared.refresh_queue(&mut hub, QueueReason::NoAgentAvailable, &[]);
        shared.push_agent_state(&mut hub, &join.agent);
        shared.refresh_gauges(&hub);
        Ok(Joined {
            conversations,
            status: Some(status),
            replay,
        })
    }

    async fn leave(&self, client: &Client, socket: SocketId) {
        let shared = self.shared.clone();
        let grace = {
            let mut hub = shared.lock();
            match client {
                Client::Visitor(v) => match hub.visitors.get_mut(v) {
                    Some(entry) => {
                        entry.sockets.retain(|o| o.id() != socket);
                        if !entry.sockets.is_empty() {
                            None
                        } else if entry.open.is_none() {
                            hub.visitors.remove(v);
                            None
                        } else {
                            Some(entry.generation)
                        }
                    }
                    None => None,
                },
                Client::Agent(a) => match hub.agents.get_mut(a) {
                    Some(entry) => {
                        entry.sockets.retain(|o| o.id() != socket);
                        if !entry.sockets.is_empty() {
                            None
                        } else if entry.conversations.is_empty() {
                            hub.agents.remove(a);
                            hub.router.remove_agent(a);
                            shared.refresh_gauges(&hub);
                            None
                        } else {
                            let generation = entry.generation;
                            hub.router.pause_agent(a);
                            shared.refresh_gauges(&hub);
                            tracing::info!(agent = %a, "agent connection lost; grace period starts");
                            Some(generation)
                        }
                    }
                    None => None,
                },
            }
        };
        if let Some(generation) = grace {
            if !shared.shutdown.is_cancelled() {
                shared.start_grace(client.clone(), generation);
            }
        }
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
                let mut c = Conversation::from_record(&record, category, target, tail);
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
        shared.refresh_gauges(&hub);
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
        shared.refresh_gauges(&hub);
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
        }
        self.shared.refresh_gauges(&hub);
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
        let mut hub = shared.lock();
        remember_closed(&mut hub, visitor.clone(), id, closed_at);
        // Closing flushes: the transcript should not wait for the next interval to be complete
        // in the store.
        let persist = shared.persist.clone();
        tokio::spawn(async move {
            if let Err(err) = persist.flush().await {
                tracing::warn!(conversation = %id, error = %err, "flush after close failed; will retry");
            }
        });
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
        shared.refresh_gauges(&hub);
    }

    async fn set_status(&self, agent: &AgentId, status: AgentStatus) -> Result<(), EngineError> {
        let shared = &self.shared;
        let mut hub = shared.lock();
        let Some(entry) = hub.agents.get_mut(agent) else {
            return Err(EngineError::NotFound);
        };
        entry.status = status;
        let capacity = entry.capacity;
        tracing::info!(agent = %agent, status = status.as_str(), "status");
        let made = if status == AgentStatus::Online {
            let teams = shared.settings.directory.teams_of(agent);
            hub.router.set_agent(agent, capacity, true, teams)
        } else {
            hub.router.pause_agent(agent);
            Vec::new()
        };
        shared.apply_assignments(&mut hub, made);
        shared.refresh_queue(&mut hub, QueueReason::NoAgentAvailable, &[]);
        shared.push_agent_state(&mut hub, agent);
        shared.refresh_gauges(&hub);
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
                    o.push(&ack);
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
    ) -> Result<Vec<MessageView>, EngineError> {
        // Sequence numbers are contiguous from 1, so the page is a plain range.
        let after = Seq(before.0.saturating_sub(u64::from(limit) + 1));
        // What the store lacks is still in the persister's buffer: flush it first.
        self.shared.persist.flush().await?;
        let messages = self
            .shared
            .store
            .messages(id, after, Some(before), limit)
            .await?;
        Ok(messages.iter().map(message_view).collect())
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

/// Refreshes every connected agent's `agent_state` once a second, so queue length reaches
/// agents without a frame per agent on every queue change.
async fn agent_state_ticker(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(AGENT_STATE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.shutdown.is_cancelled() {
            return;
        }
        let mut hub = shared.lock();
        let agents: Vec<AgentId> = hub.agents.keys().cloned().collect();
        for agent in agents {
            shared.push_agent_state(&mut hub, &agent);
        }
    }
}

/// Runs [`Shared::housekeeping`] every `desk.sla_check_interval` until the server drains.
async fn housekeeping_ticker(shared: std::sync::Weak<Shared>) {
    let every = match shared.upgrade() {
        Some(s) => s.settings.desk.sla_check_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = Instant::now();
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.shutdown.is_cancelled() {
            return;
        }
        let prune = last_prune.elapsed() >= PRUNE_EVERY;
        if prune {
            last_prune = Instant::now();
        }
        shared.housekeeping(prune);
    }
}

impl VisitorEntry {
    fn new(name: Option<String>) -> Self {
        Self {
            sockets: Vec::new(),
            name,
            open: None,
            generation: 0,
        }
    }
}

impl AgentEntry {
    fn new(name: String, capacity: u32, status: AgentStatus) -> Self {
        Self {
            sockets: Vec::new(),
            name,
            capacity,
            status,
            conversations: BTreeSet::new(),
            generation: 0,
            last_state: None,
        }
    }
}

impl Conversation {
    fn from_record(
        record: &ConversationRecord,
        category: Category,
        target: Target,
        tail: Vec<StoredMessage>,
    ) -> Self {
        let mut cids = HashMap::new();
        let window: VecDeque<Arc<StoredMessage>> = tail
            .into_iter()
            .map(|m| {
                if let Some(cid) = &m.cid {
                    cids.insert((m.sender_role, cid.clone()), m.seq);
                }
                Arc::new(m)
            })
            .collect();
        let last_seq = window
            .back()
            .map_or(record.last_seq, |m| m.seq.max(record.last_seq));
        Self {
            id: record.id,
            visitor: record.visitor_id.clone(),
            visitor_name: record.visitor_name.clone(),
            category,
            agent: record.agent_id.clone(),
            created_at: record.created_at,
            assigned_at: record.assigned_at,
            queued_since: None,
            page: record.page.clone(),
            metadata: record.metadata.clone(),
            last_seq,
            window,
            cids,
            last_queued: None,
            queue_reason: QueueReason::NoAgentAvailable,
            target,
            reopened: record.reopened,
            desk: record.desk.clone(),
            dirty: false,
        }
    }

    /// Its state while open: with an agent or waiting.
    fn open_state(&self) -> ConversationState {
        if self.agent.is_some() {
            ConversationState::Assigned
        } else {
            ConversationState::Queued
        }
    }

    fn record(&self, state: ConversationState) -> ConversationRecord {
        ConversationRecord {
            id: self.id,
            visitor_id: self.visitor.clone(),
            visitor_name: self.visitor_name.clone(),
            category: self.category.to_string(),
            state,
            agent_id: self.agent.clone(),
            created_at: self.created_at,
            assigned_at: self.assigned_at,
            closed_at: None,
            resolved: None,
            close_reason: None,
            last_seq: self.last_seq,
            page: self.page.clone(),
            metadata: self.metadata.clone(),
            team: self.target.team().cloned(),
            reopened: self.reopened,
            desk: self.desk.clone(),
        }
    }

    /// What the visitor sees of its conversation: no clock, no contact, no internal figures.
    fn visitor_view(&self, agent_name: Option<&str>, recovered: Option<bool>) -> ConversationView {
        policy::visitor_view(policy::agent_view(
            &self.record(ConversationState::Queued),
            agent_name,
            recovered,
            0,
            0,
        ))
    }
}

/// Who a client is in a conversation's log.
fn role_of(client: &Client) -> Role {
    match client {
        Client::Visitor(_) => Role::Visitor,
        Client::Agent(_) => Role::Agent,
    }
}

fn push_all(sockets: &[Outbox], frame: &Frame, except: Option<SocketId>) {
    for outbox in sockets {
        if Some(outbox.id()) != except {
            outbox.push(frame);
        }
    }
}
