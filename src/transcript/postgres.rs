//! A [`TranscriptStore`] in PostgreSQL: what several nodes share (`--database postgres://…`),
//! so any node serves any transcript. SQLite stays the single-node default.
//!
//! Same schema and semantics as [`super::store::SqliteStore`] (migrations/postgres, run at
//! start-up): conversations upserted by id, messages inserted idempotently by
//! `(conversation_id, seq)`, so batches from several nodes, and retried ones, never duplicate.
//! The row types and checks are shared with the SQLite store.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Transaction};

use super::store::{
    saturating_i64, state_str, to_i64, ConversationRow, MessageRow, CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
};
use super::{ConversationFilter, ConversationRecord, StoreError, StoredMessage, TranscriptStore};
use crate::domain::{AgentId, ClientMessageId, ConversationId, Seq};

/// A listing page: 0 means the largest page, as for SQLite.
fn page_limit(limit: u32) -> u32 {
    match limit {
        0 => super::MAX_PAGE,
        n => n.min(super::MAX_PAGE),
    }
}

/// Connections per node: the persister's writes and the API's reads.
const POOL_SIZE: u32 = 8;

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and brings the schema
    /// up to date (migrations are serialised by sqlx's advisory lock, so nodes starting
    /// together are safe).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached or a migration fails.
    pub async fn open(url: &str, acquire_timeout: std::time::Duration) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(acquire_timeout)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the schema: {e}")))?;
        Ok(Self { pool })
    }

    /// The connection pool, for the desk's content store on the same database.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl TranscriptStore for PostgresStore {
    async fn write_batch(
        &self,
        conversations: &[ConversationRecord],
        messages: &[StoredMessage],
    ) -> Result<(), StoreError> {
        if conversations.is_empty() && messages.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for c in conversations {
            upsert_conversation(&mut tx, c).await?;
        }
        for m in messages {
            insert_message(&mut tx, m).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1");
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
        let mut q = QueryBuilder::<Postgres>::new(format!(
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
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(page_limit(filter.limit)))
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
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE conversation_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq ASC LIMIT $4"
        );
        let before = before.map_or(i64::MAX, |s| saturating_i64(s.0));
        let rows: Vec<MessageRow> = sqlx::query_as(&sql)
            .bind(id.to_string())
            .bind(saturating_i64(after.0))
            .bind(before)
            .bind(i64::from(limit.min(super::MAX_PAGE)))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StoredMessage::try_from).collect()
    }

    async fn tail(&self, id: ConversationId, limit: u32) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2"
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

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

async fn upsert_conversation(
    tx: &mut Transaction<'_, Postgres>,
    c: &ConversationRecord,
) -> Result<(), StoreError> {
    let metadata = c
        .metadata
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("conversation {} metadata: {e}", c.id)))?;
    // Several nodes write snapshots of one conversation: a closed one is final, and `last_seq`
    // never goes back, whatever order the batches land in.
    sqlx::query(
        "INSERT INTO conversations (id, visitor_id, visitor_name, category, state, agent_id, \
             created_at, assigned_at, closed_at, resolved, close_reason, last_seq, page, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (id) DO UPDATE SET \
             visitor_id = excluded.visitor_id, visitor_name = excluded.visitor_name, \
             category = excluded.category, state = excluded.state, agent_id = excluded.agent_id, \
             created_at = excluded.created_at, assigned_at = excluded.assigned_at, \
             closed_at = excluded.closed_at, resolved = excluded.resolved, \
             close_reason = excluded.close_reason, \
             last_seq = GREATEST(conversations.last_seq, excluded.last_seq), \
             page = excluded.page, metadata = excluded.metadata \
         WHERE conversations.state <> 'closed'",
    )
    .bind(c.id.to_string())
    .bind(c.visitor_id.as_str())
    .bind(c.visitor_name.as_deref())
    .bind(&c.category)
    .bind(state_str(c.state))
    .bind(c.agent_id.as_ref().map(AgentId::as_str))
    .bind(to_i64("created_at", c.created_at)?)
    .bind(
        c.assigned_at
            .map(|t| to_i64("assigned_at", t))
            .transpose()?,
    )
    .bind(c.closed_at.map(|t| to_i64("closed_at", t)).transpose()?)
    .bind(c.resolved)
    .bind(c.close_reason.as_deref())
    .bind(to_i64("last_seq", c.last_seq.0)?)
    .bind(c.page.as_deref())
    .bind(metadata)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_message(
    tx: &mut Transaction<'_, Postgres>,
    m: &StoredMessage,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO messages (conversation_id, seq, sender_role, sender_id, sender_name, text, \
             ts, cid) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (conversation_id, seq) DO NOTHING",
    )
    .bind(m.conversation_id.to_string())
    .bind(to_i64("seq", m.seq.0)?)
    .bind(m.sender_role.as_str())
    .bind(&m.sender_id)
    .bind(m.sender_name.as_deref())
    .bind(&m.text)
    .bind(to_i64("ts", m.ts)?)
    .bind(m.cid.as_ref().map(ClientMessageId::as_str))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
