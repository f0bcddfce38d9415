//! A visitor on one node and its agent on another, where it needs more than the contract
//! suite (tests/api/contract/chat.rs runs chat both ways, resume on the other node, idempotent
//! resends and grace periods on both topologies): a resume older than the stream, concurrent
//! writers through two nodes, one subscription per node, a requeued chat's delivery.

use parley::protocol::ServerFrame;
use serde_json::json;

use crate::harness::{Node, RedisServer};

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
