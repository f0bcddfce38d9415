//! The simulated people: visitors and agents, one task each, speaking the real protocol.
//!
//! A visitor connects, says `hello`, starts a chat, sends messages every `think` (or after each
//! answer), and closes. An agent comes online and answers every visitor message after
//! `reply_think`. Both keep, per conversation, which sequence numbers they have seen (from
//! `message` and `ack`), so a run can say whether anything was lost or delivered twice, and
//! both can drop their socket on command and resume (visitor `last_seq`, agent `resume`),
//! resending what was not acknowledged with the same `cid`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::scenario::{CloseBy, Placement, Scenario};
use crate::stats::{get, inc, Recorder};
use crate::wire::{self, Decoded, Frame, Node, Role, Wire, Ws};

/// Everything the client tasks share.
pub struct Ctx {
    pub scenario: Scenario,
    pub wire: Wire,
    pub nodes: Vec<Node>,
    pub rec: Recorder,
    /// Visitors stop sending, close their chats and leave.
    pub stop: CancellationToken,
    /// Agents leave (after the visitors).
    pub agents_stop: CancellationToken,
    /// Cancelled when every visitor has arrived (for `visitors.start_together`).
    pub all_arrived: CancellationToken,
    /// Bumped to make every client drop its socket and resume.
    pub storm: watch::Receiver<u64>,
    /// When the last storm began (for resume times).
    pub storm_at: Mutex<Option<Instant>>,
    pub storm_dropped: AtomicU64,
    pub storm_resumed: AtomicU64,
    /// Latest resume, in µs after the storm began.
    pub storm_recovered_us: AtomicU64,
    /// Per-conversation sequence checks, filled as chats close.
    pub checks: Mutex<HashMap<String, ConvCheck>>,
    /// Open chats per agent (index = agent number - 1).
    pub agent_open: Vec<AtomicI64>,
    /// `assigned` frames per conversation seen by agents.
    pub assignments: Mutex<HashMap<String, u32>>,
    /// Visitors whose chat got `assigned` or `queued` (each counted once per chat).
    pub answered: AtomicU64,
    pub assigned_twice: AtomicU64,
    /// Visitors that finished their first connection attempt (arrival phase).
    pub arrived: AtomicU64,
    /// Agents that got `welcome` the first time.
    pub agents_ready: AtomicU64,
}

/// What both sides of a conversation saw, reported when each side sees `closed`.
#[derive(Debug, Default, Clone)]
pub struct ConvCheck {
    pub visitor: Option<SideSeen>,
    pub agent: Option<SideSeen>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SideSeen {
    pub max: u64,
    pub distinct: u64,
    pub duplicates: u64,
}

/// Which sequence numbers one side has seen in one conversation.
#[derive(Debug, Default)]
pub struct SeqTracker {
    bits: Vec<u64>,
    /// 1..=contiguous have all been seen: what `last_seq` / `resume` report.
    pub contiguous: u64,
    pub max: u64,
    pub distinct: u64,
    pub duplicates: u64,
}

impl SeqTracker {
    /// Marks `seq` seen; returns whether it was new. `delivery` is a `message` frame: seeing one
    /// twice is a duplicate delivery (an `ack` for a resend is not).
    pub fn observe(&mut self, seq: u64, delivery: bool) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & (1 << bit) != 0 {
            if delivery {
                self.duplicates += 1;
            }
            return false;
        }
        self.bits[word] |= 1 << bit;
        self.distinct += 1;
        self.max = self.max.max(seq);
        while self.seen(self.contiguous + 1) {
            self.contiguous += 1;
        }
        true
    }

    fn seen(&self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        word < self.bits.len() && self.bits[word] & (1 << (seq % 64)) != 0
    }

    fn summary(&self) -> SideSeen {
        SideSeen {
            max: self.max,
            distinct: self.distinct,
            duplicates: self.duplicates,
        }
    }
}

impl Ctx {
    fn node_for(&self, role: Role, n: usize) -> &Node {
        let count = self.nodes.len();
        if self.scenario.placement == Placement::Split && count > 1 {
            match role {
                Role::Agent => &self.nodes[0],
                Role::Visitor => &self.nodes[1 + n % (count - 1)],
            }
        } else {
            &self.nodes[n % count]
        }
    }

    fn report_side(&self, conv: &str, role: Role, seen: SideSeen) {
        let mut checks = self.checks.lock().unwrap();
        let entry = checks.entry(conv.to_string()).or_default();
        match role {
            Role::Visitor => entry.visitor = Some(seen),
            Role::Agent => entry.agent = Some(seen),
        }
    }

    fn resumed(&self, dropped_at: Instant) {
        let now = Instant::now();
        self.rec.resume(now - dropped_at);
        inc(&self.storm_resumed);
        if let Some(at) = *self.storm_at.lock().unwrap() {
            let us = now.saturating_duration_since(at).as_micros() as u64;
            self.storm_recovered_us.fetch_max(us, Ordering::Relaxed);
        }
    }

    /// Random pause before a client's reconnect, within `reconnect.spread`.
    fn reconnect_delay(&self) -> Duration {
        let spread = self
            .scenario
            .reconnect
            .as_ref()
            .map(|r| r.spread)
            .unwrap_or_default();
        spread.mul_f64(fastrand::f64())
    }
}

/// Refused sends to try again (`unavailable`, `rate_limited` with `retry_after_ms`), as a
/// well-behaved client does: same frame, same `cid`, after the delay the server asked for.
#[derive(Default)]
struct Retries {
    due: BinaryHeap<Reverse<(Instant, String)>>,
}

impl Retries {
    fn schedule(&mut self, cid: String, after_ms: u64) {
        self.due.push(Reverse((
            Instant::now() + Duration::from_millis(after_ms),
            cid,
        )));
    }

    fn next(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// Resends what is due and still unacknowledged; false if the socket failed.
    async fn resend_due(&mut self, ws: &mut Ws, pending: &BTreeMap<String, String>) -> bool {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, cid))) = self.due.pop() else {
                break;
            };
            if let Some(frame) = pending.get(&cid) {
                if !send(ws, frame.clone()).await {
                    return false;
                }
            }
        }
        true
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// How a socket's session ended.
enum Outcome {
    /// Finished: close the socket normally.
    Done,
    /// The storm: drop the socket and resume.
    Storm,
    /// The server closed the socket or it failed; the code is recorded.
    Lost,
}

async fn send(ws: &mut Ws, text: String) -> bool {
    ws.send(Message::text(text)).await.is_ok()
}

/// Reads one frame for the session loops; `None` means the socket ended (already recorded).
fn lost_code(msg: &Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> String {
    match msg {
        Some(Ok(Message::Close(Some(frame)))) => format!("closed_{}", u16::from(frame.code)),
        Some(Ok(Message::Close(None))) => "closed_1005".into(),
        Some(Err(e)) => format!("socket_error: {}", short(&e.to_string())),
        None => "socket_ended".into(),
        Some(Ok(_)) => "unexpected".into(),
    }
}

fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Waits for `welcome`; frames before it (none expected) are ignored.
async fn expect_welcome(ctx: &Ctx, ws: &mut Ws) -> Result<Frame, String> {
    let deadline = Instant::now() + ctx.scenario.connect_timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "welcome_timeout".to_string())?;
        match &msg {
            Some(Ok(Message::Text(t))) => match ctx.wire.decode(t.as_str()) {
                Decoded::Frame(f) if f.kind == "welcome" => return Ok(f),
                Decoded::Frame(f) if f.kind == "error" => {
                    return Err(format!("hello_{}", f.code.unwrap_or_default()))
                }
                Decoded::Ping => {
                    let _ = send(ws, "3".into()).await;
                }
                Decoded::Bad(_) => return Err("unparsable_frame".into()),
                _ => {}
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return Err(lost_code(&msg)),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Visitors
// ------------------------------------------------------------------------------------------

struct VisitorChat {
    /// Known from the `ack` of `start`.
    id: Option<String>,
    start_cid: String,
    started: Instant,
    assigned: bool,
    answered: bool,
    sent: u32,
    replies: u32,
    /// Next message due; `None` while waiting (for `assigned` or an answer).
    next_send: Option<Instant>,
    close_sent: bool,
    seqs: SeqTracker,
}

struct Visitor {
    ctx: Arc<Ctx>,
    n: usize,
    source: IpAddr,
    id: Option<String>,
    token: Option<String>,
    chat: Option<VisitorChat>,
    chats_done: u32,
    /// When the next chat starts (after one closed).
    next_start: Option<Instant>,
    /// Sent and not acknowledged: resent with the same `cid` after a reconnect.
    pending: BTreeMap<String, String>,
    counter: u64,
    stopping: Option<Instant>,
    /// Set while resuming after a storm: when the socket was dropped.
    resume_from: Option<Instant>,
    retries: Retries,
}

/// A visitor or an agent, as [`drive`] sees it.
trait Participant {
    fn ctx(&self) -> &Arc<Ctx>;
    /// Connects and says `hello` (resuming if there is something to resume); `None` if that
    /// failed (already recorded).
    fn open(&mut self) -> impl std::future::Future<Output = Option<Ws>> + Send;
    /// Works on `ws` until the participant is done, the socket is lost or a storm says drop.
    fn session(
        &mut self,
        ws: &mut Ws,
        storm: &mut watch::Receiver<u64>,
    ) -> impl std::future::Future<Output = Outcome> + Send;
    /// Sent and not acknowledged: resent with the same `cid` after a reconnect.
    fn pending(&self) -> &BTreeMap<String, String>;
    /// Set while resuming after a storm: when the socket was dropped.
    fn resume_from(&mut self) -> &mut Option<Instant>;

    /// A resume counts as done once nothing resent waits for its `ack`.
    fn maybe_resumed(&mut self) {
        if self.pending().is_empty() {
            if let Some(at) = self.resume_from().take() {
                self.ctx().resumed(at);
            }
        }
    }
}

/// Runs sessions on `ws` until the participant is done or its socket is lost; after a storm's
/// drop, reconnects (after the scenario's random delay) and resumes.
async fn drive<P: Participant>(p: &mut P, mut ws: Ws, storm: &mut watch::Receiver<u64>) {
    let ctx = p.ctx().clone();
    let open = &ctx.rec.counters.open;
    loop {
        match p.session(&mut ws, storm).await {
            Outcome::Done => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                open.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            Outcome::Lost => {
                open.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            Outcome::Storm => {
                let dropped_at = Instant::now();
                drop(ws);
                inc(&ctx.rec.counters.dropped_sockets);
                inc(&ctx.storm_dropped);
                open.fetch_sub(1, Ordering::Relaxed);
                tokio::time::sleep(ctx.reconnect_delay()).await;
                match p.open().await {
                    Some(new) => ws = new,
                    None => return,
                }
                *p.resume_from() = Some(dropped_at);
                p.maybe_resumed();
            }
        }
    }
}

/// One visitor, from arrival to leaving.
/// `source` is the address its sockets are bound to ([`wire::source_address`]).
pub async fn visitor(ctx: Arc<Ctx>, n: usize, source: std::net::IpAddr) {
    let mut storm = ctx.storm.clone();
    storm.borrow_and_update();
    let mut v = Visitor {
        ctx: ctx.clone(),
        n,
        source,
        id: None,
        token: None,
        chat: None,
        chats_done: 0,
        next_start: (!ctx.scenario.visitors.start_together).then(Instant::now),
        pending: BTreeMap::new(),
        counter: 0,
        stopping: None,
        resume_from: None,
        retries: Retries::default(),
    };
    let first = v.open().await;
    inc(&ctx.arrived);
    if let Some(ws) = first {
        drive(&mut v, ws, &mut storm).await;
    }
}

impl Participant for Visitor {
    fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    fn pending(&self) -> &BTreeMap<String, String> {
        &self.pending
    }

    fn resume_from(&mut self) -> &mut Option<Instant> {
        &mut self.resume_from
    }

    async fn open(&mut self) -> Option<Ws> {
        let ctx = self.ctx.clone();
        let c = &ctx.rec.counters;
        inc(&c.connect_attempts);
        let began = Instant::now();
        let node = ctx.node_for(Role::Visitor, self.n);
        let result = async {
            let mut ws = wire::connect(
                node,
                ctx.wire,
                Role::Visitor,
                None,
                self.source,
                ctx.scenario.connect_timeout,
            )
            .await
            .map_err(|e| e.code)?;
            let hello = match (&self.id, &self.token) {
                (Some(id), Some(token)) => {
                    let last = self.chat.as_ref().map(|c| c.seqs.contiguous).unwrap_or(0);
                    format!(
                        r#"{{"type":"hello","visitor_id":"{id}","token":"{token}","last_seq":{last}}}"#
                    )
                }
                _ => format!(r#"{{"type":"hello","name":"Load visitor {}"}}"#, self.n),
            };
            if !send(&mut ws, ctx.wire.encode("hello", hello)).await {
                return Err("send_failed".to_string());
            }
            let welcome = expect_welcome(&ctx, &mut ws).await?;
            Ok((ws, welcome))
        }
        .await;
        match result {
            Ok((ws, welcome)) => {
                ctx.rec.connect(began.elapsed());
                inc(&c.connected);
                c.open.fetch_add(1, Ordering::Relaxed);
                self.welcomed(welcome);
                Some(ws)
            }
            Err(code) => {
                inc(&c.connect_failed);
                ctx.rec.error(&format!("visitor_connect_{code}"));
                None
            }
        }
    }

    async fn session(&mut self, ws: &mut Ws, storm: &mut watch::Receiver<u64>) -> Outcome {
        let ctx = self.ctx.clone();
        let sc = &ctx.scenario.visitors;
        for frame in self.pending.values() {
            if !send(ws, frame.clone()).await {
                return Outcome::Lost;
            }
        }
        loop {
            if self.stopping.is_none() && self.chat.is_none() && !sc.chat {
                self.next_start = None;
            }
            let next_send = self.chat.as_ref().and_then(|c| c.next_send);
            let next_start = if self.chat.is_none() && self.stopping.is_none() {
                self.next_start
            } else {
                None
            };
            let stop_deadline = self.stopping;
            let retry = self.retries.next();
            let waiting_to_start = sc.chat
                && sc.start_together
                && self.chats_done == 0
                && self.chat.is_none()
                && self.next_start.is_none()
                && self.stopping.is_none();
            tokio::select! {
                biased;
                changed = storm.changed() => {
                    if changed.is_ok() {
                        return Outcome::Storm;
                    }
                }
                _ = ctx.all_arrived.cancelled(), if waiting_to_start => {
                    // Spread over 100 ms so the go signal is not one synchronised burst.
                    self.next_start = Some(Instant::now() + Duration::from_millis(100).mul_f64(fastrand::f64()));
                }
                _ = ctx.stop.cancelled(), if self.stopping.is_none() => {
                    self.stopping = Some(Instant::now() + ctx.scenario.drain_timeout);
                    if let Some(outcome) = self.wind_down(ws).await {
                        return outcome;
                    }
                }
                _ = sleep_opt(stop_deadline) => {
                    if self.chat.is_some() {
                        ctx.rec.error("drain_timeout");
                    }
                    return Outcome::Done;
                }
                _ = sleep_opt(next_start) => {
                    if !self.start_chat(ws).await {
                        return Outcome::Lost;
                    }
                }
                _ = sleep_opt(next_send) => {
                    if !self.send_next(ws).await {
                        return Outcome::Lost;
                    }
                }
                _ = sleep_opt(retry) => {
                    if !self.retries.resend_due(ws, &self.pending).await {
                        return Outcome::Lost;
                    }
                }
                msg = ws.next() => {
                    let text = match &msg {
                        Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_))) => continue,
                        _ => {
                            ctx.rec.error(&format!("visitor_{}", lost_code(&msg)));
                            return Outcome::Lost;
                        }
                    };
                    match ctx.wire.decode(&text) {
                        Decoded::Frame(f) => {
                            if let Some(outcome) = self.on_frame(ws, f).await {
                                return outcome;
                            }
                        }
                        Decoded::Ping => {
                            if !send(ws, "3".into()).await {
                                return Outcome::Lost;
                            }
                        }
                        Decoded::Ignore => {}
                        Decoded::Bad(_) => ctx.rec.error("unparsable_frame"),
                    }
                }
            }
        }
    }
}

impl Visitor {
    fn welcomed(&mut self, welcome: Frame) {
        if let Some(session) = welcome.visitor {
            self.id = Some(session.id);
            if session.token.is_some() {
                self.token = session.token;
            }
        }
        let open = welcome.conversations.unwrap_or_default();
        if let Some(chat) = &self.chat {
            let known = chat.id.as_deref();
            match open.iter().find(|c| Some(c.id.as_str()) == known) {
                Some(c) if c.recovered == Some(false) => self.ctx.rec.error("not_recovered"),
                Some(_) => {}
                None if known.is_some() && !chat.close_sent => {
                    self.ctx.rec.error("conversation_lost_on_resume")
                }
                None => {}
            }
        }
    }

    fn limit(&self) -> Option<u32> {
        self.ctx.scenario.visitors.messages
    }

    async fn start_chat(&mut self, ws: &mut Ws) -> bool {
        let ctx = self.ctx.clone();
        let sc = &ctx.scenario.visitors;
        self.next_start = None;
        self.counter += 1;
        let cid = format!("v{}-{}", self.n, self.counter);
        let category = &sc.categories[fastrand::usize(..sc.categories.len())];
        // The first message carries no timestamp: its delay is the time to agent, measured on
        // `assigned`, not a delivery latency.
        let frame = ctx.wire.encode(
            "start",
            format!(
                r#"{{"type":"start","category":"{category}","text":"Hello, I need help with my {category}.","cid":"{cid}"}}"#
            ),
        );
        self.pending.insert(cid.clone(), frame.clone());
        self.chat = Some(VisitorChat {
            id: None,
            start_cid: cid,
            started: Instant::now(),
            assigned: false,
            answered: false,
            sent: 0,
            replies: 0,
            next_send: None,
            close_sent: false,
            seqs: SeqTracker::default(),
        });
        inc(&ctx.rec.counters.chats_started);
        send(ws, frame).await
    }

    async fn send_next(&mut self, ws: &mut Ws) -> bool {
        let ctx = self.ctx.clone();
        let sc = &ctx.scenario.visitors;
        let limit = self.limit();
        let Some(chat) = self.chat.as_mut() else {
            return true;
        };
        chat.next_send = None;
        if limit.is_some_and(|l| chat.sent >= l) {
            // All sent: close once every message was answered (agents close themselves when
            // they answer the last one).
            if sc.close_by == CloseBy::Visitor && chat.replies >= chat.sent && !chat.close_sent {
                chat.close_sent = true;
                return send(ws, ctx.wire.encode("close", r#"{"type":"close"}"#.into())).await;
            }
            return true;
        }
        self.counter += 1;
        let cid = format!("v{}-{}", self.n, self.counter);
        let last = limit.is_some_and(|l| chat.sent + 1 >= l);
        let text = wire::stamped_text(sc.text_bytes, last);
        let frame = ctx.wire.encode(
            "message",
            format!(r#"{{"type":"message","cid":"{cid}","text":"{text}"}}"#),
        );
        chat.sent += 1;
        if !sc.wait_for_reply && !last {
            chat.next_send = Some(Instant::now() + sc.think);
        }
        self.pending.insert(cid, frame.clone());
        inc(&ctx.rec.counters.sent);
        send(ws, frame).await
    }

    /// The run is ending: close the chat once the answers in flight arrived.
    async fn wind_down(&mut self, ws: &mut Ws) -> Option<Outcome> {
        let ctx = self.ctx.clone();
        let Some(chat) = self.chat.as_mut() else {
            return Some(Outcome::Done);
        };
        chat.next_send = None;
        if chat.close_sent {
            return None;
        }
        // An unassigned chat, or one whose answers are all in: close now. Otherwise the close
        // goes out when the last answer arrives (see `on_frame`).
        if !chat.assigned || chat.replies >= chat.sent {
            chat.close_sent = true;
            if !send(ws, ctx.wire.encode("close", r#"{"type":"close"}"#.into())).await {
                return Some(Outcome::Lost);
            }
        }
        None
    }

    async fn on_frame(&mut self, ws: &mut Ws, f: Frame) -> Option<Outcome> {
        let ctx = self.ctx.clone();
        let sc = &ctx.scenario.visitors;
        let c = &ctx.rec.counters;
        let limit = self.limit();
        match f.kind.as_str() {
            "ack" => {
                let cid = f.cid.unwrap_or_default();
                if self.pending.remove(&cid).is_some() {
                    inc(&c.acks);
                }
                if f.duplicate == Some(true) {
                    inc(&c.duplicate_acks);
                }
                if let Some(chat) = self.chat.as_mut() {
                    if chat.start_cid == cid && chat.id.is_none() {
                        chat.id = f.conversation_id.clone();
                    }
                    if let Some(seq) = f.seq {
                        chat.seqs.observe(seq, false);
                    }
                }
                self.maybe_resumed();
            }
            "queued" => {
                if let Some(chat) = self.chat.as_mut() {
                    if !chat.answered {
                        chat.answered = true;
                        inc(&ctx.answered);
                        inc(&c.queued);
                    }
                }
            }
            "assigned" => {
                if let Some(chat) = self.chat.as_mut() {
                    if chat.assigned {
                        inc(&ctx.assigned_twice);
                        ctx.rec.error("visitor_assigned_twice");
                    } else {
                        chat.assigned = true;
                        ctx.rec.time_to_agent(chat.started.elapsed());
                        inc(&c.assigned);
                        if !chat.answered {
                            chat.answered = true;
                            inc(&ctx.answered);
                        }
                        if chat.id.is_none() {
                            chat.id = f.conversation.as_ref().map(|c| c.id.clone());
                        }
                        if self.stopping.is_none() && limit != Some(0) {
                            // A random first delay spreads the visitors over the think period.
                            let first = if sc.wait_for_reply {
                                Duration::ZERO
                            } else {
                                sc.think.mul_f64(fastrand::f64())
                            };
                            chat.next_send = Some(Instant::now() + first);
                        } else if self.stopping.is_some() && !chat.close_sent {
                            chat.close_sent = true;
                            let close = ctx.wire.encode("close", r#"{"type":"close"}"#.into());
                            if !send(ws, close).await {
                                return Some(Outcome::Lost);
                            }
                        }
                    }
                }
            }
            "message" => {
                let from_agent = f.sender.as_ref().is_some_and(|s| s.role == "agent");
                let chat = self.chat.as_mut()?;
                let new = f.seq.map(|s| chat.seqs.observe(s, true)).unwrap_or(true);
                if from_agent {
                    if !new {
                        return None;
                    }
                    inc(&c.delivered_a2v);
                    if let Some(stamp) = f.text.as_deref().and_then(wire::stamp_of) {
                        ctx.rec
                            .delivery(false, wire::now_us().saturating_sub(stamp));
                    }
                    chat.replies += 1;
                    if chat.replies >= chat.sent {
                        if self.stopping.is_some() && !chat.close_sent {
                            chat.close_sent = true;
                            let close = ctx.wire.encode("close", r#"{"type":"close"}"#.into());
                            if !send(ws, close).await {
                                return Some(Outcome::Lost);
                            }
                        } else if sc.wait_for_reply || limit.is_some_and(|l| chat.sent >= l) {
                            let wait = if limit.is_some_and(|l| chat.sent >= l) {
                                Duration::ZERO
                            } else {
                                sc.think
                            };
                            if self.stopping.is_none() {
                                chat.next_send = Some(Instant::now() + wait);
                            }
                        }
                    }
                } else if let Some(cid) = &f.cid {
                    // Our own message, replayed after a resume: as good as its ack.
                    self.pending.remove(cid);
                    self.maybe_resumed();
                }
            }
            "closed" => {
                inc(&c.closed);
                if let Some(chat) = self.chat.take() {
                    if let Some(id) = &chat.id {
                        ctx.report_side(id, Role::Visitor, chat.seqs.summary());
                    }
                }
                self.chats_done += 1;
                let more = sc.chats == 0 || self.chats_done < sc.chats;
                if self.stopping.is_some() || !more {
                    if self.stopping.is_some() {
                        return Some(Outcome::Done);
                    }
                    // Done with chatting; stay connected until the run ends.
                    self.next_start = None;
                } else {
                    self.next_start = Some(Instant::now() + sc.think);
                }
            }
            "error" => {
                let code = f.code.unwrap_or_else(|| "unknown".into());
                ctx.rec.error(&code);
                if let Some(cid) = f.cid {
                    match f.retry_after_ms {
                        Some(ms) if self.pending.contains_key(&cid) => {
                            self.retries.schedule(cid, ms)
                        }
                        _ => {
                            self.pending.remove(&cid);
                        }
                    }
                }
            }
            _ => {}
        }
        None
    }
}

// ------------------------------------------------------------------------------------------
// Agents
// ------------------------------------------------------------------------------------------

#[derive(Default)]
struct AgentChat {
    seqs: SeqTracker,
    assigned_frames: u32,
}

struct Agent {
    ctx: Arc<Ctx>,
    /// From 1.
    n: usize,
    token: String,
    source: IpAddr,
    chats: HashMap<String, AgentChat>,
    /// Answers due: (when, order, conversation, closes the chat after).
    due: BinaryHeap<Reverse<(Instant, u64, String, bool)>>,
    pending: BTreeMap<String, String>,
    counter: u64,
    ready: bool,
    resume_from: Option<Instant>,
    retries: Retries,
}

/// One agent, from coming online to leaving.
/// `source` is the address its sockets are bound to ([`wire::source_address`]).
pub async fn agent(ctx: Arc<Ctx>, n: usize, source: std::net::IpAddr) {
    let (_, token) = ctx.scenario.agent_identity(n);
    let mut storm = ctx.storm.clone();
    storm.borrow_and_update();
    let mut a = Agent {
        ctx: ctx.clone(),
        n,
        token,
        source,
        chats: HashMap::new(),
        due: BinaryHeap::new(),
        pending: BTreeMap::new(),
        counter: 0,
        ready: false,
        resume_from: None,
        retries: Retries::default(),
    };
    if let Some(ws) = a.open().await {
        drive(&mut a, ws, &mut storm).await;
    }
}

impl Participant for Agent {
    fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    fn pending(&self) -> &BTreeMap<String, String> {
        &self.pending
    }

    fn resume_from(&mut self) -> &mut Option<Instant> {
        &mut self.resume_from
    }

    async fn open(&mut self) -> Option<Ws> {
        let ctx = self.ctx.clone();
        let c = &ctx.rec.counters;
        inc(&c.connect_attempts);
        let began = Instant::now();
        let node = ctx.node_for(Role::Agent, self.n - 1);
        let result = async {
            let mut ws = wire::connect(
                node,
                ctx.wire,
                Role::Agent,
                Some(&self.token),
                self.source,
                ctx.scenario.connect_timeout,
            )
            .await
            .map_err(|e| e.code)?;
            let hello = if self.chats.is_empty() {
                r#"{"type":"hello"}"#.to_string()
            } else {
                let resume: Vec<String> = self
                    .chats
                    .iter()
                    .map(|(id, chat)| {
                        format!(
                            r#"{{"conversation_id":"{id}","last_seq":{}}}"#,
                            chat.seqs.contiguous
                        )
                    })
                    .collect();
                format!(r#"{{"type":"hello","resume":[{}]}}"#, resume.join(","))
            };
            if !send(&mut ws, ctx.wire.encode("hello", hello)).await {
                return Err("send_failed".to_string());
            }
            let welcome = expect_welcome(&ctx, &mut ws).await?;
            Ok((ws, welcome))
        }
        .await;
        match result {
            Ok((ws, welcome)) => {
                ctx.rec.connect(began.elapsed());
                inc(&c.connected);
                c.open.fetch_add(1, Ordering::Relaxed);
                if !self.ready {
                    self.ready = true;
                    inc(&ctx.agents_ready);
                }
                let open = welcome.conversations.unwrap_or_default();
                for id in self.chats.keys() {
                    if !open.iter().any(|c| &c.id == id) {
                        ctx.rec.error("conversation_lost_on_resume");
                    }
                }
                for conv in open {
                    if conv.recovered == Some(false) {
                        ctx.rec.error("not_recovered");
                    }
                }
                Some(ws)
            }
            Err(code) => {
                inc(&c.connect_failed);
                if !self.ready {
                    // Counted as arrived, so the run does not wait for it.
                    self.ready = true;
                    inc(&ctx.agents_ready);
                }
                ctx.rec.error(&format!("agent_connect_{code}"));
                None
            }
        }
    }

    async fn session(&mut self, ws: &mut Ws, storm: &mut watch::Receiver<u64>) -> Outcome {
        let ctx = self.ctx.clone();
        for frame in self.pending.values() {
            if !send(ws, frame.clone()).await {
                return Outcome::Lost;
            }
        }
        // Set once the run stops the agents: an agent with chats still open waits (bounded)
        // for their `closed`, which crosses nodes later than the visitor's own; leaving at once
        // would count them as not closed.
        let mut leave_by: Option<Instant> = None;
        loop {
            if leave_by.is_some() && self.chats.is_empty() {
                return Outcome::Done;
            }
            let next = self.due.peek().map(|Reverse((at, ..))| *at);
            let retry = self.retries.next();
            tokio::select! {
                biased;
                changed = storm.changed() => {
                    if changed.is_ok() {
                        return Outcome::Storm;
                    }
                }
                _ = sleep_opt(leave_by) => return Outcome::Done,
                _ = sleep_opt(next) => {
                    if let Some(Reverse((_, _, conv, close))) = self.due.pop() {
                        if !self.answer(ws, &conv, close).await {
                            return Outcome::Lost;
                        }
                    }
                }
                _ = sleep_opt(retry) => {
                    if !self.retries.resend_due(ws, &self.pending).await {
                        return Outcome::Lost;
                    }
                }
                msg = ws.next() => {
                    let text = match &msg {
                        Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_))) => continue,
                        _ => {
                            ctx.rec.error(&format!("agent_{}", lost_code(&msg)));
                            return Outcome::Lost;
                        }
                    };
                    match ctx.wire.decode(&text) {
                        Decoded::Frame(f) => self.on_frame(f),
                        Decoded::Ping => {
                            if !send(ws, "3".into()).await {
                                return Outcome::Lost;
                            }
                        }
                        Decoded::Ignore => {}
                        Decoded::Bad(_) => ctx.rec.error("unparsable_frame"),
                    }
                }
                // After reading: frames already here (the last `closed`) are seen before leaving.
                _ = ctx.agents_stop.cancelled(), if leave_by.is_none() => {
                    leave_by = Some(Instant::now() + ctx.scenario.drain_timeout);
                }
            }
        }
    }
}

impl Agent {
    async fn answer(&mut self, ws: &mut Ws, conv: &str, close: bool) -> bool {
        let ctx = self.ctx.clone();
        if !self.chats.contains_key(conv) {
            // Closed meanwhile (the visitor left): nothing to answer.
            return true;
        }
        self.counter += 1;
        let cid = format!("a{}-{}", self.n, self.counter);
        let text = wire::stamped_text(ctx.scenario.visitors.text_bytes, false);
        let frame = ctx.wire.encode(
            "message",
            format!(
                r#"{{"type":"message","conversation_id":"{conv}","cid":"{cid}","text":"{text}"}}"#
            ),
        );
        self.pending.insert(cid, frame.clone());
        inc(&ctx.rec.counters.sent);
        if !send(ws, frame).await {
            return false;
        }
        if close {
            let frame = ctx.wire.encode(
                "close",
                format!(r#"{{"type":"close","conversation_id":"{conv}","resolved":true}}"#),
            );
            return send(ws, frame).await;
        }
        true
    }

    fn on_frame(&mut self, f: Frame) {
        let ctx = self.ctx.clone();
        let c = &ctx.rec.counters;
        match f.kind.as_str() {
            "assigned" => {
                let Some(conv) = f.conversation else { return };
                let chat = self.chats.entry(conv.id.clone()).or_default();
                chat.assigned_frames += 1;
                if chat.assigned_frames == 1 {
                    ctx.agent_open[self.n - 1].fetch_add(1, Ordering::Relaxed);
                }
                let mut assignments = ctx.assignments.lock().unwrap();
                let count = assignments.entry(conv.id).or_default();
                *count += 1;
                if *count > 1 {
                    inc(&ctx.assigned_twice);
                    ctx.rec.error("conversation_assigned_twice");
                }
            }
            "message" => {
                let Some(conv) = f.conversation_id else {
                    return;
                };
                let from_visitor = f.sender.as_ref().is_some_and(|s| s.role == "visitor");
                let Some(chat) = self.chats.get_mut(&conv) else {
                    return;
                };
                let new = f.seq.map(|s| chat.seqs.observe(s, true)).unwrap_or(true);
                if !from_visitor {
                    if let Some(cid) = &f.cid {
                        self.pending.remove(cid);
                        self.maybe_resumed();
                    }
                    return;
                }
                if !new {
                    return;
                }
                let text = f.text.as_deref().unwrap_or("");
                let Some(stamp) = wire::stamp_of(text) else {
                    // The opening message: not answered, the visitor's next one is.
                    return;
                };
                inc(&c.delivered_v2a);
                ctx.rec.delivery(true, wire::now_us().saturating_sub(stamp));
                let close =
                    ctx.scenario.visitors.close_by == CloseBy::Agent && text.ends_with(" last");
                self.counter += 1;
                self.due.push(Reverse((
                    Instant::now() + ctx.scenario.agents.reply_think,
                    self.counter,
                    conv,
                    close,
                )));
            }
            "ack" => {
                if let Some(cid) = &f.cid {
                    if self.pending.remove(cid).is_some() {
                        inc(&c.acks);
                    }
                }
                if f.duplicate == Some(true) {
                    inc(&c.duplicate_acks);
                }
                if let (Some(conv), Some(seq)) = (&f.conversation_id, f.seq) {
                    if let Some(chat) = self.chats.get_mut(conv) {
                        chat.seqs.observe(seq, false);
                    }
                }
                self.maybe_resumed();
            }
            "closed" => {
                let Some(conv) = f.conversation_id else {
                    return;
                };
                if let Some(chat) = self.chats.remove(&conv) {
                    ctx.agent_open[self.n - 1].fetch_sub(1, Ordering::Relaxed);
                    ctx.report_side(&conv, Role::Agent, chat.seqs.summary());
                }
            }
            "error" => {
                let code = f.code.unwrap_or_else(|| "unknown".into());
                ctx.rec.error(&format!("agent_{code}"));
                if let Some(cid) = f.cid {
                    match f.retry_after_ms {
                        Some(ms) if self.pending.contains_key(&cid) => {
                            self.retries.schedule(cid, ms)
                        }
                        _ => {
                            self.pending.remove(&cid);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Lost and duplicated messages over every conversation that both sides saw close.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Integrity {
    /// Conversations that both sides saw close.
    pub conversations_checked: u64,
    /// Conversations only one side (or neither) saw close before the run ended.
    pub conversations_unclosed: u64,
    /// Sequence numbers a side never saw (each side counted).
    pub lost: u64,
    /// `message` frames a side saw twice.
    pub duplicated: u64,
}

impl Ctx {
    pub fn integrity(&self) -> Integrity {
        let checks = self.checks.lock().unwrap();
        let mut out = Integrity::default();
        for check in checks.values() {
            match (check.visitor, check.agent) {
                (Some(v), Some(a)) => {
                    out.conversations_checked += 1;
                    let last = v.max.max(a.max);
                    out.lost += (last - v.distinct) + (last - a.distinct);
                    out.duplicated += v.duplicates + a.duplicates;
                }
                _ => out.conversations_unclosed += 1,
            }
        }
        out
    }

    /// Agents' open chats right now: (min, max).
    pub fn load_spread(&self) -> Option<(i64, i64)> {
        let loads: Vec<i64> = self
            .agent_open
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        Some((*loads.iter().min()?, *loads.iter().max()?))
    }

    pub fn answered(&self) -> u64 {
        get(&self.answered)
    }
}

#[cfg(test)]
mod tests {
    use super::SeqTracker;

    #[test]
    fn seq_tracker_counts_contiguous_and_duplicates() {
        let mut t = SeqTracker::default();
        assert!(t.observe(1, false));
        assert!(t.observe(3, true));
        assert_eq!(t.contiguous, 1);
        assert!(t.observe(2, true));
        assert_eq!(t.contiguous, 3);
        assert!(!t.observe(2, true));
        assert!(!t.observe(3, false));
        assert_eq!((t.max, t.distinct, t.duplicates), (3, 3, 1));
        assert!(t.observe(200, true));
        assert_eq!(t.contiguous, 3);
    }
}
