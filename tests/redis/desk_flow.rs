//! The support desk across nodes: teams routing, private notes, transfers and escalation,
//! surveys, the console's view of who is online and the widget's availability, webhooks.
//! Each test mirrors its single-node version in tests/api/desk.rs with the clients spread over
//! two nodes that share one Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley::config::{BreachAction, CategoryConfig, Config, CsatMode, WebhookConfig};
use parley::protocol::{
    AgentStatus, ClosedReason, ConversationView, ErrorCode, MessageKind, QueueReason, ServerFrame,
    SlaState,
};
use serde_json::json;

use crate::desk_common::{desk, expect_transferred, send, transfer_to_team_keeps_history};
use crate::harness::{assert_no_node_panicked, Node, PgServer, RedisCluster, RedisServer};
use crate::helpers::{agent_token, Agent, Client, Visitor, ADMIN_TOKEN};

/// Two nodes of one desk configured by `customise`.
async fn two_nodes(redis: &RedisServer, customise: fn(&mut Config)) -> (Node, Node) {
    (
        Node::start_with(redis, customise).await,
        Node::start_with(redis, customise).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_category_routes_to_its_team_only_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, desk).await;
    // Everyone online on one node or the other; a5 (a supervisor, on A) is the only one who may
    // take security.
    let _a1 = a.agent("a1").await;
    let mut a3 = b.agent("a3").await;
    let mut a5 = a.agent("a5").await;
    let mut v = b.visitor().await;
    v.start("security", "someone logged into my wallet").await;
    let chat = v.expect_assigned().await;
    assert_eq!(chat.agent.unwrap().id, "a5");
    assert_eq!(chat.team.as_deref(), Some("supervisors"));
    let (seen, _) = a5.expect_chat().await;
    assert_eq!(seen.id, chat.id);
    assert_eq!(seen.team.as_deref(), Some("supervisors"));
    // Transaction goes to tech (a3, on B), from a visitor on A.
    let mut w = a.visitor().await;
    w.start("transaction", "withdrawal stuck").await;
    assert_eq!(w.expect_assigned().await.agent.unwrap().id, "a3");
    let (seen, history) = a3.expect_chat().await;
    assert_eq!(history[0].text, "withdrawal stuck");
    assert_eq!(seen.team.as_deref(), Some("tech"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_queue_waits_for_its_team_without_holding_up_others_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, desk).await;
    let mut front = a.agent("a1").await;
    let mut v = b.visitor().await;
    v.start("security", "phishing site").await;
    let (position, _, reason) = v.client.expect_queued().await;
    assert_eq!(position, 1);
    // No supervisor is online: an offline message, not a wait behind busy agents.
    assert_eq!(reason, QueueReason::NobodyOnline);
    // A general question behind it goes to the front-line agent at once.
    let mut w = b.visitor().await;
    w.start("other", "how do I export my keys").await;
    assert_eq!(w.expect_assigned().await.agent.unwrap().id, "a1");
    front.expect_chat().await;
    // A supervisor arrives on the other node and takes the security chat.
    let mut sup = b.agent("a6").await;
    let (chat, history) = sup.expect_chat().await;
    assert_eq!(chat.category, "security");
    assert_eq!(history[0].text, "phishing site");
    assert_eq!(v.expect_assigned().await.agent.unwrap().id, "a6");
    redis.assert_routing_indexes_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_capacity_hold_within_a_team_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    fn config(c: &mut Config) {
        desk(c);
        c.agents[2].capacity = Some(2); // a3
        c.agents[3].capacity = Some(2); // a4
    }
    let (a, b) = two_nodes(&redis, config).await;
    let mut a3 = a.agent("a3").await;
    let _a4 = b.agent("a4").await;
    // A front-line agent with room, who must not get tech chats.
    let _a1 = a.agent("a1").await;
    let mut order = Vec::new();
    let mut visitors = Vec::new();
    for i in 0..4 {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut v = node.visitor().await;
        v.start("transaction", &format!("tech question {i}")).await;
        order.push(v.expect_assigned().await.agent.unwrap().id);
        visitors.push(v);
    }
    // Strict rotation between the two team members, whatever node each visitor is on.
    let mut per_agent: HashMap<&str, usize> = HashMap::new();
    for a in &order {
        *per_agent.entry(a.as_str()).or_default() += 1;
    }
    assert_eq!(per_agent.get("a3"), Some(&2), "{order:?}");
    assert_eq!(per_agent.get("a4"), Some(&2), "{order:?}");
    assert!(order.windows(2).all(|w| w[0] != w[1]), "{order:?}");
    // The team is full: the next tech chat waits although a1 has room.
    let mut waiting = b.visitor().await;
    waiting.start("transaction", "one more").await;
    let (position, _, reason) = waiting.client.expect_queued().await;
    assert_eq!((position, reason), (1, QueueReason::NoAgentAvailable));
    // While a general chat goes to a1 straight away.
    let mut general = a.visitor().await;
    general.start("other", "hello").await;
    assert_eq!(general.expect_assigned().await.agent.unwrap().id, "a1");
    redis.assert_routing_indexes_agree().await;
    // a3 frees a slot: the waiting tech chat goes to a3, not to a1 who had room all along.
    let (first, _) = a3.expect_chat().await;
    a3.expect_chat().await;
    a3.close(&first, true).await;
    assert_eq!(waiting.expect_assigned().await.agent.unwrap().id, "a3");
    redis.assert_routing_indexes_agree().await;
}

/// Agent `agent` online on `agent_node`, then a visitor on `visitor_node` who starts a
/// conversation in `category` that the agent gets.
async fn chat_across(
    agent_node: &Node,
    agent: &str,
    visitor_node: &Node,
    category: &str,
    text: &str,
) -> (Agent, Visitor, ConversationView) {
    let mut agent = agent_node.agent(agent).await;
    let mut visitor = visitor_node.visitor().await;
    visitor.start(category, text).await;
    let chat = visitor.expect_assigned().await;
    let (seen, _) = agent.expect_chat().await;
    assert_eq!(seen.id, chat.id, "the chat went to another agent");
    (agent, visitor, chat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_team_on_another_node_keeps_the_conversation_and_its_history() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, desk).await;
    let (mut a1, mut v, chat) = chat_across(&a, "a1", &a, "other", "my withdrawal is stuck").await;
    let mut a3 = b.agent("a3").await;
    // The receiving agent is on the other node.
    transfer_to_team_keeps_history(&mut a1, &mut v, &chat, &mut a3).await;
    // And the visitor's next message reaches a3 on B, not a1 on A.
    let cid = v.say("thanks").await;
    v.client.expect_ack(&cid).await;
    assert_eq!(a3.expect_message().await.text, "thanks");
    assert_no_node_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_busy_team_waits_at_the_front_of_its_queue_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    fn config(c: &mut Config) {
        desk(c);
        c.agents[2].capacity = Some(1); // a3, the only tech agent online
    }
    let (a, b) = two_nodes(&redis, config).await;
    let mut a1 = a.agent("a1").await;
    let (mut a3, _busy, tech_chat) =
        chat_across(&b, "a3", &a, "transaction", "first tech chat").await;
    let mut waiting = b.visitor().await;
    waiting.start("transaction", "second tech chat").await;
    waiting.client.expect_queued().await;
    let mut v = b.visitor().await;
    v.start("other", "needs tech").await;
    let chat = v.expect_assigned().await;
    a1.expect_chat().await;
    send(
        &mut a1,
        json!({"type": "transfer", "conversation_id": chat.id, "team": "tech"}),
    )
    .await;
    expect_transferred(&mut v.client).await;
    let (position, _, reason) = v.client.expect_queued().await;
    assert_eq!(
        (position, reason),
        (1, QueueReason::Transferred),
        "ahead of the chat that was waiting"
    );
    redis.assert_routing_indexes_agree().await;
    // a3 (on B) frees its slot: the transferred chat comes first.
    a3.close(&tech_chat, true).await;
    let (next, history) = a3.expect_chat().await;
    assert_eq!(next.id, chat.id);
    assert_eq!(history[0].text, "needs tech");
    assert_eq!(v.expect_assigned().await.agent.unwrap().id, "a3");
    redis.assert_routing_indexes_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_named_agent_on_another_node_needs_a_free_slot() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    fn config(c: &mut Config) {
        desk(c);
        c.agents[1].capacity = Some(1); // a2
    }
    let (a, b) = two_nodes(&redis, config).await;
    let mut a1 = a.agent("a1").await;
    let mut a2 = b.agent("a2").await;
    let mut visitors = Vec::new();
    let mut chats = Vec::new();
    for i in 0..2 {
        let mut v = b.visitor().await;
        v.start("other", &format!("chat {i}")).await;
        chats.push(v.expect_assigned().await);
        visitors.push(v);
    }
    let on = |agent: &str| {
        chats
            .iter()
            .find(|c| c.agent.as_ref().unwrap().id == agent)
            .unwrap()
            .clone()
    };
    let (on_a1, on_a2) = (on("a1"), on("a2"));
    a1.expect_chat().await;
    a2.expect_chat().await;
    // a2 is full; a1 is itself; "nope" is no team.
    send(
        &mut a1,
        json!({"type": "transfer", "conversation_id": on_a1.id, "agent": "a2"}),
    )
    .await;
    a1.client
        .expect_error_code(ErrorCode::TargetUnavailable)
        .await;
    send(
        &mut a1,
        json!({"type": "transfer", "conversation_id": on_a1.id, "agent": "a1"}),
    )
    .await;
    a1.client
        .expect_error_code(ErrorCode::TargetUnavailable)
        .await;
    send(
        &mut a1,
        json!({"type": "transfer", "conversation_id": on_a1.id, "team": "nope"}),
    )
    .await;
    a1.client.expect_error_code(ErrorCode::NotFound).await;
    // Still a1's: it can write.
    a1.say(&on_a1, "still here").await;
    // a2 frees its slot; now the transfer goes through, to the other node.
    a2.close(&on_a2, true).await;
    send(
        &mut a1,
        json!({"type": "transfer", "conversation_id": on_a1.id, "agent": "a2"}),
    )
    .await;
    match expect_transferred(&mut a1.client).await {
        ServerFrame::Transferred { agent, .. } => assert_eq!(agent.unwrap().id, "a2"),
        _ => unreachable!(),
    }
    let (received, history) = a2.expect_chat().await;
    assert_eq!(received.id, on_a1.id);
    assert!(history.iter().any(|m| m.text == "still here"));
    redis.assert_routing_indexes_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_goes_to_the_escalation_team_on_another_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, desk).await;
    let (mut a1, mut v, chat) = chat_across(&a, "a1", &b, "other", "refund above the limit").await;
    let mut a5 = b.agent("a5").await;
    send(
        &mut a1,
        json!({"type": "escalate", "conversation_id": chat.id, "note": "over my limit"}),
    )
    .await;
    match expect_transferred(&mut v.client).await {
        ServerFrame::Transferred {
            escalated, team, ..
        } => {
            assert!(escalated);
            assert_eq!(team.as_deref(), Some("Supervisors"));
        }
        _ => unreachable!(),
    }
    let (received, history) = a5.expect_chat().await;
    assert_eq!(received.id, chat.id);
    assert!(history
        .iter()
        .any(|m| m.kind == MessageKind::Note && m.text.starts_with("Escalated to Supervisors")));
    // Without an escalation team it is refused clearly (a desk of its own).
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let plain = Node::start(&redis).await;
    let (mut a2, _w, other) = chat_across(&plain, "a2", &plain, "other", "hello").await;
    send(
        &mut a2,
        json!({"type": "escalate", "conversation_id": other.id}),
    )
    .await;
    let e = a2.client.expect_error_code(ErrorCode::NotConfigured).await;
    assert!(e.message.contains("desk.escalation_team"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_reach_the_agents_other_sockets_on_any_node_and_never_the_visitor() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, |_| {}).await;
    // The agent on A, with a second console on B; the visitor on B.
    let (mut agent, mut v, chat) = chat_across(&a, "a1", &b, "account", "cannot log in").await;
    let mut console = b.agent("a1").await;
    send(
        &mut agent,
        json!({"type": "note", "conversation_id": chat.id, "cid": "n1", "text": "SECRET: flagged account"}),
    )
    .await;
    let (note_seq, duplicate) = agent.client.expect_ack("n1").await;
    assert!(!duplicate);
    // The agent's other socket, on the other node, gets the note, marked internal (after the
    // replay of the conversation so far that its `welcome` brought).
    let seen = loop {
        let m = console.expect_message().await;
        if m.seq.0 >= note_seq {
            break m;
        }
    };
    assert_eq!(
        (seen.seq.0, seen.text.as_str(), seen.kind),
        (note_seq, "SECRET: flagged account", MessageKind::Note)
    );
    // A resend is acknowledged, not stored twice.
    send(
        &mut agent,
        json!({"type": "note", "conversation_id": chat.id, "cid": "n1", "text": "SECRET: flagged account"}),
    )
    .await;
    assert_eq!(agent.client.expect_ack("n1").await, (note_seq, true));
    let reply_seq = agent.say(&chat, "please reset your password").await;
    // Live, on the visitor's node: the next message is the reply, not the note.
    let m = v.expect_message().await;
    assert_eq!(
        (m.seq.0, m.text.as_str()),
        (reply_seq, "please reset your password")
    );
    // Reconnect replay from the start, on either node: no note.
    for node in [&a, &b] {
        let mut again = node.reconnect_visitor(&v.id, &v.token, Some(0)).await;
        assert_eq!(again.expect_message().await.seq.0, 1);
        assert_eq!(
            again.expect_message().await.seq.0,
            reply_seq,
            "the note's seq is skipped"
        );
        // History: no note either.
        again
            .client
            .send(json!({"type": "history", "limit": 50}))
            .await;
        let history = again
            .client
            .expect("history", |f| match f {
                ServerFrame::History { messages, .. } => Some(messages.clone()),
                _ => None,
            })
            .await;
        assert!(
            history.iter().all(|m| !m.text.contains("SECRET")),
            "{history:?}"
        );
        assert_eq!(history.len(), 2);
    }
    // The agent's own history has it, marked as a note.
    agent
        .client
        .send(json!({"type": "history", "conversation_id": chat.id, "limit": 50}))
        .await;
    let history = agent
        .client
        .expect("history", |f| match f {
            ServerFrame::History { messages, .. } => Some(messages.clone()),
            _ => None,
        })
        .await;
    assert!(history
        .iter()
        .any(|m| m.seq.0 == note_seq && m.kind == MessageKind::Note));
}

/// The next `csat_request`, past the `closed` before it.
async fn expect_survey(client: &mut Client) -> String {
    loop {
        match client.next_frame().await {
            ServerFrame::CsatRequest { conversation_id } => return conversation_id.to_string(),
            ServerFrame::Closed { .. } => continue,
            other => panic!("expected csat_request, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_on_one_node_sends_the_survey_to_the_visitor_on_the_other_and_the_first_answer_counts(
) {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Surveys are checked against the store: several nodes share one (PostgreSQL).
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let url = pg.url();
    let a = Node::start_with(&redis, |c| c.database = Some(url.clone())).await;
    let b = Node::start_with(&redis, |c| c.database = Some(url.clone())).await;
    let (mut agent, mut v, chat) = chat_across(&b, "a1", &a, "account", "help").await;
    agent.say(&chat, "fixed").await;
    v.expect_message().await;
    agent.close(&chat, true).await;
    assert_eq!(expect_survey(&mut v.client).await, chat.id.to_string());
    v.client
        .send(json!({"type": "csat", "conversation_id": chat.id, "score": 4, "comment": " quick "}))
        .await;
    // No acknowledgement on success: the next answer is refused as answered already.
    v.client
        .send(json!({"type": "csat", "conversation_id": chat.id, "score": 1}))
        .await;
    v.client
        .expect_error_code(ErrorCode::SurveyUnavailable)
        .await;
    let c: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/v1/conversations/{}", b.addr, chat.id))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["csat"]["score"], 4);
    assert_eq!(c["csat"]["comment"], "quick");
    assert!(
        c["conversation"]["desk"]["csat_requested_at"].is_u64(),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_manual_surveys_an_agent_on_another_node_sends_one_and_off_refuses() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let url = pg.url();
    let manual = |c: &mut Config| {
        c.database = Some(url.clone());
        c.desk.csat = CsatMode::Manual;
    };
    let a = Node::start_with(&redis, manual).await;
    let b = Node::start_with(&redis, manual).await;
    let (mut agent, mut v, chat) = chat_across(&b, "a1", &a, "account", "help").await;
    send(
        &mut agent,
        json!({"type": "csat_request", "conversation_id": chat.id}),
    )
    .await;
    assert_eq!(expect_survey(&mut v.client).await, chat.id.to_string());
    // Answered while still open, on the visitor's node.
    v.client
        .send(json!({"type": "csat", "conversation_id": chat.id, "score": 5}))
        .await;
    agent.close(&chat, true).await;
    // No second survey on close: the next frame after `closed` is the answer's refusal.
    v.client.expect_closed().await;
    v.client
        .send(json!({"type": "csat", "conversation_id": chat.id, "score": 2}))
        .await;
    v.client
        .expect_error_code(ErrorCode::SurveyUnavailable)
        .await;
    // Surveys off: the request is refused clearly (a desk of its own).
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let off = Node::start_with(&redis, |c| c.desk.csat = CsatMode::Off).await;
    let (mut agent, _v, chat) = chat_across(&off, "a2", &off, "account", "help").await;
    send(
        &mut agent,
        json!({"type": "csat_request", "conversation_id": chat.id}),
    )
    .await;
    agent
        .client
        .expect_error_code(ErrorCode::NotConfigured)
        .await;
}

/// `GET /v1/desk` on a node, as agent a1.
async fn desk_directory(node: &Node) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{}/v1/desk", node.addr))
        .bearer_auth(agent_token("a1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_sees_agents_on_every_node_with_status_load_and_capacity() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, desk).await;
    let (_a1, _v, _chat) = chat_across(&a, "a1", &b, "other", "where is my refund").await;
    let _a3 = b
        .agent_hello("a3", json!({"type": "hello", "status": "away"}))
        .await;
    for node in [&a, &b] {
        let desk = desk_directory(node).await;
        let agent = |id: &str| {
            desk["agents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == id)
                .cloned()
                .unwrap()
        };
        assert_eq!(
            agent("a1"),
            json!({"id": "a1", "name": "Agent 1", "teams": ["front"], "connected": true,
                   "status": "online", "open": 1, "capacity": 3, "available": true})
        );
        let a3 = agent("a3");
        assert_eq!(
            (
                &a3["connected"],
                &a3["status"],
                &a3["available"],
                &a3["teams"]
            ),
            (
                &json!(true),
                &json!("away"),
                &json!(false),
                &json!(["tech"])
            )
        );
        let a2 = agent("a2");
        assert_eq!(
            (&a2["connected"], &a2["status"], &a2["available"]),
            (&json!(false), &json!("offline"), &json!(false))
        );
    }
}

/// Whether `category` is open in a new visitor's `welcome` on `node`, and why not.
async fn availability(node: &Node, category: &str) -> (bool, Option<ClosedReason>) {
    let v = node.visitor().await;
    let a = v
        .welcome
        .availability
        .iter()
        .find(|a| a.category == category)
        .unwrap_or_else(|| panic!("no availability for {category}"))
        .clone();
    (a.open, a.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_follows_the_teams_agents_on_any_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, desk).await;
    assert_eq!(
        availability(&a, "security").await,
        (false, Some(ClosedReason::NobodyOnline))
    );
    let _a1 = a.agent("a1").await;
    // A front-line agent answers general questions, not security.
    assert_eq!(availability(&b, "other").await, (true, None));
    assert_eq!(
        availability(&b, "security").await,
        (false, Some(ClosedReason::NobodyOnline))
    );
    // A supervisor on B opens security for visitors on A.
    let mut a5 = b.agent("a5").await;
    assert_eq!(availability(&a, "security").await, (true, None));
    // Away is not answering.
    a5.set_status(AgentStatus::Away).await;
    a.eventually("security to close again", || async {
        availability(&a, "security").await == (false, Some(ClosedReason::NobodyOnline))
    })
    .await;
}

/// A webhook endpoint that records every event body it receives.
struct Hook {
    url: String,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Hook {
    async fn start() -> Hook {
        let events: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |axum::extract::State(events): axum::extract::State<
                        Arc<Mutex<Vec<serde_json::Value>>>,
                    >,
                     body: axum::body::Bytes| async move {
                        events
                            .lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).expect("a JSON body"));
                        axum::http::StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(events.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Hook { url, events }
    }

    fn endpoint(&self) -> WebhookConfig {
        WebhookConfig {
            url: self.url.clone(),
            secret: "test-webhook-secret-0123456789".into(),
            events: parley::desk::webhooks::EventType::ALL
                .iter()
                .map(|e| e.as_str().to_string())
                .collect(),
        }
    }

    fn of_kind(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_desk_event_is_emitted_once_across_nodes_by_the_node_that_acted() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let hook = Hook::start().await;
    let endpoint = hook.endpoint();
    let config = |c: &mut Config| {
        desk(c);
        c.webhooks = vec![endpoint.clone()];
        c.webhook_delivery.backoff_base = Duration::from_millis(20);
    };
    let a = Node::start_with(&redis, config).await;
    let b = Node::start_with(&redis, config).await;
    // Visitor on A, its agent on B; then a transfer to tech on A, a message, a close.
    let (mut a1, mut v, chat) = chat_across(&b, "a1", &a, "other", "my withdrawal is stuck").await;
    a1.say(&chat, "let me check").await;
    v.expect_message().await;
    let mut a3 = a.agent("a3").await;
    send(
        &mut a1,
        json!({"type": "transfer", "conversation_id": chat.id, "team": "tech", "note": "node issue?"}),
    )
    .await;
    expect_transferred(&mut v.client).await;
    v.expect_assigned().await;
    let (received, _) = a3.expect_chat().await;
    a3.close(&received, true).await;

    let id = chat.id.to_string();
    // Two texts and two notes (the transfer's and the agent's): four messages.
    a.eventually("every event to arrive", || async {
        hook.of_kind("conversation.closed").len() == 1
            && hook.of_kind("message.created").len() == 4
            && hook.of_kind("conversation.assigned").len() == 2
    })
    .await;
    // Nothing more comes: the queues of both nodes are empty.
    for node in [&a, &b] {
        node.eventually("webhook queue to drain", || async {
            node.metric("parley_webhook_queue_depth", "").await == 0.0
        })
        .await;
    }
    let created = hook.of_kind("conversation.created");
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["data"]["conversation"]["id"], id);
    assert_eq!(created[0]["data"]["conversation"]["category"], "other");
    let assigned = hook.of_kind("conversation.assigned");
    let agents: Vec<&serde_json::Value> = assigned
        .iter()
        .map(|e| &e["data"]["conversation"]["agent"]["id"])
        .collect();
    assert_eq!(agents, [&json!("a1"), &json!("a3")]);
    let transferred = hook.of_kind("conversation.transferred");
    assert_eq!(transferred.len(), 1, "{transferred:?}");
    assert_eq!(transferred[0]["data"]["conversation"]["agent"]["id"], "a3");
    assert_eq!(transferred[0]["data"]["conversation"]["team"], "tech");
    assert_eq!(transferred[0]["data"]["from"]["id"], "a1");
    // Each message once, from the node that stored it; in seq order once sorted (two nodes
    // deliver in parallel).
    let mut messages: Vec<(u64, String)> = hook
        .of_kind("message.created")
        .iter()
        .map(|e| {
            let m = &e["data"]["message"];
            (
                m["seq"].as_u64().unwrap(),
                m["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    messages.sort();
    let texts: Vec<&str> = messages.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "my withdrawal is stuck",
            "let me check",
            "Transferred to Technical support by Agent 1",
            "node issue?",
        ]
    );
    assert_eq!(
        messages.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let closed = hook.of_kind("conversation.closed");
    assert_eq!(closed[0]["data"]["by"], "agent");
    assert_eq!(closed[0]["data"]["resolved"], true);
    assert_eq!(closed[0]["data"]["conversation"]["agent"]["id"], "a3");
}

/// `GET /v1/conversations/{id}` on a node, as admin.
async fn stored(node: &Node, id: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{}/v1/conversations/{id}", node.addr))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_figures_of_a_conversation_handled_on_two_nodes_reach_the_store() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, desk).await;
    let (mut a1, mut v, chat) = chat_across(&b, "a1", &a, "other", "my card was declined").await;
    // A note is not a reply: the first-response clock keeps running.
    send(
        &mut a1,
        json!({"type": "note", "conversation_id": chat.id, "cid": "n1", "text": "VIP"}),
    )
    .await;
    a1.client.expect_ack("n1").await;
    a1.say(&chat, "checking").await;
    v.expect_message().await;
    let mut a3 = a.agent("a3").await;
    send(
        &mut a1,
        json!({"type": "transfer", "conversation_id": chat.id, "team": "tech"}),
    )
    .await;
    expect_transferred(&mut v.client).await;
    v.expect_assigned().await;
    let (received, _) = a3.expect_chat().await;
    a3.close(&received, true).await;
    // The closing node (A) stores the conversation with the figures both nodes kept.
    let id = chat.id.to_string();
    a.eventually("the closed conversation in A's store", || async {
        stored(&a, &id).await["conversation"]["state"] == "closed"
    })
    .await;
    let c = stored(&a, &id).await;
    let conversation = &c["conversation"];
    assert_eq!(conversation["team"], "tech", "{c}");
    assert_eq!(conversation["agent_id"], "a3", "{c}");
    let desk = &conversation["desk"];
    assert_eq!(desk["transfers"], 1, "{c}");
    assert_eq!(desk["responses"], 1, "{c}");
    let created = conversation["created_at"].as_u64().unwrap();
    let first = desk["first_response_at"].as_u64().expect("first response");
    assert!(first >= created, "{c}");
    assert!(
        desk["first_response_due_at"].as_u64().unwrap() > created,
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_notes_transfers_and_the_desk_view_work_on_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let config = |c: &mut Config| {
        desk(c);
        c.redis.key_prefix = "deskflow".into();
    };
    let a = Node::start_on_cluster(&cluster, config).await;
    let b = Node::start_on_cluster(&cluster, config).await;
    let mut a1 = a.agent("a1").await;
    // Tech has nobody: the visitor waits, first in tech's queue, told why.
    let mut v = b.visitor().await;
    v.start("transaction", "withdrawal stuck").await;
    let (position, _, reason) = v.client.expect_queued().await;
    assert_eq!((position, reason), (1, QueueReason::NobodyOnline));
    // A tech agent on B takes it, writes a note, and hands it to the front line (a1, on A).
    let mut a3 = b.agent("a3").await;
    let (chat, _) = a3.expect_chat().await;
    assert_eq!(v.expect_assigned().await.agent.unwrap().id, "a3");
    send(
        &mut a3,
        json!({"type": "note", "conversation_id": chat.id, "cid": "n1", "text": "not tech"}),
    )
    .await;
    a3.client.expect_ack("n1").await;
    send(
        &mut a3,
        json!({"type": "transfer", "conversation_id": chat.id, "team": "front"}),
    )
    .await;
    expect_transferred(&mut a3.client).await;
    expect_transferred(&mut v.client).await;
    assert_eq!(v.expect_assigned().await.agent.unwrap().id, "a1");
    let (received, history) = a1.expect_chat().await;
    assert_eq!(received.id, chat.id);
    assert!(history
        .iter()
        .any(|m| m.text == "not tech" && m.kind == MessageKind::Note));
    // The desk view reads presence and loads across the masters.
    let desk = desk_directory(&b).await;
    let open = |id: &str| {
        desk["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap()["open"]
            .clone()
    };
    assert_eq!((open("a1"), open("a3")), (json!(1), json!(0)));
    assert_no_node_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_message_waits_for_its_team_after_its_visitor_left() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    fn config(c: &mut Config) {
        desk(c);
        c.routing.visitor_grace = Duration::from_millis(200);
    }
    let (a, b) = two_nodes(&redis, config).await;
    let mut v = a.visitor().await;
    v.client
        .send(
            json!({"type": "start", "category": "security", "text": "my account was drained",
            "cid": "s1", "contact": "dana@example.com"}),
        )
        .await;
    v.client.expect_ack("s1").await;
    let (_, _, reason) = v.client.expect_queued().await;
    assert_eq!(reason, QueueReason::NobodyOnline);
    // The visitor leaves for longer than its grace: the grace starts, runs out and is acted
    // on (its entry leaves Redis), and the offline message is not closed.
    drop(v);
    let conn = redis.conn().await;
    let graces = |n: usize| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("ZCARD")
                .arg("parley:graces")
                .query_async::<usize>(&mut conn)
                .await
                .unwrap()
                == n
        }
    };
    a.eventually("the visitor's grace to start", || graces(1))
        .await;
    a.eventually("the visitor's grace to be acted on", || graces(0))
        .await;
    // A supervisor on the other node gets it, flagged, with the contact.
    let mut a5 = b.agent("a5").await;
    let (chat, history) = a5.expect_chat().await;
    assert!(chat.offline);
    assert_eq!(chat.contact.as_deref(), Some("dana@example.com"));
    assert_eq!(history[0].text, "my account was drained");
    assert_eq!(
        b.metric("parley_offline_messages_total", "security").await
            + a.metric("parley_offline_messages_total", "security").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_messages_are_counted_on_their_conversation_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    fn config(c: &mut Config) {
        c.rate_limits.visitor_messages_per_second = 1;
        c.rate_limits.visitor_message_burst = 2;
    }
    let (a, b) = two_nodes(&redis, config).await;
    let (mut agent, mut v, chat) = chat_across(&b, "a1", &a, "other", "hello").await;
    for i in 0..6 {
        v.say_with_cid(&format!("m{i}"), "again").await;
    }
    // Each of the six is either acknowledged or refused; count the refusals seen.
    let mut refused = 0;
    for _ in 0..6 {
        match v.client.next_frame().await {
            ServerFrame::Ack { .. } => {}
            ServerFrame::Error(e) if e.code == ErrorCode::RateLimited => refused += 1,
            other => panic!("expected ack or rate_limited, got {other:?}"),
        }
    }
    assert!(refused >= 1, "a burst of 2 at 1/s cannot take 6 at once");
    // Counted in Redis by the visitor's node; the closing node (B) stores the figure.
    let meta = format!("parley:{{c:{}}}:meta", chat.id);
    let conn = redis.conn().await;
    a.eventually("the refusals to be counted", || {
        let mut conn = conn.clone();
        let meta = meta.clone();
        async move {
            redis::cmd("HGET")
                .arg(&meta)
                .arg("rate_limited")
                .query_async::<Option<u32>>(&mut conn)
                .await
                .unwrap()
                == Some(refused)
        }
    })
    .await;
    // The agent reads the accepted ones, then closes.
    for _ in refused..6 {
        assert_eq!(agent.expect_message().await.text, "again");
    }
    agent.close(&chat, true).await;
    let id = chat.id.to_string();
    b.eventually("the closed conversation in B's store", || async {
        stored(&b, &id).await["conversation"]["state"] == "closed"
    })
    .await;
    assert_eq!(
        stored(&b, &id).await["conversation"]["desk"]["rate_limited"],
        refused
    );
}

/// The desk with a one-second first-response target for `account`, and a breach action.
fn sla_desk(c: &mut Config, action: BreachAction) {
    desk(c);
    c.categories.insert(
        "account".into(),
        CategoryConfig {
            team: None,
            first_response_target: Some(Duration::from_secs(1)),
        },
    );
    c.desk.sla_breach_action = action;
    // Checked as often as the single-node desk tests check: the interval is honoured now.
    c.desk.sla_check_interval = Duration::from_millis(20);
}

/// The next `sla` frame: (state, due_at).
async fn expect_sla(client: &mut Client) -> (SlaState, u64) {
    client
        .expect("sla", |f| match f {
            ServerFrame::Sla { state, due_at, .. } => Some((*state, *due_at)),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_response_target_warns_then_breaches_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, |c| sla_desk(c, BreachAction::None)).await;
    let mut agent = b.agent("a1").await;
    let mut v = a.visitor().await;
    v.start("account", "help").await;
    assert_eq!(
        v.expect_assigned().await.sla,
        None,
        "the visitor sees no clock"
    );
    let (chat, _) = agent.expect_chat().await;
    let due = chat.sla.as_ref().expect("the agent sees the clock").due_at;
    assert_eq!(chat.sla.unwrap().state, SlaState::Pending);
    // Told once at each move, by whichever node looked first.
    assert_eq!(
        expect_sla(&mut agent.client).await,
        (SlaState::Warning, due)
    );
    assert_eq!(
        expect_sla(&mut agent.client).await,
        (SlaState::Breached, due)
    );
    let breaches = a.metric("parley_sla_breaches_total", "account").await
        + b.metric("parley_sla_breaches_total", "account").await;
    assert_eq!(breaches, 1.0);
    // An answer now is late: counted as missed, and the stored figures say so once closed.
    agent.say(&chat, "sorry for the wait").await;
    let missed = a
        .metric("parley_sla_first_responses_total", "outcome=\"missed\"")
        .await
        + b.metric("parley_sla_first_responses_total", "outcome=\"missed\"")
            .await;
    assert_eq!(missed, 1.0);
    agent.close(&chat, true).await;
    let id = chat.id.to_string();
    b.eventually("the closed conversation in B's store", || async {
        stored(&b, &id).await["conversation"]["state"] == "closed"
    })
    .await;
    let c = stored(&b, &id).await;
    assert!(
        c["conversation"]["desk"]["first_response_at"]
            .as_u64()
            .unwrap()
            > due,
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_escalates_to_the_escalation_team_on_another_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, |c| sla_desk(c, BreachAction::Escalate)).await;
    let (mut a1, mut v, chat) = chat_across(&a, "a1", &a, "account", "help").await;
    let mut a5 = b.agent("a5").await;
    assert_eq!(expect_sla(&mut a1.client).await.0, SlaState::Warning);
    assert_eq!(expect_sla(&mut a1.client).await.0, SlaState::Breached);
    match expect_transferred(&mut a1.client).await {
        ServerFrame::Transferred {
            escalated, team, ..
        } => {
            assert!(escalated);
            assert_eq!(team.as_deref(), Some("Supervisors"));
        }
        _ => unreachable!(),
    }
    expect_transferred(&mut v.client).await;
    assert_eq!(v.expect_assigned().await.agent.unwrap().id, "a5");
    let (received, _) = a5.expect_chat().await;
    assert_eq!(received.id, chat.id);
    assert_eq!(received.team.as_deref(), Some("supervisors"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_can_take_the_chat_from_a_silent_agent_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, |c| sla_desk(c, BreachAction::Requeue)).await;
    let (mut a1, mut v, chat) = chat_across(&a, "a1", &b, "account", "help").await;
    let mut a2 = b.agent("a2").await;
    assert_eq!(expect_sla(&mut a1.client).await.0, SlaState::Warning);
    assert_eq!(expect_sla(&mut a1.client).await.0, SlaState::Breached);
    // The silent agent loses it (no target named); the visitor is told why, then gets a2.
    match expect_transferred(&mut a1.client).await {
        ServerFrame::Transferred { team, agent, .. } => {
            assert_eq!((team, agent), (None, None));
        }
        _ => unreachable!(),
    }
    let (_, _, reason) = v.client.expect_queued().await;
    assert_eq!(reason, QueueReason::SlaBreached);
    assert_eq!(v.expect_assigned().await.agent.unwrap().id, "a2");
    redis.assert_routing_indexes_agree().await;
    let (received, _) = a2.expect_chat().await;
    assert_eq!(received.id, chat.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_returning_within_the_window_reopens_the_same_conversation_on_another_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, |c| {
        c.desk.reopen_window = Duration::from_secs(3600);
    })
    .await;
    let (mut agent, mut v, chat) = chat_across(&b, "a1", &a, "account", "first time").await;
    agent.say(&chat, "done").await;
    v.expect_message().await;
    agent.close(&chat, true).await;
    v.client.expect_closed().await;
    expect_survey(&mut v.client).await;
    // Back again, through the other node: same id, history continues, counted as reopened.
    let mut back = b.reconnect_visitor(&v.id, &v.token, None).await;
    back.start("account", "it broke again").await;
    let reopened = back.expect_assigned().await;
    assert_eq!(reopened.id, chat.id);
    assert_eq!(reopened.reopened, 1);
    let (received, history) = agent.expect_chat().await;
    assert_eq!(received.id, chat.id);
    let texts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["first time", "done", "it broke again"]);
    // Closed again, a visitor with reopening off starts afresh: see the single-node test;
    // here, the reopened conversation closes and its figures say so.
    agent.close(&received, true).await;
    let id = chat.id.to_string();
    b.eventually("the closed conversation in B's store", || async {
        let c = stored(&b, &id).await;
        c["conversation"]["state"] == "closed" && c["conversation"]["reopened"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_visitor_reconnecting_on_another_node_is_told_the_same_reason() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, desk).await;
    let mut v = a.visitor().await;
    v.start("security", "phishing site").await;
    let (_, _, reason) = v.client.expect_queued().await;
    assert_eq!(reason, QueueReason::NobodyOnline);
    let mut again = b.reconnect_visitor(&v.id, &v.token, Some(1)).await;
    let (position, _, reason) = again.client.expect_queued().await;
    assert_eq!((position, reason), (1, QueueReason::NobodyOnline));
}
