//! Transcripts: persisted write-behind, readable over REST, still there after a restart, and
//! kept (not dropped) while the store fails.

use std::time::Duration;

use serde_json::Value;
use sqlx::Connection;

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

#[tokio::test]
async fn a_failing_store_keeps_messages_and_catches_up() {
    let app =
        spawn_app_with(|c| c.transcripts.store_busy_timeout = Duration::from_millis(50)).await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "before the outage").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    // A real fault: another process holds SQLite's write lock.
    let db = app.data_dir().join("parley.db");
    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut blocker)
        .await
        .unwrap();

    for i in 0..5 {
        visitor.say_acked(&format!("during the outage {i}")).await;
        agent.expect_message().await;
    }
    app.eventually("the failure shows in metrics", || async {
        app.metric("parley_persist_failing", "").await == 1.0
    })
    .await;
    assert!(app.metric("parley_persist_pending", "").await >= 5.0);

    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    app.eventually("the backlog is written", || async {
        app.metric("parley_persist_pending", "").await == 0.0
    })
    .await;
    let t: Value = app
        .get_json(&format!("/v1/conversations/{}", chat.id))
        .await;
    let seqs: Vec<u64> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_full_transcript_buffer_refuses_new_messages_with_unavailable() {
    let app = spawn_app_with(|c| {
        c.transcripts.store_busy_timeout = Duration::from_millis(50);
        c.transcripts.batch_size = 1;
        c.transcripts.max_pending = 2;
    })
    .await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    app.eventually("the first message is stored", || async {
        app.metric("parley_persist_pending", "").await == 0.0
    })
    .await;
    let db = app.data_dir().join("parley.db");
    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut blocker)
        .await
        .unwrap();

    visitor.say_acked("one").await;
    visitor.say_acked("two").await;
    visitor.say_with_cid("three", "three").await;
    let e = visitor
        .client
        .expect_error_code(parley::protocol::ErrorCode::Unavailable)
        .await;
    assert_eq!(e.cid.as_ref().map(|c| c.as_str()), Some("three"));
    assert!(e.retry_after_ms.is_some());

    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    app.eventually("the backlog is written", || async {
        app.metric("parley_persist_pending", "").await == 0.0
    })
    .await;
    // Retrying after the outage works, and nothing was stored twice or lost.
    visitor.say_with_cid("three", "three").await;
    let (seq, duplicate) = visitor.client.expect_ack("three").await;
    assert_eq!((seq, duplicate), (4, false));
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
