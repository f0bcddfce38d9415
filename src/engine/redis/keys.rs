//! The key layout. Every key starts with the configured prefix (`parley` by default).
//!
//! Keys are hash-tagged so that what one Lua script touches lives in one cluster slot:
//! - `{c:<conversation>}`: one conversation: `meta` (hash: visitor, category, agent, state,
//!   `seq`), `log` (the capped stream of its messages, entry id `<seq>-1`) and `cids` (hash
//!   `role:cid` -> seq, for idempotent sends).
//! - `{r}`: the routing desk, shared by every node: the priority queue, the round-robin ring and
//!   its cursors (one per target: any agent or one team), capacities, loads, assignments, each
//!   agent's teams and each conversation's target, and per-target indexes (free agents, agents
//!   on duty, the target's queue) that keep every routing call logarithmic. One slot, so
//!   assignment is one atomic script.
//! - `{u:v:<visitor>}` / `{u:a:<agent>}`: one client: the nodes it has sockets on, a join
//!   generation (grace timers), its open conversation or status.
//! - `{rl:<visitor>}` / `{rl:a:<agent>}`: the user's shared budgets (GCRA cells).
//! - `node:<id>` and `nodes`: node presence (a key with a TTL, refreshed by heartbeats) and the
//!   clients each node holds, so a dead node's clients can be cleaned up by the others.

use crate::domain::{AgentId, ConversationId, TeamId, VisitorId};
use crate::engine::Client;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn meta(&self, c: ConversationId) -> String {
        format!("{}:{{c:{c}}}:meta", self.prefix)
    }

    pub fn log(&self, c: ConversationId) -> String {
        format!("{}:{{c:{c}}}:log", self.prefix)
    }

    pub fn cids(&self, c: ConversationId) -> String {
        format!("{}:{{c:{c}}}:cids", self.prefix)
    }

    /// One of the routing keys (`queue`, `ring`, `cap`, `load`, `accepting`, `assigned`,
    /// `counters`, `cat`, `target`, `teams`, `excl`, `queued_targets`); `of:<agent>` and the
    /// per-target indexes (`free:`, `staff:`, `q:` + `any` or `t:<team>`) are built by the
    /// scripts from the prefix (see [`super::scripts`]).
    pub fn routing(&self, name: &str) -> String {
        format!("{}:{{r}}:{name}", self.prefix)
    }

    pub fn routing_all(&self) -> [String; 12] {
        [
            "queue",
            "ring",
            "cap",
            "load",
            "accepting",
            "assigned",
            "counters",
            "cat",
            "target",
            "teams",
            "excl",
            "queued_targets",
        ]
        .map(|n| self.routing(n))
    }

    /// The agents taking chats for one target (a team, or `None` for any agent): the
    /// routing scripts' `staff:` index.
    pub fn staff(&self, team: Option<&TeamId>) -> String {
        match team {
            None => format!("{}:{{r}}:staff:any", self.prefix),
            Some(t) => format!("{}:{{r}}:staff:t:{t}", self.prefix),
        }
    }

    pub fn agent_chats(&self, a: &AgentId) -> String {
        format!("{}:{{r}}:of:{a}", self.prefix)
    }

    pub fn client(&self, client: &ClientKey, what: &str) -> String {
        format!("{}:{{u:{}}}:{what}", self.prefix, client.0)
    }

    pub fn visitor_open(&self, v: &VisitorId) -> String {
        self.client(&ClientKey::visitor(v), "open")
    }

    pub fn agent_status(&self, a: &AgentId) -> String {
        self.client(&ClientKey::agent(a), "status")
    }

    /// The visitor's message budget (GCRA cell).
    pub fn rate(&self, v: &VisitorId) -> String {
        format!("{}:{{rl:{v}}}:visitor_messages", self.prefix)
    }

    /// The visitor's conversations-per-hour budget; same slot as its message budget.
    pub fn visitor_conversation_rate(&self, v: &VisitorId) -> String {
        format!("{}:{{rl:{v}}}:visitor_conversations", self.prefix)
    }

    /// The agent's message budget.
    pub fn agent_rate(&self, a: &AgentId) -> String {
        format!("{}:{{rl:a:{a}}}:agent_messages", self.prefix)
    }

    /// First-response clocks: a sorted set of conversations by the time (ms) their clock next
    /// needs a look (the warning, then the deadline). Popped by one node at a time.
    pub fn sla(&self) -> String {
        format!("{}:sla", self.prefix)
    }

    /// Grace deadlines: a sorted set of `<client>|<generation>` by deadline (ms).
    pub fn graces(&self) -> String {
        format!("{}:graces", self.prefix)
    }

    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    pub fn node_alive(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    pub fn node_clients(&self, node: &str) -> String {
        format!("{}:node:{node}:clients", self.prefix)
    }

    /// Written by the node's health probe: readiness means Redis takes writes.
    pub fn node_probe(&self, node: &str) -> String {
        format!("{}:node:{node}:probe", self.prefix)
    }

    pub fn node_reaper(&self, node: &str) -> String {
        format!("{}:node:{node}:reaped", self.prefix)
    }

    /// The node's pub/sub channel: every event for clients on that node.
    pub fn channel(&self, node: &str) -> String {
        format!("{}:events:{node}", self.prefix)
    }
}

/// `v:<visitor>` or `a:<agent>`: a client as the presence sets name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ClientKey(pub String);

impl ClientKey {
    pub fn visitor(v: &VisitorId) -> Self {
        Self(format!("v:{v}"))
    }

    pub fn agent(a: &AgentId) -> Self {
        Self(format!("a:{a}"))
    }

    pub fn as_visitor(&self) -> Option<VisitorId> {
        VisitorId::parse(self.0.strip_prefix("v:")?).ok()
    }

    pub fn as_agent(&self) -> Option<AgentId> {
        AgentId::parse(self.0.strip_prefix("a:")?).ok()
    }

    pub fn of(client: &Client) -> Self {
        match client {
            Client::Visitor(v) => Self::visitor(v),
            Client::Agent(a) => Self::agent(a),
        }
    }

    /// The client it names; `None` for a key no client of this version writes.
    pub fn client(&self) -> Option<Client> {
        self.as_visitor()
            .map(Client::Visitor)
            .or_else(|| self.as_agent().map(Client::Agent))
    }
}
