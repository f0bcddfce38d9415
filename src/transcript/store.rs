//! Where transcripts live: the [`TranscriptStore`] trait and its SQLite implementation.
//!
//! The trait is the seam between the engine and the database, so a Postgres store (or a fake in
//! a test) can stand in without the persister or the HTTP API noticing. Every write goes through
//! [`TranscriptStore::write_batch`], one transaction per batch, and is idempotent so that the
//! persister can retry a batch whose outcome it does not know.
//!
//! SQLite has no unsigned integers: sequence numbers and times are stored as `INTEGER` (i64) and
//! checked on the way back, so a row edited by hand surfaces as [`StoreError::Corrupt`] rather
//! than as a wrapped-around number.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::migrate;
use super::{
    ConversationFilter, ConversationRecord, CsatAnswer, DeskExtras, FollowUp, StoredMessage,
};
use crate::domain::{
    AgentId, ClientMessageId, ConversationId, Role, Seq, TeamId, UnixMillis, VisitorId,
};
use crate::protocol::{ConversationState, MessageKind};

/// The most rows one listing or one `messages` page returns, whatever the caller asks: these
/// limits come from REST and socket clients, and a page is held in memory whole.
pub const MAX_PAGE: u32 = 1000;

/// SQLite serialises writers anyway; a few connections let reads (REST, history) proceed while
/// the persister writes, which WAL mode allows.
const POOL_SIZE: u32 = 4;

/// A collation that compares like the default one and makes the thread it runs on
/// a background thread (see [`background_thread`]). sqlx gives every SQLite
/// connection its own thread and runs the connection's SQL there; a collation callback is the only
/// code of ours that sqlx runs on that thread, so each new connection uses it once.
const BACKGROUND_COLLATION: &str = "parley_background";

/// The name of every SQLite connection's thread, followed by a number (at most 15 bytes in all:
/// Linux cuts thread names there).
pub const STORE_THREAD_PREFIX: &str = "parley-store-";

/// SQLite's threads run at the lowest priority (Linux `SCHED_IDLE`): they get the CPU whenever
/// the socket work does not want it. On a node whose cores are busy, a batch transaction
/// (tens of milliseconds of CPU) otherwise competes on equal terms with the runtime's threads, and
/// every message that arrives meanwhile waits a scheduler slice: in the chat-storm benchmark on one
/// core this set the p99 delivery latency (docs/benchmarks.md, 2a). The store still writes as
/// fast as before under saturation, because the runtime's threads wait on sockets often enough
/// (2b, same page), and the persister's bounded buffer answers `unavailable` if it ever could not.
mod background_thread {
    /// Makes the calling thread a background thread. Runs once per connection (the one query
    /// that uses the collation); a failure (another OS, a sandbox that refuses) is logged and
    /// the thread keeps its priority.
    pub(super) fn lower_priority() {
        if let Err(err) = set_idle() {
            tracing::debug!(error = ?err, "cannot lower the store thread's priority");
        }
    }

    #[cfg(target_os = "linux")]
    fn set_idle() -> Result<(), thread_priority::Error> {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadSchedulePolicy,
        };
        use thread_priority::ThreadPriority;
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        )
    }

    #[cfg(not(target_os = "linux"))]
    fn set_idle() -> Result<(), thread_priority::Error> {
        Ok(())
    }
}

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

/// A [`TranscriptStore`] in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    /// Shared by the persister's writes and the API's reads. A batch is written as a few
    /// multi-row statements in one transaction (see [`insert_messages`]), because each
    /// statement is a round trip to sqlx's SQLite worker thread.
    pool: SqlitePool,
    /// Integer keys of conversations that have messages (migration 0004), as committed.
    keys: Arc<KeyCache>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite:path/to/file.db`) and brings
    /// its schema up to date. `busy_timeout` is how long a statement waits for another writer's
    /// lock before failing, which the persister then retries.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is malformed, the directory or file cannot be
    /// created, or a migration fails.
    pub async fn open(url: &str, busy_timeout: Duration) -> Result<Self, StoreError> {
        let options = super::with_quiet_slow_statements(SqliteConnectOptions::from_str(url)?)
            .create_if_missing(true)
            // WAL lets readers run during the persister's writes; NORMAL is durable across a
            // process crash in WAL mode and only risks the last commits on a power loss.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout)
            // Named so that top, perf and the test that checks their priority can tell them.
            .thread_name(|id| format!("{STORE_THREAD_PREFIX}{id}"))
            .collation(BACKGROUND_COLLATION, |a: &str, b: &str| {
                background_thread::lower_priority();
                a.cmp(b)
            });
        create_parent_dir(options.get_filename())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Runs the collation, so its callback runs on the connection's own thread.
                    sqlx::query(&format!("SELECT 'a' < 'b' COLLATE {BACKGROUND_COLLATION}"))
                        .execute(conn)
                        .await
                        .map(drop)
                })
            })
            .connect_with(options)
            .await?;
        let migrator = sqlx::migrate!("./migrations/sqlite");
        let pending = migrate::pending(&migrator, &mut *pool.acquire().await?).await;
        migrate::apply(pending, migrator.run(&pool)).await?;
        Ok(Self {
            pool,
            keys: Arc::default(),
        })
    }

    /// The connection pool, for the desk's content store on the same database.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// SQLite creates the file but not its directory, and a fresh deployment's data directory
/// usually does not exist yet.
fn create_parent_dir(file: &Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("creating directory {}: {e}", dir.display()))
        }),
        _ => Ok(()),
    }
}

pub(super) const CONVERSATION_COLUMNS: &str =
    "id, visitor_id, visitor_name, category, state, agent_id, \
     created_at, assigned_at, closed_at, resolved, close_reason, last_seq, page, metadata, \
     team, reopened, desk";

pub(super) const MESSAGE_COLUMNS: &str =
    "conversation_id, seq, sender_role, sender_id, sender_name, text, ts, cid, kind";

/// The `messages` table's own columns: [`MESSAGE_COLUMNS`] with the conversation's integer key
/// (migration 0004). Reads go through the `conversation_messages` view, which has the id.
const MESSAGE_KEYED_COLUMNS: &str =
    "conversation_key, seq, sender_role, sender_id, sender_name, text, ts, cid, kind";

/// The most conversations one report covers; a longer range is refused with advice to narrow it.
pub const REPORT_MAX_ROWS: usize = 200_000;

#[async_trait::async_trait]
impl TranscriptStore for SqliteStore {
    async fn write_batch(
        &self,
        conversations: &[ConversationRecord],
        messages: &[Arc<StoredMessage>],
    ) -> Result<(), StoreError> {
        if conversations.is_empty() && messages.is_empty() {
            return Ok(());
        }
        // Dropping the transaction on an early return rolls it back: all or nothing.
        let mut tx = self.pool.begin().await?;
        upsert_conversations(&mut tx, conversations).await?;
        let looked_up = insert_messages(&mut tx, messages, &self.keys).await?;
        tx.commit().await?;
        // Only now: a key assigned in a transaction that rolled back is given to another
        // conversation by the next insert.
        self.keys.remember(looked_up);
        Ok(())
    }

    async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?");
        let row: Option<ConversationRow> = sqlx::query_as(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(ConversationRecord::try_from).transpose()
    }

    async fn list_conversations(
        &self,
        filter: &ConversationFilter,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE 1 = 1"
        ));
        if let Some(state) = filter.state {
            q.push(" AND state = ").push_bind(state_str(state));
        }
        if let Some(agent) = &filter.agent_id {
            q.push(" AND agent_id = ")
                .push_bind(agent.as_str().to_owned());
        }
        if let Some(category) = &filter.category {
            q.push(" AND category = ").push_bind(category.clone());
        }
        if let Some(visitor) = &filter.visitor_id {
            q.push(" AND visitor_id = ")
                .push_bind(visitor.as_str().to_owned());
        }
        if let Some(after) = filter.created_after {
            q.push(" AND created_at > ")
                .push_bind(saturating_i64(after));
        }
        if let Some(before) = filter.created_before {
            q.push(" AND created_at < ")
                .push_bind(saturating_i64(before));
        }
        if let Some(after) = filter.closed_after {
            q.push(" AND closed_at > ").push_bind(saturating_i64(after));
        }
        if let Some(team) = &filter.team {
            q.push(" AND team = ").push_bind(team.as_str().to_owned());
        }
        if let Some(tag) = &filter.tag {
            q.push(" AND id IN (SELECT conversation_id FROM conversation_tags WHERE tag = ")
                .push_bind(tag.clone())
                .push(")");
        }
        let limit = match filter.limit {
            0 => MAX_PAGE,
            n => n.min(MAX_PAGE),
        };
        // The id breaks ties between conversations created in the same millisecond, so pages
        // do not overlap or skip.
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit))
            .push(" OFFSET ")
            .push_bind(i64::from(filter.offset));
        let rows: Vec<ConversationRow> = q.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter().map(ConversationRecord::try_from).collect()
    }

    async fn messages(
        &self,
        id: ConversationId,
        after: Seq,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM conversation_messages \
             WHERE conversation_id = ? AND seq > ? AND seq < ? ORDER BY seq ASC LIMIT ?"
        );
        let before = before.map_or(i64::MAX, |s| saturating_i64(s.0));
        let rows: Vec<MessageRow> = sqlx::query_as(&sql)
            .bind(id.to_string())
            .bind(saturating_i64(after.0))
            .bind(before)
            .bind(i64::from(limit.min(MAX_PAGE)))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StoredMessage::try_from).collect()
    }

    async fn tail(&self, id: ConversationId, limit: u32) -> Result<Vec<StoredMessage>, StoreError> {
        // Newest first to take the last `limit`, then turned around for the caller.
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM conversation_messages \
             WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?"
        );
        let rows: Vec<MessageRow> = sqlx::query_as(&sql)
            .bind(id.to_string())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .rev()
            .map(StoredMessage::try_from)
            .collect()
    }

    async fn open_conversations(&self) -> Result<Vec<ConversationRecord>, StoreError> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE state IN ('queued', 'assigned') ORDER BY created_at ASC, id ASC"
        );
        let rows: Vec<ConversationRow> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
        rows.into_iter().map(ConversationRecord::try_from).collect()
    }

    async fn record_csat(
        &self,
        id: ConversationId,
        answer: &CsatAnswer,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO csat (conversation_id, score, comment, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (conversation_id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(i64::from(answer.score))
        .bind(answer.comment.as_deref())
        .bind(to_i64("created_at", answer.created_at)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_tags(&self, id: ConversationId, tags: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM conversation_tags WHERE conversation_id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        for tag in tags {
            sqlx::query(
                "INSERT INTO conversation_tags (conversation_id, tag) VALUES (?, ?) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id.to_string())
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_follow_up(
        &self,
        id: ConversationId,
        follow_up: Option<&FollowUp>,
    ) -> Result<(), StoreError> {
        match follow_up {
            None => {
                sqlx::query("DELETE FROM follow_ups WHERE conversation_id = ?")
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?;
            }
            Some(f) => {
                sqlx::query(
                    "INSERT INTO follow_ups (conversation_id, due_at, note, set_by, set_at) \
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE SET \
                     due_at = excluded.due_at, note = excluded.note, set_by = excluded.set_by, \
                     set_at = excluded.set_at",
                )
                .bind(id.to_string())
                .bind(to_i64("due_at", f.due_at)?)
                .bind(f.note.as_deref())
                .bind(&f.set_by)
                .bind(to_i64("set_at", f.set_at)?)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    async fn extras(&self, id: ConversationId) -> Result<DeskExtras, StoreError> {
        let id = id.to_string();
        let tags: Vec<(String,)> = sqlx::query_as(
            "SELECT tag FROM conversation_tags WHERE conversation_id = ? ORDER BY tag",
        )
        .bind(&id)
        .fetch_all(&self.pool)
        .await?;
        let follow_up: Option<FollowUpRow> = sqlx::query_as(
            "SELECT conversation_id, due_at, note, set_by, set_at FROM follow_ups \
             WHERE conversation_id = ?",
        )
        .bind(&id)
        .fetch_optional(&self.pool)
        .await?;
        let csat: Option<CsatRow> = sqlx::query_as(
            "SELECT conversation_id, score, comment, created_at FROM csat WHERE conversation_id = ?",
        )
        .bind(&id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(DeskExtras {
            tags: tags.into_iter().map(|(t,)| t).collect(),
            follow_up: follow_up
                .map(FollowUpRow::check)
                .transpose()?
                .map(|(_, f)| f),
            csat: csat.map(CsatRow::check).transpose()?.map(|(_, c)| c),
        })
    }

    async fn due_follow_ups(
        &self,
        due_before: UnixMillis,
        limit: u32,
    ) -> Result<Vec<(ConversationRecord, FollowUp)>, StoreError> {
        let columns = prefixed_conversation_columns("c");
        let sql = format!(
            "SELECT {columns}, f.conversation_id AS f_id, f.due_at AS f_due_at, f.note AS f_note, \
                 f.set_by AS f_set_by, f.set_at AS f_set_at \
             FROM follow_ups f JOIN conversations c ON c.id = f.conversation_id \
             WHERE f.due_at < ? ORDER BY f.due_at ASC, c.id ASC LIMIT ?"
        );
        let rows: Vec<FollowUpJoinRow> = sqlx::query_as(&sql)
            .bind(saturating_i64(due_before))
            .bind(i64::from(limit.min(MAX_PAGE)))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(FollowUpJoinRow::check).collect()
    }

    async fn report_rows(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<(ConversationRecord, DeskExtras)>, StoreError> {
        let (from, to) = (saturating_i64(from), saturating_i64(to));
        let limit = i64::try_from(REPORT_MAX_ROWS + 1).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE created_at >= ? AND created_at < ? ORDER BY created_at ASC, id ASC LIMIT ?"
        );
        let rows: Vec<ConversationRow> = sqlx::query_as(&sql)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let in_range = "SELECT id FROM conversations WHERE created_at >= ? AND created_at < ?";
        let tags: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT conversation_id, tag FROM conversation_tags WHERE conversation_id IN ({in_range}) \
             ORDER BY tag"
        ))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let follow_ups: Vec<FollowUpRow> = sqlx::query_as(&format!(
            "SELECT conversation_id, due_at, note, set_by, set_at FROM follow_ups \
             WHERE conversation_id IN ({in_range})"
        ))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let csat: Vec<CsatRow> = sqlx::query_as(&format!(
            "SELECT conversation_id, score, comment, created_at FROM csat \
             WHERE conversation_id IN ({in_range})"
        ))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        join_extras(rows, tags, follow_ups, csat)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// `c.id, c.visitor_id, …`: the conversation columns of a join.
pub(super) fn prefixed_conversation_columns(alias: &str) -> String {
    CONVERSATION_COLUMNS
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Puts a report's conversations together with their tags, follow-ups and survey answers.
pub(super) fn join_extras(
    rows: Vec<ConversationRow>,
    tags: Vec<(String, String)>,
    follow_ups: Vec<FollowUpRow>,
    csat: Vec<CsatRow>,
) -> Result<Vec<(ConversationRecord, DeskExtras)>, StoreError> {
    let mut extras: HashMap<String, DeskExtras> = HashMap::new();
    for (id, tag) in tags {
        extras.entry(id).or_default().tags.push(tag);
    }
    for row in follow_ups {
        let (id, f) = row.check()?;
        extras.entry(id).or_default().follow_up = Some(f);
    }
    for row in csat {
        let (id, c) = row.check()?;
        extras.entry(id).or_default().csat = Some(c);
    }
    rows.into_iter()
        .map(|row| {
            let e = extras.remove(&row.id).unwrap_or_default();
            Ok((ConversationRecord::try_from(row)?, e))
        })
        .collect()
}

#[derive(sqlx::FromRow)]
pub(super) struct FollowUpRow {
    conversation_id: String,
    due_at: i64,
    note: Option<String>,
    set_by: String,
    set_at: i64,
}

impl FollowUpRow {
    pub(super) fn check(self) -> Result<(String, FollowUp), StoreError> {
        Ok((
            self.conversation_id,
            FollowUp {
                due_at: to_u64("follow_ups.due_at", self.due_at)?,
                note: self.note,
                set_by: self.set_by,
                set_at: to_u64("follow_ups.set_at", self.set_at)?,
            },
        ))
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct CsatRow {
    conversation_id: String,
    score: i64,
    comment: Option<String>,
    created_at: i64,
}

impl CsatRow {
    pub(super) fn check(self) -> Result<(String, CsatAnswer), StoreError> {
        let score = u8::try_from(self.score)
            .ok()
            .filter(|s| (1..=5).contains(s))
            .ok_or_else(|| corrupt("csat.score", self.score))?;
        Ok((
            self.conversation_id,
            CsatAnswer {
                score,
                comment: self.comment,
                created_at: to_u64("csat.created_at", self.created_at)?,
            },
        ))
    }
}

/// A conversation joined with its follow-up (`f_` columns).
#[derive(sqlx::FromRow)]
pub(super) struct FollowUpJoinRow {
    #[sqlx(flatten)]
    conversation: ConversationRow,
    f_id: String,
    f_due_at: i64,
    f_note: Option<String>,
    f_set_by: String,
    f_set_at: i64,
}

impl FollowUpJoinRow {
    pub(super) fn check(self) -> Result<(ConversationRecord, FollowUp), StoreError> {
        let (_, follow_up) = FollowUpRow {
            conversation_id: self.f_id,
            due_at: self.f_due_at,
            note: self.f_note,
            set_by: self.f_set_by,
            set_at: self.f_set_at,
        }
        .check()?;
        Ok((ConversationRecord::try_from(self.conversation)?, follow_up))
    }
}

/// The most `?` parameters one SQLite statement may bind (`SQLITE_MAX_VARIABLE_NUMBER`, 32,766
/// since SQLite 3.32; the bundled SQLite is newer). A batch is cut into multi-row statements
/// that stay under it; beyond it SQLite would refuse the statement.
const MAX_BIND_PARAMS: usize = 32_766;

/// Columns bound per `conversations` row, and so the rows one upsert statement carries.
const CONVERSATION_PARAMS: usize = 17;
const CONVERSATIONS_PER_STATEMENT: usize = MAX_BIND_PARAMS / CONVERSATION_PARAMS;

/// Columns bound per `messages` row, and so the rows one insert statement carries.
const MESSAGE_PARAMS: usize = 9;
const MESSAGES_PER_STATEMENT: usize = MAX_BIND_PARAMS / MESSAGE_PARAMS;

/// Upserts `conversations` with one multi-row statement per [`CONVERSATIONS_PER_STATEMENT`]
/// rows: every statement is a round trip to sqlx's SQLite worker thread, which per row was the
/// chat storm's ceiling. Rows apply in order, so within a statement a later snapshot of an id
/// would still win (the persister coalesces them to one per id anyway).
async fn upsert_conversations(
    tx: &mut Transaction<'_, Sqlite>,
    conversations: &[ConversationRecord],
) -> Result<(), StoreError> {
    for chunk in conversations.chunks(CONVERSATIONS_PER_STATEMENT) {
        // Everything fallible first: the builder's closure cannot fail.
        let rows = chunk
            .iter()
            .map(ConversationValues::new)
            .collect::<Result<Vec<_>, _>>()?;
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "INSERT INTO conversations ({CONVERSATION_COLUMNS}) "
        ));
        q.push_values(&rows, |mut b, (c, v)| {
            b.push_bind(c.id.to_string())
                .push_bind(c.visitor_id.as_str())
                .push_bind(c.visitor_name.as_deref())
                .push_bind(c.category.as_str())
                .push_bind(state_str(c.state))
                .push_bind(c.agent_id.as_ref().map(AgentId::as_str))
                .push_bind(v.created_at)
                .push_bind(v.assigned_at)
                .push_bind(v.closed_at)
                .push_bind(c.resolved)
                .push_bind(c.close_reason.as_deref())
                .push_bind(v.last_seq)
                .push_bind(c.page.as_deref())
                .push_bind(v.metadata.as_deref())
                .push_bind(c.team.as_ref().map(TeamId::as_str))
                .push_bind(i64::from(c.reopened))
                .push_bind(v.desk.as_str());
        });
        q.push(
            " ON CONFLICT (id) DO UPDATE SET \
                 visitor_id = excluded.visitor_id, visitor_name = excluded.visitor_name, \
                 category = excluded.category, state = excluded.state, \
                 agent_id = excluded.agent_id, created_at = excluded.created_at, \
                 assigned_at = excluded.assigned_at, closed_at = excluded.closed_at, \
                 resolved = excluded.resolved, close_reason = excluded.close_reason, \
                 last_seq = excluded.last_seq, page = excluded.page, metadata = excluded.metadata, \
                 team = excluded.team, reopened = excluded.reopened, desk = excluded.desk",
        );
        q.build()
            .persistent(cache_statement(chunk.len(), CONVERSATIONS_PER_STATEMENT))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Inserts `messages` with one multi-row statement per [`MESSAGES_PER_STATEMENT`] rows.
/// `ON CONFLICT DO NOTHING` is per row, as before: a message already stored (a retried batch)
/// is skipped and the rest of the statement still goes in. Rows are keyed by their
/// conversation's integer key (migration 0004): from `cache`, or else found or assigned by
/// [`conversation_keys`], whose keys are returned for the caller to remember once committed.
async fn insert_messages(
    tx: &mut Transaction<'_, Sqlite>,
    messages: &[Arc<StoredMessage>],
    cache: &KeyCache,
) -> Result<HashMap<ConversationId, i64>, StoreError> {
    let (mut keys, unknown) = cache.lookup(messages);
    let looked_up = conversation_keys(tx, &unknown).await?;
    keys.extend(&looked_up);
    for chunk in messages.chunks(MESSAGES_PER_STATEMENT) {
        let rows = chunk
            .iter()
            .map(|m| {
                let key = keys.get(&m.conversation_id).copied().ok_or_else(|| {
                    // Every id of the batch is in the cache or was just looked up.
                    StoreError::Corrupt(format!("no key for conversation {}", m.conversation_id))
                })?;
                Ok((m, key, to_i64("seq", m.seq.0)?, to_i64("ts", m.ts)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("INSERT INTO messages ({MESSAGE_KEYED_COLUMNS}) "));
        q.push_values(&rows, |mut b, &(m, key, seq, ts)| {
            b.push_bind(key)
                .push_bind(seq)
                .push_bind(m.sender_role.as_str())
                .push_bind(m.sender_id.as_str())
                .push_bind(m.sender_name.as_deref())
                .push_bind(m.text.as_str())
                .push_bind(ts)
                .push_bind(m.cid.as_ref().map(ClientMessageId::as_str))
                .push_bind(m.kind.as_str());
        });
        q.push(" ON CONFLICT (conversation_key, seq) DO NOTHING");
        q.build()
            .persistent(cache_statement(chunk.len(), MESSAGES_PER_STATEMENT))
            .execute(&mut **tx)
            .await?;
    }
    Ok(looked_up)
}

/// The integer keys of conversations `ids`, assigning keys to those that have none yet: two
/// statements per [`MAX_BIND_PARAMS`] conversations, one insert that skips known ids and one
/// select of them all.
async fn conversation_keys(
    tx: &mut Transaction<'_, Sqlite>,
    ids: &[ConversationId],
) -> Result<HashMap<ConversationId, i64>, StoreError> {
    let mut keys = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_BIND_PARAMS) {
        let texts: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        let mut insert = QueryBuilder::<Sqlite>::new("INSERT INTO conversation_keys (id) ");
        insert.push_values(&texts, |mut b, id| {
            b.push_bind(id.as_str());
        });
        insert.push(" ON CONFLICT (id) DO NOTHING");
        insert.build().execute(&mut **tx).await?;

        let mut select =
            QueryBuilder::<Sqlite>::new("SELECT id, key FROM conversation_keys WHERE id IN (");
        let mut list = select.separated(", ");
        for id in &texts {
            list.push_bind(id.as_str());
        }
        select.push(")");
        let found: Vec<(String, i64)> = select.build_query_as().fetch_all(&mut **tx).await?;
        for (id, key) in found {
            let id = ConversationId::parse(&id).map_err(|e| corrupt("conversation_keys.id", e))?;
            keys.insert(id, key);
        }
    }
    Ok(keys)
}

/// The most conversation keys [`KeyCache`] holds (about 3 MB); beyond it, it starts over.
const KEY_CACHE_MAX: usize = 100_000;

/// Conversations' integer keys, kept across batches: a key never changes once committed, and
/// without the cache every batch would spend two lookups by id per conversation to find keys it
/// found the batch before (at one or two messages per conversation per batch, that is most of
/// what the integer key saves). Filled only after a commit ([`KeyCache::remember`]). Starting
/// over when full costs each open conversation those two lookups once.
#[derive(Default)]
struct KeyCache(Mutex<HashMap<ConversationId, i64>>);

impl KeyCache {
    /// The known keys of `messages`' conversations, and the conversations (each once) whose keys
    /// are not known.
    fn lookup(
        &self,
        messages: &[Arc<StoredMessage>],
    ) -> (HashMap<ConversationId, i64>, Vec<ConversationId>) {
        let cache = self.0.lock().expect("key cache lock");
        let mut known = HashMap::new();
        let mut unknown = Vec::new();
        for m in messages {
            let id = m.conversation_id;
            match cache.get(&id) {
                Some(&key) => {
                    known.insert(id, key);
                }
                None => unknown.push(id),
            }
        }
        unknown.sort_unstable();
        unknown.dedup();
        (known, unknown)
    }

    /// Keeps `keys`, which a committed transaction read or assigned.
    fn remember(&self, keys: HashMap<ConversationId, i64>) {
        if keys.is_empty() {
            return;
        }
        let mut cache = self.0.lock().expect("key cache lock");
        if cache.len() + keys.len() > KEY_CACHE_MAX {
            cache.clear();
        }
        cache.extend(keys);
    }
}

/// Whether sqlx should keep a statement of `rows` rows prepared. Each row count is different
/// SQL, and a prepared statement of thousands of rows is large; only the full chunk, whose text
/// repeats in every large batch, is worth a slot in the per-connection cache. The others are
/// parsed each time, which costs far less than the round trips they replace.
fn cache_statement(rows: usize, per_statement: usize) -> bool {
    rows == per_statement
}

/// A conversation's values that need a fallible conversion before they can be bound.
struct ConversationValues {
    created_at: i64,
    assigned_at: Option<i64>,
    closed_at: Option<i64>,
    last_seq: i64,
    metadata: Option<String>,
    desk: String,
}

impl ConversationValues {
    fn new(c: &ConversationRecord) -> Result<(&ConversationRecord, Self), StoreError> {
        let metadata = c
            .metadata
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("conversation {} metadata: {e}", c.id)))?;
        let values = Self {
            created_at: to_i64("created_at", c.created_at)?,
            assigned_at: c
                .assigned_at
                .map(|t| to_i64("assigned_at", t))
                .transpose()?,
            closed_at: c.closed_at.map(|t| to_i64("closed_at", t)).transpose()?,
            last_seq: to_i64("last_seq", c.last_seq.0)?,
            metadata,
            desk: serde_json::to_string(&c.desk)
                .map_err(|e| StoreError::Corrupt(format!("conversation {} desk: {e}", c.id)))?,
        };
        Ok((c, values))
    }
}

/// A `conversations` row as SQLite types it; checked into a [`ConversationRecord`].
#[derive(sqlx::FromRow)]
pub(super) struct ConversationRow {
    id: String,
    visitor_id: String,
    visitor_name: Option<String>,
    category: String,
    state: String,
    agent_id: Option<String>,
    created_at: i64,
    assigned_at: Option<i64>,
    closed_at: Option<i64>,
    resolved: Option<bool>,
    close_reason: Option<String>,
    last_seq: i64,
    page: Option<String>,
    metadata: Option<String>,
    team: Option<String>,
    reopened: i64,
    desk: Option<String>,
}

impl TryFrom<ConversationRow> for ConversationRecord {
    type Error = StoreError;

    fn try_from(r: ConversationRow) -> Result<Self, StoreError> {
        let metadata = r
            .metadata
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt("conversations.metadata", e))?;
        Ok(ConversationRecord {
            id: ConversationId::parse(&r.id).map_err(|e| corrupt("conversations.id", e))?,
            visitor_id: VisitorId::parse(&r.visitor_id)
                .map_err(|e| corrupt("conversations.visitor_id", e))?,
            visitor_name: r.visitor_name,
            category: r.category,
            state: parse_state(&r.state)?,
            agent_id: r
                .agent_id
                .as_deref()
                .map(AgentId::parse)
                .transpose()
                .map_err(|e| corrupt("conversations.agent_id", e))?,
            created_at: to_u64("conversations.created_at", r.created_at)?,
            assigned_at: r
                .assigned_at
                .map(|t| to_u64("conversations.assigned_at", t))
                .transpose()?,
            closed_at: r
                .closed_at
                .map(|t| to_u64("conversations.closed_at", t))
                .transpose()?,
            resolved: r.resolved,
            close_reason: r.close_reason,
            last_seq: Seq(to_u64("conversations.last_seq", r.last_seq)?),
            page: r.page,
            metadata,
            team: r
                .team
                .as_deref()
                .map(TeamId::parse)
                .transpose()
                .map_err(|e| corrupt("conversations.team", e))?,
            reopened: u32::try_from(r.reopened)
                .map_err(|_| corrupt("conversations.reopened", r.reopened))?,
            // Rows written before the desk existed have none: all zero.
            desk: r
                .desk
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt("conversations.desk", e))?
                .unwrap_or_default(),
        })
    }
}

/// A `messages` row as SQLite types it; checked into a [`StoredMessage`].
#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    conversation_id: String,
    seq: i64,
    sender_role: String,
    sender_id: String,
    sender_name: Option<String>,
    text: String,
    ts: i64,
    cid: Option<String>,
    kind: String,
}

impl TryFrom<MessageRow> for StoredMessage {
    type Error = StoreError;

    fn try_from(r: MessageRow) -> Result<Self, StoreError> {
        Ok(StoredMessage {
            conversation_id: ConversationId::parse(&r.conversation_id)
                .map_err(|e| corrupt("messages.conversation_id", e))?,
            seq: Seq(to_u64("messages.seq", r.seq)?),
            sender_role: parse_role(&r.sender_role)?,
            sender_id: r.sender_id,
            sender_name: r.sender_name,
            text: r.text,
            ts: to_u64("messages.ts", r.ts)?,
            cid: r
                .cid
                .as_deref()
                .map(ClientMessageId::parse)
                .transpose()
                .map_err(|e| corrupt("messages.cid", e))?,
            kind: match r.kind.as_str() {
                "text" => MessageKind::Text,
                "note" => MessageKind::Note,
                other => return Err(corrupt("messages.kind", format!("unknown {other:?}"))),
            },
        })
    }
}

pub(super) fn state_str(state: ConversationState) -> &'static str {
    match state {
        ConversationState::Queued => "queued",
        ConversationState::Assigned => "assigned",
        ConversationState::Closed => "closed",
    }
}

fn parse_state(s: &str) -> Result<ConversationState, StoreError> {
    match s {
        "queued" => Ok(ConversationState::Queued),
        "assigned" => Ok(ConversationState::Assigned),
        "closed" => Ok(ConversationState::Closed),
        other => Err(corrupt("conversations.state", format!("unknown {other:?}"))),
    }
}

fn parse_role(s: &str) -> Result<Role, StoreError> {
    match s {
        "visitor" => Ok(Role::Visitor),
        "agent" => Ok(Role::Agent),
        "system" => Ok(Role::System),
        other => Err(corrupt(
            "messages.sender_role",
            format!("unknown {other:?}"),
        )),
    }
}

fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{column}: {e}"))
}

/// For values being written: one beyond `i64::MAX` would wrap to a negative on disk.
pub(super) fn to_i64(field: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{field} {v} is out of range")))
}

fn to_u64(column: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(column, format!("negative value {v}")))
}

/// For query bounds only: no stored value exceeds `i64::MAX`, so clamping keeps the meaning.
pub(super) fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    async fn open_temp() -> (TempDir, SqliteStore) {
        let dir = TempDir::new().unwrap();
        // A nested directory proves `open` creates the parent.
        let url = format!("sqlite:{}", dir.path().join("data/parley.db").display());
        let store = SqliteStore::open(&url, Duration::from_secs(5))
            .await
            .unwrap();
        (dir, store)
    }

    fn conversation(visitor: &str, created_at: u64) -> ConversationRecord {
        ConversationRecord {
            id: ConversationId::new(),
            visitor_id: VisitorId::parse(visitor).unwrap(),
            visitor_name: Some("Vera".into()),
            category: "account".into(),
            state: ConversationState::Queued,
            agent_id: None,
            created_at,
            assigned_at: None,
            closed_at: None,
            resolved: None,
            close_reason: None,
            last_seq: Seq(0),
            page: Some("/pricing".into()),
            metadata: Some(serde_json::Map::from_iter([(
                "plan".to_string(),
                serde_json::json!("pro"),
            )])),
            team: None,
            reopened: 0,
            desk: Default::default(),
        }
    }

    fn message(id: ConversationId, seq: u64) -> StoredMessage {
        StoredMessage {
            conversation_id: id,
            seq: Seq(seq),
            sender_role: if seq % 2 == 1 {
                Role::Visitor
            } else {
                Role::Agent
            },
            sender_id: "v1".into(),
            sender_name: None,
            text: format!("message {seq}"),
            ts: 1_000 + seq,
            cid: Some(ClientMessageId::parse(&format!("c{seq}")).unwrap()),
            kind: Default::default(),
        }
    }

    /// Messages as the persister hands them to the store.
    fn shared(messages: &[StoredMessage]) -> Vec<Arc<StoredMessage>> {
        messages.iter().cloned().map(Arc::new).collect()
    }

    fn seqs(messages: &[StoredMessage]) -> Vec<u64> {
        messages.iter().map(|m| m.seq.0).collect()
    }

    #[tokio::test]
    async fn a_batch_reads_back_as_written() {
        let (_dir, store) = open_temp().await;
        let mut c = conversation("v1", 100);
        c.last_seq = Seq(5);
        let msgs: Vec<_> = (1..=5).map(|s| message(c.id, s)).collect();
        store
            .write_batch(&[c.clone()], &shared(&msgs))
            .await
            .unwrap();

        assert_eq!(store.conversation(c.id).await.unwrap(), Some(c.clone()));
        assert_eq!(
            store.conversation(ConversationId::new()).await.unwrap(),
            None
        );
        assert_eq!(
            store.messages(c.id, Seq::ZERO, None, 100).await.unwrap(),
            msgs
        );
        assert_eq!(
            seqs(
                &store
                    .messages(c.id, Seq(1), Some(Seq(5)), 100)
                    .await
                    .unwrap()
            ),
            [2, 3, 4]
        );
        assert_eq!(
            seqs(&store.messages(c.id, Seq(1), None, 2).await.unwrap()),
            [2, 3]
        );
        assert_eq!(seqs(&store.tail(c.id, 2).await.unwrap()), [4, 5]);
        assert_eq!(seqs(&store.tail(c.id, 50).await.unwrap()), [1, 2, 3, 4, 5]);
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn a_later_snapshot_replaces_the_earlier_one() {
        let (_dir, store) = open_temp().await;
        let c = conversation("v1", 100);
        let closed = ConversationRecord {
            state: ConversationState::Closed,
            agent_id: Some(AgentId::parse("alice").unwrap()),
            assigned_at: Some(150),
            closed_at: Some(200),
            resolved: Some(true),
            close_reason: Some("agent".into()),
            last_seq: Seq(9),
            metadata: None,
            ..c.clone()
        };
        store
            .write_batch(std::slice::from_ref(&c), &[])
            .await
            .unwrap();
        store
            .write_batch(std::slice::from_ref(&closed), &[])
            .await
            .unwrap();
        assert_eq!(store.conversation(c.id).await.unwrap(), Some(closed));
    }

    #[tokio::test]
    async fn a_retried_batch_stores_each_message_once() {
        let (_dir, store) = open_temp().await;
        let c = conversation("v1", 100);
        let msgs: Vec<_> = (1..=3).map(|s| message(c.id, s)).collect();
        store
            .write_batch(std::slice::from_ref(&c), &shared(&msgs))
            .await
            .unwrap();
        store
            .write_batch(std::slice::from_ref(&c), &shared(&msgs))
            .await
            .unwrap();
        assert_eq!(
            store.messages(c.id, Seq::ZERO, None, 100).await.unwrap(),
            msgs
        );
    }

    #[tokio::test]
    async fn a_batch_larger_than_one_statement_is_stored_whole_and_once() {
        let (_dir, store) = open_temp().await;
        // More rows than one statement may bind, for both tables, so both are cut into chunks.
        let conversations: Vec<_> = (0..CONVERSATIONS_PER_STATEMENT as u64 + 7)
            .map(|i| ConversationRecord {
                last_seq: Seq(i),
                ..conversation("v1", 1_000 + i)
            })
            .collect();
        let first = conversations[0].id;
        let last = conversations[conversations.len() - 1].id;
        let per_conversation = MESSAGES_PER_STATEMENT as u64 + 3;
        let msgs: Vec<_> = [first, last]
            .iter()
            .flat_map(|&id| (1..=per_conversation).map(move |s| message(id, s)))
            .collect();
        assert!(msgs.len() > 2 * MESSAGES_PER_STATEMENT);

        store
            .write_batch(&conversations, &shared(&msgs))
            .await
            .unwrap();
        // Retried whole, as the persister does after an unknown outcome: nothing twice.
        store
            .write_batch(&conversations, &shared(&msgs))
            .await
            .unwrap();

        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(usize::try_from(stored).unwrap(), msgs.len());
        for id in [first, last] {
            let back = store.tail(id, u32::MAX).await.unwrap();
            let expected: Vec<_> = msgs
                .iter()
                .filter(|m| m.conversation_id == id)
                .cloned()
                .collect();
            assert_eq!(back, expected);
        }
        let listed = store
            .list_conversations(&ConversationFilter {
                limit: MAX_PAGE,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), MAX_PAGE as usize);
        for c in [
            &conversations[0],
            &conversations[CONVERSATIONS_PER_STATEMENT],
            conversations.last().unwrap(),
        ] {
            assert_eq!(store.conversation(c.id).await.unwrap().as_ref(), Some(c));
        }
        assert_eq!(
            store.open_conversations().await.unwrap().len(),
            conversations.len()
        );
    }

    #[tokio::test]
    async fn messages_of_more_conversations_than_one_statement_binds_each_get_their_own_key() {
        let (_dir, store) = open_temp().await;
        // One message each in more conversations than one key statement may bind, without
        // their snapshots: a message's key does not depend on its conversation's row.
        let msgs: Vec<_> = (0..MAX_BIND_PARAMS + 5)
            .map(|_| message(ConversationId::new(), 1))
            .collect();
        store.write_batch(&[], &shared(&msgs)).await.unwrap();
        store.write_batch(&[], &shared(&msgs)).await.unwrap();

        let (stored, keys): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT conversation_key) FROM messages")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(usize::try_from(stored).unwrap(), msgs.len());
        assert_eq!(usize::try_from(keys).unwrap(), msgs.len());
        for m in [&msgs[0], &msgs[MAX_BIND_PARAMS], msgs.last().unwrap()] {
            let back = store.tail(m.conversation_id, 10).await.unwrap();
            assert_eq!(back, std::slice::from_ref(m));
        }
    }

    #[tokio::test]
    async fn a_key_assigned_in_a_failed_batch_is_not_remembered() {
        let (_dir, store) = open_temp().await;
        let (a, b) = (ConversationId::new(), ConversationId::new());
        // Fails after a's key is assigned (a seq beyond SQLite's integers), so it rolls back,
        // and the next conversation to get a key gets the same number.
        let beyond = StoredMessage {
            seq: Seq(u64::MAX),
            ..message(a, 2)
        };
        let failed = [message(a, 1), beyond];
        assert!(matches!(
            store.write_batch(&[], &shared(&failed)).await,
            Err(StoreError::Corrupt(_))
        ));
        store
            .write_batch(&[], &shared(&[message(b, 1)]))
            .await
            .unwrap();
        store
            .write_batch(&[], &shared(&[message(a, 1)]))
            .await
            .unwrap();

        assert_eq!(store.tail(a, 10).await.unwrap(), [message(a, 1)]);
        assert_eq!(store.tail(b, 10).await.unwrap(), [message(b, 1)]);
    }

    #[tokio::test]
    async fn messages_stored_before_the_integer_key_migration_read_back_after_it() {
        // A database as release 0003 left it: the first three migrations, messages keyed by id.
        let dir = TempDir::new().unwrap();
        let migrations = dir.path().join("migrations");
        std::fs::create_dir(&migrations).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for name in ["0001_init.sql", "0002_desk_content.sql", "0003_desk.sql"] {
            std::fs::copy(source.join(name), migrations.join(name)).unwrap();
        }
        let url = format!("sqlite:{}", dir.path().join("parley.db").display());
        let old = SqlitePool::connect_with(
            SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::migrate::Migrator::new(migrations.as_path())
            .await
            .unwrap()
            .run(&old)
            .await
            .unwrap();
        let (a, b) = (ConversationId::new(), ConversationId::new());
        let msgs: Vec<_> = [(a, 1), (b, 1), (a, 2), (a, 3), (b, 2)]
            .into_iter()
            .map(|(id, seq)| StoredMessage {
                kind: if seq == 2 {
                    MessageKind::Note
                } else {
                    MessageKind::Text
                },
                ..message(id, seq)
            })
            .collect();
        for m in &msgs {
            sqlx::query(&format!(
                "INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .bind(m.conversation_id.to_string())
            .bind(to_i64("seq", m.seq.0).unwrap())
            .bind(m.sender_role.as_str())
            .bind(m.sender_id.as_str())
            .bind(m.sender_name.as_deref())
            .bind(m.text.as_str())
            .bind(to_i64("ts", m.ts).unwrap())
            .bind(m.cid.as_ref().map(ClientMessageId::as_str))
            .bind(m.kind.as_str())
            .execute(&old)
            .await
            .unwrap();
        }
        old.close().await;

        let store = SqliteStore::open(&url, Duration::from_secs(5))
            .await
            .unwrap();
        for id in [a, b] {
            let expected: Vec<_> = msgs
                .iter()
                .filter(|m| m.conversation_id == id)
                .cloned()
                .collect();
            assert_eq!(store.tail(id, 10).await.unwrap(), expected);
        }
        // New messages join the migrated conversations' keys; a retried old one is skipped.
        let more = [message(a, 4), msgs[0].clone()];
        store.write_batch(&[], &shared(&more)).await.unwrap();
        assert_eq!(seqs(&store.tail(a, 10).await.unwrap()), [1, 2, 3, 4]);
        let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversation_keys")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(keys, 2);
    }

    #[tokio::test]
    async fn listings_filter_and_put_the_newest_first() {
        let (_dir, store) = open_temp().await;
        let alice = AgentId::parse("alice").unwrap();
        let queued = conversation("v1", 100);
        let assigned = ConversationRecord {
            state: ConversationState::Assigned,
            agent_id: Some(alice.clone()),
            category: "billing".into(),
            ..conversation("v2", 200)
        };
        let closed = ConversationRecord {
            state: ConversationState::Closed,
            agent_id: Some(alice.clone()),
            ..conversation("v1", 300)
        };
        store
            .write_batch(&[queued.clone(), assigned.clone(), closed.clone()], &[])
            .await
            .unwrap();

        let ids = |records: Vec<ConversationRecord>| -> Vec<ConversationId> {
            records.into_iter().map(|r| r.id).collect()
        };
        let list = |filter: ConversationFilter| {
            let store = store.clone();
            async move { ids(store.list_conversations(&filter).await.unwrap()) }
        };
        assert_eq!(
            list(ConversationFilter::default()).await,
            [closed.id, assigned.id, queued.id]
        );
        assert_eq!(
            list(ConversationFilter {
                state: Some(ConversationState::Assigned),
                ..Default::default()
            })
            .await,
            [assigned.id]
        );
        assert_eq!(
            list(ConversationFilter {
                agent_id: Some(alice),
                ..Default::default()
            })
            .await,
            [closed.id, assigned.id]
        );
        assert_eq!(
            list(ConversationFilter {
                category: Some("billing".into()),
                ..Default::default()
            })
            .await,
            [assigned.id]
        );
        assert_eq!(
            list(ConversationFilter {
                visitor_id: Some(VisitorId::parse("v1").unwrap()),
                ..Default::default()
            })
            .await,
            [closed.id, queued.id]
        );
        assert_eq!(
            list(ConversationFilter {
                created_after: Some(100),
                created_before: Some(300),
                ..Default::default()
            })
            .await,
            [assigned.id]
        );
        assert_eq!(
            list(ConversationFilter {
                limit: 1,
                offset: 1,
                ..Default::default()
            })
            .await,
            [assigned.id]
        );

        assert_eq!(
            ids(store.open_conversations().await.unwrap()),
            [queued.id, assigned.id]
        );
    }
}
