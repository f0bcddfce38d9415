//! Faults: Redis going away and coming back (SIGKILL and an empty restart, SIGSTOP, CLIENT
//! PAUSE), a node killed mid-traffic, a subscription killed or silently dead.
//!
//! What every Redis outage must show: `/readyz` false within 2 s, the node itself still up,
//! new conversations refused with the retryable `unavailable`, no panic, and recovery with no
//! manual step once Redis answers.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::time::{Duration, Instant};

use parley::protocol::{CloseReason, ErrorCode, QueueReason, Role, ServerFrame};
use serde_json::json;

use crate::harness::{
    assert_no_node_panicked, eventually, Gateway, Node, ProcessNode, Proxy, RedisServer,
};
use crate::helpers::Visitor;

/// What the issue allows for `/readyz` to turn false once Redis stops answering.
const READY_WITHIN: Duration = Duration::from_secs(2);

/// Waits until none of `nodes` is ready; returns how long that took since `since`.
async fn not_ready(nodes: &[&Gateway], since: Instant) -> Duration {
    eventually(
        "every node to report not ready",
        Duration::from_secs(5),
        || async {
            for n in nodes {
                if n.ready().await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    since.elapsed()
}

/// Sends `start` and expects the retryable `unavailable` refusal, on an open socket.
async fn start_is_refused(visitor: &mut Visitor, cid: &str) {
    visitor
        .client
        .send(json!({"type": "start", "category": "other", "text": "hi", "cid": cid}))
        .await;
    let error = visitor
        .client
        .expect_error_code(ErrorCode::Unavailable)
        .await;
    assert!(error.retry_after_ms.is_some(), "retryable: {error:?}");
}

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
    let took = not_ready(&[&a, &b], Instant::now()).await;
    assert!(took <= READY_WITHIN, "readyz turned false after {took:?}");
    assert!(a.alive().await && b.alive().await, "the nodes stay up");
    // A new conversation is refused with a clear, retryable error; the socket stays open.
    start_is_refused(&mut visitor, "s1").await;
    // Who is connected cannot be known: the directory says so, not "nobody".
    let directory = reqwest::Client::new()
        .get(format!("http://{}/v1/desk", a.addr))
        .bearer_auth(crate::helpers::agent_token("a1"))
        .send()
        .await
        .unwrap();
    assert_eq!(directory.status(), 503);
    let body: serde_json::Value = directory.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    // Redis comes back with nothing in it: the nodes re-register on their own.
    redis.restart().await;
    a.wait_ready().await;
    b.wait_ready().await;
    let conn = redis.conn().await;
    let visitor_key = format!("parley:{{u:v:{}}}:nodes", visitor.id);
    eventually(
        "both nodes, the agent and the visitor registered again",
        Duration::from_secs(10),
        || {
            let (mut conn, visitor_key) = (conn.clone(), visitor_key.clone());
            async move {
                let (nodes, accepting, agent_nodes, visitor_nodes): (usize, bool, usize, usize) =
                    redis::pipe()
                        .cmd("SCARD")
                        .arg("parley:nodes")
                        .cmd("SISMEMBER")
                        .arg("parley:{r}:accepting")
                        .arg("a1")
                        .cmd("SCARD")
                        .arg("parley:{u:a:a1}:nodes")
                        .cmd("SCARD")
                        .arg(&visitor_key)
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                nodes == 2 && accepting && agent_nodes == 1 && visitor_nodes == 1
            }
        },
    )
    .await;
    // Retrying works; the chat reaches the agent on the other node.
    assert_eq!(visitor.start("other", "hi again").await, 1);
    visitor.expect_assigned().await;
    let (chat, history) = agent.expect_chat().await;
    assert_eq!(history[0].text, "hi again");
    agent.say(&chat, "welcome back").await;
    assert_eq!(visitor.expect_message().await.text, "welcome back");
    assert_no_node_panicked();
}

/// Redis restarts empty under a live chat: its open conversation is gone from the shared
/// state. Both sides are told it ended (`state_lost`) instead of every send failing with
/// `not_found`, the store records it closed, and the agent's slot is free for the next chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_ends_the_chats_it_lost_and_the_store_and_routing_agree() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start_with(&redis, |c| c.routing.default_capacity = 1).await;
    let b = Node::start_with(&redis, |c| c.routing.default_capacity = 1).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "before").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    // Node A accepted it, so its store holds the conversation.
    let path = format!("/v1/conversations/{}", chat.id);
    a.eventually("the conversation is stored", || async {
        a.get(&path, Some(crate::helpers::ADMIN_TOKEN))
            .await
            .status()
            == 200
    })
    .await;

    redis.kill();
    redis.restart().await;
    for (side, client) in [
        ("visitor", &mut visitor.client),
        ("agent", &mut agent.client),
    ] {
        match client.expect_closed().await {
            ServerFrame::Closed {
                conversation_id,
                reason,
                by,
                ..
            } => {
                assert_eq!(conversation_id, chat.id, "{side}");
                assert_eq!(reason, CloseReason::StateLost, "{side}");
                assert_eq!(by, Role::System, "{side}");
            }
            other => unreachable!("{other:?}"),
        }
    }
    a.eventually("the store says closed, state_lost", || async {
        let t = a.get_json(&path).await;
        t["conversation"]["state"] == "closed" && t["conversation"]["close_reason"] == "state_lost"
    })
    .await;
    // Routing agrees: the agent (capacity 1) takes the next chat.
    let mut next = a.visitor().await;
    next.start("other", "after").await;
    next.expect_assigned().await;
    let (second, history) = agent.expect_chat().await;
    assert_ne!(second.id, chat.id);
    assert_eq!(history[0].text, "after");
    assert_no_node_panicked();
}

/// Redis is away for longer than the presence TTL and comes back with its data (an
/// append-only file): every node's presence key expired meanwhile, while the list of nodes
/// survived. The first node back must not take the others for dead before they had a TTL to
/// refresh their keys: nobody's chats are requeued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_with_its_data_after_the_ttl_nobody_is_taken_for_dead() {
    let Some(mut redis) = RedisServer::start_persistent().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "before").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    redis.kill();
    not_ready(&[&a, &b], Instant::now()).await;
    // The outage: longer than the TTL (2 s here), so the nodes' keys are expired when Redis
    // loads its file again. A length, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart().await;
    a.wait_ready().await;
    b.wait_ready().await;
    let conn = redis.conn().await;
    eventually(
        "both nodes refreshed their keys",
        Duration::from_secs(10),
        || {
            let mut conn = conn.clone();
            async move {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg("parley:node:*")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                keys.iter().filter(|k| k.split(':').count() == 3).count() == 2
            }
        },
    )
    .await;
    let mut conn = redis.conn().await;
    let (owner, queued): (Option<String>, usize) = redis::pipe()
        .cmd("HGET")
        .arg("parley:{r}:assigned")
        .arg(chat.id.to_string())
        .cmd("ZCARD")
        .arg("parley:{r}:queue")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        (owner.as_deref(), queued),
        (Some("a1"), 0),
        "the chat stayed a1's"
    );
    agent.say(&chat, "still yours").await;
    let m = visitor.client.next_frame_skipping_state().await;
    assert!(
        matches!(&m, ServerFrame::Message(m) if m.text == "still yours"),
        "no requeue on the way: {m:?}"
    );
    assert_no_node_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_ten_seconds_nodes_refuse_then_carry_on() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "before").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    let mut newcomer = a.visitor().await;

    redis.pause();
    let stopped = Instant::now();
    let took = not_ready(&[&a, &b], stopped).await;
    assert!(took <= READY_WITHIN, "readyz turned false after {took:?}");
    start_is_refused(&mut newcomer, "s1").await;
    visitor
        .say_with_cid("during", "sent while redis was stopped")
        .await;
    let error = visitor
        .client
        .expect_error_code(ErrorCode::Unavailable)
        .await;
    assert_eq!(error.cid.as_ref().map(|c| c.as_str()), Some("during"));
    assert!(a.alive().await && b.alive().await, "the nodes stay up");

    // The fault lasts 10 s, well past the presence TTL (2 s here): a length, not a
    // synchronisation; everything after it waits on events.
    tokio::time::sleep_until((stopped + Duration::from_secs(10)).into()).await;
    assert!(!a.ready().await, "still not ready while redis is stopped");
    redis.resume();
    let resumed = Instant::now();
    a.wait_ready().await;
    b.wait_ready().await;
    assert!(
        resumed.elapsed() <= READY_WITHIN,
        "ready again after {:?}",
        resumed.elapsed()
    );

    // The refused message, sent again with its cid, is stored once and delivered once.
    visitor
        .say_with_cid("during", "sent while redis was stopped")
        .await;
    let (seq, _) = visitor.client.expect_ack("during").await;
    let m = agent.expect_message().await;
    assert_eq!(
        (m.seq.0, m.text.as_str()),
        (seq, "sent while redis was stopped")
    );
    assert_eq!(visitor.say_acked("after").await, seq + 1);
    assert_eq!(agent.expect_message().await.text, "after");
    agent.say(&chat, "still here").await;
    assert_eq!(visitor.expect_message().await.text, "still here");
    // Nobody was mistaken for dead: nothing was requeued, the agent kept its chat.
    let mut conn = redis.conn().await;
    let queued: usize = redis::cmd("ZCARD")
        .arg("parley:{r}:queue")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(queued, 0);
    // And new conversations are taken again.
    newcomer.start("other", "hi again").await;
    newcomer.expect_assigned().await;
    assert_no_node_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_client_paused_nodes_refuse_then_carry_on() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = b.agent("a1").await;
    // `ALL` stops every command; `WRITE` lets reads through, but a node that cannot write
    // cannot take new work either, so it is not ready.
    for (mode, visitor_text) in [
        ("ALL", "after the pause"),
        ("WRITE", "after the write pause"),
    ] {
        let mut visitor = a.visitor().await;
        let mut conn = redis.conn().await;
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(4000)
            .arg(mode)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        let paused = Instant::now();
        let took = not_ready(&[&a, &b], paused).await;
        assert!(
            took <= READY_WITHIN,
            "{mode}: readyz turned false after {took:?}"
        );
        start_is_refused(&mut visitor, "s1").await;
        assert!(a.alive().await && b.alive().await, "the nodes stay up");

        // The pause ends by itself.
        a.wait_ready().await;
        b.wait_ready().await;
        visitor.start("other", visitor_text).await;
        visitor.expect_assigned().await;
        let (chat, history) = agent.expect_chat().await;
        assert_eq!(history.last().unwrap().text, visitor_text);
        agent.say(&chat, "hello").await;
        assert_eq!(visitor.expect_message().await.text, "hello");
        agent.close(&chat, true).await;
    }
    assert_no_node_panicked();
}

/// A node stores a message (the append script ran) and dies before publishing it, or its call
/// timed out after Redis ran it: the client was never acknowledged and sends it again. The
/// resend is recognised by its `cid`, acknowledged as a duplicate with the original seq, and
/// the message reaches the other side, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_but_never_published_reaches_the_other_side_once_when_resent() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "before").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    // What the lost node did: the real append script, for this visitor, then nothing.
    let keys = parley::engine::redis::keys::Keys::new("parley");
    let conversation = parley::domain::ConversationId::parse(&chat.id.to_string()).unwrap();
    let mut conn = redis.conn().await;
    let stored: Vec<String> = parley::engine::redis::scripts::APPEND
        .key(keys.meta(conversation))
        .key(keys.log(conversation))
        .key(keys.cids(conversation))
        .arg("visitor")
        .arg(&visitor.id)
        .arg("Test Visitor")
        .arg("stored, never published")
        .arg(parley::domain::now_millis())
        .arg("lost")
        .arg("a-lost-node/SocketId(1)")
        .arg(500)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored[0], "ok");
    let stored_seq: u64 = stored[1].parse().unwrap();

    visitor
        .say_with_cid("lost", "stored, never published")
        .await;
    assert_eq!(visitor.client.expect_ack("lost").await, (stored_seq, true));
    let m = agent.expect_message().await;
    assert_eq!(
        (m.seq.0, m.text.as_str()),
        (stored_seq, "stored, never published")
    );
    // Once: the next message is the next one, on both sides.
    assert_eq!(visitor.say_acked("next").await, stored_seq + 1);
    assert_eq!(agent.expect_message().await.text, "next");
    // Sent a third time, it is still only acknowledged.
    visitor
        .say_with_cid("lost", "stored, never published")
        .await;
    assert_eq!(visitor.client.expect_ack("lost").await, (stored_seq, true));
    // (`say` fails on any frame before its ack, so a second copy would show here.)
    agent.say(&chat, "reply").await;
    assert_eq!(visitor.expect_message().await.text, "reply");
    assert_no_node_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_agents_go_offline_within_the_ttl_and_their_chats_return_to_the_front() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    assert_eq!(
        parley::config::Config::default().redis.presence_ttl,
        Duration::from_secs(10),
        "the default the issue asks for"
    );
    let one_chat = |c: &mut parley::config::Config| c.routing.default_capacity = 1;
    let mut a = Node::start_with(&redis, one_chat).await;
    let b = Node::start_with(&redis, one_chat).await;
    let ttl = b.config.redis.presence_ttl;
    let mut doomed = a.agent("a1").await;
    let mut visitor = b.visitor().await;
    visitor.start("other", "help").await;
    visitor.expect_assigned().await;
    let (chat, _) = doomed.expect_chat().await;
    let seq = doomed.say(&chat, "acknowledged before the crash").await;
    assert_eq!(visitor.expect_message().await.seq.0, seq);
    // Someone else waits already: the orphaned chat must go ahead of them.
    let mut waiting = b.visitor().await;
    waiting.start("other", "me too").await;
    assert_eq!(waiting.client.expect_queued().await.0, 1);

    a.kill();
    let killed = Instant::now();
    let frame = loop {
        match visitor.client.next_frame().await {
            ServerFrame::Queued {
                reason, position, ..
            } => break (reason, position),
            _ => continue,
        }
    };
    let took = killed.elapsed();
    assert_eq!(
        frame,
        (QueueReason::AgentDisconnected, 1),
        "back at the front"
    );
    // The node's key was refreshed at most a third of the TTL before the kill, so it expires
    // between 2/3 and 1 TTL after; the next beat of a surviving node notices.
    assert!(
        took >= ttl * 2 / 3 - Duration::from_millis(100),
        "offline only once the TTL ran out ({took:?})"
    );
    assert!(
        took <= ttl + ttl / 3 + Duration::from_secs(1),
        "offline within one TTL and a beat ({took:?})"
    );
    let mut conn = redis.conn().await;
    let (accepting, in_ring): (bool, Option<f64>) = redis::pipe()
        .cmd("SISMEMBER")
        .arg("parley:{r}:accepting")
        .arg("a1")
        .cmd("ZSCORE")
        .arg("parley:{r}:ring")
        .arg("a1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!accepting && in_ring.is_none(), "a1 is offline");
    redis.assert_routing_indexes_agree().await;
    loop {
        let (position, _, _) = waiting.client.expect_queued().await;
        if position == 2 {
            break;
        }
    }

    // Another agent, on the surviving node, takes it first, with everything acknowledged.
    let mut rescuer = b.agent("a2").await;
    let (taken, history) = rescuer.expect_chat().await;
    assert_eq!(taken.id, chat.id);
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].text, "acknowledged before the crash");
    rescuer.say(&taken, "I am here now").await;
    let assigned = visitor.expect_assigned().await;
    assert_eq!(assigned.agent.unwrap().id, "a2");
    assert_eq!(visitor.expect_message().await.text, "I am here now");
    redis.assert_routing_indexes_agree().await;
    assert_no_node_panicked();
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
    assert_eq!(killed, 2, "both nodes' subscriptions were killed");
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
    eventually(
        "both nodes subscribed again",
        Duration::from_secs(5),
        || {
            let mut conn = conn.clone();
            async move {
                redis::cmd("CLIENT")
                    .arg("LIST")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok_and(|list| list.lines().count() == 2)
            }
        },
    )
    .await;
    assert_no_node_panicked();
}

/// The subscription stops delivering without any error: its connection stays open but
/// nothing passes (what Centrifugo saw in production). Only the liveness probe can notice. The
/// events lost meanwhile include a message stream, a close and an assignment: all must reach
/// the clients, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_subscription_is_noticed_by_its_probe_and_nothing_is_missed() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let proxy = Proxy::start(redis.port).await;
    let one_chat = |c: &mut parley::config::Config| c.routing.default_capacity = 1;
    // Node A reaches Redis through the proxy; node B directly.
    let proxied = proxy.url();
    let a = Node::start_with(&redis, |c| {
        one_chat(c);
        c.redis.url = Some(proxied);
    })
    .await;
    let b = Node::start_with(&redis, one_chat).await;
    let mut agent = b.agent("a1").await;
    let mut first = a.visitor().await;
    first.start("other", "first").await;
    first.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    let mut second = a.visitor().await;
    second.start("other", "second").await;
    assert_eq!(second.client.expect_queued().await.0, 1);

    eventually("node A subscribed", Duration::from_secs(5), || async {
        proxy.live_subscribers() == 1
    })
    .await;
    assert_eq!(proxy.silence_subscribers(), 1);
    let silenced = Instant::now();
    // Everything for node A's visitors now goes into the void.
    agent.say(&chat, "one").await;
    agent.say(&chat, "two").await;
    agent.close(&chat, true).await;
    let (next, _) = agent.expect_chat().await;
    agent.say(&next, "hello second").await;

    // The probe (a PING every second, 2 s to answer) notices; the node resubscribes and
    // catches up from Redis.
    let m = first.expect_message().await;
    let took = silenced.elapsed();
    assert_eq!((m.seq.0, m.text.as_str()), (2, "one"));
    assert!(took <= Duration::from_secs(5), "noticed after {took:?}");
    assert_eq!(first.expect_message().await.text, "two");
    let closed = first.client.expect_closed().await;
    assert!(
        matches!(
            closed,
            ServerFrame::Closed {
                by: Role::Agent,
                reason: CloseReason::AgentClosed,
                resolved: Some(true),
                ..
            }
        ),
        "{closed:?}"
    );
    let assigned = second.expect_assigned().await;
    assert_eq!(assigned.agent.unwrap().id, "a1");
    assert_eq!(second.expect_message().await.text, "hello second");
    assert_eq!(proxy.live_subscribers(), 1, "a new subscription");
    // Live again, nothing twice: the next frame is the next message.
    agent.say(&next, "live").await;
    let m = second.client.next_frame_skipping_state().await;
    assert!(
        matches!(&m, ServerFrame::Message(m) if m.text == "live"),
        "{m:?}"
    );
    assert_no_node_panicked();
}

/// Every frame a socket still delivers, until it ends (its node died).
async fn drain(client: &mut crate::helpers::Client) -> Vec<ServerFrame> {
    use futures::StreamExt;
    let mut frames = Vec::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(10), client.ws.next()).await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = message {
            frames.push(serde_json::from_str::<ServerFrame>(t.as_str()).unwrap());
        }
    }
    frames
}

/// The ack of `cid`, letting the other side's messages pass (both sides are resending).
async fn ack_of(client: &mut crate::helpers::Client, cid: &str) -> u64 {
    loop {
        if let ServerFrame::Ack { cid: c, seq, .. } = client.next_frame().await {
            if c.as_str() == cid {
                return seq.0;
            }
        }
    }
}

/// A visitor and its agent on one node, writing as fast as they can, when the node is killed.
/// Both reconnect to the other node: each gets exactly what it missed, resends what was not
/// acknowledged (recognised by `cid` if it was stored), and the conversation goes on with every
/// message once, in one order.
async fn killed_mid_traffic<N: Deref<Target = Gateway>>(
    mut doomed: N,
    kill: fn(&mut N),
    survivor: &Gateway,
) {
    let mut visitor = doomed.visitor().await;
    let mut agent = doomed.agent("a1").await;
    visitor.start("other", "start").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    const EACH: usize = 40;
    for i in 0..EACH {
        visitor
            .say_with_cid(&format!("v{i}"), &format!("visitor {i}"))
            .await;
        agent
            .client
            .send(json!({"type": "message", "conversation_id": chat.id, "cid": format!("a{i}"), "text": format!("agent {i}")}))
            .await;
    }
    // Kill the node once some of that traffic went through, while the rest is in flight.
    let mut seen_visitor: BTreeMap<u64, String> = BTreeMap::from([(1, "start".to_string())]);
    let mut acked_visitor: HashMap<String, u64> = HashMap::new();
    while acked_visitor.len() < 5 {
        match visitor.client.next_frame().await {
            ServerFrame::Ack { cid, seq, .. } => {
                acked_visitor.insert(cid.as_str().to_string(), seq.0);
                seen_visitor.insert(seq.0, String::new());
            }
            ServerFrame::Message(m) => {
                seen_visitor.insert(m.seq.0, m.text);
            }
            _ => {}
        }
    }
    kill(&mut doomed);

    // What each side got before its socket died: the rest of its stream, until it ends.
    for frame in drain(&mut visitor.client).await {
        match frame {
            ServerFrame::Ack { cid, seq, .. } => {
                acked_visitor.insert(cid.as_str().to_string(), seq.0);
                seen_visitor.insert(seq.0, String::new());
            }
            ServerFrame::Message(m) => {
                seen_visitor.insert(m.seq.0, m.text);
            }
            _ => {}
        }
    }
    let mut acked_agent: HashMap<String, u64> = HashMap::new();
    let mut seen_agent: BTreeMap<u64, ()> = (1..=1).map(|s| (s, ())).collect();
    for frame in drain(&mut agent.client).await {
        match frame {
            ServerFrame::Ack { cid, seq, .. } => {
                acked_agent.insert(cid.as_str().to_string(), seq.0);
                seen_agent.insert(seq.0, ());
            }
            ServerFrame::Message(m) => {
                seen_agent.insert(m.seq.0, ());
            }
            _ => {}
        }
    }
    // Delivery is in order, so what each saw is 1..=n with no hole.
    let contiguous = |seqs: Vec<u64>| -> u64 {
        for (i, s) in seqs.iter().enumerate() {
            assert_eq!(*s, i as u64 + 1, "a hole in what was delivered: {seqs:?}");
        }
        seqs.len() as u64
    };
    let visitor_last = contiguous(seen_visitor.keys().copied().collect());
    let agent_last = contiguous(seen_agent.keys().copied().collect());

    // Both come back through the surviving node.
    let mut visitor = survivor
        .reconnect_visitor(&visitor.id, &visitor.token, Some(visitor_last))
        .await;
    assert_eq!(visitor.welcome.conversations[0].recovered, Some(true));
    let stored_then = visitor.welcome.conversations[0].last_seq.0;
    let mut agent = survivor
        .agent_resuming("a1", &[(chat.id.to_string(), agent_last)])
        .await;
    assert_eq!(
        agent.welcome.conversations.len(),
        1,
        "the chat is still a1's"
    );
    assert_eq!(agent.welcome.conversations[0].recovered, Some(true));
    // Exactly what each missed, in order.
    for seq in visitor_last + 1..=stored_then {
        assert_eq!(visitor.expect_message().await.seq.0, seq);
    }
    for seq in agent_last + 1..=stored_then {
        assert_eq!(agent.expect_message().await.seq.0, seq);
    }
    // What was not acknowledged is sent again, with the same cids.
    for i in 0..EACH {
        let cid = format!("v{i}");
        if !acked_visitor.contains_key(&cid) {
            visitor.say_with_cid(&cid, &format!("visitor {i}")).await;
            ack_of(&mut visitor.client, &cid).await;
        }
        let cid = format!("a{i}");
        if !acked_agent.contains_key(&cid) {
            agent
                .client
                .send(json!({"type": "message", "conversation_id": chat.id, "cid": cid, "text": format!("agent {i}")}))
                .await;
            ack_of(&mut agent.client, &cid).await;
        }
    }
    // And they carry on.
    let cid = visitor.say("carrying on").await;
    let seq = ack_of(&mut visitor.client, &cid).await;
    let m = loop {
        let m = agent.expect_message().await;
        if m.text == "carrying on" {
            break m;
        }
    };
    assert_eq!(m.seq.0, seq);

    // The conversation holds every message once, in one order.
    visitor
        .client
        .send(json!({"type": "history", "limit": 500}))
        .await;
    let messages = visitor
        .client
        .expect("history", |f| match f {
            ServerFrame::History { messages, .. } => Some(messages.clone()),
            _ => None,
        })
        .await;
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, (1..=seq).collect::<Vec<_>>(), "contiguous");
    let mut texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    texts.sort_unstable();
    let mut want: Vec<String> = (0..EACH)
        .flat_map(|i| [format!("visitor {i}"), format!("agent {i}")])
        .chain(["start".to_string(), "carrying on".to_string()])
        .collect();
    want.sort_unstable();
    assert_eq!(texts, want, "every message exactly once");
    for (cid, seq) in &acked_visitor {
        let i: usize = cid[1..].parse().unwrap();
        let stored = messages.iter().find(|m| m.seq.0 == *seq).unwrap();
        assert_eq!(stored.text, format!("visitor {i}"), "acknowledged, so kept");
    }

    // Closed, the transcript in the survivor's store holds the same, each message once: what
    // the dead node had not stored yet comes from the stream.
    agent
        .client
        .send(json!({"type": "close", "conversation_id": chat.id, "resolved": true}))
        .await;
    agent.client.expect_closed().await;
    let t = survivor
        .get_json(&format!("/v1/conversations/{}", chat.id))
        .await;
    let stored: Vec<(u64, &str)> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["seq"].as_u64().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    let shown: Vec<(u64, &str)> = messages
        .iter()
        .map(|m| (m.seq.0, m.text.as_str()))
        .collect();
    assert_eq!(stored, shown, "the stored transcript");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_traffic_its_visitor_and_agent_carry_on_through_another() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    killed_mid_traffic(a, Node::kill, &b).await;
    assert_no_node_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parley_process_killed_with_sigkill_mid_traffic_loses_nothing_acknowledged() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = ProcessNode::start_with(&redis, |_| {}).await;
    let b = Node::start(&redis).await;
    killed_mid_traffic(a, ProcessNode::kill9, &b).await;
    assert_no_node_panicked();
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
    assert_no_node_panicked();
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
    not_ready(&[&a], Instant::now()).await;
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
                reason: CloseReason::VisitorLeft,
                ..
            }
        ),
        "{closed:?}"
    );
    assert_no_node_panicked();
}
