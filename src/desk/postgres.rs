//! The [`ContentStore`] in PostgreSQL, shared by several nodes: the same tables and semantics
//! as the SQLite store (migrations/postgres), and the same row types and checks.
//!
//! Concurrency between nodes: every article write first bumps the `kb_revision` row, whose lock
//! is then held to the commit, so article writes are serialised and the article bound is exact;
//! a new canned reply takes a self-exclusive table lock before counting, for the same reason.
//! Reads take no lock.

use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use super::canned::Shortcut;
use super::store::{
    saturating_i64, to_i64, to_u64, Article, ArticleId, ArticleRow, ArticleValues, CannedReply,
    CannedRow, ContentStore, CountRow, Deflection, DeflectionCount, PutOutcome, Revision,
    ARTICLE_COLUMNS, DAY_MS,
};
use crate::domain::{Category, UnixMillis, VisitorId};
use crate::transcript::{PostgresStore, StoreError};

async fn bump_revision(tx: &mut Transaction<'_, Postgres>) -> Result<Revision, StoreError> {
    let revision: i64 =
        sqlx::query_scalar("UPDATE kb_revision SET revision = revision + 1 RETURNING revision")
            .fetch_one(&mut **tx)
            .await?;
    Ok(Revision(to_u64("kb_revision.revision", revision)?))
}

fn pool(store: &PostgresStore) -> &PgPool {
    store.pool()
}

#[async_trait::async_trait]
impl ContentStore for PostgresStore {
    async fn kb_revision(&self) -> Result<Revision, StoreError> {
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM kb_revision")
            .fetch_one(pool(self))
            .await?;
        Ok(Revision(to_u64("kb_revision.revision", revision)?))
    }

    async fn all_articles(&self) -> Result<(Revision, Vec<Article>), StoreError> {
        let revision = self.kb_revision().await?;
        let sql = format!("SELECT {ARTICLE_COLUMNS} FROM kb_articles ORDER BY id");
        let rows: Vec<ArticleRow> = sqlx::query_as(&sql).fetch_all(pool(self)).await?;
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
            .fetch_optional(pool(self))
            .await?;
        row.map(Article::try_from).transpose()
    }

    async fn list_articles(
        &self,
        lang: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Article>, StoreError> {
        let sql = format!(
            "SELECT {ARTICLE_COLUMNS} FROM kb_articles WHERE ($1::TEXT IS NULL OR lang = $1) \
             ORDER BY updated_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let rows: Vec<ArticleRow> = sqlx::query_as(&sql)
            .bind(lang)
            .bind(i64::from(limit))
            .bind(i64::from(offset))
            .fetch_all(pool(self))
            .await?;
        rows.into_iter().map(Article::try_from).collect()
    }

    async fn insert_article(
        &self,
        a: &Article,
        max_articles: u32,
    ) -> Result<Option<Revision>, StoreError> {
        let v = ArticleValues::of(a)?;
        let mut tx = pool(self).begin().await?;
        let revision = bump_revision(&mut tx).await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM kb_articles")
            .fetch_one(&mut *tx)
            .await?;
        if count >= i64::from(max_articles) {
            return Ok(None);
        }
        sqlx::query(&format!(
            "INSERT INTO kb_articles ({ARTICLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(a.id.to_string())
        .bind(&a.title)
        .bind(&a.body)
        .bind(&a.lang)
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
        let mut tx = pool(self).begin().await?;
        let revision = bump_revision(&mut tx).await?;
        let created_at: Option<i64> = sqlx::query_scalar(
            "UPDATE kb_articles SET title = $1, body = $2, lang = $3, tags = $4, url = $5, \
             updated_at = $6 WHERE id = $7 RETURNING created_at",
        )
        .bind(&a.title)
        .bind(&a.body)
        .bind(&a.lang)
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
        let mut tx = pool(self).begin().await?;
        let revision = bump_revision(&mut tx).await?;
        let deleted = sqlx::query("DELETE FROM kb_articles WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(revision))
    }

    async fn insert_deflection(&self, d: &Deflection) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO kb_deflections (article_id, visitor_id, category, ts) \
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM kb_articles WHERE id = $1)",
        )
        .bind(d.article_id.to_string())
        .bind(d.visitor_id.as_ref().map(VisitorId::as_str))
        .bind(d.category.as_ref().map(Category::as_str))
        .bind(to_i64("ts", d.ts)?)
        .execute(pool(self))
        .await?
        .rows_affected();
        Ok(inserted == 1)
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
        .fetch_all(pool(self))
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
        .fetch_all(pool(self))
        .await?;
        rows.into_iter()
            .map(|(ts, c)| Ok((to_u64("kb_deflections.ts", ts)?, c)))
            .collect()
    }

    async fn canned_replies(&self) -> Result<Vec<CannedReply>, StoreError> {
        let rows: Vec<CannedRow> = sqlx::query_as(
            "SELECT shortcut, title, text, updated_at FROM canned_replies ORDER BY shortcut",
        )
        .fetch_all(pool(self))
        .await?;
        rows.into_iter().map(CannedReply::try_from).collect()
    }

    async fn canned_reply(&self, shortcut: &Shortcut) -> Result<Option<CannedReply>, StoreError> {
        let row: Option<CannedRow> = sqlx::query_as(
            "SELECT shortcut, title, text, updated_at FROM canned_replies WHERE shortcut = $1",
        )
        .bind(shortcut.as_str())
        .fetch_optional(pool(self))
        .await?;
        row.map(CannedReply::try_from).transpose()
    }

    async fn put_canned_reply(
        &self,
        r: &CannedReply,
        max_replies: u32,
    ) -> Result<PutOutcome, StoreError> {
        let updated_at = to_i64("updated_at", r.updated_at)?;
        let mut tx = pool(self).begin().await?;
        // Conflicts with itself, not with reads: writers of canned replies take turns.
        sqlx::query("LOCK TABLE canned_replies IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let replaced = sqlx::query(
            "UPDATE canned_replies SET title = $1, text = $2, updated_at = $3 \
             WHERE shortcut = $4",
        )
        .bind(&r.title)
        .bind(&r.text)
        .bind(updated_at)
        .bind(r.shortcut.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
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
            .bind(&r.title)
            .bind(&r.text)
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
            .execute(pool(self))
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }
}
