//! A [`TranscriptStore`] in PostgreSQL: what several nodes share (`--database postgres://…`),
//! so any node serves any transcript. SQLite stays the single-node default.
//!
//! Same schema and semantics as [`super::store::SqliteStore`] (migrations/postgres, run at
//! start-up): conversations upserted by id, messages inserted idempotently by
//! `(conversation_id, seq)`, so batches from several nodes, and retried ones, never duplicate.
//! The row types and checks are shared with the SQLite store.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Transaction};

use super::migrate;
use super::store::{
    join_extras, prefixed_conversation_columns, saturating_i64, state_str, to_i64, ConversationRow,
    CsatRow, FollowUpJoinRow, FollowUpRow, MessageRow, CONVERSATION_COLUMNS, MESSAGE_COLUMNS,
    REPORT_MAX_ROWS,
};
use super::{
    ConversationFilter, ConversationRecord, CsatAnswer, DeskExtras, FollowUp, StoreError,
    StoredMessage, TranscriptStore,
};
use crate::domain::{AgentId, ClientMessageId, ConversationId, Seq, TeamId, UnixMillis};

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
            .connect_with(super::with_quiet_slow_statements(
                PgConnectOptions::from_str(url)?,
            ))
            .await?;
        let migrator = sqlx::migrate!("./migrations/postgres");
        let pending = migrate::pending(&migrator, &mut *pool.acquire().await?).await;
        migrate::apply(pending, migrator.run(&pool)).await?;
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
        messages: &[Arc<StoredMessage>],
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

    async fn record_csat(
        &self,
        id: ConversationId,
        answer: &CsatAnswer,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO csat (conversation_id, score, comment, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id) DO NOTHING",
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
        sqlx::query("DELETE FROM conversation_tags WHERE conversation_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        for tag in tags {
            sqlx::query(
                "INSERT INTO conversation_tags (conversation_id, tag) VALUES ($1, $2) \
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
                sqlx::query("DELETE FROM follow_ups WHERE conversation_id = $1")
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?;
            }
            Some(f) => {
                sqlx::query(
                    "INSERT INTO follow_ups (conversation_id, due_at, note, set_by, set_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (conversation_id) DO UPDATE SET \
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
            "SELECT tag FROM conversation_tags WHERE conversation_id = $1 ORDER BY tag",
        )
        .bind(&id)
        .fetch_all(&self.pool)
        .await?;
        let follow_up: Option<FollowUpRow> = sqlx::query_as(
            "SELECT conversation_id, due_at, note, set_by, set_at FROM follow_ups \
             WHERE conversation_id = $1",
        )
        .bind(&id)
        .fetch_optional(&self.pool)
        .await?;
        let csat: Option<CsatRow> = sqlx::query_as(
            "SELECT conversation_id, score, comment, created_at FROM csat \
             WHERE conversation_id = $1",
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
             WHERE f.due_at < $1 ORDER BY f.due_at ASC, c.id ASC LIMIT $2"
        );
        let rows: Vec<FollowUpJoinRow> = sqlx::query_as(&sql)
            .bind(saturating_i64(due_before))
            .bind(i64::from(page_limit(limit)))
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
             WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at ASC, id ASC LIMIT $3"
        );
        let rows: Vec<ConversationRow> = sqlx::query_as(&sql)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let in_range = "SELECT id FROM conversations WHERE created_at >= $1 AND created_at < $2";
        let tags: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT conversation_id, tag FROM conversation_tags \
             WHERE conversation_id IN ({in_range}) ORDER BY tag"
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
    let desk = serde_json::to_string(&c.desk)
        .map_err(|e| StoreError::Corrupt(format!("conversation {} desk: {e}", c.id)))?;
    // Several nodes write snapshots of one conversation: a closed one is final until it is
    // reopened (a higher `reopened`), `last_seq` never goes back, and a survey once sent stays
    // sent (a snapshot taken before it, by another node, lands later without erasing it: the
    // answer is checked against it), whatever order the batches land in.
    sqlx::query(
        "INSERT INTO conversations (id, visitor_id, visitor_name, category, state, agent_id, \
             created_at, assigned_at, closed_at, resolved, close_reason, last_seq, page, metadata, \
             team, reopened, desk) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (id) DO UPDATE SET \
             visitor_id = excluded.visitor_id, visitor_name = excluded.visitor_name, \
             category = excluded.category, state = excluded.state, agent_id = excluded.agent_id, \
             created_at = excluded.created_at, assigned_at = excluded.assigned_at, \
             closed_at = excluded.closed_at, resolved = excluded.resolved, \
             close_reason = excluded.close_reason, \
             last_seq = GREATEST(conversations.last_seq, excluded.last_seq), \
             page = excluded.page, metadata = excluded.metadata, team = excluded.team, \
             reopened = excluded.reopened, \
             desk = CASE WHEN conversations.desk IS NOT NULL \
                 AND conversations.desk::jsonb ? 'csat_requested_at' \
                 AND NOT excluded.desk::jsonb ? 'csat_requested_at' \
               THEN (excluded.desk::jsonb || jsonb_build_object('csat_requested_at', \
                 conversations.desk::jsonb -> 'csat_requested_at'))::text \
               ELSE excluded.desk END \
         WHERE conversations.reopened < excluded.reopened \
            OR (conversations.reopened = excluded.reopened AND conversations.state <> 'closed')",
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
    .bind(c.team.as_ref().map(TeamId::as_str))
    .bind(i64::from(c.reopened))
    .bind(desk)
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
             ts, cid, kind) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
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
    .bind(m.kind.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
