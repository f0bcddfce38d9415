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

/// The flood exactly: 100 messages a second for 60 s against 1/s with burst 10, taken
/// alternately through two connections (as two nodes would), in controlled time: the script
/// runs on the real Redis, with the time it would read from Redis' clock given instead.
#[tokio::test]
async fn the_shared_budget_accepts_70_of_a_minute_long_flood_in_controlled_time() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mut nodes = [redis.conn().await, redis.conn().await];
    let key = parley::engine::redis::keys::Keys::new("parley")
        .rate(&parley::domain::VisitorId::parse("flooder").unwrap());
    const EMISSION_MS: f64 = 1000.0; // 1 message a second...
    const BURST: u32 = 10; // ...10 at once.
    let start: u64 = 1_700_000_000_000;
    // 100 a second from t = 0 to t = 60 s, both ends included.
    let arrivals: Vec<u64> = (0..=6000).map(|i| start + i * 10).collect();

    let mut accepted = 0;
    let mut model_tat = 0.0f64;
    let mut model_accepted = 0;
    for (i, &now) in arrivals.iter().enumerate() {
        let (allowed, wait_ms): (i64, i64) = parley::engine::redis::GCRA
            .key(&key)
            .arg(EMISSION_MS)
            .arg(BURST)
            .arg(now)
            .invoke_async(&mut nodes[i % 2])
            .await
            .unwrap();
        // The same GCRA, worked out here: allowed while the theoretical arrival time is at
        // most (burst - 1) emissions ahead.
        let now = now as f64;
        let tat = model_tat.max(now);
        let model_allowed = tat - now <= EMISSION_MS * f64::from(BURST - 1);
        if model_allowed {
            model_tat = tat + EMISSION_MS;
            model_accepted += 1;
        } else {
            let wait = (tat - now - EMISSION_MS * f64::from(BURST - 1)).ceil() as i64;
            assert_eq!(wait_ms, wait, "retry_after for the refusal at {now}");
        }
        assert_eq!(allowed == 1, model_allowed, "decision at {now}");
        accepted += usize::from(allowed == 1);
    }
    // 10 at once, then one each second from t = 1 s to t = 60 s.
    assert_eq!(model_accepted, 70);
    assert_eq!(
        accepted, 70,
        "70 ± 1 accepted, whichever connection they came through"
    );
}

/// The same budget through two real nodes, in real time, scaled down to 6 s: 100 messages a
/// second against 10/s with burst 10, alternating nodes. The expected count is worked out from
/// the flood's measured length (Redis' clock decides, not the test's pacing): 10 at once, then
/// one per 100 ms of flood. Two budgets (one per node) would accept about twice that.
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
    let flood = first_sent.unwrap().elapsed();
    let ((acked_a, limited_a), (acked_b, limited_b)) = readers.await.unwrap();
    let accepted = acked_a + acked_b;
    assert_eq!(accepted + limited_a + limited_b, total);
    let expected = 10 + (flood.as_millis() / 100) as usize;
    assert!(
        accepted.abs_diff(expected) <= 1,
        "accepted {accepted} (node A {acked_a}, node B {acked_b}) over {flood:?}; expected {expected} ± 1"
    );
    assert!(
        acked_a > 0 && acked_b > 0,
        "both nodes drew on the same budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_two_nodes_has_one_message_budget() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let limits = |c: &mut parley::config::Config| {
        c.rate_limits.agent_messages_per_second = 1;
        c.rate_limits.agent_message_burst = 3;
    };
    let a = Node::start_with(&redis, limits).await;
    let b = Node::start_with(&redis, limits).await;
    let mut on_a = a.agent("a1").await;
    let mut visitor = b.visitor().await;
    visitor.start("other", "hi").await;
    let (chat, _) = on_a.expect_chat().await;
    let mut on_b = b.agent("a1").await;
    assert_eq!(on_b.welcome.conversations[0].id, chat.id);
    // Three through A and B together: the burst. The fourth, through B, is one too many,
    // although node B has seen only one message from this agent.
    for (through_b, cid) in [(false, "one"), (false, "two"), (true, "three")] {
        let agent = if through_b { &mut on_b } else { &mut on_a };
        let answer = answer_to(agent, &chat.id.to_string(), cid).await;
        assert!(answer.is_ok(), "{cid}: {answer:?}");
    }
    let answer = answer_to(&mut on_b, &chat.id.to_string(), "four").await;
    assert!(
        matches!(&answer, Err(e) if e.code == ErrorCode::RateLimited && e.retry_after_ms.is_some()),
        "{answer:?}"
    );
}

/// Sends a message as an agent; its ack, or the error that refused it (frames for the agent's
/// other socket are skipped).
async fn answer_to(
    agent: &mut crate::helpers::Agent,
    conversation: &str,
    cid: &str,
) -> Result<u64, parley::protocol::ErrorFrame> {
    agent
        .client
        .send(json!({"type": "message", "conversation_id": conversation, "cid": cid, "text": cid}))
        .await;
    loop {
        match agent.client.next_frame().await {
            ServerFrame::Ack { cid: c, seq, .. } if c.as_str() == cid => return Ok(seq.0),
            ServerFrame::Error(e) if e.cid.as_ref().is_some_and(|c| c.as_str() == cid) => {
                return Err(e)
            }
            _ => {}
        }
    }
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
