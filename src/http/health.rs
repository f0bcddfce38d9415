//! `/healthz` (the process answers), `/readyz` (send traffic here), `/metrics`, and `/v1/info`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when not draining, the store answers within a second and the engine can serve (with
/// Redis: its last probe, at most half a second old, could write). A failing store with room
/// left in the buffer still accepts messages, but a node that cannot persist should not be
/// given new users.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let draining = state.ctx.drain.is_cancelled();
    let store_ok = matches!(
        tokio::time::timeout(Duration::from_secs(1), state.store.ping()).await,
        Ok(Ok(()))
    );
    let engine_ok = state.ctx.engine.ready().await;
    let persist = state.persist.stats();
    let ready = !draining && store_ok && engine_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "draining": draining,
        "store": if store_ok { "ok" } else { "unavailable" },
        "engine": if engine_ok { "ok" } else { "unavailable" },
        "persist_pending": persist.pending,
        "persist_failing": persist.failing,
    });
    (status, Json(body)).into_response()
}

/// `/v1/info`: what the pages need before they connect (public; nothing secret).
pub async fn info(State(state): State<AppState>) -> Response {
    let categories: Vec<String> = state
        .ctx
        .engine
        .categories()
        .all()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let body = Json(json!({
        "name": "parley",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": crate::protocol::PROTOCOL_VERSION,
        "categories": categories,
        "demo": state.ctx.auth.demo,
    }));
    // The widget reads this from host pages on any origin; nothing in it is secret.
    (
        [(axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        body,
    )
        .into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let metrics = &state.ctx.metrics;
    metrics.observe_persister(state.persist.stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}
