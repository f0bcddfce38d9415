//! The browser faces, embedded in the binary at compile time: the demo host page with the
//! widget (`/`), the agent console (`/agent`), the ops dashboard (`/ops`), and their assets.
//!
//! The widget's sources live in `web-widget/` and the pages in `web/`; no build step, so
//! `cargo build` is all it takes. The client core both use (`web/common/`: the connection with
//! resume, translation, the DOM helper, `/v1/info`) is served at two paths: to the pages at
//! `/static/common/`, and to the widget at `/widget/common/`, where its relative imports
//! resolve and where host pages on any origin may load it (CORS). Files are served with a
//! strong `ETag` (their SHA-256), so browsers revalidate cheaply; `/widget.js` is the one
//! stable URL host sites embed, so it is cached briefly rather than forever.
//!
//! These routes, and only these, are compressed by `Accept-Encoding` (brotli or gzip, by
//! tower-http): the files are text and a third of their size compressed. The API's JSON is
//! small, the WebSockets compress nothing (no permessage-deflate), and the ops event stream must
//! not wait in a compressor's buffer, so none of them go through it.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::RustEmbed;
use tower::util::MapResponseLayer;
use tower_http::compression::CompressionLayer;

use super::ApiError;

#[derive(RustEmbed)]
#[folder = "web-widget/"]
#[include = "*.js"]
#[include = "*.css"]
#[exclude = "node_modules/*"]
struct Widget;

/// The files the widget shares with the pages, for `/widget/common/`.
#[derive(RustEmbed)]
#[folder = "web/common/"]
#[include = "*.js"]
struct Common;

#[derive(RustEmbed)]
#[folder = "web/"]
#[include = "*.html"]
#[include = "*.js"]
#[include = "*.css"]
#[include = "*.svg"]
#[exclude = "node_modules/*"]
struct Pages;

/// Pages are ours; they load only our own scripts and talk only to this origin. `'self'` admits
/// this origin's `ws:`/`wss:` sockets too (CSP Level 3; Chromium, Firefox and Safari 15.4 on),
/// so no bare scheme, which would admit a socket to any host, is listed. The demo page's widget
/// is loaded from here and connects here; the widget on a host page is governed by that page's
/// policy, not this one.
const PAGE_CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The pages and their assets, compressed when the client accepts it.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(demo))
        .route("/agent", get(agent_console))
        .route("/ops", get(ops_dashboard))
        .route("/widget.js", get(widget_loader))
        .route("/widget/{*file}", get(widget_asset))
        .route("/static/{*file}", get(static_asset))
        // tower-http's defaults: every encoding compiled in (brotli and gzip, Cargo.toml), by
        // the client's preference; nothing under 32 bytes, no images but SVG.
        .layer(CompressionLayer::new())
        .layer(MapResponseLayer::new(weaken_etag_when_encoded))
}

/// A strong `ETag` names exact bytes, and the compressed bytes differ from the file's, so a
/// compressed response carries the weak form (as nginx does). `If-None-Match` compares weakly
/// ([`serve`]), so either form revalidates.
fn weaken_etag_when_encoded<B>(mut response: axum::http::Response<B>) -> axum::http::Response<B> {
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_ENCODING) {
        return response;
    }
    let weak = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|tag| tag.starts_with('"'))
        .and_then(|tag| HeaderValue::from_str(&format!("W/{tag}")).ok());
    if let Some(weak) = weak {
        headers.insert(header::ETAG, weak);
    }
    response
}

pub async fn demo(headers: HeaderMap) -> Response {
    page("demo.html", &headers)
}

pub async fn agent_console(headers: HeaderMap) -> Response {
    page("agent.html", &headers)
}

pub async fn ops_dashboard(headers: HeaderMap) -> Response {
    page("ops.html", &headers)
}

/// `/widget.js`: the loader host sites embed with one `<script>` tag.
pub async fn widget_loader(headers: HeaderMap) -> Response {
    widget_file("widget.js", &headers, "public, max-age=300")
}

/// `/widget/{file}`: the rest of the widget, fetched by the loader when the visitor opens it,
/// and `/widget/common/{file}`: the client core it shares with the pages.
pub async fn widget_asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    widget_file(&file, &headers, "public, max-age=300")
}

/// `/static/{file}`: scripts and styles of the pages. Not the pages themselves: they are served
/// at their own paths with their security policy, which a copy here would lack.
pub async fn static_asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file.ends_with(".html") {
        return ApiError::NotFound.into_response();
    }
    match Pages::get(&file) {
        Some(f) => serve(&file, f, &headers, "no-cache", None),
        None => ApiError::NotFound.into_response(),
    }
}

fn page(file: &str, headers: &HeaderMap) -> Response {
    match Pages::get(file) {
        Some(f) => serve(file, f, headers, "no-cache", Some(PAGE_CSP)),
        None => ApiError::NotFound.into_response(),
    }
}

fn widget_file(file: &str, headers: &HeaderMap, cache: &'static str) -> Response {
    let found = match file.strip_prefix("common/") {
        Some(shared) => Common::get(shared),
        None => Widget::get(file),
    };
    match found {
        Some(f) => {
            let mut response = serve(file, f, headers, cache, None);
            // Host pages on any origin load the widget; it holds nothing secret.
            response.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            response
        }
        None => ApiError::NotFound.into_response(),
    }
}

fn serve(
    name: &str,
    file: rust_embed::EmbeddedFile,
    request: &HeaderMap,
    cache: &'static str,
    csp: Option<&'static str>,
) -> Response {
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        // Weak comparison (RFC 9110 13.1.2): the tag of a compressed copy is `W/"..."`.
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(name))],
            file.data.into_owned(),
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(csp) = csp {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}
