//! Assignment across nodes: round-robin order shared, capacity held, one agent per
//! conversation, even when every node assigns at the same instant.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use parley::protocol::ServerFrame;

use std::time::Duration;

use crate::harness::{eventually, Node, RedisServer};
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

/// Agents a1..a6 with these capacities: 1,050 slots for 1,000 conversations, so capacity binds
/// for a1 and a2 while the others share the rest round-robin.
const CAPACITIES: [u32; 6] = [100, 150, 200, 200, 200, 200];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_starts_across_three_nodes_are_assigned_fairly_within_capacity_and_once(
) {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let capacities = |c: &mut parley::config::Config| {
        for (agent, cap) in c.agents.iter_mut().zip(CAPACITIES) {
            agent.capacity = Some(cap);
        }
    };
    let nodes = [
        Node::start_with(&redis, capacities).await,
        Node::start_with(&redis, capacities).await,
        Node::start_with(&redis, capacities).await,
    ];
    let mut agents = Vec::new();
    for i in 0..6 {
        agents.push(nodes[i % 3].agent(&format!("a{}", i + 1)).await);
    }
    const N: usize = 1000;
    // Every visitor connects first, then all start at once, through all three nodes.
    let mut visitors = Vec::new();
    for i in 0..N {
        visitors.push(nodes[i % 3].visitor().await);
    }
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
    assert_eq!(
        seen.len(),
        N,
        "every conversation assigned (no agent idle while one waits)"
    );
    // Round-robin with capacity, worked out: all six take one each in turn until a1 is full
    // (600 assigned, 100 each), then five until a2 is full (250 more, 150 each), then the
    // last 150 go to a3..a6 in turn: 37 or 38 more each.
    assert_eq!(per_agent["a1"], 100, "{per_agent:?}");
    assert_eq!(per_agent["a2"], 150, "{per_agent:?}");
    for a in ["a3", "a4", "a5", "a6"] {
        assert!(
            (187..=188).contains(&per_agent[a]),
            "round-robin among those with room: {per_agent:?}"
        );
    }

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

    // And Redis agrees: N assignments, no load above its agent's capacity.
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
    for (i, cap) in CAPACITIES.iter().enumerate() {
        let agent = format!("a{}", i + 1);
        assert!(loads[&agent] <= *cap, "{agent} over capacity: {loads:?}");
        assert_eq!(loads[&agent] as usize, per_agent[&agent], "{loads:?}");
    }
    redis.assert_routing_indexes_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_positions_and_waits_are_the_same_on_every_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let one_chat = |c: &mut parley::config::Config| c.routing.default_capacity = 1;
    let a = Node::start_with(&redis, one_chat).await;
    let b = Node::start_with(&redis, one_chat).await;
    let mut agent = a.agent("a1").await;
    let mut first = b.visitor().await;
    first.start("other", "first").await;
    first.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    // Five more wait, alternating nodes: each is told its place in the one shared queue, and
    // the same estimate for the same place whichever node tells it.
    let mut waiting = Vec::new();
    let mut estimates = HashMap::new();
    for i in 0..5u32 {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut v = node.visitor().await;
        v.start("other", "waiting").await;
        let (position, estimate, _) = v.client.expect_queued().await;
        assert_eq!(position, i + 1);
        estimates.insert(position, estimate);
        waiting.push(v);
    }
    // A visitor that moves to the other node is told the same place there.
    let moved = waiting.remove(2);
    let mut moved = a.reconnect_visitor(&moved.id, &moved.token, Some(1)).await;
    let (position, estimate, _) = moved.client.expect_queued().await;
    assert_eq!((position, estimate), (3, estimates[&3]));
    waiting.insert(2, moved);

    // The head of the queue is served: everyone moves up one place, on both nodes. Its wait
    // teaches the desk's shared estimate (kept in Redis): every node then tells each place the
    // same learnt figure.
    agent.close(&chat, true).await;
    let served = waiting.remove(0);
    let mut served = served;
    served.expect_assigned().await;
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*wait_per_position")
        .query_async(&mut conn)
        .await
        .unwrap();
    let per_place: f64 = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    for (i, v) in waiting.iter_mut().enumerate() {
        let want = i as u32 + 1;
        let learnt = (per_place * f64::from(want)) as u64;
        loop {
            let (position, estimate, _) = v.client.expect_queued().await;
            assert!(position >= want, "positions only move up");
            if position == want && estimate == learnt {
                break;
            }
        }
    }
    redis.assert_routing_indexes_agree().await;
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
    redis.assert_routing_indexes_agree().await;
}

/// Routing data written without the per-target indexes (by a version before them) is made
/// whole when a node starts: the waiting chats keep their places and are served in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starting_on_routing_data_without_its_indexes_rebuilds_them() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let one_chat = |c: &mut parley::config::Config| c.routing.default_capacity = 1;
    let a = Node::start_with(&redis, one_chat).await;
    let mut agent = a.agent("a1").await;
    let mut first = a.visitor().await;
    first.start("other", "first").await;
    first.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    let mut waiting = Vec::new();
    for i in 0..2u32 {
        let mut v = a.visitor().await;
        v.start("other", "waiting").await;
        let (position, _, _) = v.client.expect_queued().await;
        assert_eq!(position, i + 1);
        waiting.push(v);
    }

    // What an older version leaves: the same data, no indexes.
    let mut conn = redis.conn().await;
    let mut doomed: Vec<String> = Vec::new();
    for kind in ["free", "staff", "q"] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("parley:{{r}}:{kind}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        doomed.extend(keys);
    }
    doomed.push("parley:{r}:queued_targets".into());
    let deleted: usize = redis::cmd("DEL")
        .arg(&doomed)
        .query_async(&mut conn)
        .await
        .unwrap();
    // staff:any, q:any and queued_targets (free:any is empty: the one agent is full).
    assert_eq!(deleted, 3, "{doomed:?}");

    let _b = Node::start_with(&redis, one_chat).await;
    eventually(
        "the new node rebuilds the queue index",
        Duration::from_secs(10),
        || {
            let mut conn = conn.clone();
            async move {
                redis::cmd("ZCARD")
                    .arg("parley:{r}:q:any")
                    .query_async::<u32>(&mut conn)
                    .await
                    .unwrap()
                    == 2
            }
        },
    )
    .await;
    redis.assert_routing_indexes_agree().await;

    // The freed slot goes to the head of the queue, and the next one moves up.
    agent.close(&chat, true).await;
    waiting[0].expect_assigned().await;
    loop {
        let (position, _, _) = waiting[1].client.expect_queued().await;
        if position == 1 {
            break;
        }
    }
    redis.assert_routing_indexes_agree().await;
}
