//! Transcripts: the durable record of every conversation and message.
//!
//! The live path never waits on the disk. The engine hands each accepted message and each
//! conversation state change to the write-behind [`persister`], which batches them into one
//! transaction per write against a [`store::TranscriptStore`] (SQLite today). Reads for REST,
//! history beyond the replay window and the start-up restore go to the store directly, after a
//! [`persister::PersistHandle::flush`] when they must see everything accepted so far.

pub mod persister;
pub mod postgres;
pub mod store;

use serde::{Deserialize, Serialize};

use crate::domain::{AgentId, ClientMessageId, ConversationId, Role, Seq, UnixMillis, VisitorId};
use crate::protocol::ConversationState;

pub use persister::{spawn, PersistConfig, PersistHandle, PersistOutcome, PersistStats};
pub use postgres::PostgresStore;
pub use store::{SqliteStore, StoreError, TranscriptStore, MAX_PAGE};

/// One message as stored: what was said, by whom, when, and at which position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub conversation_id: ConversationId,
    pub seq: Seq,
    pub sender_role: Role,
    /// A visitor id, an agent id, or a fixed name for [`Role::System`]: kept as text because it
    /// can be any of the three.
    pub sender_id: String,
    pub sender_name: Option<String>,
    pub text: String,
    pub ts: UnixMillis,
    /// The client's idempotency key, kept so a resend after a restart is still recognised.
    pub cid: Option<ClientMessageId>,
}

/// The latest snapshot of one conversation. Each state change writes a whole new snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    pub id: ConversationId,
    pub visitor_id: VisitorId,
    pub visitor_name: Option<String>,
    pub category: String,
    pub state: ConversationState,
    pub agent_id: Option<AgentId>,
    pub created_at: UnixMillis,
    pub assigned_at: Option<UnixMillis>,
    pub closed_at: Option<UnixMillis>,
    /// The agent's verdict when closing; `None` while open or when the visitor closed.
    pub resolved: Option<bool>,
    pub close_reason: Option<String>,
    pub last_seq: Seq,
    pub page: Option<String>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Which conversations [`store::TranscriptStore::list_conversations`] returns. Every `Some`
/// field must match; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub state: Option<ConversationState>,
    pub agent_id: Option<AgentId>,
    pub category: Option<String>,
    pub visitor_id: Option<VisitorId>,
    /// Only conversations created strictly after this time.
    pub created_after: Option<UnixMillis>,
    /// Only conversations created strictly before this time.
    pub created_before: Option<UnixMillis>,
    /// Page size, capped at [`MAX_PAGE`]; 0 (the default) also means [`MAX_PAGE`], so that a
    /// filter built with `..Default::default()` does not silently return nothing.
    pub limit: u32,
    pub offset: u32,
}
