//! The Grafana dashboard in `docs/grafana/parley.json` stays true to `/metrics`: every series
//! its queries name, and every label they select or group by, exists on a live server. A
//! renamed metric or label fails here instead of leaving an empty panel.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::helpers::*;

/// Labels Prometheus adds when it scrapes; they are never in the exposition itself.
const SCRAPE_LABELS: [&str; 2] = ["instance", "job"];

/// Every query of the dashboard: panel targets (rows included) and template variables.
fn queries(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(s)) => out.push(s.clone()),
                        ("query" | "definition", Value::String(s)) if s.contains("parley_") => {
                            out.push(s.clone())
                        }
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `parley_*` series a query names, each with the label keys of its `{...}` selector.
fn series_in(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("parley_") {
        let preceded = rest[..at].chars().next_back().is_some_and(is_ident);
        let tail = &rest[at..];
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        let name = &tail[..end];
        let after = &tail[end..];
        let mut labels = Vec::new();
        if let Some(selector) = after.strip_prefix('{') {
            let close = selector.find('}').expect("selector closed");
            for matcher in selector[..close]
                .split(',')
                .filter(|m| !m.trim().is_empty())
            {
                let key = matcher.split(['=', '!']).next().unwrap().trim();
                labels.push(key.to_string());
            }
        }
        if !preceded {
            found.push((name.to_string(), labels));
        }
        rest = &tail[end..];
    }
    found
}

/// Label names in `by (...)` / `without (...)` clauses.
fn grouping_in(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for keyword in ["by (", "by(", "without (", "without("] {
        let mut rest = expr;
        while let Some(at) = rest.find(keyword) {
            let inner = &rest[at + keyword.len()..];
            let close = inner.find(')').expect("grouping closed");
            labels.extend(
                inner[..close]
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
            rest = &inner[close..];
        }
    }
    labels
}

/// Sample names of an exposition, each with every label key seen on it.
fn exposition(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let keys = samples.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let close = line.find('}').expect("labels closed");
            for pair in line[end + 1..close].split(',').filter(|p| !p.is_empty()) {
                keys.insert(pair.split('=').next().unwrap().to_string());
            }
        }
    }
    samples
}

#[test]
fn the_query_parser_finds_series_labels_and_groupings() {
    let expr = r#"histogram_quantile(0.95, sum by (le) (rate(parley_time_to_agent_seconds_bucket{category="x",instance=~"$instance"}[5m]))) / parley_agent_load"#;
    assert_eq!(
        series_in(expr),
        vec![
            (
                "parley_time_to_agent_seconds_bucket".to_string(),
                vec!["category".to_string(), "instance".to_string()]
            ),
            ("parley_agent_load".to_string(), vec![]),
        ]
    );
    assert_eq!(grouping_in(expr), vec!["le".to_string()]);
    let text = "# TYPE parley_x counter\nparley_x_total{role=\"a\",code=\"1\"} 3\nparley_y 1\n";
    let parsed = exposition(text);
    assert_eq!(parsed["parley_x_total"].len(), 2);
    assert!(parsed["parley_y"].is_empty());
}

#[tokio::test]
async fn every_series_the_grafana_dashboard_queries_is_in_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana/parley.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("docs/grafana/parley.json"))
            .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "parley-gateway");
    let queries = queries(&dashboard);
    assert!(queries.len() >= 20, "found only {} queries", queries.len());

    // Traffic, so that every family has samples (a family with none is left out of /metrics):
    // a refused upgrade, a conversation assigned after waiting, messages, an error frame, and a
    // close frame.
    let app = spawn_app().await;
    assert_eq!(
        app.upgrade_status(app.ws_url("/v1/agent?token=wrong"))
            .await,
        401
    );
    let mut visitor = app.visitor().await;
    visitor.start("security", "someone moved my funds").await;
    visitor.client.expect_queued().await;
    let mut agent = app.agent("a1").await;
    let (chat, _) = agent.expect_chat().await;
    visitor.expect_assigned().await;
    agent.say(&chat, "looking into it").await;
    visitor.expect_message().await;
    visitor.client.send_text("not json").await;
    visitor
        .client
        .expect_error_code(parley::protocol::ErrorCode::MalformedFrame)
        .await;
    let mut bad = app.connect("/v1/visitor").await;
    bad.send(json!({"type": "message", "cid": "c-1", "text": "no hello"}))
        .await;
    assert_eq!(bad.expect_close().await.0, 4000);

    let text = app.get("/metrics", None).await.text().await.unwrap();
    let samples = exposition(&text);
    let mut problems = Vec::new();
    let mut named = BTreeSet::new();
    for expr in &queries {
        let series = series_in(expr);
        let mut keys_here = BTreeSet::new();
        for (name, labels) in &series {
            named.insert(name.clone());
            let Some(keys) = samples.get(name) else {
                problems.push(format!("{name} is not in /metrics (query: {expr})"));
                continue;
            };
            keys_here.extend(keys.iter().cloned());
            for label in labels {
                if !SCRAPE_LABELS.contains(&label.as_str()) && !keys.contains(label) {
                    problems.push(format!("{name} has no label `{label}` (query: {expr})"));
                }
            }
        }
        for label in grouping_in(expr) {
            if !SCRAPE_LABELS.contains(&label.as_str()) && !keys_here.contains(&label) {
                problems.push(format!(
                    "no series in `{expr}` has the label `{label}` it groups by"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The dashboard covers what the ops view covers.
    for needed in [
        "parley_connections",
        "parley_queue_depth",
        "parley_time_to_agent_seconds_bucket",
        "parley_messages_total",
        "parley_agent_load",
        "parley_rate_limited_total",
        "parley_persist_lag_seconds",
    ] {
        assert!(
            named.contains(needed),
            "the dashboard never queries {needed}"
        );
    }
}
