//! Graceful shutdown: sockets are told to reconnect (1012) and every accepted message is stored.

use crate::helpers::*;

#[tokio::test]
async fn graceful_shutdown_closes_sockets_and_flushes_everything() {
    let mut app = spawn_app_with(|c| {
        // Long interval and big batches: only the drain can have written these.
        c.transcripts.flush_interval = std::time::Duration::from_secs(3600);
        c.transcripts.batch_size = 100_000;
    })
    .await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    for i in 0..20 {
        visitor.say_acked(&format!("v{i}")).await;
        agent.expect_message().await;
        agent.say(&chat, &format!("a{i}")).await;
        visitor.expect_message().await;
    }
    let data_dir = app.data_dir();
    app.stop().await.expect("drained cleanly");
    assert_eq!(visitor.client.expect_close().await.0, 1012);
    assert_eq!(agent.client.expect_close().await.0, 1012);

    // Read the store directly: the server is gone.
    let store = parley::transcript::SqliteStore::open(
        &format!("sqlite://{}", data_dir.join("parley.db").display()),
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    use parley::transcript::TranscriptStore;
    let messages = store
        .messages(chat.id, parley::domain::Seq(0), None, 1000)
        .await
        .unwrap();
    assert_eq!(messages.len(), 41);
    assert!(messages.windows(2).all(|w| w[1].seq.0 == w[0].seq.0 + 1));
}
