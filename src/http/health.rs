//! `/healthz` (the process answers), `/readyz` (send traffic here), `/metrics`, and `/v1/info`
//! with the words the pages show for each category ([`CategoryLabels`]).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::AppState;
use crate::config::{CategoryConfig, Config, DEFAULT_CATEGORY_LABELS};

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
        "category_labels": &*state.category_labels,
        "demo": state.ctx.auth.demo,
    }));
    // The widget reads this from host pages on any origin; nothing in it is secret.
    (
        [(axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        body,
    )
        .into_response()
}

/// Per category name, what the widget, the console and the dashboard call it. Resolved once at
/// start-up, so that the pages carry no table of their own and a category added in the
/// configuration shows its own words everywhere.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct CategoryLabels(BTreeMap<String, CategoryLabel>);

/// `/v1/info`'s `category_labels.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryLabel {
    /// For visitors, in a language `labels` lacks.
    pub label: String,
    /// For visitors, per language tag.
    pub labels: BTreeMap<String, String>,
    /// For agents and ops, where space is short.
    pub short_label: String,
}

impl CategoryLabels {
    /// The labels of `routing.categories`, from their `[categories.<name>]` tables.
    pub fn from_config(config: &Config) -> Self {
        let labels = config
            .routing
            .categories
            .iter()
            .map(|name| (name.clone(), resolve(name, config.categories.get(name))))
            .collect();
        Self(labels)
    }

    pub fn get(&self, category: &str) -> Option<&CategoryLabel> {
        self.0.get(category)
    }
}

/// A category's words: its own when its table names any, else the built-in ones of a default
/// category (so an upgrade changes nothing), else its name, readable.
fn resolve(name: &str, config: Option<&CategoryConfig>) -> CategoryLabel {
    let (label, labels, short) = match config {
        Some(c) if own(&c.label).is_some() || !c.labels.is_empty() => {
            let label = own(&c.label)
                .or_else(|| c.labels.get("en").map(String::as_str))
                .map_or_else(|| readable(name), str::to_owned);
            (label, c.labels.clone(), None)
        }
        _ => match DEFAULT_CATEGORY_LABELS.iter().find(|d| d.0 == name) {
            Some(&(_, en, zh, short)) => (
                en.to_owned(),
                BTreeMap::from([
                    ("en".to_owned(), en.to_owned()),
                    ("zh-CN".to_owned(), zh.to_owned()),
                ]),
                Some(short.to_owned()),
            ),
            None => (readable(name), BTreeMap::new(), None),
        },
    };
    let short_label = config
        .and_then(|c| own(&c.short_label))
        .map(str::to_owned)
        .or(short)
        .unwrap_or_else(|| label.clone());
    CategoryLabel {
        label,
        labels,
        short_label,
    }
}

/// A configured label, unless it is missing or blank.
fn own(label: &Option<String>) -> Option<&str> {
    label.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `feature_question` reads "feature question".
fn readable(name: &str) -> String {
    name.replace('_', " ")
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
