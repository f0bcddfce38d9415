//! Chat scenarios on both topologies: pairing and relay both ways, resume with exactly the
//! missed messages, idempotent resends. Visitors are on
//! `desk.visitors`, agents on `desk.agents`; a visitor that comes back does so on the agents'
//! node, the other node on two.

use parley::protocol::{ConversationState, Role, ServerFrame};
use serde_json::json;

use crate::topology::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_and_an_agent_chat_both_ways() {
    let Some(d) = start(|_| {}).await else { return };
    let mut agent = d.agent("a1").await;
    let mut visitor = d.visitor().await;

    assert_eq!(visitor.start("account", "I cannot log in").await, 1);
    let assigned = visitor.expect_assigned().await;
    assert_eq!(assigned.state, ConversationState::Assigned);
    assert_eq!(assigned.agent.as_ref().unwrap().id, "a1");
    assert_eq!(
        assigned.agent.as_ref().unwrap().name.as_deref(),
        Some("Agent 1")
    );

    let (chat, history) = agent.expect_chat().await;
    assert_eq!(chat.id, assigned.id);
    assert_eq!(chat.category, "account");
    assert_eq!(chat.recovered, Some(true));
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].text, "I cannot log in");
    assert_eq!(history[0].sender.role, Role::Visitor);

    assert_eq!(agent.say(&chat, "Let me help. What do you see?").await, 2);
    let m = visitor.expect_message().await;
    assert_eq!(
        (m.seq.0, m.text.as_str(), m.sender.role),
        (2, "Let me help. What do you see?", Role::Agent)
    );
    assert_eq!(m.sender.name.as_deref(), Some("Agent 1"));

    assert_eq!(visitor.say_acked("An error <b>500</b>").await, 3);
    let m = agent.expect_message().await;
    // Text is data: relayed byte for byte, never interpreted.
    assert_eq!((m.seq.0, m.text.as_str()), (3, "An error <b>500</b>"));

    // Typing reaches the other side.
    visitor
        .client
        .send(json!({"type": "typing", "active": true}))
        .await;
    let frame = agent.client.next_frame_skipping_state().await;
    assert!(
        matches!(
            frame,
            ServerFrame::Typing {
                role: Role::Visitor,
                active: true,
                ..
            }
        ),
        "{frame:?}"
    );

    // Many messages in a row arrive in order, once each.
    let mut cids = Vec::new();
    for i in 0..50 {
        cids.push(visitor.say(&format!("burst {i}")).await);
    }
    for i in 0..50u64 {
        let m = agent.expect_message().await;
        assert_eq!(m.seq.0, 4 + i);
        assert_eq!(m.text, format!("burst {i}"));
    }
    for (i, cid) in cids.iter().enumerate() {
        assert_eq!(visitor.client.expect_ack(cid).await, (4 + i as u64, false));
    }

    agent.close(&chat, true).await;
    let closed = visitor.client.expect_closed().await;
    assert!(matches!(
        closed,
        ServerFrame::Closed {
            by: Role::Agent,
            ..
        }
    ));
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_resumes_with_exactly_the_missed_messages_and_a_resent_cid_is_stored_once() {
    let Some(d) = start(|_| {}).await else { return };
    let mut agent = d.agent("a1").await;
    let mut visitor = d.visitor().await;
    visitor.start("account", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    agent.say(&chat, "first reply").await;
    let seen = visitor.expect_message().await.seq.0;
    assert_eq!(seen, 2);

    // The visitor's connection drops; the agent keeps writing.
    let (id, token) = (visitor.id.clone(), visitor.token.clone());
    drop(visitor);
    for text in ["missed 1", "missed 2", "missed 3"] {
        agent.say(&chat, text).await;
    }

    // Back (on the other node, when there is one) with what it had.
    let mut visitor = d.agents.reconnect_visitor(&id, &token, Some(seen)).await;
    let conversation = &visitor.welcome.conversations[0];
    assert_eq!(conversation.id, chat.id);
    assert_eq!(conversation.recovered, Some(true));
    assert_eq!(conversation.last_seq.0, 5);
    for (seq, text) in [(3, "missed 1"), (4, "missed 2"), (5, "missed 3")] {
        let m = visitor.expect_message().await;
        assert_eq!((m.seq.0, m.text.as_str()), (seq, text));
    }
    // Nothing more was replayed: the next frame is the next live message.
    agent.say(&chat, "live").await;
    let m = visitor.expect_message().await;
    assert_eq!((m.seq.0, m.text.as_str()), (6, "live"));

    // A `cid` first sent through one node is recognised when resent through the other.
    visitor.say_with_cid("same-cid", "once").await;
    let (seq, duplicate) = visitor.client.expect_ack("same-cid").await;
    assert!(!duplicate);
    drop(visitor);
    let mut again = d.visitors.reconnect_visitor(&id, &token, Some(seq)).await;
    again.say_with_cid("same-cid", "once").await;
    assert_eq!(again.client.expect_ack("same-cid").await, (seq, true));
    // The agent got it once; the next message it gets is the one after.
    let m = agent.expect_message().await;
    assert_eq!((m.seq.0, m.text.as_str()), (seq, "once"));
    assert_eq!(again.say_acked("after").await, seq + 1);
    assert_eq!(agent.expect_message().await.text, "after");
    d.check().await;
}

/// A resume that missed more than half the socket's outbound queue is not replayed (it would
/// fill the queue and close the socket as too slow, 4009): `recovered: false`, and `history`
/// brings what was missed. A shorter gap is still replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_too_long_for_the_outbound_queue_is_not_replayed_and_history_brings_it() {
    // Queues of 64 frames: replays of at most 32.
    let Some(d) = start(|c| c.limits.outbound_queue = 64).await else {
        return;
    };
    let mut agent = d.agent("a1").await;
    let mut visitor = d.visitor().await;
    visitor.start("account", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    let (id, token) = (visitor.id.clone(), visitor.token.clone());
    drop(visitor);
    for i in 0..70 {
        agent.say(&chat, &format!("missed {i}")).await;
    }

    let mut visitor = d.agents.reconnect_visitor(&id, &token, Some(1)).await;
    let conversation = &visitor.welcome.conversations[0];
    assert_eq!(conversation.recovered, Some(false));
    assert_eq!(conversation.last_seq.0, 71);
    // Nothing was replayed, and the socket stays open: the next frame answers `history`.
    let (messages, complete) = history_page(
        &mut visitor.client,
        json!({"type": "history", "before_seq": 72, "limit": 100}),
    )
    .await;
    assert!(complete);
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, (1..=71).collect::<Vec<_>>());
    assert_eq!(visitor.say_acked("still here").await, 72);

    // A gap that fits is replayed as before.
    drop(visitor);
    for i in 0..5 {
        agent.say(&chat, &format!("short gap {i}")).await;
    }
    let mut visitor = d.agents.reconnect_visitor(&id, &token, Some(72)).await;
    assert_eq!(visitor.welcome.conversations[0].recovered, Some(true));
    for seq in 73..=77 {
        assert_eq!(visitor.expect_message().await.seq.0, seq);
    }
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_larger_than_one_socket_write_arrives_in_pages() {
    let Some(d) = start(|_| {}).await else { return };
    let (mut agent, mut visitor, chat) = d.chat("a1", "other", "hello").await;
    // 30 messages of the longest text allowed: about 125 KiB, more than one socket write may
    // hold (68 KiB with the default limits).
    let long = |i: usize| format!("{i:02}{}", "x".repeat(3_998));
    for i in 0..30 {
        agent.say(&chat, &long(i)).await;
    }
    for _ in 0..30 {
        visitor.expect_message().await;
    }

    // Paging back from the newest: each page is cut to what fits, says it is not complete, and
    // the next one starts before its first message.
    let mut seen: Vec<u64> = Vec::new();
    let mut before: Option<u64> = None;
    let mut pages = 0;
    loop {
        let mut ask = json!({"type": "history", "limit": 100});
        if let Some(b) = before {
            ask["before_seq"] = json!(b);
        }
        let (messages, complete) = history_page(&mut visitor.client, ask).await;
        pages += 1;
        assert!(!messages.is_empty(), "a page always moves back");
        before = Some(messages[0].seq.0);
        let mut page: Vec<u64> = messages.iter().map(|m| m.seq.0).collect();
        page.extend(seen);
        seen = page;
        if complete {
            break;
        }
        assert!(pages < 31, "paging ends");
    }
    assert!(pages > 1, "one page of 100 would not fit one write");
    assert_eq!(
        seen,
        (1..=31).collect::<Vec<u64>>(),
        "every message once, in order"
    );
    // The socket is still there.
    let seq = visitor.say_acked("still here").await;
    assert_eq!(seq, 32);
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_taking_over_a_long_chat_gets_its_end_and_pages_back_for_the_rest() {
    // A small outbound queue, so that a few messages are "long": the takeover sends the newest
    // half a queue's worth (8) and the agent pages back for the rest.
    let Some(d) = start(|c| {
        c.limits.outbound_queue = 16;
        c.rate_limits.visitor_messages_per_second = 100;
        c.rate_limits.visitor_message_burst = 100;
    })
    .await
    else {
        return;
    };
    let mut visitor = d.visitor().await;
    visitor.start("other", "m1").await;
    for i in 2..=30 {
        visitor.say_acked(&format!("m{i}")).await;
    }
    // Nobody was online; now an agent comes and takes the chat over.
    let mut agent = d.agent("a1").await;
    let (chat, history) = agent.expect_chat().await;
    assert_eq!(
        chat.recovered,
        Some(false),
        "older messages are left to history"
    );
    let seqs: Vec<u64> = history.iter().map(|m| m.seq.0).collect();
    assert_eq!(
        seqs,
        (23..=30).collect::<Vec<u64>>(),
        "the newest, in order"
    );

    // Still connected (not closed as too slow), and the rest comes by paging back.
    let ask =
        json!({"type": "history", "conversation_id": chat.id, "before_seq": 23, "limit": 100});
    let (older, complete) = history_page(&mut agent.client, ask).await;
    assert!(complete);
    let older: Vec<u64> = older.iter().map(|m| m.seq.0).collect();
    assert_eq!(older, (1..=22).collect::<Vec<u64>>());
    agent.say(&chat, "reading it all").await;
    assert_eq!(visitor.expect_assigned().await.id, chat.id);
    assert_eq!(visitor.expect_message().await.text, "reading it all");
    d.check().await;
}

/// Sends a `history` request and returns the page's messages and whether it is complete.
async fn history_page(
    client: &mut crate::helpers::Client,
    ask: serde_json::Value,
) -> (Vec<parley::protocol::MessageView>, bool) {
    client.send(ask).await;
    client
        .expect("history", |f| match f {
            ServerFrame::History {
                messages, complete, ..
            } => Some((messages.clone(), *complete)),
            _ => None,
        })
        .await
}
