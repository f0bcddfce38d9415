//! Faults: Redis going away and coming back, a node killed mid-traffic, a dead subscription.

use std::time::{Duration, Instant};

use parley::protocol::{ErrorCode, QueueReason, ServerFrame};

use crate::harness::{eventually, Node, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty_nodes_refuse_then_recover_by_themselves() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;

    redis.kill();
    let stopped = Instant::now();
    eventually(
        "node A to report not ready",
        Duration::from_secs(3),
        || async { !a.ready().await },
    )
    .await;
    assert!(
        stopped.elapsed() <= Duration::from_millis(2500),
        "readyz turned false after {:?}",
        stopped.elapsed()
    );
    // A new conversation is refused with a clear, retryable error; the socket stays open.
    visitor
        .client
        .send(serde_json::json!({"type": "start", "category": "other", "text": "hi", "cid": "s1"}))
        .await;
    let error = visitor
        .client
        .expect_error_code(ErrorCode::Unavailable)
        .await;
    assert!(error.retry_after_ms.is_some(), "{error:?}");

    // Redis comes back with nothing in it: the nodes re-register on their own.
    redis.restart().await;
    a.wait_ready().await;
    b.wait_ready().await;
    let mut conn = redis.conn().await;
    eventually("agent a1 back in routing", Duration::from_secs(10), || {
        let mut conn = conn.clone();
        async move {
            redis::cmd("SISMEMBER")
                .arg("parley:{r}:accepting")
                .arg("a1")
                .query_async::<bool>(&mut conn)
                .await
                .unwrap_or(false)
        }
    })
    .await;
    let _ = &mut conn;
    // Retrying works; the chat reaches the agent on the other node.
    assert_eq!(visitor.start("other", "hi again").await, 1);
    visitor.expect_assigned().await;
    let (chat, history) = agent.expect_chat().await;
    assert_eq!(history[0].text, "hi again");
    agent.say(&chat, "welcome back").await;
    assert_eq!(visitor.expect_message().await.text, "welcome back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_then_continued_nodes_recover() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    redis.pause();
    eventually(
        "node A to report not ready",
        Duration::from_secs(3),
        || async { !a.ready().await },
    )
    .await;
    redis.resume();
    a.wait_ready().await;
    visitor.start("other", "after the pause").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    agent.say(&chat, "hello").await;
    assert_eq!(visitor.expect_message().await.text, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_agents_go_offline_and_their_chats_return_to_the_front() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mut a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut doomed = a.agent("a1").await;
    let mut visitor = b.visitor().await;
    visitor.start("other", "help").await;
    visitor.expect_assigned().await;
    let (chat, _) = doomed.expect_chat().await;
    let seq = doomed.say(&chat, "acknowledged before the crash").await;
    assert_eq!(visitor.expect_message().await.seq.0, seq);

    a.kill();
    let killed = Instant::now();
    // Within the presence TTL (2 s in tests) plus a beat, the chat is back in the queue, at the
    // front, and the visitor is told why.
    let frame = loop {
        match visitor.client.next_frame().await {
            ServerFrame::Queued {
                reason, position, ..
            } => break (reason, position),
            _ => continue,
        }
    };
    assert_eq!(frame, (QueueReason::AgentDisconnected, 1));
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "{:?}",
        killed.elapsed()
    );

    // Another agent, on the surviving node, takes it with everything acknowledged so far.
    let mut rescuer = b.agent("a2").await;
    let (taken, history) = rescuer.expect_chat().await;
    assert_eq!(taken.id, chat.id);
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].text, "acknowledged before the crash");
    rescuer.say(&taken, "I am here now").await;
    let assigned = visitor.expect_assigned().await;
    assert_eq!(assigned.agent.unwrap().id, "a2");
    assert_eq!(visitor.expect_message().await.text, "I am here now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscription_is_noticed_and_nothing_is_missed() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "hi").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    let mut conn = redis.conn().await;
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        killed >= 2,
        "both nodes' subscriptions were killed ({killed})"
    );
    for text in ["while", "the", "subscription", "was", "down"] {
        agent.say(&chat, text).await;
    }
    for (i, text) in ["while", "the", "subscription", "was", "down"]
        .iter()
        .enumerate()
    {
        let m = visitor.expect_message().await;
        assert_eq!((m.seq.0, m.text.as_str()), (2 + i as u64, *text));
    }
    // Resubscribed: live delivery again, nothing twice.
    let seq = visitor.say_acked("and back").await;
    let m = agent.expect_message().await;
    assert_eq!((m.seq.0, m.text.as_str()), (seq, "and back"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_of_a_killed_node_resumes_on_another_with_nothing_acknowledged_lost() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mut a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "first").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    // Acknowledged through node A, then node A dies at once.
    let mut acked = Vec::new();
    for text in ["second", "third"] {
        acked.push((visitor.say_acked(text).await, text));
    }
    let last_seen = acked.last().unwrap().0;
    for (seq, text) in &acked {
        let m = agent.expect_message().await;
        assert_eq!((m.seq.0, m.text.as_str()), (*seq, *text));
    }
    a.kill();
    // Meanwhile the agent writes.
    agent.say(&chat, "did you go?").await;

    // The visitor comes back through node B: nothing it was told was stored is missing, and it
    // gets exactly what it missed.
    let mut visitor = b
        .reconnect_visitor(&visitor.id, &visitor.token, Some(last_seen))
        .await;
    assert_eq!(visitor.welcome.conversations[0].recovered, Some(true));
    let m = visitor.expect_message().await;
    assert_eq!((m.seq.0, m.text.as_str()), (last_seen + 1, "did you go?"));
    let mut history = Vec::new();
    visitor
        .client
        .send(serde_json::json!({"type": "history", "limit": 50}))
        .await;
    if let ServerFrame::History { messages, .. } = visitor
        .client
        .expect("history", |f| {
            matches!(f, ServerFrame::History { .. }).then(|| f.clone())
        })
        .await
    {
        history = messages.into_iter().map(|m| (m.seq.0, m.text)).collect();
    }
    for (seq, text) in acked {
        assert!(history.contains(&(seq, text.to_string())), "{history:?}");
    }
    // And the agent still hears it.
    visitor.say_acked("back").await;
    assert_eq!(agent.expect_message().await.text, "back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_leaving_while_redis_is_away_is_recorded_when_it_returns() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let short = |c: &mut parley::config::Config| {
        c.routing.visitor_grace = Duration::from_millis(300);
    };
    let a = Node::start_with(&redis, short).await;
    let b = Node::start_with(&redis, short).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    agent.expect_chat().await;

    redis.pause();
    eventually(
        "node A to report not ready",
        Duration::from_secs(3),
        || async { !a.ready().await },
    )
    .await;
    drop(visitor);
    // The fault: Redis stays stopped for 2.5 s, longer than an engine call may take (2 s), so
    // node A's record of the leave fails. This is the outage's length, not a synchronisation:
    // what follows waits on events.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.resume();
    let closed = agent.client.expect_closed().await;
    assert!(
        matches!(
            closed,
            ServerFrame::Closed {
                reason: parley::protocol::CloseReason::VisitorLeft,
                ..
            }
        ),
        "{closed:?}"
    );
}
