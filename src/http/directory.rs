//! `GET /v1/desk`: who a conversation can be handed to, for the agent console's transfer and
//! escalation actions: the configured teams, every configured agent with their teams and (when
//! connected) their status and load, the escalation team, and whether surveys are sent.
//!
//! Agents and admins only: the names of the team and of colleagues are not for visitors. The
//! figures are a moment's view; a transfer to an agent who has just filled up is still refused
//! with `target_unavailable` by the engine, which is the authority.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use super::{bearer_token, ApiError, AppState};
use crate::config::CsatMode;
use crate::protocol::AgentStatus;

#[derive(Debug, Serialize)]
pub struct DeskDirectory {
    pub teams: Vec<TeamEntry>,
    /// Every configured agent, by name.
    pub agents: Vec<AgentEntry>,
    /// Where `escalate` goes; `null` when `desk.escalation_team` is not set.
    pub escalation_team: Option<TeamEntry>,
    /// `auto`, `manual` or `off` (`desk.csat`).
    pub csat: CsatMode,
}

#[derive(Debug, Serialize)]
pub struct TeamEntry {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct AgentEntry {
    pub id: String,
    pub name: String,
    pub teams: Vec<String>,
    /// Has a console open.
    pub connected: bool,
    /// The status in force; `offline` when not connected.
    pub status: AgentStatus,
    /// Conversations held now, and how many may be held.
    pub open: u32,
    pub capacity: u32,
    /// Connected, online and below capacity: a transfer to this agent would be taken now.
    pub available: bool,
}

/// `GET /v1/desk` (agents and admins).
pub async fn directory(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<DeskDirectory>, ApiError> {
    match bearer_token(&headers, None) {
        Some(token) if state.ctx.auth.api_access(token) => {}
        _ => return Err(ApiError::Unauthorized),
    }
    let directory = &state.directory;
    let team = |t: &crate::desk::teams::Team| TeamEntry {
        id: t.id.to_string(),
        name: t.name.clone(),
    };
    let present = state.ctx.engine.presence().await.map_err(|err| {
        tracing::warn!(error = %err, "who is connected cannot be read");
        ApiError::Unavailable("who is connected cannot be known now; retry shortly")
    })?;
    let mut agents: Vec<AgentEntry> = state
        .ctx
        .auth
        .agents()
        .map(|profile| {
            let live = present.iter().find(|p| p.agent == profile.id);
            let status = live.map_or(AgentStatus::Offline, |p| p.status);
            let open = live.map_or(0, |p| p.open);
            let capacity = live.map_or(profile.capacity, |p| p.capacity);
            AgentEntry {
                id: profile.id.to_string(),
                name: profile.name.clone(),
                teams: directory
                    .teams_of(&profile.id)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                connected: live.is_some(),
                status,
                open,
                capacity,
                available: live.is_some() && status == AgentStatus::Online && open < capacity,
            }
        })
        .collect();
    agents.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    Ok(Json(DeskDirectory {
        teams: directory.teams().iter().map(team).collect(),
        agents,
        escalation_team: directory
            .escalation_team()
            .and_then(|id| directory.team(id))
            .map(team),
        csat: state.csat,
    }))
}
