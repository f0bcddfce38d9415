//! The embedded pages and `/v1/info`: served from the binary, with the right headers.

use crate::helpers::*;

#[tokio::test]
async fn the_three_faces_and_the_widget_are_served_from_the_binary() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/", "text/html"),
        ("/agent", "text/html"),
        ("/ops", "text/html"),
        ("/widget.js", "text/javascript"),
    ] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let page = app.get("/agent", None).await;
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    // Any host site may load the widget.
    let widget = app.get("/widget.js", None).await;
    assert_eq!(widget.headers()["access-control-allow-origin"], "*");
    // The console's and the dashboard's modules live in subfolders of web/.
    for (path, content_type) in [
        ("/static/console/app.js", "text/javascript"),
        ("/static/ops/app.js", "text/javascript"),
        ("/static/common/dom.js", "text/javascript"),
        ("/static/console.css", "text/css"),
        ("/static/parley.svg", "image/svg+xml"),
    ] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
    }
    assert_eq!(app.get("/static/nope.js", None).await.status(), 404);
    // The pages only at their own paths, with their policy.
    assert_eq!(app.get("/static/agent.html", None).await.status(), 404);
    assert_eq!(app.get("/widget/nope.js", None).await.status(), 404);
}

#[tokio::test]
async fn an_unchanged_asset_is_revalidated_with_304() {
    let app = spawn_app().await;
    let first = app.get("/widget.js", None).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let again = reqwest::Client::new()
        .get(app.http_url("/widget.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    let other = reqwest::Client::new()
        .get(app.http_url("/widget.js"))
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

/// The pages and their assets are compressed by `Accept-Encoding` and decode to the very bytes
/// served uncompressed; the API and the ops event stream are not compressed.
#[tokio::test]
async fn pages_and_assets_are_compressed_by_accept_encoding() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let fetch = |path: &str, encoding: &str| {
        client
            .get(app.http_url(path))
            .header("accept-encoding", encoding)
            .send()
    };
    for path in [
        "/widget.js",
        "/widget/chat.js",
        "/agent",
        "/static/console/app.js",
    ] {
        let plain = fetch(path, "identity").await.unwrap();
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
        let plain = plain.bytes().await.unwrap();

        let gzip = fetch(path, "gzip").await.unwrap();
        assert_eq!(gzip.status(), 200, "{path}");
        assert_eq!(gzip.headers()["content-encoding"], "gzip", "{path}");
        assert!(gzip.headers()["etag"].to_str().unwrap().starts_with("W/\""));
        let packed = gzip.bytes().await.unwrap();
        assert!(packed.len() < plain.len(), "{path}");
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&packed[..]),
            &mut unpacked,
        )
        .unwrap();
        assert_eq!(unpacked, plain, "{path}");

        let br = fetch(path, "gzip, br").await.unwrap();
        assert_eq!(br.headers()["content-encoding"], "br", "{path}");
        let packed = br.bytes().await.unwrap();
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(
            &mut brotli::Decompressor::new(&packed[..], 4096),
            &mut unpacked,
        )
        .unwrap();
        assert_eq!(unpacked, plain, "{path}");
    }
    // The compressed copy's (weak) tag revalidates too.
    let tag = fetch("/widget.js", "gzip").await.unwrap().headers()["etag"].clone();
    let again = client
        .get(app.http_url("/widget.js"))
        .header("accept-encoding", "gzip")
        .header("if-none-match", tag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let info = fetch("/v1/info", "gzip, br").await.unwrap();
    assert!(info.headers().get("content-encoding").is_none());
    let stream = client
        .get(app.http_url("/v1/ops/stream"))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers().get("content-encoding").is_none());
}

/// The pages talk only to their own origin: `'self'` covers same-origin `ws:`/`wss:` (CSP
/// Level 3), so the policy names no scheme that would admit a socket to any host.
#[tokio::test]
async fn the_pages_connect_only_to_their_own_origin() {
    let app = spawn_app().await;
    for path in ["/", "/agent", "/ops"] {
        let page = app.get(path, None).await;
        let csp = page.headers()["content-security-policy"].to_str().unwrap();
        let connect = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("connect-src"))
            .unwrap_or_else(|| panic!("{path}: no connect-src in {csp}"));
        assert_eq!(connect, "connect-src 'self'", "{path}");
        assert!(
            !csp.contains("ws:") && !csp.contains("wss:"),
            "{path}: {csp}"
        );
    }
}

#[tokio::test]
async fn info_lists_the_categories_in_priority_order() {
    let app = spawn_app().await;
    let info = app.get("/v1/info", None).await;
    assert_eq!(info.status(), 200);
    assert_eq!(info.headers()["access-control-allow-origin"], "*");
    let info: serde_json::Value = info.json().await.unwrap();
    assert_eq!(info["protocol"], 1);
    assert_eq!(
        info["categories"],
        serde_json::json!([
            "security",
            "account",
            "transaction",
            "feature_question",
            "other"
        ])
    );
    assert_eq!(info["demo"], false, "the tests configure agents");
}

#[tokio::test]
async fn info_gives_each_category_its_configured_or_built_in_labels() {
    let app = spawn_app_with(|c| {
        c.routing.categories.push("billing_dispute".into());
        c.categories.insert(
            "billing_dispute".into(),
            parley::config::CategoryConfig {
                label: Some("Billing disputes".into()),
                labels: [("de".to_string(), "Rechnungsstreit".to_string())].into(),
                ..Default::default()
            },
        );
        // A default category that only shortens its console name keeps its visitor labels.
        c.categories.insert(
            "account".into(),
            parley::config::CategoryConfig {
                short_label: Some("Acct".into()),
                ..Default::default()
            },
        );
    })
    .await;
    let info: serde_json::Value = app.get("/v1/info", None).await.json().await.unwrap();
    assert_eq!(info["categories"][5], "billing_dispute", "appended last");
    let labels = &info["category_labels"];
    assert_eq!(
        labels["billing_dispute"],
        serde_json::json!({
            "label": "Billing disputes",
            "labels": {"de": "Rechnungsstreit"},
            "short_label": "Billing disputes",
        })
    );
    assert_eq!(
        labels["account"],
        serde_json::json!({
            "label": "My account",
            "labels": {"en": "My account", "zh-CN": "账户问题"},
            "short_label": "Acct",
        })
    );
    // Untouched defaults keep the words the pages always showed.
    assert_eq!(labels["transaction"]["label"], "Transactions and payments");
    assert_eq!(labels["transaction"]["labels"]["zh-CN"], "交易与转账");
    assert_eq!(labels["feature_question"]["short_label"], "How-to");
    let names: Vec<&String> = labels.as_object().unwrap().keys().collect();
    assert_eq!(names.len(), 6, "one entry per category: {names:?}");
}
