//! Who may connect: agent tokens before the upgrade, visitor identity, exact origins on both
//! sockets (Parley's own pages always pass).

use parley::protocol::ErrorCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::helpers::*;

#[tokio::test]
async fn an_agent_without_a_valid_token_is_refused_before_the_upgrade() {
    let app = spawn_app().await;
    assert_eq!(app.upgrade_status(app.ws_url("/v1/agent")).await, 401);
    assert_eq!(
        app.upgrade_status(app.ws_url("/v1/agent?token=wrong"))
            .await,
        401
    );
    let mut request = app.ws_url("/v1/agent").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", agent_token("a1"))).unwrap(),
    );
    assert_eq!(app.upgrade_status(request).await, 101);
    assert_eq!(
        app.metric(
            "parley_connections_refused_total",
            "reason=\"unauthorized\""
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn a_hello_token_must_match_the_connection() {
    let app = spawn_app().await;
    let mut client = app
        .connect(&format!("/v1/agent?token={}", agent_token("a1")))
        .await;
    client
        .send(json!({"type": "hello", "token": agent_token("a2")}))
        .await;
    let (code, frames) = client.expect_close().await;
    assert_eq!(code, 4001);
    assert!(
        matches!(&frames[..], [parley::protocol::ServerFrame::Error(e)] if e.code == ErrorCode::Unauthorized)
    );
}

#[tokio::test]
async fn visitor_origins_match_exactly() {
    let app = spawn_app_with(|c| c.auth.allowed_origins = vec!["https://example.com".into()]).await;
    let with_origin = |origin: &str| {
        let mut r = app.ws_url("/v1/visitor").into_client_request().unwrap();
        r.headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
        r
    };
    assert_eq!(
        app.upgrade_status(with_origin("https://example.com")).await,
        101
    );
    assert_eq!(
        app.upgrade_status(with_origin("https://example.com.evil.net"))
            .await,
        403
    );
    assert_eq!(
        app.upgrade_status(with_origin("https://evil.example.com"))
            .await,
        403
    );
    assert_eq!(
        app.upgrade_status(with_origin("http://example.com")).await,
        403
    );
}

/// The agent socket checks `Origin` as the visitor socket does: a page on another site cannot
/// open one even with a valid token, while Parley's own console (same host) and clients that
/// send no `Origin` (the load generator, scripts) can.
#[tokio::test]
async fn both_sockets_check_origin_and_parleys_own_pages_always_pass() {
    let app = spawn_app_with(|c| c.auth.allowed_origins = vec!["https://example.com".into()]).await;
    let own = format!("http://{}", app.addr);
    let agent_path = format!("/v1/agent?token={}", agent_token("a1"));
    let upgrade = |path: &str, origin: Option<&str>| {
        let mut r = app.ws_url(path).into_client_request().unwrap();
        if let Some(origin) = origin {
            r.headers_mut()
                .insert("origin", HeaderValue::from_str(origin).unwrap());
        }
        r
    };
    for path in ["/v1/visitor", agent_path.as_str()] {
        for (origin, status) in [
            (Some("https://evil.example.net"), 403),
            (Some("https://example.com.evil.net"), 403),
            (Some("https://example.com"), 101),
            (Some(own.as_str()), 101),
            (None, 101),
        ] {
            assert_eq!(
                app.upgrade_status(upgrade(path, origin)).await,
                status,
                "{path} with Origin {origin:?}"
            );
        }
    }
    assert_eq!(
        app.metric("parley_connections_refused_total", "reason=\"origin\"")
            .await,
        4.0
    );
}

#[tokio::test]
async fn a_visitor_can_only_claim_its_own_id() {
    let app = spawn_app().await;
    let mut victim = app.visitor().await;
    victim.start("account", "my private problem").await;
    // Someone who knows the id but not the token.
    let mut client = app.connect("/v1/visitor").await;
    client
        .send(json!({"type": "hello", "visitor_id": victim.id, "token": "00ff"}))
        .await;
    let (code, _) = client.expect_close().await;
    assert_eq!(code, 4001);
    let mut client = app.connect("/v1/visitor").await;
    client
        .send(json!({"type": "hello", "visitor_id": victim.id}))
        .await;
    assert_eq!(client.expect_close().await.0, 4001);
    // Another visitor's own socket never sees the victim's conversation.
    let other = app.visitor().await;
    assert!(other.welcome.conversations.is_empty());
}

#[tokio::test]
async fn signed_visitor_ids_are_verified() {
    let secret = "a-shared-secret-of-the-host-site";
    let app = spawn_app_with(|c| {
        c.auth.visitor_identity_secret = Some(secret.into());
        c.auth.require_verified_visitors = true;
    })
    .await;
    let signature = parley::auth::sign_visitor(secret, "customer-42");
    let v = app
        .visitor_hello(
            json!({"type": "hello", "visitor_id": "customer-42", "signature": signature}),
        )
        .await;
    assert!(v.welcome.visitor.as_ref().unwrap().verified);
    // A signature for another id, and an anonymous visitor, are both refused.
    let mut client = app.connect("/v1/visitor").await;
    client
        .send(json!({"type": "hello", "visitor_id": "customer-43", "signature": signature}))
        .await;
    assert_eq!(client.expect_close().await.0, 4001);
    let mut client = app.connect("/v1/visitor").await;
    client.send(json!({"type": "hello"})).await;
    assert_eq!(client.expect_close().await.0, 4001);
}

#[tokio::test]
async fn the_rest_api_needs_a_token() {
    let app = spawn_app().await;
    assert_eq!(app.get("/v1/conversations", None).await.status(), 401);
    assert_eq!(
        app.get("/v1/conversations", Some("nope")).await.status(),
        401
    );
    assert_eq!(
        app.get("/v1/conversations", Some(ADMIN_TOKEN))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get("/v1/conversations", Some(&agent_token("a1")))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn me_says_whose_token_it_is() {
    let app = spawn_app().await;
    let agent: serde_json::Value = app
        .get("/v1/me", Some(&agent_token("a2")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(agent["role"], "agent");
    assert_eq!(agent["agent"]["id"], "a2");
    assert_eq!(agent["admin"], false);
    let admin: serde_json::Value = app
        .get("/v1/me", Some(ADMIN_TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admin["role"], "admin");
    assert_eq!(app.get("/v1/me", Some("nope")).await.status(), 401);
    assert_eq!(app.get("/v1/me", None).await.status(), 401);
}
