//! Delivery on one node: the sockets this node holds, and the one task that writes every event
//! into their outboxes.
//!
//! Events reach a node on its own pub/sub channel (one subscription per node, not per socket),
//! or directly when they concern clients of the node that produced them. Either way they go
//! through one queue and one task ([`run`]), so a node applies them in one order and joins are
//! serialised with deliveries: a joining socket's replay and the live messages after it never
//! overlap.
//!
//! Messages carry their sequence number. Per conversation the node remembers the last one it
//! delivered: an older one is a duplicate and is dropped (nothing is delivered twice); a newer
//! one after a gap (a publish from another node that is still in flight, or lost when the pub/sub
//! connection died) makes the task read the missing ones from the conversation's stream first,
//! so every socket sees a conversation in order and complete.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::conn::Conn;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::keys::{ClientKey, Keys};
use crate::desk::policy;
use crate::domain::{AgentId, ClientMessageId, ConversationId, Role, Seq, VisitorId};
use crate::outbox::{Frame, Outbox, SocketId};
use crate::protocol::{
    ConversationView, MessageKind, MessageView, QueueReason, Sender, ServerFrame,
};

/// How many events may wait for the delivery task. At the bound, the pub/sub reader waits (Redis
/// buffers for it up to its own output-buffer limit, then drops the subscriber, which the
/// liveness probe notices and recovers from the streams).
pub const EVENT_QUEUE: usize = 65_536;

/// What travels between nodes. Frames are serialised once by the producer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Wire {
    /// A message with its sequence number. `origin` names the sending socket
    /// (`<node>/<socket>`), which gets `ack` instead of the message.
    Message {
        conv: ConversationId,
        seq: u64,
        visitor: String,
        agent: Option<String>,
        frame: String,
        origin: String,
        ack: Option<String>,
        /// A resend of a message stored earlier (its `ack` says `duplicate: true`): the origin
        /// socket gets the ack even where the message itself was delivered already. Published
        /// so that a message stored by a call whose answer was lost (a timeout, a node killed
        /// between the store and the publish) still reaches the other side.
        #[serde(default)]
        duplicate: bool,
        /// A private note: agents' sockets only, never the visitor's.
        #[serde(default)]
        note: bool,
    },
    /// Any frame without a sequence number (queued, typing, read, agent_state).
    Frame {
        to: Vec<ClientKey>,
        frame: String,
        /// Set for `queued`: the node keeps refreshing the position of waiting visitors.
        waiting: Option<ConversationId>,
        /// For `queued`: the position sent and why it waits, kept for the refreshes.
        #[serde(default)]
        queued: Option<(u32, QueueReason)>,
    },
    /// A conversation got its agent: the visitor gets `assigned`; the agent's node reads the
    /// conversation so far from the stream and sends it after its own `assigned`.
    Assigned {
        conv: ConversationId,
        visitor: String,
        agent: String,
        /// Boxed: much larger than the other variants.
        view: Box<ConversationView>,
    },
    Closed {
        conv: ConversationId,
        visitor: String,
        agent: Option<String>,
        frame: String,
    },
    /// A conversation left its agent `from` (transfer, escalation): `from` and the visitor get
    /// `transferred`; nothing of it reaches `from` any more. Published before the
    /// `Assigned` (or `queued`) that follows, so both sides read them in that order.
    Transferred {
        conv: ConversationId,
        visitor: String,
        from: String,
        frame: String,
    },
}

/// A conversation a joining socket gets, and where its replay starts.
pub struct Resume {
    pub conv: ConversationId,
    /// The last seq the client has.
    pub last_seq: Seq,
    /// The conversation's agent, as its `welcome` names it.
    pub agent: Option<AgentId>,
}

/// Per conversation resumed: its id, whether the replay is complete, and the replay frames.
pub type Replays = Vec<(ConversationId, bool, Vec<Frame>)>;

/// Work for the delivery task.
pub enum Command {
    Wire(Wire),
    /// Registers a socket and computes its replay, in order with deliveries.
    Register {
        client: ClientKey,
        outbox: Outbox,
        /// Conversations to replay.
        resume: Vec<Resume>,
        reply: oneshot::Sender<Result<Replays, redis::RedisError>>,
    },
    /// After events may have been missed (the subscription was down, Redis lost its data):
    /// brings one conversation's local sockets up to date with Redis, in order with the other
    /// events: the assignment they were not told of, the messages after the last one delivered,
    /// and the close.
    Reconcile {
        conv: ConversationId,
        /// The conversation's current assignment (`Wire::Assigned`), if it has an agent.
        assigned: Option<Box<Wire>>,
        /// Its `Wire::Closed`, if it is closed.
        closed: Option<Box<Wire>>,
    },
}

#[derive(Default)]
pub struct Registry {
    pub visitors: HashMap<VisitorId, Vec<Outbox>>,
    pub agents: HashMap<AgentId, Vec<Outbox>>,
    convs: HashMap<ConversationId, ConvState>,
    /// Conversations of local visitors that wait in the queue, with the last position and
    /// estimate bucket sent, so the refresher sends only changes.
    pub waiting: HashMap<ConversationId, Waiting>,
    /// Clients that left this node while Redis did not answer: the heartbeat records their
    /// departure when it can (bounded by the number of sockets that closed meanwhile).
    pub departed: Vec<ClientKey>,
    /// Last `agent_state` sent per local agent.
    pub agent_state: HashMap<AgentId, (crate::protocol::AgentStatus, u32, u32, u32)>,
}

/// A local visitor's waiting conversation, as its position refresher knows it.
pub struct Waiting {
    pub visitor: VisitorId,
    /// The (position, estimate bucket) last sent.
    pub last: Option<(u32, u64)>,
    /// Why it waits, repeated in every refresh.
    pub reason: QueueReason,
}

/// The desk's learnt wait per queue position, as this node last read it from Redis (where
/// every node's assignments feed it): the same estimate as on one node
/// ([`crate::desk::policy::estimated_wait_ms`]), shared. Cheap to clone; `0` means nothing is
/// learnt yet.
#[derive(Clone, Default)]
pub struct WaitEstimate(Arc<AtomicU64>);

impl WaitEstimate {
    /// The learnt milliseconds per position, `None` before any assignment was observed.
    pub fn per_position(&self) -> Option<f64> {
        let bits = self.0.load(Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    pub fn set(&self, per_position_ms: f64) {
        if per_position_ms.is_finite() && per_position_ms >= 0.0 {
            // Zero's bits mean "nothing learnt": a learnt zero is kept as the smallest figure.
            let kept = per_position_ms.max(f64::MIN_POSITIVE);
            self.0.store(kept.to_bits(), Ordering::Relaxed);
        }
    }

    /// The wait told to a visitor at `position`.
    pub fn estimate(&self, position: u32) -> u64 {
        policy::estimated_wait_ms(self.per_position(), position)
    }

    /// The (position, estimate bucket) of a queue position, to send only changes.
    pub fn bucket(&self, position: u32) -> (u32, u64) {
        policy::estimate_bucket(position, self.estimate(position))
    }
}

#[derive(Default)]
struct ConvState {
    delivered: u64,
    visitor: Option<VisitorId>,
    agent: Option<AgentId>,
    /// The agent this node's visitor sockets were told of (`assigned` or `welcome`), so that
    /// a reconciliation tells them only what they missed, and nothing twice.
    visitor_told: Option<AgentId>,
    /// The agent whose sockets here got the conversation (`assigned` with its history, or
    /// `welcome`).
    agent_told: Option<AgentId>,
    /// Sockets that joined with a replay up to this seq: older messages are not sent to them
    /// again.
    floors: HashMap<SocketId, u64>,
}

impl Registry {
    /// The visitor and agent of a conversation this node tracks.
    pub fn parties(&self, conv: ConversationId) -> Option<(Option<VisitorId>, Option<AgentId>)> {
        self.convs
            .get(&conv)
            .map(|s| (s.visitor.clone(), s.agent.clone()))
    }

    pub fn sockets(&self, client: &ClientKey) -> Vec<Outbox> {
        if let Some(v) = client.as_visitor() {
            self.visitors.get(&v).cloned().unwrap_or_default()
        } else if let Some(a) = client.as_agent() {
            self.agents.get(&a).cloned().unwrap_or_default()
        } else {
            Vec::new()
        }
    }

    pub fn has(&self, client: &ClientKey) -> bool {
        if let Some(v) = client.as_visitor() {
            self.visitors.get(&v).is_some_and(|s| !s.is_empty())
        } else if let Some(a) = client.as_agent() {
            self.agents.get(&a).is_some_and(|s| !s.is_empty())
        } else {
            false
        }
    }

    /// Removes a socket; true when the client has no socket left on this node.
    pub fn remove(&mut self, client: &ClientKey, socket: SocketId) -> bool {
        let list = if let Some(v) = client.as_visitor() {
            self.visitors.get_mut(&v)
        } else if let Some(a) = client.as_agent() {
            self.agents.get_mut(&a)
        } else {
            None
        };
        let Some(list) = list else { return true };
        list.retain(|o| o.id() != socket);
        let empty = list.is_empty();
        if empty {
            if let Some(v) = client.as_visitor() {
                self.visitors.remove(&v);
            } else if let Some(a) = client.as_agent() {
                self.agents.remove(&a);
                self.agent_state.remove(&a);
            }
        }
        for c in self.convs.values_mut() {
            c.floors.remove(&socket);
        }
        if empty {
            // The sockets that were told of their conversations are gone; the client's next
            // socket here is told again by its `welcome`.
            for c in self.convs.values_mut() {
                if client
                    .as_visitor()
                    .is_some_and(|v| c.visitor.as_ref() == Some(&v))
                {
                    c.visitor_told = None;
                }
                if client
                    .as_agent()
                    .is_some_and(|a| c.agent_told.as_ref() == Some(&a))
                {
                    c.agent_told = None;
                }
            }
            // Forget conversations none of whose clients is on this node any more: nothing here
            // would deliver them, and their `closed` may never reach this node.
            let (visitors, agents) = (&self.visitors, &self.agents);
            self.convs.retain(|_, c| {
                c.visitor.as_ref().is_some_and(|v| visitors.contains_key(v))
                    || c.agent.as_ref().is_some_and(|a| agents.contains_key(a))
            });
            self.waiting
                .retain(|_, w| visitors.contains_key(&w.visitor));
        }
        empty
    }

    /// The conversations this node delivers to some of its sockets.
    pub fn tracked(&self) -> Vec<ConversationId> {
        self.convs.keys().copied().collect()
    }

    /// Every client with sockets here: what a node re-registers after Redis lost its data.
    pub fn clients(&self) -> Vec<ClientKey> {
        self.visitors
            .keys()
            .map(ClientKey::visitor)
            .chain(self.agents.keys().map(ClientKey::agent))
            .collect()
    }
}

/// The token that names a socket across nodes.
pub fn origin_token(node: &str, socket: SocketId) -> String {
    format!("{node}/{socket:?}")
}

pub struct Delivery {
    pub node: String,
    pub keys: Keys,
    pub registry: Arc<Mutex<Registry>>,
    pub redis: Conn,
    /// Messages read from the stream for one catch-up, at most.
    pub window: usize,
    /// Messages an agent taking a conversation over is sent, at most
    /// ([`crate::engine::EngineSettings::takeover_max`]).
    pub takeover: usize,
    pub wait: WaitEstimate,
}

impl Delivery {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().expect("registry lock poisoned")
    }
}

/// The delivery task: applies events in the order they are queued.
pub async fn run(delivery: Delivery, mut commands: mpsc::Receiver<Command>) {
    while let Some(command) = commands.recv().await {
        match command {
            Command::Wire(wire) => apply(&delivery, wire).await,
            Command::Register {
                client,
                outbox,
                resume,
                reply,
            } => {
                let result = register(&delivery, client, outbox, resume).await;
                let _ = reply.send(result);
            }
            Command::Reconcile {
                conv,
                assigned,
                closed,
            } => reconcile(&delivery, conv, assigned, closed).await,
        }
    }
}

async fn reconcile(
    d: &Delivery,
    conv: ConversationId,
    assigned: Option<Box<Wire>>,
    closed: Option<Box<Wire>>,
) {
    if let Some(Wire::Assigned {
        conv,
        visitor,
        agent,
        view,
    }) = assigned.map(|w| *w)
    {
        // `assigned` is idempotent per side: only sockets not told of this agent get it.
        self::assigned(d, conv, visitor, agent, *view).await;
    }
    let delivered = d.lock().convs.get(&conv).map(|s| s.delivered);
    let Some(delivered) = delivered else {
        return;
    };
    if let Err(err) = catch_up(d, conv, delivered, None).await {
        tracing::warn!(conversation = %conv, error = %err, "catch-up failed; the next event or resubscribe retries");
        return;
    }
    if let Some(closed) = closed {
        apply(d, *closed).await;
    }
}

async fn apply(d: &Delivery, wire: Wire) {
    match wire {
        Wire::Message {
            conv,
            seq,
            visitor,
            agent,
            frame,
            origin,
            ack,
            duplicate,
            note,
        } => {
            let delivered = {
                let mut reg = d.lock();
                let state = reg.convs.entry(conv).or_insert_with(|| ConvState {
                    delivered: seq.saturating_sub(1),
                    visitor: VisitorId::parse(&visitor).ok(),
                    ..ConvState::default()
                });
                // The append script read the agent atomically with the seq: it is authoritative
                // (a conversation taken from a lost agent must not reach that agent again).
                // `None` may be a stale read just before an assignment; keep what `assigned` set.
                if let Some(a) = agent.as_deref().and_then(|a| AgentId::parse(a).ok()) {
                    state.agent = Some(a);
                }
                state.delivered
            };
            if seq <= delivered {
                if let (true, Some(ack)) = (duplicate, ack) {
                    // Delivered already; the resending socket still needs its answer.
                    let reg = d.lock();
                    if let Some(o) = origin_socket(&reg, &d.node, conv, &origin) {
                        o.push(&ack.into());
                    }
                }
                return;
            }
            if seq > delivered + 1 {
                // A gap: read what is missing from the stream (it is there: the stream is
                // written before anything is published).
                if let Err(err) = catch_up(d, conv, delivered, Some(seq - 1)).await {
                    tracing::warn!(conversation = %conv, error = %err, "gap recovery failed");
                }
            }
            let mut reg = d.lock();
            push_message(
                &mut reg,
                &d.node,
                conv,
                seq,
                &frame.into(),
                &origin,
                ack.map(Into::into),
                note,
            );
        }
        Wire::Frame {
            to,
            frame,
            waiting,
            queued,
        } => {
            let frame: Frame = frame.into();
            let mut reg = d.lock();
            for client in &to {
                for o in reg.sockets(client) {
                    o.push(&frame);
                }
            }
            if let (Some(conv), Some(v)) = (waiting, to.first().and_then(ClientKey::as_visitor)) {
                // Back in the queue: whoever gets it next, even the same agent again, is news
                // to both sides.
                if let Some(state) = reg.convs.get_mut(&conv) {
                    state.visitor_told = None;
                    state.agent_told = None;
                }
                if reg.has(&ClientKey::visitor(&v)) {
                    let (last, reason) = match queued {
                        Some((p, r)) => (Some(d.wait.bucket(p)), r),
                        None => (None, QueueReason::NoAgentAvailable),
                    };
                    reg.waiting.insert(
                        conv,
                        Waiting {
                            visitor: v,
                            last,
                            reason,
                        },
                    );
                }
            }
        }
        Wire::Assigned {
            conv,
            visitor,
            agent,
            view,
        } => assigned(d, conv, visitor, agent, *view).await,
        Wire::Transferred {
            conv,
            visitor,
            from,
            frame,
        } => {
            let frame: Frame = frame.into();
            let mut reg = d.lock();
            let from = AgentId::parse(&from).ok();
            if let Some(state) = reg.convs.get_mut(&conv) {
                if state.agent.is_some() && state.agent == from {
                    state.agent = None;
                }
                // Whoever gets it next, even an agent that had it before, is news to both.
                state.agent_told = None;
                state.visitor_told = None;
            }
            let mut to = vec![];
            if let Ok(v) = VisitorId::parse(&visitor) {
                to.push(ClientKey::visitor(&v));
            }
            if let Some(a) = &from {
                to.push(ClientKey::agent(a));
            }
            for client in &to {
                for o in reg.sockets(client) {
                    o.push(&frame);
                }
            }
        }
        Wire::Closed {
            conv,
            visitor,
            agent,
            frame,
        } => {
            let frame: Frame = frame.into();
            let mut reg = d.lock();
            reg.waiting.remove(&conv);
            reg.convs.remove(&conv);
            let mut to = vec![];
            if let Ok(v) = VisitorId::parse(&visitor) {
                to.push(ClientKey::visitor(&v));
            }
            if let Some(a) = agent.as_deref().and_then(|a| AgentId::parse(a).ok()) {
                to.push(ClientKey::agent(&a));
            }
            for client in &to {
                for o in reg.sockets(client) {
                    o.push(&frame);
                }
            }
        }
    }
}

/// A conversation got its agent: its visitor's sockets here get `assigned`; its agent's
/// sockets here get `assigned` and the conversation so far, read now, after the assignment is
/// recorded (anything appended later is published to the agent's node as well). Each side is
/// told once per agent: a repeated event (a reconciliation) changes nothing.
async fn assigned(
    d: &Delivery,
    conv: ConversationId,
    visitor: String,
    agent: String,
    view: ConversationView,
) {
    let visitor_id = VisitorId::parse(&visitor).ok();
    let Ok(agent_id) = AgentId::parse(&agent) else {
        return;
    };
    let (tell_visitor, tell_agent) = {
        let reg = d.lock();
        let state = reg.convs.get(&conv);
        let visitor_here = visitor_id
            .as_ref()
            .is_some_and(|v| reg.has(&ClientKey::visitor(v)));
        (
            visitor_here && state.is_none_or(|s| s.visitor_told.as_ref() != Some(&agent_id)),
            reg.has(&ClientKey::agent(&agent_id))
                && state.is_none_or(|s| s.agent_told.as_ref() != Some(&agent_id)),
        )
    };
    let history = if tell_agent {
        // Its newest messages: an agent taking over a long conversation needs its end, and
        // fetches the rest with `history` (`recovered: false`).
        let mut redis = d.redis.clone();
        let newest = d.window.min(d.takeover);
        match range_before(&mut redis, &d.keys, conv, u64::MAX, newest).await {
            Ok(h) => Some(h),
            Err(err) => {
                tracing::warn!(conversation = %conv, error = %err, "cannot read history for the agent");
                None
            }
        }
    } else {
        None
    };
    let mut reg = d.lock();
    reg.waiting.remove(&conv);
    let last_read = history
        .as_ref()
        .and_then(|h| h.last().map(|m| m.seq.0))
        .unwrap_or(0);
    let state = reg.convs.entry(conv).or_insert_with(|| ConvState {
        delivered: last_read,
        visitor: visitor_id.clone(),
        ..ConvState::default()
    });
    state.agent = Some(agent_id.clone());
    if tell_visitor {
        state.visitor_told = Some(agent_id.clone());
        // The visitor's view: no clock, no contact, no internal figures.
        let to_visitor: Frame = ServerFrame::Assigned {
            conversation: policy::visitor_view(ConversationView {
                recovered: None,
                ..view.clone()
            }),
        }
        .to_text();
        if let Some(v) = &visitor_id {
            for o in reg.sockets(&ClientKey::visitor(v)) {
                o.push(&to_visitor);
            }
        }
    }
    let Some(history) = history else {
        return;
    };
    let complete = history.first().is_none_or(|m| m.seq.0 <= 1);
    let for_agent = ServerFrame::Assigned {
        conversation: ConversationView {
            recovered: Some(complete),
            last_seq: Seq(view.last_seq.0.max(last_read)),
            ..view
        },
    }
    .to_text();
    let frames: Vec<Frame> = history
        .iter()
        .map(|m| ServerFrame::Message(m.clone()).to_text())
        .collect();
    let sockets = reg.sockets(&ClientKey::agent(&agent_id));
    if let Some(state) = reg.convs.get_mut(&conv) {
        state.agent_told = Some(agent_id.clone());
        for o in &sockets {
            state.floors.insert(o.id(), last_read);
        }
    }
    for o in &sockets {
        o.push(&for_agent);
        for f in &frames {
            o.push(f);
        }
    }
}

/// The local socket a message came from, if it is on this node and still open.
fn origin_socket(reg: &Registry, node: &str, conv: ConversationId, origin: &str) -> Option<Outbox> {
    let state = reg.convs.get(&conv)?;
    let visitors = state.visitor.as_ref().and_then(|v| reg.visitors.get(v));
    let agents = state.agent.as_ref().and_then(|a| reg.agents.get(a));
    visitors
        .into_iter()
        .chain(agents)
        .flatten()
        .find(|o| origin_token(node, o.id()) == origin)
        .cloned()
}

/// Pushes message `seq` to the conversation's local sockets (the origin socket gets its ack)
/// and records it as delivered; a note goes to the agent's sockets only. The caller made sure
/// every earlier one was delivered.
#[allow(clippy::too_many_arguments)]
fn push_message(
    reg: &mut Registry,
    node: &str,
    conv: ConversationId,
    seq: u64,
    frame: &Frame,
    origin: &str,
    ack: Option<Frame>,
    note: bool,
) {
    let Some(state) = reg.convs.get(&conv) else {
        return;
    };
    if seq <= state.delivered {
        return;
    }
    let mut targets = Vec::new();
    if let Some(v) = state.visitor.as_ref().filter(|_| !note) {
        targets.extend(reg.visitors.get(v).into_iter().flatten().cloned());
    }
    if let Some(a) = &state.agent {
        targets.extend(reg.agents.get(a).into_iter().flatten().cloned());
    }
    let floors = &state.floors;
    for o in &targets {
        // The sender's answer first: a socket that resumed past this seq (its floor) and
        // resends the message still needs its ack, or it waits for it forever.
        if origin_token(node, o.id()) == origin {
            if let Some(ack) = &ack {
                o.push(ack);
                continue;
            }
        }
        if floors.get(&o.id()).is_some_and(|&f| f >= seq) {
            continue;
        }
        o.push(frame);
    }
    if let Some(state) = reg.convs.get_mut(&conv) {
        state.delivered = seq;
    }
}

/// Delivers messages after `after` (up to `upto`) read from the stream, a window at a time.
async fn catch_up(
    d: &Delivery,
    conv: ConversationId,
    mut after: u64,
    upto: Option<u64>,
) -> Result<(), redis::RedisError> {
    loop {
        let entries = read_log_raw(d, conv, after, upto).await?;
        let Some(last) = entries.last().map(|(m, _)| m.seq.0) else {
            return Ok(());
        };
        let full = entries.len() >= d.window;
        let mut reg = d.lock();
        for (m, origin) in entries {
            let seq = m.seq.0;
            let ack = m.cid.clone().map(|cid| {
                ServerFrame::Ack {
                    conversation_id: conv,
                    cid,
                    seq: m.seq,
                    duplicate: false,
                }
                .to_text()
            });
            let note = m.kind == MessageKind::Note;
            let frame = ServerFrame::Message(m).to_text();
            push_message(&mut reg, &d.node, conv, seq, &frame, &origin, ack, note);
        }
        if !full || upto.is_some_and(|u| last >= u) {
            return Ok(());
        }
        after = last;
    }
}

async fn read_log_raw(
    d: &Delivery,
    conv: ConversationId,
    after: u64,
    upto: Option<u64>,
) -> Result<Vec<(MessageView, String)>, redis::RedisError> {
    let mut redis = d.redis.clone();
    range(&mut redis, &d.keys, conv, after, upto, d.window).await
}

/// `XRANGE` of a conversation's stream: messages with `after < seq <= upto`, at most `count`.
pub async fn range(
    redis: &mut Conn,
    keys: &Keys,
    conv: ConversationId,
    after: u64,
    upto: Option<u64>,
    count: usize,
) -> Result<Vec<(MessageView, String)>, redis::RedisError> {
    let end = upto.map_or("+".to_string(), |u| format!("{u}-1"));
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys.log(conv))
        .arg(format!("({after}-1"))
        .arg(end)
        .arg("COUNT")
        .arg(count)
        .query_async(redis)
        .await?;
    Ok(reply
        .ids
        .iter()
        .filter_map(|entry| parse_entry(conv, entry))
        .collect())
}

/// The newest `count` messages before `before`, oldest first.
pub async fn range_before(
    redis: &mut Conn,
    keys: &Keys,
    conv: ConversationId,
    before: u64,
    count: usize,
) -> Result<Vec<MessageView>, redis::RedisError> {
    if before <= 1 {
        return Ok(Vec::new());
    }
    let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(keys.log(conv))
        .arg(format!("{}-1", before - 1))
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(redis)
        .await?;
    let mut out: Vec<MessageView> = reply
        .ids
        .iter()
        .filter_map(|entry| parse_entry(conv, entry).map(|(m, _)| m))
        .collect();
    out.reverse();
    Ok(out)
}

fn parse_entry(
    conv: ConversationId,
    entry: &redis::streams::StreamId,
) -> Option<(MessageView, String)> {
    let seq: u64 = entry.id.split('-').next()?.parse().ok()?;
    let field = |name: &str| -> Option<String> { entry.get::<String>(name) };
    let role = match field("role")?.as_str() {
        "visitor" => Role::Visitor,
        "agent" => Role::Agent,
        _ => Role::System,
    };
    let name = field("name").filter(|n| !n.is_empty());
    let cid = field("cid")
        .filter(|c| !c.is_empty())
        .and_then(|c| ClientMessageId::parse(&c).ok());
    Some((
        MessageView {
            conversation_id: conv,
            seq: Seq(seq),
            sender: Sender {
                role,
                id: field("id")?,
                name,
            },
            text: field("text").unwrap_or_default(),
            ts: field("ts").and_then(|t| t.parse().ok()).unwrap_or(0),
            cid,
            kind: if field("k").as_deref() == Some("note") {
                MessageKind::Note
            } else {
                MessageKind::Text
            },
        },
        field("o").unwrap_or_default(),
    ))
}

/// Registers a socket; returns, per conversation to resume, whether the replay is complete and
/// its frames.
async fn register(
    d: &Delivery,
    client: ClientKey,
    outbox: Outbox,
    resume: Vec<Resume>,
) -> Result<Replays, redis::RedisError> {
    let mut reads = Vec::with_capacity(resume.len());
    for r in resume {
        let mut redis = d.redis.clone();
        // One more than the window: more than that is not replayed.
        let entries: Vec<MessageView> = range(
            &mut redis,
            &d.keys,
            r.conv,
            r.last_seq.0,
            None,
            d.window + 1,
        )
        .await?
        .into_iter()
        .map(|(m, _)| m)
        .collect();
        // All or nothing: a replay that does not start right after `last_seq`, or that would
        // be longer than the window (the stream is trimmed approximately, so it can hold a
        // little more), is not offered.
        let complete = entries.len() <= d.window
            && entries.first().is_none_or(|m| m.seq.0 == r.last_seq.0 + 1);
        // What the stream holds right now, even if the client is ahead of it (then nothing).
        let last = entries.last().map_or(r.last_seq.0, |m| m.seq.0);
        reads.push((r, complete, entries, last));
    }
    let mut reg = d.lock();
    if let Some(v) = client.as_visitor() {
        reg.visitors.entry(v).or_default().push(outbox.clone());
    } else if let Some(a) = client.as_agent() {
        reg.agents.entry(a).or_default().push(outbox.clone());
    }
    let mut out = Vec::with_capacity(reads.len());
    // The socket's replays share half its outbound queue: one that does not fit is not sent
    // (`recovered: false`, the client pages `history`), so catching up never closes the socket
    // as too slow (4009).
    let mut budget = d.takeover;
    for (r, complete, entries, last) in reads {
        let state = reg.convs.entry(r.conv).or_insert_with(|| ConvState {
            delivered: last,
            ..ConvState::default()
        });
        if let Some(v) = client.as_visitor() {
            state.visitor = Some(v);
            // The welcome names the agent, if any.
            state.visitor_told = r.agent.clone();
        }
        if let Some(a) = client.as_agent() {
            state.agent = Some(a.clone());
            state.agent_told = Some(a);
        } else if let Some(a) = r.agent {
            state.agent = Some(a);
        }
        state.floors.insert(outbox.id(), last);
        // Visitors get no notes (their seqs are skipped).
        let visitor = client.as_visitor().is_some();
        let missed = entries
            .into_iter()
            .filter(|m| !(visitor && m.kind == MessageKind::Note));
        let frames: Vec<Frame> = if complete {
            missed.map(|m| ServerFrame::Message(m).to_text()).collect()
        } else {
            Vec::new()
        };
        let complete = complete && frames.len() <= budget;
        if !complete {
            out.push((r.conv, false, Vec::new()));
            continue;
        }
        budget -= frames.len();
        out.push((r.conv, true, frames));
    }
    Ok(out)
}
