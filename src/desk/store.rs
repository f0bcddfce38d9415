//! Where the desk's content lives: the [`ContentStore`] trait, its record types, and its one
//! implementation, on the transcripts' database, whichever it is: the same SQL on SQLite and on
//! PostgreSQL (what PostgreSQL does differently is in [`super::postgres`]).
//!
//! The store is the truth and every node reads it; the search index of [`super::kb`] is a copy
//! that each node rebuilds from it. Writes of articles bump one revision counter in the same
//! transaction, so a node can tell cheaply whether anything changed since its index was built.
//! Bounds (how many articles and canned replies) are checked inside the writing transaction,
//! after the write lock is taken, so concurrent writers cannot overshoot them.

use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use crate::domain::{Category, IdError, Shortcut, UnixMillis, VisitorId};
use crate::transcript::sql::{corrupt, saturating_i64, to_i64, to_u64, SqlStore};
use crate::transcript::StoreError;

/// An article's id: a UUIDv7, so ids sort by creation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArticleId(Uuid);

impl ArticleId {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// # Errors
    /// When `s` is not a UUID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| IdError::Format { kind: "article_id" })
    }
}

impl TryFrom<String> for ArticleId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<ArticleId> for String {
    fn from(id: ArticleId) -> String {
        id.to_string()
    }
}

impl fmt::Display for ArticleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ArticleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArticleId({})", self.0)
    }
}

/// A knowledge-base article, as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Article {
    pub id: ArticleId,
    pub title: String,
    /// Plain text; never interpreted as HTML.
    pub body: String,
    /// A language tag in lower case: "en", "zh", "zh-tw".
    pub lang: String,
    pub tags: Vec<String>,
    /// Where the full article lives on the help site (http or https only).
    pub url: Option<String>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

/// A canned reply: text an agent inserts by typing `/shortcut`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CannedReply {
    pub shortcut: Shortcut,
    pub title: String,
    /// With placeholders such as `{{visitor.name|there}}` (see [`super::canned`]).
    pub text: String,
    pub updated_at: UnixMillis,
}

/// "This article solved my question", from a visitor who then did not ask a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deflection {
    pub article_id: ArticleId,
    /// As the widget claims it: the endpoint is public, so this is not proof of identity.
    pub visitor_id: Option<VisitorId>,
    pub category: Option<Category>,
    pub ts: UnixMillis,
}

/// Deflections of one article in one category on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeflectionCount {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub category: Option<String>,
    pub article_id: ArticleId,
    pub count: u64,
}

/// The value of the articles' revision counter after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision(pub u64);

/// What storing a canned reply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
    /// A new shortcut would exceed the bound; nothing was stored.
    Full,
}

/// Durable storage for articles, deflections and canned replies. Implemented by every
/// [`SqlStore`]: [`crate::transcript::SqliteStore`] and [`crate::transcript::PostgresStore`].
///
/// # Errors
/// Every method fails with [`StoreError::Unavailable`] when the database cannot be reached or
/// refuses, and [`StoreError::Corrupt`] when a stored row does not parse.
#[async_trait::async_trait]
pub trait ContentStore: Send + Sync + 'static {
    /// The articles' revision counter: it changes whenever an article is created, updated or
    /// deleted, by any node.
    async fn kb_revision(&self) -> Result<Revision, StoreError>;

    /// Every article, with a revision read *before* them: the articles reflect at least that
    /// revision (perhaps more, which only causes one extra rebuild later).
    async fn all_articles(&self) -> Result<(Revision, Vec<Article>), StoreError>;

    async fn article(&self, id: ArticleId) -> Result<Option<Article>, StoreError>;

    /// Articles, most recently updated first, optionally of one language.
    async fn list_articles(
        &self,
        lang: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Article>, StoreError>;

    /// Stores a new article unless there are already `max_articles`; `None` then.
    async fn insert_article(
        &self,
        article: &Article,
        max_articles: u32,
    ) -> Result<Option<Revision>, StoreError>;

    /// Replaces an article's content and `updated_at` (its `created_at` is kept and returned in
    /// the stored article); `None` when there is no article with that id.
    async fn update_article(
        &self,
        article: &Article,
    ) -> Result<Option<(Revision, Article)>, StoreError>;

    /// `None` when there was no article with that id.
    async fn delete_article(&self, id: ArticleId) -> Result<Option<Revision>, StoreError>;

    /// Records a deflection if its article exists; returns whether it did.
    async fn insert_deflection(&self, deflection: &Deflection) -> Result<bool, StoreError>;

    /// Deflections with `from <= ts < to`, counted per UTC day, category and article, ordered
    /// by day, then category (none first), then article.
    async fn deflection_counts(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<DeflectionCount>, StoreError>;

    /// Each deflection with `from <= ts < to`: its time and category, oldest first. Reports
    /// group these by day in `desk.timezone`, which the UTC counts above cannot do.
    async fn deflection_times(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<(UnixMillis, Option<String>)>, StoreError>;

    /// Every canned reply, by shortcut.
    async fn canned_replies(&self) -> Result<Vec<CannedReply>, StoreError>;

    async fn canned_reply(&self, shortcut: &Shortcut) -> Result<Option<CannedReply>, StoreError>;

    /// Creates or replaces by shortcut; a new shortcut beyond `max_replies` is refused.
    async fn put_canned_reply(
        &self,
        reply: &CannedReply,
        max_replies: u32,
    ) -> Result<PutOutcome, StoreError>;

    /// Returns whether there was such a reply.
    async fn delete_canned_reply(&self, shortcut: &Shortcut) -> Result<bool, StoreError>;
}

pub(super) const ARTICLE_COLUMNS: &str = "id, title, body, lang, tags, url, created_at, updated_at";

/// A `kb_articles` row as the databases type it; checked into an [`Article`].
#[derive(sqlx::FromRow)]
pub(super) struct ArticleRow {
    id: String,
    title: String,
    body: String,
    lang: String,
    tags: String,
    url: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ArticleRow> for Article {
    type Error = StoreError;

    fn try_from(r: ArticleRow) -> Result<Self, StoreError> {
        Ok(Article {
            id: ArticleId::parse(&r.id).map_err(|e| corrupt("kb_articles.id", e))?,
            title: r.title,
            body: r.body,
            lang: r.lang,
            tags: serde_json::from_str(&r.tags).map_err(|e| corrupt("kb_articles.tags", e))?,
            url: r.url,
            created_at: to_u64("kb_articles.created_at", r.created_at)?,
            updated_at: to_u64("kb_articles.updated_at", r.updated_at)?,
        })
    }
}

/// The values of an [`Article`] that need converting before they are bound.
pub(super) struct ArticleValues {
    pub tags: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ArticleValues {
    pub fn of(a: &Article) -> Result<Self, StoreError> {
        Ok(Self {
            tags: serde_json::to_string(&a.tags)
                .map_err(|e| StoreError::Corrupt(format!("article {} tags: {e}", a.id)))?,
            created_at: to_i64("created_at", a.created_at)?,
            updated_at: to_i64("updated_at", a.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct CannedRow {
    shortcut: String,
    title: String,
    text: String,
    updated_at: i64,
}

impl TryFrom<CannedRow> for CannedReply {
    type Error = StoreError;

    fn try_from(r: CannedRow) -> Result<Self, StoreError> {
        Ok(CannedReply {
            shortcut: Shortcut::parse(&r.shortcut)
                .map_err(|e| corrupt("canned_replies.shortcut", e))?,
            title: r.title,
            text: r.text,
            updated_at: to_u64("canned_replies.updated_at", r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct CountRow {
    day: i64,
    category: Option<String>,
    article_id: String,
    n: i64,
}

impl TryFrom<CountRow> for DeflectionCount {
    type Error = StoreError;

    fn try_from(r: CountRow) -> Result<Self, StoreError> {
        let day = to_u64("kb_deflections.ts", r.day)?;
        Ok(DeflectionCount {
            day: utc_day(day),
            category: r.category,
            article_id: ArticleId::parse(&r.article_id)
                .map_err(|e| corrupt("kb_deflections.article_id", e))?,
            count: to_u64("count", r.n)?,
        })
    }
}

/// Milliseconds in a UTC day: both databases group deflections by `ts / DAY_MS`, the same
/// integer division in each, and the date is written here rather than by each SQL dialect.
pub(super) const DAY_MS: i64 = 86_400_000;

/// `YYYY-MM-DD` of the UTC day with this number (days since 1970-01-01).
fn utc_day(day: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(day.saturating_mul(86_400));
    humantime::format_rfc3339_seconds(at).to_string()[..10].to_string()
}

/// Bumps the revision. First in every article write: the statement takes SQLite's write lock,
/// and in PostgreSQL the row's lock, held to the commit; either way article writes take turns
/// and the bound checked after it is exact.
async fn bump_revision<DB>(conn: &mut DB::Connection) -> Result<Revision, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let revision: i64 =
        sqlx::query_scalar("UPDATE kb_revision SET revision = revision + 1 RETURNING revision")
            .fetch_one(conn)
            .await?;
    Ok(Revision(to_u64("kb_revision.revision", revision)?))
}

/// The content store of every transcript store: the same SQL on SQLite and PostgreSQL, on the
/// same database as the transcripts.
#[async_trait::async_trait]
impl<S> ContentStore for S
where
    S: SqlStore,
    for<'c> &'c mut <S::Db as Database>::Connection: Executor<'c, Database = S::Db>,
    for<'q> <S::Db as Database>::Arguments<'q>: IntoArguments<'q, S::Db>,
    for<'q> String: Encode<'q, S::Db> + Type<S::Db>,
    for<'q> &'q str: Encode<'q, S::Db> + Type<S::Db>,
    for<'q> Option<&'q str>: Encode<'q, S::Db> + Type<S::Db>,
    for<'q> i64: Encode<'q, S::Db> + Decode<'q, S::Db> + Type<S::Db>,
    for<'r> ArticleRow: FromRow<'r, <S::Db as Database>::Row>,
    for<'r> CannedRow: FromRow<'r, <S::Db as Database>::Row>,
    for<'r> CountRow: FromRow<'r, <S::Db as Database>::Row>,
    for<'r> Option<String>: Decode<'r, S::Db> + Type<S::Db>,
    usize: ColumnIndex<<S::Db as Database>::Row>,
{
    async fn kb_revision(&self) -> Result<Revision, StoreError> {
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM kb_revision")
            .fetch_one(self.pool())
            .await?;
        Ok(Revision(to_u64("kb_revision.revision", revision)?))
    }

    async fn all_articles(&self) -> Result<(Revision, Vec<Article>), StoreError> {
        let revision = self.kb_revision().await?;
        let sql = format!("SELECT {ARTICLE_COLUMNS} FROM kb_articles ORDER BY id");
        let rows: Vec<ArticleRow> = sqlx::query_as(&sql).fetch_all(self.pool()).await?;
        let articles = rows
            .into_iter()
            .map(Article::try_from)
            .collect::<Result<_, _>>()?;
        Ok((revision, articles))
    }

    async fn article(&self, id: ArticleId) -> Result<Option<Article>, StoreError> {
        let sql = format!("SELECT {ARTICLE_COLUMNS} FROM kb_articles WHERE id = $1");
        let row: Option<ArticleRow> = sqlx::query_as(&sql)
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.map(Article::try_from).transpose()
    }

    async fn list_articles(
        &self,
        lang: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Article>, StoreError> {
        // The cast gives PostgreSQL the parameter's type where nothing else would.
        let sql = format!(
            "SELECT {ARTICLE_COLUMNS} FROM kb_articles WHERE (CAST($1 AS TEXT) IS NULL OR lang = $1) \
             ORDER BY updated_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let rows: Vec<ArticleRow> = sqlx::query_as(&sql)
            .bind(lang)
            .bind(i64::from(limit))
            .bind(i64::from(offset))
            .fetch_all(self.pool())
            .await?;
        rows.into_iter().map(Article::try_from).collect()
    }

    async fn insert_article(
        &self,
        a: &Article,
        max_articles: u32,
    ) -> Result<Option<Revision>, StoreError> {
        let v = ArticleValues::of(a)?;
        let mut tx = self.pool().begin().await?;
        let revision = bump_revision::<S::Db>(&mut tx).await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM kb_articles")
            .fetch_one(&mut *tx)
            .await?;
        if count >= i64::from(max_articles) {
            // Dropping the transaction rolls the revision back too.
            return Ok(None);
        }
        sqlx::query(&format!(
            "INSERT INTO kb_articles ({ARTICLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(a.id.to_string())
        .bind(a.title.as_str())
        .bind(a.body.as_str())
        .bind(a.lang.as_str())
        .bind(v.tags)
        .bind(a.url.as_deref())
        .bind(v.created_at)
        .bind(v.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(revision))
    }

    async fn update_article(&self, a: &Article) -> Result<Option<(Revision, Article)>, StoreError> {
        let v = ArticleValues::of(a)?;
        let mut tx = self.pool().begin().await?;
        let revision = bump_revision::<S::Db>(&mut tx).await?;
        let created_at: Option<i64> = sqlx::query_scalar(
            "UPDATE kb_articles SET title = $1, body = $2, lang = $3, tags = $4, url = $5, \
             updated_at = $6 WHERE id = $7 RETURNING created_at",
        )
        .bind(a.title.as_str())
        .bind(a.body.as_str())
        .bind(a.lang.as_str())
        .bind(v.tags)
        .bind(a.url.as_deref())
        .bind(v.updated_at)
        .bind(a.id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(created_at) = created_at else {
            return Ok(None);
        };
        tx.commit().await?;
        let stored = Article {
            created_at: to_u64("kb_articles.created_at", created_at)?,
            ..a.clone()
        };
        Ok(Some((revision, stored)))
    }

    async fn delete_article(&self, id: ArticleId) -> Result<Option<Revision>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let revision = bump_revision::<S::Db>(&mut tx).await?;
        let deleted = sqlx::query("DELETE FROM kb_articles WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if S::rows_affected(&deleted) == 0 {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(revision))
    }

    async fn insert_deflection(&self, d: &Deflection) -> Result<bool, StoreError> {
        // One statement: the article's existence and the insert cannot be split by a delete.
        let inserted = sqlx::query(
            "INSERT INTO kb_deflections (article_id, visitor_id, category, ts) \
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM kb_articles WHERE id = $1)",
        )
        .bind(d.article_id.to_string())
        .bind(d.visitor_id.as_ref().map(VisitorId::as_str))
        .bind(d.category.as_ref().map(Category::as_str))
        .bind(to_i64("ts", d.ts)?)
        .execute(self.pool())
        .await?;
        Ok(S::rows_affected(&inserted) == 1)
    }

    async fn deflection_counts(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<DeflectionCount>, StoreError> {
        let rows: Vec<CountRow> = sqlx::query_as(
            "SELECT ts / $1 AS day, category, article_id, COUNT(*) AS n FROM kb_deflections \
             WHERE ts >= $2 AND ts < $3 GROUP BY 1, 2, 3 ORDER BY 1, 2 NULLS FIRST, 3",
        )
        .bind(DAY_MS)
        .bind(saturating_i64(from))
        .bind(saturating_i64(to))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(DeflectionCount::try_from).collect()
    }

    async fn deflection_times(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<(UnixMillis, Option<String>)>, StoreError> {
        let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
            "SELECT ts, category FROM kb_deflections WHERE ts >= $1 AND ts < $2 ORDER BY ts",
        )
        .bind(saturating_i64(from))
        .bind(saturating_i64(to))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(ts, c)| Ok((to_u64("kb_deflections.ts", ts)?, c)))
            .collect()
    }

    async fn canned_replies(&self) -> Result<Vec<CannedReply>, StoreError> {
        let rows: Vec<CannedRow> = sqlx::query_as(
            "SELECT shortcut, title, text, updated_at FROM canned_replies ORDER BY shortcut",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(CannedReply::try_from).collect()
    }

    async fn canned_reply(&self, shortcut: &Shortcut) -> Result<Option<CannedReply>, StoreError> {
        let row: Option<CannedRow> = sqlx::query_as(
            "SELECT shortcut, title, text, updated_at FROM canned_replies WHERE shortcut = $1",
        )
        .bind(shortcut.as_str())
        .fetch_optional(self.pool())
        .await?;
        row.map(CannedReply::try_from).transpose()
    }

    async fn put_canned_reply(
        &self,
        r: &CannedReply,
        max_replies: u32,
    ) -> Result<PutOutcome, StoreError> {
        let updated_at = to_i64("updated_at", r.updated_at)?;
        let mut tx = self.pool().begin().await?;
        if let Some(lock) = S::CANNED_WRITE_LOCK {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        // Written first, so that in SQLite the transaction holds the write lock before it counts.
        let updated = sqlx::query(
            "UPDATE canned_replies SET title = $1, text = $2, updated_at = $3 \
             WHERE shortcut = $4",
        )
        .bind(r.title.as_str())
        .bind(r.text.as_str())
        .bind(updated_at)
        .bind(r.shortcut.as_str())
        .execute(&mut *tx)
        .await?;
        let replaced = S::rows_affected(&updated) == 1;
        if !replaced {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM canned_replies")
                .fetch_one(&mut *tx)
                .await?;
            if count >= i64::from(max_replies) {
                return Ok(PutOutcome::Full);
            }
            sqlx::query(
                "INSERT INTO canned_replies (shortcut, title, text, updated_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(r.shortcut.as_str())
            .bind(r.title.as_str())
            .bind(r.text.as_str())
            .bind(updated_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(if replaced {
            PutOutcome::Replaced
        } else {
            PutOutcome::Created
        })
    }

    async fn delete_canned_reply(&self, shortcut: &Shortcut) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM canned_replies WHERE shortcut = $1")
            .bind(shortcut.as_str())
            .execute(self.pool())
            .await?;
        Ok(S::rows_affected(&deleted) == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(utc_day(0), "1970-01-01");
        // 2024-02-29 00:00:00 UTC is 1709164800 s.
        assert_eq!(utc_day(1_709_164_800 / 86_400), "2024-02-29");
    }
}
