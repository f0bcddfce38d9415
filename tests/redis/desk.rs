//! The desk's content in PostgreSQL, shared by several nodes: the store contract, bounds under
//! concurrent writers, and each node's search index catching up with the others' writes.

use std::sync::Arc;
use std::time::Duration;

use parley::desk::kb::ArticleDraft;
use parley::desk::store::{Article, ArticleId, ContentStore};
use parley::desk::KnowledgeBase;
use parley::metrics::Metrics;
use parley::transcript::PostgresStore;
use serde_json::{json, Value};

use crate::content_store::check_content_store;
use crate::harness::{eventually, Node, PgServer, RedisServer};
use crate::helpers::{agent_token, ADMIN_TOKEN};

async fn open(pg: &PgServer) -> Arc<PostgresStore> {
    Arc::new(
        PostgresStore::open(&pg.url(), Duration::from_secs(5))
            .await
            .expect("open the PostgreSQL store"),
    )
}

fn draft(title: &str, body: &str, lang: &str) -> ArticleDraft {
    ArticleDraft {
        title: title.into(),
        body: body.into(),
        lang: lang.into(),
        tags: Vec::new(),
        url: None,
    }
}

fn titles(kb: &KnowledgeBase, q: &str) -> Vec<String> {
    kb.search(q, None, 5)
        .unwrap()
        .into_iter()
        .map(|h| h.title)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_keeps_the_content_store_contract() {
    let Some(pg) = PgServer::start().await else {
        return;
    };
    check_content_store(open(&pg).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_connection_pools_never_pass_the_article_bound() {
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let stores = [open(&pg).await, open(&pg).await];
    let writes = (0..20).map(|i| {
        let store = stores[i % 2].clone();
        tokio::spawn(async move {
            let article = Article {
                id: ArticleId::new(),
                title: format!("Article {i}"),
                body: "b".into(),
                lang: "en".into(),
                tags: vec![],
                url: None,
                created_at: 1,
                updated_at: 1,
            };
            store.insert_article(&article, 5).await.unwrap()
        })
    });
    let results = futures::future::join_all(writes).await;
    let stored = results
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_some())
        .count();
    assert_eq!(stored, 5);
    let (revision, articles) = stores[0].all_articles().await.unwrap();
    assert_eq!(articles.len(), 5);
    assert_eq!(revision.0, 5, "refused inserts leave the revision alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_knowledge_base_sees_another_nodes_writes_after_a_refresh() {
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let a = KnowledgeBase::open(open(&pg).await, Arc::new(Metrics::new()))
        .await
        .unwrap();
    let b = KnowledgeBase::open(open(&pg).await, Arc::new(Metrics::new()))
        .await
        .unwrap();
    let article = a
        .create(draft("如何查询转账状态", "打开交易记录查看状态。", "zh"), 1)
        .await
        .unwrap();
    assert_eq!(
        titles(&a, "转账"),
        ["如何查询转账状态"],
        "a writer searches its own write at once"
    );
    assert!(
        titles(&b, "转账").is_empty(),
        "the other node has not refreshed yet"
    );
    assert!(b.refresh().await.unwrap());
    assert_eq!(titles(&b, "转账"), ["如何查询转账状态"]);

    b.update(
        article.id,
        draft("如何查询提币状态", "打开交易记录。", "zh"),
        2,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(a.refresh().await.unwrap());
    assert!(titles(&a, "转账").is_empty());
    assert_eq!(titles(&a, "提币"), ["如何查询提币状态"]);

    assert!(a.delete(article.id).await.unwrap());
    assert!(b.refresh().await.unwrap());
    assert!(titles(&b, "提币").is_empty());
    assert!(!b.refresh().await.unwrap(), "nothing changed since");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_searches_articles_and_serves_canned_replies_written_on_another() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let url = pg.url();
    let setup = |c: &mut parley::config::Config| {
        c.database = Some(url.clone());
        c.kb.refresh_interval = Duration::from_millis(100);
    };
    let a = Node::start_with(&redis, setup).await;
    let b = Node::start_with(&redis, setup).await;
    let http = reqwest::Client::new();

    let created = http
        .post(format!("http://{}/v1/kb/articles", a.addr))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"title": "忘记密码怎么办", "body": "在登录页点击“忘记密码”。", "lang": "zh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let search_b = format!("http://{}/v1/kb/search", b.addr);
    eventually(
        "node B's index has node A's article",
        Duration::from_secs(10),
        || {
            let request = http.get(&search_b).query(&[("q", "忘记密码")]);
            async move {
                let Ok(response) = request.send().await else {
                    return false;
                };
                let body: Value = response.json().await.unwrap_or_default();
                body["hits"][0]["title"] == "忘记密码怎么办"
            }
        },
    )
    .await;

    // Canned replies are read from the store on every call: no delay at all.
    let put = http
        .put(format!("http://{}/v1/canned/refund-delay", a.addr))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"title": "Refund delay", "text": "Hi {{visitor.name}}, refunds take 3 days."}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let expanded: Value = http
        .post(format!("http://{}/v1/canned/refund-delay/expand", b.addr))
        .bearer_auth(agent_token("a1"))
        .json(&json!({"visitor_name": "Vera"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expanded["text"], "Hi Vera, refunds take 3 days.");
}
