//! Desk scenarios on both topologies: teams routing, transfers to a team or an agent,
//! escalation, private notes, reopening, refused messages. Visitors are on `desk.visitors`, agents on `desk.agents`: the
//! same node in tests/api, two nodes sharing one Redis in tests/redis.

use std::collections::HashMap;
use std::time::Duration;

use parley::config::Config;
use parley::protocol::{ErrorCode, MessageKind, QueueReason, ServerFrame};
use serde_json::json;

use super::{desk, expect_survey, expect_transferred, send};
use crate::helpers::{agent_token, Gateway};
use crate::topology::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_category_routes_to_its_team_only() {
    let Some(d) = start(desk).await else { return };
    // Everyone online; a5 (a supervisor) is the only one who may take security.
    let _a1 = d.agent("a1").await;
    let mut a3 = d.agent("a3").await;
    let mut a5 = d.agent("a5").await;
    let mut v = d.visitor().await;
    v.start("security", "someone logged into my wallet").await;
    let chat = v.expect_assigned().await;
    assert_eq!(chat.agent.unwrap().id, "a5");
    assert_eq!(chat.team.as_deref(), Some("supervisors"));
    let (seen, _) = a5.expect_chat().await;
    assert_eq!(seen.id, chat.id);
    assert_eq!(seen.team.as_deref(), Some("supervisors"));
    // Transaction goes to tech (a3).
    let mut w = d.visitor().await;
    w.start("transaction", "withdrawal stuck").await;
    assert_eq!(w.expect_assigned().await.agent.unwrap().id, "a3");
    let (seen, history) = a3.expect_chat().await;
    assert_eq!(history[0].text, "withdrawal stuck");
    assert_eq!(seen.team.as_deref(), Some("tech"));
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_queue_waits_for_its_team_without_holding_up_others() {
    let Some(d) = start(desk).await else { return };
    let mut front = d.agent("a1").await;
    let mut v = d.visitor().await;
    v.start("security", "phishing site").await;
    let (position, _, reason) = v.client.expect_queued().await;
    assert_eq!(position, 1);
    // No supervisor is online: an offline message, not a wait behind busy agents.
    assert_eq!(reason, QueueReason::NobodyOnline);
    // A general question behind it goes to the front-line agent at once.
    let mut w = d.visitor().await;
    w.start("other", "how do I export my keys").await;
    assert_eq!(w.expect_assigned().await.agent.unwrap().id, "a1");
    front.expect_chat().await;
    // A supervisor arrives and takes the security chat.
    let mut sup = d.agent("a6").await;
    let (chat, history) = sup.expect_chat().await;
    assert_eq!(chat.category, "security");
    assert_eq!(history[0].text, "phishing site");
    assert_eq!(v.expect_assigned().await.agent.unwrap().id, "a6");
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_capacity_hold_within_a_team() {
    fn config(c: &mut Config) {
        desk(c);
        c.agents[2].capacity = Some(2); // a3
        c.agents[3].capacity = Some(2); // a4
    }
    let Some(d) = start(config).await else { return };
    let nodes = d.nodes();
    let mut a3 = d.agent("a3").await;
    let _a4 = nodes[nodes.len() - 1].agent("a4").await;
    // A front-line agent with room, who must not get tech chats.
    let _a1 = d.agent("a1").await;
    let mut order = Vec::new();
    let mut visitors = Vec::new();
    for i in 0..4 {
        // Visitors on every node in turn.
        let mut v = nodes[i % nodes.len()].visitor().await;
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
    let mut waiting = d.visitor().await;
    waiting.start("transaction", "one more").await;
    let (position, _, reason) = waiting.client.expect_queued().await;
    assert_eq!((position, reason), (1, QueueReason::NoAgentAvailable));
    // While a general chat goes to a1 straight away.
    let mut general = d.visitor().await;
    general.start("other", "hello").await;
    assert_eq!(general.expect_assigned().await.agent.unwrap().id, "a1");
    d.check().await;
    // a3 frees a slot: the waiting tech chat goes to a3, not to a1 who had room all along.
    let (first, _) = a3.expect_chat().await;
    a3.expect_chat().await;
    a3.close(&first, true).await;
    assert_eq!(waiting.expect_assigned().await.agent.unwrap().id, "a3");
    d.check().await;
}

/// `a1` has a chat; `a3` (technical support) is online with room. `a1` transfers it to the
/// team with a note: both sides are told, `a3` gets it with its whole history and the notes,
/// `a1` can no longer write in it, `a3` can, and the visitor's next message reaches `a3`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_team_keeps_the_conversation_and_its_history() {
    let Some(d) = start(desk).await else { return };
    let (mut a1, mut v, chat) = d.chat("a1", "other", "my withdrawal is stuck").await;
    let mut a3 = d.agent("a3").await;
    a1.say(&chat, "let me check").await;
    v.expect_message().await;
    send(
        &mut a1,
        json!({"type": "transfer", "conversation_id": chat.id, "team": "tech", "note": "node issue?"}),
    )
    .await;
    // The old agent is told and drops it.
    match expect_transferred(&mut a1.client).await {
        ServerFrame::Transferred {
            conversation_id,
            team,
            agent,
            escalated,
        } => {
            assert_eq!(conversation_id, chat.id);
            assert_eq!(team.as_deref(), Some("Technical support"));
            assert_eq!(agent.unwrap().id, "a3");
            assert!(!escalated);
        }
        _ => unreachable!(),
    }
    // The visitor is told, then gets its new agent, same conversation.
    expect_transferred(&mut v.client).await;
    let moved = v.expect_assigned().await;
    assert_eq!(moved.id, chat.id);
    assert_eq!(moved.agent.unwrap().id, "a3");
    // The receiving agent gets the whole history, the transfer notes among it.
    let (received, history) = a3.expect_chat().await;
    assert_eq!(received.id, chat.id);
    assert_eq!(received.transfers, 1);
    let texts: Vec<(&str, MessageKind)> =
        history.iter().map(|m| (m.text.as_str(), m.kind)).collect();
    assert_eq!(
        texts,
        [
            ("my withdrawal is stuck", MessageKind::Text),
            ("let me check", MessageKind::Text),
            (
                "Transferred to Technical support by Agent 1",
                MessageKind::Note
            ),
            ("node issue?", MessageKind::Note),
        ]
    );
    // The old agent can no longer write in it; the new one can, and the visitor hears it.
    send(
        &mut a1,
        json!({"type": "message", "conversation_id": chat.id, "cid": "late", "text": "still me"}),
    )
    .await;
    a1.client.expect_error_code(ErrorCode::Forbidden).await;
    a3.say(&received, "I am on it").await;
    assert_eq!(v.expect_message().await.text, "I am on it");
    // And the visitor's next message reaches a3, not a1.
    let cid = v.say("thanks").await;
    v.client.expect_ack(&cid).await;
    assert_eq!(a3.expect_message().await.text, "thanks");
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_busy_team_waits_at_the_front_of_its_queue() {
    fn config(c: &mut Config) {
        desk(c);
        c.agents[2].capacity = Some(1); // a3, the only tech agent online
    }
    let Some(d) = start(config).await else { return };
    let mut a1 = d.agent("a1").await;
    let (mut a3, _busy, tech_chat) = d.chat("a3", "transaction", "first tech chat").await;
    let mut waiting = d.visitor().await;
    waiting.start("transaction", "second tech chat").await;
    waiting.client.expect_queued().await;
    let mut v = d.visitor().await;
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
    d.check().await;
    // a3 frees its slot: the transferred chat comes first.
    a3.close(&tech_chat, true).await;
    let (next, history) = a3.expect_chat().await;
    assert_eq!(next.id, chat.id);
    assert_eq!(history[0].text, "needs tech");
    assert_eq!(v.expect_assigned().await.agent.unwrap().id, "a3");
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_named_agent_needs_a_free_slot() {
    fn config(c: &mut Config) {
        desk(c);
        c.agents[1].capacity = Some(1); // a2
    }
    let Some(d) = start(config).await else { return };
    let mut a1 = d.agent("a1").await;
    let mut a2 = d.agent("a2").await;
    let mut visitors = Vec::new();
    let mut chats = Vec::new();
    for i in 0..2 {
        let mut v = d.visitor().await;
        v.start("other", &format!("chat {i}")).await;
        chats.push(v.expect_assigned().await);
        visitors.push(v);
    }
    // Round robin put one chat on each; a2 is now full.
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
    // a2 frees its slot; now the transfer goes through.
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
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_goes_to_the_configured_team_in_one_action() {
    let Some(d) = start(desk).await else { return };
    let (mut a1, mut v, chat) = d
        .chat("a1", "other", "I want a refund above the limit")
        .await;
    assert_eq!(chat.agent.as_ref().unwrap().id, "a1");
    let mut a5 = d.agent("a5").await;
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
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_without_an_escalation_team_is_refused_clearly() {
    let Some(d) = start(|_| {}).await else { return };
    let (mut a1, _v, chat) = d.chat("a1", "other", "hello").await;
    send(
        &mut a1,
        json!({"type": "escalate", "conversation_id": chat.id}),
    )
    .await;
    let e = a1.client.expect_error_code(ErrorCode::NotConfigured).await;
    assert!(e.message.contains("desk.escalation_team"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_reach_the_agents_other_sockets_and_never_the_visitor() {
    let Some(d) = start(|_| {}).await else { return };
    let (mut agent, mut v, chat) = d.chat("a1", "account", "cannot log in").await;
    // A second console of the same agent, on the visitors' node (the other node on two).
    let mut console = d.visitors.agent("a1").await;
    send(
        &mut agent,
        json!({"type": "note", "conversation_id": chat.id, "cid": "n1", "text": "SECRET: flagged account"}),
    )
    .await;
    let (note_seq, duplicate) = agent.client.expect_ack("n1").await;
    assert!(!duplicate);
    // The agent's other socket gets the note, marked internal (after the replay of the
    // conversation so far that its `welcome` brought).
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
    // Live: the visitor's next message is the reply, not the note.
    let m = v.expect_message().await;
    assert_eq!(
        (m.seq.0, m.text.as_str()),
        (reply_seq, "please reset your password")
    );
    // Reconnect replay from the start, on every node: no note.
    for node in d.nodes() {
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
    d.check().await;
    // The agent's REST view of the transcript has it, marked as a note. Only on one node:
    // the two-node desk gives each node its own SQLite store, which has only what that node
    // wrote (a shared store is checked in tests/redis/transcripts.rs, on PostgreSQL).
    if d.redis_url.is_some() {
        return;
    }
    let transcript: serde_json::Value = d
        .agents
        .get(
            &format!("/v1/conversations/{}", chat.id),
            Some(&agent_token("a1")),
        )
        .await
        .json()
        .await
        .unwrap();
    let note = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["seq"] == note_seq)
        .unwrap();
    assert_eq!(note["kind"], "note");
    let text = d
        .agents
        .get(
            &format!("/v1/conversations/{}/transcript", chat.id),
            Some(&agent_token("a1")),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("(agent) [internal note]: SECRET: flagged account"),
        "{text}"
    );
    // A note does not stop the first-response clock; the reply did.
    assert_eq!(transcript["conversation"]["desk"]["responses"], 1);
}

/// The stored view of a conversation on `node` (`GET /v1/conversations/{id}`, as admin).
async fn stored(node: &Gateway, id: &str) -> serde_json::Value {
    node.get_json(&format!("/v1/conversations/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_returning_within_the_window_reopens_the_same_conversation() {
    let Some(d) = start(|c| c.desk.reopen_window = Duration::from_secs(3600)).await else {
        return;
    };
    let (mut agent, mut v, chat) = d.chat("a1", "account", "first time").await;
    agent.say(&chat, "done").await;
    v.expect_message().await;
    agent.close(&chat, true).await;
    v.client.expect_closed().await;
    expect_survey(&mut v.client).await;
    // Back again (through the other node, when there is one): same id, history continues,
    // counted as reopened.
    let mut back = d.agents.reconnect_visitor(&v.id, &v.token, None).await;
    back.start("account", "it broke again").await;
    let reopened = back.expect_assigned().await;
    assert_eq!(reopened.id, chat.id);
    assert_eq!(reopened.reopened, 1);
    let (received, history) = agent.expect_chat().await;
    assert_eq!(received.id, chat.id);
    let texts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["first time", "done", "it broke again"]);
    // Closed again, its stored figures say it was reopened once.
    agent.close(&received, true).await;
    let id = chat.id.to_string();
    d.agents
        .eventually(
            "the closed conversation in the closing node's store",
            || async {
                let c = stored(&d.agents, &id).await;
                c["conversation"]["state"] == "closed" && c["conversation"]["reopened"] == 1
            },
        )
        .await;
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_visitor_reconnecting_is_told_the_same_reason() {
    let Some(d) = start(desk).await else { return };
    let mut v = d.visitor().await;
    v.start("security", "phishing site").await;
    let (_, _, reason) = v.client.expect_queued().await;
    assert_eq!(reason, QueueReason::NobodyOnline);
    let mut again = d.agents.reconnect_visitor(&v.id, &v.token, Some(1)).await;
    let (position, _, reason) = again.client.expect_queued().await;
    assert_eq!((position, reason), (1, QueueReason::NobodyOnline));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_messages_are_counted_on_their_conversation() {
    let Some(d) = start(|c| {
        c.rate_limits.visitor_messages_per_second = 1;
        c.rate_limits.visitor_message_burst = 2;
    })
    .await
    else {
        return;
    };
    let (mut agent, mut v, chat) = d.chat("a1", "other", "hello").await;
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
    let id = chat.id.to_string();
    match &d.redis_url {
        // On one node, the open conversation's view counts them.
        None => {
            d.visitors
                .eventually("the refusals to be counted", || async {
                    stored(&d.visitors, &id).await["conversation"]["desk"]["rate_limited"]
                        == refused
                })
                .await
        }
        // On Redis, the visitor's node counts them in the conversation's record (the REST
        // view of an open conversation does not show them there: its figures come from the
        // store, written on close).
        Some(url) => {
            let conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .expect("redis connection");
            let meta = format!("parley:{{c:{id}}}:meta");
            d.visitors
                .eventually("the refusals to be counted", || {
                    let (mut conn, meta) = (conn.clone(), meta.clone());
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
                .await
        }
    }
    // The agent reads the accepted ones, then closes; the closing node stores the figure.
    for _ in refused..6 {
        assert_eq!(agent.expect_message().await.text, "again");
    }
    agent.close(&chat, true).await;
    d.agents
        .eventually(
            "the closed conversation in the closing node's store",
            || async { stored(&d.agents, &id).await["conversation"]["state"] == "closed" },
        )
        .await;
    assert_eq!(
        stored(&d.agents, &id).await["conversation"]["desk"]["rate_limited"],
        refused
    );
}
