//! The ops feed behind the dashboard: admin only, one snapshot a second, figures that move.

use serde_json::Value;

use crate::helpers::*;

/// Reads server-sent events from a streaming response until `want` events have arrived.
async fn read_events(response: &mut reqwest::Response, want: usize) -> Vec<(String, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < want {
        let chunk = tokio::time::timeout(FRAME_TIMEOUT, response.chunk())
            .await
            .expect("an event in time")
            .expect("stream readable")
            .expect("stream still open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("message")
                .to_string();
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            if !data.is_empty() {
                events.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test]
async fn the_ops_feed_needs_an_admin_token() {
    let app = spawn_app().await;
    for path in ["/v1/ops/snapshots", "/v1/ops/stream"] {
        assert_eq!(app.get(path, None).await.status(), 401, "{path}");
        assert_eq!(
            app.get(path, Some("not-a-token")).await.status(),
            401,
            "{path}: an unknown token is unauthorized, not forbidden"
        );
        assert_eq!(
            app.get(path, Some(&agent_token("a1"))).await.status(),
            403,
            "{path}: agents do not see the ops view"
        );
    }
    assert_eq!(
        app.get("/v1/ops/snapshots", Some(ADMIN_TOKEN))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn the_stream_sends_history_then_a_snapshot_a_second_that_follows_traffic() {
    let app = spawn_app().await;
    let mut response = app.get("/v1/ops/stream", Some(ADMIN_TOKEN)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let first = read_events(&mut response, 1).await;
    assert_eq!(first[0].0, "history");
    assert!(first[0].1.is_array());

    // Traffic: a queued visitor, then an agent who takes the chat and answers.
    let mut visitor = app.visitor().await;
    visitor.start("security", "someone moved my funds").await;
    visitor.client.expect_queued().await;
    let mut snapshot;
    loop {
        let (name, s) = read_events(&mut response, 1).await.remove(0);
        assert_eq!(name, "snapshot");
        snapshot = s;
        if snapshot["queue"]["security"] == 1 {
            break;
        }
    }
    assert_eq!(snapshot["visitors"], 1);
    assert_eq!(snapshot["queue_total"], 1);

    let mut agent = app.agent("a1").await;
    let (chat, _) = agent.expect_chat().await;
    visitor.expect_assigned().await;
    agent.say(&chat, "looking into it").await;
    visitor.expect_message().await;
    visitor.say_acked("thanks").await;
    loop {
        let (_, s) = read_events(&mut response, 1).await.remove(0);
        snapshot = s;
        if snapshot["queue_total"] == 0
            && snapshot["time_to_agent"]["samples"] == 1
            && snapshot["messages_total"] == 3
        {
            break;
        }
    }
    assert_eq!(snapshot["agents"]["online"], 1);
    assert_eq!(snapshot["agent_load"], 1);
    assert!(snapshot["utilisation"].as_f64().unwrap() > 0.0);
    assert!(snapshot["time_to_agent"]["p50_ms"].as_u64().is_some());

    // The kept snapshots include what the stream showed.
    let kept = app.get_json("/v1/ops/snapshots").await;
    let kept = kept.as_array().unwrap();
    assert!(!kept.is_empty());
    assert!(kept.iter().any(|s| s["queue_total"] == 1));
}

#[tokio::test]
async fn the_stream_carries_the_desks_service_levels_and_surveys() {
    let app = spawn_app().await;
    let mut response = app.get("/v1/ops/stream", Some(ADMIN_TOKEN)).await;
    read_events(&mut response, 1).await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("account", "locked out").await;
    let chat = visitor.expect_assigned().await;
    agent.expect_chat().await;
    agent.say(&chat, "unlocking").await;
    visitor.expect_message().await;
    agent.close(&chat, true).await;
    // The survey follows the close; answer it.
    loop {
        match visitor.client.next_frame().await {
            parley::protocol::ServerFrame::CsatRequest { .. } => break,
            _ => continue,
        }
    }
    visitor
        .client
        .send(serde_json::json!({"type": "csat", "conversation_id": chat.id, "score": 4}))
        .await;
    let desk = loop {
        let (_, s) = read_events(&mut response, 1).await.remove(0);
        if s["desk"]["csat_answers"] == 1 {
            break s["desk"].clone();
        }
    };
    assert_eq!(desk["csat_average"], 4.0);
    assert_eq!(desk["sla"]["account"]["met"], 1);
    assert_eq!(desk["sla"]["account"]["missed"], 0);
    assert_eq!(desk["sla_attainment"], 1.0);
    assert_eq!(desk["transfers"], 0);
}
