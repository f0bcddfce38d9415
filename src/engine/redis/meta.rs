//! A conversation's shared fields, as its `meta` hash holds them.

use super::*;

/// A conversation's shared fields, from its `meta` hash.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    pub(super) visitor: String,
    /// `visitor`, parsed: a `meta` whose visitor does not parse is treated as missing.
    pub(super) visitor_id: VisitorId,
    pub(super) visitor_name: Option<String>,
    pub(super) category: String,
    pub(super) agent: Option<String>,
    pub(super) state: String,
    pub(super) created_at: u64,
    pub(super) assigned_at: Option<u64>,
    pub(super) seq: u64,
    pub(super) page: Option<String>,
    pub(super) metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The `closed` frame, once closed.
    pub(super) closed_frame: Option<String>,
    /// The team it is routed to (its category's, or the one it was transferred to).
    pub(super) team: Option<String>,
    pub(super) transfers: u32,
    pub(super) escalated: bool,
    /// When the satisfaction survey was sent.
    pub(super) csat_at: Option<u64>,
    /// Started while nobody answered its category: its visitor leaving does not close it.
    pub(super) offline: bool,
    /// Messages refused by a rate limit in it.
    pub(super) rate_limited: u32,
    /// Times a visitor came back and reopened it.
    pub(super) reopened: u32,
    /// Why it waits, as the visitor was last told.
    pub(super) queue_reason: Option<QueueReason>,
    /// The report figures the append script keeps (see [`scripts::APPEND`]).
    pub(super) due_at: Option<u64>,
    pub(super) first_response_at: Option<u64>,
    pub(super) awaiting_since: Option<u64>,
    pub(super) response_ms_total: u64,
    pub(super) responses: u32,
    pub(super) contact: Option<String>,
}

impl Meta {
    /// Its state while open: with an agent or waiting.
    pub(super) fn open_state(&self) -> ConversationState {
        if self.agent.is_some() {
            ConversationState::Assigned
        } else {
            ConversationState::Queued
        }
    }

    /// The snapshot the transcript store keeps.
    pub(super) fn record(
        &self,
        id: ConversationId,
        state: ConversationState,
    ) -> ConversationRecord {
        ConversationRecord {
            id,
            visitor_id: self.visitor_id.clone(),
            visitor_name: self.visitor_name.clone(),
            category: self.category.clone(),
            state,
            agent_id: self.agent.as_deref().and_then(|a| AgentId::parse(a).ok()),
            created_at: self.created_at,
            assigned_at: self.assigned_at,
            closed_at: None,
            resolved: None,
            close_reason: None,
            last_seq: Seq(self.seq),
            page: self.page.clone(),
            metadata: self.metadata.clone(),
            team: self.team.as_deref().and_then(|t| TeamId::parse(t).ok()),
            reopened: self.reopened,
            desk: DeskRecord {
                contact: self.contact.clone(),
                offline: self.offline,
                rate_limited: self.rate_limited,
                transfers: self.transfers,
                escalated: self.escalated,
                csat_requested_at: self.csat_at,
                first_response_due_at: self.due_at,
                first_response_at: self.first_response_at,
                awaiting_since: self.awaiting_since,
                response_ms_total: self.response_ms_total,
                responses: self.responses,
            },
        }
    }

    pub(super) fn from_hash(h: HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
        let visitor = get("visitor")?;
        Some(Self {
            visitor_id: VisitorId::parse(&visitor).ok()?,
            visitor,
            visitor_name: get("visitor_name"),
            category: get("category").unwrap_or_default(),
            agent: get("agent"),
            state: get("state").unwrap_or_default(),
            created_at: get("created_at").and_then(|v| v.parse().ok()).unwrap_or(0),
            assigned_at: get("assigned_at").and_then(|v| v.parse().ok()),
            seq: get("seq").and_then(|v| v.parse().ok()).unwrap_or(0),
            page: get("page"),
            metadata: get("metadata").and_then(|m| serde_json::from_str(&m).ok()),
            closed_frame: get("closed_frame"),
            team: get("team"),
            transfers: get("transfers").and_then(|v| v.parse().ok()).unwrap_or(0),
            escalated: get("escalated").is_some_and(|v| v == "1"),
            csat_at: get("csat_at").and_then(|v| v.parse().ok()),
            offline: get("offline").is_some_and(|v| v == "1"),
            reopened: get("reopened").and_then(|v| v.parse().ok()).unwrap_or(0),
            queue_reason: get("queue_reason").and_then(|v| serde_json::from_str(&v).ok()),
            rate_limited: get("rate_limited")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            due_at: get("due_at").and_then(|v| v.parse().ok()),
            first_response_at: get("first_response_at").and_then(|v| v.parse().ok()),
            awaiting_since: get("awaiting_since").and_then(|v| v.parse().ok()),
            response_ms_total: get("response_ms_total")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            responses: get("responses").and_then(|v| v.parse().ok()).unwrap_or(0),
            contact: get("contact"),
        })
    }
}
