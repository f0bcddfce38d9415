//! The knowledge base: articles in the store, and a full-text index of them in RAM (tantivy)
//! that suggests articles to visitors before they are queued, in English and Chinese.
//!
//! Searching: a visitor's text is never parsed as query syntax. It goes through the same
//! analyzer as the articles ([`super::analyzer`]: words, CJK bigrams, English stemming) and each
//! resulting term becomes an optional clause over the title (boosted [`TITLE_BOOST`] times, with
//! the tags) and the body, so quotes, colons, `AND`, `-` or `*` typed by a visitor are only
//! punctuation or words, and the articles sharing the most (and the rarest) terms come first
//! (BM25). A query with no term, or no match, finds nothing; neither is an error.
//!
//! Keeping the index true: it is built from the store at start-up, and every create, update and
//! delete made through [`KnowledgeBase`] writes the store first and then the index, so this node
//! searches its own writes at once. With several nodes sharing PostgreSQL, each node polls the
//! store's revision counter (one row, bumped by every article write) every `kb.refresh_interval`
//! and rebuilds its index from the store when it differs from the revision the index reflects.
//! So a node misses another node's change for at most one interval plus the rebuild (well under
//! a second for a few thousand articles): until then it may still suggest an article another node
//! deleted (whose deflection then gets 404) or an edited article's old text, or not yet suggest a
//! new one. While the store is unreachable the node keeps searching its last index.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};
use tokio_util::sync::CancellationToken;

use super::analyzer;
use super::store::{Article, ArticleId, ContentStore, Deflection, DeflectionCount, Revision};
use super::{check_text, DeskError};
use crate::domain::{Category, UnixMillis, VisitorId};
use crate::metrics::{CategoryLabel, Metrics};

/// Articles at most; creating one more is refused with 409.
pub const MAX_ARTICLES: u32 = 10_000;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_BODY_CHARS: usize = 20_000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 40;
pub const MAX_URL_CHARS: usize = 2_000;
pub const MAX_LANG_CHARS: usize = 16;
/// Characters of a query that are searched; REST refuses longer ones, [`KnowledgeBase::search`]
/// reads only this many (so a long first message can be passed as it is).
pub const MAX_QUERY_CHARS: usize = 200;
/// Hits per search at most.
pub const MAX_HITS: usize = 20;
/// Characters of body text in a hit's snippet, about two lines of the widget.
pub const SNIPPET_CHARS: usize = 160;
/// A term found in the title (or a tag) counts this many times one found in the body.
pub const TITLE_BOOST: f32 = 3.0;
/// tantivy's smallest indexing budget; the arena grows to it only while indexing.
const WRITER_MEMORY_BYTES: usize = 15_000_000;

/// An article as an admin writes it, before it is checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArticleDraft {
    pub title: String,
    pub body: String,
    pub lang: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub id: ArticleId,
    pub title: String,
    /// Plain text: a short excerpt of the body around the matching words (or its beginning).
    pub snippet: String,
    pub url: Option<String>,
    pub lang: String,
    /// BM25, higher is better; only meaningful relative to the other hits of the same search.
    pub score: f32,
}

/// The knowledge base: a cheap handle, shared by the REST API and the sockets.
#[derive(Clone)]
pub struct KnowledgeBase {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ContentStore>,
    index: Index,
    /// Reloaded by hand after each commit, so a search sees a write as soon as it returns.
    reader: IndexReader,
    fields: Fields,
    /// The one writer, and what the index reflects, changed together under this lock.
    writer: Mutex<Writer>,
    metrics: Arc<Metrics>,
}

struct Writer {
    writer: IndexWriter,
    /// The store revision the index reflects entirely (it may hold newer local writes too).
    indexed: Revision,
    /// The newest revision this node wrote: a rebuild from an older snapshot would lose it.
    newest_local: Revision,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    lang: Field,
    /// The primary language subtag ("zh" of "zh-tw"), for the language preference.
    lang_primary: Field,
    title: Field,
    url: Field,
    /// Title and tags, and the body, analysed with the English (and CJK) analyzer: articles in
    /// English and Chinese.
    title_en: Field,
    body_en: Field,
    /// The same with the plain analyzer: articles in other languages.
    title_plain: Field,
    body_plain: Field,
}

impl Fields {
    fn text_fields(&self, lang: &str) -> (Field, Field) {
        if uses_english_analyzer(lang) {
            (self.title_en, self.body_en)
        } else {
            (self.title_plain, self.body_plain)
        }
    }
}

/// English, and Chinese, whose articles mix in English words; see [`super::analyzer`].
fn uses_english_analyzer(lang: &str) -> bool {
    matches!(primary(lang), "en" | "zh")
}

fn primary(lang: &str) -> &str {
    lang.split('-').next().unwrap_or(lang)
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let analysed = |analyzer: &str, stored: bool| {
        let options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        if stored {
            options.set_stored()
        } else {
            options
        }
    };
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        lang: b.add_text_field("lang", STRING | STORED),
        lang_primary: b.add_text_field("lang_primary", STRING),
        title: b.add_text_field("title", STORED),
        url: b.add_text_field("url", STORED),
        title_en: b.add_text_field("title_en", analysed(analyzer::ENGLISH, false)),
        body_en: b.add_text_field("body_en", analysed(analyzer::ENGLISH, true)),
        title_plain: b.add_text_field("title_plain", analysed(analyzer::PLAIN, false)),
        body_plain: b.add_text_field("body_plain", analysed(analyzer::PLAIN, true)),
    };
    (b.build(), fields)
}

/// Checks and normalises an admin's article.
///
/// # Errors
/// [`DeskError::Invalid`] naming the field and the bound.
fn check_draft(draft: ArticleDraft) -> Result<ArticleDraft, DeskError> {
    let title = draft.title.trim().to_string();
    check_text("title", &title, 1, MAX_TITLE_CHARS, false)?;
    if draft.body.trim().is_empty() {
        return Err(DeskError::Invalid("`body` must not be empty".into()));
    }
    check_text("body", &draft.body, 1, MAX_BODY_CHARS, true)?;
    let lang = parse_lang(&draft.lang)?;
    if draft.tags.len() > MAX_TAGS {
        return Err(DeskError::Invalid(format!(
            "at most {MAX_TAGS} `tags`, got {}",
            draft.tags.len()
        )));
    }
    let mut tags: Vec<String> = Vec::with_capacity(draft.tags.len());
    for tag in &draft.tags {
        let tag = tag.trim();
        check_text("tags[]", tag, 1, MAX_TAG_CHARS, false)?;
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
    }
    let url = match draft.url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => Some(check_url(url)?),
    };
    Ok(ArticleDraft {
        title,
        body: draft.body,
        lang,
        tags,
        url,
    })
}

/// A language tag such as `en`, `zh` or `zh-TW`, returned in lower case.
///
/// # Errors
/// [`DeskError::Invalid`] when it is not 2 or 3 letters, optionally followed by `-` subtags of
/// letters and digits, 16 characters at most.
pub fn parse_lang(lang: &str) -> Result<String, DeskError> {
    let lang = lang.trim().to_ascii_lowercase();
    let mut parts = lang.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_lowercase()));
    let rest_ok = parts.all(|p| {
        (1..=8).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if !primary_ok || !rest_ok || lang.len() > MAX_LANG_CHARS {
        return Err(DeskError::Invalid(format!(
            "`lang` must be a language tag such as \"en\", \"zh\" or \"zh-tw\", got {lang:?}"
        )));
    }
    Ok(lang)
}

/// Only http and https: the widget shows the URL as a link, and `javascript:` is not one.
fn check_url(url: &str) -> Result<String, DeskError> {
    let lower = url.to_ascii_lowercase();
    let scheme_ok = lower.starts_with("https://") || lower.starts_with("http://");
    let host_ok = url
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty());
    if !scheme_ok || !host_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DeskError::Invalid(
            "`url` must be an http:// or https:// address without spaces".into(),
        ));
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(DeskError::Invalid(format!(
            "`url` must be at most {MAX_URL_CHARS} characters"
        )));
    }
    Ok(url.to_string())
}

/// A search index operation, applied under the writer lock.
enum Change {
    Upsert(Article),
    Delete(ArticleId),
    Replace(Vec<Article>),
}

impl Inner {
    fn document(&self, a: &Article) -> TantivyDocument {
        let f = &self.fields;
        let (title_field, body_field) = f.text_fields(&a.lang);
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, a.id.to_string());
        doc.add_text(f.lang, &a.lang);
        doc.add_text(f.lang_primary, primary(&a.lang));
        doc.add_text(f.title, &a.title);
        if let Some(url) = &a.url {
            doc.add_text(f.url, url);
        }
        // Tags are curated keywords: searched with the title's weight.
        doc.add_text(title_field, &a.title);
        for tag in &a.tags {
            doc.add_text(title_field, tag);
        }
        doc.add_text(body_field, &a.body);
        doc
    }

    /// Runs on a blocking thread: indexing and committing are CPU work.
    fn apply(&self, change: Change, revision: Revision, local: bool) -> Result<bool, DeskError> {
        let mut w = self.writer.lock().expect("kb writer lock");
        if let Change::Replace(_) = change {
            // A snapshot older than what the index already holds (another refresh got there
            // first, or this node wrote since the snapshot was read) would lose writes: skip it;
            // the next refresh reads again.
            if revision <= w.indexed || revision < w.newest_local {
                return Ok(false);
            }
        }
        let id_term = |id: ArticleId| Term::from_field_text(self.fields.id, &id.to_string());
        match change {
            Change::Upsert(article) => {
                w.writer.delete_term(id_term(article.id));
                w.writer.add_document(self.document(&article))?;
            }
            Change::Delete(id) => {
                w.writer.delete_term(id_term(id));
            }
            Change::Replace(articles) => {
                w.writer.delete_all_documents()?;
                for article in &articles {
                    w.writer.add_document(self.document(article))?;
                }
            }
        }
        w.writer.commit()?;
        self.reader.reload()?;
        if local {
            // The index reflects the store up to `revision` only if no other node's write came
            // between; otherwise the next refresh rebuilds.
            if revision.0 == w.indexed.0 + 1 {
                w.indexed = revision;
            }
            w.newest_local = w.newest_local.max(revision);
        } else {
            w.indexed = revision;
        }
        Ok(true)
    }

    /// The analysed query: an optional clause per distinct term, over title and body, in both
    /// analyzers' fields. `None` when the text has no searchable term.
    fn text_query(&self, text: &str) -> Option<Box<dyn Query>> {
        let f = &self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (name, title, body) in [
            (analyzer::ENGLISH, f.title_en, f.body_en),
            (analyzer::PLAIN, f.title_plain, f.body_plain),
        ] {
            let mut analyzer = self.index.tokenizers().get(name)?;
            let mut terms = analyzer::terms(&mut analyzer, text);
            terms.sort();
            terms.dedup();
            for term in terms {
                let in_title = TermQuery::new(
                    Term::from_field_text(title, &term),
                    IndexRecordOption::WithFreqs,
                );
                let in_body = TermQuery::new(
                    Term::from_field_text(body, &term),
                    IndexRecordOption::WithFreqs,
                );
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(in_title), TITLE_BOOST)),
                ));
                clauses.push((Occur::Should, Box::new(in_body)));
            }
        }
        (!clauses.is_empty()).then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn Query>)
    }

    fn search(
        &self,
        text: &str,
        lang: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SearchHit>, DeskError> {
        let limit = limit.min(MAX_HITS);
        let text: String = text.chars().take(MAX_QUERY_CHARS).collect();
        let Some(query) = self.text_query(&text) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let mut found = Vec::new();
        match lang.map(primary) {
            None => found = searcher.search(&query, &TopDocs::with_limit(limit))?,
            Some(preferred) => {
                // Articles in the visitor's language first, then the others.
                let in_lang = || -> Box<dyn Query> {
                    Box::new(TermQuery::new(
                        Term::from_field_text(self.fields.lang_primary, preferred),
                        IndexRecordOption::Basic,
                    ))
                };
                for occur in [Occur::Must, Occur::MustNot] {
                    let remaining = limit - found.len();
                    if remaining == 0 {
                        break;
                    }
                    let q = BooleanQuery::new(vec![
                        (Occur::Must, query.box_clone()),
                        (occur, in_lang()),
                    ]);
                    found.extend(searcher.search(&q, &TopDocs::with_limit(remaining))?);
                }
            }
        }
        let mut snippets = Snippets::new(&searcher, &*query, self.fields);
        let mut hits = Vec::with_capacity(found.len());
        for (score, address) in found {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text_of = |field: Field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            let (Some(id), Some(title), Some(lang)) = (
                text_of(self.fields.id).and_then(|id| ArticleId::parse(&id).ok()),
                text_of(self.fields.title),
                text_of(self.fields.lang),
            ) else {
                continue;
            };
            let body_field = self.fields.text_fields(&lang).1;
            let body = text_of(body_field).unwrap_or_default();
            hits.push(SearchHit {
                id,
                title,
                snippet: snippets.of(body_field, &body)?,
                url: text_of(self.fields.url),
                lang,
                score,
            });
        }
        Ok(hits)
    }
}

/// Snippet generators for the two body fields, made when first needed.
struct Snippets<'a> {
    searcher: &'a Searcher,
    query: &'a dyn Query,
    fields: Fields,
    english: Option<SnippetGenerator>,
    plain: Option<SnippetGenerator>,
}

impl<'a> Snippets<'a> {
    fn new(searcher: &'a Searcher, query: &'a dyn Query, fields: Fields) -> Self {
        Self {
            searcher,
            query,
            fields,
            english: None,
            plain: None,
        }
    }

    fn of(&mut self, field: Field, body: &str) -> Result<String, DeskError> {
        let slot = if field == self.fields.body_en {
            &mut self.english
        } else {
            &mut self.plain
        };
        let generator = match slot {
            Some(g) => g,
            None => {
                let mut g = SnippetGenerator::create(self.searcher, self.query, field)?;
                g.set_max_num_chars(SNIPPET_CHARS);
                slot.insert(g)
            }
        };
        let snippet = generator.snippet(body);
        // No body term matched (only the title did): the beginning of the body instead.
        let fragment = if snippet.fragment().trim().is_empty() {
            body.chars().take(SNIPPET_CHARS).collect::<String>()
        } else {
            snippet.fragment().to_string()
        };
        Ok(fragment.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

impl KnowledgeBase {
    /// Builds the index from every article in the store.
    ///
    /// # Errors
    /// [`DeskError::Store`] when the articles cannot be read, [`DeskError::Index`] when the
    /// index cannot be built.
    pub async fn open(
        store: Arc<dyn ContentStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, DeskError> {
        let (schema, fields) = schema();
        let index = Index::create_in_ram(schema);
        index
            .tokenizers()
            .register(analyzer::ENGLISH, analyzer::english());
        index
            .tokenizers()
            .register(analyzer::PLAIN, analyzer::plain());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
        let kb = Self {
            inner: Arc::new(Inner {
                store,
                index,
                reader,
                fields,
                writer: Mutex::new(Writer {
                    writer,
                    indexed: Revision(0),
                    newest_local: Revision(0),
                }),
                metrics,
            }),
        };
        kb.rebuild().await?;
        Ok(kb)
    }

    /// Articles matching `query`, best first, at most `limit` (itself at most [`MAX_HITS`]).
    /// With `lang` (`"zh"`, `"zh-tw"`…), articles in that language (by primary subtag) come
    /// before the others. Only the first [`MAX_QUERY_CHARS`] characters of `query` are read,
    /// as plain words: no query syntax.
    ///
    /// # Errors
    /// [`DeskError::Index`] when the index cannot be read (not for any query text).
    pub fn search(
        &self,
        query: &str,
        lang: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SearchHit>, DeskError> {
        self.inner.metrics.kb_searches.inc();
        self.inner.search(query, lang, limit)
    }

    /// # Errors
    /// [`DeskError::Store`] when the store cannot be read.
    pub async fn get(&self, id: ArticleId) -> Result<Option<Article>, DeskError> {
        Ok(self.inner.store.article(id).await?)
    }

    /// Articles, most recently updated first.
    ///
    /// # Errors
    /// [`DeskError::Invalid`] for a malformed `lang`, [`DeskError::Store`] when the store
    /// cannot be read.
    pub async fn list(
        &self,
        lang: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Article>, DeskError> {
        let lang = lang.map(parse_lang).transpose()?;
        Ok(self
            .inner
            .store
            .list_articles(lang.as_deref(), limit, offset)
            .await?)
    }

    /// Stores a new article and indexes it.
    ///
    /// # Errors
    /// [`DeskError::Invalid`] for a field out of bounds, [`DeskError::Full`] beyond
    /// [`MAX_ARTICLES`], [`DeskError::Store`] or [`DeskError::Index`] when either fails.
    pub async fn create(&self, draft: ArticleDraft, now: UnixMillis) -> Result<Article, DeskError> {
        let d = check_draft(draft)?;
        let article = Article {
            id: ArticleId::new(),
            title: d.title,
            body: d.body,
            lang: d.lang,
            tags: d.tags,
            url: d.url,
            created_at: now,
            updated_at: now,
        };
        let Some(revision) = self
            .inner
            .store
            .insert_article(&article, MAX_ARTICLES)
            .await?
        else {
            return Err(DeskError::Full(format!(
                "there are already {MAX_ARTICLES} articles, the most allowed; delete one first"
            )));
        };
        self.apply(Change::Upsert(article.clone()), revision, true)
            .await?;
        Ok(article)
    }

    /// Replaces an article's content; `None` when there is no such article.
    ///
    /// # Errors
    /// As for [`KnowledgeBase::create`], without the bound.
    pub async fn update(
        &self,
        id: ArticleId,
        draft: ArticleDraft,
        now: UnixMillis,
    ) -> Result<Option<Article>, DeskError> {
        let d = check_draft(draft)?;
        let article = Article {
            id,
            title: d.title,
            body: d.body,
            lang: d.lang,
            tags: d.tags,
            url: d.url,
            // Kept from the stored article by the store.
            created_at: now,
            updated_at: now,
        };
        let Some((revision, stored)) = self.inner.store.update_article(&article).await? else {
            return Ok(None);
        };
        self.apply(Change::Upsert(stored.clone()), revision, true)
            .await?;
        Ok(Some(stored))
    }

    /// Deletes an article; returns whether there was one. Its deflections stay counted.
    ///
    /// # Errors
    /// [`DeskError::Store`] or [`DeskError::Index`] when either fails.
    pub async fn delete(&self, id: ArticleId) -> Result<bool, DeskError> {
        let Some(revision) = self.inner.store.delete_article(id).await? else {
            return Ok(false);
        };
        self.apply(Change::Delete(id), revision, true).await?;
        Ok(true)
    }

    /// Rebuilds the index if the stored articles changed since it was built (another node
    /// wrote); returns whether it did.
    ///
    /// # Errors
    /// [`DeskError::Store`] when the store cannot be read; the index is then left as it was.
    pub async fn refresh(&self) -> Result<bool, DeskError> {
        let current = self.inner.store.kb_revision().await?;
        if current == self.indexed_revision() {
            return Ok(false);
        }
        self.rebuild().await
    }

    /// The store revision the index reflects.
    pub fn indexed_revision(&self) -> Revision {
        self.inner.writer.lock().expect("kb writer lock").indexed
    }

    async fn rebuild(&self) -> Result<bool, DeskError> {
        let (revision, articles) = self.inner.store.all_articles().await?;
        self.apply(Change::Replace(articles), revision, false).await
    }

    async fn apply(
        &self,
        change: Change,
        revision: Revision,
        local: bool,
    ) -> Result<bool, DeskError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.apply(change, revision, local))
            .await
            .map_err(|e| DeskError::Unexpected(anyhow::anyhow!("indexing task failed: {e}")))?
    }

    /// Calls [`KnowledgeBase::refresh`] every `every` until `stop`; a failure is logged when it
    /// starts and when it ends, not at every tick.
    pub async fn keep_fresh(self, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.refresh().await {
                Ok(rebuilt) => {
                    if failing {
                        tracing::info!("knowledge base refresh works again");
                        failing = false;
                    }
                    if rebuilt {
                        tracing::debug!(
                            revision = self.indexed_revision().0,
                            "knowledge base reindexed"
                        );
                    }
                }
                Err(err) if !failing => {
                    tracing::warn!(error = %err, "knowledge base refresh failed; searching the last index");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Records that `article` answered a visitor's question, who then did not ask a person.
    ///
    /// # Errors
    /// [`DeskError::NotFound`] when there is no such article, [`DeskError::Store`] when the
    /// store fails.
    pub async fn record_deflection(
        &self,
        article: ArticleId,
        visitor: Option<VisitorId>,
        category: Option<Category>,
        ts: UnixMillis,
    ) -> Result<(), DeskError> {
        let label = category
            .as_ref()
            .map_or_else(|| "none".to_string(), |c| c.as_str().to_string());
        let deflection = Deflection {
            article_id: article,
            visitor_id: visitor,
            category,
            ts,
        };
        if !self.inner.store.insert_deflection(&deflection).await? {
            return Err(DeskError::NotFound);
        }
        self.inner
            .metrics
            .kb_deflections
            .get_or_create(&CategoryLabel { category: label })
            .inc();
        Ok(())
    }

    /// Deflections with `from <= ts < to` per UTC day, category and article.
    ///
    /// # Errors
    /// [`DeskError::Store`] when the store cannot be read.
    pub async fn deflections(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<DeflectionCount>, DeskError> {
        Ok(self.inner.store.deflection_counts(from, to).await?)
    }

    /// Each deflection's time and category in `[from, to)`, for reports by local day.
    ///
    /// # Errors
    /// [`DeskError::Store`] when the store cannot be read.
    pub async fn deflection_times(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<(UnixMillis, Option<String>)>, DeskError> {
        Ok(self.inner.store.deflection_times(from, to).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::SqliteStore;
    use tempfile::TempDir;

    async fn open_temp() -> (TempDir, Arc<SqliteStore>, KnowledgeBase) {
        let dir = TempDir::new().unwrap();
        let url = format!("sqlite:{}", dir.path().join("parley.db").display());
        let store = Arc::new(
            SqliteStore::open(&url, Duration::from_secs(5))
                .await
                .unwrap(),
        );
        let kb = KnowledgeBase::open(store.clone(), Arc::new(Metrics::new()))
            .await
            .unwrap();
        (dir, store, kb)
    }

    fn draft(title: &str, body: &str, lang: &str) -> ArticleDraft {
        ArticleDraft {
            title: title.into(),
            body: body.into(),
            lang: lang.into(),
            tags: Vec::new(),
            url: None,
        }
    }

    fn titles(hits: &[SearchHit]) -> Vec<&str> {
        hits.iter().map(|h| h.title.as_str()).collect()
    }

    #[tokio::test]
    async fn chinese_queries_find_chinese_articles() {
        let (_dir, _store, kb) = open_temp().await;
        kb.create(
            draft(
                "如何查询转账状态",
                "打开“资产”页面，点击对应的转账记录即可查看状态。",
                "zh",
            ),
            1,
        )
        .await
        .unwrap();
        kb.create(
            draft(
                "忘记密码怎么办",
                "在登录页点击“忘记密码”，通过邮箱验证码重置。",
                "zh",
            ),
            2,
        )
        .await
        .unwrap();
        kb.create(
            draft(
                "How to back up your wallet",
                "Write down your recovery phrase.",
                "en",
            ),
            3,
        )
        .await
        .unwrap();
        assert_eq!(
            titles(&kb.search("转账", None, 5).unwrap()),
            ["如何查询转账状态"]
        );
        assert_eq!(
            titles(&kb.search("忘记密码", None, 5).unwrap())[0],
            "忘记密码怎么办"
        );
        assert_eq!(
            titles(&kb.search("我的密码忘了", None, 5).unwrap())[0],
            "忘记密码怎么办"
        );
    }

    #[tokio::test]
    async fn a_title_match_outranks_a_body_match() {
        let (_dir, _store, kb) = open_temp().await;
        kb.create(
            draft(
                "Network fees",
                "Fees depend on the network. A transfer costs more when busy.",
                "en",
            ),
            1,
        )
        .await
        .unwrap();
        kb.create(draft("Transfer limits", "Daily limits apply.", "en"), 2)
            .await
            .unwrap();
        assert_eq!(
            titles(&kb.search("transfer", None, 5).unwrap()),
            ["Transfer limits", "Network fees"]
        );
    }

    #[tokio::test]
    async fn the_preferred_language_comes_first() {
        let (_dir, _store, kb) = open_temp().await;
        kb.create(
            draft("USDT transfer", "Send USDT from the wallet.", "en"),
            1,
        )
        .await
        .unwrap();
        kb.create(draft("USDT 转账", "在钱包里发送 USDT。", "zh-CN"), 2)
            .await
            .unwrap();
        assert_eq!(
            titles(&kb.search("usdt", Some("zh"), 5).unwrap())[0],
            "USDT 转账"
        );
        assert_eq!(
            titles(&kb.search("usdt", Some("en"), 5).unwrap())[0],
            "USDT transfer"
        );
        assert_eq!(kb.search("usdt", Some("zh"), 1).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn snippets_are_plain_text_near_the_match_or_the_start() {
        let (_dir, _store, kb) = open_temp().await;
        let filler = "Lorem ipsum dolor sit amet. ".repeat(20);
        kb.create(
            draft(
                "Withdrawals",
                &format!("{filler}\n\nA pending   withdrawal clears in an hour."),
                "en",
            ),
            1,
        )
        .await
        .unwrap();
        let hit = &kb.search("pending", None, 1).unwrap()[0];
        assert!(
            hit.snippet.contains("pending withdrawal"),
            "{}",
            hit.snippet
        );
        assert!(
            hit.snippet.chars().count() <= SNIPPET_CHARS,
            "{}",
            hit.snippet
        );
        assert!(!hit.snippet.contains('<'), "{}", hit.snippet);
        let hit = &kb.search("withdrawals", None, 1).unwrap()[0];
        assert!(hit.snippet.starts_with("Lorem ipsum"), "{}", hit.snippet);
    }

    #[tokio::test]
    async fn another_writers_change_is_seen_after_a_refresh() {
        let (_dir, store, kb) = open_temp().await;
        let other = KnowledgeBase::open(store.clone(), Arc::new(Metrics::new()))
            .await
            .unwrap();
        let article = other
            .create(draft("Staking rewards", "Rewards are paid daily.", "en"), 1)
            .await
            .unwrap();
        assert!(kb.search("staking", None, 5).unwrap().is_empty());
        assert!(kb.refresh().await.unwrap());
        assert_eq!(
            titles(&kb.search("staking", None, 5).unwrap()),
            ["Staking rewards"]
        );
        assert!(!kb.refresh().await.unwrap(), "nothing changed since");
        other.delete(article.id).await.unwrap();
        assert!(kb.refresh().await.unwrap());
        assert!(kb.search("staking", None, 5).unwrap().is_empty());
    }

    #[tokio::test]
    async fn own_writes_need_no_rebuild() {
        let (_dir, store, kb) = open_temp().await;
        kb.create(draft("Fees", "Network fees.", "en"), 1)
            .await
            .unwrap();
        assert_eq!(kb.indexed_revision(), store.kb_revision().await.unwrap());
        assert!(!kb.refresh().await.unwrap());
    }

    #[test]
    fn drafts_are_checked_and_normalised() {
        let ok = check_draft(ArticleDraft {
            title: "  Fees ".into(),
            body: "b".into(),
            lang: "ZH-tw".into(),
            tags: vec![" fee ".into(), "fee".into()],
            url: Some("https://help.example.com/fees".into()),
        })
        .unwrap();
        assert_eq!((ok.title.as_str(), ok.lang.as_str()), ("Fees", "zh-tw"));
        assert_eq!(ok.tags, ["fee"]);
        for (bad, field) in [
            (draft("", "b", "en"), "title"),
            (draft(&"t".repeat(201), "b", "en"), "title"),
            (draft("t", &"b".repeat(20_001), "en"), "body"),
            (draft("t", " ", "en"), "body"),
            (draft("t", "b", "english"), "lang"),
            (draft("t", "b\0", "en"), "body"),
            (
                ArticleDraft {
                    url: Some("javascript:alert(1)".into()),
                    ..draft("t", "b", "en")
                },
                "url",
            ),
        ] {
            let err = check_draft(bad).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        assert!(check_draft(draft("t", &"b".repeat(20_000), "en")).is_ok());
    }
}
