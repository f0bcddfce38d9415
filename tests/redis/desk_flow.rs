//! The support desk across nodes where it needs more than the contract suite's desk
//! (tests/api/contract/, which runs teams routing, transfers, escalation, notes, reopening and
//! refused messages, surveys on both topologies): the console's
//! view of who is online and the widget's availability, webhooks, figures stored by the node
//! that closes, a Redis Cluster, and first-response targets on real seconds (the Redis engine
//! reads the system clock, not `Clock`, so these cannot share the single-node tests' controlled
//! time yet).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley::config::{BreachAction, CategoryConfig, Config, WebhookConfig};
use parley::protocol::{
    AgentStatus, ClosedReason, MessageKind, QueueReason, ServerFrame, SlaState,
};
use serde_json::json;

use crate::contract::{desk, expect_transferred, send};
use crate::harness::{assert_no_node_panicked, Node, RedisCluster, RedisServer};
use crate::helpers::{agent_token, chat_between, Client, ADMIN_TOKEN};

/// Two nodes of one desk configured by `customise`.
async fn two_nodes(redis: &RedisServer, customise: fn(&mut Config)) -> (Node, Node) {
    (
        Node::start_with(redis, customise).await,
        Node::start_with(redis, customise).await,
    )
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
    let (_a1, _v, _chat) = chat_between(&a, "a1", &b, "other", "where is my refund").await;
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
            events: parley::desk::webhooks::EventType::ALL.to_vec(),
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
    let (mut a1, mut v, chat) = chat_between(&b, "a1", &a, "other", "my withdrawal is stuck").await;
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
    let (mut a1, mut v, chat) = chat_between(&b, "a1", &a, "other", "my card was declined").await;
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

/// The desk with a one-second first-response target for `account`, and a breach action.
fn sla_desk(c: &mut Config, action: BreachAction) {
    desk(c);
    c.categories.insert(
        "account".into(),
        CategoryConfig {
            team: None,
            first_response_target: Some(Duration::from_secs(1)),
            ..CategoryConfig::default()
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
    let (mut a1, mut v, chat) = chat_between(&a, "a1", &a, "account", "help").await;
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
    let (mut a1, mut v, chat) = chat_between(&a, "a1", &b, "account", "help").await;
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
async fn closing_a_conversation_stops_its_first_response_clock_in_redis() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    fn config(c: &mut Config) {
        desk(c);
        c.categories.insert(
            "account".into(),
            CategoryConfig {
                team: None,
                first_response_target: Some(Duration::from_secs(3600)),
                ..CategoryConfig::default()
            },
        );
    }
    let (a, b) = two_nodes(&redis, config).await;
    let (mut agent, _visitor, chat) = chat_between(&b, "a1", &a, "account", "help").await;
    let conn = redis.conn().await;
    let scheduled = |conn: &redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let id = chat.id.to_string();
        async move {
            redis::cmd("ZSCORE")
                .arg("parley:sla")
                .arg(id)
                .query_async::<Option<f64>>(&mut conn)
                .await
                .unwrap()
                .is_some()
        }
    };
    assert!(scheduled(&conn).await, "an unanswered chat has its clock");
    agent.close(&chat, true).await;
    a.eventually("the clock to leave the sla set", || async {
        !scheduled(&conn).await
    })
    .await;
    assert_no_node_panicked();
}
