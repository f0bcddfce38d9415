//! The support desk, written once above a [`Backend`].
//!
//! [`DeskEngine`] is the [`Engine`] the socket code talks to, on one node or many: it checks what a
//! client asks, applies the desk's rules ([`crate::desk::policy`]), keeps the figures and the
//! webhooks, and leaves each change of shared state to one mechanism of its backend. The same
//! `DeskEngine` runs over [`super::local::LocalBackend`] and [`super::redis::RedisBackend`], so a
//! behaviour written here is the same on both (the contract tests in tests/api/contract run
//! every scenario on both).

mod figures;
mod grace;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backend::Services;
use super::backend::{
    Appended, Backend, Closing, DeskRequest, Entry, FirstResponse, Move, MoveNotes,
    NewConversation, Opening, Recipient,
};
use super::{
    transfer_note, AgentJoin, AgentPresence, Client, Destination, Engine, EngineError, EngineStats,
    History, Joined, MoveKind, Origin, StartRequest, TransferTo, VisitorJoin, HISTORY_MAX,
};
use crate::clock::Clock;
use crate::config::CsatMode;
use crate::desk::policy::{self, BreachMove};
use crate::desk::sla::{FirstResponseClock, SlaState};
use crate::desk::webhooks::{EventType, WebhookEvent, Webhooks};
use crate::domain::{AgentId, ClientMessageId, ConversationId, Role, Seq, VisitorId};
use crate::metrics::{CategoryLabel, Metrics, RoleLabel, SlaLabel};
use crate::outbox::{Outbox, SocketId};
use crate::protocol::{
    AgentStatus, Availability, CloseReason, ConversationState, ConversationView, MessageKind,
    MessageView, QueueReason, ServerFrame,
};
use crate::routing::{Categories, Target};
use crate::transcript::{ConversationRecord, PersistHandle, StoredMessage};

use super::EngineSettings;

/// First-response clocks looked at per tick, at most; the rest wait for the next tick.
const DUE_PER_TICK: usize = 100;
/// A tick that takes longer than this gives up; the next one carries on.
const TICK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The desk above a backend. Of its own it needs the rules' settings, the transcript buffer
/// (room before an append; records it writes), the metrics and webhooks its rules feed, and the
/// desk's clock.
pub struct DeskEngine<B> {
    backend: Arc<B>,
    settings: EngineSettings,
    persist: PersistHandle,
    metrics: Arc<Metrics>,
    webhooks: Webhooks,
    clock: Clock,
}

impl<B: Backend> DeskEngine<B> {
    pub fn new(backend: Arc<B>, services: &Services) -> Self {
        Self {
            backend,
            settings: services.settings.clone(),
            persist: services.persist.clone(),
            metrics: services.metrics.clone(),
            webhooks: services.webhooks.clone(),
            clock: services.clock.clone(),
        }
    }

    /// Looks at the first-response clocks every `desk.sla_check_interval`, for ended grace
    /// periods every [`grace::GRACE_TICK`], and reads the desk's load figures every second
    /// ([`figures`]), until `shutdown`.
    pub fn spawn_ticker(self: &Arc<Self>, shutdown: CancellationToken) {
        self.spawn_figures(shutdown.clone());
        self.spawn_every(
            self.settings.desk.sla_check_interval,
            shutdown.clone(),
            "first-response check",
            |desk| async move { desk.check_first_responses().await },
        );
        self.spawn_every(
            grace::GRACE_TICK,
            shutdown,
            "grace period check",
            |desk| async move { desk.end_graces().await },
        );
    }

    /// Runs `work` every `every` while the backend is ready, until `shutdown`; a run that fails
    /// or takes longer than [`TICK_TIMEOUT`] is retried by the next one.
    fn spawn_every<F, Fut>(
        self: &Arc<Self>,
        every: std::time::Duration,
        shutdown: CancellationToken,
        what: &'static str,
        work: F,
    ) where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), EngineError>> + Send,
    {
        let desk = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(desk) = desk.upgrade() else {
                    return;
                };
                if !desk.backend.ready().await {
                    continue;
                }
                if let Ok(Err(err)) = tokio::time::timeout(TICK_TIMEOUT, work(desk)).await {
                    tracing::debug!(error = %err, "{what} failed; next tick retries");
                }
            }
        });
    }

    /// First-response clocks: takes the conversations whose next moment (warning, then the
    /// deadline) has come, tells the agents concerned (`sla`), counts breaches and applies
    /// `desk.sla_breach_action`. On several nodes each clock is taken by one node.
    pub async fn check_first_responses(&self) -> Result<(), EngineError> {
        let now = self.clock.now_millis();
        let desk = &self.settings.desk;
        let pct = desk.sla_warning_percent;
        for id in self.backend.due(now, DUE_PER_TICK).await? {
            let Some(record) = self.backend.record(id).await? else {
                continue;
            };
            let Some(due_at) = record.desk.first_response_due_at else {
                continue;
            };
            if record.desk.first_response_at.is_some() {
                continue;
            }
            let clock = FirstResponseClock {
                created_at: record.created_at,
                due_at,
                first_response_at: None,
            };
            let state = clock.state(now, pct);
            if let Some(next) = policy::next_sla_check(&clock, state, pct) {
                self.backend.schedule(id, next).await?;
            }
            if state == SlaState::Pending {
                continue;
            }
            tracing::info!(conversation = %id, state = state.as_str(), "first-response target");
            // Counted before anyone is told, so that whoever is told sees it counted (a
            // dashboard refreshed on the event, a test reading /metrics).
            if state == SlaState::Breached {
                self.metrics
                    .desk
                    .sla_breaches
                    .get_or_create(&CategoryLabel {
                        category: record.category.clone(),
                    })
                    .inc();
            }
            let frame = ServerFrame::Sla {
                conversation_id: id,
                state,
                due_at,
            };
            let to = self.sla_recipients(&record).await?;
            self.backend.deliver(to, frame).await;
            if state != SlaState::Breached {
                continue;
            }
            let Some(action) = policy::breach_action(
                desk.sla_breach_action,
                self.settings.directory.escalation_team(),
                record.team.as_ref(),
            ) else {
                continue;
            };
            let kind = action.kind();
            let to = match action {
                BreachMove::Requeue => Move::Requeue,
                BreachMove::Escalate(team) => Move::Team(team),
            };
            let acted = self
                .backend
                .relocate(id, record.agent_id.as_ref(), to, kind, None)
                .await;
            if let Err(err) = acted {
                tracing::warn!(conversation = %id, error = %err, "breach action not applied");
            }
        }
        Ok(())
    }

    /// Who hears about a conversation's first-response clock: its agent, or while it waits,
    /// every agent in routing who could take it.
    async fn sla_recipients(
        &self,
        record: &ConversationRecord,
    ) -> Result<Vec<Recipient>, EngineError> {
        if let Some(agent) = &record.agent_id {
            return Ok(vec![Recipient::Agent(agent.clone())]);
        }
        let directory = &self.settings.directory;
        Ok(self
            .backend
            .ring()
            .await?
            .into_iter()
            .filter(|a| policy::hears_sla(directory, a, record.team.as_ref()))
            .map(Recipient::Agent)
            .collect())
    }

    /// Appends a client's entry: room in the transcript buffer first (a full buffer refuses
    /// with `unavailable` before anything is stored), then the backend's one atomic append.
    async fn append(
        &self,
        origin: &Origin,
        conversation: Option<ConversationId>,
        cid: ClientMessageId,
        text: String,
        kind: MessageKind,
    ) -> Result<(), EngineError> {
        if !self.persist.try_reserve() {
            return Err(EngineError::Busy {
                retry_after_ms: self.persist.retry_after().as_millis() as u64,
            });
        }
        self.append_reserved(Entry {
            origin: Some(origin),
            conversation,
            cid: Some(cid),
            text,
            kind,
        })
        .await
        .map(drop)
    }

    /// The backend's append of an entry whose room the caller reserved: the room is given back
    /// unless the entry is stored (a duplicate `cid`, a refusal).
    async fn append_reserved(&self, entry: Entry<'_>) -> Result<Appended, EngineError> {
        let appended = self.backend.append(entry).await;
        if !matches!(appended, Ok(Appended::Stored { .. })) {
            self.persist.unreserve();
        }
        appended
    }

    /// The rest of a `start` once the conversation is open: figures, the record, the
    /// `conversation.created` webhook, the first-response clock, the first message (whose room
    /// the caller reserved), then a place from routing.
    async fn begin(
        &self,
        origin: &Origin,
        visitor: &VisitorId,
        record: ConversationRecord,
        reopened: bool,
        request: StartRequest,
    ) -> Result<ConversationId, EngineError> {
        let id = record.id;
        let category = self
            .backend
            .categories()
            .parse(&record.category)
            .unwrap_or_else(|| request.category.clone());
        let target = policy::target_of(&self.settings.directory, record.team.as_ref(), &category);
        let waiting = self.waiting_reason(&target).await.unwrap_or(None);
        let label = CategoryLabel {
            category: category.to_string(),
        };
        if reopened {
            self.metrics.desk.reopened.inc();
        } else {
            self.metrics
                .conversations_started
                .get_or_create(&label)
                .inc();
            if waiting.is_some() {
                self.metrics
                    .desk
                    .offline_messages
                    .get_or_create(&label)
                    .inc();
            }
        }
        // Recorded first, so the store never holds a message of a conversation it does not know.
        self.persist.conversation(record.clone());
        let now = self.clock.now_millis();
        let pct = self.settings.desk.sla_warning_percent;
        if !reopened {
            let view = policy::agent_view(&record, None, None, now, pct);
            self.webhooks
                .emit(WebhookEvent::conversation_created(&view));
        }
        if let (Some(due_at), None) = (
            record.desk.first_response_due_at,
            record.desk.first_response_at,
        ) {
            let clock = FirstResponseClock {
                created_at: record.created_at,
                due_at,
                first_response_at: None,
            };
            if let Err(err) = self.backend.schedule(id, clock.warn_at(pct)).await {
                self.persist.unreserve();
                return Err(err);
            }
        }
        self.append_reserved(Entry {
            origin: Some(origin),
            conversation: Some(id),
            cid: request.cid,
            text: request.text,
            kind: MessageKind::Text,
        })
        .await?;
        let reason = waiting.unwrap_or(QueueReason::NoAgentAvailable);
        self.backend
            .place(id, visitor, category, target, reason)
            .await?;
        tracing::info!(reopened, "started");
        Ok(id)
    }

    /// Ends a conversation, once: the `conversation.closed` webhook, the survey when
    /// `desk.csat` asks for it ([`policy::survey_on_close`]), the record with its verdict, then
    /// the backend frees the agent's slot and tells both sides.
    pub async fn close_conversation(
        &self,
        id: ConversationId,
        by: Role,
        resolved: Option<bool>,
        reason: CloseReason,
    ) -> Result<(), EngineError> {
        let frame = ServerFrame::Closed {
            conversation_id: id,
            by,
            resolved,
            reason,
        }
        .to_text();
        let Some(open) = self.backend.close(id, &frame).await? else {
            return Ok(());
        };
        let now = self.clock.now_millis();
        let pct = self.settings.desk.sla_warning_percent;
        // The survey goes to a visitor who talked to an agent and is still there to answer.
        let survey = policy::survey_on_close(
            open.agent_id.is_some(),
            reason,
            self.settings.desk.csat,
            open.desk.csat_requested_at.is_some(),
        );
        // The view as it was open (its agent), closed.
        let agent_name = open.agent_id.as_ref().map(|a| self.backend.agent_name(a));
        let view = ConversationView {
            state: ConversationState::Closed,
            ..policy::agent_view(&open, agent_name.as_deref(), None, now, pct)
        };
        self.webhooks.emit(WebhookEvent::conversation_closed(
            &view, by, resolved, reason,
        ));
        let mut record = open;
        record.state = ConversationState::Closed;
        record.closed_at = Some(now);
        record.resolved = resolved;
        record.close_reason = Some(policy::close_reason_str(reason).to_string());
        if survey {
            record.desk.csat_requested_at = Some(now);
        }
        tracing::info!(conversation = %id, by = by.as_str(), reason = policy::close_reason_str(reason), "closed");
        let closing = Closing {
            id,
            visitor: record.visitor_id.clone(),
            agent: record.agent_id.clone(),
            frame,
            survey,
            closed_at: now,
        };
        self.persist.conversation(record);
        self.backend.wind_up(closing).await;
        Ok(())
    }

    /// The agents' view of a conversation, on the desk's clock.
    fn view(
        &self,
        record: &ConversationRecord,
        agent_name: Option<&str>,
        recovered: Option<bool>,
    ) -> ConversationView {
        let now = self.clock.now_millis();
        let pct = self.settings.desk.sla_warning_percent;
        policy::agent_view(record, agent_name, recovered, now, pct)
    }

    /// Serves what the backend asks on its own initiative until it stops asking.
    pub fn serve_requests(
        self: &Arc<Self>,
        mut requests: tokio::sync::mpsc::UnboundedReceiver<DeskRequest>,
    ) {
        let desk = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let Some(desk) = desk.upgrade() else {
                    return;
                };
                match request {
                    DeskRequest::Absent(absence) => desk.start_grace(absence).await,
                }
            }
        });
    }

    /// Opens the visitor's conversation: its last one again if it closed within
    /// `desk.reopen_window` ([`policy::reopens`]), else a new one. Returns its record and
    /// whether it was reopened.
    async fn open(
        &self,
        visitor: &VisitorId,
        request: &StartRequest,
    ) -> Result<(ConversationRecord, bool), EngineError> {
        let now = self.clock.now_millis();
        let window = self.settings.desk.reopen_window;
        if let Some((id, closed_at)) = self.backend.last_closed(visitor).await? {
            if policy::reopens(closed_at, now, window) {
                let opening = Opening::Reopen {
                    id,
                    fallback: request.category.clone(),
                };
                if let Some(record) = self.backend.open(visitor, opening).await? {
                    return Ok((record, true));
                }
            }
        }
        let directory = &self.settings.directory;
        let target = directory.target_for(&request.category);
        // Whether anyone answers is judged before routing: a chat outside its team's hours is
        // an offline message even when an agent online takes it.
        let offline = self.waiting_reason(&target).await?.is_some();
        let due = directory.first_response_target(&request.category);
        let opening = Opening::New(NewConversation {
            category: request.category.clone(),
            target,
            page: request.page.clone(),
            metadata: request.metadata.clone(),
            contact: request.contact.clone(),
            offline,
            due_at: FirstResponseClock::new(now, due.as_millis() as u64).due_at,
        });
        let record = self
            .backend
            .open(visitor, opening)
            .await?
            .ok_or(EngineError::ConversationOpen)?;
        Ok((record, false))
    }

    /// Why a conversation for `target` would wait with nobody to answer, if so.
    async fn waiting_reason(&self, target: &Target) -> Result<Option<QueueReason>, EngineError> {
        let staffed = self.backend.staffed(std::slice::from_ref(target)).await?;
        let anyone = staffed.first().copied().unwrap_or(false);
        let answering = self
            .settings
            .directory
            .answering(target, self.clock.now_millis(), anyone);
        Ok(policy::offline_reason(answering))
    }

    /// The side that hears what `client` does in a conversation: the other one.
    fn other_side(
        client: &Client,
        visitor: &VisitorId,
        agent: Option<&AgentId>,
    ) -> Option<(Role, Recipient)> {
        match client {
            Client::Visitor(_) => agent.map(|a| (Role::Visitor, Recipient::Agent(a.clone()))),
            Client::Agent(_) => Some((Role::Agent, Recipient::Visitor(visitor.clone()))),
        }
    }
}

/// What happens once a backend has stored an entry, on every backend: it goes to the
/// persister (whose room the caller reserved), counts, and reaches the webhooks; the first
/// reply counts in the first-response figures. A backend calls it where its order is kept (the
/// in-process one under its lock, so the persister gets each conversation in sequence order).
pub(crate) fn accepted(
    persist: &PersistHandle,
    metrics: &Metrics,
    webhooks: &Webhooks,
    message: &Arc<StoredMessage>,
    first_response: Option<&FirstResponse>,
) {
    persist.message(message.clone());
    if let Some(first) = first_response {
        metrics
            .desk
            .first_responses
            .get_or_create(&SlaLabel {
                category: first.category.clone(),
                outcome: policy::first_response_outcome(first.due_at, message.ts),
            })
            .inc();
    }
    metrics
        .messages
        .get_or_create(&RoleLabel {
            role: message.sender_role.as_str(),
        })
        .inc();
    // The hot path: built only when an endpoint wants it.
    if webhooks.wants(EventType::MessageCreated) {
        webhooks.emit(WebhookEvent::message_created(&message_view(message)));
    }
}

/// How long an assigned conversation waited for its agent: the time-to-agent figure and the
/// queue estimate learn from it.
pub(crate) enum Waited {
    /// In the queue, this long.
    Queue(std::time::Duration),
    /// Straight to an agent as it started: no wait.
    Direct,
    /// Handed from one agent to another (a transfer): not a time to agent.
    Handover,
}

impl Waited {
    /// `queued`: how long it was in the queue, if it was; `first`: its first assignment.
    pub(crate) fn of(queued: Option<std::time::Duration>, first: bool) -> Self {
        match (queued, first) {
            (Some(waited), _) => Waited::Queue(waited),
            (None, true) => Waited::Direct,
            (None, false) => Waited::Handover,
        }
    }
}

/// What follows an assignment on every backend: its snapshot to the persister, the time to
/// agent, and `conversation.assigned` with the agents' view.
pub(crate) fn assigned(
    persist: &PersistHandle,
    metrics: &Metrics,
    webhooks: &Webhooks,
    record: ConversationRecord,
    view: &ConversationView,
    waited: Waited,
) {
    match waited {
        Waited::Queue(waited) => metrics.assigned_after(&record.category, waited),
        Waited::Direct => metrics.assigned_after(&record.category, std::time::Duration::ZERO),
        Waited::Handover => {}
    }
    persist.conversation(record);
    webhooks.emit(WebhookEvent::conversation_assigned(view));
}

/// A stored entry as clients see it.
pub(crate) fn message_view(m: &StoredMessage) -> MessageView {
    MessageView {
        conversation_id: m.conversation_id,
        seq: m.seq,
        sender: crate::protocol::Sender {
            role: m.sender_role,
            id: m.sender_id.clone(),
            name: m.sender_name.clone(),
        },
        text: m.text.clone(),
        ts: m.ts,
        cid: m.cid.clone(),
        kind: m.kind,
    }
}

#[async_trait::async_trait]
impl<B: Backend> Engine for DeskEngine<B> {
    fn categories(&self) -> &Categories {
        self.backend.categories()
    }

    async fn join_visitor(&self, join: VisitorJoin, outbox: Outbox) -> Result<Joined, EngineError> {
        let found = self.backend.arrive_visitor(join, outbox).await?;
        let mut conversations = Vec::new();
        let mut replay = Vec::new();
        if let Some(c) = found {
            // The visitor's view: no clock, no contact, no internal figures.
            let view = self.view(&c.record, c.agent_name.as_deref(), Some(c.recovered));
            conversations.push(policy::visitor_view(view));
            replay = c.replay;
            if let Some(w) = c.queued {
                let queued = ServerFrame::Queued {
                    conversation_id: c.record.id,
                    position: w.position,
                    estimated_wait_ms: w.estimated_wait_ms,
                    reason: w.reason,
                };
                replay.push(queued.to_text());
            }
        }
        Ok(Joined {
            conversations,
            status: None,
            replay,
        })
    }

    async fn join_agent(&self, join: AgentJoin, outbox: Outbox) -> Result<Joined, EngineError> {
        let agent = join.agent.clone();
        let capacity = join.capacity;
        let (status, found) = self.backend.arrive_agent(join, outbox).await?;
        let mut conversations = Vec::new();
        let mut replay = Vec::new();
        for c in found {
            conversations.push(self.view(&c.record, c.agent_name.as_deref(), Some(c.recovered)));
            replay.extend(c.replay);
        }
        tracing::info!(agent = %agent, status = status.as_str(), chats = conversations.len(), "agent joined");
        // Only an agent who is online gets new chats.
        let accepting = status == AgentStatus::Online;
        self.backend
            .set_status(&agent, status, accepting, Some(capacity))
            .await?;
        Ok(Joined {
            conversations,
            status: Some(status),
            replay,
        })
    }

    async fn leave(&self, client: &Client, socket: SocketId) {
        self.depart(client, socket).await;
    }

    async fn start(
        &self,
        origin: &Origin,
        request: StartRequest,
    ) -> Result<ConversationId, EngineError> {
        let Client::Visitor(visitor) = &origin.client else {
            return Err(EngineError::Forbidden);
        };
        // Room for the first message before anything is opened.
        if !self.persist.try_reserve() {
            return Err(EngineError::Busy {
                retry_after_ms: self.persist.retry_after().as_millis() as u64,
            });
        }
        let opened = self.open(visitor, &request).await;
        let (record, reopened) = match opened {
            Ok(opened) => opened,
            Err(err) => {
                self.persist.unreserve();
                return Err(err);
            }
        };
        let span =
            tracing::info_span!("conversation", conversation = %record.id, visitor = %visitor);
        self.begin(origin, visitor, record, reopened, request)
            .instrument(span)
            .await
    }

    async fn post(
        &self,
        origin: &Origin,
        conversation: Option<ConversationId>,
        cid: ClientMessageId,
        text: String,
    ) -> Result<(), EngineError> {
        self.append(origin, conversation, cid, text, MessageKind::Text)
            .await
    }

    async fn typing(
        &self,
        origin: &Origin,
        conversation: Option<ConversationId>,
        active: bool,
    ) -> Result<(), EngineError> {
        let c = self.backend.resolve(&origin.client, conversation).await?;
        if let Some((role, to)) = Self::other_side(&origin.client, &c.visitor, c.agent.as_ref()) {
            let frame = ServerFrame::Typing {
                conversation_id: c.id,
                role,
                active,
            };
            self.backend.deliver(vec![to], frame).await;
        }
        Ok(())
    }

    async fn read(
        &self,
        origin: &Origin,
        conversation: Option<ConversationId>,
        seq: Seq,
    ) -> Result<(), EngineError> {
        let c = self.backend.resolve(&origin.client, conversation).await?;
        if let Some((role, to)) = Self::other_side(&origin.client, &c.visitor, c.agent.as_ref()) {
            let frame = ServerFrame::Read {
                conversation_id: c.id,
                role,
                // Nobody has read what does not exist yet.
                seq: seq.min(c.last_seq),
            };
            self.backend.deliver(vec![to], frame).await;
        }
        Ok(())
    }

    async fn close(
        &self,
        origin: &Origin,
        conversation: Option<ConversationId>,
        resolved: bool,
    ) -> Result<(), EngineError> {
        let c = self.backend.resolve(&origin.client, conversation).await?;
        match origin.client {
            Client::Visitor(_) => {
                self.close_conversation(c.id, Role::Visitor, None, CloseReason::VisitorClosed)
                    .await
            }
            Client::Agent(_) => {
                self.close_conversation(c.id, Role::Agent, Some(resolved), CloseReason::AgentClosed)
                    .await
            }
        }
    }

    async fn set_status(&self, agent: &AgentId, status: AgentStatus) -> Result<(), EngineError> {
        // Only an agent who is online gets new chats; away and offline keep the ones they have.
        let accepting = status == AgentStatus::Online;
        self.backend
            .set_status(agent, status, accepting, None)
            .await?;
        tracing::info!(agent = %agent, status = status.as_str(), "status");
        Ok(())
    }

    async fn note(
        &self,
        origin: &Origin,
        conversation: ConversationId,
        cid: ClientMessageId,
        text: String,
    ) -> Result<(), EngineError> {
        if !matches!(origin.client, Client::Agent(_)) {
            return Err(EngineError::Forbidden);
        }
        self.append(origin, Some(conversation), cid, text, MessageKind::Note)
            .await
    }

    async fn transfer(
        &self,
        origin: &Origin,
        conversation: ConversationId,
        to: TransferTo,
        note: Option<String>,
    ) -> Result<(), EngineError> {
        let Client::Agent(from) = &origin.client else {
            return Err(EngineError::Forbidden);
        };
        let c = self
            .backend
            .resolve(&origin.client, Some(conversation))
            .await?;
        let destination = to.resolve(&self.settings.directory)?;
        let (kind, label) = match &destination {
            Destination::Team { name, kind, .. } => (*kind, name.clone()),
            Destination::Agent(agent) if agent == from => {
                return Err(EngineError::TargetUnavailable)
            }
            Destination::Agent(agent) => (MoveKind::Transfer, self.backend.agent_name(agent)),
        };
        // Room for the notes the move writes: a full transcript buffer refuses the transfer
        // before anything moves.
        if self.persist.stats().pending >= self.settings.max_pending as u64 {
            return Err(EngineError::Busy {
                retry_after_ms: self.persist.retry_after().as_millis() as u64,
            });
        }
        let by = self.backend.agent_name(from);
        let notes = MoveNotes {
            origin,
            system: transfer_note(kind, &label, &by),
            by,
            agent: note,
        };
        self.backend
            .relocate(c.id, Some(from), destination.into(), kind, Some(notes))
            .await
    }

    async fn request_csat(
        &self,
        origin: &Origin,
        conversation: ConversationId,
    ) -> Result<(), EngineError> {
        if self.settings.desk.csat == CsatMode::Off {
            return Err(EngineError::NotConfigured(
                "satisfaction surveys are off (desk.csat)",
            ));
        }
        let c = self
            .backend
            .resolve(&origin.client, Some(conversation))
            .await?;
        let record = self
            .backend
            .mark_survey(c.id, self.clock.now_millis())
            .await?;
        // Stored before the visitor is asked: the answer is checked against the store, maybe
        // by another node ([`crate::desk::csat`]).
        self.persist.conversation(record);
        if let Err(err) = self.persist.flush().await {
            tracing::warn!(conversation = %c.id, error = %err, "survey not stored yet; its answer may be refused");
        }
        let frame = ServerFrame::CsatRequest {
            conversation_id: c.id,
        };
        self.backend
            .deliver(vec![Recipient::Visitor(c.visitor)], frame)
            .await;
        Ok(())
    }

    fn rate_limited(&self, client: &Client, conversation: Option<ConversationId>) {
        self.backend.count_rate_limited(client, conversation);
    }

    async fn availability(&self) -> Vec<Availability> {
        let directory = &self.settings.directory;
        let categories = self.backend.categories().all();
        let targets: Vec<Target> = categories.iter().map(|c| directory.target_for(c)).collect();
        let staffed = match self.backend.staffed(&targets).await {
            Ok(s) => s,
            Err(err) => {
                // The widget then shows every category open, as before the shared state
                // answered: a visitor who writes waits in the queue rather than being turned away.
                tracing::debug!(error = %err, "availability unknown");
                return Vec::new();
            }
        };
        let now = self.clock.now_millis();
        categories
            .iter()
            .zip(targets.iter().zip(staffed))
            .map(|(category, (target, anyone))| {
                policy::availability(category.as_str(), directory.answering(target, now, anyone))
            })
            .collect()
    }

    async fn presence(&self) -> Result<Vec<AgentPresence>, EngineError> {
        self.backend.agents().await
    }

    async fn history(
        &self,
        origin: &Origin,
        conversation: Option<ConversationId>,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<History, EngineError> {
        let c = self.backend.resolve(&origin.client, conversation).await?;
        let limit = limit.clamp(1, HISTORY_MAX);
        let end = c.last_seq.next();
        let before = before.map_or(end, |b| b.min(end));
        let (mut messages, complete) = self.backend.page(c.id, before, limit).await?;
        if matches!(origin.client, Client::Visitor(_)) {
            // Notes are internal: a visitor's page simply has fewer messages.
            messages.retain(|m| m.kind != MessageKind::Note);
        }
        // Bounded in bytes too: the newest messages that fit, the rest on the next page.
        let kept = newest_within(&messages, self.settings.history_max_bytes);
        let trimmed = kept < messages.len();
        messages.drain(..messages.len() - kept);
        Ok(History {
            conversation_id: c.id,
            messages,
            complete: complete && !trimmed,
        })
    }

    async fn live_messages(&self, conversation: ConversationId, after: Seq) -> Vec<MessageView> {
        self.backend.live(conversation, after).await
    }

    fn live_record(&self, conversation: ConversationId) -> Option<ConversationRecord> {
        self.backend.live_record(conversation)
    }

    fn stats(&self) -> EngineStats {
        self.backend.stats()
    }

    fn checkpoint(&self) {
        self.backend.checkpoint();
    }

    async fn ready(&self) -> bool {
        self.backend.ready().await
    }
}

/// How many of `messages` (oldest first), counted from the newest, fit in `budget` bytes of
/// JSON; at least one, so that paging always moves back.
fn newest_within(messages: &[MessageView], budget: usize) -> usize {
    let mut used = 0;
    let mut kept = 0;
    for m in messages.iter().rev() {
        used += serde_json::to_string(m).map_or(0, |json| json.len() + 1);
        if kept > 0 && used > budget {
            break;
        }
        kept += 1;
    }
    kept
}
