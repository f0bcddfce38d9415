//! Routing scenarios on both topologies: the one shared queue, its positions and estimates.

use std::collections::HashMap;

use crate::topology::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_move_up_as_the_queue_drains_and_read_the_same_on_every_node() {
    let Some(d) = start(|c| c.routing.default_capacity = 1).await else {
        return;
    };
    let nodes = d.nodes();
    let (agent, _first, chat) = d.chat("a1", "other", "first").await;
    let mut agent = agent;

    // Five more wait, on every node in turn: each is told its place in the one shared queue,
    // and the same estimate for the same place whichever node tells it.
    let mut waiting = Vec::new();
    let mut estimates = HashMap::new();
    for i in 0..5u32 {
        let mut v = nodes[i as usize % nodes.len()].visitor().await;
        v.start("other", &format!("w{i}")).await;
        let (position, estimate, _) = v.client.expect_queued().await;
        assert_eq!(position, i + 1);
        estimates.insert(position, estimate);
        waiting.push(v);
    }
    // A visitor that comes back (on the other node, when there is one) is told the same place.
    let moved = waiting.remove(2);
    let mut moved = d
        .agents
        .reconnect_visitor(&moved.id, &moved.token, Some(1))
        .await;
    let (position, estimate, _) = moved.client.expect_queued().await;
    assert_eq!((position, estimate), (3, estimates[&3]));
    waiting.insert(2, moved);

    // The head of the queue is served: everyone moves up one place. Its wait teaches the
    // desk's estimate (learnt on both topologies; on Redis it is kept there for every node), so
    // every place is then told one learnt figure per place, whichever node tells it, and no
    // longer the 60 s per place assumed before any chat was served.
    agent.close(&chat, true).await;
    let mut served = waiting.remove(0);
    served.expect_assigned().await;
    let mut told = Vec::new();
    for (i, v) in waiting.iter_mut().enumerate() {
        let want = i as u32 + 1;
        let (position, estimate) = loop {
            let (position, estimate, _) = v.client.expect_queued().await;
            if position == want {
                break (position, estimate);
            }
            assert!(position > want, "positions only move up");
        };
        told.push((position, estimate));
    }
    let (_, first) = told[0];
    assert!(
        first < 60_000,
        "the estimate is learnt from the chat served: {told:?}"
    );
    for &(position, estimate) in &told {
        // `position × per place`, truncated to whole milliseconds.
        let per_place = first as f64;
        let lowest = (per_place * f64::from(position)) as u64;
        let highest = ((per_place + 1.0) * f64::from(position)) as u64;
        assert!(
            (lowest..=highest).contains(&estimate),
            "one figure per place on every node: {told:?}"
        );
    }
    d.check().await;
}
