//! Assignment across nodes: round-robin order shared, capacity held, one agent per
//! conversation, even when every node assigns at the same instant.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use parley::protocol::ServerFrame;

use crate::harness::{Node, RedisServer};
use crate::helpers::Agent;

/// Reads an agent's socket until it has `n` assignments; returns the conversation ids.
async fn collect_assignments(mut agent: Agent, n: usize) -> (Agent, Vec<String>) {
    let mut ids = Vec::new();
    while ids.len() < n {
        if let ServerFrame::Assigned { conversation } = agent.client.next_frame().await {
            ids.push(conversation.id.to_string());
        }
    }
    (agent, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_starts_across_two_nodes_are_assigned_fairly_and_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // 6 agents x 200 = 1,200 slots for 1,000 conversations: all are assigned, so round-robin
    // decides who gets how many.
    let a = Node::start_with(&redis, |c| c.routing.default_capacity = 200).await;
    let b = Node::start_with(&redis, |c| c.routing.default_capacity = 200).await;
    let mut agents = Vec::new();
    for i in 1..=6 {
        let node = if i % 2 == 0 { &a } else { &b };
        agents.push(node.agent(&format!("a{i}")).await);
    }
    const N: usize = 1000;
    let nodes = [a.addr, b.addr];
    // Every visitor connects first, then all start at once.
    let mut visitors = Vec::new();
    for i in 0..N {
        let node = if i % 2 == 0 { &a } else { &b };
        visitors.push(node.visitor().await);
    }
    let _ = nodes;
    let starts = futures::stream::iter(visitors.into_iter().map(|mut v| async move {
        v.start("other", "hi").await;
        let assigned = v.expect_assigned().await;
        (assigned.id.to_string(), assigned.agent.unwrap().id)
    }))
    .buffer_unordered(N)
    .collect::<Vec<_>>()
    .await;

    let mut per_agent: HashMap<String, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for (conversation, agent) in &starts {
        assert!(
            seen.insert(conversation.clone()),
            "one assignment per conversation"
        );
        *per_agent.entry(agent.clone()).or_default() += 1;
    }
    assert_eq!(seen.len(), N);
    let max = per_agent.values().max().copied().unwrap();
    let min = per_agent.values().min().copied().unwrap();
    assert_eq!(per_agent.len(), 6, "{per_agent:?}");
    assert!(max - min <= 1, "round-robin is fair: {per_agent:?}");
    assert!(max <= 200);

    // Each agent was told about exactly its own, and no conversation went to two agents.
    let mut told = HashSet::new();
    for agent in agents {
        let id = agent.welcome.agent.as_ref().unwrap().id.to_string();
        let n = per_agent[&id];
        let (_, ids) = collect_assignments(agent, n).await;
        for c in ids {
            assert!(told.insert(c), "a conversation was given to two agents");
        }
    }
    assert_eq!(told.len(), N);

    // And Redis agrees.
    let mut conn = redis.conn().await;
    let assigned: usize = redis::cmd("HLEN")
        .arg("parley:{r}:assigned")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(assigned, N);
    let loads: HashMap<String, u32> = redis::cmd("HGETALL")
        .arg("parley:{r}:load")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(loads.values().all(|&l| l <= 200), "{loads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_holds_and_queue_positions_are_shared_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start_with(&redis, |c| c.routing.default_capacity = 2).await;
    let b = Node::start_with(&redis, |c| c.routing.default_capacity = 2).await;
    let _a1 = a.agent("a1").await;
    let _a2 = b.agent("a2").await;
    const N: usize = 40;
    let mut visitors = Vec::new();
    for i in 0..N {
        let node = if i % 2 == 0 { &a } else { &b };
        visitors.push(node.visitor().await);
    }
    let outcomes = futures::stream::iter(visitors.into_iter().map(|mut v| async move {
        v.start("other", "hi").await;
        // The first frame after the ack says assigned or queued (with its position).
        loop {
            match v.client.next_frame().await {
                ServerFrame::Assigned { conversation } => {
                    return (Some(conversation.agent.unwrap().id), None, v)
                }
                ServerFrame::Queued { position, .. } => return (None, Some(position), v),
                _ => continue,
            }
        }
    }))
    .buffer_unordered(N)
    .collect::<Vec<_>>()
    .await;
    let assigned: Vec<_> = outcomes.iter().filter_map(|(a, _, _)| a.clone()).collect();
    assert_eq!(assigned.len(), 4, "two agents with capacity 2");
    assert_eq!(assigned.iter().filter(|a| *a == "a1").count(), 2);
    assert_eq!(assigned.iter().filter(|a| *a == "a2").count(), 2);

    // Positions settle to 1..36, each held by one visitor, whichever node it is on.
    let mut waiting: Vec<_> = outcomes
        .into_iter()
        .filter(|(a, _, _)| a.is_none())
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(waiting.len(), N - 4);
    let mut conn = redis.conn().await;
    let mut positions = HashSet::new();
    for v in &mut waiting {
        let id = v.welcome.visitor.as_ref().unwrap().id.to_string();
        let open: String = redis::cmd("GET")
            .arg(format!("parley:{{u:v:{id}}}:open"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let rank: u64 = redis::cmd("ZRANK")
            .arg("parley:{r}:queue")
            .arg(&open)
            .query_async(&mut conn)
            .await
            .unwrap();
        positions.insert(rank + 1);
    }
    assert_eq!(positions, (1..=(N as u64 - 4)).collect::<HashSet<_>>());
}
