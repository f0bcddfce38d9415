//! Transcripts: persisted write-behind, readable over REST, still there after a restart, and
//! kept (not dropped) while the store fails.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn transcripts_are_readable_over_rest_as_json_and_text() {
    let app = spawn_app().await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("transaction", "Where is my transfer?").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    agent.say(&chat, "Checking now.").await;
    agent.close(&chat, true).await;

    let t = app
        .get_json(&format!("/v1/conversations/{}", chat.id))
        .await;
    assert_eq!(t["conversation"]["state"], "closed");
    assert_eq!(t["conversation"]["resolved"], true);
    assert_eq!(t["conversation"]["category"], "transaction");
    assert_eq!(t["conversation"]["agent_id"], "a1");
    let texts: Vec<&str> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["Where is my transfer?", "Checking now."]);

    let text = app
        .get(
            &format!("/v1/conversations/{}/transcript", chat.id),
            Some(ADMIN_TOKEN),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("(visitor): Where is my transfer?"), "{text}");
    assert!(text.contains("Agent 1 (agent): Checking now."), "{text}");
    assert!(text.contains("resolved"), "{text}");

    let list = app
        .get_json("/v1/conversations?status=closed&agent=a1&category=transaction")
        .await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1);
    let none = app.get_json("/v1/conversations?category=security").await;
    assert!(none["conversations"].as_array().unwrap().is_empty());
    assert_eq!(
        app.get("/v1/conversations?status=bogus", Some(ADMIN_TOKEN))
            .await
            .status(),
        400
    );
    assert_eq!(
        app.get("/v1/conversations/not-an-id", Some(ADMIN_TOKEN))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn transcripts_and_open_conversations_survive_a_restart() {
    let app = spawn_app().await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("account", "before the restart").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    let seen = agent.say(&chat, "reply before").await;
    visitor.expect_message().await;
    let (id, token) = (visitor.id.clone(), visitor.token.clone());
    drop(visitor);
    drop(agent);

    let app = app.restart().await;
    let t = app
        .get_json(&format!("/v1/conversations/{}", chat.id))
        .await;
    assert_eq!(t["messages"].as_array().unwrap().len(), 2);

    // Both sides come back to the same open conversation and carry on.
    let mut visitor = app.reconnect_visitor(&id, &token, Some(seen)).await;
    assert_eq!(visitor.welcome.conversations.len(), 1);
    assert_eq!(visitor.welcome.conversations[0].id, chat.id);
    let mut agent = app
        .agent_hello("a1", serde_json::json!({"type": "hello", "resume": [{"conversation_id": chat.id, "last_seq": seen}]}))
        .await;
    assert_eq!(agent.welcome.conversations.len(), 1);
    let seq = visitor.say_acked("after the restart").await;
    assert_eq!(seq, seen + 1);
    assert_eq!(agent.expect_message().await.text, "after the restart");
}

/// A stalled store (another process holds SQLite's write lock): messages still reach the other
/// side, their acks wait until they are durable, the buffer refuses what does not fit with a
/// sized `retry_after_ms`, and once the store is back every ack arrives and nothing is lost.
#[tokio::test]
async fn a_stalled_store_holds_acks_until_durable_refuses_past_its_bound_and_loses_nothing() {
    let app = spawn_app_with(|c| {
        c.transcripts.store_busy_timeout = Duration::from_millis(50);
        c.transcripts.max_pending = 5;
    })
    .await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "before the outage").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    let db = app.data_dir().join("parley.db");
    let mut blocker = crate::helpers::hold_write_lock(&db).await;

    for i in 0..5 {
        let text = format!("during the outage {i}");
        visitor.say_with_cid(&format!("o{i}"), &text).await;
        // Delivery does not wait for the store.
        assert_eq!(agent.expect_message().await.text, text);
    }
    app.eventually("the failure shows in metrics", || async {
        app.metric("parley_persist_failing", "").await == 1.0
    })
    .await;
    // The buffer is full (max_pending): the next message is refused, with a wait sized from
    // the backlog and the next attempt, not stored or acknowledged.
    visitor.say_with_cid("o5", "refused").await;
    let e = visitor
        .client
        .expect_error_code(parley::protocol::ErrorCode::Unavailable)
        .await;
    assert_eq!(e.cid.as_ref().map(|c| c.as_str()), Some("o5"));
    let wait = e.retry_after_ms.expect("retry_after_ms");
    assert!((50..=10_000).contains(&wait), "retry_after_ms {wait}");
    // No ack came before that error: the acks wait for the store.
    assert_eq!(app.metric("parley_persist_pending", "").await, 5.0);

    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    for i in 0..5 {
        let (seq, duplicate) = visitor.client.expect_ack(&format!("o{i}")).await;
        assert_eq!((seq, duplicate), (i + 2, false));
    }
    // Retrying the refused one works; nothing was stored twice or lost.
    visitor.say_with_cid("o5", "after the outage").await;
    assert_eq!(visitor.client.expect_ack("o5").await, (7, false));
    let t: Value = app
        .get_json(&format!("/v1/conversations/{}", chat.id))
        .await;
    let texts: Vec<&str> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    let mut want = vec!["before the outage".to_string()];
    want.extend((0..5).map(|i| format!("during the outage {i}")));
    want.push("after the outage".into());
    assert_eq!(texts, want);
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_transcript_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("parley.db").display());
    let store = parley::transcript::SqliteStore::open(&url, Duration::from_secs(5))
        .await
        .unwrap();
    crate::transcript_store::check_transcript_store(std::sync::Arc::new(store)).await;
}
