//! Satisfaction surveys on both topologies. Answers are checked against the store, so the
//! two-node desk shares one (PostgreSQL): `start_with_shared_store`.

use parley::config::CsatMode;
use parley::protocol::ErrorCode;
use serde_json::json;

use super::{expect_survey, send, Desk};
use crate::helpers::{Agent, Visitor, ADMIN_TOKEN};
use crate::topology::start_with_shared_store;

/// A chat handled and closed by a1; returns the visitor, the agent and the conversation id.
async fn closed_chat(d: &Desk) -> (Visitor, Agent, String) {
    let (mut agent, mut v, chat) = d.chat("a1", "account", "help").await;
    agent.say(&chat, "fixed").await;
    v.expect_message().await;
    agent.close(&chat, true).await;
    (v, agent, chat.id.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_sends_the_survey_and_the_first_answer_counts() {
    let Some(d) = start_with_shared_store(|_| {}).await else {
        return;
    };
    let (mut v, _agent, id) = closed_chat(&d).await;
    assert_eq!(expect_survey(&mut v.client).await, id);
    v.client
        .send(json!({"type": "csat", "conversation_id": id, "score": 6}))
        .await;
    v.client.expect_error_code(ErrorCode::InvalidScore).await;
    v.client
        .send(json!({"type": "csat", "conversation_id": id, "score": 4, "comment": " quick "}))
        .await;
    // No acknowledgement on success: the next answer is refused as answered already.
    v.client
        .send(json!({"type": "csat", "conversation_id": id, "score": 1}))
        .await;
    v.client
        .expect_error_code(ErrorCode::SurveyUnavailable)
        .await;
    // Read on the agents' node (the other node, when there is one).
    let c: serde_json::Value = d
        .agents
        .get(&format!("/v1/conversations/{id}"), Some(ADMIN_TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["csat"]["score"], 4);
    assert_eq!(c["csat"]["comment"], "quick");
    assert!(
        c["conversation"]["desk"]["csat_requested_at"].is_u64(),
        "{c}"
    );
    // Counted by the node that took the answer.
    let metrics = d.visitors.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("parley_csat_answers_total{score=\"4\"} 1"),
        "{metrics}"
    );
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_cannot_answer_someone_elses_survey() {
    let Some(d) = start_with_shared_store(|_| {}).await else {
        return;
    };
    let (_v, _agent, id) = closed_chat(&d).await;
    for node in d.nodes() {
        let mut other = node.visitor().await;
        other
            .client
            .send(json!({"type": "csat", "conversation_id": id, "score": 1}))
            .await;
        other
            .client
            .expect_error_code(ErrorCode::SurveyUnavailable)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_manual_surveys_only_the_agent_sends_one() {
    let Some(d) = start_with_shared_store(|c| c.desk.csat = CsatMode::Manual).await else {
        return;
    };
    let (mut agent, mut v, chat) = d.chat("a1", "account", "help").await;
    send(
        &mut agent,
        json!({"type": "csat_request", "conversation_id": chat.id}),
    )
    .await;
    assert_eq!(expect_survey(&mut v.client).await, chat.id.to_string());
    // Answered while still open, from the same socket.
    v.client
        .send(json!({"type": "csat", "conversation_id": chat.id, "score": 5}))
        .await;
    agent.close(&chat, true).await;
    // No second survey on close: the next frame after `closed` is the answer's refusal.
    v.client.expect_closed().await;
    v.client
        .send(json!({"type": "csat", "conversation_id": chat.id, "score": 2}))
        .await;
    v.client
        .expect_error_code(ErrorCode::SurveyUnavailable)
        .await;
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surveys_can_be_turned_off() {
    let Some(d) = start_with_shared_store(|c| c.desk.csat = CsatMode::Off).await else {
        return;
    };
    let (mut agent, _v, chat) = d.chat("a1", "account", "help").await;
    send(
        &mut agent,
        json!({"type": "csat_request", "conversation_id": chat.id}),
    )
    .await;
    agent
        .client
        .expect_error_code(ErrorCode::NotConfigured)
        .await;
}
