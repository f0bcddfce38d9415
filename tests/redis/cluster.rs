//! The engine against a three-master Redis Cluster: hash-tagged keys keep every script and
//! pipeline within one slot, keys spread over the masters, delivery crosses nodes, and presence
//! works there too.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parley::protocol::{QueueReason, ServerFrame};

use crate::harness::{assert_no_node_panicked, Node, RedisCluster};

/// A key prefix whose shared visitor-token key is not on the seed server (the one the nodes
/// are given), so a node that looked for it only there would not find it.
async fn prefix_away_from_the_seed(cluster: &RedisCluster) -> String {
    let mut seed = cluster.servers[0].conn().await;
    for i in 0.. {
        let prefix = format!("desk{i}");
        let here = redis::cmd("GET")
            .arg(format!("{prefix}:visitor-token-key"))
            .query_async::<Option<String>>(&mut seed)
            .await;
        if here.is_err() {
            // MOVED: another master owns that slot.
            return prefix;
        }
    }
    unreachable!()
}

/// Every key of the desk, and the port of the master holding it.
async fn keys_by_master(cluster: &RedisCluster, prefix: &str) -> HashMap<String, u16> {
    let mut out = HashMap::new();
    for server in &cluster.servers {
        let mut conn = server.conn().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        out.extend(keys.into_iter().map(|k| (k, server.port)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_a_redis_cluster_chat_assign_once_and_survive_a_dead_node() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let prefix = prefix_away_from_the_seed(&cluster).await;
    let desk = |c: &mut parley::config::Config| c.redis.key_prefix = prefix.clone();
    let mut a = Node::start_on_cluster(&cluster, desk).await;
    let b = Node::start_on_cluster(&cluster, desk).await;
    let ttl = b.config.redis.presence_ttl;
    // a2, on node A (which dies later), takes the first chat: it is the only agent.
    let _doomed = a.agent("a2").await;
    let mut orphaned = b.visitor().await;
    orphaned.start("other", "first").await;
    assert_eq!(orphaned.expect_assigned().await.agent.unwrap().id, "a2");
    // Round-robin: a1 joins right after the cursor, so it takes the next one.
    let mut agent = b.agent("a1").await;
    let mut talker = a.visitor().await;
    talker.start("account", "hello through the cluster").await;
    let assigned = talker.expect_assigned().await;
    assert_eq!(assigned.agent.as_ref().unwrap().id, "a1");

    // A visitor on node A and its agent on node B talk both ways.
    let (chat, _) = agent.expect_chat().await;
    assert_eq!(chat.id, assigned.id);
    agent.say(&chat, "answer").await;
    assert_eq!(talker.expect_message().await.text, "answer");
    let seq = talker.say_acked("thanks").await;
    let m = agent.expect_message().await;
    assert_eq!((m.seq.0, m.text.as_str()), (seq, "thanks"));

    // An anonymous visitor proven by one node is proven by the other: the nodes share the
    // token key although it lives on a master they were not pointed at.
    let moved = b
        .reconnect_visitor(&talker.id, &talker.token, Some(seq))
        .await;
    assert_eq!(moved.welcome.conversations[0].id, chat.id);
    drop(talker);

    // One conversation's keys share one slot; the desk's keys are spread over the masters.
    let keys = keys_by_master(&cluster, &prefix).await;
    let conversation_keys: Vec<&String> = keys
        .keys()
        .filter(|k| k.contains(&chat.id.to_string()))
        .collect();
    let mut names: Vec<&str> = conversation_keys
        .iter()
        .map(|k| k.rsplit(':').next().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["cids", "log", "meta"], "{conversation_keys:?}");
    let mut seed = cluster.servers[0].conn().await;
    let mut slots = HashSet::new();
    for k in &conversation_keys {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(k.as_str())
            .query_async(&mut seed)
            .await
            .unwrap();
        slots.insert(slot);
    }
    assert_eq!(slots.len(), 1, "{conversation_keys:?} in one slot");
    let masters: HashSet<u16> = keys.values().copied().collect();
    assert!(
        masters.len() >= 2,
        "keys on {} master(s) only",
        masters.len()
    );

    // Concurrent starts from both nodes: each conversation assigned once.
    let mut visitors = Vec::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { &a } else { &b };
        visitors.push(node.visitor().await);
    }
    let outcomes = futures::stream::iter(visitors.into_iter().map(|mut v| async move {
        v.start("other", "hi").await;
        loop {
            match v.client.next_frame().await {
                ServerFrame::Assigned { conversation } => return Some(conversation.id),
                ServerFrame::Queued { .. } => return None,
                _ => continue,
            }
        }
    }))
    .buffer_unordered(40)
    .collect::<Vec<_>>()
    .await;
    let assigned: Vec<_> = outcomes.into_iter().flatten().collect();
    // Two agents with capacity 3, two chats taken already: four more at most.
    assert_eq!(assigned.len(), 4);
    assert_eq!(assigned.iter().collect::<HashSet<_>>().len(), 4);

    // Node A dies: its agent's chats go back to the queue, on the cluster too.
    a.kill();
    let killed = Instant::now();
    let reason = loop {
        if let ServerFrame::Queued { reason, .. } = orphaned.client.next_frame().await {
            break reason;
        }
    };
    assert_eq!(reason, QueueReason::AgentDisconnected);
    assert!(killed.elapsed() <= ttl + ttl / 3 + Duration::from_secs(1));
    assert_no_node_panicked();
}
