//! A slow client never stalls the others: its outbound queue is bounded, and when it fills the
//! client is disconnected with close code 4009 (docs/protocol.md); it resumes on reconnect with
//! nothing lost. Real sockets, with the slow client's TCP receive buffer kept small so that its
//! backlog reaches the server's queue quickly.

use std::time::{Duration, Instant};

use futures::StreamExt;
use parley::protocol::{close_code, ServerFrame};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

use crate::harness::{assert_no_node_panicked, eventually, Gateway, Node, RedisServer};
use crate::helpers::{agent_token, Client, Visitor};

/// The server's queue per socket in these tests.
const QUEUE: usize = 16;

/// Agent `name` on a socket whose receive buffer is a few KiB; it reads its `welcome` and then
/// only when the test says so.
async fn slow_agent(node: &Gateway, name: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(node.addr).await.unwrap();
    let url = format!("ws://{}/v1/agent?token={}", node.addr, agent_token(name));
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .expect("websocket upgrade");
    let mut client = Client::new(ws);
    client.send(json!({"type": "hello"})).await;
    client.expect_welcome().await;
    client
}

/// A long message: its frames fill buffers quickly.
fn long_text(i: usize) -> String {
    format!("{i:05} {}", "x".repeat(3900))
}

/// Sends long messages from `visitor`, `batch` at a time, each batch acknowledged before the
/// next, until `done` says the server gave up on the slow reader. Returns how many were sent,
/// and the slowest batch's round trip: the fast path must not wait for the slow client.
async fn flood_until<F, Fut>(visitor: &mut Visitor, mut done: F) -> (usize, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // Fewer than the queue holds: the sender's own acks wait in its queue until its socket task
    // writes them, and on a loaded machine that task may not run before the whole batch is
    // acknowledged; a batch larger than the queue then disconnected the sender, not the slow
    // reader (seen once in CI). At most BATCH acks wait for the sender at any time.
    const BATCH: usize = QUEUE / 2;
    let mut sent = 0;
    let mut slowest = Duration::ZERO;
    while !done().await {
        assert!(sent < 4000, "the slow client was never disconnected");
        let started = Instant::now();
        let mut cids = Vec::new();
        for _ in 0..BATCH {
            cids.push(visitor.say(&long_text(sent)).await);
            sent += 1;
        }
        for cid in cids {
            visitor.client.expect_ack(&cid).await;
        }
        slowest = slowest.max(started.elapsed());
    }
    (sent, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_4009_and_stalls_nobody() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let small_queue = |c: &mut parley::config::Config| c.limits.outbound_queue = QUEUE;
    let a = Node::start_with(&redis, small_queue).await;
    let b = Node::start_with(&redis, small_queue).await;
    // The slow agent is alone when the first visitor starts: the chat is its.
    let mut slow = slow_agent(&a, "a1").await;
    let mut visitor = b.visitor().await;
    visitor.start("other", "hello").await;
    let chat = visitor.expect_assigned().await;
    assert_eq!(chat.agent.as_ref().unwrap().id, "a1");
    // Another pair on the same node as the slow agent.
    let mut fast = a.agent("a2").await;
    let mut other = a.visitor().await;
    other.start("other", "hi").await;
    other.expect_assigned().await;
    let (other_chat, _) = fast.expect_chat().await;

    let (sent, slowest) = flood_until(&mut visitor, || async {
        a.metric("parley_closes_total", "code=\"4009\"").await >= 1.0
    })
    .await;
    assert!(
        slowest < Duration::from_secs(2),
        "the sender waited {slowest:?} for a batch: stalled by the slow reader"
    );
    // The others on that node carry on meanwhile.
    fast.say(&other_chat, "not stalled").await;
    assert_eq!(other.expect_message().await.text, "not stalled");

    // The slow client reads at last: an unbroken run of the conversation, then 4009.
    let mut last_seen = 0;
    let code = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), slow.ws.next())
            .await
            .expect("the socket ends in time");
        match message {
            Some(Ok(Message::Text(t))) => {
                if let ServerFrame::Message(m) = serde_json::from_str(t.as_str()).unwrap() {
                    assert_eq!(m.seq.0, last_seen + 1, "in order, no hole");
                    last_seen = m.seq.0;
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the socket broke before its close frame: {e}"),
            None => panic!("the socket ended without a close frame"),
        }
    };
    assert_eq!(code, Some(close_code::TOO_SLOW));
    let total = sent as u64 + 1;
    assert!(
        last_seen < total,
        "it got {last_seen} of {total} before the close"
    );

    // It comes back and gets exactly what it missed: nothing is lost. A replay longer than
    // half its queue is not sent (it would close the socket again): `history` brings it.
    let mut back = a
        .agent_resuming("a1", &[(chat.id.to_string(), last_seen)])
        .await;
    let fits = (total - last_seen) as usize <= QUEUE / 2;
    assert_eq!(back.welcome.conversations[0].recovered, Some(fits));
    let mut got: Vec<u64> = Vec::new();
    if fits {
        for _ in last_seen + 1..=total {
            got.push(back.expect_message().await.seq.0);
        }
    } else {
        let mut before = total + 1;
        while before > last_seen + 1 {
            back.client
                .send(json!({"type": "history", "conversation_id": chat.id, "before_seq": before, "limit": 100}))
                .await;
            let page = back
                .client
                .expect("history", |f| match f {
                    ServerFrame::History { messages, .. } => Some(messages.clone()),
                    _ => None,
                })
                .await;
            assert!(!page.is_empty(), "a page always moves back");
            before = page[0].seq.0;
            let mut seqs: Vec<u64> = page.iter().map(|m| m.seq.0).collect();
            seqs.append(&mut got);
            got = seqs;
        }
        got.retain(|s| *s > last_seen);
    }
    assert_eq!(got, (last_seen + 1..=total).collect::<Vec<_>>());
    assert_no_node_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_again_does_not_keep_its_socket() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start_with(&redis, |c| c.limits.outbound_queue = QUEUE).await;
    let _slow = slow_agent(&a, "a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    assert_eq!(a.metric("parley_connections", "role=\"agent\"").await, 1.0);

    flood_until(&mut visitor, || async {
        a.metric("parley_closes_total", "code=\"4009\"").await >= 1.0
    })
    .await;
    // Its close frame cannot be written either: after a bounded wait the server lets go of the
    // socket, and with it the agent's presence on this node (its grace period starts).
    let closed = Instant::now();
    eventually(
        "the slow socket released",
        Duration::from_secs(10),
        || async { a.metric("parley_connections", "role=\"agent\"").await == 0.0 },
    )
    .await;
    assert!(
        closed.elapsed() <= Duration::from_secs(4),
        "released after {:?}",
        closed.elapsed()
    );
    let mut conn = redis.conn().await;
    let nodes: usize = redis::cmd("SCARD")
        .arg("parley:{u:a:a1}:nodes")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(nodes, 0, "the agent is no longer present on the node");
    assert_no_node_panicked();
}
