//! Transcripts shared by the nodes: PostgreSQL behind `--database postgres://…`.

use std::time::Duration;

use crate::harness::{eventually, Node, PgServer, RedisServer};
use crate::helpers::ADMIN_TOKEN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_transcript_from_postgres() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let url = pg.url();
    // Both start at once on an empty database: the schema is created by the migrations at
    // start-up, once (sqlx serialises them with an advisory lock).
    let (a, b) = tokio::join!(
        Node::start_with(&redis, |c| c.database = Some(url.clone())),
        Node::start_with(&redis, |c| c.database = Some(url.clone())),
    );
    let pool = sqlx::PgPool::connect(&url)
        .await
        .expect("connect to postgres");
    let migrations: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("the migrations table");
    // Every migration shipped, each applied once and successfully.
    let mut shipped: Vec<(i64, bool)> = std::fs::read_dir("migrations/postgres")
        .expect("migrations/postgres")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some((name.split('_').next()?.parse().ok()?, true))
        })
        .collect();
    shipped.sort();
    assert_eq!(migrations, shipped);
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("account", "from the visitor, via A").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    agent.say(&chat, "from the agent, via B").await;
    visitor.expect_message().await;
    visitor.say_acked("again via A").await;
    agent.expect_message().await;
    agent.close(&chat, true).await;

    for node in [&a, &b] {
        let url = format!("http://{}/v1/conversations/{}", node.addr, chat.id);
        eventually(
            "the whole transcript in the shared store",
            Duration::from_secs(10),
            || {
                let url = url.clone();
                async move {
                    let Ok(response) = reqwest::Client::new()
                        .get(&url)
                        .bearer_auth(ADMIN_TOKEN)
                        .send()
                        .await
                    else {
                        return false;
                    };
                    if response.status() != 200 {
                        return false;
                    }
                    let body: serde_json::Value = response.json().await.unwrap();
                    let texts: Vec<&str> = body["messages"]
                        .as_array()
                        .map(|m| m.iter().filter_map(|m| m["text"].as_str()).collect())
                        .unwrap_or_default();
                    let state = body["conversation"]["state"].as_str().unwrap_or("");
                    texts
                        == [
                            "from the visitor, via A",
                            "from the agent, via B",
                            "again via A",
                        ]
                        && state == "closed"
                }
            },
        )
        .await;
    }
}

/// Each node stores what it accepted, write-behind. A node killed before its batch was written
/// would leave holes in the shared transcript; the node that closes the conversation fills
/// them from the conversation's stream, where every acknowledged message is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_is_complete_even_when_a_node_died_before_storing_its_part() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let url = pg.url();
    // Node A would write its batch only after an hour: it dies first.
    let mut a = Node::start_with(&redis, |c| {
        c.database = Some(url.clone());
        c.transcripts.flush_interval = Duration::from_secs(3600);
    })
    .await;
    let b = Node::start_with(&redis, |c| c.database = Some(url.clone())).await;
    let mut agent = b.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("other", "through A").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    let seq = visitor.say_acked("acknowledged by A").await;
    agent.expect_message().await;
    let (id, token) = (visitor.id.clone(), visitor.token.clone());
    a.kill();

    let mut visitor = b.reconnect_visitor(&id, &token, Some(seq)).await;
    visitor.say_acked("through B").await;
    agent.expect_message().await;
    agent.close(&chat, true).await;

    let url = format!("http://{}/v1/conversations/{}", b.addr, chat.id);
    eventually(
        "the whole transcript in the shared store",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move {
                let Ok(response) = reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                else {
                    return false;
                };
                if response.status() != 200 {
                    return false;
                }
                let body: serde_json::Value = response.json().await.unwrap();
                let texts: Vec<&str> = body["messages"]
                    .as_array()
                    .map(|m| m.iter().filter_map(|m| m["text"].as_str()).collect())
                    .unwrap_or_default();
                texts == ["through A", "acknowledged by A", "through B"]
                    && body["conversation"]["state"] == "closed"
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_keeps_the_transcript_store_contract() {
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let store = parley::transcript::PostgresStore::open(&pg.url(), Duration::from_secs(5))
        .await
        .expect("open the PostgreSQL store");
    crate::transcript_store::check_transcript_store(std::sync::Arc::new(store)).await;
}
