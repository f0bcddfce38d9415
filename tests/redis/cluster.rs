//! The engine against a three-master Redis Cluster: hash-tagged keys keep every script and
//! pipeline within one slot, and delivery crosses nodes.

use std::collections::HashSet;

use futures::StreamExt;

use crate::harness::{Node, RedisCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_a_redis_cluster_chat_and_assign_once() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let a = Node::start_on_cluster(&cluster).await;
    let b = Node::start_on_cluster(&cluster).await;
    let mut agent = b.agent("a1").await;
    let _other = a.agent("a2").await;

    let mut visitor = a.visitor().await;
    visitor.start("account", "hello through the cluster").await;
    let assigned = visitor.expect_assigned().await;
    let owner = assigned.agent.as_ref().unwrap().id.clone();
    // Round-robin across the two agents: the next one goes to the other agent.
    let mut second = b.visitor().await;
    second.start("other", "me too").await;
    let next = second.expect_assigned().await;
    assert_ne!(next.agent.as_ref().unwrap().id, owner);

    // Whichever of the two chats a1 has, talk both ways across nodes.
    let (mut talker, chat_visitor) = if owner == "a1" {
        (visitor, assigned)
    } else {
        (second, next)
    };
    let (chat, _) = agent.expect_chat().await;
    assert_eq!(chat.id, chat_visitor.id);
    agent.say(&chat, "answer").await;
    assert_eq!(talker.expect_message().await.text, "answer");
    let seq = talker.say_acked("thanks").await;
    let m = agent.expect_message().await;
    assert_eq!((m.seq.0, m.text.as_str()), (seq, "thanks"));

    // Concurrent starts from both nodes: each conversation assigned once.
    let mut visitors = Vec::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { &a } else { &b };
        visitors.push(node.visitor().await);
    }
    let ids = futures::stream::iter(visitors.into_iter().map(|mut v| async move {
        v.start("other", "hi").await;
        loop {
            match v.client.next_frame().await {
                parley::protocol::ServerFrame::Assigned { conversation } => {
                    return Some(conversation.id)
                }
                parley::protocol::ServerFrame::Queued { .. } => return None,
                _ => continue,
            }
        }
    }))
    .buffer_unordered(40)
    .collect::<Vec<_>>()
    .await;
    let assigned: Vec<_> = ids.into_iter().flatten().collect();
    // Two agents with capacity 3, two chats taken already: four more at most.
    assert_eq!(assigned.len(), 4);
    assert_eq!(assigned.iter().collect::<HashSet<_>>().len(), 4);
}
