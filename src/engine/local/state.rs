//! The hub's entries: conversations, visitors and agents, and their views.

use super::*;

impl VisitorEntry {
    pub(super) fn new(name: Option<String>) -> Self {
        Self {
            sockets: Vec::new(),
            name,
            open: None,
            generation: 0,
        }
    }
}

impl AgentEntry {
    pub(super) fn new(name: String, capacity: u32, status: AgentStatus) -> Self {
        Self {
            sockets: Vec::new(),
            name,
            capacity,
            status,
            conversations: BTreeSet::new(),
            generation: 0,
            last_state: None,
        }
    }
}

impl Conversation {
    /// An open conversation as the store holds it: `tail` is its newest stored messages, at
    /// most `window` of them. `skip` sequence numbers are passed over before the next message:
    /// after a crash, the ones that may have been handed out and never stored (see
    /// [`super::LocalBackend::restore`]).
    pub(super) fn from_record(
        record: &ConversationRecord,
        category: Category,
        target: Target,
        tail: Vec<StoredMessage>,
        window: usize,
        skip: u64,
    ) -> Self {
        // A shorter tail than asked for is the whole conversation.
        let window_floor = match tail.first() {
            Some(first) if tail.len() >= window => Seq(first.seq.0.saturating_sub(1)),
            _ => Seq::ZERO,
        };
        let mut cids = HashMap::new();
        let window: VecDeque<Arc<StoredMessage>> = tail
            .into_iter()
            .map(|m| {
                if let Some(cid) = &m.cid {
                    cids.insert((m.sender_role, cid.clone()), m.seq);
                }
                Arc::new(m)
            })
            .collect();
        let stored = window
            .back()
            .map_or(record.last_seq, |m| m.seq.max(record.last_seq));
        let last_seq = Seq(stored.0 + skip);
        Self {
            id: record.id,
            visitor: record.visitor_id.clone(),
            visitor_name: record.visitor_name.clone(),
            category,
            agent: record.agent_id.clone(),
            created_at: record.created_at,
            assigned_at: record.assigned_at,
            queued_since: None,
            page: record.page.clone(),
            metadata: record.metadata.clone(),
            last_seq,
            window,
            window_floor,
            cids,
            last_queued: None,
            queue_reason: QueueReason::NoAgentAvailable,
            target,
            reopened: record.reopened,
            desk: record.desk.clone(),
            dirty: false,
        }
    }

    /// Its state while open: with an agent or waiting.
    pub(super) fn open_state(&self) -> ConversationState {
        if self.agent.is_some() {
            ConversationState::Assigned
        } else {
            ConversationState::Queued
        }
    }

    pub(super) fn record(&self, state: ConversationState) -> ConversationRecord {
        ConversationRecord {
            id: self.id,
            visitor_id: self.visitor.clone(),
            visitor_name: self.visitor_name.clone(),
            category: self.category.to_string(),
            state,
            agent_id: self.agent.clone(),
            created_at: self.created_at,
            assigned_at: self.assigned_at,
            closed_at: None,
            resolved: None,
            close_reason: None,
            last_seq: self.last_seq,
            page: self.page.clone(),
            metadata: self.metadata.clone(),
            team: self.target.team().cloned(),
            reopened: self.reopened,
            desk: self.desk.clone(),
        }
    }

    /// What the visitor sees of its conversation: no clock, no contact, no internal figures.
    pub(super) fn visitor_view(
        &self,
        agent_name: Option<&str>,
        recovered: Option<bool>,
    ) -> ConversationView {
        policy::visitor_view(policy::agent_view(
            &self.record(ConversationState::Queued),
            agent_name,
            recovered,
            0,
            0,
        ))
    }
}
