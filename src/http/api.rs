//! REST: list conversations and read transcripts, for agents and admins with a token.
//!
//! Reads ask the persister to flush first, so a transcript fetched right after a message was
//! acknowledged contains it; if the store is behind (or down), messages still in memory are
//! merged in, so the answer is never missing an acknowledged message that this node holds.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{bearer_token, ApiError, AppState};
use crate::domain::{AgentId, ConversationId, Seq, TeamId, UnixMillis, VisitorId};
use crate::engine::desk::message_view;
use crate::protocol::{ConversationState, MessageView};
use crate::transcript::{ConversationFilter, ConversationRecord, DeskExtras, FollowUp, MAX_PAGE};

/// How long a read waits for the persister before answering from what is there plus memory.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer_token(headers, None) {
        Some(token) if state.ctx.auth.api_access(token) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// queued | assigned | closed
    status: Option<String>,
    agent: Option<String>,
    category: Option<String>,
    visitor: Option<String>,
    /// Created at or after, Unix milliseconds.
    since: Option<UnixMillis>,
    /// Created before, Unix milliseconds.
    until: Option<UnixMillis>,
    team: Option<String>,
    tag: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct ConversationList {
    pub conversations: Vec<ConversationRecord>,
    pub limit: u32,
    pub offset: u32,
}

pub async fn list_conversations(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<ConversationList>, ApiError> {
    authorize(&state, &headers)?;
    let bad =
        |name: &str, value: &str| ApiError::BadRequest(format!("invalid `{name}`: {value:?}"));
    let filter = ConversationFilter {
        state: match q.status.as_deref() {
            None => None,
            Some("queued") => Some(ConversationState::Queued),
            Some("assigned") => Some(ConversationState::Assigned),
            Some("closed") => Some(ConversationState::Closed),
            Some(other) => return Err(bad("status", other)),
        },
        agent_id: q
            .agent
            .as_deref()
            .map(|a| AgentId::parse(a).map_err(|_| bad("agent", a)))
            .transpose()?,
        category: q.category.clone(),
        visitor_id: q
            .visitor
            .as_deref()
            .map(|v| VisitorId::parse(v).map_err(|_| bad("visitor", v)))
            .transpose()?,
        created_after: q.since,
        created_before: q.until,
        closed_after: None,
        team: q
            .team
            .as_deref()
            .map(|t| TeamId::parse(t).map_err(|_| bad("team", t)))
            .transpose()?,
        tag: q.tag.clone(),
        limit: q.limit.unwrap_or(100).clamp(1, MAX_PAGE),
        offset: q.offset.unwrap_or(0),
    };
    let _ = tokio::time::timeout(FLUSH_WAIT, state.persist.flush()).await;
    let conversations = state.store.list_conversations(&filter).await?;
    Ok(Json(ConversationList {
        conversations,
        limit: filter.limit,
        offset: filter.offset,
    }))
}

#[derive(Debug, Serialize)]
pub struct Transcript {
    pub conversation: ConversationRecord,
    pub messages: Vec<MessageView>,
    /// Tags, follow-up and survey answer (`tags`, `follow_up`, `csat`).
    #[serde(flatten)]
    pub extras: DeskExtras,
}

/// The whole transcript: stored messages, then any still only in memory.
async fn load(state: &AppState, id: &str) -> Result<Transcript, ApiError> {
    let id = ConversationId::parse(id).map_err(|_| ApiError::NotFound)?;
    let _ = tokio::time::timeout(FLUSH_WAIT, state.persist.flush()).await;
    let conversation = state
        .store
        .conversation(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut messages: Vec<MessageView> = Vec::new();
    let mut after = Seq::ZERO;
    loop {
        let page = state.store.messages(id, after, None, MAX_PAGE).await?;
        let full = page.len() as u32 == MAX_PAGE;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        messages.extend(page.iter().map(message_view));
        if !full {
            break;
        }
    }
    messages.extend(state.ctx.engine.live_messages(id, after).await);
    // An open conversation's figures are newest in memory (written to the store each tick).
    let mut conversation = state.ctx.engine.live_record(id).unwrap_or(conversation);
    conversation.last_seq = conversation
        .last_seq
        .max(after)
        .max(messages.last().map_or(Seq::ZERO, |m| m.seq));
    let extras = state.store.extras(id).await?;
    Ok(Transcript {
        conversation,
        messages,
        extras,
    })
}

pub async fn conversation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Transcript>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(load(&state, &id).await?))
}

/// The transcript as plain text, for pasting into a ticket or an email.
pub async fn transcript_text(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let t = load(&state, &id).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        render_text(&t),
    )
        .into_response())
}

fn timestamp(ms: UnixMillis) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn render_text(t: &Transcript) -> String {
    use std::fmt::Write;
    let c = &t.conversation;
    let mut out = String::new();
    let state = match c.state {
        ConversationState::Queued => "queued",
        ConversationState::Assigned => "assigned",
        ConversationState::Closed => "closed",
    };
    let _ = writeln!(out, "Conversation {} ({}, {state})", c.id, c.category);
    let _ = writeln!(
        out,
        "Visitor: {}{}",
        c.visitor_id,
        c.visitor_name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    if let Some(agent) = &c.agent_id {
        let _ = writeln!(out, "Agent: {agent}");
    }
    let _ = writeln!(out, "Started: {}", timestamp(c.created_at));
    if let Some(closed) = c.closed_at {
        let verdict = match c.resolved {
            Some(true) => ", resolved",
            Some(false) => ", not resolved",
            None => "",
        };
        let _ = writeln!(out, "Closed: {}{verdict}", timestamp(closed));
    }
    let _ = writeln!(out);
    for m in &t.messages {
        let who = m.sender.name.clone().unwrap_or_else(|| m.sender.id.clone());
        let role = m.sender.role.as_str();
        // Notes are for agents; the mark keeps them apart when a transcript is pasted on.
        let internal = match m.kind {
            crate::protocol::MessageKind::Note => " [internal note]",
            crate::protocol::MessageKind::Text => "",
        };
        let _ = writeln!(
            out,
            "[{}] {who} ({role}){internal}: {}",
            timestamp(m.ts),
            m.text
        );
    }
    out
}

/// Tags a conversation may carry at most, and their length in characters.
const TAGS_MAX: usize = 20;
const TAG_MAX_CHARS: usize = 32;
const FOLLOW_UP_NOTE_MAX_CHARS: usize = 500;

/// Who is asking, for `follow_up.set_by`: the agent's id, or `admin`.
fn caller(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = bearer_token(headers, None).ok_or(ApiError::Unauthorized)?;
    if let Some(agent) = state.ctx.auth.agent(token) {
        return Ok(agent.id.to_string());
    }
    if state.ctx.auth.is_admin(token) {
        return Ok("admin".to_string());
    }
    Err(ApiError::Unauthorized)
}

/// The stored conversation, after the persister caught up (a new one may still be in it).
async fn existing(state: &AppState, id: &str) -> Result<ConversationId, ApiError> {
    let id = ConversationId::parse(id).map_err(|_| ApiError::NotFound)?;
    let _ = tokio::time::timeout(FLUSH_WAIT, state.persist.flush()).await;
    state
        .store
        .conversation(id)
        .await?
        .map(|c| c.id)
        .ok_or(ApiError::NotFound)
}

#[derive(Debug, Deserialize)]
pub struct TagsBody {
    tags: Vec<String>,
}

/// Tags are words for filtering and reports: letters (any script), digits, `-` and `_`, so
/// they stay readable in the CSV (`;`-separated) and in URLs.
fn check_tags(tags: Vec<String>) -> Result<Vec<String>, ApiError> {
    if tags.len() > TAGS_MAX {
        return Err(ApiError::BadRequest(format!(
            "at most {TAGS_MAX} tags, got {}",
            tags.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = tag.trim().to_lowercase();
        let ok = (1..=TAG_MAX_CHARS).contains(&tag.chars().count())
            && tag
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_'));
        if !ok {
            return Err(ApiError::BadRequest(format!(
                "tag {tag:?} must be 1 to {TAG_MAX_CHARS} letters, digits, - or _"
            )));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

/// `PUT /v1/conversations/{id}/tags` with `{"tags": [...]}`: replaces the tags.
pub async fn put_tags(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<TagsBody>,
) -> Result<Json<DeskExtras>, ApiError> {
    authorize(&state, &headers)?;
    let tags = check_tags(body.tags)?;
    let id = existing(&state, &id).await?;
    state.store.set_tags(id, &tags).await?;
    Ok(Json(state.store.extras(id).await?))
}

#[derive(Debug, Deserialize)]
pub struct FollowUpBody {
    /// When to come back to it, Unix milliseconds.
    due_at: UnixMillis,
    #[serde(default)]
    note: Option<String>,
}

/// `PUT /v1/conversations/{id}/follow-up` with `{"due_at": ms, "note": "..."}`.
pub async fn put_follow_up(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<FollowUpBody>,
) -> Result<Json<DeskExtras>, ApiError> {
    let set_by = caller(&state, &headers)?;
    let note = body
        .note
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if note
        .as_ref()
        .is_some_and(|n| n.chars().count() > FOLLOW_UP_NOTE_MAX_CHARS || n.contains('\0'))
    {
        return Err(ApiError::BadRequest(format!(
            "`note` must be at most {FOLLOW_UP_NOTE_MAX_CHARS} characters"
        )));
    }
    let id = existing(&state, &id).await?;
    let follow_up = FollowUp {
        due_at: body.due_at,
        note,
        set_by,
        set_at: state.clock.now_millis(),
    };
    state.store.set_follow_up(id, Some(&follow_up)).await?;
    Ok(Json(state.store.extras(id).await?))
}

/// `DELETE /v1/conversations/{id}/follow-up`: done, or no longer needed.
pub async fn delete_follow_up(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<DeskExtras>, ApiError> {
    authorize(&state, &headers)?;
    let id = existing(&state, &id).await?;
    state.store.set_follow_up(id, None).await?;
    Ok(Json(state.store.extras(id).await?))
}

#[derive(Debug, Deserialize)]
pub struct DueQuery {
    /// Due before this time (Unix ms); default now.
    before: Option<UnixMillis>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct DueFollowUp {
    pub conversation: ConversationRecord,
    pub follow_up: FollowUp,
}

/// `GET /v1/follow-ups?before=&limit=`: conversations due for follow-up, soonest first: what
/// the console shows under "Follow-ups".
pub async fn follow_ups(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DueQuery>,
) -> Result<Json<Vec<DueFollowUp>>, ApiError> {
    authorize(&state, &headers)?;
    let before = q.before.unwrap_or_else(|| state.clock.now_millis());
    let due = state
        .store
        .due_follow_ups(before, q.limit.unwrap_or(100).clamp(1, MAX_PAGE))
        .await?;
    Ok(Json(
        due.into_iter()
            .map(|(conversation, follow_up)| DueFollowUp {
                conversation,
                follow_up,
            })
            .collect(),
    ))
}

/// `GET /v1/me`: who this token is, so a page can say "this is an admin token; the console
/// needs an agent's" instead of failing a WebSocket upgrade whose refusal browsers hide.
pub async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token = bearer_token(&headers, None).ok_or(ApiError::Unauthorized)?;
    if let Some(agent) = state.ctx.auth.agent(token) {
        return Ok(Json(serde_json::json!({
            "role": "agent",
            "agent": {"id": agent.id, "name": agent.name, "capacity": agent.capacity},
            "admin": state.ctx.auth.is_admin(token),
        })));
    }
    if state.ctx.auth.is_admin(token) {
        return Ok(Json(serde_json::json!({"role": "admin", "admin": true})));
    }
    Err(ApiError::Unauthorized)
}
