//! The HTTP surface: WebSocket upgrades, the REST API, health and metrics, and the pages
//! ([`pages::routes`], the only responses compressed).
//!
//! Every handler's failure is an [`ApiError`], turned into a status and a JSON body in one place
//! ([`ApiError::into_response`]); internal error text is logged, never sent.

pub mod api;
pub mod desk;
pub mod directory;
pub mod health;
pub mod ops;
pub mod pages;
pub mod reports;
pub mod sockets;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tower_http::classify::{ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier};
use tower_http::trace::{
    DefaultMakeSpan, DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, DefaultOnResponse,
    OnFailure, TraceLayer,
};
use tracing::Span;

use crate::connection::Context;
use crate::desk::{Desk, DeskError};
use crate::transcript::{PersistHandle, TranscriptStore};

/// Shared by every handler: cheap handles only.
#[derive(Clone)]
pub struct AppState {
    pub ctx: Arc<Context>,
    pub store: Arc<dyn TranscriptStore>,
    pub persist: PersistHandle,
    pub ops: Arc<crate::ops::OpsFeed>,
    /// The knowledge base and canned replies.
    pub desk: Desk,
    /// WebSocket frame and message cap; above it a socket is closed with 1009.
    pub frame_max_bytes: usize,
    /// The desk's clock: report ranges, follow-ups due "now".
    pub clock: crate::clock::Clock,
    pub report_zone: reports::ReportZone,
    /// Teams and who is in them, for `/v1/desk` (the console's transfer list).
    pub directory: Arc<crate::desk::teams::Directory>,
    /// `desk.csat`, so the console knows whether surveys are sent.
    pub csat: crate::config::CsatMode,
    /// What the pages call each category (`/v1/info`).
    pub category_labels: Arc<health::CategoryLabels>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/visitor", get(sockets::visitor))
        .route("/v1/agent", get(sockets::agent))
        .route("/v1/conversations", get(api::list_conversations))
        .route("/v1/conversations/{id}", get(api::conversation))
        .route(
            "/v1/conversations/{id}/transcript",
            get(api::transcript_text),
        )
        .route("/v1/conversations/{id}/tags", put(api::put_tags))
        .route(
            "/v1/conversations/{id}/follow-up",
            put(api::put_follow_up).delete(api::delete_follow_up),
        )
        .route("/v1/follow-ups", get(api::follow_ups))
        .route("/v1/me", get(api::me))
        .route("/v1/desk", get(directory::directory))
        .route("/v1/reports", get(reports::summary))
        .route("/v1/reports/conversations", get(reports::conversations))
        .route(
            "/v1/reports/conversations.csv",
            get(reports::conversations_csv),
        )
        .route("/v1/kb/search", get(desk::search).options(desk::preflight))
        .route(
            "/v1/kb/articles",
            get(desk::list_articles).post(desk::create_article),
        )
        .route(
            "/v1/kb/articles/{id}",
            get(desk::article)
                .put(desk::update_article)
                .delete(desk::delete_article),
        )
        .route(
            "/v1/kb/articles/{id}/deflections",
            post(desk::deflect).options(desk::preflight),
        )
        .route("/v1/kb/deflections", get(desk::deflections))
        .route("/v1/canned", get(desk::list_canned))
        .route(
            "/v1/canned/{shortcut}",
            get(desk::canned)
                .put(desk::put_canned)
                .delete(desk::delete_canned),
        )
        .route("/v1/canned/{shortcut}/expand", post(desk::expand_canned))
        .merge(pages::routes())
        .route("/v1/info", get(health::info))
        .route("/v1/ops/snapshots", get(ops::snapshots))
        .route("/v1/ops/stream", get(ops::stream))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .layer(request_log())
        .with_state(state)
}

/// tower-http's request log, except that a 503 is not an error: Parley answers 503 on purpose
/// (`/readyz` while draining or while the store or Redis is out, an upgrade while draining, a
/// store that cannot answer), and says why where it finds out. At ERROR, every load-balancer
/// probe during a drain or an outage was an error line.
fn request_log() -> TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    DefaultMakeSpan,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    FailureLog,
> {
    TraceLayer::new_for_http().on_failure(FailureLog)
}

/// What [`request_log`] says of a failed response: DEBUG for a deliberate 503, ERROR otherwise.
#[derive(Clone, Copy)]
struct FailureLog;

impl OnFailure<ServerErrorsFailureClass> for FailureLog {
    fn on_failure(&mut self, class: ServerErrorsFailureClass, latency: Duration, _: &Span) {
        let latency_ms = latency.as_millis() as u64;
        match class {
            ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
                tracing::debug!(classification = %class, latency_ms, "response failed");
            }
            _ => tracing::error!(classification = %class, latency_ms, "response failed"),
        }
    }
}

/// Why an HTTP request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    /// The request is valid but a bound on what may exist is reached.
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

impl From<crate::transcript::StoreError> for ApiError {
    fn from(err: crate::transcript::StoreError) -> Self {
        tracing::warn!(error = %err, "store error answering an API request");
        ApiError::Unavailable("the transcript store is unavailable; retry shortly")
    }
}

impl From<DeskError> for ApiError {
    fn from(err: DeskError) -> Self {
        match err {
            DeskError::Invalid(message) => ApiError::BadRequest(message),
            DeskError::Full(message) => ApiError::Conflict(message),
            DeskError::NotFound => ApiError::NotFound,
            DeskError::Store(err) => err.into(),
            DeskError::Index(err) => ApiError::Unexpected(err.into()),
            DeskError::Unexpected(err) => ApiError::Unexpected(err),
        }
    }
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Unexpected(err) = &self {
            tracing::error!(error = ?err, "request failed");
        }
        let (status, code) = self.status_and_code();
        let body =
            Json(serde_json::json!({ "error": { "code": code, "message": self.to_string() } }));
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The bearer token of a request, from `Authorization` or, for browser WebSockets that cannot
/// set headers, the `token` query parameter.
pub fn bearer_token<'a>(headers: &'a HeaderMap, query_token: Option<&'a str>) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or(query_token)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::request_log;

    /// Log lines written while a test runs, for reading back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the request log says, at every level, of a GET answered with `status`.
    async fn logged_for(status: StatusCode) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = Router::new()
            .route("/readyz", get(move || async move { status }))
            .layer(request_log());
        let response = app
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[tokio::test]
    async fn a_deliberate_503_is_logged_at_debug_and_a_500_at_error() {
        let unavailable = logged_for(StatusCode::SERVICE_UNAVAILABLE).await;
        let failure = unavailable
            .lines()
            .find(|l| l.contains("response failed"))
            .unwrap_or_else(|| panic!("no failure line: {unavailable}"));
        assert!(failure.contains("DEBUG"), "{failure}");
        assert!(!unavailable.contains("ERROR"), "{unavailable}");

        let internal = logged_for(StatusCode::INTERNAL_SERVER_ERROR).await;
        let failure = internal
            .lines()
            .find(|l| l.contains("response failed"))
            .unwrap_or_else(|| panic!("no failure line: {internal}"));
        assert!(failure.contains("ERROR"), "{failure}");
    }
}
