//! The engine: presence, routing, conversations and delivery, behind one trait.
//!
//! Socket code talks only to [`Engine`]: it registers each socket's [`Outbox`] and turns client
//! frames into calls; the engine pushes every server frame a client should see into its outboxes.
//! The one implementation is [`desk::DeskEngine`]: the support desk's rules, written once above a
//! [`backend::Backend`] of atomic mechanisms. [`local::LocalBackend`] keeps everything in this
//! process (the single-node default); [`redis::RedisBackend`] shares the state between nodes,
//! without the desk or the socket code changing.

pub mod backend;
pub mod deadlines;
pub mod desk;
pub mod local;
pub mod redis;
pub mod settings;

pub use settings::EngineSettings;

use std::sync::Arc;

use crate::desk::teams::Directory;
use crate::domain::{AgentId, Category, ClientMessageId, ConversationId, Seq, TeamId, VisitorId};
use crate::outbox::{Frame, Outbox, SocketId};
use crate::protocol::{
    AgentStatus, Availability, ConversationView, ErrorCode, ErrorFrame, MessageView, ResumePosition,
};
use crate::routing::Categories;
use crate::transcript::store::StoreError;

/// Who sent a frame: the engine checks every conversation access against it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Client {
    Visitor(VisitorId),
    Agent(AgentId),
}

/// A client and the socket a frame came from: acknowledgements go to that socket only.
#[derive(Debug, Clone)]
pub struct Origin {
    pub client: Client,
    pub socket: SocketId,
}

pub struct VisitorJoin {
    pub visitor: VisitorId,
    pub name: Option<String>,
    pub last_seq: Option<Seq>,
}

pub struct AgentJoin {
    pub agent: AgentId,
    pub name: String,
    pub capacity: u32,
    /// `None` keeps the status of a session that is reconnecting (online for a new one).
    pub status: Option<AgentStatus>,
    pub resume: Vec<ResumePosition>,
}

/// What a socket gets on joining: its open conversations for `welcome`, then the replay of what
/// it missed, which the socket writes before anything queued in its outbox.
pub struct Joined {
    pub conversations: Vec<ConversationView>,
    pub status: Option<AgentStatus>,
    pub replay: Vec<Frame>,
}

pub struct StartRequest {
    pub category: Category,
    pub text: String,
    pub cid: Option<ClientMessageId>,
    pub page: Option<String>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// How to reach the visitor later; shown to agents.
    pub contact: Option<String>,
}

/// Where an agent hands a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTo {
    Team(TeamId),
    Agent(AgentId),
    /// The configured escalation team (`desk.escalation_team`).
    Escalation,
}

impl TransferTo {
    /// Where the conversation goes, as far as the configuration says: a team (checked to exist)
    /// or an agent, whose free slot each engine checks against its own routing state.
    pub(crate) fn resolve(self, directory: &Directory) -> Result<Destination, EngineError> {
        match self {
            TransferTo::Agent(agent) => Ok(Destination::Agent(agent)),
            TransferTo::Team(team) => {
                let name = directory
                    .team(&team)
                    .ok_or(EngineError::UnknownTeam)?
                    .name
                    .clone();
                Ok(Destination::Team {
                    team,
                    name,
                    kind: MoveKind::Transfer,
                })
            }
            TransferTo::Escalation => {
                let team = directory
                    .escalation_team()
                    .ok_or(EngineError::NotConfigured(
                        "escalation needs desk.escalation_team in the configuration",
                    ))?
                    .clone();
                let name = directory
                    .team(&team)
                    .map_or_else(|| team.to_string(), |t| t.name.clone());
                Ok(Destination::Team {
                    team,
                    name,
                    kind: MoveKind::Escalation,
                })
            }
        }
    }
}

/// A transfer's target, resolved against the configuration ([`TransferTo::resolve`]).
pub enum Destination {
    Team {
        team: TeamId,
        /// For the note in the history.
        name: String,
        kind: MoveKind,
    },
    Agent(AgentId),
}

pub(crate) use crate::desk::policy::transfer_note;
pub use crate::desk::policy::MoveKind;

/// The largest `history` page, on every engine.
pub(crate) const HISTORY_MAX: u32 = 500;
/// The author id of notes Parley itself writes (transfers), on every engine.
pub(crate) const SYSTEM_ID: &str = "parley";

/// The `ack` of a client's message: its `seq`, and whether the `cid` was seen before.
pub(crate) fn ack_frame(
    conversation_id: ConversationId,
    cid: ClientMessageId,
    seq: Seq,
    duplicate: bool,
) -> crate::outbox::Frame {
    crate::protocol::ServerFrame::Ack {
        conversation_id,
        cid,
        seq,
        duplicate,
    }
    .to_text()
}

/// Stored messages answering a `history` frame.
pub struct History {
    pub conversation_id: ConversationId,
    pub messages: Vec<MessageView>,
    pub complete: bool,
}

/// An agent with a socket open, as the console's transfer list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPresence {
    pub agent: AgentId,
    pub status: AgentStatus,
    /// Conversations it holds now.
    pub open: u32,
    pub capacity: u32,
}

/// Figures for readiness and the ops view.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineStats {
    pub conversations_open: usize,
    pub queued: usize,
}

/// Why the engine refused a request. Each maps to one stable [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no open conversation: send `start` first")]
    NoConversation,
    #[error("a conversation is already open")]
    ConversationOpen,
    #[error("no open conversation with that id")]
    NotFound,
    #[error("that conversation is not yours")]
    Forbidden,
    #[error("the transcript buffer is full; retry shortly")]
    Busy { retry_after_ms: u64 },
    #[error("the transcript store is unavailable; retry shortly")]
    Store(#[from] StoreError),
    /// The shared state (Redis) did not answer in time. Nothing was changed that the client was
    /// told about; retrying after `retry_after_ms` is safe (sends are idempotent by `cid`).
    #[error("the shared state is unavailable; retry shortly")]
    Unavailable { retry_after_ms: u64 },
    #[error("no such team")]
    UnknownTeam,
    #[error("that agent is not online with a free slot")]
    TargetUnavailable,
    #[error("{0}")]
    NotConfigured(&'static str),
}

impl EngineError {
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::NoConversation => ErrorCode::NoConversation,
            EngineError::ConversationOpen => ErrorCode::ConversationOpen,
            EngineError::NotFound => ErrorCode::NotFound,
            EngineError::Forbidden => ErrorCode::Forbidden,
            EngineError::UnknownTeam => ErrorCode::NotFound,
            EngineError::TargetUnavailable => ErrorCode::TargetUnavailable,
            EngineError::NotConfigured(_) => ErrorCode::NotConfigured,
            EngineError::Busy { .. } | EngineError::Store(_) | EngineError::Unavailable { .. } => {
                ErrorCode::Unavailable
            }
        }
    }

    /// The client's view: stable code, our text (never the store's internal message).
    pub fn to_frame(&self) -> ErrorFrame {
        match self {
            EngineError::Busy { retry_after_ms } | EngineError::Unavailable { retry_after_ms } => {
                ErrorFrame::new(self.code(), self.to_string()).retry_after(*retry_after_ms)
            }
            EngineError::Store(_) => ErrorFrame::new(
                self.code(),
                "the transcript store is unavailable; retry shortly",
            )
            .retry_after(1000),
            _ => ErrorFrame::new(self.code(), self.to_string()),
        }
    }
}

/// Everything the socket handlers need from presence, routing and delivery.
#[async_trait::async_trait]
pub trait Engine: Send + Sync + 'static {
    /// The configured categories, to parse `start` frames.
    fn categories(&self) -> &Categories;

    /// Registers a visitor socket; returns its conversation and the messages it missed.
    async fn join_visitor(&self, join: VisitorJoin, outbox: Outbox) -> Result<Joined, EngineError>;

    /// Registers an agent socket; returns its conversations and the messages it missed.
    async fn join_agent(&self, join: AgentJoin, outbox: Outbox) -> Result<Joined, EngineError>;

    /// Unregisters a socket. When a client's last socket goes, its grace period starts.
    async fn leave(&self, client: &Client, socket: SocketId);

    /// Opens a conversation for a visitor with its first message.
    async fn start(
        &self,
        origin: &Origin,
        request: StartRequest,
    ) -> Result<ConversationId, EngineError>;

    /// Appends a message. A visitor writes to its open conversation (`conversation` is ignored);
    /// an agent names one of its own. The origin socket gets an `ack`, every other socket of both
    /// sides the `message`. A `cid` seen before is acknowledged again and not stored twice.
    async fn post(
        &self,
        origin: &Origin,
        conversation: Option<ConversationId>,
        cid: ClientMessageId,
        text: String,
    ) -> Result<(), EngineError>;

    async fn typing(
        &self,
        origin: &Origin,
        conversation: Option<ConversationId>,
        active: bool,
    ) -> Result<(), EngineError>;

    async fn read(
        &self,
        origin: &Origin,
        conversation: Option<ConversationId>,
        seq: Seq,
    ) -> Result<(), EngineError>;

    /// Closes a conversation; `resolved` is the agent's verdict (ignored for visitors).
    async fn close(
        &self,
        origin: &Origin,
        conversation: Option<ConversationId>,
        resolved: bool,
    ) -> Result<(), EngineError>;

    async fn set_status(&self, agent: &AgentId, status: AgentStatus) -> Result<(), EngineError>;

    /// Adds a private note to one of the agent's conversations: stored, acknowledged, sent to
    /// the agent's other sockets, never to the visitor.
    async fn note(
        &self,
        origin: &Origin,
        conversation: ConversationId,
        cid: ClientMessageId,
        text: String,
    ) -> Result<(), EngineError>;

    /// Hands one of the agent's conversations to a team or another agent. `note` is kept in the
    /// transcript as a private note for the receiving side.
    async fn transfer(
        &self,
        origin: &Origin,
        conversation: ConversationId,
        to: TransferTo,
        note: Option<String>,
    ) -> Result<(), EngineError>;

    /// Sends the visitor the satisfaction survey for one of the agent's conversations.
    async fn request_csat(
        &self,
        origin: &Origin,
        conversation: ConversationId,
    ) -> Result<(), EngineError>;

    /// A frame of `client` about a conversation was refused by a rate limit: counted in that
    /// conversation's figures (for a visitor, its open conversation).
    fn rate_limited(&self, client: &Client, conversation: Option<ConversationId>);

    /// Whether each category is answered now (business hours, someone online). On the Redis
    /// engine "someone online" means an agent of the category's team takes chats on any node.
    async fn availability(&self) -> Vec<Availability>;

    /// The agents with a console open, for the console to offer transfers to and for
    /// `GET /v1/desk`: on the Redis engine, those connected to any node, with their shared
    /// status, load and capacity.
    ///
    /// # Errors
    /// When the shared state cannot be read: "nobody is connected" would be a wrong answer.
    async fn presence(&self) -> Result<Vec<AgentPresence>, EngineError>;

    /// Stored messages of a conversation the client may read, newest `limit` before `before`.
    async fn history(
        &self,
        origin: &Origin,
        conversation: Option<ConversationId>,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<History, EngineError>;

    /// Messages of a conversation after `after` that the store may not have caught up with yet
    /// (in this process's memory; on Redis, in the conversation's stream, whichever node
    /// accepted them), for REST reads. Empty when they cannot be read now.
    async fn live_messages(&self, conversation: ConversationId, after: Seq) -> Vec<MessageView>;

    /// The in-memory snapshot of an open conversation, whose figures (response times, rate
    /// limits) may be newer than the stored one. `None` when this engine does not hold it.
    fn live_record(
        &self,
        _conversation: ConversationId,
    ) -> Option<crate::transcript::ConversationRecord> {
        None
    }

    fn stats(&self) -> EngineStats;

    /// Hands every figure not yet written to the persister; the drain calls it once the
    /// sockets are closed, before the final flush.
    fn checkpoint(&self) {}

    /// Whether the engine can serve new work now: readiness includes it. The in-process engine
    /// always can; the Redis engine answers whether Redis does.
    async fn ready(&self) -> bool {
        true
    }
}

/// The engine as the rest of the server holds it.
pub type SharedEngine = Arc<dyn Engine>;
