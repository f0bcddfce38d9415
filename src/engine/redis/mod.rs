//! The Redis backend: several Parley nodes share one desk.
//!
//! Presence, routing (the queue, round-robin and capacity), conversation state, visitor message
//! budgets and the message log live in Redis; sockets stay on the node they connected to. The
//! desk above ([`super::desk::DeskEngine`]) cannot tell this backend from
//! [`super::local::LocalBackend`].
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

mod backend;
mod closing;
pub mod conn;
mod delivery;
mod figures;
mod grace;
pub mod keys;
mod meta;
mod moves;
mod presence;
pub mod scripts;
mod visitor_key;

use self::meta::Meta;
pub use self::visitor_key::share_visitor_key;

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
    Absence, Appended, Backend, Closing, DeskLoad, DeskRequest, DeskRequests, Entry, Expired,
    FirstResponse, Move, MoveNotes, NewConversation, Opening, Parties, Recipient,
};
use super::desk::{accepted, message_view};
use super::{
    ack_frame, AgentJoin, AgentPresence, Client, EngineError, EngineSettings, EngineStats,
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
    AgentStatus, CloseReason, ConversationState, ConversationView, MessageKind, MessageView,
    Participant, QueueReason, ServerFrame,
};
use crate::routing::{Categories, Target};
use crate::transcript::{
    ConversationRecord, DeskRecord, PersistHandle, StoredMessage, TranscriptStore,
};

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
    /// The shared transcript store, read to reconcile what it says is open with what Redis
    /// still knows after Redis lost its data.
    store: Arc<dyn TranscriptStore>,
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
        store: Arc<dyn TranscriptStore>,
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
            store,
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
                takeover: settings.takeover_max,
                wait,
            },
            commands,
        ));
        presence::spawn(inner.clone());
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
        self.open_of(v).await?.ok_or(EngineError::NoConversation)
    }

    /// The visitor's open conversation, if it has one.
    async fn open_of(&self, v: &VisitorId) -> R<Option<ConversationId>> {
        let open: Option<String> = redis::cmd("GET")
            .arg(self.keys.visitor_open(v))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(open.and_then(|o| ConversationId::parse(&o).ok()))
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
                retry_after_ms: self.persist.retry_after().as_millis() as u64,
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
                // Gone: Redis lost its data. Its sockets here are told it ended.
                None => (None, self.lost(conv)),
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

    /// The `closed` (reason `state_lost`) for this node's sockets of a conversation that Redis
    /// no longer knows, if this node tracks it.
    fn lost(&self, conv: ConversationId) -> Option<Wire> {
        let (visitor, agent) = self.registry().parties(conv)?;
        tracing::warn!(conversation = %conv, "redis lost this open conversation; telling its sockets here it ended");
        self.metrics.desk.conversations_lost.inc();
        Some(Wire::Closed {
            conv,
            visitor: visitor.map(|v| v.to_string()).unwrap_or_default(),
            agent: agent.map(|a| a.to_string()),
            frame: ServerFrame::Closed {
                conversation_id: conv,
                by: Role::System,
                resolved: None,
                reason: CloseReason::StateLost,
            }
            .to_text()
            .to_string(),
        })
    }

    /// After Redis lost its data: every conversation the shared store holds as open that
    /// Redis no longer knows is stored as closed (`state_lost`), so REST, reports and routing
    /// agree. Every node that notices does it; the snapshots are the same.
    pub(super) async fn close_lost_in_store(&self) -> R<usize> {
        let open = self.store.open_conversations().await?;
        let mut closed = 0;
        for mut record in open {
            if self.meta(record.id).await?.is_some() {
                continue;
            }
            record.state = ConversationState::Closed;
            record.closed_at = Some(self.clock.now_millis());
            record.close_reason = Some(policy::close_reason_str(CloseReason::StateLost).into());
            self.persist.conversation(record);
            closed += 1;
        }
        if closed > 0 {
            tracing::warn!(
                conversations = closed,
                "redis lost open conversations; stored them as closed (state_lost)"
            );
            self.persist.flush().await?;
        }
        Ok(closed)
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
}

fn parse_status(s: Option<&str>) -> Option<AgentStatus> {
    match s? {
        "online" => Some(AgentStatus::Online),
        "away" => Some(AgentStatus::Away),
        "offline" => Some(AgentStatus::Offline),
        _ => None,
    }
}
