//! The in-process backend: the single-node default.
//!
//! All state lives in one [`Hub`] behind one synchronous mutex. Every operation is a short
//! critical section with no `.await` inside: it updates the state, serialises each outgoing frame
//! once and pushes it into the outboxes of the sockets concerned (never waiting; see
//! [`crate::outbox`]). Holding the lock while fanning out is what keeps every socket's view of a
//! conversation in sequence order. Awaiting (store reads, flushes) happens after the lock is
//! released.
//!
//! Grace periods are deadlines in the hub ([`Deadlines`]) that carry a generation number: every
//! join takes a new one from a counter, so an ended grace period whose generation is stale does
//! nothing. That is cheaper and simpler than cancelling them.
//!
//! Each conversation carries its target (any agent or a team), its first-response deadline and
//! its report figures ([`DeskRecord`]); the desk above ([`super::desk::DeskEngine`]) applies the
//! rules. A housekeeping ticker writes the snapshots of conversations whose figures changed (at
//! most one per conversation per tick, so a busy chat does not double the store's writes) and
//! forgets closes older than the reopen window.

mod backend;
mod moves;
mod state;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::backend::Services;
use super::backend::{
    Absence, Appended, Backend, Closing, Entry, Expired, FirstResponse, Move, MoveNotes, Opening,
    Parties, Recipient,
};
use super::deadlines::Deadlines;
use super::desk::{accepted, message_view};
use super::{
    ack_frame, AgentJoin, AgentPresence, Client, EngineError, EngineStats, MoveKind, Origin,
    VisitorJoin, SYSTEM_ID,
};
use crate::clock::Clock;
use crate::desk::policy::{self};
use crate::desk::sla::FirstResponseClock;
use crate::desk::webhooks::{WebhookEvent, Webhooks};
use crate::domain::{
    AgentId, Category, ClientMessageId, ConversationId, Role, Seq, UnixMillis, VisitorId,
};
use crate::metrics::{Metrics, TransferLabel};
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
    /// When each absent client's grace period ends (wall clock).
    graces: Deadlines<Absence>,
    /// The last generation given to a join (one counter for all, so that a client forgotten
    /// and seen again never reuses a generation a pending grace period carries).
    generation: u64,
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
    /// The seq just before `window`'s first message (0: the window starts at the beginning).
    /// A client that saw it, or a message in the window, can be brought up to date from the
    /// window; any other `last_seq` cannot.
    window_floor: Seq,
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
    /// Its latest join's: a grace period started for an older generation does nothing.
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
            // Nothing to ask the desk on its own: every absence here is found by a leave.
            requests: _,
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
                graces: Deadlines::default(),
                generation: 0,
            }),
            persist,
            store,
            metrics,
            webhooks,
            settings,
            shutdown,
            clock,
        });
        tokio::spawn(agent_state_ticker(Arc::downgrade(&shared)));
        tokio::spawn(housekeeping_ticker(Arc::downgrade(&shared)));
        Self { shared, categories }
    }

    /// Reloads the open conversations from the store: queued ones go back in the queue in their
    /// original order; assigned ones stay with their agent, who has a grace period to reconnect,
    /// as after a dropped connection. Their visitors get a grace period too.
    ///
    /// After a crash (the store says the previous run did not stop cleanly), each restored
    /// conversation's next seq comes after `seq_skip_after_crash` unused numbers
    /// ([`crate::engine::EngineSettings`]): the messages delivered but not yet stored when the
    /// process died may have taken any of them, and a number once handed out is never given
    /// to another message. Clients that saw one of those lost messages get `recovered: false`
    /// on resume.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn restore(&self) -> Result<usize, EngineError> {
        let clean = self
            .shared
            .store
            .begin_run(self.shared.clock.now_millis())
            .await?;
        let skip = if clean {
            0
        } else {
            self.shared.settings.seq_skip_after_crash()
        };
        let records = self.shared.store.open_conversations().await?;
        let recently_closed = self.recently_closed().await?;
        let window = u32::try_from(self.shared.settings.replay_window).unwrap_or(u32::MAX);
        let mut loaded = Vec::with_capacity(records.len());
        for record in records {
            let tail = self.shared.store.tail(record.id, window).await?;
            loaded.push((record, tail));
        }
        let count = loaded.len();
        if skip > 0 && count > 0 {
            tracing::warn!(
                conversations = count,
                skipped = skip,
                "the previous run did not stop cleanly; open conversations continue past every \
                 sequence number it may have handed out without storing"
            );
        }
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
                let mut conversation = Conversation::from_record(
                    &record,
                    category.clone(),
                    target.clone(),
                    tail,
                    window as usize,
                    skip,
                );
                let visitor = hub
                    .visitors
                    .entry(record.visitor_id.clone())
                    .or_insert_with(|| VisitorEntry::new(record.visitor_name.clone()));
                visitor.open = Some(record.id);
                let generation = visitor.generation;
                self.shared.start_grace(
                    &mut hub,
                    Client::Visitor(record.visitor_id.clone()),
                    generation,
                );
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
                        let generation = entry.generation;
                        self.shared
                            .start_grace(&mut hub, Client::Agent(agent.clone()), generation);
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

    /// A restored client is absent until it joins: the same grace period as after a leave (the
    /// desk gives it on a leave; here the backend restores its own state before serving).
    fn start_grace(&self, hub: &mut Hub, client: Client, generation: u64) {
        let grace = match client {
            Client::Visitor(_) => self.settings.visitor_grace,
            Client::Agent(_) => self.settings.agent_grace,
        };
        let at = crate::domain::now_millis().saturating_add(grace.as_millis() as u64);
        hub.graces.schedule(Absence { client, generation }, at);
    }

    /// Takes an agent out of routing and puts its chats at the front of the queue, telling
    /// their visitors why; then hands out what can be. Returns how many chats it had.
    fn requeue_orphans(&self, hub: &mut Hub, agent: &AgentId) -> usize {
        let orphans: Vec<_> = hub
            .router
            .remove_agent(agent)
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
        // Tell the visitors first (they are at the front now), then hand out what can be: a
        // visitor whose chat moves to another agent at once still learns why.
        self.refresh_queue(hub, QueueReason::AgentDisconnected, &orphans);
        let made = hub.router.dispatch();
        self.apply_assignments(hub, made);
        self.refresh_queue(hub, QueueReason::NoAgentAvailable, &[]);
        orphans.len()
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
                c.window_floor = old.seq;
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
        let acked = cid.is_some();
        let visitor = c.visitor.clone();
        let agent = c.agent.clone();
        // The sending socket gets the ack instead of the message, once the message is stored.
        let except = origin.map(|o| o.socket).filter(|_| acked);
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
        }
        if let (Some(cid), Some(origin)) = (cid, origin) {
            if let Some(socket) = self.origin_outbox(hub, origin) {
                // Queued behind the message, under the lock: sent once it is durable.
                self.persist
                    .push_when_stored(socket.clone(), ack_frame(id, cid, seq, false));
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
    ///
    /// Only a `last_seq` this run knows can be brought up to date: the message before the
    /// window or one in it. Anything else is older than the window, or was handed out and
    /// lost in a crash (its seq skipped since, see [`LocalBackend::restore`]), or was never
    /// handed out at all; the client fetches `history` then (`recovered: false`), rather than
    /// keep a message the transcript does not hold.
    ///
    /// A joining socket's replays share `budget` frames (half its outbound queue): a replay
    /// that does not fit is not sent (`recovered: false`, the client pages `history`), so that
    /// catching up never fills the queue and closes the socket as too slow (4009).
    fn replay(
        c: &Conversation,
        last_seq: Seq,
        audience: Role,
        budget: &mut usize,
    ) -> (bool, Vec<Frame>) {
        let known = last_seq == c.window_floor
            || c.window.binary_search_by_key(&last_seq, |m| m.seq).is_ok();
        if !known {
            return (false, Vec::new());
        }
        let after = c.window.partition_point(|m| m.seq <= last_seq);
        let missed = c.window.range(after..).filter(|m| visible_to(m, audience));
        if missed.clone().count() > *budget {
            return (false, Vec::new());
        }
        let frames: Vec<Frame> = missed
            .map(|m| ServerFrame::Message(message_view(m)).to_text())
            .collect();
        *budget -= frames.len();
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
