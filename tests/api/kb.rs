//! The desk's content over REST: knowledge-base articles and search (English and Chinese),
//! deflections, canned replies; auth, bounds, CORS, rate limits, and a restart.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;

use crate::content_store::check_content_store;
use crate::helpers::*;

fn agent() -> String {
    agent_token("a1")
}

/// The request is built before the future, which therefore borrows nothing.
fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> impl Future<Output = reqwest::Response> + 'static {
    let mut req = reqwest::Client::new().request(method, app.http_url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    async move { req.send().await.expect("http request") }
}

async fn error_message(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("json error body");
    body["error"]["message"].as_str().unwrap().to_string()
}

/// Creates an article as the admin; returns it.
async fn create(app: &TestApp, title: &str, body: &str, lang: &str) -> Value {
    let response = call(
        app,
        Method::POST,
        "/v1/kb/articles",
        Some(ADMIN_TOKEN),
        Some(json!({"title": title, "body": body, "lang": lang})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED, "create {title}");
    response.json().await.unwrap()
}

fn search_response(
    app: &TestApp,
    params: &[(&str, &str)],
) -> impl Future<Output = reqwest::Response> + 'static {
    let req = reqwest::Client::new()
        .get(app.http_url("/v1/kb/search"))
        .query(params);
    async move { req.send().await.expect("search request") }
}

/// The hits of a public search, which must succeed.
async fn search(app: &TestApp, params: &[(&str, &str)]) -> Vec<Value> {
    let response = search_response(app, params).await;
    assert_eq!(response.status(), StatusCode::OK, "search {params:?}");
    let body: Value = response.json().await.unwrap();
    body["hits"].as_array().unwrap().clone()
}

async fn titles(app: &TestApp, q: &str) -> Vec<String> {
    search(app, &[("q", q)])
        .await
        .iter()
        .map(|h| h["title"].as_str().unwrap().to_string())
        .collect()
}

/// A knowledge base of a crypto wallet's help centre, in English and Chinese.
async fn seed(app: &TestApp) {
    create(
        app,
        "How to check the status of a transfer",
        "Open Activity and tap the transfer. Pending transfers usually confirm within 30 \
         minutes, depending on network congestion.",
        "en",
    )
    .await;
    create(
        app,
        "I forgot my password",
        "Tap \"Forgot password\" on the sign-in screen and follow the email link. Your recovery \
         phrase is not needed and stays the same.",
        "en",
    )
    .await;
    create(
        app,
        "Back up your recovery phrase",
        "Write the twelve words on paper and keep them offline. Anyone with them controls \
         your wallet.",
        "en",
    )
    .await;
    create(
        app,
        "如何查询转账状态",
        "打开钱包首页的“交易记录”，点击对应的记录即可查看状态。链上确认通常需要几分钟到半小时，\
         网络拥堵时会更久。",
        "zh",
    )
    .await;
    create(
        app,
        "忘记密码怎么办",
        "在登录页点击“忘记密码”，按照提示通过邮箱或手机验证码重置密码。助记词不会因此改变。",
        "zh",
    )
    .await;
    create(
        app,
        "如何备份助记词",
        "请把十二个助记词抄写在纸上并离线保存，任何人拿到助记词都可以控制您的钱包。",
        "zh",
    )
    .await;
}

#[tokio::test]
async fn search_follows_articles_as_they_are_created_updated_and_deleted() {
    let app = spawn_app().await;
    assert!(titles(&app, "staking").await.is_empty());

    let article = create(&app, "Staking rewards", "Rewards are paid every day.", "en").await;
    let id = article["id"].as_str().unwrap();
    assert_eq!(titles(&app, "staking").await, ["Staking rewards"]);
    let fetched: Value = call(
        &app,
        Method::GET,
        &format!("/v1/kb/articles/{id}"),
        Some(&agent()),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(fetched, article);

    let updated = call(
        &app,
        Method::PUT,
        &format!("/v1/kb/articles/{id}"),
        Some(ADMIN_TOKEN),
        Some(
            json!({"title": "Earn interest", "body": "Interest is paid weekly.", "lang": "en",
                    "tags": ["yield"], "url": "https://help.example.com/earn"}),
        ),
    )
    .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["created_at"], article["created_at"]);
    assert_eq!(updated["tags"], json!(["yield"]));
    assert!(
        titles(&app, "staking").await.is_empty(),
        "the old title is gone"
    );
    assert_eq!(titles(&app, "interest").await, ["Earn interest"]);
    // What GET returned, edited and sent back whole, is accepted (the read-only fields ignored).
    let mut round_trip = updated.clone();
    round_trip["body"] = json!("Interest is paid monthly.");
    round_trip["created_at"] = json!(1);
    let put = call(
        &app,
        Method::PUT,
        &format!("/v1/kb/articles/{id}"),
        Some(ADMIN_TOKEN),
        Some(round_trip),
    )
    .await;
    assert_eq!(put.status(), StatusCode::OK);
    let put: Value = put.json().await.unwrap();
    assert_eq!(put["created_at"], article["created_at"]);
    assert_eq!(put["body"], "Interest is paid monthly.");
    let hit = &search(&app, &[("q", "yield")]).await[0];
    assert_eq!(hit["url"], "https://help.example.com/earn");
    assert_eq!(hit["id"], id);

    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/v1/kb/articles/{id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(titles(&app, "interest").await.is_empty());
    for method in [Method::GET, Method::DELETE] {
        let token = if method == Method::GET {
            agent()
        } else {
            ADMIN_TOKEN.to_string()
        };
        let gone = call(
            &app,
            method,
            &format!("/v1/kb/articles/{id}"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    }
    let missing = call(
        &app,
        Method::PUT,
        "/v1/kb/articles/not-an-id",
        Some(ADMIN_TOKEN),
        Some(json!({"title": "t", "body": "b", "lang": "en"})),
    )
    .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn english_search_stems_and_puts_the_best_match_first() {
    let app = spawn_app().await;
    seed(&app).await;
    // "transfers pending" meets "transfer" and "Pending" through stemming.
    assert_eq!(
        titles(&app, "my transfers are pending").await[0],
        "How to check the status of a transfer"
    );
    assert_eq!(
        titles(&app, "Forgot password?").await[0],
        "I forgot my password"
    );
    let hits = titles(&app, "recovery phrase").await;
    assert_eq!(
        hits[0], "Back up your recovery phrase",
        "the title match first"
    );
    assert!(
        hits.contains(&"I forgot my password".to_string()),
        "{hits:?}"
    );
    assert!(titles(&app, "xyzzy").await.is_empty());
    assert!(
        titles(&app, "the").await.is_empty(),
        "a stop word alone finds nothing"
    );
    assert!(titles(&app, "").await.is_empty());

    let hit = &search(&app, &[("q", "congestion")]).await[0];
    let snippet = hit["snippet"].as_str().unwrap();
    assert!(snippet.contains("network congestion"), "{snippet}");
    assert_eq!(hit["lang"], "en");
    assert!(hit["score"].as_f64().unwrap() > 0.0);
    assert_eq!(
        search(&app, &[("q", "transfer"), ("limit", "1")])
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn chinese_search_finds_words_inside_unspaced_sentences() {
    let app = spawn_app().await;
    seed(&app).await;
    assert_eq!(titles(&app, "转账").await, ["如何查询转账状态"]);
    assert_eq!(titles(&app, "忘记密码").await[0], "忘记密码怎么办");
    assert_eq!(
        titles(&app, "我的密码忘了，怎么办？").await[0],
        "忘记密码怎么办"
    );
    assert_eq!(titles(&app, "助记词").await[0], "如何备份助记词");
    assert_eq!(titles(&app, "转账一直没到账").await[0], "如何查询转账状态");

    let hit = &search(&app, &[("q", "网络拥堵")]).await[0];
    assert_eq!(hit["title"], "如何查询转账状态");
    let snippet = hit["snippet"].as_str().unwrap();
    assert!(snippet.contains("网络拥堵"), "{snippet}");

    // A visitor writing Chinese about a password sees the Chinese article before the English
    // one that shares the English word.
    create(&app, "Password 安全", "设置一个强 password。", "zh").await;
    let hits = search(&app, &[("q", "password"), ("lang", "zh")]).await;
    assert_eq!(hits[0]["lang"], "zh");
    assert_eq!(hits[1]["title"], "I forgot my password");
    let hits = search(&app, &[("q", "password"), ("lang", "en")]).await;
    assert_eq!(hits[0]["title"], "I forgot my password");
}

#[tokio::test]
async fn visitor_text_is_searched_as_plain_words_never_as_query_syntax() {
    let app = spawn_app().await;
    seed(&app).await;
    for hostile in [
        "\"transfer",
        "title:transfer",
        "transfer AND (",
        "body:[a TO z]",
        "*",
        "-",
        "transfer~2",
        "+password -",
        "\\",
        "' OR 1=1; --",
        "<script>alert(1)</script>",
        "转账\"：（",
        "{{visitor.name}}",
    ] {
        let response = search_response(&app, &[("q", hostile)]).await;
        assert_eq!(response.status(), StatusCode::OK, "{hostile:?}");
        let body: Value = response.json().await.unwrap();
        assert!(body["hits"].is_array(), "{hostile:?}: {body}");
    }
    // The words in them still count.
    assert_eq!(
        titles(&app, "title:transfer").await[0],
        "How to check the status of a transfer"
    );
    assert_eq!(
        titles(&app, "\"forgot password").await[0],
        "I forgot my password"
    );
    assert_eq!(titles(&app, "转账\"：（").await[0], "如何查询转账状态");
}

#[tokio::test]
async fn public_endpoints_answer_any_origin_errors_included() {
    let app = spawn_app().await;
    let article = create(&app, "Fees", "Network fees.", "en").await;
    let id = article["id"].as_str().unwrap();
    let allow = |r: &reqwest::Response| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let ok = search_response(&app, &[("q", "fees")]).await;
    assert_eq!(allow(&ok).as_deref(), Some("*"));
    let too_long = search_response(&app, &[("q", &"x".repeat(201))]).await;
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
    assert_eq!(allow(&too_long).as_deref(), Some("*"));
    let deflected = call(
        &app,
        Method::POST,
        &format!("/v1/kb/articles/{id}/deflections"),
        None,
        None,
    )
    .await;
    assert_eq!(deflected.status(), StatusCode::NO_CONTENT);
    assert_eq!(allow(&deflected).as_deref(), Some("*"));
    let unknown = call(
        &app,
        Method::POST,
        &format!("/v1/kb/articles/{}/deflections", uuid::Uuid::now_v7()),
        None,
        None,
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(allow(&unknown).as_deref(), Some("*"));

    let preflight = call(
        &app,
        Method::OPTIONS,
        &format!("/v1/kb/articles/{id}/deflections"),
        None,
        None,
    )
    .await;
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(allow(&preflight).as_deref(), Some("*"));
    let allowed_headers = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed_headers.contains("content-type"));

    // The token-protected endpoints do not invite cross-origin reads.
    let private = call(&app, Method::GET, "/v1/kb/articles", Some(&agent()), None).await;
    assert_eq!(private.status(), StatusCode::OK);
    assert_eq!(allow(&private), None);
}

#[tokio::test]
async fn writing_needs_an_admin_token_and_reading_any_token() {
    let app = spawn_app().await;
    let article = create(&app, "Fees", "Network fees.", "en").await;
    let one = format!("/v1/kb/articles/{}", article["id"].as_str().unwrap());
    let draft = json!({"title": "t", "body": "b", "lang": "en"});
    let canned = json!({"title": "Refund delay", "text": "Refunds take 3 days."});
    let writes = [
        (
            Method::POST,
            "/v1/kb/articles".to_string(),
            Some(draft.clone()),
        ),
        (Method::PUT, one.clone(), Some(draft.clone())),
        (Method::DELETE, one.clone(), None),
        (
            Method::PUT,
            "/v1/canned/refund-delay".to_string(),
            Some(canned.clone()),
        ),
        (Method::DELETE, "/v1/canned/refund-delay".to_string(), None),
    ];
    for (method, path, body) in &writes {
        let none = call(&app, method.clone(), path, None, body.clone()).await;
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        let wrong = call(&app, method.clone(), path, Some("wrong"), body.clone()).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let as_agent = call(&app, method.clone(), path, Some(&agent()), body.clone()).await;
        assert_eq!(as_agent.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }
    // Nothing an agent tried was written.
    let listed: Value = call(&app, Method::GET, "/v1/kb/articles", Some(&agent()), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["articles"].as_array().unwrap().len(), 1);
    assert_eq!(listed["articles"][0]["title"], "Fees");

    let created = call(
        &app,
        Method::PUT,
        "/v1/canned/refund-delay",
        Some(ADMIN_TOKEN),
        Some(canned),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    for path in [
        "/v1/kb/articles",
        one.as_str(),
        "/v1/kb/deflections",
        "/v1/canned",
        "/v1/canned/refund-delay",
    ] {
        assert_eq!(
            call(&app, Method::GET, path, None, None).await.status(),
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            call(&app, Method::GET, path, Some(&agent()), None)
                .await
                .status(),
            StatusCode::OK,
            "{path}"
        );
        assert_eq!(
            call(&app, Method::GET, path, Some(ADMIN_TOKEN), None)
                .await
                .status(),
            StatusCode::OK,
            "{path}"
        );
    }
    let expand = "/v1/canned/refund-delay/expand";
    assert_eq!(
        call(&app, Method::POST, expand, None, Some(json!({})))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, Method::POST, expand, Some(&agent()), Some(json!({})))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn out_of_bounds_content_is_refused_with_the_reason() {
    let app = spawn_app().await;
    let post = |body: Value| {
        call(
            &app,
            Method::POST,
            "/v1/kb/articles",
            Some(ADMIN_TOKEN),
            Some(body),
        )
    };
    for (body, reason) in [
        (
            json!({"title": "t".repeat(201), "body": "b", "lang": "en"}),
            "`title` must be 1 to 200 characters, got 201",
        ),
        (json!({"title": "", "body": "b", "lang": "en"}), "`title`"),
        (
            json!({"title": "t", "body": "b".repeat(20_001), "lang": "en"}),
            "`body` must be 1 to 20000 characters, got 20001",
        ),
        (
            json!({"title": "t", "body": "b", "lang": "klingon!"}),
            "`lang`",
        ),
        (
            json!({"title": "t", "body": "b", "lang": "en", "url": "javascript:alert(1)"}),
            "`url`",
        ),
        (
            json!({"title": "t", "body": "b", "lang": "en", "tags": vec!["x"; 21]}),
            "`tags`",
        ),
        (json!({"title": "t", "body": "b"}), "lang"),
        (
            json!({"title": "t", "body": "b", "lang": "en", "html": true}),
            "html",
        ),
    ] {
        let response = post(body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{reason}");
        let message = error_message(response).await;
        assert!(
            message.contains(reason),
            "{message:?} should say {reason:?}"
        );
    }
    let at_bound =
        post(json!({"title": "t".repeat(200), "body": "b".repeat(20_000), "lang": "en"})).await;
    assert_eq!(at_bound.status(), StatusCode::CREATED);

    let too_long = search_response(&app, &[("q", &"转".repeat(201))]).await;
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
    assert!(error_message(too_long).await.contains("200 characters"));
    assert_eq!(
        search_response(&app, &[("q", &"转".repeat(200))])
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        search_response(&app, &[("q", "x"), ("limit", "many")])
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );

    let put = |shortcut: &str, text: String| {
        call(
            &app,
            Method::PUT,
            &format!("/v1/canned/{shortcut}"),
            Some(ADMIN_TOKEN),
            Some(json!({"title": "T", "text": text})),
        )
    };
    let long = put("long", "x".repeat(4_001)).await;
    assert_eq!(long.status(), StatusCode::BAD_REQUEST);
    assert!(error_message(long)
        .await
        .contains("`text` must be 1 to 4000 characters"));
    assert_eq!(
        put("long", "x".repeat(4_000)).await.status(),
        StatusCode::CREATED
    );
    let bad_shortcut = put("Refund%20Delay", "x".into()).await;
    assert_eq!(bad_shortcut.status(), StatusCode::BAD_REQUEST);
    assert!(error_message(bad_shortcut).await.contains("shortcut"));
}

/// Fills a table up to its bound behind the server's back: 10,000 requests would be slow.
async fn fill(app: &TestApp, sql: &str) {
    let db = app.data_dir().join("parley.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

#[tokio::test]
async fn the_article_and_canned_reply_bounds_give_409() {
    let app = spawn_app().await;
    create(&app, "Real one", "Kept.", "en").await;
    fill(
        &app,
        "WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
         INSERT INTO kb_articles (id, title, body, lang, tags, url, created_at, updated_at) \
         SELECT printf('00000000-0000-7000-8000-%012d', i), 'Filler', 'filler', 'en', '[]', \
         NULL, 1, 1 FROM n",
    )
    .await;
    let full = call(
        &app,
        Method::POST,
        "/v1/kb/articles",
        Some(ADMIN_TOKEN),
        Some(json!({"title": "One too many", "body": "b", "lang": "en"})),
    )
    .await;
    assert_eq!(full.status(), StatusCode::CONFLICT);
    assert!(error_message(full).await.contains("10000 articles"));
    assert!(titles(&app, "many").await.is_empty());

    fill(
        &app,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) \
         INSERT INTO canned_replies (shortcut, title, text, updated_at) \
         SELECT 'filler-' || i, 'Filler', 'filler', 1 FROM n",
    )
    .await;
    let reply = json!({"title": "T", "text": "Hello"});
    let full = call(
        &app,
        Method::PUT,
        "/v1/canned/new-one",
        Some(ADMIN_TOKEN),
        Some(reply.clone()),
    )
    .await;
    assert_eq!(full.status(), StatusCode::CONFLICT);
    assert!(error_message(full).await.contains("1000 canned replies"));
    // Replacing an existing reply at the bound still works.
    let replaced = call(
        &app,
        Method::PUT,
        "/v1/canned/filler-7",
        Some(ADMIN_TOKEN),
        Some(reply),
    )
    .await;
    assert_eq!(replaced.status(), StatusCode::OK);
}

#[tokio::test]
async fn deflections_are_recorded_and_counted_by_day_and_category() {
    let app = spawn_app().await;
    let fees = create(&app, "Fees", "Network fees.", "en").await;
    let fees_id = fees["id"].as_str().unwrap();
    let path = format!("/v1/kb/articles/{fees_id}/deflections");
    for body in [
        Some(json!({"visitor_id": "v-1", "category": "transaction"})),
        Some(json!({"category": "transaction"})),
        None,
    ] {
        let response = call(&app, Method::POST, &path, None, body).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    // Sent as text/plain by a widget avoiding the preflight.
    let plain = reqwest::Client::new()
        .post(app.http_url(&path))
        .header("content-type", "text/plain")
        .body(r#"{"category": "security"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::NO_CONTENT);

    for (body, status) in [
        (json!({"category": "crypto-tax"}), StatusCode::BAD_REQUEST),
        (
            json!({"visitor_id": "not a visitor"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"article": "x"}), StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(
            call(&app, Method::POST, &path, None, Some(body))
                .await
                .status(),
            status
        );
    }
    let unknown = format!("/v1/kb/articles/{}/deflections", uuid::Uuid::now_v7());
    assert_eq!(
        call(&app, Method::POST, &unknown, None, None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let report: Value = call(
        &app,
        Method::GET,
        "/v1/kb/deflections",
        Some(&agent()),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10]
        .to_string();
    let rows: Vec<(String, Value, u64)> = report["deflections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["article_id"], fees_id);
            (
                r["day"].as_str().unwrap().to_string(),
                r["category"].clone(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    // (A test that runs across midnight UTC would split these over two days.)
    assert_eq!(
        rows,
        [
            (today.clone(), Value::Null, 1),
            (today.clone(), json!("security"), 1),
            (today.clone(), json!("transaction"), 2),
        ]
    );
    assert_eq!(
        app.metric("parley_kb_deflections_total", "category=\"transaction\"")
            .await,
        2.0
    );
    assert_eq!(
        app.metric("parley_kb_deflections_total", "category=\"none\"")
            .await,
        1.0
    );
    assert_eq!(app.metric("parley_kb_deflections_total", "").await, 4.0);

    let earlier: Value = call(
        &app,
        Method::GET,
        "/v1/kb/deflections?from=0&to=1000",
        Some(&agent()),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(earlier["deflections"].as_array().unwrap().is_empty());
    let backwards = call(
        &app,
        Method::GET,
        "/v1/kb/deflections?from=10&to=1",
        Some(&agent()),
        None,
    )
    .await;
    assert_eq!(backwards.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn public_calls_are_counted_and_rate_limited_per_address() {
    let app = spawn_app_with(|c| c.rate_limits.kb_requests_per_minute = 3).await;
    let article = create(&app, "Fees", "Network fees.", "en").await;
    search(&app, &[("q", "fees")]).await;
    search(&app, &[("q", "nothing")]).await;
    let path = format!(
        "/v1/kb/articles/{}/deflections",
        article["id"].as_str().unwrap()
    );
    assert_eq!(
        call(&app, Method::POST, &path, None, None).await.status(),
        StatusCode::NO_CONTENT
    );

    let refused = search_response(&app, &[("q", "fees")]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["access-control-allow-origin"], "*");
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    let refused = call(&app, Method::POST, &path, None, None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);

    assert_eq!(
        app.metric("parley_rate_limited_total", "limit=\"kb_requests\"")
            .await,
        2.0
    );
    assert_eq!(app.metric("parley_kb_searches_total", "").await, 2.0);
    // Agents' and admins' endpoints have no such budget.
    for _ in 0..5 {
        let listed = call(&app, Method::GET, "/v1/kb/articles", Some(&agent()), None).await;
        assert_eq!(listed.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn canned_replies_are_created_replaced_listed_and_deleted() {
    let app = spawn_app().await;
    let put = |shortcut: &'static str, title: &'static str, text: &'static str| {
        call(
            &app,
            Method::PUT,
            &format!("/v1/canned/{shortcut}"),
            Some(ADMIN_TOKEN),
            Some(json!({"title": title, "text": text})),
        )
    };
    let created = put(
        "refund-delay",
        "Refund delay",
        "Hi {{visitor.name}}, refunds take 3 days.",
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["shortcut"], "refund-delay");
    assert_eq!(
        put("kyc", "KYC", "{{visitor.name|您}}好，请上传身份证件。")
            .await
            .status(),
        StatusCode::CREATED
    );
    let replaced = put(
        "refund-delay",
        "Refund delay",
        "Hi {{visitor.name}}, refunds take 5 days.",
    )
    .await;
    assert_eq!(replaced.status(), StatusCode::OK);
    // A reply fetched and sent back whole is accepted.
    let mut round_trip = created.clone();
    round_trip["text"] = json!("Hi {{visitor.name}}, refunds take 5 days.");
    let again = call(
        &app,
        Method::PUT,
        "/v1/canned/refund-delay",
        Some(ADMIN_TOKEN),
        Some(round_trip),
    )
    .await;
    assert_eq!(again.status(), StatusCode::OK);

    let list: Value = call(&app, Method::GET, "/v1/canned", Some(&agent()), None)
        .await
        .json()
        .await
        .unwrap();
    let replies = list["replies"].as_array().unwrap();
    let shortcuts: Vec<&str> = replies
        .iter()
        .map(|r| r["shortcut"].as_str().unwrap())
        .collect();
    assert_eq!(shortcuts, ["kyc", "refund-delay"]);
    assert_eq!(
        replies[1]["text"],
        "Hi {{visitor.name}}, refunds take 5 days."
    );
    let one: Value = call(&app, Method::GET, "/v1/canned/kyc", Some(&agent()), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["text"], "{{visitor.name|您}}好，请上传身份证件。");

    let delete = || {
        call(
            &app,
            Method::DELETE,
            "/v1/canned/kyc",
            Some(ADMIN_TOKEN),
            None,
        )
    };
    assert_eq!(delete().await.status(), StatusCode::NO_CONTENT);
    assert_eq!(delete().await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        call(&app, Method::GET, "/v1/canned/kyc", Some(&agent()), None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, Method::GET, "/v1/canned/NOPE", Some(&agent()), None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn expansion_fills_placeholders_and_falls_back_when_values_are_missing() {
    let app = spawn_app().await;
    let text =
        "Hi {{visitor.name}}, I'm {{agent.name}}. {{visitor.name|朋友}}，您好！[{{category}}]";
    let created = call(
        &app,
        Method::PUT,
        "/v1/canned/greet",
        Some(ADMIN_TOKEN),
        Some(json!({"title": "Greeting", "text": text})),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let expand = |body: Value| {
        let response = call(
            &app,
            Method::POST,
            "/v1/canned/greet/expand",
            Some(&agent()),
            Some(body),
        );
        async move {
            let response = response.await;
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["shortcut"], "greet");
            body["text"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(
        expand(json!({"visitor_name": "王芳", "agent_name": "Alice", "category": "transaction"}))
            .await,
        "Hi 王芳, I'm Alice. 王芳，您好！[transaction]"
    );
    assert_eq!(
        expand(json!({})).await,
        "Hi there, I'm the support team. 朋友，您好！[]"
    );
    // Values are text: markup and placeholder-like names come out exactly as given.
    assert_eq!(
        expand(json!({"visitor_name": "<b>{{agent.name}}</b>", "agent_name": "Alice"})).await,
        "Hi <b>{{agent.name}}</b>, I'm Alice. <b>{{agent.name}}</b>，您好！[]"
    );
    let unknown = call(
        &app,
        Method::POST,
        "/v1/canned/nope/expand",
        Some(&agent()),
        Some(json!({})),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let long = call(
        &app,
        Method::POST,
        "/v1/canned/greet/expand",
        Some(&agent()),
        Some(json!({"visitor_name": "x".repeat(201)})),
    )
    .await;
    assert_eq!(long.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_reply_with_an_unknown_placeholder_is_refused_naming_it() {
    let app = spawn_app().await;
    let response = call(
        &app,
        Method::PUT,
        "/v1/canned/typo",
        Some(ADMIN_TOKEN),
        Some(json!({"title": "Typo", "text": "Hi {{visitor.nmae}}, order {{order.id}} is late."})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let message = error_message(response).await;
    assert!(message.contains("{{visitor.nmae}}"), "{message}");
    assert!(message.contains("{{order.id}}"), "{message}");
    assert_eq!(
        call(&app, Method::GET, "/v1/canned/typo", Some(&agent()), None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn articles_replies_and_deflections_survive_a_restart() {
    let app = spawn_app().await;
    let article = create(&app, "如何查询转账状态", "打开交易记录查看状态。", "zh").await;
    let id = article["id"].as_str().unwrap().to_string();
    let reply = json!({"title": "Refund delay", "text": "Refunds take 3 days."});
    assert_eq!(
        call(
            &app,
            Method::PUT,
            "/v1/canned/refund-delay",
            Some(ADMIN_TOKEN),
            Some(reply)
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    let deflect = format!("/v1/kb/articles/{id}/deflections");
    assert_eq!(
        call(
            &app,
            Method::POST,
            &deflect,
            None,
            Some(json!({"category": "transaction"}))
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );

    let app = app.restart().await;
    // The index is rebuilt from the store at start-up.
    assert_eq!(titles(&app, "转账").await, ["如何查询转账状态"]);
    let replies: Value = call(&app, Method::GET, "/v1/canned", Some(&agent()), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(replies["replies"][0]["shortcut"], "refund-delay");
    let report: Value = call(
        &app,
        Method::GET,
        "/v1/kb/deflections",
        Some(&agent()),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(report["deflections"][0]["article_id"], id.as_str());
    assert_eq!(report["deflections"][0]["count"], 1);
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_content_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("parley.db").display());
    let store = parley::transcript::SqliteStore::open(&url, Duration::from_secs(5))
        .await
        .unwrap();
    check_content_store(Arc::new(store)).await;
}
