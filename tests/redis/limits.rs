//! One budget per visitor across nodes.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use parley::protocol::{ErrorCode, ServerFrame};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Node, RedisServer};

/// Counts acks and `rate_limited` refusals on a socket until `expected` answers arrived.
async fn tally(
    mut stream: impl futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
    expected: usize,
) -> (usize, usize) {
    let (mut acked, mut limited) = (0, 0);
    while acked + limited < expected {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("answers in time")
            .expect("socket open")
            .expect("readable");
        let Message::Text(text) = message else {
            continue;
        };
        match serde_json::from_str::<ServerFrame>(text.as_str()).unwrap() {
            ServerFrame::Ack {
                duplicate: false, ..
            } => acked += 1,
            ServerFrame::Error(e) if e.code == ErrorCode::RateLimited => {
                assert!(e.retry_after_ms.is_some());
                limited += 1
            }
            _ => {}
        }
    }
    (acked, limited)
}

/// The flood (100 msg/s for 60 s against 1/s with burst 10 accepts 70 ± 1), scaled to
/// 6 s: 10/s with burst 10 accepts 10 + 6 × 10 = 70 ± 1, whichever node each message reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_flooding_through_two_nodes_gets_one_budget() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let limits = |c: &mut parley::config::Config| {
        c.rate_limits.visitor_messages_per_second = 10;
        c.rate_limits.visitor_message_burst = 10;
    };
    let a = Node::start_with(&redis, limits).await;
    let b = Node::start_with(&redis, limits).await;
    let mut first = a.visitor().await;
    first.start("other", "hi").await;
    let second = b.reconnect_visitor(&first.id, &first.token, None).await;

    let (mut sink_a, stream_a) = first.client.ws.split();
    let (mut sink_b, stream_b) = second.client.ws.split();
    const PER_SECOND: u32 = 100;
    const SECONDS: u32 = 6;
    let total = (PER_SECOND * SECONDS) as usize;
    let readers = tokio::spawn(async move {
        tokio::join!(tally(stream_a, total / 2), tally(stream_b, total / 2))
    });
    // The load: 100 messages a second, alternating nodes. Pacing, not synchronisation.
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(1000 / PER_SECOND)));
    let mut first_sent = None;
    for i in 0..total {
        tick.tick().await;
        first_sent.get_or_insert_with(std::time::Instant::now);
        let frame = Message::text(
            json!({"type": "message", "cid": format!("flood-{i}"), "text": "spam"}).to_string(),
        );
        if i % 2 == 0 {
            sink_a.send(frame).await.unwrap();
        } else {
            sink_b.send(frame).await.unwrap();
        }
    }
    let elapsed = first_sent.unwrap().elapsed().as_secs_f64();
    let ((acked_a, limited_a), (acked_b, limited_b)) = readers.await.unwrap();
    let accepted = acked_a + acked_b;
    assert_eq!(accepted + limited_a + limited_b, total);
    // The budget is burst + rate × the flood's real length: 70 when the pacing held 6 s. On a
    // loaded machine the flood may stretch a little; the budget must follow Redis' clock, not
    // the number of nodes.
    let expected = 10.0 + 10.0 * elapsed;
    assert!(
        (accepted as f64 - expected).abs() <= 1.5,
        "accepted {accepted} (node A {acked_a}, node B {acked_b}) over {elapsed:.2} s; expected {expected:.1} ± 1"
    );
    if elapsed < 6.1 {
        assert!(
            (69..=71).contains(&accepted),
            "accepted {accepted}; expected 70 ± 1"
        );
    }
    assert!(
        acked_a > 0 && acked_b > 0,
        "both nodes drew on the same budget"
    );
}

#[tokio::test]
async fn visitors_behind_one_address_have_their_own_budgets() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let limits = |c: &mut parley::config::Config| {
        c.rate_limits.visitor_messages_per_second = 1;
        c.rate_limits.visitor_message_burst = 3;
    };
    let a = Node::start_with(&redis, limits).await;
    let b = Node::start_with(&redis, limits).await;
    // Same IP (127.0.0.1), different visitors: each has its burst of 3.
    let mut one = a.visitor().await;
    let mut two = b.visitor().await;
    one.start("other", "hi").await;
    two.start("other", "hi").await;
    for _ in 0..3 {
        one.say_acked("x").await;
        two.say_acked("x").await;
    }
    one.say("over").await;
    one.client.expect_error_code(ErrorCode::RateLimited).await;
}
