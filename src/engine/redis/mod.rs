//! The Redis engine: several Parley nodes share one desk.
//!
//! Presence, routing (the queue, round-robin and capacity), conversation state, visitor message
//! budgets and the message log live in Redis; sockets stay on the node they connected to. The
//! socket code cannot tell this engine from [`super::local::LocalEngine`].
//!
//! - **Assignment** is one Lua script on the `{r}` slot ([`scripts`]): shared round-robin cursor,
//!   capacity, one agent per conversation, priority queue, all atomic across nodes.
//! - **Messages** are appended by one script on the conversation's slot: sequence number, `cid`
//!   deduplication and `XADD` to a capped stream happen together, and the `ack` goes out only
//!   after it returned. The stream is the durable point and serves resume on any node.
//! - **Delivery** ([`delivery`]): every node subscribes to its own channel; an event is published
//!   to the nodes where its clients have sockets (a set per client).
//! - **Presence** ([`presence`]): each node refreshes a key with a TTL; the others notice a node
//!   that stopped and clean up after it.
//! - **The desk** (docs/desk.md): conversations carry their team in the routing script's
//!   `target` and in `meta`, with their figures; notes go into the same stream as messages and
//!   are never delivered to a visitor's socket; a transfer is one routing script, then
//!   `transferred` to the agent it leaves and the visitor, `assigned` to the receiving agent on
//!   whichever node. Webhooks are emitted by the node that made the change, so once.
//!   First-response clocks are a shared sorted set that every node's desk ticker pops from
//!   ([`Backend::due`]); a visitor's `last_closed` key (TTL: the reopen window) reopens.
//!
//! When Redis does not answer, requests fail with the retryable `unavailable` error within about
//! a second; nothing panics and nodes reconnect by themselves (see docs/architecture.md).

pub mod conn;
mod delivery;
mod figures;
pub mod keys;
mod presence;
pub mod scripts;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use self::conn::Conn;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::delivery::{origin_token, Command, Delivery, Registry, Resume, Wire};
use self::keys::{ClientKey, Keys};
use super::backend::Services;
use super::backend::{
    Appended, Backend, Closing, DeskRequest, DeskRequests, Entry, FirstResponse, Move, MoveNotes,
    NewConversation, Opening, Parties, Recipient,
};
use super::desk::{accepted, message_view};
use super::{
    ack_frame, AgentJoin, AgentPresence, Client, EngineError, EngineSettings, EngineStats, Joined,
    MoveKind, Origin, VisitorJoin, SYSTEM_ID,
};
use crate::clock::Clock;
use crate::desk::policy::{self};
use crate::desk::webhooks::{WebhookEvent, Webhooks};
use crate::domain::{
    now_millis, AgentId, Category, ClientMessageId, ConversationId, Role, Seq, TeamId, UnixMillis,
    VisitorId,
};
use crate::metrics::Metrics;
use crate::metrics::TransferLabel;
use crate::outbox::{Frame, Outbox, SocketId};
use crate::protocol::{
    AgentStatus, ConversationState, ConversationView, MessageKind, MessageView, Participant,
    QueueReason, ServerFrame,
};
use crate::routing::{Categories, Target};
use crate::transcript::{ConversationRecord, DeskRecord, PersistHandle, StoredMessage};

pub use self::scripts::GCRA;

/// What only the Redis engine needs from the configuration (`[redis]`); the rest is the
/// [`EngineSettings`] both engines share.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// `url` names one node of a Redis Cluster.
    pub cluster: bool,
    pub key_prefix: String,
    pub presence_ttl: Duration,
}

impl RedisSettings {
    /// The `[redis]` part of the configuration, for `url`.
    pub fn from_config(redis: &crate::config::Redis, url: &str) -> Self {
        Self {
            url: url.to_string(),
            cluster: redis.cluster,
            key_prefix: redis.key_prefix.clone(),
            presence_ttl: redis.presence_ttl,
        }
    }
}

/// How long a closed conversation's keys stay at least, for late readers (REST, a last resume);
/// longer when `desk.reopen_window` is (see [`Inner::closed_keep_secs`]).
const CLOSED_KEEP_SECS: u64 = 24 * 3600;
/// A whole engine operation gives up after this long; the client gets `unavailable`.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// What clients are told to wait before retrying while Redis is away.
const RETRY_AFTER_MS: u64 = 1000;
/// Messages read from a stream at a time to complete a transcript.
const BACKFILL_PAGE: usize = 200;

pub struct RedisBackend {
    inner: Arc<Inner>,
    categories: Categories,
}

struct Inner {
    /// This node's id: names its channel and its presence key.
    node: String,
    keys: Keys,
    redis: Conn,
    /// For the subscription: a plain connection to `url` (in a cluster, a classic `PUBLISH`
    /// reaches subscribers on every node).
    client: redis::Client,
    settings: EngineSettings,
    /// Where Redis is and how this node shows it is alive.
    redis_settings: RedisSettings,
    categories: Categories,
    /// Sockets on this node, shared with the delivery task.
    registry: Arc<Mutex<Registry>>,
    /// Into the delivery task.
    events: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    /// The node's write-behind persister: the transcripts of what this node accepted.
    persist: PersistHandle,
    /// Desk events for the CRM. Each is emitted by the node that performed the action, once:
    /// the script that made the change answers exactly one caller.
    webhooks: Webhooks,
    shutdown: CancellationToken,
    /// The last health probe's answer: readiness reads it without a round trip.
    healthy: AtomicBool,
    /// The learnt queue wait per position, shared by every node (refreshed from Redis).
    wait: delivery::WaitEstimate,
    /// Message times, SLA deadlines, report figures and reopen windows read this clock (tests
    /// move it), as on one node. Grace periods stay on the system clock: they bound how long a
    /// connection may be away, and their deadlines are shared with nodes that may not share it.
    clock: Clock,
    stats: Mutex<EngineStats>,
    /// What this backend asks of the desk: closing after a visitor's grace period.
    requests: DeskRequests,
}

fn unavailable(err: redis::RedisError) -> EngineError {
    tracing::debug!(error = %err, "redis error");
    EngineError::Unavailable {
        retry_after_ms: RETRY_AFTER_MS,
    }
}

type R<T> = Result<T, EngineError>;

impl RedisBackend {
    /// Connects (a single server lazily: a node starts even while Redis is away, and is not
    /// ready until it answers) and starts the node's background tasks.
    ///
    /// # Errors
    /// When the URL cannot be used, or a cluster cannot be reached at start-up.
    pub async fn start(
        services: Services,
        redis_settings: RedisSettings,
    ) -> Result<Self, redis::RedisError> {
        let Services {
            settings,
            persist,
            metrics,
            webhooks,
            shutdown,
            clock,
            requests,
        } = services;
        let client = redis::Client::open(redis_settings.url.as_str())?;
        let redis = Conn::open(
            &redis_settings.url,
            redis_settings.cluster,
            Duration::from_secs(1),
        )
        .await?;
        let node = uuid::Uuid::now_v7().simple().to_string();
        let keys = Keys::new(&redis_settings.key_prefix);
        let categories = Categories::new(&settings.categories);
        let registry = Arc::new(Mutex::new(Registry::default()));
        let (events, commands) = mpsc::channel(delivery::EVENT_QUEUE);
        let wait = delivery::WaitEstimate::default();
        let inner = Arc::new(Inner {
            node: node.clone(),
            keys: keys.clone(),
            redis: redis.clone(),
            client,
            settings: settings.clone(),
            redis_settings,
            categories: categories.clone(),
            registry: registry.clone(),
            events,
            metrics,
            persist,
            webhooks,
            shutdown: shutdown.clone(),
            healthy: AtomicBool::new(false),
            wait: wait.clone(),
            clock,
            stats: Mutex::new(EngineStats::default()),
            requests,
        });
        tokio::spawn(delivery::run(
            Delivery {
                node,
                keys,
                registry,
                redis,
                window: settings.replay_window.max(1),
                wait,
            },
            commands,
        ));
        presence::spawn(inner.clone());
        figures::spawn(
            inner.redis.clone(),
            inner.keys.clone(),
            categories.clone(),
            inner.metrics.clone(),
            shutdown,
        );
        tracing::info!(node = %inner.node, "redis engine started");
        Ok(Self { inner, categories })
    }

    /// This node's id, as it appears in Redis.
    pub fn node_id(&self) -> &str {
        &self.inner.node
    }
}

/// Runs one engine operation with an overall deadline.
async fn bounded<T>(f: impl std::future::Future<Output = R<T>>) -> R<T> {
    tokio::time::timeout(OP_TIMEOUT, f)
        .await
        .unwrap_or(Err(EngineError::Unavailable {
            retry_after_ms: RETRY_AFTER_MS,
        }))
}

/// A conversation's shared fields, from its `meta` hash.
#[derive(Debug, Clone)]
struct Meta {
    visitor: String,
    /// `visitor`, parsed: a `meta` whose visitor does not parse is treated as missing.
    visitor_id: VisitorId,
    visitor_name: Option<String>,
    category: String,
    agent: Option<String>,
    state: String,
    created_at: u64,
    assigned_at: Option<u64>,
    seq: u64,
    page: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The `closed` frame, once closed.
    closed_frame: Option<String>,
    /// The team it is routed to (its category's, or the one it was transferred to).
    team: Option<String>,
    transfers: u32,
    escalated: bool,
    /// When the satisfaction survey was sent.
    csat_at: Option<u64>,
    /// Started while nobody answered its category: its visitor leaving does not close it.
    offline: bool,
    /// Messages refused by a rate limit in it.
    rate_limited: u32,
    /// Times a visitor came back and reopened it.
    reopened: u32,
    /// Why it waits, as the visitor was last told.
    queue_reason: Option<QueueReason>,
    /// The report figures the append script keeps (see [`scripts::APPEND`]).
    due_at: Option<u64>,
    first_response_at: Option<u64>,
    awaiting_since: Option<u64>,
    response_ms_total: u64,
    responses: u32,
    contact: Option<String>,
}

impl Meta {
    /// Its state while open: with an agent or waiting.
    fn open_state(&self) -> ConversationState {
        if self.agent.is_some() {
            ConversationState::Assigned
        } else {
            ConversationState::Queued
        }
    }

    /// The snapshot the transcript store keeps.
    fn record(&self, id: ConversationId, state: ConversationState) -> ConversationRecord {
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

    fn from_hash(h: HashMap<String, String>) -> Option<Self> {
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

impl Inner {
    fn conn(&self) -> Conn {
        self.redis.clone()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().expect("registry lock poisoned")
    }

    fn agent_profile(&self, agent: &str) -> (String, u32) {
        AgentId::parse(agent)
            .ok()
            .and_then(|a| self.settings.agents.get(&a).cloned())
            .unwrap_or_else(|| (agent.to_string(), self.settings.default_capacity))
    }

    /// The agents' view of a conversation (see [`policy::agent_view`]); visitors get
    /// [`policy::visitor_view`] of it.
    fn view(&self, id: ConversationId, m: &Meta) -> ConversationView {
        let agent_name = m.agent.as_deref().map(|a| self.agent_profile(a).0);
        policy::agent_view(
            &m.record(id, ConversationState::Queued),
            agent_name.as_deref(),
            None,
            self.clock.now_millis(),
            self.settings.desk.sla_warning_percent,
        )
    }

    async fn meta(&self, id: ConversationId) -> R<Option<Meta>> {
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.meta(id))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(Meta::from_hash(h))
    }

    fn routing_invocation<'a>(&self, script: &'a redis::Script) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for k in self.keys.routing_all() {
            inv.key(k);
        }
        inv.arg(self.keys.prefix());
        inv
    }

    /// Sends an event to every node where one of `targets` has a socket: this node's delivery
    /// queue directly, the others over their channels. A failed publish is logged, not
    /// returned: what it carried is in Redis already, and the other nodes catch up from the
    /// streams (sequence gaps, resubscribe).
    async fn publish(&self, targets: &[ClientKey], wire: Wire) {
        // One query per client: their keys live in different cluster slots.
        let lookups = targets.iter().map(|t| {
            let mut conn = self.conn();
            let key = self.keys.client(t, "nodes");
            async move {
                redis::cmd("SMEMBERS")
                    .arg(key)
                    .query_async::<Vec<String>>(&mut conn)
                    .await
            }
        });
        let nodes = futures::future::try_join_all(lookups)
            .await
            .map(|sets| sets.into_iter().flatten().collect::<BTreeSet<_>>());
        let json = serde_json::to_string(&wire).expect("events serialise");
        let _ = self.events.send(Command::Wire(wire)).await;
        match nodes {
            Ok(nodes) => {
                let mut pipe = redis::pipe();
                let mut any = false;
                for n in nodes.iter().filter(|n| **n != self.node) {
                    pipe.cmd("PUBLISH")
                        .arg(self.keys.channel(n))
                        .arg(&json)
                        .ignore();
                    any = true;
                }
                if any {
                    if let Err(err) = pipe.query_async::<()>(&mut self.conn()).await {
                        tracing::warn!(error = %err, "publish failed; other nodes will catch up");
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot look up where clients are"),
        }
    }

    /// `queued`: the conversation, its position and why it waits, so the visitor's node
    /// keeps the position fresh with the same reason.
    async fn send_frame(
        &self,
        to: Vec<ClientKey>,
        frame: ServerFrame,
        queued: Option<(ConversationId, u32, QueueReason)>,
    ) {
        let targets = to.clone();
        self.publish(
            &targets,
            Wire::Frame {
                to,
                frame: frame.to_text().to_string(),
                waiting: queued.map(|(id, _, _)| id),
                queued: queued.map(|(_, p, r)| (p, r)),
            },
        )
        .await;
    }

    /// Tells a visitor its conversation waits; its node keeps the position fresh.
    async fn send_queued(
        &self,
        visitor: &VisitorId,
        id: ConversationId,
        position: u32,
        reason: QueueReason,
    ) {
        // Kept, so a visitor who reconnects while waiting is told the same reason; when and
        // where it entered the queue teach the wait estimate once it is assigned (system time,
        // as on one node: a wait is real seconds whatever the desk's clock says).
        let kept: Result<(), _> = redis::cmd("HSET")
            .arg(self.keys.meta(id))
            .arg("queue_reason")
            .arg(serde_json::to_string(&reason).unwrap_or_default())
            .arg("queued_since")
            .arg(format!("{}|{position}", now_millis()))
            .query_async(&mut self.conn())
            .await;
        if let Err(err) = kept {
            tracing::debug!(conversation = %id, error = %err, "queue reason not kept");
        }
        self.send_frame(
            vec![ClientKey::visitor(visitor)],
            self.queued_frame(id, position, reason),
            Some((id, position, reason)),
        )
        .await;
    }

    /// Records assignments made by a routing script and tells both sides.
    async fn apply_assignments(&self, flat: &[String]) -> R<()> {
        for pair in flat.chunks(2) {
            let [conv, agent] = pair else { continue };
            let Ok(conv) = ConversationId::parse(conv) else {
                continue;
            };
            let now = self.clock.now_millis();
            // Written before anyone is told: a message appended from now on names the agent,
            // so it is published to the agent's node too.
            let (before, queued_since): (Option<u64>, Option<String>) = redis::pipe()
                .cmd("HGET")
                .arg(self.keys.meta(conv))
                .arg("assigned_at")
                .cmd("HGET")
                .arg(self.keys.meta(conv))
                .arg("queued_since")
                .cmd("HDEL")
                .arg(self.keys.meta(conv))
                .arg("queued_since")
                .ignore()
                .cmd("HSET")
                .arg(self.keys.meta(conv))
                .arg("agent")
                .arg(agent)
                .arg("state")
                .arg("assigned")
                .arg("assigned_at")
                .arg(now)
                .ignore()
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            let Some(meta) = self.meta(conv).await? else {
                continue;
            };
            tracing::info!(conversation = %conv, agent = %agent, "assigned");
            self.persist
                .conversation(meta.record(conv, ConversationState::Assigned));
            // A wait in the queue is a time to agent and teaches the estimate; straight to an
            // agent is no wait; a transfer's direct hand-over is neither (as on one node).
            let queued = queued_since.as_deref().and_then(|q| {
                let (at, position) = q.split_once('|')?;
                Some((at.parse::<u64>().ok()?, position.parse::<u32>().ok()?))
            });
            if let Some((since, position)) = queued {
                let waited = now_millis().saturating_sub(since);
                self.metrics
                    .assigned_after(&meta.category, Duration::from_millis(waited));
                self.learn_wait(waited, position).await;
            } else if before.is_none() {
                self.metrics.assigned_after(&meta.category, Duration::ZERO);
            }
            let view = self.view(conv, &meta);
            self.webhooks
                .emit(WebhookEvent::conversation_assigned(&view));
            let mut targets = vec![ClientKey(format!("a:{agent}"))];
            targets.push(ClientKey(format!("v:{}", meta.visitor)));
            self.publish(
                &targets,
                Wire::Assigned {
                    conv,
                    visitor: meta.visitor.clone(),
                    agent: agent.clone(),
                    view: Box::new(view),
                },
            )
            .await;
            if let Ok(a) = AgentId::parse(agent) {
                self.push_agent_state(&a).await;
            }
        }
        Ok(())
    }

    /// Sends `agent_state` to an agent's sockets on this node if it changed.
    async fn push_agent_state(&self, agent: &AgentId) {
        if !self.registry().has(&ClientKey::agent(agent)) {
            return;
        }
        let status: Result<Option<String>, _> = redis::cmd("GET")
            .arg(self.keys.agent_status(agent))
            .query_async(&mut self.conn())
            .await;
        let Ok(status) = status else {
            return;
        };
        // The `{r}` slot: one round trip.
        let result: Result<(u32, Option<u32>, u32), _> = redis::pipe()
            .cmd("SCARD")
            .arg(self.keys.agent_chats(agent))
            .cmd("HGET")
            .arg(self.keys.routing("cap"))
            .arg(agent.as_str())
            .cmd("ZCARD")
            .arg(self.keys.routing("queue"))
            .query_async(&mut self.conn())
            .await;
        let Ok((open, cap, queue_length)) = result else {
            return;
        };
        let status = parse_status(status.as_deref()).unwrap_or(AgentStatus::Online);
        let capacity = cap.unwrap_or_else(|| self.agent_profile(agent.as_str()).1);
        let state = (status, open, capacity, queue_length);
        let frame = {
            let mut reg = self.registry();
            if reg.agent_state.get(agent) == Some(&state) {
                return;
            }
            reg.agent_state.insert(agent.clone(), state);
            ServerFrame::AgentState {
                status,
                open,
                capacity,
                queue_length,
            }
            .to_text()
        };
        for o in self.registry().sockets(&ClientKey::agent(agent)) {
            o.push(&frame);
        }
    }

    /// Which conversation a client means, and whether it may use it.
    /// The visitor's open conversation: `NoConversation` when there is none.
    async fn open_conversation(&self, v: &VisitorId) -> R<ConversationId> {
        let open: Option<String> = redis::cmd("GET")
            .arg(self.keys.visitor_open(v))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        open.and_then(|o| ConversationId::parse(&o).ok())
            .ok_or(EngineError::NoConversation)
    }

    async fn resolve(
        &self,
        client: &Client,
        conversation: Option<ConversationId>,
    ) -> R<(ConversationId, Meta)> {
        match client {
            Client::Visitor(v) => {
                let id = self.open_conversation(v).await?;
                let meta = self.meta(id).await?.ok_or(EngineError::NoConversation)?;
                if meta.state == "closed" {
                    return Err(EngineError::NoConversation);
                }
                Ok((id, meta))
            }
            Client::Agent(a) => {
                let id = conversation.ok_or(EngineError::NotFound)?;
                let meta = self.meta(id).await?.ok_or(EngineError::NotFound)?;
                if meta.state == "closed" {
                    return Err(EngineError::NotFound);
                }
                if meta.agent.as_deref() != Some(a.as_str()) {
                    return Err(EngineError::Forbidden);
                }
                Ok((id, meta))
            }
        }
    }

    /// Appends a message and delivers it. Returns the seq and whether it was a duplicate.
    /// `origin` is `None` for the notes Parley writes itself (transfers); a note goes to the
    /// agent's sockets only.
    async fn append(
        &self,
        id: ConversationId,
        origin: Option<&Origin>,
        cid: Option<ClientMessageId>,
        text: String,
        sender_name: Option<String>,
        kind: MessageKind,
    ) -> R<Appended> {
        let (role, sender) = match origin.map(|o| &o.client) {
            Some(Client::Visitor(v)) => (Role::Visitor, v.to_string()),
            Some(Client::Agent(a)) => (Role::Agent, a.to_string()),
            None => (Role::System, SYSTEM_ID.to_string()),
        };
        let note = kind == MessageKind::Note;
        let ts = self.clock.now_millis();
        let token = origin.map_or_else(String::new, |o| origin_token(&self.node, o.socket));
        let reply: Vec<String> = scripts::APPEND
            .key(self.keys.meta(id))
            .key(self.keys.log(id))
            .key(self.keys.cids(id))
            .arg(role.as_str())
            .arg(&sender)
            .arg(sender_name.clone().unwrap_or_default())
            .arg(&text)
            .arg(ts)
            .arg(cid.as_ref().map(|c| c.as_str()).unwrap_or(""))
            .arg(&token)
            .arg(self.settings.replay_window.max(1))
            .arg(if note { "note" } else { "" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match reply.first().map(String::as_str) {
            Some("ok") => {}
            Some("dup") => {
                let seq = Seq(reply.get(1).and_then(|s| s.parse().ok()).unwrap_or(0));
                let visitor = reply.get(2).cloned().unwrap_or_default();
                let agent = reply.get(3).cloned().filter(|a| !a.is_empty());
                if let Some(cid) = cid {
                    self.publish_duplicate(id, seq, cid, token, visitor, agent)
                        .await?;
                }
                return Ok(Appended::Duplicate { seq });
            }
            Some("err") if reply.get(1).map(String::as_str) == Some("forbidden") => {
                return Err(EngineError::Forbidden)
            }
            _ => {
                return Err(match role {
                    Role::Visitor => EngineError::NoConversation,
                    _ => EngineError::NotFound,
                })
            }
        }
        let seq = Seq(reply.get(1).and_then(|s| s.parse().ok()).unwrap_or(0));
        let visitor = reply.get(2).cloned().unwrap_or_default();
        let agent = reply.get(3).cloned().filter(|a| !a.is_empty());
        let sender_name = sender_name.or_else(|| reply.get(5).cloned().filter(|n| !n.is_empty()));
        // The first reply stopped the first-response clock: in time or not.
        let first_response = match reply.get(4).map(String::as_str) {
            Some("1") => self.meta(id).await?.map(|m| FirstResponse {
                category: m.category,
                due_at: m.due_at,
            }),
            _ => None,
        };
        let stored = Arc::new(StoredMessage {
            conversation_id: id,
            seq,
            sender_role: role,
            sender_id: sender,
            sender_name,
            text,
            ts,
            cid: cid.clone(),
            kind,
        });
        // Durable already (the stream); the store's copy is for REST transcripts.
        accepted(
            &self.persist,
            &self.metrics,
            &self.webhooks,
            &stored,
            first_response.as_ref(),
        );
        let message = message_view(&stored);
        let ack = cid.map(|cid| ack_frame(id, cid, seq, false).to_string());
        let mut targets = vec![ClientKey(format!("v:{visitor}"))];
        if let Some(a) = &agent {
            targets.push(ClientKey(format!("a:{a}")));
        }
        self.publish(
            &targets,
            Wire::Message {
                conv: id,
                seq: seq.0,
                visitor,
                agent,
                frame: ServerFrame::Message(message).to_text().to_string(),
                origin: token,
                ack,
                duplicate: false,
                note,
            },
        )
        .await;
        Ok(Appended::Stored { seq })
    }

    /// [`Inner::append`] for Parley's own callers (a start's first message, a transfer's
    /// notes), which reserve room in the transcript buffer here, as the desk does for clients.
    async fn append_reserved(
        &self,
        id: ConversationId,
        origin: Option<&Origin>,
        cid: Option<ClientMessageId>,
        text: String,
        sender_name: Option<String>,
        kind: MessageKind,
    ) -> R<Appended> {
        if !self.persist.try_reserve() {
            return Err(EngineError::Busy {
                retry_after_ms: RETRY_AFTER_MS,
            });
        }
        let appended = self.append(id, origin, cid, text, sender_name, kind).await;
        if !matches!(appended, Ok(Appended::Stored { .. })) {
            self.persist.unreserve();
        }
        appended
    }

    /// A `cid` sent again: the sending socket gets `ack{duplicate: true}` with the original seq,
    /// and the stored message is published again. Nodes that delivered it drop it (they know
    /// its seq); a node that never got it (the call that stored it timed out, or its node was
    /// killed before publishing) delivers it now, so a message stored once reaches the other
    /// side once.
    async fn publish_duplicate(
        &self,
        id: ConversationId,
        seq: Seq,
        cid: ClientMessageId,
        token: String,
        visitor: String,
        agent: Option<String>,
    ) -> R<()> {
        let stored = delivery::range(
            &mut self.conn(),
            &self.keys,
            id,
            seq.0.saturating_sub(1),
            Some(seq.0),
            1,
        )
        .await
        .map_err(unavailable)?;
        let ack = ServerFrame::Ack {
            conversation_id: id,
            cid,
            seq,
            duplicate: true,
        }
        .to_text()
        .to_string();
        let Some((message, _)) = stored.into_iter().next() else {
            // Out of the stream's window: delivered long ago. Just answer the sender.
            let socket = {
                let reg = self.registry();
                reg.visitors
                    .values()
                    .chain(reg.agents.values())
                    .flatten()
                    .find(|o| origin_token(&self.node, o.id()) == token)
                    .cloned()
            };
            if let Some(o) = socket {
                o.push(&ack.into());
            }
            return Ok(());
        };
        let mut targets = vec![ClientKey(format!("v:{visitor}"))];
        if let Some(a) = &agent {
            targets.push(ClientKey(format!("a:{a}")));
        }
        let note = message.kind == MessageKind::Note;
        self.publish(
            &targets,
            Wire::Message {
                conv: id,
                seq: seq.0,
                visitor,
                agent,
                frame: ServerFrame::Message(message).to_text().to_string(),
                origin: token,
                ack: Some(ack),
                duplicate: true,
                note,
            },
        )
        .await;
        Ok(())
    }

    /// Closes a conversation once (the `CLOSE` script); returns its record as it was open, or
    /// `None` when it was closed already.
    async fn close_once(&self, id: ConversationId, frame: &str) -> R<Option<ConversationRecord>> {
        let closed: Option<Vec<String>> = scripts::CLOSE
            .key(self.keys.meta(id))
            .key(self.keys.log(id))
            .key(self.keys.cids(id))
            .arg(self.clock.now_millis())
            .arg(self.closed_keep_secs())
            .arg(frame)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if closed.is_none() {
            return Ok(None);
        }
        Ok(self.meta(id).await?.map(|m| m.record(id, m.open_state())))
    }

    /// What Redis must do once a conversation is closed: forget it as the visitor's open one
    /// (keeping it for a reopen) and free its place in routing. Idempotent.
    async fn release_closed(&self, c: &Closing) -> R<Vec<String>> {
        let (id, v) = (c.id, &c.visitor);
        scripts::DELETE_IF
            .key(self.keys.visitor_open(v))
            .arg(id.to_string())
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // A `start` within the reopen window reopens this one: when it closed is kept with it
        // and judged on the desk's clock ([`policy::reopens`]); the key's TTL, on Redis's
        // clock, only tidies up and is never shorter than the window.
        let window = self.settings.desk.reopen_window.as_millis() as u64;
        if window > 0 {
            redis::cmd("SET")
                .arg(self.keys.client(&ClientKey::visitor(v), "last_closed"))
                .arg(format!("{id}|{}", c.closed_at))
                .arg("PX")
                .arg(window.saturating_add(1000))
                .query_async::<()>(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        if c.survey {
            redis::cmd("HSET")
                .arg(self.keys.meta(id))
                .arg("csat_at")
                .arg(c.closed_at)
                .query_async::<()>(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        self.routing_invocation(&scripts::RELEASE)
            .arg(id.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// What follows a close ([`Backend::wind_up`]), on a task of its own: freeing the agent's
    /// slot, telling both sides and storing must all happen even when the closing operation's
    /// deadline passes or its caller goes away, or the conversation would stay closed with its
    /// agent's slot taken and nobody told. The part Redis must do is retried.
    async fn after_close(self: Arc<Self>, c: Closing) -> R<()> {
        let id = c.id;
        // Each step is idempotent: retried with backoff (Redis away, or too slow for a burst),
        // 20 times over about a minute, then given up loudly.
        let mut wait = Duration::from_millis(100);
        let mut attempts = 0;
        let made = loop {
            match self.release_closed(&c).await {
                Ok(made) => break made,
                Err(err) if attempts < 20 && !self.shutdown.is_cancelled() => {
                    attempts += 1;
                    tracing::debug!(conversation = %id, error = %err, "winding up a close; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(err) => return Err(err),
            }
        };
        self.backfill_transcript(id).await;
        let mut targets = vec![ClientKey::visitor(&c.visitor)];
        if let Some(a) = &c.agent {
            targets.push(ClientKey::agent(a));
        }
        self.publish(
            &targets,
            Wire::Closed {
                conv: id,
                visitor: c.visitor.to_string(),
                agent: c.agent.as_ref().map(ToString::to_string),
                frame: c.frame.to_string(),
            },
        )
        .await;
        if let Some(a) = &c.agent {
            self.push_agent_state(a).await;
        }
        let handed_out = self.apply_assignments(&made).await;
        // Last, because a flush waits for everything queued before it (seconds of writes under
        // a burst of closes): stored, then asked, since the survey's answer is checked against
        // the store, maybe by another node.
        if let Err(err) = self.persist.flush().await {
            tracing::warn!(conversation = %id, error = %err, "flush after close failed; will retry");
        }
        if c.survey {
            self.send_frame(
                vec![ClientKey::visitor(&c.visitor)],
                ServerFrame::CsatRequest {
                    conversation_id: id,
                },
                None,
            )
            .await;
        }
        handed_out
    }

    /// Hands the whole stream of a closing conversation to this node's persister. Each node
    /// stores what it accepted, write-behind; a node killed before its batch was written leaves
    /// holes in the shared transcript, which this fills from the stream (the durable copy) when
    /// the conversation closes, on whichever node closes it. Stores write messages
    /// idempotently, so what is stored already is not duplicated. Best effort: the stream holds
    /// the last `transcripts.replay_window` messages, and a full buffer is logged.
    async fn backfill_transcript(&self, id: ConversationId) {
        let mut after = 0;
        loop {
            let page =
                delivery::range(&mut self.conn(), &self.keys, id, after, None, BACKFILL_PAGE).await;
            let page = match page {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(conversation = %id, error = %err, "cannot read the stream to complete the transcript");
                    return;
                }
            };
            let Some(last) = page.last().map(|(m, _)| m.seq.0) else {
                return;
            };
            let full = page.len() >= BACKFILL_PAGE;
            for (m, _) in page {
                if !self.persist.try_reserve() {
                    tracing::warn!(conversation = %id, seq = %m.seq, "transcript buffer full; transcript not completed from the stream");
                    return;
                }
                self.persist.message(Arc::new(StoredMessage {
                    conversation_id: id,
                    seq: m.seq,
                    sender_role: m.sender.role,
                    sender_id: m.sender.id,
                    sender_name: m.sender.name,
                    text: m.text,
                    ts: m.ts,
                    cid: m.cid,
                    kind: m.kind,
                }));
            }
            if !full {
                return;
            }
            after = last;
        }
    }

    /// Forgets an agent and puts its chats at the front of the queue.
    async fn remove_agent(&self, agent: &AgentId) -> R<()> {
        let out: Vec<String> = self
            .routing_invocation(&scripts::REMOVE_AGENT)
            .arg(agent.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let n: usize = out.first().and_then(|n| n.parse().ok()).unwrap_or(0);
        let orphans = out.get(1..1 + 2 * n).unwrap_or_default();
        let made = out.get(1 + 2 * n..).unwrap_or_default();
        if n > 0 {
            tracing::info!(agent = %agent, chats = n, "agent gone; returning chats to the front of the queue");
        }
        for pair in orphans.chunks(2) {
            let [conv, position] = pair else { continue };
            let Ok(id) = ConversationId::parse(conv) else {
                continue;
            };
            let _: Result<(), _> = redis::cmd("HSET")
                .arg(self.keys.meta(id))
                .arg("agent")
                .arg("")
                .arg("state")
                .arg("queued")
                .query_async(&mut self.conn())
                .await;
            let position: u32 = position.parse().unwrap_or(1);
            if let Some(meta) = self.meta(id).await? {
                self.persist
                    .conversation(meta.record(id, ConversationState::Queued));
                if let Ok(v) = VisitorId::parse(&meta.visitor) {
                    self.send_queued(&v, id, position, QueueReason::AgentDisconnected)
                        .await;
                }
            }
        }
        self.apply_assignments(made).await
    }

    /// Marks a client present on this node.
    async fn arrive(&self, client: &ClientKey) -> R<u64> {
        redis::cmd("SADD")
            .arg(self.keys.node_clients(&self.node))
            .arg(&client.0)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // The client's slot: one round trip.
        let (generation,): (u64,) = redis::pipe()
            .cmd("SADD")
            .arg(self.keys.client(client, "nodes"))
            .arg(&self.node)
            .ignore()
            .cmd("INCR")
            .arg(self.keys.client(client, "gen"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(generation)
    }

    /// The client's last socket on this node went: returns how many nodes still have one, and
    /// the join generation to give a grace timer.
    async fn depart(&self, client: &ClientKey) -> Result<(usize, u64), redis::RedisError> {
        // The client's own set first: if only this half is applied (a reply lost in an
        // outage), the node's list still names the client and the heartbeat finishes the job.
        let (left, generation): (usize, Option<u64>) = redis::pipe()
            .cmd("SREM")
            .arg(self.keys.client(client, "nodes"))
            .arg(&self.node)
            .ignore()
            .cmd("SCARD")
            .arg(self.keys.client(client, "nodes"))
            .cmd("GET")
            .arg(self.keys.client(client, "gen"))
            .query_async(&mut self.conn())
            .await?;
        redis::cmd("SREM")
            .arg(self.keys.node_clients(&self.node))
            .arg(&client.0)
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok((left, generation.unwrap_or(0)))
    }

    /// A client gone from every node: after its grace period (if it did not come back), a
    /// visitor's conversation closes and an agent's chats go back to the queue. The deadline is
    /// kept in Redis, not in a timer, so it survives this node stopping: whichever node looks
    /// first after the deadline acts on it ([`presence`]).
    async fn start_grace(&self, client: &ClientKey, generation: u64, grace: Duration) -> R<()> {
        let deadline = now_millis() + grace.as_millis() as u64;
        redis::cmd("ZADD")
            .arg(self.keys.graces())
            .arg(deadline)
            .arg(format!("{}|{generation}", client.0))
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// Acts on grace periods that ran out; each is claimed by exactly one node (`ZREM`).
    async fn expire_graces(&self) -> R<()> {
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.graces())
            .arg("-inf")
            .arg(now_millis())
            .arg("LIMIT")
            .arg(0)
            .arg(100)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        for entry in due {
            let claimed: u32 = redis::cmd("ZREM")
                .arg(self.keys.graces())
                .arg(&entry)
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if claimed == 0 {
                continue;
            }
            let Some((client, generation)) = entry.rsplit_once('|') else {
                continue;
            };
            let generation = generation.parse().unwrap_or(0);
            self.grace_expired(&ClientKey(client.to_string()), generation)
                .await?;
        }
        Ok(())
    }

    async fn grace_expired(&self, client: &ClientKey, generation: u64) -> R<()> {
        let (present, current): (usize, Option<u64>) = redis::pipe()
            .cmd("SCARD")
            .arg(self.keys.client(client, "nodes"))
            .cmd("GET")
            .arg(self.keys.client(client, "gen"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if present > 0 || current.unwrap_or(0) != generation {
            return Ok(());
        }
        if let Some(v) = client.as_visitor() {
            let open: Option<String> = redis::cmd("GET")
                .arg(self.keys.visitor_open(&v))
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if let Some(id) = open.and_then(|o| ConversationId::parse(&o).ok()) {
                // An offline message waits for an agent whether or not its visitor stays: the
                // answer is there when they come back.
                if self.meta(id).await?.is_some_and(|m| m.offline) {
                    return Ok(());
                }
                // The desk closes it.
                let _ = self.requests.send(DeskRequest::VisitorLeft(id));
            }
        } else if let Some(a) = client.as_agent() {
            self.remove_agent(&a).await?;
        }
        Ok(())
    }

    /// A client of this node left every node: what happens next depends on its role.
    async fn absent_everywhere(&self, client: ClientKey, generation: u64) -> R<()> {
        if let Some(v) = client.as_visitor() {
            let open: Option<String> = redis::cmd("GET")
                .arg(self.keys.visitor_open(&v))
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if open.is_some() {
                self.start_grace(&client, generation, self.settings.visitor_grace)
                    .await?;
            }
        } else if let Some(a) = client.as_agent() {
            let chats: usize = redis::cmd("SCARD")
                .arg(self.keys.agent_chats(&a))
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if chats == 0 {
                self.remove_agent(&a).await?;
            } else {
                self.routing_invocation(&scripts::STOP_ACCEPTING)
                    .arg(a.as_str())
                    .invoke_async::<()>(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                tracing::info!(agent = %a, "agent connection lost; grace period starts");
                self.start_grace(&client, generation, self.settings.agent_grace)
                    .await?;
            }
        }
        Ok(())
    }

    /// Rebuilds the routing indexes from the routing data (see [`scripts::REINDEX`]) and
    /// hands out what that frees.
    pub(super) async fn reindex_routing(&self) -> R<()> {
        let made: Vec<String> = self
            .routing_invocation(&scripts::REINDEX)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.apply_assignments(&made).await
    }

    /// Puts an agent into routing with its capacity and whether it takes new chats.
    async fn set_agent(&self, agent: &AgentId, capacity: u32, accepting: bool) -> R<()> {
        let made: Vec<String> = self
            .routing_invocation(&scripts::SET_AGENT)
            .arg(agent.as_str())
            .arg(capacity)
            .arg(u8::from(accepting))
            .arg(self.teams_arg(agent))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.apply_assignments(&made).await
    }

    async fn register(
        &self,
        client: ClientKey,
        outbox: Outbox,
        resume: Vec<Resume>,
    ) -> R<delivery::Replays> {
        let (reply, rx) = oneshot::channel();
        self.events
            .send(Command::Register {
                client,
                outbox,
                resume,
                reply,
            })
            .await
            .map_err(|_| EngineError::Unavailable {
                retry_after_ms: RETRY_AFTER_MS,
            })?;
        rx.await
            .map_err(|_| EngineError::Unavailable {
                retry_after_ms: RETRY_AFTER_MS,
            })?
            .map_err(unavailable)
    }

    /// Brings this node's sockets up to date after events may have been missed (its
    /// subscription was down, or Redis lost its data): every conversation it delivers, and every
    /// chat of its agents, is reconciled with Redis in order with the live events: an
    /// assignment a side was not told of, the messages after the last one delivered, the close.
    pub(super) async fn resync(&self) -> R<()> {
        let mut convs: BTreeSet<ConversationId> = self.registry().tracked().into_iter().collect();
        let agents: Vec<AgentId> = self.registry().agents.keys().cloned().collect();
        for agent in agents {
            let mine: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.keys.agent_chats(&agent))
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            convs.extend(mine.iter().filter_map(|c| ConversationId::parse(c).ok()));
        }
        for conv in convs {
            let meta = self.meta(conv).await?;
            let (assigned, closed) = match meta {
                // Gone (Redis restarted empty): only what the stream still has, if anything.
                None => (None, None),
                Some(m) if m.state == "closed" => (
                    None,
                    m.closed_frame.clone().map(|frame| Wire::Closed {
                        conv,
                        visitor: m.visitor.clone(),
                        agent: m.agent.clone(),
                        frame,
                    }),
                ),
                Some(m) => (
                    m.agent.clone().map(|agent| Wire::Assigned {
                        conv,
                        visitor: m.visitor.clone(),
                        agent,
                        view: Box::new(self.view(conv, &m)),
                    }),
                    None,
                ),
            };
            let reconcile = Command::Reconcile {
                conv,
                assigned: assigned.map(Box::new),
                closed: closed.map(Box::new),
            };
            if self.events.send(reconcile).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Runs the `TRANSFER` script (`mode`: `team`, `agent` or `requeue`) and tells everyone
    /// concerned, as `relocate` does on one node: the agent it leaves (`transferred`), the
    /// visitor (`transferred` unless it is only requeued, then `assigned` or `queued`), the
    /// receiving agent (`assigned` with the history, on whichever node).
    #[allow(clippy::too_many_arguments)]
    async fn relocate(
        &self,
        id: ConversationId,
        meta: &Meta,
        from: Option<&AgentId>,
        mode: &str,
        to_arg: &str,
        kind: MoveKind,
        notes: Option<MoveNotes<'_>>,
    ) -> R<()> {
        let directory = &self.settings.directory;
        let moved = mode != "requeue";
        let escalation = kind == MoveKind::Escalation;
        let out: Vec<String> = self
            .routing_invocation(&scripts::TRANSFER)
            .arg(id.to_string())
            .arg(from.map_or("", AgentId::as_str))
            .arg(mode)
            .arg(to_arg)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let (outcome, value) = (
            out.first().map(String::as_str).unwrap_or_default(),
            out.get(1).cloned().unwrap_or_default(),
        );
        let made = out.get(2..).unwrap_or_default();
        let receiving = match outcome {
            "assigned" => Some(value.clone()),
            "queued" => None,
            _ => {
                return Err(match value.as_str() {
                    "forbidden" => EngineError::Forbidden,
                    "unavailable" => EngineError::TargetUnavailable,
                    _ => EngineError::NotFound,
                })
            }
        };
        // The history the receiving side reads says who moved it where, and why: written once
        // the move is decided, still as `from`'s (the conversation's agent is rewritten below),
        // so the notes reach `from` as on one node and are there when the receiver reads.
        // The move is made: a note that cannot be written now is logged, and everyone is still
        // told where the conversation went.
        if let Some(notes) = notes {
            let mut written = self
                .append_reserved(id, None, None, notes.system, None, MessageKind::Note)
                .await
                .map(|_| ());
            if let (Ok(()), Some(text)) = (&written, notes.agent) {
                written = self
                    .append_reserved(
                        id,
                        Some(notes.origin),
                        None,
                        text,
                        Some(notes.by),
                        MessageKind::Note,
                    )
                    .await
                    .map(|_| ());
            }
            if let Err(err) = written {
                tracing::warn!(conversation = %id, error = %err, "transfer note not written");
            }
        }
        // The conversation's figures and where it now is, before anyone is told: a message
        // appended from now on no longer names `from`.
        let team = if mode == "team" {
            to_arg.to_string()
        } else {
            meta.team.clone().unwrap_or_default()
        };
        let mut write = redis::pipe();
        write
            .cmd("HSET")
            .arg(self.keys.meta(id))
            .arg("team")
            .arg(&team)
            .ignore();
        if moved {
            write
                .cmd("HINCRBY")
                .arg(self.keys.meta(id))
                .arg("transfers")
                .arg(1)
                .ignore();
        }
        if escalation {
            write
                .cmd("HSET")
                .arg(self.keys.meta(id))
                .arg("escalated")
                .arg("1")
                .ignore();
        }
        if receiving.is_none() {
            write
                .cmd("HSET")
                .arg(self.keys.meta(id))
                .arg("agent")
                .arg("")
                .arg("state")
                .arg("queued")
                .ignore();
        }
        write
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let label_kind = policy::transfer_label(kind, mode == "agent");
        self.metrics
            .desk
            .transfers
            .get_or_create(&TransferLabel { kind: label_kind })
            .inc();
        let team_name = TeamId::parse(&team)
            .ok()
            .and_then(|t| directory.team(&t).map(|t| t.name.clone()));
        let frame = ServerFrame::Transferred {
            conversation_id: id,
            team: team_name,
            agent: receiving.as_ref().map(|a| Participant {
                id: a.clone(),
                name: Some(self.agent_profile(a).0),
            }),
            escalated: escalation,
        }
        .to_text()
        .to_string();
        tracing::info!(conversation = %id, from = ?from.map(AgentId::as_str), kind = label_kind, "moved");
        let mut told = Vec::new();
        if let Some(from) = from {
            told.push(ClientKey::agent(from));
        }
        if moved {
            told.push(ClientKey(format!("v:{}", meta.visitor)));
        }
        self.publish(
            &told,
            Wire::Transferred {
                conv: id,
                // Empty: the visitor is not told (only requeued, it hears `queued`).
                visitor: if moved {
                    meta.visitor.clone()
                } else {
                    String::new()
                },
                from: from.map_or_else(String::new, ToString::to_string),
                frame,
            },
        )
        .await;
        match receiving {
            Some(agent) => self.apply_assignments(&[id.to_string(), agent]).await?,
            None => {
                let position: u32 = value.parse().unwrap_or(1);
                if let Some(meta) = self.meta(id).await? {
                    self.persist
                        .conversation(meta.record(id, ConversationState::Queued));
                }
                let reason = policy::requeue_reason(kind, moved);
                if let Ok(v) = VisitorId::parse(&meta.visitor) {
                    self.send_queued(&v, id, position, reason).await;
                }
            }
        }
        if let Some(now) = self.meta(id).await? {
            let from = from.map(|a| Participant {
                id: a.to_string(),
                name: Some(self.agent_profile(a.as_str()).0),
            });
            self.webhooks.emit(WebhookEvent::conversation_transferred(
                &self.view(id, &now),
                from.as_ref(),
            ));
        }
        self.apply_assignments(made).await?;
        if let Some(from) = from {
            self.push_agent_state(from).await;
        }
        Ok(())
    }

    /// For each target, whether an agent taking chats now (on any node) serves it: one
    /// `SCARD` of the target's staff index each, whatever the number of agents.
    async fn staffed(&self, targets: &[Target]) -> R<Vec<bool>> {
        let mut pipe = redis::pipe();
        for t in targets {
            pipe.cmd("SCARD").arg(self.keys.staff(t.team()));
        }
        let counts: Vec<u64> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(counts.into_iter().map(|n| n > 0).collect())
    }

    /// Every agent in the routing ring: connected on some node or within its grace period.
    async fn ring_agents(&self) -> R<Vec<AgentId>> {
        let ring: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.routing("ring"))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(ring.iter().filter_map(|a| AgentId::parse(a).ok()).collect())
    }

    /// Agents with a socket on any node: their status, load and capacity.
    async fn presence(&self) -> R<Vec<AgentPresence>> {
        let agents = self.ring_agents().await?;
        // One query per agent for its own slot; loads and capacities in one on `{r}`.
        let lookups = agents.iter().map(|a| {
            let mut conn = self.conn();
            let client = ClientKey::agent(a);
            let (nodes, status) = (
                self.keys.client(&client, "nodes"),
                self.keys.agent_status(a),
            );
            async move {
                redis::pipe()
                    .cmd("SCARD")
                    .arg(nodes)
                    .cmd("GET")
                    .arg(status)
                    .query_async::<(usize, Option<String>)>(&mut conn)
                    .await
            }
        });
        let seen = futures::future::try_join_all(lookups)
            .await
            .map_err(unavailable)?;
        let mut present = Vec::new();
        for (agent, (nodes, status)) in agents.into_iter().zip(seen) {
            // An agent within its grace period has no socket: nobody to hand a chat to.
            if nodes == 0 {
                continue;
            }
            let (open, cap): (u32, Option<u32>) = redis::pipe()
                .cmd("SCARD")
                .arg(self.keys.agent_chats(&agent))
                .cmd("HGET")
                .arg(self.keys.routing("cap"))
                .arg(agent.as_str())
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            present.push(AgentPresence {
                status: parse_status(status.as_deref()).unwrap_or(AgentStatus::Online),
                open,
                capacity: cap.unwrap_or_else(|| self.agent_profile(agent.as_str()).1),
                agent,
            });
        }
        present.sort_by(|a, b| a.agent.as_str().cmp(b.agent.as_str()));
        Ok(present)
    }

    /// Makes `id` the visitor's one open conversation: `ConversationOpen` when it has another,
    /// unless what the key names is closed or gone (a leftover), whose place it then takes
    /// (unless someone else just did).
    async fn claim_open(&self, visitor: &VisitorId, id: ConversationId) -> R<()> {
        let claimed: Option<String> = redis::cmd("SET")
            .arg(self.keys.visitor_open(visitor))
            .arg(id.to_string())
            .arg("NX")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if claimed.is_some() {
            return Ok(());
        }
        let stale: Option<String> = redis::cmd("GET")
            .arg(self.keys.visitor_open(visitor))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match self.resolve(&Client::Visitor(visitor.clone()), None).await {
            Ok(_) => return Err(EngineError::ConversationOpen),
            Err(EngineError::NoConversation) => {}
            Err(e) => return Err(e),
        }
        let replaced: i64 = scripts::REPLACE_IF
            .key(self.keys.visitor_open(visitor))
            .arg(stale.unwrap_or_default())
            .arg(id.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if replaced == 0 {
            return Err(EngineError::ConversationOpen);
        }
        Ok(())
    }

    /// Writes a new conversation's shared record.
    async fn create(&self, id: ConversationId, visitor: &VisitorId, new: NewConversation) -> R<()> {
        let name: Option<String> = redis::cmd("GET")
            .arg(self.keys.client(&ClientKey::visitor(visitor), "name"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let metadata = new
            .metadata
            .as_ref()
            .map(|m| serde_json::to_string(m).unwrap_or_default())
            .unwrap_or_default();
        redis::cmd("HSET")
            .arg(self.keys.meta(id))
            .arg("visitor")
            .arg(visitor.as_str())
            .arg("visitor_name")
            .arg(name.unwrap_or_default())
            .arg("category")
            .arg(new.category.as_str())
            .arg("state")
            .arg("queued")
            .arg("created_at")
            .arg(self.clock.now_millis())
            .arg("due_at")
            .arg(new.due_at)
            .arg("contact")
            .arg(new.contact.unwrap_or_default())
            .arg("seq")
            .arg(0)
            .arg("page")
            .arg(new.page.unwrap_or_default())
            .arg("metadata")
            .arg(metadata)
            .arg("team")
            .arg(Inner::target_arg(&new.target))
            .arg("offline")
            .arg(if new.offline { "1" } else { "" })
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// Opens a closed conversation again (its keys no longer expire).
    async fn reopen(&self, id: ConversationId) -> R<()> {
        let reopened: i64 = scripts::REOPEN
            .key(self.keys.meta(id))
            .key(self.keys.log(id))
            .key(self.keys.cids(id))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if reopened == 0 {
            return Err(EngineError::ConversationOpen);
        }
        // A wait from before it closed is not this visit's.
        let _: Result<(), _> = redis::cmd("HDEL")
            .arg(self.keys.meta(id))
            .arg("queued_since")
            .query_async(&mut self.conn())
            .await;
        Ok(())
    }

    /// Seconds a closed conversation's keys are kept: a day for late readers, or the whole
    /// reopen window when that is longer, so a visitor may reopen as late as on one node.
    fn closed_keep_secs(&self) -> u64 {
        CLOSED_KEEP_SECS.max(self.settings.desk.reopen_window.as_secs() + 60)
    }

    /// An agent's teams as the routing scripts read them: ",t1,t2," ("" for none).
    fn teams_arg(&self, agent: &AgentId) -> String {
        let teams = self.settings.directory.teams_of(agent);
        if teams.is_empty() {
            return String::new();
        }
        let mut s = String::from(",");
        for t in teams {
            s.push_str(t.as_str());
            s.push(',');
        }
        s
    }

    /// What the routing scripts take as a target: a team id, or "" for any agent.
    fn target_arg(target: &Target) -> &str {
        target.team().map_or("", TeamId::as_str)
    }

    /// Positions of conversations in their targets' queues (`None`: not queued).
    async fn positions(&self, ids: &[ConversationId]) -> R<Vec<Option<u32>>> {
        let mut inv = self.routing_invocation(&scripts::POSITIONS);
        for id in ids {
            inv.arg(id.to_string());
        }
        let out: Vec<u32> = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(out.into_iter().map(|p| (p > 0).then_some(p)).collect())
    }

    fn queued_frame(&self, id: ConversationId, position: u32, reason: QueueReason) -> ServerFrame {
        ServerFrame::Queued {
            conversation_id: id,
            position,
            estimated_wait_ms: self.wait.estimate(position),
            reason,
        }
    }

    /// Reads the desk's learnt wait per position, which every node's assignments feed.
    pub(super) async fn read_wait_estimate(&self) {
        let learnt: Result<Option<f64>, _> = redis::cmd("GET")
            .arg(self.keys.routing("wait_per_position"))
            .query_async(&mut self.conn())
            .await;
        if let Ok(Some(ms)) = learnt {
            self.wait.set(ms);
        }
    }

    /// Feeds one assignment's wait into the shared estimate, as one node does with its own
    /// ([`policy::learn_wait`]). Two nodes learning at once may each smooth from the same
    /// previous figure and one sample is lost: an estimate, not a count, so no script for it.
    async fn learn_wait(&self, waited_ms: u64, position: u32) {
        let key = self.keys.routing("wait_per_position");
        let previous: Result<Option<f64>, _> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.conn())
            .await;
        let Ok(previous) = previous else {
            return;
        };
        let learnt = policy::learn_wait(previous, waited_ms, position);
        self.wait.set(learnt);
        let _: Result<(), _> = redis::cmd("SET")
            .arg(&key)
            .arg(learnt)
            .query_async(&mut self.conn())
            .await;
    }
}

fn parse_status(s: Option<&str>) -> Option<AgentStatus> {
    match s? {
        "online" => Some(AgentStatus::Online),
        "away" => Some(AgentStatus::Away),
        "offline" => Some(AgentStatus::Offline),
        _ => None,
    }
}

impl Backend for RedisBackend {
    fn categories(&self) -> &Categories {
        &self.categories
    }

    async fn join_visitor(&self, join: VisitorJoin, outbox: Outbox) -> Result<Joined, EngineError> {
        let inner = &self.inner;
        bounded(async {
            let client = ClientKey::visitor(&join.visitor);
            inner.arrive(&client).await?;
            if let Some(name) = &join.name {
                let _: Result<(), _> = redis::cmd("SET")
                    .arg(inner.keys.client(&client, "name"))
                    .arg(name)
                    .query_async(&mut inner.conn())
                    .await;
            }
            let open: Option<String> = redis::cmd("GET")
                .arg(inner.keys.visitor_open(&join.visitor))
                .query_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let open = open.and_then(|o| ConversationId::parse(&o).ok());
            let meta = match open {
                Some(id) => inner
                    .meta(id)
                    .await?
                    .filter(|m| m.state != "closed")
                    .map(|m| (id, m)),
                None => None,
            };
            let resume = meta
                .as_ref()
                .map(|(id, m)| {
                    vec![Resume {
                        conv: *id,
                        last_seq: join.last_seq.unwrap_or(Seq::ZERO),
                        agent: m.agent.as_deref().and_then(|a| AgentId::parse(a).ok()),
                    }]
                })
                .unwrap_or_default();
            let replays = inner.register(client, outbox, resume).await?;
            let mut conversations = Vec::new();
            let mut replay = Vec::new();
            if let Some((id, m)) = meta {
                let (recovered, frames) = replays
                    .into_iter()
                    .next()
                    .map(|(_, r, f)| (r, f))
                    .unwrap_or((true, Vec::new()));
                // The visitor's view, as on one node: no clock, contact or internal figures.
                conversations.push(policy::visitor_view(ConversationView {
                    recovered: Some(recovered),
                    ..inner.view(id, &m)
                }));
                replay = frames;
                if m.agent.is_none() {
                    let position = inner.positions(&[id]).await?.into_iter().next().flatten();
                    if let Some(position) = position {
                        let reason = m.queue_reason.unwrap_or(QueueReason::NoAgentAvailable);
                        replay.push(inner.queued_frame(id, position, reason).to_text());
                        inner.registry().waiting.insert(
                            id,
                            delivery::Waiting {
                                visitor: join.visitor.clone(),
                                last: Some(inner.wait.bucket(position)),
                                reason,
                            },
                        );
                    }
                }
            }
            Ok(Joined {
                conversations,
                status: None,
                replay,
            })
        })
        .await
    }

    async fn join_agent(&self, join: AgentJoin, outbox: Outbox) -> Result<Joined, EngineError> {
        let inner = &self.inner;
        bounded(async {
            let client = ClientKey::agent(&join.agent);
            inner.arrive(&client).await?;
            let stored: Option<String> = redis::cmd("GET")
                .arg(inner.keys.agent_status(&join.agent))
                .query_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let status = join
                .status
                .or_else(|| parse_status(stored.as_deref()))
                .unwrap_or(AgentStatus::Online);
            redis::cmd("SET")
                .arg(inner.keys.agent_status(&join.agent))
                .arg(status.as_str())
                .query_async::<()>(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let mine: Vec<String> = redis::cmd("SMEMBERS")
                .arg(inner.keys.agent_chats(&join.agent))
                .query_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let mut metas = Vec::new();
            for id in mine.iter().filter_map(|c| ConversationId::parse(c).ok()) {
                if let Some(m) = inner.meta(id).await? {
                    if m.state != "closed" {
                        metas.push((id, m));
                    }
                }
            }
            metas.sort_by_key(|(id, _)| *id);
            let resume = metas
                .iter()
                .map(|(id, _)| Resume {
                    conv: *id,
                    last_seq: join
                        .resume
                        .iter()
                        .find(|r| r.conversation_id == *id)
                        .map_or(Seq::ZERO, |r| r.last_seq),
                    agent: Some(join.agent.clone()),
                })
                .collect();
            let replays = inner.register(client, outbox, resume).await?;
            let mut conversations = Vec::new();
            let mut replay = Vec::new();
            for ((id, m), (_, recovered, frames)) in metas.iter().zip(replays) {
                conversations.push(ConversationView {
                    recovered: Some(recovered),
                    ..inner.view(*id, m)
                });
                replay.extend(frames);
            }
            inner.registry().agent_state.remove(&join.agent);
            tracing::info!(agent = %join.agent, status = status.as_str(), chats = conversations.len(), "agent joined");
            inner
                .set_agent(&join.agent, join.capacity, status == AgentStatus::Online)
                .await?;
            inner.push_agent_state(&join.agent).await;
            Ok(Joined {
                conversations,
                status: Some(status),
                replay,
            })
        })
        .await
    }

    async fn leave(&self, client: &Client, socket: SocketId) {
        let key = match client {
            Client::Visitor(v) => ClientKey::visitor(v),
            Client::Agent(a) => ClientKey::agent(a),
        };
        let last_here = self.inner.registry().remove(&key, socket);
        if !last_here {
            return;
        }
        let inner = self.inner.clone();
        let result = bounded(async {
            let (left, generation) = inner.depart(&key).await.map_err(unavailable)?;
            if left == 0 {
                inner.absent_everywhere(key.clone(), generation).await?;
            }
            Ok(())
        })
        .await;
        if let Err(err) = result {
            // Retried by the heartbeat until Redis answers.
            tracing::warn!(client = %key.0, error = %err, "leave not recorded in redis yet; will retry");
            self.inner.registry().departed.push(key);
        }
    }

    async fn last_closed(
        &self,
        visitor: &VisitorId,
    ) -> Result<Option<(ConversationId, UnixMillis)>, EngineError> {
        let inner = &self.inner;
        if inner.settings.desk.reopen_window.is_zero() {
            return Ok(None);
        }
        bounded(async {
            let key = inner
                .keys
                .client(&ClientKey::visitor(visitor), "last_closed");
            let last: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            Ok(last.as_deref().and_then(|l| {
                let (id, at) = l.split_once('|')?;
                Some((ConversationId::parse(id).ok()?, at.parse().ok()?))
            }))
        })
        .await
    }

    async fn open(
        &self,
        visitor: &VisitorId,
        opening: Opening,
    ) -> Result<Option<ConversationRecord>, EngineError> {
        let inner = &self.inner;
        bounded(async {
            let id = match &opening {
                Opening::Reopen { id, .. } => {
                    let closed = inner.meta(*id).await?.is_some_and(|m| m.state == "closed");
                    if !closed {
                        return Ok(None);
                    }
                    *id
                }
                Opening::New(_) => ConversationId::new(),
            };
            inner.claim_open(visitor, id).await?;
            match opening {
                Opening::Reopen { .. } => inner.reopen(id).await?,
                Opening::New(new) => inner.create(id, visitor, new).await?,
            }
            Ok(inner
                .meta(id)
                .await?
                .map(|m| m.record(id, ConversationState::Queued)))
        })
        .await
    }

    async fn place(
        &self,
        id: ConversationId,
        visitor: &VisitorId,
        category: Category,
        target: Target,
        reason: QueueReason,
    ) -> Result<(), EngineError> {
        let inner = &self.inner;
        bounded(async {
            let placed: Vec<String> = inner
                .routing_invocation(&scripts::REQUEST)
                .arg(id.to_string())
                .arg(inner.categories.rank(&category))
                .arg(Inner::target_arg(&target))
                .invoke_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            match placed.first().map(String::as_str) {
                Some("assigned") => {
                    let agent = placed.get(1).cloned().unwrap_or_default();
                    inner.apply_assignments(&[id.to_string(), agent]).await?;
                }
                _ => {
                    let position: u32 = placed.get(1).and_then(|p| p.parse().ok()).unwrap_or(1);
                    tracing::info!(conversation = %id, position, "queued");
                    inner.send_queued(visitor, id, position, reason).await;
                }
            }
            Ok(())
        })
        .await
    }

    async fn close(
        &self,
        id: ConversationId,
        frame: &Frame,
    ) -> Result<Option<ConversationRecord>, EngineError> {
        bounded(self.inner.close_once(id, frame)).await
    }

    async fn wind_up(&self, closing: Closing) {
        let inner = self.inner.clone();
        let id = closing.id;
        tokio::spawn(async move {
            if let Err(err) = inner.after_close(closing).await {
                tracing::error!(conversation = %id, error = %err, "a closed conversation could not be wound up");
            }
        });
    }

    async fn set_status(&self, agent: &AgentId, status: AgentStatus) -> Result<(), EngineError> {
        let inner = &self.inner;
        if !inner.registry().has(&ClientKey::agent(agent)) {
            return Err(EngineError::NotFound);
        }
        bounded(async {
            redis::cmd("SET")
                .arg(inner.keys.agent_status(agent))
                .arg(status.as_str())
                .query_async::<()>(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let cap: Option<u32> = redis::cmd("HGET")
                .arg(inner.keys.routing("cap"))
                .arg(agent.as_str())
                .query_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let capacity = cap.unwrap_or_else(|| inner.agent_profile(agent.as_str()).1);
            tracing::info!(agent = %agent, status = status.as_str(), "status");
            inner
                .set_agent(agent, capacity, status == AgentStatus::Online)
                .await?;
            inner.push_agent_state(agent).await;
            Ok(())
        })
        .await
    }

    fn stats(&self) -> EngineStats {
        *self.inner.stats.lock().expect("stats lock poisoned")
    }

    async fn ready(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    async fn append(&self, entry: Entry<'_>) -> Result<Appended, EngineError> {
        let inner = &self.inner;
        bounded(async {
            // No `resolve`: the append script checks that the conversation is open and the
            // agent's own, and names the visitor, which saves reading the whole conversation
            // on every message.
            let (id, name) = match entry.origin.map(|o| &o.client) {
                Some(Client::Visitor(v)) => (inner.open_conversation(v).await?, None),
                Some(Client::Agent(a)) => (
                    entry.conversation.ok_or(EngineError::NotFound)?,
                    Some(inner.agent_profile(a.as_str()).0),
                ),
                None => (entry.conversation.ok_or(EngineError::NotFound)?, None),
            };
            // A duplicate is answered (and published again) by `append`.
            inner
                .append(id, entry.origin, entry.cid, entry.text, name, entry.kind)
                .await
        })
        .await
    }

    async fn page(
        &self,
        id: ConversationId,
        before: Seq,
        limit: u32,
    ) -> Result<Vec<MessageView>, EngineError> {
        let inner = &self.inner;
        bounded(async {
            delivery::range_before(&mut inner.conn(), &inner.keys, id, before.0, limit as usize)
                .await
                .map_err(unavailable)
        })
        .await
    }

    async fn live(&self, id: ConversationId, after: Seq) -> Vec<MessageView> {
        // The stream holds every message any node accepted (the last `replay_window`), while
        // each node's persister writes its own behind: what the store lacks is read here.
        let inner = &self.inner;
        let read = bounded(async {
            delivery::range(
                &mut inner.conn(),
                &inner.keys,
                id,
                after.0,
                None,
                inner.settings.replay_window.max(1),
            )
            .await
            .map_err(unavailable)
        })
        .await;
        match read {
            Ok(page) => page.into_iter().map(|(m, _)| m).collect(),
            Err(err) => {
                tracing::debug!(conversation = %id, error = %err, "live messages unknown");
                Vec::new()
            }
        }
    }

    async fn deliver(&self, to: Vec<Recipient>, frame: ServerFrame) {
        let to = to
            .iter()
            .map(|r| match r {
                Recipient::Visitor(v) => ClientKey::visitor(v),
                Recipient::Agent(a) => ClientKey::agent(a),
            })
            .collect();
        self.inner.send_frame(to, frame, None).await;
    }

    async fn resolve(
        &self,
        client: &Client,
        conversation: Option<ConversationId>,
    ) -> Result<Parties, EngineError> {
        let (id, meta) = bounded(self.inner.resolve(client, conversation)).await?;
        Ok(Parties {
            id,
            visitor: meta.visitor_id,
            agent: meta.agent.as_deref().and_then(|a| AgentId::parse(a).ok()),
            last_seq: Seq(meta.seq),
        })
    }

    async fn mark_survey(
        &self,
        id: ConversationId,
        at: UnixMillis,
    ) -> Result<ConversationRecord, EngineError> {
        let inner = &self.inner;
        bounded(async {
            redis::cmd("HSET")
                .arg(inner.keys.meta(id))
                .arg("csat_at")
                .arg(at)
                .query_async::<()>(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            let meta = inner.meta(id).await?.ok_or(EngineError::NotFound)?;
            Ok(meta.record(id, meta.open_state()))
        })
        .await
    }

    fn count_rate_limited(&self, client: &Client, conversation: Option<ConversationId>) {
        // Counted in the conversation's shared figures by a task. A refusal while Redis is
        // away is not counted (logged at debug level).
        let inner = self.inner.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let counted = bounded(async {
                let (id, _) = inner.resolve(&client, conversation).await?;
                redis::cmd("HINCRBY")
                    .arg(inner.keys.meta(id))
                    .arg("rate_limited")
                    .arg(1)
                    .query_async::<()>(&mut inner.conn())
                    .await
                    .map_err(unavailable)
            })
            .await;
            if let Err(err) = counted {
                tracing::debug!(error = %err, "refused message not counted");
            }
        });
    }

    async fn staffed(&self, targets: &[Target]) -> Result<Vec<bool>, EngineError> {
        bounded(self.inner.staffed(targets)).await
    }

    async fn agents(&self) -> Result<Vec<AgentPresence>, EngineError> {
        bounded(self.inner.presence()).await
    }

    fn agent_name(&self, agent: &AgentId) -> String {
        self.inner.agent_profile(agent.as_str()).0
    }

    async fn record(&self, id: ConversationId) -> Result<Option<ConversationRecord>, EngineError> {
        let inner = &self.inner;
        bounded(async {
            Ok(inner
                .meta(id)
                .await?
                .filter(|m| m.state != "closed")
                .map(|m| m.record(id, m.open_state())))
        })
        .await
    }

    async fn ring(&self) -> Result<Vec<AgentId>, EngineError> {
        bounded(self.inner.ring_agents()).await
    }

    async fn relocate(
        &self,
        id: ConversationId,
        from: Option<&AgentId>,
        to: Move,
        kind: MoveKind,
        notes: Option<MoveNotes<'_>>,
    ) -> Result<(), EngineError> {
        let inner = &self.inner;
        bounded(async {
            let meta = inner
                .meta(id)
                .await?
                .filter(|m| m.state != "closed")
                .ok_or(EngineError::NotFound)?;
            // The routing script decides, atomically: still `from`'s, the agent online with a
            // free slot.
            let (mode, to_arg) = match &to {
                Move::Team(team) => ("team", team.to_string()),
                Move::Agent(agent) => ("agent", agent.to_string()),
                Move::Requeue => ("requeue", String::new()),
            };
            inner
                .relocate(id, &meta, from, mode, &to_arg, kind, notes)
                .await
        })
        .await
    }

    async fn schedule(&self, id: ConversationId, at: UnixMillis) -> Result<(), EngineError> {
        let inner = &self.inner;
        bounded(async {
            redis::cmd("ZADD")
                .arg(inner.keys.sla())
                .arg(at)
                .arg(id.to_string())
                .query_async::<()>(&mut inner.conn())
                .await
                .map_err(unavailable)
        })
        .await
    }

    async fn due(&self, now: UnixMillis, limit: usize) -> Result<Vec<ConversationId>, EngineError> {
        let inner = &self.inner;
        bounded(async {
            // One script pops them from the shared `sla` set: each is taken by one node.
            let due: Vec<String> = scripts::SLA_DUE
                .key(inner.keys.sla())
                .arg(now)
                .arg(limit)
                .invoke_async(&mut inner.conn())
                .await
                .map_err(unavailable)?;
            Ok(due
                .iter()
                .filter_map(|c| ConversationId::parse(c).ok())
                .collect())
        })
        .await
    }

    fn live_record(&self, _conversation: ConversationId) -> Option<ConversationRecord> {
        None
    }

    fn checkpoint(&self) {}
}

/// Makes every node use one key for anonymous visitors' tokens, so a visitor proven by one node
/// is proven by all: the first node to start publishes its key in Redis, the others adopt it
/// (written into their data directory, where [`crate::auth`] reads it). Best effort: with Redis
/// away at start-up the node keeps its own key and says so. In a cluster the key lives on
/// whichever master owns its slot, not necessarily the one `url` names.
pub async fn share_visitor_key(url: &str, cluster: bool, prefix: &str, data_dir: &std::path::Path) {
    let path = data_dir.join("visitor-token.key");
    let local = std::fs::read_to_string(&path)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| hex::decode(t).is_ok_and(|k| !k.is_empty()));
    let proposal = local.clone().unwrap_or_else(|| {
        use rand::RngCore;
        let mut key = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        hex::encode(key)
    });
    let shared = async {
        let mut conn = Conn::open(url, cluster, Duration::from_secs(2)).await?;
        let key = format!("{prefix}:visitor-token-key");
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&proposal)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<String>>(&mut conn)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(5), shared).await {
        Ok(Ok(Some(shared))) if Some(&shared) != local.as_ref() => {
            if let Err(err) = write_key(&path, &shared) {
                tracing::warn!(error = %err, "cannot store the shared visitor token key; using this node's own");
            }
        }
        Ok(Ok(_)) => {}
        _ => tracing::warn!(
            "redis unreachable at start-up: anonymous visitors' tokens from this node may not be accepted by others"
        ),
    }
}

fn write_key(path: &std::path::Path, hex_key: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(hex_key.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path)
}
