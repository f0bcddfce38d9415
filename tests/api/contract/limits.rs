//! Limits on both topologies: a visitor has one conversation budget, whichever node it uses.

use parley::protocol::ErrorCode;
use serde_json::json;

use crate::topology::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_conversations_per_hour_are_refused_on_every_node() {
    let Some(d) = start(|c| c.rate_limits.visitor_conversations_per_hour = 2).await else {
        return;
    };
    let first = d.visitor().await;
    let (id, token) = (first.id.clone(), first.token.clone());
    drop(first);
    // One conversation through each node (two through the one node).
    let nodes = d.nodes();
    for node in nodes.iter().cycle().take(2) {
        let mut visitor = node.reconnect_visitor(&id, &token, None).await;
        visitor.start("other", "hi").await;
        visitor.client.send(json!({"type": "close"})).await;
        visitor.client.expect_closed().await;
    }
    // The visitors' node has opened one conversation for this visitor on two nodes, but the
    // budget of two is spent.
    let mut visitor = d.visitors.reconnect_visitor(&id, &token, None).await;
    visitor
        .client
        .send(json!({"type": "start", "category": "other", "text": "again", "cid": "third"}))
        .await;
    let e = visitor
        .client
        .expect_error_code(ErrorCode::RateLimited)
        .await;
    assert!(e.retry_after_ms.unwrap() > 60_000, "{e:?}");
}
