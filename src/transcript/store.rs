//! Where transcripts live: the [`TranscriptStore`] trait, its error and its bounds.
//!
//! The trait is the seam between the engine and the database, so PostgreSQL
//! ([`super::postgres`]), SQLite ([`super::sqlite`]) or a fake in a test can stand in without
//! the persister or the HTTP API noticing. Every write goes through
//! [`TranscriptStore::write_batch`], one transaction per batch, and is idempotent so that the
//! persister can retry a batch whose outcome it does not know. The implementations import this
//! file and nothing here imports them, so the stores and their shared SQL form no circle.

use std::sync::Arc;

use super::{
    ConversationFilter, ConversationRecord, CsatAnswer, DeskExtras, FollowUp, StoredMessage,
};
use crate::domain::{ConversationId, Seq, UnixMillis};

/// The most rows one listing or one `messages` page returns, whatever the caller asks: these
/// limits come from REST and socket clients, and a page is held in memory whole.
pub const MAX_PAGE: u32 = 1000;

/// The most conversations one report covers; a longer range is refused with advice to narrow it.
pub const REPORT_MAX_ROWS: usize = 200_000;

/// Durable storage for conversations and their messages.
#[async_trait::async_trait]
pub trait TranscriptStore: Send + Sync + 'static {
    /// One transaction: upsert conversations (by id, later snapshot wins), insert messages
    /// idempotently (`ON CONFLICT (conversation_id, seq) DO NOTHING`) so a retried batch never
    /// stores a message twice.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database refused or could not be reached; nothing of
    /// the batch is stored then. [`StoreError::Corrupt`] when a value cannot be represented.
    async fn write_batch(
        &self,
        conversations: &[ConversationRecord],
        messages: &[Arc<StoredMessage>],
    ) -> Result<(), StoreError>;

    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be read, [`StoreError::Corrupt`]
    /// when the stored row does not parse.
    async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, StoreError>;

    /// Conversations matching `filter`, newest first.
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn list_conversations(
        &self,
        filter: &ConversationFilter,
    ) -> Result<Vec<ConversationRecord>, StoreError>;

    /// Messages with `after < seq < before` (`before` None = no upper bound), oldest first, at
    /// most `limit` (itself capped at [`MAX_PAGE`]).
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn messages(
        &self,
        id: ConversationId,
        after: Seq,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// The newest `limit` (capped at [`MAX_PAGE`]) messages with `seq < before`, returned
    /// oldest first: a `history` page, which must not assume the numbers are contiguous (a
    /// crash skips some, see docs/architecture.md#guarantees).
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn newest_before(
        &self,
        id: ConversationId,
        before: Seq,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Latest `limit` messages of a conversation, returned oldest first (used to rebuild the
    /// replay window after a restart, so `limit` is the configured window and is not capped).
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn tail(&self, id: ConversationId, limit: u32) -> Result<Vec<StoredMessage>, StoreError>;

    /// Conversations whose state is queued or assigned, oldest first: restored into memory at
    /// start-up. Not paged: the engine holds all of them in memory anyway.
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn open_conversations(&self) -> Result<Vec<ConversationRecord>, StoreError>;

    /// Records a visitor's survey answer, once: `Ok(false)` when this conversation was
    /// answered already (the first answer stands).
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn record_csat(
        &self,
        id: ConversationId,
        answer: &CsatAnswer,
    ) -> Result<bool, StoreError>;

    /// Replaces a conversation's tags.
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn set_tags(&self, id: ConversationId, tags: &[String]) -> Result<(), StoreError>;

    /// Sets or (with `None`) clears a conversation's follow-up.
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn set_follow_up(
        &self,
        id: ConversationId,
        follow_up: Option<&FollowUp>,
    ) -> Result<(), StoreError>;

    /// Tags, follow-up and survey answer of one conversation.
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn extras(&self, id: ConversationId) -> Result<DeskExtras, StoreError>;

    /// Conversations with a follow-up due before `due_before`, soonest first.
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn due_follow_ups(
        &self,
        due_before: UnixMillis,
        limit: u32,
    ) -> Result<Vec<(ConversationRecord, FollowUp)>, StoreError>;

    /// Every conversation created in `[from, to)`, oldest first, with its extras: the rows
    /// of a report. At most [`REPORT_MAX_ROWS`] + 1, so a caller can tell a range too large.
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn report_rows(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<(ConversationRecord, DeskExtras)>, StoreError>;

    /// Marks the store as served by a running single node and tells whether the previous one
    /// stopped cleanly ([`TranscriptStore::end_run`]), or there was none: `false` means it
    /// crashed, and may have delivered messages it never stored.
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn begin_run(&self, now: UnixMillis) -> Result<bool, StoreError>;

    /// Marks the run as stopped cleanly: everything it handed out is stored.
    ///
    /// # Errors
    /// As for [`TranscriptStore::conversation`].
    async fn end_run(&self, now: UnixMillis) -> Result<(), StoreError>;

    /// Cheap liveness check for `/readyz`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database does not answer.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Why a store operation failed. The text is for logs, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying: the database is busy, locked, unreachable or out of space.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Not worth retrying: a stored row (or a value to store) does not fit the types.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}
