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
    let a = Node::start_with(&redis, |c| c.database = Some(url.clone())).await;
    let b = Node::start_with(&redis, |c| c.database = Some(url.clone())).await;
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
