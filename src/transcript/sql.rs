//! The SQL both transcript stores run: every read, and the writes beside a conversation (tags,
//! follow-ups, survey answers), written once over any sqlx database, with the row types and
//! their checks. The texts use `$N` placeholders, which sqlx's SQLite driver accepts as well as
//! PostgreSQL, so there is one text per query and SQLite and PostgreSQL cannot drift apart.
//!
//! What each database does its own way is the small [`SqlStore`] trait: the batch write (SQLite's
//! multi-row inserts tuned for the chat storm, PostgreSQL's merge of several nodes' snapshots),
//! where messages are read from, and a lock the desk's content needs. Every [`SqlStore`] is a
//! [`TranscriptStore`] (here) and a [`crate::desk::store::ContentStore`] (in the desk).
//!
//! Both databases store sequence numbers and times as signed 64-bit integers: they are checked
//! on the way back, so a row edited by hand surfaces as [`StoreError::Corrupt`] rather than as
//! a wrapped-around number.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{
    Arguments, ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type,
};

use super::store::{StoreError, TranscriptStore, MAX_PAGE, REPORT_MAX_ROWS};
use super::{
    ConversationFilter, ConversationRecord, CsatAnswer, DeskExtras, FollowUp, StoredMessage,
};
use crate::domain::{
    AgentId, ClientMessageId, ConversationId, Role, Seq, TeamId, UnixMillis, VisitorId,
};
use crate::protocol::{ConversationState, MessageKind};

/// A store on one sqlx database that runs the shared SQL. Only what differs between the
/// databases is here; everything else is written once, for every implementation.
#[async_trait::async_trait]
pub trait SqlStore: Send + Sync + 'static {
    type Db: Database;

    /// Where messages are read from, with their conversation's id as `conversation_id`.
    const MESSAGES: &'static str;

    /// A statement that makes writers of canned replies take turns, run first in the
    /// transaction that counts them, when updating a row does not already do that.
    const CANNED_WRITE_LOCK: Option<&'static str>;

    fn pool(&self) -> &Pool<Self::Db>;

    /// The rows a statement changed (sqlx has no database-independent way to ask).
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;

    /// [`TranscriptStore::write_batch`]: the one write each database does its own way.
    ///
    /// # Errors
    /// As for [`TranscriptStore::write_batch`].
    async fn insert_batch(
        &self,
        conversations: &[ConversationRecord],
        messages: &[Arc<StoredMessage>],
    ) -> Result<(), StoreError>;
}

/// A value bound to a listing's condition.
enum Value {
    Text(String),
    Int(i64),
}

/// A listing page: capped at [`MAX_PAGE`], and 0 means the largest page (see
/// [`ConversationFilter::limit`]).
fn page_limit(limit: u32) -> u32 {
    match limit {
        0 => MAX_PAGE,
        n => n.min(MAX_PAGE),
    }
}

pub(super) const CONVERSATION_COLUMNS: &str =
    "id, visitor_id, visitor_name, category, state, agent_id, \
     created_at, assigned_at, closed_at, resolved, close_reason, last_seq, page, metadata, \
     team, reopened, desk";

pub(super) const MESSAGE_COLUMNS: &str =
    "conversation_id, seq, sender_role, sender_id, sender_name, text, ts, cid, kind";

/// The conversations created in `[$1, $2)`, for a report's extras.
const IN_RANGE: &str = "SELECT id FROM conversations WHERE created_at >= $1 AND created_at < $2";

#[async_trait::async_trait]
impl<S> TranscriptStore for S
where
    S: SqlStore,
    for<'c> &'c mut <S::Db as Database>::Connection: Executor<'c, Database = S::Db>,
    for<'q> <S::Db as Database>::Arguments<'q>: IntoArguments<'q, S::Db>,
    for<'q> String: Encode<'q, S::Db> + Type<S::Db>,
    for<'q> &'q str: Encode<'q, S::Db> + Type<S::Db>,
    for<'q> Option<&'q str>: Encode<'q, S::Db> + Type<S::Db>,
    for<'q> i64: Encode<'q, S::Db> + Type<S::Db>,
    for<'r> ConversationRow: FromRow<'r, <S::Db as Database>::Row>,
    for<'r> MessageRow: FromRow<'r, <S::Db as Database>::Row>,
    for<'r> FollowUpRow: FromRow<'r, <S::Db as Database>::Row>,
    for<'r> CsatRow: FromRow<'r, <S::Db as Database>::Row>,
    for<'r> FollowUpJoinRow: FromRow<'r, <S::Db as Database>::Row>,
    for<'r> String: Decode<'r, S::Db>,
    for<'r> i64: Decode<'r, S::Db>,
    usize: ColumnIndex<<S::Db as Database>::Row>,
{
    async fn write_batch(
        &self,
        conversations: &[ConversationRecord],
        messages: &[Arc<StoredMessage>],
    ) -> Result<(), StoreError> {
        if conversations.is_empty() && messages.is_empty() {
            return Ok(());
        }
        self.insert_batch(conversations, messages).await
    }

    async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1");
        let row: Option<ConversationRow> = sqlx::query_as(&sql)
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.map(ConversationRecord::try_from).transpose()
    }

    async fn list_conversations(
        &self,
        filter: &ConversationFilter,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        // Each condition that applies, with `$` where its value goes; numbered in order below.
        let mut conditions: Vec<(&str, Value)> = Vec::new();
        let mut text =
            |condition, value: &str| conditions.push((condition, Value::Text(value.into())));
        if let Some(state) = filter.state {
            text("state = $", state_str(state));
        }
        if let Some(agent) = &filter.agent_id {
            text("agent_id = $", agent.as_str());
        }
        if let Some(category) = &filter.category {
            text("category = $", category);
        }
        if let Some(visitor) = &filter.visitor_id {
            text("visitor_id = $", visitor.as_str());
        }
        if let Some(team) = &filter.team {
            text("team = $", team.as_str());
        }
        if let Some(tag) = &filter.tag {
            text(
                "id IN (SELECT conversation_id FROM conversation_tags WHERE tag = $)",
                tag,
            );
        }
        let bounds = [
            ("created_at > $", filter.created_after),
            ("created_at < $", filter.created_before),
            ("closed_at > $", filter.closed_after),
        ];
        for (condition, bound) in bounds {
            if let Some(bound) = bound {
                conditions.push((condition, Value::Int(saturating_i64(bound))));
            }
        }
        let mut sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE 1 = 1");
        let mut args = <S::Db as Database>::Arguments::default();
        for (condition, value) in conditions {
            match value {
                Value::Text(v) => args.add(v),
                Value::Int(v) => args.add(v),
            }
            .map_err(sqlx::Error::Encode)?;
            sql.push_str(" AND ");
            sql.push_str(&condition.replace('$', &format!("${}", args.len())));
        }
        // The id breaks ties between conversations created in the same millisecond, so pages
        // do not overlap or skip.
        args.add(i64::from(page_limit(filter.limit)))
            .map_err(sqlx::Error::Encode)?;
        args.add(i64::from(filter.offset))
            .map_err(sqlx::Error::Encode)?;
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
            args.len() - 1,
            args.len()
        ));
        let rows: Vec<ConversationRow> = sqlx::query_as_with(&sql, args)
            .fetch_all(self.pool())
            .await?;
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
            "SELECT {MESSAGE_COLUMNS} FROM {} \
             WHERE conversation_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq ASC LIMIT $4",
            S::MESSAGES
        );
        let before = before.map_or(i64::MAX, |s| saturating_i64(s.0));
        let rows: Vec<MessageRow> = sqlx::query_as(&sql)
            .bind(id.to_string())
            .bind(saturating_i64(after.0))
            .bind(before)
            .bind(i64::from(limit.min(MAX_PAGE)))
            .fetch_all(self.pool())
            .await?;
        rows.into_iter().map(StoredMessage::try_from).collect()
    }

    async fn newest_before(
        &self,
        id: ConversationId,
        before: Seq,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        newest(self, id, saturating_i64(before.0), limit.min(MAX_PAGE)).await
    }

    async fn tail(&self, id: ConversationId, limit: u32) -> Result<Vec<StoredMessage>, StoreError> {
        newest(self, id, i64::MAX, limit).await
    }

    async fn open_conversations(&self) -> Result<Vec<ConversationRecord>, StoreError> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE state IN ('queued', 'assigned') ORDER BY created_at ASC, id ASC"
        );
        let rows: Vec<ConversationRow> = sqlx::query_as(&sql).fetch_all(self.pool()).await?;
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
        .execute(self.pool())
        .await?;
        Ok(S::rows_affected(&done) == 1)
    }

    async fn set_tags(&self, id: ConversationId, tags: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
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
            .bind(tag.as_str())
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
                    .execute(self.pool())
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
                .bind(f.set_by.as_str())
                .bind(to_i64("set_at", f.set_at)?)
                .execute(self.pool())
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
        .bind(id.as_str())
        .fetch_all(self.pool())
        .await?;
        let follow_up: Option<FollowUpRow> = sqlx::query_as(
            "SELECT conversation_id, due_at, note, set_by, set_at FROM follow_ups \
             WHERE conversation_id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(self.pool())
        .await?;
        let csat: Option<CsatRow> = sqlx::query_as(
            "SELECT conversation_id, score, comment, created_at FROM csat \
             WHERE conversation_id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(self.pool())
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
            .fetch_all(self.pool())
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
            .fetch_all(self.pool())
            .await?;
        let tags: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT conversation_id, tag FROM conversation_tags \
             WHERE conversation_id IN ({IN_RANGE}) ORDER BY tag"
        ))
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        let follow_ups: Vec<FollowUpRow> = sqlx::query_as(&format!(
            "SELECT conversation_id, due_at, note, set_by, set_at FROM follow_ups \
             WHERE conversation_id IN ({IN_RANGE})"
        ))
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        let csat: Vec<CsatRow> = sqlx::query_as(&format!(
            "SELECT conversation_id, score, comment, created_at FROM csat \
             WHERE conversation_id IN ({IN_RANGE})"
        ))
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        join_extras(rows, tags, follow_ups, csat)
    }

    async fn begin_run(&self, now: UnixMillis) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT clean FROM node_runs WHERE id = 1")
            .fetch_optional(self.pool())
            .await?;
        let clean = match row {
            None => true,
            Some(row) => {
                sqlx::Row::try_get::<i64, _>(&row, 0).map_err(|e| corrupt("clean", e))? != 0
            }
        };
        mark_run(self.pool(), false, now).await?;
        Ok(clean)
    }

    async fn end_run(&self, now: UnixMillis) -> Result<(), StoreError> {
        mark_run(self.pool(), true, now).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }
}

/// The newest `limit` messages of a conversation with `seq < before`, oldest first: newest
/// first to take the last ones, then turned around for the caller.
async fn newest<S>(
    store: &S,
    id: ConversationId,
    before: i64,
    limit: u32,
) -> Result<Vec<StoredMessage>, StoreError>
where
    S: SqlStore,
    for<'c> &'c mut <S::Db as Database>::Connection: Executor<'c, Database = S::Db>,
    for<'q> <S::Db as Database>::Arguments<'q>: IntoArguments<'q, S::Db>,
    for<'q> String: Encode<'q, S::Db> + Type<S::Db>,
    for<'q> i64: Encode<'q, S::Db> + Type<S::Db>,
    for<'r> MessageRow: FromRow<'r, <S::Db as Database>::Row>,
{
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM {} \
         WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        S::MESSAGES
    );
    let rows: Vec<MessageRow> = sqlx::query_as(&sql)
        .bind(id.to_string())
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(store.pool())
        .await?;
    rows.into_iter()
        .rev()
        .map(StoredMessage::try_from)
        .collect()
}

/// Records whether the single node's run is clean ([`TranscriptStore::begin_run`]).
async fn mark_run<Db>(pool: &Pool<Db>, clean: bool, now: UnixMillis) -> Result<(), StoreError>
where
    Db: Database,
    for<'c> &'c mut Db::Connection: Executor<'c, Database = Db>,
    for<'q> Db::Arguments<'q>: IntoArguments<'q, Db>,
    for<'q> i64: Encode<'q, Db> + Type<Db>,
{
    sqlx::query(
        "INSERT INTO node_runs (id, clean, changed_at) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET clean = excluded.clean, changed_at = excluded.changed_at",
    )
    .bind(i64::from(clean))
    .bind(to_i64("changed_at", now)?)
    .execute(pool)
    .await?;
    Ok(())
}

/// `c.id, c.visitor_id, …`: the conversation columns of a join.
fn prefixed_conversation_columns(alias: &str) -> String {
    CONVERSATION_COLUMNS
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Puts a report's conversations together with their tags, follow-ups and survey answers.
fn join_extras(
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
pub(crate) struct FollowUpRow {
    conversation_id: String,
    due_at: i64,
    note: Option<String>,
    set_by: String,
    set_at: i64,
}

impl FollowUpRow {
    fn check(self) -> Result<(String, FollowUp), StoreError> {
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
pub(crate) struct CsatRow {
    conversation_id: String,
    score: i64,
    comment: Option<String>,
    created_at: i64,
}

impl CsatRow {
    fn check(self) -> Result<(String, CsatAnswer), StoreError> {
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
pub(crate) struct FollowUpJoinRow {
    #[sqlx(flatten)]
    conversation: ConversationRow,
    f_id: String,
    f_due_at: i64,
    f_note: Option<String>,
    f_set_by: String,
    f_set_at: i64,
}

impl FollowUpJoinRow {
    fn check(self) -> Result<(ConversationRecord, FollowUp), StoreError> {
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

/// A conversation's values that need a fallible conversion before they can be bound (both
/// write paths bind them).
pub(super) struct ConversationValues {
    pub created_at: i64,
    pub assigned_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub last_seq: i64,
    pub metadata: Option<String>,
    pub desk: String,
}

impl ConversationValues {
    pub fn new(c: &ConversationRecord) -> Result<(&ConversationRecord, Self), StoreError> {
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

/// A `conversations` row as the databases type it; checked into a [`ConversationRecord`].
#[derive(sqlx::FromRow)]
pub(crate) struct ConversationRow {
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

/// A `messages` row as the databases type it; checked into a [`StoredMessage`].
#[derive(sqlx::FromRow)]
pub(crate) struct MessageRow {
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

pub(crate) fn state_str(state: ConversationState) -> &'static str {
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

pub(crate) fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{column}: {e}"))
}

/// For values being written: one beyond `i64::MAX` would wrap to a negative on disk.
pub(crate) fn to_i64(field: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{field} {v} is out of range")))
}

pub(crate) fn to_u64(column: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(column, format!("negative value {v}")))
}

/// For query bounds only: no stored value exceeds `i64::MAX`, so clamping keeps the meaning.
pub(crate) fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
