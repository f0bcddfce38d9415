//! Resume: a client that reconnects with its last seen sequence gets what it missed, exactly
//! once; a resent `cid` is acknowledged, never stored twice; a gap too old to replay is said.

use parley::protocol::ServerFrame;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_resent_cid_is_acknowledged_and_stored_once() {
    let app = spawn_app().await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    visitor.say_with_cid("same-cid", "only once").await;
    let (seq, duplicate) = visitor.client.expect_ack("same-cid").await;
    assert!(!duplicate);
    // The client did not see the ack (say the socket dropped) and sends again on a new socket.
    let (id, token) = (visitor.id.clone(), visitor.token.clone());
    drop(visitor);
    let mut visitor = app.reconnect_visitor(&id, &token, Some(1)).await;
    // The replay shows the message was stored (its cid lets the client recognise it)...
    let replayed = visitor.expect_message().await;
    assert_eq!(
        (replayed.seq.0, replayed.cid.as_ref().map(|c| c.as_str())),
        (seq, Some("same-cid"))
    );
    // ...and a client that resends anyway gets the same seq back, flagged as a duplicate.
    visitor.say_with_cid("same-cid", "only once").await;
    let (again, duplicate) = visitor.client.expect_ack("same-cid").await;
    assert_eq!((again, duplicate), (seq, true));
    // The agent got it once; the next message it gets is the one after.
    assert_eq!(agent.expect_message().await.seq.0, seq);
    visitor.say_acked("next").await;
    assert_eq!(agent.expect_message().await.text, "next");

    let transcript = app
        .get_json(&format!("/v1/conversations/{}", chat.id))
        .await;
    let texts: Vec<&str> = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["hello", "only once", "next"]);
}

#[tokio::test]
async fn a_gap_older_than_the_replay_window_is_reported_and_history_fills_it() {
    let app = spawn_app_with(|c| c.transcripts.replay_window = 3).await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "m1").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    let (id, token) = (visitor.id.clone(), visitor.token.clone());
    drop(visitor);
    for i in 2..=7 {
        agent.say(&chat, &format!("m{i}")).await;
    }
    // Only 5..=7 are in memory; the visitor saw up to 1.
    let mut visitor = app.reconnect_visitor(&id, &token, Some(1)).await;
    assert_eq!(visitor.welcome.conversations[0].recovered, Some(false));
    visitor
        .client
        .send(json!({"type": "history", "limit": 100}))
        .await;
    let frame = visitor
        .client
        .expect("history", |f| {
            matches!(f, ServerFrame::History { .. }).then(|| f.clone())
        })
        .await;
    let ServerFrame::History {
        messages, complete, ..
    } = frame
    else {
        unreachable!()
    };
    assert!(complete);
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_agent_resumes_each_of_its_chats() {
    let app = spawn_app().await;
    let mut agent = app.agent("a1").await;
    let mut v1 = app.visitor().await;
    v1.start("other", "one").await;
    v1.expect_assigned().await;
    let mut v2 = app.visitor().await;
    v2.start("other", "two").await;
    v2.expect_assigned().await;
    let (c1, _) = agent.expect_chat().await;
    let (c2, _) = agent.expect_chat().await;
    drop(agent);
    v1.say_acked("to one").await;
    v2.say_acked("to two").await;
    let mut agent = app
        .agent_hello(
            "a1",
            json!({"type": "hello", "resume": [
                {"conversation_id": c1.id, "last_seq": 1},
                {"conversation_id": c2.id, "last_seq": 2}
            ]}),
        )
        .await;
    assert_eq!(agent.welcome.conversations.len(), 2);
    let m = agent.expect_message().await;
    // Only the message c1 missed; c2's client had seen everything.
    assert_eq!(
        (m.conversation_id, m.seq.0, m.text.as_str()),
        (c1.id, 2, "to one")
    );
    v2.say_acked("live").await;
    let m = agent.expect_message().await;
    assert_eq!((m.conversation_id, m.seq.0), (c2.id, 3));
}
