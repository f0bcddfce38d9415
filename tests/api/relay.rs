//! Pairing and relay: a visitor meets an agent and they talk both ways.

use std::time::Duration;

use parley::protocol::{Role, ServerFrame};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn typing_and_read_marks_reach_the_other_side_only() {
    let app = spawn_app().await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

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

    agent
        .client
        .send(json!({"type": "read", "conversation_id": chat.id, "seq": 1}))
        .await;
    let frame = visitor.client.next_frame().await;
    assert!(
        matches!(frame, ServerFrame::Read { role: Role::Agent, seq, .. } if seq.0 == 1),
        "{frame:?}"
    );
}

#[tokio::test]
async fn a_visitor_with_two_tabs_sees_its_own_messages_in_both() {
    let app = spawn_app().await;
    let mut agent = app.agent("a1").await;
    let mut tab1 = app.visitor().await;
    tab1.start("other", "hello").await;
    tab1.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    let mut tab2 = app.reconnect_visitor(&tab1.id, &tab1.token, Some(1)).await;
    assert_eq!(tab2.welcome.conversations.len(), 1);

    let seq = tab1.say_acked("from tab one").await;
    let m = tab2.expect_message().await;
    assert_eq!((m.seq.0, m.text.as_str()), (seq, "from tab one"));
    let m = agent.expect_message().await;
    assert_eq!(m.seq.0, seq);
    agent.say(&chat, "reply").await;
    assert_eq!(tab1.expect_message().await.text, "reply");
    assert_eq!(tab2.expect_message().await.text, "reply");
}

#[tokio::test]
async fn closing_tells_both_sides_and_frees_the_slot() {
    let app = spawn_app_with(|c| c.routing.default_capacity = 1).await;
    let mut agent = app.agent("a1").await;
    let mut v1 = app.visitor().await;
    v1.start("other", "first").await;
    v1.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    let mut v2 = app.visitor().await;
    v2.start("other", "second").await;
    let (position, _, _) = v2.client.expect_queued().await;
    assert_eq!(position, 1);

    agent.close(&chat, true).await;
    let closed = v1.client.expect_closed().await;
    assert!(
        matches!(
            closed,
            ServerFrame::Closed {
                resolved: Some(true),
                ..
            }
        ),
        "{closed:?}"
    );
    // The freed slot goes to the queue head at once.
    let assigned = v2.expect_assigned().await;
    assert_eq!(assigned.agent.unwrap().id, "a1");
    let (next, history) = agent.expect_chat().await;
    assert_eq!(next.id, assigned.id);
    assert_eq!(history[0].text, "second");
}

/// Acks wait for the store, and closing stores first: an agent that sends its last message and
/// closes at once reads that message's ack before `closed` (a client that reads `closed` has
/// every ack it will get).
#[tokio::test]
async fn the_ack_of_a_last_message_comes_before_closed() {
    // A long group-commit wait: only the close's own write can bring the ack first.
    let app = spawn_app_with(|c| c.transcripts.group_commit_wait = Duration::from_secs(1)).await;
    let (mut agent, _visitor, chat) = app.chat("a1", "other", "hello").await;
    agent
        .client
        .send(json!({"type": "message", "conversation_id": chat.id, "cid": "last", "text": "bye"}))
        .await;
    agent
        .client
        .send(json!({"type": "close", "conversation_id": chat.id, "resolved": true}))
        .await;
    loop {
        match agent.client.next_frame_skipping_state().await {
            ServerFrame::Ack { cid, .. } if cid.as_str() == "last" => break,
            ServerFrame::Closed { .. } => panic!("closed came before the ack of the last message"),
            _ => continue,
        }
    }
    agent.client.expect_closed().await;
}
