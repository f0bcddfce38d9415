//! Scenarios where the two engines used to differ, each written once and run on both topologies:
//! one in-process node (tests/api/parity_one_node.rs) and two nodes on one Redis, visitors on
//! one and agents on the other (tests/redis/parity_two_nodes.rs). Each scenario asserts what the desk
//! promises (docs/desk.md) in terms any topology can show: frames, the REST API, webhooks and
//! metrics summed over the nodes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley::clock::Clock;
use parley::config::{Config, CsatMode, Hours, HoursConfig, WebhookConfig};
use parley::desk::webhooks::EventType;
use parley::protocol::{ConversationView, ErrorCode, QueueReason, ServerFrame, SlaState};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::helpers::{Agent, Client, Gateway, TestApp, Visitor, FRAME_TIMEOUT};

/// Monday 2026-11-30 10:00 UTC: the manual clock's start, within the test teams' hours.
pub const MONDAY_10: u64 = 1_796_032_800_000;
/// Saturday 2026-12-05 10:00 UTC: outside the supervisors' weekday hours.
pub const SATURDAY_10: u64 = MONDAY_10 + 5 * 24 * 3_600_000;

/// What a scenario needs from one node: sockets, the admin REST API, metrics.
#[allow(async_fn_in_trait)]
pub trait Node {
    async fn visitor(&self) -> Visitor;
    async fn reconnect_visitor(&self, id: &str, token: &str, last_seq: Option<u64>) -> Visitor;
    async fn agent(&self, name: &str) -> Agent;
    async fn get_json(&self, path: &str) -> Value;
    async fn metric(&self, name: &str, label: &str) -> f64;
}

impl Node for TestApp {
    async fn visitor(&self) -> Visitor {
        Gateway::visitor(self).await
    }
    async fn reconnect_visitor(&self, id: &str, token: &str, last_seq: Option<u64>) -> Visitor {
        Gateway::reconnect_visitor(self, id, token, last_seq).await
    }
    async fn agent(&self, name: &str) -> Agent {
        Gateway::agent(self, name).await
    }
    async fn get_json(&self, path: &str) -> Value {
        Gateway::get_json(self, path).await
    }
    async fn metric(&self, name: &str, label: &str) -> f64 {
        Gateway::metric(self, name, label).await
    }
}

/// A desk as a scenario sees it: where visitors connect, where agents connect (the same node
/// on one node, different ones on Redis), every node, and the clock the desk reads.
pub struct Desk<'a, N: Node> {
    pub visitors: &'a N,
    pub agents: &'a N,
    pub nodes: Vec<&'a N>,
    pub clock: Clock,
}

impl<N: Node> Desk<'_, N> {
    /// A metric summed over the nodes: each counts what it did.
    pub async fn metric(&self, name: &str, label: &str) -> f64 {
        let mut sum = 0.0;
        for n in &self.nodes {
            sum += n.metric(name, label).await;
        }
        sum
    }

    /// `agent` has the chat `visitor` starts in `category`.
    async fn chat(
        &self,
        agent: &mut Agent,
        category: &str,
        text: &str,
    ) -> (Visitor, ConversationView, Value) {
        let mut v = self.visitors.visitor().await;
        v.start(category, text).await;
        let chat = v.expect_assigned().await;
        let (seen, _) = agent.expect_chat().await;
        assert_eq!(seen.id, chat.id);
        let id = json!(chat.id);
        (v, seen, id)
    }
}

/// The shared desk (teams, escalation) with first-response checks every 20 ms, a one-minute
/// target and a warning at half of it.
pub fn sla_desk(c: &mut Config) {
    crate::contract::desk(c);
    c.desk.first_response_target = Duration::from_secs(60);
    c.desk.sla_warning_percent = 50;
    c.desk.sla_check_interval = Duration::from_millis(20);
}

/// Supervisors work weekdays 09:00-18:00 in Shanghai (closed on [`SATURDAY_10`]).
pub fn weekday_supervisors(c: &mut Config) {
    crate::contract::desk(c);
    c.teams[2].hours = Some(
        Hours::parse(&HoursConfig {
            timezone: "Asia/Shanghai".into(),
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            open: "09:00".into(),
            close: "18:00".into(),
        })
        .expect("valid hours"),
    );
}

async fn expect_sla(client: &mut Client) -> (SlaState, u64) {
    client
        .expect("sla", |f| match f {
            ServerFrame::Sla { state, due_at, .. } => Some((*state, *due_at)),
            _ => None,
        })
        .await
}

/// The first-response clock runs on the desk's clock on every topology: the deadline is the
/// controlled time plus the target, and the warning and the breach come when the test moves
/// the clock, not with real seconds.
pub async fn the_first_response_clock_reads_the_desk_clock<N: Node>(desk: &Desk<'_, N>) {
    let mut a1 = desk.agents.agent("a1").await;
    let mut v = desk.visitors.visitor().await;
    v.start("other", "hello?").await;
    v.expect_assigned().await;
    let (chat, _) = a1.expect_chat().await;
    let sla = chat.sla.expect("agents see the clock");
    assert_eq!(sla.state, SlaState::Pending);
    assert_eq!(sla.due_at, MONDAY_10 + 60_000, "due on the desk's clock");
    desk.clock.advance(Duration::from_secs(30));
    assert_eq!(
        expect_sla(&mut a1.client).await,
        (SlaState::Warning, MONDAY_10 + 60_000)
    );
    desk.clock
        .advance(Duration::from_secs(30) + Duration::from_millis(1));
    assert_eq!(expect_sla(&mut a1.client).await.0, SlaState::Breached);
    a1.say(&chat, "sorry for the wait").await;
    assert_eq!(
        desk.metric("parley_sla_first_responses_total", "outcome=\"missed\"")
            .await,
        1.0
    );
    assert_eq!(
        desk.metric("parley_sla_breaches_total", "category=\"other\"")
            .await,
        1.0
    );
}

/// `desk.sla_check_interval` is honoured: with an hour between checks, a clock moved past its
/// deadline is not reported within a second and a half (on Redis it used to be checked every
/// half second whatever the setting said). Waiting for a frame that must not come is the only
/// way to observe "not yet"; the wait is bounded.
pub async fn the_sla_check_interval_is_honoured<N: Node>(desk: &Desk<'_, N>) {
    let mut a1 = desk.agents.agent("a1").await;
    let (mut v, _, _) = desk.chat(&mut a1, "other", "hello?").await;
    desk.clock.advance(Duration::from_secs(61));
    let early = tokio::time::timeout(Duration::from_millis(1500), expect_sla(&mut a1.client)).await;
    assert!(early.is_err(), "checked before the interval: {early:?}");
    // The desk still works meanwhile.
    v.say_acked("still there?").await;
}

/// Reopening honours a window longer than a day, and ends with it, on the desk's clock.
pub async fn a_reopen_window_longer_than_a_day_is_honoured<N: Node>(desk: &Desk<'_, N>) {
    let mut a1 = desk.agents.agent("a1").await;
    let (mut v, _, id) = desk.chat(&mut a1, "account", "first time").await;
    a1.client
        .send(json!({"type": "close", "conversation_id": id, "resolved": true}))
        .await;
    a1.client.expect_closed().await;
    v.client.expect_closed().await;
    desk.clock.advance(Duration::from_secs(2 * 24 * 3600));
    v.start("account", "it broke again").await;
    let back = v.expect_assigned().await;
    assert_eq!(
        json!(back.id),
        id,
        "reopened after two days of a three-day window"
    );
    assert_eq!(back.reopened, 1);
    a1.expect_chat().await;
    a1.client
        .send(json!({"type": "close", "conversation_id": id, "resolved": true}))
        .await;
    a1.client.expect_closed().await;
    v.client.expect_closed().await;
    desk.clock
        .advance(Duration::from_secs(3 * 24 * 3600) + Duration::from_secs(1));
    v.start("account", "a new question").await;
    let fresh = v.expect_assigned().await;
    assert_ne!(json!(fresh.id), id, "past the window: a new conversation");
    assert_eq!(fresh.reopened, 0);
}

/// Records the JSON bodies of the webhooks it receives.
pub struct Hook {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    arrived: Arc<Notify>,
}

impl Hook {
    pub async fn start() -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (b, n) = (bodies.clone(), arrived.clone());
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                let json = serde_json::from_slice(&body).expect("a JSON body");
                b.lock().unwrap().push(json);
                n.notify_waiters();
                axum::http::StatusCode::NO_CONTENT
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            bodies,
            arrived,
        }
    }

    /// This endpoint for `conversation.created` only.
    pub fn endpoint(&self) -> WebhookConfig {
        WebhookConfig {
            url: self.url.clone(),
            secret: "parity-secret-0123456789".into(),
            events: vec![EventType::ConversationCreated],
        }
    }

    /// The first event of `kind`, waited for.
    async fn first(&self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(found) = self
                .bodies
                .lock()
                .unwrap()
                .iter()
                .find(|b| b["type"] == kind)
            {
                return found.clone();
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("no {kind} webhook in time");
            }
        }
    }
}

/// Outside its team's hours a chat is an offline message even when an agent of the team is
/// online and takes it at once: flagged from the start (before routing), in the
/// `conversation.created` webhook, the agent's view and the offline-message count.
pub async fn outside_hours_a_chat_is_offline_from_the_start<N: Node>(
    desk: &Desk<'_, N>,
    hook: &Hook,
) {
    let mut a5 = desk.agents.agent("a5").await;
    let mut v = desk.visitors.visitor().await;
    v.start("security", "my account was drained").await;
    let (chat, _) = a5.expect_chat().await;
    assert!(chat.offline, "the agent sees an offline message");
    let created = hook.first("conversation.created").await;
    assert_eq!(created["data"]["conversation"]["id"], json!(chat.id));
    assert_eq!(
        created["data"]["conversation"]["offline"], true,
        "{created}"
    );
    assert_eq!(
        desk.metric("parley_offline_messages_total", "category=\"security\"")
            .await,
        1.0
    );
}

/// A conversation's transcript, through the REST API of `node`.
async fn transcript<N: Node>(node: &N, id: &Value) -> Value {
    node.get_json(&format!("/v1/conversations/{}", id.as_str().unwrap()))
        .await
}

fn texts(transcript: &Value) -> Vec<String> {
    transcript["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A refused transfer leaves no note behind; an accepted one leaves its notes, before the
/// receiving agent reads the history.
pub async fn notes_follow_the_transfer_outcome<N: Node>(desk: &Desk<'_, N>) {
    let mut a1 = desk.agents.agent("a1").await;
    let (_v, _, id) = desk.chat(&mut a1, "other", "help").await;
    // a2 is not online: refused, whichever engine checks.
    a1.client
        .send(json!({"type": "transfer", "conversation_id": id, "agent": "a2", "note": "over to you"}))
        .await;
    a1.client
        .expect_error_code(ErrorCode::TargetUnavailable)
        .await;
    let after_refusal = texts(&transcript(desk.visitors, &id).await);
    assert_eq!(after_refusal, ["help"], "a refused transfer wrote nothing");
    let mut a3 = desk.agents.agent("a3").await;
    a1.client
        .send(json!({"type": "transfer", "conversation_id": id, "agent": "a3", "note": "over to you"}))
        .await;
    let (got, history) = a3.expect_chat().await;
    assert_eq!(json!(got.id), id);
    let seen: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        seen,
        ["help", "Transferred to Agent 3 by Agent 1", "over to you"]
    );
}

/// The queue estimate is learnt from assignments on both topologies (it used to be a fixed
/// minute a place on Redis): after a wait of well under a minute, the next visitor in the queue
/// is told less than a minute.
pub async fn the_queue_estimate_is_learnt<N: Node>(desk: &Desk<'_, N>) {
    let mut a1 = desk.agents.agent("a1").await;
    let (_first, _, first_id) = desk.chat(&mut a1, "other", "first").await;
    let mut second = desk.visitors.visitor().await;
    second.start("other", "second").await;
    let (position, estimate, reason) = second.client.expect_queued().await;
    assert_eq!((position, reason), (1, QueueReason::NoAgentAvailable));
    assert_eq!(estimate, 60_000, "nothing learnt yet: a minute a place");
    a1.client
        .send(json!({"type": "close", "conversation_id": first_id, "resolved": true}))
        .await;
    a1.client.expect_closed().await;
    second.expect_assigned().await;
    a1.expect_chat().await;
    let mut third = desk.visitors.visitor().await;
    third.start("other", "third").await;
    // The visitor's node may tell the old figure first; its refresher then tells the learnt one.
    loop {
        let (position, estimate, _) = third.client.expect_queued().await;
        assert_eq!(position, 1);
        if estimate < 60_000 {
            break;
        }
    }
}

/// The REST transcript has every message at once, also those another node accepted and has not
/// written to the store yet (its persister writes behind: here, an hour behind).
pub async fn a_transcript_has_what_the_store_lacks<N: Node>(desk: &Desk<'_, N>) {
    let mut a1 = desk.agents.agent("a1").await;
    let (mut v, chat, id) = desk.chat(&mut a1, "other", "hello").await;
    a1.say(&chat, "the answer").await;
    v.expect_message().await;
    assert_eq!(
        texts(&transcript(desk.visitors, &id).await),
        ["hello", "the answer"]
    );
}

/// A visitor coming back is welcomed with its conversation as visitors see it: no
/// first-response clock, no contact, no internal figures (on Redis the welcome used to carry the
/// agents' view).
pub async fn a_returning_visitor_sees_no_internal_figures<N: Node>(desk: &Desk<'_, N>) {
    let mut a1 = desk.agents.agent("a1").await;
    let mut v = desk.visitors.visitor().await;
    v.client
        .send(
            json!({"type": "start", "category": "other", "text": "hi", "cid": "c1",
            "contact": "dana@example.com"}),
        )
        .await;
    v.client.expect_ack("c1").await;
    v.expect_assigned().await;
    let (seen, _) = a1.expect_chat().await;
    assert_eq!(seen.contact.as_deref(), Some("dana@example.com"));
    assert!(seen.sla.is_some(), "agents see the clock");
    let back = desk
        .visitors
        .reconnect_visitor(&v.id, &v.token, Some(1))
        .await;
    let chat = back
        .welcome
        .conversations
        .first()
        .expect("its open conversation");
    assert_eq!(chat.id, seen.id);
    assert!(chat.sla.is_none(), "{chat:?}");
    assert!(chat.contact.is_none(), "{chat:?}");
    assert_eq!(chat.recovered, Some(true));
}

/// One node's slow persister, for [`a_transcript_has_what_the_store_lacks`].
pub fn writes_an_hour_behind(c: &mut Config) {
    c.transcripts.flush_interval = Duration::from_secs(3600);
}

/// A three-day reopen window (no survey, so the visitor's next frames are the chat's).
pub fn three_day_reopen(c: &mut Config) {
    c.desk.reopen_window = Duration::from_secs(3 * 24 * 3600);
    c.desk.csat = CsatMode::Manual;
}

/// An hour between first-response checks.
pub fn hourly_sla_checks(c: &mut Config) {
    sla_desk(c);
    c.desk.sla_check_interval = Duration::from_secs(3600);
}

/// Agents hold one chat at a time.
pub fn one_chat_each(c: &mut Config) {
    for a in &mut c.agents {
        a.capacity = Some(1);
    }
}

/// A conversation reopened before anyone answered it keeps its first-response clock: the
/// deadline set when it started still stands, and the agent who takes it is warned on time.
/// (The desk schedules the clock again on every reopen, on every topology.)
pub async fn a_reopened_unanswered_conversation_keeps_its_first_response_clock<N: Node>(
    desk: &Desk<'_, N>,
) {
    let mut v = desk.visitors.visitor().await;
    v.start("other", "anyone there?").await;
    v.client.expect_queued().await;
    v.client.send(json!({"type": "close"})).await;
    v.client.expect_closed().await;
    desk.clock.advance(Duration::from_secs(10));
    v.start("other", "me again").await;
    v.client.expect_queued().await;
    let mut a1 = desk.agents.agent("a1").await;
    let (chat, _) = a1.expect_chat().await;
    assert_eq!(chat.reopened, 1, "the same conversation");
    let sla = chat.sla.expect("agents see the clock");
    assert_eq!(
        (sla.state, sla.due_at),
        (SlaState::Pending, MONDAY_10 + 60_000),
        "due when it first started"
    );
    desk.clock.advance(Duration::from_secs(21));
    assert_eq!(
        expect_sla(&mut a1.client).await,
        (SlaState::Warning, MONDAY_10 + 60_000)
    );
}
