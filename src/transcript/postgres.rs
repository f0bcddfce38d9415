//! A [`TranscriptStore`] in PostgreSQL: what several nodes share (`--database postgres://…`),
//! so any node serves any transcript. SQLite stays the single-node default.
//!
//! Same schema and semantics as [`super::sqlite::SqliteStore`] (migrations/postgres, run at
//! start-up): conversations upserted by id, messages inserted idempotently by
//! `(conversation_id, seq)`, so batches from several nodes, and retried ones, never duplicate.
//! The reads, the row types and their checks are the SQL shared with SQLite ([`super::sql`]);
//! what is PostgreSQL's own is here: connecting, and the batch write that merges several
//! nodes' snapshots of one conversation.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};
use sqlx::{Postgres, Transaction};

use super::migrate;
use super::sql::{state_str, to_i64, ConversationValues, SqlStore, CONVERSATION_COLUMNS};
use super::{ConversationRecord, StoreError, StoredMessage};
use crate::domain::{AgentId, ClientMessageId, TeamId};

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
}

#[async_trait::async_trait]
impl SqlStore for PostgresStore {
    type Db = Postgres;

    const MESSAGES: &'static str = "messages";

    const CANNED_WRITE_LOCK: Option<&'static str> = Some(crate::desk::postgres::CANNED_WRITE_LOCK);

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn insert_batch(
        &self,
        conversations: &[ConversationRecord],
        messages: &[Arc<StoredMessage>],
    ) -> Result<(), StoreError> {
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
}

async fn upsert_conversation(
    tx: &mut Transaction<'_, Postgres>,
    c: &ConversationRecord,
) -> Result<(), StoreError> {
    let (c, v) = ConversationValues::new(c)?;
    // Several nodes write snapshots of one conversation: a closed one is final until it is
    // reopened (a higher `reopened`), `last_seq` never goes back, and a survey once sent stays
    // sent (a snapshot taken before it, by another node, lands later without erasing it: the
    // answer is checked against it), whatever order the batches land in.
    sqlx::query(&format!(
        "INSERT INTO conversations ({CONVERSATION_COLUMNS}) \
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
            OR (conversations.reopened = excluded.reopened AND conversations.state <> 'closed')"
    ))
    .bind(c.id.to_string())
    .bind(c.visitor_id.as_str())
    .bind(c.visitor_name.as_deref())
    .bind(&c.category)
    .bind(state_str(c.state))
    .bind(c.agent_id.as_ref().map(AgentId::as_str))
    .bind(v.created_at)
    .bind(v.assigned_at)
    .bind(v.closed_at)
    .bind(c.resolved)
    .bind(c.close_reason.as_deref())
    .bind(v.last_seq)
    .bind(c.page.as_deref())
    .bind(v.metadata)
    .bind(c.team.as_ref().map(TeamId::as_str))
    .bind(i64::from(c.reopened))
    .bind(v.desk)
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
