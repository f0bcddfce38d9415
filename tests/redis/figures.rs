//! The load figures on a desk of two nodes: `/metrics` and the ops feed of every node show the
//! whole desk (agents, load, capacity, open conversations, the queue by category), whichever
//! node holds the agent and the chats; while Redis does not answer they keep their last values
//! and say how old they are; and the Grafana dashboard never sums a desk-wide series over nodes.

use std::collections::BTreeSet;

use parley::protocol::AgentStatus;
use serde_json::Value;

use crate::harness::{assert_no_node_panicked, Gateway, Node, RedisServer};
use crate::helpers::ADMIN_TOKEN;

/// The newest ops snapshot of a node (`GET /v1/ops/snapshots`), `Null` before the first.
async fn snapshot(node: &Gateway) -> Value {
    let kept: Value = reqwest::Client::new()
        .get(format!("http://{}/v1/ops/snapshots", node.addr))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("snapshots")
        .json()
        .await
        .expect("snapshots are JSON");
    kept.as_array()
        .and_then(|k| k.last().cloned())
        .unwrap_or(Value::Null)
}

/// What a node should show of the desk; checked in `/metrics` and in the ops feed.
#[derive(Debug, Clone, Copy)]
struct Expected {
    online: i64,
    away: i64,
    load: i64,
    capacity: i64,
    open: i64,
    security: i64,
    other: i64,
}

async fn metrics_show(node: &Gateway, e: Expected) -> bool {
    let m = |name: &'static str, label: &'static str| node.metric(name, label);
    m("parley_agents", "status=\"online\"").await == e.online as f64
        && m("parley_agents", "status=\"away\"").await == e.away as f64
        && m("parley_agent_load", "").await == e.load as f64
        && m("parley_agent_capacity", "").await == e.capacity as f64
        && m("parley_conversations_open", "").await == e.open as f64
        && m("parley_queue_depth", "category=\"security\"").await == e.security as f64
        && m("parley_queue_depth", "category=\"other\"").await == e.other as f64
        && m("parley_desk_figures_age_seconds", "").await == 0.0
}

fn snapshot_shows(s: &Value, e: Expected) -> bool {
    let utilisation = if e.capacity > 0 {
        e.load as f64 / e.capacity as f64
    } else {
        0.0
    };
    s["agents"]["online"] == e.online
        && s["agents"]["away"] == e.away
        && s["agent_load"] == e.load
        && s["agent_capacity"] == e.capacity
        && s["utilisation"]
            .as_f64()
            .is_some_and(|u| (u - utilisation).abs() < 1e-9)
        && s["conversations_open"] == e.open
        && s["queue"]["security"] == e.security
        && s["queue"]["other"] == e.other
        && s["queue_total"] == e.security + e.other
        && s["desk_figures_age_ms"] == 0
}

/// Both nodes come to show `e`, in `/metrics` and in their ops feed.
async fn both_show(nodes: [&Gateway; 2], e: Expected, when: &str) {
    for (name, node) in ["A", "B"].into_iter().zip(nodes) {
        node.eventually(
            &format!("node {name}'s /metrics to show {e:?} ({when})"),
            || metrics_show(node, e),
        )
        .await;
        node.eventually(
            &format!("node {name}'s ops feed to show {e:?} ({when})"),
            || async { snapshot_shows(&snapshot(node).await, e) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_shows_the_whole_desk_in_metrics_and_the_ops_feed() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let nodes = [&*a, &*b];

    // The agent (capacity 3) and the first chat are on node A; B holds neither.
    let mut agent = a.agent("a1").await;
    let mut first = a.visitor().await;
    first.start("account", "locked out").await;
    first.expect_assigned().await;
    agent.expect_chat().await;
    let assigned = Expected {
        online: 1,
        away: 0,
        load: 1,
        capacity: 3,
        open: 1,
        security: 0,
        other: 0,
    };
    both_show(nodes, assigned, "one chat assigned on A").await;

    // Away: the agent keeps its chat but takes no new ones, so the next chats wait, one per
    // category, started on either node. Both nodes count them in their own category.
    agent.set_status(AgentStatus::Away).await;
    let away = Expected {
        online: 0,
        away: 1,
        load: 0,
        capacity: 0,
        ..assigned
    };
    both_show(nodes, away, "the agent away").await;
    let mut waiting_b = b.visitor().await;
    waiting_b.start("security", "someone moved my funds").await;
    waiting_b.client.expect_queued().await;
    let mut waiting_a = a.visitor().await;
    waiting_a.start("other", "a question").await;
    waiting_a.client.expect_queued().await;
    both_show(
        nodes,
        Expected {
            open: 3,
            security: 1,
            other: 1,
            ..away
        },
        "two chats queued",
    )
    .await;

    // Back online: the agent takes both, the queue empties and the load follows on both nodes.
    agent.set_status(AgentStatus::Online).await;
    waiting_b.expect_assigned().await;
    waiting_a.expect_assigned().await;
    both_show(
        nodes,
        Expected {
            load: 3,
            open: 3,
            ..assigned
        },
        "the queue handed out",
    )
    .await;

    let text = reqwest::get(format!("http://{}/metrics", b.addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert_dashboard_never_sums_desk_wide_series(&text);
    assert_no_node_panicked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_does_not_answer_the_figures_keep_their_last_values_and_say_how_old() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let mut agent = a.agent("a1").await;
    let mut visitor = a.visitor().await;
    visitor.start("account", "locked out").await;
    visitor.expect_assigned().await;
    agent.expect_chat().await;
    b.eventually("node B to show the agent's chat", || async {
        b.metric("parley_agent_load", "").await == 1.0
    })
    .await;

    redis.pause();
    b.eventually("node B to mark its desk figures stale", || async {
        b.metric("parley_desk_figures_age_seconds", "").await > 0.0
    })
    .await;
    // Stale, not zeroed: the last figures read, with their age beside them.
    assert_eq!(b.metric("parley_agent_load", "").await, 1.0);
    assert_eq!(b.metric("parley_agents", "status=\"online\"").await, 1.0);
    b.eventually(
        "node B's ops feed to say its desk figures are stale",
        || async {
            let s = snapshot(&b).await;
            s["desk_figures_age_ms"].as_u64().is_some_and(|ms| ms > 0) && s["agent_load"] == 1
        },
    )
    .await;

    redis.resume();
    b.eventually("node B's desk figures to be current again", || async {
        b.metric("parley_desk_figures_age_seconds", "").await == 0.0
            && b.metric("parley_agent_load", "").await == 1.0
    })
    .await;
    assert_no_node_panicked();
}

/// Every series whose HELP says desk-wide is one of the five the desk shares, and no query of
/// the Grafana dashboard adds one up over nodes (each node reports the whole desk, so a sum
/// over N nodes shows N times the desk).
fn assert_dashboard_never_sums_desk_wide_series(metrics: &str) {
    let desk_wide: BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter(|l| l.contains(parley::metrics::DESK_WIDE))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(
        desk_wide,
        BTreeSet::from([
            "parley_agent_capacity",
            "parley_agent_load",
            "parley_agents",
            "parley_conversations_open",
            "parley_queue_depth",
        ])
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana/parley.json");
    let dashboard = std::fs::read_to_string(path).expect("docs/grafana/parley.json");
    let mut checked = 0;
    for line in dashboard.lines().filter(|l| l.contains("\"expr\"")) {
        for name in &desk_wide {
            for (at, _) in line.match_indices(name) {
                let whole_name = !line[at + name.len()..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
                if whole_name {
                    checked += 1;
                    assert!(
                        taken_with_max(&line[..at]),
                        "{name} is not combined over nodes with max: {line}"
                    );
                }
            }
        }
    }
    assert!(
        checked >= 6,
        "only {checked} dashboard queries use desk-wide series"
    );
}

/// Whether the text before a series ends with `max(` or `max by (labels) (`: the series is
/// combined over nodes by `max` before anything else (a sum over categories may follow).
fn taken_with_max(before: &str) -> bool {
    let Some(before) = before.strip_suffix('(') else {
        return false;
    };
    let before = before.trim_end();
    if before.ends_with("max") {
        return true;
    }
    before
        .strip_suffix(')')
        .and_then(|b| {
            b.rfind("max by (")
                .map(|at| !b[at + 8..].contains(['(', ')']))
        })
        .unwrap_or(false)
}

/// A chat put back at the front of the queue (its agent's grace period ran out) waits in a
/// queue tier of its own; it still counts in its category, on both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_requeued_from_an_agent_who_left_counts_in_its_category_on_both_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let short_grace = |c: &mut parley::config::Config| {
        c.routing.agent_grace = std::time::Duration::from_millis(300);
    };
    let a = Node::start_with(&redis, short_grace).await;
    let b = Node::start_with(&redis, short_grace).await;
    let mut agent = a.agent("a1").await;
    let mut visitor = b.visitor().await;
    visitor.start("account", "locked out").await;
    visitor.expect_assigned().await;
    agent.expect_chat().await;
    drop(agent);
    for node in [&*a, &*b] {
        node.eventually("the requeued chat in the account queue", || async {
            node.metric("parley_queue_depth", "category=\"account\"")
                .await
                == 1.0
                && node.metric("parley_queue_depth", "").await == 1.0
                && node.metric("parley_agents", "").await == 0.0
                && node.metric("parley_conversations_open", "").await == 1.0
        })
        .await;
        node.eventually("the ops feed to show it", || async {
            let s = snapshot(node).await;
            s["queue"]["account"] == 1 && s["queue_total"] == 1 && s["agent_load"] == 0
        })
        .await;
    }
    assert_no_node_panicked();
}
