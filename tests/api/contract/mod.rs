//! The contract suite: chat and desk scenarios written once and run on both topologies.
//!
//! Each test binary says what a desk is, in its `topology` module: tests/api starts one node
//! (the in-process engine), tests/redis starts two nodes on one real `redis-server` with the
//! visitors on one node and the agents on the other. The scenarios here (`chat`, `desk`,
//! `grace`, `limits`, `routing`, `surveys`) only ask a [`Desk`] for visitors and agents, so every scenario runs in
//! both binaries, under the same name, with the same assertions. A scenario that only holds on
//! one topology does not belong here: it stays in its binary's own modules (Redis faults, the
//! cluster, slow readers, killed nodes, SQLite files, controlled time).

pub mod chat;
pub mod desk;
pub mod grace;
pub mod limits;
pub mod routing;
pub mod surveys;

use futures::future::BoxFuture;
use parley::config::{CategoryConfig, Config, TeamConfig};
use parley::protocol::{ConversationView, MessageKind, ServerFrame};

use crate::helpers::{chat_between, Agent, Client, Gateway, Visitor};

/// The servers behind a [`Desk`], kept alive as long as it is, and what they can check of
/// their own state.
pub trait Servers: Send + Sync {
    /// Asserts what this topology can check beyond the protocol (on Redis: the routing
    /// indexes agree with their data, and no node panicked). Called at a scenario's quiet
    /// points.
    fn check(&self) -> BoxFuture<'_, ()>;
}

/// One desk, whichever topology: where visitors connect and where agents connect.
pub struct Desk {
    /// Where visitors connect.
    pub visitors: Gateway,
    /// Where agents connect: the same node as visitors on one node, the other node on two, so
    /// every frame between a visitor and an agent crosses nodes.
    pub agents: Gateway,
    /// The shared Redis of a multi-node desk, for the few checks of what the nodes keep there.
    pub redis_url: Option<String>,
    /// Dropped last: the nodes (and Redis) stop when the desk goes.
    servers: Box<dyn Servers>,
    /// More servers the desk uses (a shared PostgreSQL), dropped after the nodes.
    _extra: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Desk {
    pub fn new(
        visitors: Gateway,
        agents: Gateway,
        redis_url: Option<String>,
        servers: Box<dyn Servers>,
    ) -> Self {
        Self {
            visitors,
            agents,
            redis_url,
            servers,
            _extra: Vec::new(),
        }
    }

    /// Keeps `server` running as long as the desk (and stops it after the nodes).
    #[allow(dead_code)] // Only the Redis binary's desk has more servers.
    pub fn keeping(mut self, server: Box<dyn std::any::Any + Send + Sync>) -> Self {
        self._extra.push(server);
        self
    }

    /// Every node, the visitors' first (one entry on one node).
    pub fn nodes(&self) -> Vec<Gateway> {
        if self.visitors.addr == self.agents.addr {
            vec![self.visitors]
        } else {
            vec![self.visitors, self.agents]
        }
    }

    /// A new visitor, on the visitors' node.
    pub async fn visitor(&self) -> Visitor {
        self.visitors.visitor().await
    }

    /// Agent `name` online, on the agents' node.
    pub async fn agent(&self, name: &str) -> Agent {
        self.agents.agent(name).await
    }

    /// Agent `agent` online, then a new visitor who starts a conversation in `category` that
    /// the agent gets; both have seen the assignment and the first message.
    pub async fn chat(
        &self,
        agent: &str,
        category: &str,
        text: &str,
    ) -> (Agent, Visitor, ConversationView) {
        chat_between(&self.agents, agent, &self.visitors, category, text).await
    }

    /// The sum over every node of a metric's samples whose labels contain `label`: what the
    /// desk did, whichever node did it.
    pub async fn metric(&self, name: &str, label: &str) -> f64 {
        let mut sum = 0.0;
        for node in self.nodes() {
            sum += node.metric(name, label).await;
        }
        sum
    }

    /// See [`Servers::check`].
    pub async fn check(&self) {
        self.servers.check().await;
    }
}

/// Teams for the tests: a1, a2 front line; a3, a4 technical support; a5, a6 supervisors.
/// Security routes to supervisors, transaction to tech; others go to anyone.
pub fn desk(c: &mut Config) {
    let team = |id: &str, name: &str| TeamConfig {
        id: id.into(),
        name: name.into(),
        hours: None,
    };
    c.teams = vec![
        team("front", "Front line"),
        team("tech", "Technical support"),
        team("supervisors", "Supervisors"),
    ];
    for (i, a) in c.agents.iter_mut().enumerate() {
        a.teams = vec![["front", "tech", "supervisors"][i / 2].to_string()];
    }
    for (category, team) in [("security", "supervisors"), ("transaction", "tech")] {
        c.categories.insert(
            category.into(),
            CategoryConfig {
                team: Some(team.into()),
                first_response_target: None,
                ..CategoryConfig::default()
            },
        );
    }
    c.desk.escalation_team = Some("supervisors".into());
}

/// Sends a frame on an agent's socket.
pub async fn send(agent: &mut Agent, frame: serde_json::Value) {
    agent.client.send(frame).await;
}

/// The next `transferred`, past the notes the transferring agent sees written first.
pub async fn expect_transferred(client: &mut Client) -> ServerFrame {
    loop {
        match client.next_frame().await {
            f @ ServerFrame::Transferred { .. } => return f,
            ServerFrame::Message(m) if m.kind == MessageKind::Note => continue,
            ServerFrame::AgentState { .. } | ServerFrame::Queued { .. } => continue,
            other => panic!("expected transferred, got {other:?}"),
        }
    }
}

/// The next survey request, past the `closed` that comes just before it.
pub async fn expect_survey(client: &mut Client) -> String {
    loop {
        match client.next_frame().await {
            ServerFrame::CsatRequest { conversation_id } => return conversation_id.to_string(),
            ServerFrame::Closed { .. } => continue,
            other => panic!("expected csat_request, got {other:?}"),
        }
    }
}
