//! REST for the desk's content: the knowledge base and canned replies (docs/desk.md).
//!
//! Two audiences:
//! - the visitor widget, on any host site and without credentials: knowledge-base search and
//!   "this solved my question". These answer every origin (`Access-Control-Allow-Origin: *`,
//!   errors included, so the widget can read a 429), take no cookies, reveal nothing an article
//!   page would not, and are rate-limited per client address (`rate_limits.kb_requests_per_minute`);
//! - agents and admins with a token: agents read articles and canned replies and preview
//!   expansions, admins also write.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::{bearer_token, ApiError, AppState};
use crate::desk::canned::{CannedDraft, Placeholders, Shortcut};
use crate::desk::kb::{self, ArticleDraft, SearchHit};
use crate::desk::{Article, ArticleId, CannedReply, DeflectionCount};
use crate::domain::{UnixMillis, VisitorId};
use crate::limits::Limit;
use crate::transcript::MAX_PAGE;

/// Hits when the widget does not say how many.
const DEFAULT_HITS: usize = 5;
/// The deflection report's window when `from` is not given.
const DEFAULT_REPORT_DAYS: u64 = 30;

/// Agents and admins.
fn reader(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer_token(headers, None) {
        Some(token) if state.ctx.auth.api_access(token) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Admins only; an agent's valid token is forbidden rather than unauthorised.
fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer_token(headers, None) {
        Some(token) if state.ctx.auth.is_admin(token) => Ok(()),
        Some(token) if state.ctx.auth.api_access(token) => Err(ApiError::Forbidden(
            "an admin token is required to change the desk's content",
        )),
        _ => Err(ApiError::Unauthorized),
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(t)| t)
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
}

/// A response any web page may read.
fn public(result: Result<Response, ApiError>) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// The per-address budget of the public endpoints.
fn admit_public(state: &AppState, peer: SocketAddr) -> Result<(), ApiError> {
    state.ctx.limits.kb_request(peer.ip()).map_err(|limited| {
        state.ctx.metrics.rate_limited(Limit::KbRequests.as_str());
        ApiError::TooManyRequests {
            retry_after_secs: limited.retry_after.as_millis().div_ceil(1000).max(1) as u64,
        }
    })
}

/// The CORS preflight a browser sends before a cross-origin POST with a JSON body.
pub async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS"),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type"),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct SearchParams {
    q: Option<String>,
    lang: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
}

/// `GET /v1/kb/search?q=…&lang=…&limit=…` (public).
pub async fn search(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Response {
    public(
        async move {
            admit_public(&state, peer)?;
            let Query(p) = params.map_err(|r| ApiError::BadRequest(r.body_text()))?;
            let q = p.q.unwrap_or_default();
            if q.chars().count() > kb::MAX_QUERY_CHARS {
                return Err(ApiError::BadRequest(format!(
                    "`q` must be at most {} characters",
                    kb::MAX_QUERY_CHARS
                )));
            }
            let lang = p.lang.as_deref().map(kb::parse_lang).transpose()?;
            let limit = p.limit.unwrap_or(DEFAULT_HITS).clamp(1, kb::MAX_HITS);
            let hits = state.desk.kb.search(&q, lang.as_deref(), limit)?;
            Ok(Json(SearchResults { hits }).into_response())
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeflectionBody {
    visitor_id: Option<String>,
    category: Option<String>,
}

/// `POST /v1/kb/articles/{id}/deflections` (public): the article answered the visitor.
///
/// The body is optional and read as JSON whatever its content type, so that the widget may
/// send it as `text/plain` and skip the CORS preflight.
pub async fn deflect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    public(
        async move {
            admit_public(&state, peer)?;
            let id = ArticleId::parse(&id).map_err(|_| ApiError::NotFound)?;
            let body: DeflectionBody = if body.iter().all(u8::is_ascii_whitespace) {
                DeflectionBody::default()
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
            };
            let visitor = body
                .visitor_id
                .as_deref()
                .map(|v| VisitorId::parse(v).map_err(|e| ApiError::BadRequest(e.to_string())))
                .transpose()?;
            let category = body
                .category
                .as_deref()
                .map(|c| {
                    state.ctx.engine.categories().parse(c).ok_or_else(|| {
                        ApiError::BadRequest(format!("unknown category {c:?} (see /v1/info)"))
                    })
                })
                .transpose()?;
            state
                .desk
                .kb
                .record_deflection(id, visitor, category, state.clock.now_millis())
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
pub struct ArticleListParams {
    lang: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct ArticleList {
    pub articles: Vec<Article>,
    pub limit: u32,
    pub offset: u32,
}

/// `GET /v1/kb/articles` (agents and admins).
pub async fn list_articles(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<ArticleListParams>,
) -> Result<Json<ArticleList>, ApiError> {
    reader(&state, &headers)?;
    let limit = p.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let offset = p.offset.unwrap_or(0);
    let articles = state.desk.kb.list(p.lang.as_deref(), limit, offset).await?;
    Ok(Json(ArticleList {
        articles,
        limit,
        offset,
    }))
}

/// An article as a client sends it. The fields Parley sets are accepted and ignored, so that an
/// article fetched, edited and sent back is accepted; any other unknown field is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArticleBody {
    title: String,
    body: String,
    lang: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default, rename = "id")]
    _id: Option<IgnoredAny>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<IgnoredAny>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<IgnoredAny>,
}

impl From<ArticleBody> for ArticleDraft {
    fn from(b: ArticleBody) -> Self {
        ArticleDraft {
            title: b.title,
            body: b.body,
            lang: b.lang,
            tags: b.tags,
            url: b.url,
        }
    }
}

/// A canned reply as a client sends it; `shortcut` and `updated_at` are ignored as above.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannedBody {
    title: String,
    text: String,
    #[serde(default, rename = "shortcut")]
    _shortcut: Option<IgnoredAny>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<IgnoredAny>,
}

/// `POST /v1/kb/articles` (admins): 201 with the article and its `Location`.
pub async fn create_article(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ArticleBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    admin(&state, &headers)?;
    let draft = ArticleDraft::from(json_body(body)?);
    let article = state
        .desk
        .kb
        .create(draft, state.clock.now_millis())
        .await?;
    let location = format!("/v1/kb/articles/{}", article.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(article),
    )
        .into_response())
}

/// `GET /v1/kb/articles/{id}` (agents and admins).
pub async fn article(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Article>, ApiError> {
    reader(&state, &headers)?;
    let id = ArticleId::parse(&id).map_err(|_| ApiError::NotFound)?;
    state
        .desk
        .kb
        .get(id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `PUT /v1/kb/articles/{id}` (admins): replaces the article's content.
pub async fn update_article(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ArticleBody>, JsonRejection>,
) -> Result<Json<Article>, ApiError> {
    admin(&state, &headers)?;
    let id = ArticleId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let draft = ArticleDraft::from(json_body(body)?);
    state
        .desk
        .kb
        .update(id, draft, state.clock.now_millis())
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `DELETE /v1/kb/articles/{id}` (admins): 204, or 404.
pub async fn delete_article(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&state, &headers)?;
    let id = ArticleId::parse(&id).map_err(|_| ApiError::NotFound)?;
    if state.desk.kb.delete(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Debug, Deserialize)]
pub struct ReportParams {
    from: Option<UnixMillis>,
    to: Option<UnixMillis>,
}

#[derive(Debug, Serialize)]
pub struct DeflectionReport {
    pub from: UnixMillis,
    pub to: UnixMillis,
    pub deflections: Vec<DeflectionCount>,
}

/// `GET /v1/kb/deflections?from=…&to=…` (agents and admins): counts per UTC day, category and
/// article, `from <= ts < to` (Unix milliseconds; the last 30 days by default).
pub async fn deflections(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<ReportParams>,
) -> Result<Json<DeflectionReport>, ApiError> {
    reader(&state, &headers)?;
    let to = p.to.unwrap_or_else(|| state.clock.now_millis());
    let from = p
        .from
        .unwrap_or_else(|| to.saturating_sub(DEFAULT_REPORT_DAYS * 86_400_000));
    if from > to {
        return Err(ApiError::BadRequest("`from` must not be after `to`".into()));
    }
    let deflections = state.desk.kb.deflections(from, to).await?;
    Ok(Json(DeflectionReport {
        from,
        to,
        deflections,
    }))
}

#[derive(Debug, Serialize)]
pub struct CannedList {
    pub replies: Vec<CannedReply>,
}

/// `GET /v1/canned` (agents and admins).
pub async fn list_canned(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<CannedList>, ApiError> {
    reader(&state, &headers)?;
    Ok(Json(CannedList {
        replies: state.desk.canned.list().await?,
    }))
}

/// A shortcut from the path of a read or delete: one that cannot exist is simply not found.
fn existing(shortcut: &str) -> Result<Shortcut, ApiError> {
    Shortcut::parse(shortcut).map_err(|_| ApiError::NotFound)
}

/// `GET /v1/canned/{shortcut}` (agents and admins).
pub async fn canned(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(shortcut): Path<String>,
) -> Result<Json<CannedReply>, ApiError> {
    reader(&state, &headers)?;
    state
        .desk
        .canned
        .get(&existing(&shortcut)?)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `PUT /v1/canned/{shortcut}` (admins): 201 when created, 200 when replaced.
pub async fn put_canned(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(shortcut): Path<String>,
    body: Result<Json<CannedBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    admin(&state, &headers)?;
    let shortcut = Shortcut::parse(&shortcut)
        .map_err(|e| ApiError::BadRequest(format!("{e} (a-z, 0-9, - and _, at most 40)")))?;
    let CannedBody { title, text, .. } = json_body(body)?;
    let draft = CannedDraft { title, text };
    let (reply, created) = state
        .desk
        .canned
        .put(shortcut, draft, state.clock.now_millis())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(reply)).into_response())
}

/// `DELETE /v1/canned/{shortcut}` (admins): 204, or 404.
pub async fn delete_canned(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(shortcut): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&state, &headers)?;
    if state.desk.canned.delete(&existing(&shortcut)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Debug, Serialize)]
pub struct Expanded {
    pub shortcut: Shortcut,
    pub text: String,
}

/// `POST /v1/canned/{shortcut}/expand` (agents and admins): the reply with
/// `{visitor_name, agent_name, visitor_id, category}` filled in, for the console's preview.
pub async fn expand_canned(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(shortcut): Path<String>,
    body: Result<Json<Placeholders>, JsonRejection>,
) -> Result<Json<Expanded>, ApiError> {
    reader(&state, &headers)?;
    let shortcut = existing(&shortcut)?;
    let values = json_body(body)?;
    let text = state
        .desk
        .canned
        .expand(&shortcut, &values)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(Expanded { shortcut, text }))
}
