//! A visitor on one node and its agent on another: chat both ways, resume anywhere, idempotent
//! sends across nodes.

use parley::protocol::{ConversationState, Role, ServerFrame};
use serde_json::json;

use crate::harness::{Node, RedisServer};

#[tokio::test]
async fn a_visitor_and_an_agent_on_different_nodes_chat_both_ways() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;

    assert_eq!(visitor.start("account", "I cannot log in").await, 1);
    let assigned = visitor.expect_assigned().await;
    assert_eq!(assigned.state, ConversationState::Assigned);
    assert_eq!(assigned.agent.as_ref().unwrap().id, "a1");
    assert_eq!(
        assigned.agent.as_ref().unwrap().name.as_deref(),
        Some("Agent 1")
    );

    let (chat, history) = agent.expect_chat().await;
    assert_eq!(chat.id, assigned.id);
    assert_eq!(chat.recovered, Some(true));
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].text, "I cannot log in");
    assert_eq!(history[0].sender.role, Role::Visitor);

    assert_eq!(agent.say(&chat, "Let me help.").await, 2);
    let m = visitor.expect_message().await;
    assert_eq!(
        (m.seq.0, m.text.as_str(), m.sender.role),
        (2, "Let me help.", Role::Agent)
    );
    assert_eq!(m.sender.name.as_deref(), Some("Agent 1"));

    assert_eq!(visitor.say_acked("An error <b>500</b>").await, 3);
    let m = agent.expect_message().await;
    assert_eq!((m.seq.0, m.text.as_str()), (3, "An error <b>500</b>"));

    // Typing crosses nodes too.
    visitor
        .client
        .send(json!({"type": "typing", "active": true}))
        .await;
    let frame = agent.client.next_frame_skipping_state().await;
    assert!(
        matches!(
            frame,
            ServerFrame::Typing {
                role: Role::Visitor,
                active: true,
                ..
            }
        ),
        "{frame:?}"
    );

    // Many messages in a row arrive in order, once each.
    let mut cids = Vec::new();
    for i in 0..50 {
        cids.push(visitor.say(&format!("burst {i}")).await);
    }
    for i in 0..50u64 {
        let m = agent.expect_message().await;
        assert_eq!(m.seq.0, 4 + i);
        assert_eq!(m.text, format!("burst {i}"));
    }
    for (i, cid) in cids.iter().enumerate() {
        assert_eq!(visitor.client.expect_ack(cid).await, (4 + i as u64, false));
    }

    agent.close(&chat, true).await;
    let closed = visitor.client.expect_closed().await;
    assert!(matches!(
        closed,
        ServerFrame::Closed {
            by: Role::Agent,
            ..
        }
    ));
}

#[tokio::test]
async fn a_visitor_resumes_on_the_other_node_with_exactly_the_missed_messages() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    agent.say(&chat, "one").await;
    assert_eq!(visitor.expect_message().await.seq.0, 2);

    // The visitor's socket on node A goes; the agent keeps writing.
    let (id, token) = (visitor.id.clone(), visitor.token.clone());
    drop(visitor);
    for text in ["two", "three", "four"] {
        agent.say(&chat, text).await;
    }

    // Back on node B, with what it had.
    let mut visitor = b.reconnect_visitor(&id, &token, Some(2)).await;
    let conversation = &visitor.welcome.conversations[0];
    assert_eq!(conversation.id, chat.id);
    assert_eq!(conversation.recovered, Some(true));
    assert_eq!(conversation.last_seq.0, 5);
    for (seq, text) in [(3, "two"), (4, "three"), (5, "four")] {
        let m = visitor.expect_message().await;
        assert_eq!((m.seq.0, m.text.as_str()), (seq, text));
    }
    // And live from there, with nothing twice.
    agent.say(&chat, "five").await;
    let m = visitor.expect_message().await;
    assert_eq!((m.seq.0, m.text.as_str()), (6, "five"));

    // A `cid` first sent through node B is recognised when resent through node A.
    visitor.say_with_cid("same-cid", "once").await;
    let (seq, duplicate) = visitor.client.expect_ack("same-cid").await;
    assert!(!duplicate);
    drop(visitor);
    let mut again = a.reconnect_visitor(&id, &token, Some(seq)).await;
    again.say_with_cid("same-cid", "once").await;
    assert_eq!(again.client.expect_ack("same-cid").await, (seq, true));
    let m = agent.expect_message().await;
    assert_eq!(m.text, "once");
    // Stored once: the next message follows directly.
    assert_eq!(again.say_acked("after").await, seq + 1);
}

#[tokio::test]
async fn a_resume_older_than_the_stream_is_not_passed_off_as_complete() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start_with(&redis, |c| c.transcripts.replay_window = 5).await;
    let b = Node::start_with(&redis, |c| c.transcripts.replay_window = 5).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    let (id, token) = (visitor.id.clone(), visitor.token.clone());
    drop(visitor);
    for i in 0..300 {
        agent.say(&chat, &format!("m{i}")).await;
    }
    let visitor = b.reconnect_visitor(&id, &token, Some(1)).await;
    assert_eq!(visitor.welcome.conversations[0].recovered, Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_gone_from_every_node_is_closed_after_its_grace_period() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let short = |c: &mut parley::config::Config| {
        c.routing.visitor_grace = std::time::Duration::from_millis(500);
    };
    let a = Node::start_with(&redis, short).await;
    let b = Node::start_with(&redis, short).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "bye soon").await;
    visitor.expect_assigned().await;
    agent.expect_chat().await;
    drop(visitor);
    let closed = agent.client.expect_closed().await;
    assert!(
        matches!(
            closed,
            ServerFrame::Closed {
                by: Role::System,
                reason: parley::protocol::CloseReason::VisitorLeft,
                ..
            }
        ),
        "{closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moving_to_another_node_within_grace_keeps_its_chats() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = a.agent("a1").await;
    let mut visitor = b.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    drop(agent);
    visitor.say_acked("are you there?").await;

    // Back through node B, resuming after seq 1: the chat is still its own.
    let path = format!("/v1/agent?token={}", crate::helpers::agent_token("a1"));
    let mut client = b.connect(&path).await;
    client
        .send(json!({"type": "hello", "resume": [{"conversation_id": chat.id, "last_seq": 1}]}))
        .await;
    let welcome = client.expect_welcome().await;
    assert_eq!(welcome.conversations.len(), 1);
    assert_eq!(welcome.conversations[0].id, chat.id);
    assert_eq!(welcome.conversations[0].recovered, Some(true));
    let m = client.expect_message().await;
    assert_eq!((m.seq.0, m.text.as_str()), (2, "are you there?"));
    let mut agent = crate::helpers::Agent { client, welcome };
    agent.say(&chat, "yes").await;
    assert_eq!(visitor.expect_message().await.text, "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_writing_at_once_through_two_nodes_see_one_order_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "go").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    const EACH: usize = 30;
    for i in 0..EACH {
        visitor.say(&format!("v{i}")).await;
        agent
            .client
            .send(json!({"type": "message", "conversation_id": chat.id, "cid": format!("a{i}"), "text": format!("a{i}")}))
            .await;
    }
    // Each side sees every seq from 2 on exactly once, in order: its own as acks, the other's as
    // messages.
    for client in [&mut visitor.client, &mut agent.client] {
        let mut seqs = Vec::new();
        while seqs.len() < 2 * EACH {
            match client.next_frame().await {
                ServerFrame::Message(m) => seqs.push(m.seq.0),
                ServerFrame::Ack { seq, .. } => seqs.push(seq.0),
                _ => {}
            }
        }
        let messages_in_order: Vec<u64> = (2..2 + 2 * EACH as u64).collect();
        assert_eq!(seqs, messages_in_order, "every seq once, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_has_one_subscription_however_many_sockets_it_holds() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let nodes = [
        Node::start(&redis).await,
        Node::start(&redis).await,
        Node::start(&redis).await,
    ];
    let mut sockets = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        sockets.push(node.agent(&format!("a{}", i + 1)).await.client);
        for _ in 0..10 {
            let mut v = node.visitor().await;
            v.start("other", "hi").await;
            sockets.push(v.client);
        }
    }
    let mut conn = redis.conn().await;
    let subscribers: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        subscribers.lines().count(),
        3,
        "33 sockets on 3 nodes, 3 subscriptions: {subscribers}"
    );
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("parley:events:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(channels.len(), 3, "one channel per node: {channels:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_returned_to_the_queue_and_given_to_the_same_agent_again_reaches_both_sides() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let short = |c: &mut parley::config::Config| {
        c.routing.agent_grace = std::time::Duration::from_millis(300);
    };
    // Visitor and agent on one node, so that node keeps following the conversation throughout.
    let a = Node::start_with(&redis, short).await;
    let _b = Node::start_with(&redis, short).await;
    let mut agent = a.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    drop(agent);
    // The grace period runs out: the chat goes back to the queue.
    let (_, _, reason) = visitor.client.expect_queued().await;
    assert_eq!(reason, parley::protocol::QueueReason::AgentDisconnected);

    // The same agent comes back and gets the same chat again: both sides are told.
    let mut agent = a.agent("a1").await;
    let (again, history) = agent.expect_chat().await;
    assert_eq!(again.id, chat.id);
    assert_eq!(history[0].text, "hello");
    let assigned = visitor.expect_assigned().await;
    assert_eq!(assigned.agent.unwrap().id, "a1");
    agent.say(&again, "back").await;
    assert_eq!(visitor.expect_message().await.text, "back");
}
