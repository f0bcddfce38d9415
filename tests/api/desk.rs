//! The support desk over the real protocol: teams, transfers and escalation, private notes,
//! first-response targets with controlled time, reopening, offline messages and surveys.

use std::time::Duration;

use parley::clock::Clock;
use parley::config::{BreachAction, Config, CsatMode};
use parley::protocol::{ClosedReason, QueueReason, ServerFrame, SlaState};
use serde_json::json;

use crate::contract::{self, expect_survey, expect_transferred};
use crate::helpers::*;
use crate::parity;

/// Monday 2026-11-30 10:00 UTC: the manual clock's start, within the test teams' hours.
const MONDAY_10: u64 = 1_796_032_800_000;

/// The shared desk (tests/api/contract/mod.rs) with a fast first-response check.
fn desk(c: &mut Config) {
    contract::desk(c);
    c.desk.sla_check_interval = Duration::from_millis(20);
}

/// A desk with a one-minute first-response target, on a clock the test moves.
async fn sla_app(action: BreachAction) -> TestApp {
    spawn_app_at(Clock::manual(MONDAY_10), move |c| {
        desk(c);
        c.desk.first_response_target = Duration::from_secs(60);
        c.desk.sla_warning_percent = 50;
        c.desk.sla_breach_action = action;
    })
    .await
}

async fn expect_sla(client: &mut Client) -> (SlaState, u64) {
    client
        .expect("sla", |f| match f {
            ServerFrame::Sla { state, due_at, .. } => Some((*state, *due_at)),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn a_first_response_target_warns_then_breaches_with_controlled_time() {
    let app = sla_app(BreachAction::None).await;
    let mut a1 = app.agent("a1").await;
    let mut v = app.visitor().await;
    v.start("other", "hello?").await;
    v.expect_assigned().await;
    let (chat, _) = a1.expect_chat().await;
    let sla = chat.sla.expect("agents see the clock");
    assert_eq!(sla.state, SlaState::Pending);
    assert_eq!(sla.due_at, MONDAY_10 + 60_000);
    app.clock.advance(Duration::from_secs(30));
    assert_eq!(
        expect_sla(&mut a1.client).await,
        (SlaState::Warning, MONDAY_10 + 60_000)
    );
    app.clock.advance(Duration::from_secs(30));
    // At the deadline itself a reply is still in time; a millisecond later it is not.
    app.clock.advance(Duration::from_millis(1));
    assert_eq!(expect_sla(&mut a1.client).await.0, SlaState::Breached);
    // With `none` nothing moves: a1 still holds it and can answer (late).
    a1.say(&chat, "sorry for the wait").await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("parley_sla_breaches_total{category=\"other\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("parley_sla_first_responses_total{category=\"other\",outcome=\"missed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_answer_in_time_stops_the_clock() {
    let app = sla_app(BreachAction::None).await;
    let mut a1 = app.agent("a1").await;
    let mut v = app.visitor().await;
    v.start("other", "hello?").await;
    v.expect_assigned().await;
    let (chat, _) = a1.expect_chat().await;
    app.clock.advance(Duration::from_secs(10));
    a1.say(&chat, "hi!").await;
    v.expect_message().await;
    app.clock.advance(Duration::from_secs(120));
    // Nothing more about the clock: the next frame the agent gets is the visitor's message.
    v.say_acked("thanks").await;
    assert_eq!(a1.expect_message().await.text, "thanks");
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("parley_sla_first_responses_total{category=\"other\",outcome=\"met\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_breach_can_take_the_chat_from_a_silent_agent() {
    let app = sla_app(BreachAction::Requeue).await;
    let (mut a1, mut v, chat) = app.chat("a1", "other", "anyone?").await;
    // a1 does not answer; a2 comes online only later.
    app.clock.advance(Duration::from_secs(31));
    assert_eq!(expect_sla(&mut a1.client).await.0, SlaState::Warning);
    app.clock.advance(Duration::from_secs(30));
    assert_eq!(expect_sla(&mut a1.client).await.0, SlaState::Breached);
    match expect_transferred(&mut a1.client).await {
        ServerFrame::Transferred { agent, team, .. } => {
            assert!(
                agent.is_none() && team.is_none(),
                "taken back, not handed to anyone"
            );
        }
        _ => unreachable!(),
    }
    let (_, _, reason) = v.client.expect_queued().await;
    assert_eq!(reason, QueueReason::SlaBreached);
    // It does not go back to a1 (who has room); a2 gets it.
    let mut a2 = app.agent("a2").await;
    let (got, _) = a2.expect_chat().await;
    assert_eq!(got.id, chat.id);
}

#[tokio::test]
async fn a_breach_can_escalate_to_the_escalation_team() {
    let app = sla_app(BreachAction::Escalate).await;
    let mut a1 = app.agent("a1").await;
    let mut v = app.visitor().await;
    v.start("other", "urgent").await;
    let chat = v.expect_assigned().await;
    assert_eq!(chat.agent.as_ref().unwrap().id, "a1");
    a1.expect_chat().await;
    let mut a5 = app.agent("a5").await;
    app.clock.advance(Duration::from_secs(61));
    match expect_transferred(&mut v.client).await {
        ServerFrame::Transferred { escalated, .. } => assert!(escalated),
        _ => unreachable!(),
    }
    let (got, _) = a5.expect_chat().await;
    assert_eq!(got.id, chat.id);
    assert!(got.transfers >= 1);
}

#[tokio::test]
async fn a_waiting_conversation_near_its_target_is_flagged_to_the_agents_who_could_take_it() {
    let app = spawn_app_at(Clock::manual(MONDAY_10), |c| {
        desk(c);
        c.desk.first_response_target = Duration::from_secs(60);
        c.agents[0].capacity = Some(1);
    })
    .await;
    let mut a1 = app.agent("a1").await;
    let mut first = app.visitor().await;
    first.start("other", "first").await;
    first.expect_assigned().await;
    a1.expect_chat().await;
    let mut waiting = app.visitor().await;
    waiting.start("other", "second").await;
    waiting.client.expect_queued().await;
    app.clock.advance(Duration::from_secs(46));
    // Both clocks passed 75 %: a1 hears about its own chat and about the waiting one.
    let mut states = vec![
        expect_sla(&mut a1.client).await.0,
        expect_sla(&mut a1.client).await.0,
    ];
    states.sort();
    assert_eq!(states, [SlaState::Warning, SlaState::Warning]);
}

#[tokio::test]
async fn a_visitor_returning_after_the_window_starts_a_new_conversation() {
    let app = spawn_app_at(Clock::manual(MONDAY_10), |c| {
        c.desk.reopen_window = Duration::from_secs(3600);
    })
    .await;
    let (mut agent, mut v, chat) = app.chat("a1", "account", "first time").await;
    agent.close(&chat, true).await;
    v.client.expect_closed().await;
    expect_survey(&mut v.client).await;
    app.clock.advance(Duration::from_secs(3601));
    v.start("account", "a new question").await;
    let fresh = v.expect_assigned().await;
    assert_ne!(fresh.id, chat.id);
    assert_eq!(fresh.reopened, 0);
}

#[tokio::test]
async fn outside_business_hours_the_widget_is_told_and_an_offline_message_waits() {
    // Saturday: the supervisors' weekday hours are closed.
    let app = spawn_app_at(Clock::manual(parity::SATURDAY_10), |c| {
        parity::weekday_supervisors(c);
        c.desk.sla_check_interval = Duration::from_millis(20);
        c.routing.visitor_grace = Duration::from_millis(200);
    })
    .await;
    let mut v = app.visitor().await;
    let security = v
        .welcome
        .availability
        .iter()
        .find(|a| a.category == "security")
        .unwrap()
        .clone();
    assert!(!security.open);
    assert_eq!(security.reason, Some(ClosedReason::OutsideHours));
    // Monday 09:00 in Shanghai is Monday 01:00 UTC.
    assert_eq!(
        security.opens_at,
        Some(MONDAY_10 + 7 * 24 * 3_600_000 - 9 * 3_600_000)
    );
    let other = v
        .welcome
        .availability
        .iter()
        .find(|a| a.category == "other")
        .unwrap();
    assert_eq!(other.reason, Some(ClosedReason::NobodyOnline));
    v.client
        .send(
            json!({"type": "start", "category": "security", "text": "my account was drained",
            "cid": "s1", "contact": "dana@example.com"}),
        )
        .await;
    v.client.expect_ack("s1").await;
    let (_, _, reason) = v.client.expect_queued().await;
    assert_eq!(reason, QueueReason::OutsideHours);
    // The visitor leaves for longer than its grace: an offline message is not closed.
    drop(v);
    let mut a5 = app.agent("a5").await;
    let (chat, history) = a5.expect_chat().await;
    assert!(chat.offline);
    assert_eq!(chat.contact.as_deref(), Some("dana@example.com"));
    assert_eq!(history[0].text, "my account was drained");
}

#[tokio::test]
async fn a_visitor_leaving_a_normal_queue_is_still_closed_after_its_grace() {
    let app = spawn_app_with(|c| {
        c.routing.visitor_grace = Duration::from_millis(200);
        c.agents[0].capacity = Some(1);
    })
    .await;
    let mut a1 = app.agent("a1").await;
    let mut first = app.visitor().await;
    first.start("other", "first").await;
    first.expect_assigned().await;
    a1.expect_chat().await;
    // Someone is online but busy: an ordinary wait, which ends when the visitor goes.
    let mut v = app.visitor().await;
    v.start("other", "waiting").await;
    let (_, _, reason) = v.client.expect_queued().await;
    assert_eq!(reason, QueueReason::NoAgentAvailable);
    let id = v.id.clone();
    drop(v);
    let closed = app.conversation_of_visitor_in_state(&id, "closed").await;
    assert_eq!(closed["close_reason"], "visitor_left");
}

#[tokio::test]
async fn the_console_reads_the_teams_and_who_can_take_a_transfer() {
    let app = spawn_app_with(desk).await;
    let mut a1 = app.agent("a1").await;
    let _a3 = app
        .agent_hello("a3", json!({"type": "hello", "status": "away"}))
        .await;
    let mut v = app.visitor().await;
    v.start("other", "where is my refund").await;
    v.expect_assigned().await;
    a1.expect_chat().await;

    assert_eq!(app.get("/v1/desk", None).await.status(), 401);
    let response = app.get("/v1/desk", Some(&agent_token("a1"))).await;
    assert_eq!(response.status(), 200);
    let desk: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        desk["teams"],
        json!([
            {"id": "front", "name": "Front line"},
            {"id": "tech", "name": "Technical support"},
            {"id": "supervisors", "name": "Supervisors"}
        ])
    );
    assert_eq!(
        desk["escalation_team"],
        json!({"id": "supervisors", "name": "Supervisors"})
    );
    assert_eq!(desk["csat"], "auto");
    let agent = |id: &str| {
        desk["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(desk["agents"].as_array().unwrap().len(), 6);
    assert_eq!(
        agent("a1"),
        json!({"id": "a1", "name": "Agent 1", "teams": ["front"], "connected": true,
               "status": "online", "open": 1, "capacity": 3, "available": true})
    );
    let a3 = agent("a3");
    assert_eq!(
        (&a3["status"], &a3["available"], &a3["teams"]),
        (&json!("away"), &json!(false), &json!(["tech"]))
    );
    let a2 = agent("a2");
    assert_eq!(
        (&a2["connected"], &a2["status"], &a2["available"]),
        (&json!(false), &json!("offline"), &json!(false))
    );
    // Admins read it too (the dashboard may); surveys off shows as such.
    assert_eq!(app.get("/v1/desk", Some(ADMIN_TOKEN)).await.status(), 200);
    let off = spawn_app_with(|c| c.desk.csat = CsatMode::Off).await;
    let plain = off.get_json("/v1/desk").await;
    assert_eq!(plain["csat"], "off");
    assert_eq!(plain["teams"], json!([]));
    assert_eq!(plain["escalation_team"], json!(null));
}
