//! Routing over the wire: round-robin, capacity, the priority queue and grace periods.

use std::collections::HashMap;
use std::time::Duration;

use parley::protocol::{AgentStatus, QueueReason, ServerFrame};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn round_robin_spreads_chats_evenly() {
    let app = spawn_app_with(|c| c.routing.default_capacity = 10).await;
    let mut agents = Vec::new();
    for name in ["a1", "a2", "a3"] {
        agents.push(app.agent(name).await);
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut visitors = Vec::new();
    for i in 0..9 {
        let mut v = app.visitor().await;
        v.start("other", &format!("visitor {i}")).await;
        let assigned = v.expect_assigned().await;
        *counts.entry(assigned.agent.unwrap().id).or_default() += 1;
        visitors.push(v);
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 3), "{counts:?}");
    // Each agent really received its three chats.
    for agent in &mut agents {
        for _ in 0..3 {
            agent.expect_chat().await;
        }
    }
}

#[tokio::test]
async fn an_agent_never_exceeds_capacity() {
    let app = spawn_app_with(|c| c.routing.default_capacity = 2).await;
    let mut agent = app.agent("a1").await;
    let mut visitors = Vec::new();
    for i in 0..2 {
        let mut v = app.visitor().await;
        v.start("other", &format!("v{i}")).await;
        v.expect_assigned().await;
        agent.expect_chat().await;
        visitors.push(v);
    }
    let mut third = app.visitor().await;
    third.start("other", "v3").await;
    let (position, estimate, reason) = third.client.expect_queued().await;
    assert_eq!(position, 1);
    assert!(estimate > 0);
    assert_eq!(reason, QueueReason::NoAgentAvailable);
    // The desk-wide gauges are read from the desk once a second.
    app.eventually(
        "the gauges to show the full agent and the queue",
        || async {
            app.metric("parley_agent_load", "").await == 2.0
                && app.metric("parley_queue_depth", "category=\"other\"").await == 1.0
        },
    )
    .await;
}

#[tokio::test]
async fn the_queue_serves_by_priority_and_pushes_positions() {
    let app = spawn_app().await;
    // Nobody online: everyone queues.
    let mut other = app.visitor().await;
    other.start("other", "other").await;
    assert_eq!(other.client.expect_queued().await.0, 1);

    let mut transaction = app.visitor().await;
    transaction.start("transaction", "tx").await;
    assert_eq!(transaction.client.expect_queued().await.0, 1);
    // The lower-priority visitor is told it moved back.
    assert_eq!(other.client.expect_queued().await.0, 2);

    let mut security = app.visitor().await;
    security.start("security", "hacked?").await;
    assert_eq!(security.client.expect_queued().await.0, 1);
    assert_eq!(transaction.client.expect_queued().await.0, 2);
    assert_eq!(other.client.expect_queued().await.0, 3);

    // One agent with capacity 1 comes online: the security request goes first.
    let app_agent_capacity_one = json!({"type": "hello"});
    let mut agent = app.agent_hello("a1", app_agent_capacity_one).await;
    let (chat, history) = agent.expect_chat().await;
    assert_eq!(chat.category, "security");
    assert_eq!(history[0].text, "hacked?");
    security.expect_assigned().await;
    // Two more slots (capacity 3): transaction, then other, in that order.
    let (chat, _) = agent.expect_chat().await;
    assert_eq!(chat.category, "transaction");
    let (chat, _) = agent.expect_chat().await;
    assert_eq!(chat.category, "other");
}

#[tokio::test]
async fn an_agent_going_away_gets_no_new_chats_and_keeps_its_own() {
    let app = spawn_app().await;
    let mut agent = app.agent("a1").await;
    let mut v1 = app.visitor().await;
    v1.start("other", "hi").await;
    v1.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    agent.set_status(AgentStatus::Away).await;
    agent
        .client
        .expect("agent_state away", |f| match f {
            ServerFrame::AgentState {
                status: AgentStatus::Away,
                ..
            } => Some(()),
            _ => None,
        })
        .await;
    let mut v2 = app.visitor().await;
    v2.start("other", "anyone?").await;
    assert_eq!(v2.client.expect_queued().await.0, 1);
    // The existing chat still works.
    agent.say(&chat, "still here").await;
    assert_eq!(v1.expect_message().await.text, "still here");

    agent.set_status(AgentStatus::Online).await;
    v2.expect_assigned().await;
}

#[tokio::test]
async fn an_agent_reconnecting_within_grace_keeps_its_chats() {
    let app = spawn_app_with(|c| c.routing.agent_grace = Duration::from_secs(2)).await;
    // a1 and a2 each get one chat.
    let mut a1 = app.agent("a1").await;
    let mut v1 = app.visitor().await;
    v1.start("other", "one").await;
    v1.expect_assigned().await;
    let (chat1, _) = a1.expect_chat().await;
    let mut a2 = app.agent("a2").await;
    let mut v2 = app.visitor().await;
    v2.start("other", "two").await;
    v2.expect_assigned().await;
    a2.expect_chat().await;

    // a1 drops first, then a2; a1 comes back within its grace period.
    drop(a1);
    app.eventually("the server noticed a1 left", || async {
        app.metric("parley_connections", "role=\"agent\"").await == 1.0
    })
    .await;
    drop(a2);
    let mut a1 = app
        .agent_hello(
            "a1",
            json!({"type": "hello", "resume": [{"conversation_id": chat1.id, "last_seq": 1}]}),
        )
        .await;
    assert_eq!(a1.welcome.conversations.len(), 1);
    assert_eq!(a1.welcome.conversations[0].id, chat1.id);
    assert_eq!(a1.welcome.conversations[0].recovered, Some(true));

    // a2's grace ends after a1's would have: once v2 hears about it, a1's timer has certainly
    // fired too, and must have done nothing.
    let (_, _, reason) = v2.client.expect_queued().await;
    assert_eq!(reason, QueueReason::AgentDisconnected);
    // a1 is the only agent left, so a2's chat moves to it, history included.
    let (moved, history) = a1.expect_chat().await;
    assert_eq!(history[0].text, "two");
    assert_eq!(v2.expect_assigned().await.id, moved.id);
    // And a1 still has its own chat.
    a1.say(&chat1, "back").await;
    let m = v1.expect_message().await;
    assert_eq!(m.text, "back");
}

#[tokio::test]
async fn a_start_without_a_category_gets_the_configured_default() {
    let app = spawn_app_with(|c| c.routing.default_category = "account".into()).await;
    let mut visitor = app.visitor().await;
    visitor
        .client
        .send(json!({"type": "start", "text": "where is my money", "cid": "s1"}))
        .await;
    visitor.client.expect_ack("s1").await;
    let mut agent = app.agent("a1").await;
    let (chat, _) = agent.expect_chat().await;
    assert_eq!(chat.category, "account");
}
