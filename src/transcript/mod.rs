//! Transcripts: the durable record of every conversation and message.
//!
//! The live path never waits on the disk. The engine hands each accepted message and each
//! conversation state change to the write-behind [`persister`], which batches them into one
//! transaction per write against a [`store::TranscriptStore`] (SQLite on one node, PostgreSQL
//! shared by several; their common SQL is [`sql`], written once). Reads for REST,
//! history beyond the replay window and the start-up restore go to the store directly, after a
//! [`persister::PersistHandle::flush`] when they must see everything accepted so far.

mod migrate;
pub mod persister;
pub mod postgres;
pub mod sql;
pub mod sqlite;
pub mod store;

use serde::{Deserialize, Serialize};

use crate::domain::{
    AgentId, ClientMessageId, ConversationId, Role, Seq, TeamId, UnixMillis, VisitorId,
};
use crate::protocol::{ConversationState, MessageKind};

/// A store write at least this long is logged as slow, by the persister, once per batch.
pub(crate) const SLOW_WRITE: std::time::Duration = std::time::Duration::from_secs(1);

/// Connection options with sqlx's slow-statement log moved to `debug`. sqlx logs the whole
/// statement with it, and the persister's are multi-row inserts of a whole batch: under load
/// (2b, docs/benchmarks.md) each such warning was one 106 KB line of `(?, ?, ...)`, more than
/// many log pipelines accept in one line. The persister warns about slow writes itself, in
/// one short line with the batch's size ([`SLOW_WRITE`]).
pub(crate) fn with_quiet_slow_statements<O: sqlx::ConnectOptions>(options: O) -> O {
    options.log_slow_statements(log::LevelFilter::Debug, SLOW_WRITE)
}

pub use persister::{spawn, PersistConfig, PersistHandle, PersistOutcome, PersistStats};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use store::{StoreError, TranscriptStore, MAX_PAGE, REPORT_MAX_ROWS};

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
    /// A private note is kept with the messages but never goes to the visitor.
    #[serde(default)]
    pub kind: MessageKind,
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
    /// The team it is routed to (its category's, or the one it was transferred to).
    #[serde(default)]
    pub team: Option<TeamId>,
    /// Times the visitor reopened it after a close. Also orders snapshots from several nodes:
    /// a closed conversation accepts a later snapshot only from a reopening.
    #[serde(default)]
    pub reopened: u32,
    #[serde(default)]
    pub desk: DeskRecord,
}

/// The support-desk figures of one conversation, kept with its snapshot (one JSON column).
/// Reports are computed from these; docs/desk.md defines each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeskRecord {
    /// How to reach the visitor, from `start.contact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Started while nobody answered its category: an offline message. Its visitor leaving
    /// does not close it.
    #[serde(default)]
    pub offline: bool,
    #[serde(default)]
    pub transfers: u32,
    #[serde(default)]
    pub escalated: bool,
    /// The first-response deadline: creation plus the category's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response_due_at: Option<UnixMillis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response_at: Option<UnixMillis>,
    /// Sum and count of agent response times: from a visitor message that waited for an answer
    /// to the next agent message.
    #[serde(default)]
    pub response_ms_total: u64,
    #[serde(default)]
    pub responses: u32,
    /// The visitor message still waiting for an answer, if any (the start of the next
    /// response time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_since: Option<UnixMillis>,
    /// Messages refused by a rate limit in this conversation.
    #[serde(default)]
    pub rate_limited: u32,
    /// When the satisfaction survey was sent, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csat_requested_at: Option<UnixMillis>,
}

/// A visitor's answer to the satisfaction survey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsatAnswer {
    pub score: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub created_at: UnixMillis,
}

/// A reminder to come back to a conversation (a complaint to check on, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    pub due_at: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The agent or admin who set it.
    pub set_by: String,
    pub set_at: UnixMillis,
}

/// What the desk keeps beside a conversation's snapshot: tags, follow-up, survey answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeskExtras {
    pub tags: Vec<String>,
    pub follow_up: Option<FollowUp>,
    pub csat: Option<CsatAnswer>,
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
    /// Only conversations closed strictly after this time.
    pub closed_after: Option<UnixMillis>,
    pub team: Option<TeamId>,
    /// Only conversations carrying this tag.
    pub tag: Option<String>,
    /// Page size, capped at [`MAX_PAGE`]; 0 (the default) also means [`MAX_PAGE`], so that a
    /// filter built with `..Default::default()` does not silently return nothing.
    pub limit: u32,
    pub offset: u32,
}
