//! What a backend does for the desk: atomic mechanisms, no desk rules.
//!
//! [`super::desk::DeskEngine`] holds the support desk's behaviour once, above this trait; a backend
//! keeps the shared state and does each mechanism as one atomic operation. The in-process
//! backend ([`super::local::LocalBackend`]) does each under its one lock; the Redis backend
//! ([`super::redis::RedisBackend`]) makes the decision of each one Lua script (append, close,
//! placement, moves, taking due deadlines) and reads around it, so that several nodes share
//! one desk. This is the shape of centrifuge's `Broker` and `PresenceManager`: a handful
//! of mechanisms below, the logic once above.
//!
//! The mechanisms, by concern:
//! - **Log**: [`Backend::append`] (sequence number, `cid` idempotency and delivery, together),
//!   [`Backend::page`], [`Backend::live`].
//! - **Delivery**: [`Backend::deliver`] a frame to the sockets of a visitor or an agent,
//!   wherever they are connected.
//! - **Desk state**: [`Backend::resolve`] which conversation a client may use,
//!   [`Backend::mark_survey`] and [`Backend::count_rate_limited`] on its typed record,
//!   [`Backend::staffed`] (is anyone taking chats for a target), [`Backend::agents`] (who is
//!   present), [`Backend::agent_name`], [`Backend::record`] (the typed conversation record),
//!   [`Backend::ring`] (agents in routing), [`Backend::relocate`] (a move, decided atomically),
//!   [`Backend::last_closed`] and [`Backend::open`] (the visitor's one open conversation, new
//!   or reopened), [`Backend::place`] (a place from routing: an agent or the queue),
//!   [`Backend::close`] (close once) and [`Backend::wind_up`] (what follows a close),
//!   [`Backend::set_status`] (an agent's status and whether routing gives it chats).
//! - **Presence**: [`Backend::arrive_visitor`] and [`Backend::arrive_agent`] register a socket
//!   and say what it finds (its conversations, what it missed); [`Backend::depart`] takes one
//!   away and says whether its client is now absent while holding something.
//! - **Deadlines**: [`Backend::schedule`] and [`Backend::due`], for first-response clocks;
//!   [`Backend::schedule_grace`], [`Backend::due_graces`] and [`Backend::expire`], for grace
//!   periods.
//!
//! The rest of the trait are plain reads of the backend's own state (categories, the live
//! record, stats, readiness) and its checkpoint; docs/architecture.md lists what is where.

use super::EngineSettings;
use super::{
    AgentJoin, AgentPresence, Client, Destination, EngineError, EngineStats, MoveKind, Origin,
    VisitorJoin,
};
use crate::clock::Clock;
use crate::desk::webhooks::Webhooks;
use crate::domain::{
    AgentId, Category, ClientMessageId, ConversationId, Seq, TeamId, UnixMillis, VisitorId,
};
use crate::metrics::Metrics;
use crate::outbox::{Frame, Outbox, SocketId};
use crate::protocol::{AgentStatus, MessageKind, MessageView, QueueReason, ServerFrame};
use crate::routing::{Categories, Target};
use crate::transcript::ConversationRecord;
use crate::transcript::PersistHandle;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// What a desk and its backend are built with: the settings and the services that accepted
/// work goes to.
#[derive(Clone)]
pub struct Services {
    pub settings: EngineSettings,
    /// Where accepted messages and snapshots go to become durable (write-behind).
    pub persist: PersistHandle,
    pub metrics: Arc<Metrics>,
    /// Desk events for the CRM: `emit` never waits.
    pub webhooks: Webhooks,
    /// Stops timers and tickers when the server drains.
    pub shutdown: CancellationToken,
    /// Message times, deadlines and report figures read this clock (tests move it).
    pub clock: Clock,
    /// What the backend asks of the desk.
    pub requests: DeskRequests,
}

/// One entry for a conversation's log, as a client (or Parley) wrote it.
pub struct Entry<'a> {
    /// The socket it came from; `None` for the notes Parley writes itself.
    pub origin: Option<&'a Origin>,
    /// The conversation an agent names; a visitor writes to its open one (ignored).
    pub conversation: Option<ConversationId>,
    pub cid: Option<ClientMessageId>,
    pub text: String,
    pub kind: MessageKind,
}

/// What an append did.
pub enum Appended {
    /// Stored with the next sequence number (stamped on the desk's clock), delivered, and
    /// handed on (`desk::accepted`).
    Stored { seq: Seq },
    /// The `cid` was seen before: the sending socket got `ack{duplicate: true}`; nothing stored.
    Duplicate { seq: Seq },
}

/// The first reply by an agent in a conversation (it stops the first-response clock), for
/// the first-response figures.
pub struct FirstResponse {
    pub category: String,
    pub due_at: Option<UnixMillis>,
}

/// The two sides of an open conversation a client may use.
#[derive(Debug, Clone)]
pub struct Parties {
    pub id: ConversationId,
    pub visitor: VisitorId,
    pub agent: Option<AgentId>,
    /// The last sequence number in its log.
    pub last_seq: Seq,
}

/// Who a frame goes to: every socket of that client, on whichever node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Visitor(VisitorId),
    Agent(AgentId),
}

/// Where a conversation moves (a transfer, or a breach action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// To a team: straight to a free member other than the agent it leaves, else the front of
    /// that team's queue.
    Team(TeamId),
    /// To a named agent with a free slot.
    Agent(AgentId),
    /// Back to the front of its own queue, not to the agent it leaves.
    Requeue,
}

impl From<Destination> for Move {
    fn from(to: Destination) -> Self {
        match to {
            Destination::Team { team, .. } => Move::Team(team),
            Destination::Agent(agent) => Move::Agent(agent),
        }
    }
}

/// An open conversation as a joining socket finds it.
pub struct Rejoined {
    pub record: ConversationRecord,
    pub agent_name: Option<String>,
    /// Whether `replay` brings the socket fully up to date (all or nothing).
    pub recovered: bool,
    /// What the socket missed, written before anything queued in its outbox.
    pub replay: Vec<Frame>,
    /// Where it waits, if it does.
    pub queued: Option<Waiting>,
}

/// A conversation's place in the queue, as its visitor is told it.
pub struct Waiting {
    pub position: u32,
    pub reason: QueueReason,
    pub estimated_wait_ms: u64,
}

/// What a visitor's `start` opens.
pub enum Opening {
    /// A new conversation.
    New(NewConversation),
    /// The visitor's last conversation again (same id and transcript); `fallback` is its
    /// category if its own is no longer configured.
    Reopen {
        id: ConversationId,
        fallback: Category,
    },
}

/// A new conversation as the desk decided it.
pub struct NewConversation {
    pub category: Category,
    /// Any agent, or its category's team.
    pub target: Target,
    pub page: Option<String>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub contact: Option<String>,
    /// Started while nobody answers its category: an offline message.
    pub offline: bool,
    /// Its first-response deadline.
    pub due_at: UnixMillis,
}

/// A conversation the desk has closed, for [`Backend::wind_up`].
pub struct Closing {
    pub id: ConversationId,
    pub visitor: VisitorId,
    /// Its agent when it closed.
    pub agent: Option<AgentId>,
    /// The `closed` frame both sides get.
    pub frame: Frame,
    /// Whether the visitor is asked the satisfaction survey (after `closed`).
    pub survey: bool,
    pub closed_at: UnixMillis,
}

/// What a backend asks of the desk on its own initiative.
#[derive(Debug)]
pub enum DeskRequest {
    /// A client found absent by the backend itself (a leave recorded late, after an outage;
    /// the clients of a node that died): the desk gives it its grace period.
    Absent(Absence),
}

/// A client with no socket left anywhere that still holds something: a visitor its open
/// conversation, an agent its chats (it takes no new ones meanwhile). `generation` is the
/// client's join count when it went: a join since makes this absence stale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Absence {
    pub client: Client,
    pub generation: u64,
}

/// The desk's load as one read saw it ([`Backend::load`]): what the desk-wide gauges and the
/// ops feed show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeskLoad {
    /// Connected agents by status (`online`, `away`, `offline`); agents within their grace
    /// period have no socket and are not counted.
    pub agents: HashMap<&'static str, i64>,
    /// Chats held by agents that take chats, and their summed capacity.
    pub load: i64,
    pub capacity: i64,
    /// Queued or assigned.
    pub conversations_open: i64,
    /// Waiting conversations per configured category, in priority order.
    pub queue: Vec<(String, i64)>,
}

/// What the end of a grace period did in the backend ([`Backend::expire`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Expired {
    /// The visitor is forgotten; its open conversation, if it has one, is the desk's to judge.
    Visitor(Option<ConversationId>),
    /// The agent is out of routing; this many of its chats went back to the front of the
    /// queue (`queued` with `agent_disconnected`), and routing handed out what it could.
    Agent { requeued: usize },
}

/// Where a backend sends its [`DeskRequest`]s ([`super::desk::DeskEngine::serve_requests`]).
pub type DeskRequests = tokio::sync::mpsc::UnboundedSender<DeskRequest>;

/// What a transfer writes into the history once the move is decided, as the conversation's
/// former agent: "Transferred to X by Y", then the agent's own note.
pub struct MoveNotes<'a> {
    pub origin: &'a Origin,
    /// The transferring agent's name.
    pub by: String,
    pub system: String,
    pub agent: Option<String>,
}

/// The shared state of a desk and its mechanisms (see the module documentation). Every
/// method that can wait returns a `Send` future: the desk serves sockets on many tasks.
pub trait Backend: Send + Sync + 'static {
    // --- Log ---------------------------------------------------------------------------

    /// Appends `entry` to the log of the conversation its origin may write to (a visitor: its
    /// open one; an agent: one assigned to it; `origin: None`: the named one) and delivers it:
    /// a message to both sides, a note to agents only, the `ack` to the origin socket only.
    /// One atomic step: the access check, the `cid` check, the sequence number and the
    /// delivery order. The caller has reserved room in the persister; a stored entry is handed
    /// to it (see `desk::accepted`).
    fn append(
        &self,
        entry: Entry<'_>,
    ) -> impl Future<Output = Result<Appended, EngineError>> + Send;

    /// The newest `limit` entries of a conversation before `before`, oldest first, and whether
    /// nothing older exists (the page reaches the conversation's beginning).
    fn page(
        &self,
        id: ConversationId,
        before: Seq,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<MessageView>, bool), EngineError>> + Send;

    /// Entries after `after` that the store may not have caught up with yet; empty when they
    /// cannot be read now.
    fn live(&self, id: ConversationId, after: Seq)
        -> impl Future<Output = Vec<MessageView>> + Send;

    // --- Delivery ----------------------------------------------------------------------

    /// Sends a frame to every socket of each recipient. Never fails: what it carries is in
    /// the shared state already, and clients catch up on resume.
    fn deliver(&self, to: Vec<Recipient>, frame: ServerFrame) -> impl Future<Output = ()> + Send;

    // --- Desk state --------------------------------------------------------------------

    /// The open conversation `client` means and may use: a visitor its own (`conversation`
    /// ignored; `NoConversation` without one), an agent one assigned to it (`NotFound`,
    /// `Forbidden`).
    fn resolve(
        &self,
        client: &Client,
        conversation: Option<ConversationId>,
    ) -> impl Future<Output = Result<Parties, EngineError>> + Send;

    /// Records that the satisfaction survey was sent at `at`; returns the record as it now is.
    fn mark_survey(
        &self,
        id: ConversationId,
        at: UnixMillis,
    ) -> impl Future<Output = Result<ConversationRecord, EngineError>> + Send;

    /// Counts a frame refused by a rate limit in the figures of the conversation `client`
    /// means. Never waits (the Redis backend counts on a task of its own, best effort).
    fn count_rate_limited(&self, client: &Client, conversation: Option<ConversationId>);

    /// For each target, whether an agent taking chats now serves it (on any node).
    fn staffed(
        &self,
        targets: &[Target],
    ) -> impl Future<Output = Result<Vec<bool>, EngineError>> + Send;

    /// The agents with a socket open (on any node), sorted by id.
    fn agents(&self) -> impl Future<Output = Result<Vec<AgentPresence>, EngineError>> + Send;

    /// An agent's name as the history shows it.
    fn agent_name(&self, agent: &AgentId) -> String;

    /// The typed record of an open conversation; `None` once it is closed or unknown.
    fn record(
        &self,
        id: ConversationId,
    ) -> impl Future<Output = Result<Option<ConversationRecord>, EngineError>> + Send;

    /// The agents in routing: connected (on any node) or within their grace period.
    fn ring(&self) -> impl Future<Output = Result<Vec<AgentId>, EngineError>> + Send;

    /// Moves a conversation that is `from`'s (`None`: waiting in the queue) to `to`: one atomic
    /// decision (still `from`'s, the agent online with a free slot), then `notes` are written
    /// as `from`'s (a refused move writes nothing), then everyone concerned is told: the agent
    /// it leaves and the visitor (`transferred`), the receiving agent (`assigned` with the
    /// history) or the visitor (`queued`).
    fn relocate(
        &self,
        id: ConversationId,
        from: Option<&AgentId>,
        to: Move,
        kind: MoveKind,
        notes: Option<MoveNotes<'_>>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// The visitor's last closed conversation and when it closed, if it is kept for reopening.
    fn last_closed(
        &self,
        visitor: &VisitorId,
    ) -> impl Future<Output = Result<Option<(ConversationId, UnixMillis)>, EngineError>> + Send;

    /// Opens a conversation as the visitor's one open conversation (`ConversationOpen` when it
    /// has one; `NoConversation` when the visitor has no session) and returns its record.
    /// `Ok(None)`: the conversation to reopen is no longer closed and kept; open a new one.
    fn open(
        &self,
        visitor: &VisitorId,
        opening: Opening,
    ) -> impl Future<Output = Result<Option<ConversationRecord>, EngineError>> + Send;

    /// Asks routing for a place: straight to a free agent of `target` (both sides are told
    /// `assigned`), else the queue (the visitor is told `queued` with `reason`).
    fn place(
        &self,
        id: ConversationId,
        visitor: &VisitorId,
        category: Category,
        target: Target,
        reason: QueueReason,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Closes an open conversation, once: `Ok(None)` when it is closed already (or unknown).
    /// Returns its record as it was open, with its agent. Nothing is appended to it after.
    /// `frame` is the `closed` frame, kept for a node that must catch up.
    fn close(
        &self,
        id: ConversationId,
        frame: &Frame,
    ) -> impl Future<Output = Result<Option<ConversationRecord>, EngineError>> + Send;

    /// What follows a close, which must all happen even if the client that closed goes away:
    /// keep it for reopening, free its agent's slot and hand out the queue, tell both sides
    /// (`closed`, then the survey when asked). Never fails: the Redis backend retries on a task
    /// of its own.
    fn wind_up(&self, closing: Closing) -> impl Future<Output = ()> + Send;

    /// Sets a connected agent's status, and whether routing gives it new chats (`accepting`),
    /// with `capacity` when it is (re)stated (on joining); `NotFound` when the agent has no
    /// socket (on this node, for Redis). The agent is told its new `agent_state`.
    fn set_status(
        &self,
        agent: &AgentId,
        status: AgentStatus,
        accepting: bool,
        capacity: Option<u32>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    // --- Presence ----------------------------------------------------------------------

    /// Registers a visitor's socket and returns its open conversation as the socket finds it,
    /// with what the socket missed after `join.last_seq`.
    fn arrive_visitor(
        &self,
        join: VisitorJoin,
        outbox: Outbox,
    ) -> impl Future<Output = Result<Option<Rejoined>, EngineError>> + Send;

    /// Registers an agent's socket; returns its status (the one it asks for, else the one it
    /// kept while away, else online) and its open conversations with what the socket missed.
    /// Routing hears of it from [`Backend::set_status`].
    fn arrive_agent(
        &self,
        join: AgentJoin,
        outbox: Outbox,
    ) -> impl Future<Output = Result<(AgentStatus, Vec<Rejoined>), EngineError>> + Send;

    /// Takes a socket away. When it was its client's last one anywhere: a client holding
    /// nothing is forgotten (an agent leaves routing); one holding something is returned, to
    /// be given a grace period (an agent stops taking new chats meanwhile). Never fails: a
    /// backend that cannot record the leave now records it later and then sends
    /// [`DeskRequest::Absent`].
    fn depart(
        &self,
        client: &Client,
        socket: SocketId,
    ) -> impl Future<Output = Option<Absence>> + Send;

    // --- Deadlines ---------------------------------------------------------------------

    /// Asks for a look at a conversation's first-response clock at `at` (a later call for the
    /// same conversation replaces it).
    fn schedule(
        &self,
        id: ConversationId,
        at: UnixMillis,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Takes up to `limit` conversations whose look is due at `now`: each is taken once, by one
    /// caller (on one node).
    fn due(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ConversationId>, EngineError>> + Send;

    /// Keeps `absence` until `at` (wall-clock milliseconds), where every node sees it; a later
    /// absence of the same client does not cancel it (it becomes stale instead).
    fn schedule_grace(
        &self,
        absence: &Absence,
        at: UnixMillis,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Takes up to `limit` grace periods that ran out by `now`, each taken once (on one node).
    fn due_graces(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Absence>, EngineError>> + Send;

    /// Ends a grace period: `None` when the client came back meanwhile (a socket on any node,
    /// or a join since), else what its end did ([`Expired`]).
    fn expire(
        &self,
        absence: &Absence,
    ) -> impl Future<Output = Result<Option<Expired>, EngineError>> + Send;

    // --- Reads of the backend's own state ----------------------------------------------

    /// The whole desk's load, whichever node holds the agents and the chats.
    fn load(&self) -> impl Future<Output = Result<DeskLoad, EngineError>> + Send;

    fn categories(&self) -> &Categories;

    fn live_record(&self, conversation: ConversationId) -> Option<ConversationRecord>;

    fn stats(&self) -> EngineStats;

    fn checkpoint(&self);

    fn ready(&self) -> impl Future<Output = bool> + Send;
}
