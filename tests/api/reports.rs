//! Reports from a scripted day of conversations on a manual clock, checked against figures
//! computed by hand (the comments show the arithmetic), plus tags, follow-ups and the CSV.

use std::time::Duration;

use parley::clock::Clock;
use parley::config::{CategoryConfig, Config, TeamConfig};
use parley::protocol::{ConversationView, ServerFrame, SlaState};
use serde_json::{json, Value};

use crate::helpers::*;

/// Monday 2026-11-30 09:00 UTC.
const T0: u64 = 1_796_029_200_000;
const S: u64 = 1000;

/// a1, a2 front line (account); a5, a6 supervisors (security). First-response target 2 min.
fn day_config(c: &mut Config) {
    c.teams = vec![
        TeamConfig {
            id: "front".into(),
            name: "Front line".into(),
            hours: None,
        },
        TeamConfig {
            id: "supervisors".into(),
            name: "Supervisors".into(),
            hours: None,
        },
    ];
    for (i, a) in c.agents.iter_mut().enumerate() {
        a.teams = vec![if i < 2 { "front" } else { "supervisors" }.to_string()];
    }
    for (category, team) in [("account", "front"), ("security", "supervisors")] {
        c.categories.insert(
            category.into(),
            CategoryConfig {
                team: Some(team.into()),
                first_response_target: None,
                ..CategoryConfig::default()
            },
        );
    }
    c.desk.first_response_target = Duration::from_secs(120);
    c.desk.sla_check_interval = Duration::from_millis(20);
    c.desk.reopen_window = Duration::from_secs(24 * 3600);
}

/// Moves the manual clock to `T0 + at` (seconds).
fn at(app: &TestApp, at: u64) {
    app.clock.set(T0 + at * S);
}

async fn csat(v: &mut Visitor, chat: &ConversationView, score: u8) {
    loop {
        match v.client.next_frame().await {
            ServerFrame::CsatRequest { .. } => break,
            // Everything the visitor saw of the conversation before its end.
            ServerFrame::Closed { .. }
            | ServerFrame::Queued { .. }
            | ServerFrame::Transferred { .. }
            | ServerFrame::Assigned { .. } => continue,
            other => panic!("expected csat_request, got {other:?}"),
        }
    }
    v.client
        .send(json!({"type": "csat", "conversation_id": chat.id, "score": score}))
        .await;
}

async fn expect_breach(agent: &mut Agent) {
    let state = agent
        .client
        .expect("sla", |f| match f {
            ServerFrame::Sla { state, .. } => Some(*state),
            _ => None,
        })
        .await;
    assert_eq!(state, SlaState::Breached);
}

/// The scripted day (times are seconds after 09:00 UTC):
/// - 0: V1 (account) to a1; a1 answers at 30; V1 writes at 60, a1 answers at 80; a1 closes
///   resolved at 120; V1 rates 5.
/// - 200: V2 (account) to a1, who answers only at 350 (target missed); a1 transfers it to the
///   supervisors at 360; a5 closes it resolved at 400; V2 rates 2.
/// - 500: V3 (security) to a5, answered at 510; closed not resolved at 600; no rating.
/// - 700: a deflection in category account.
/// - 800: V1 comes back and reopens its conversation; a1 answers at 820, closes resolved at 900.
async fn scripted_day() -> TestApp {
    let app = spawn_app_at(Clock::manual(T0), day_config).await;
    let mut a1 = app.agent("a1").await;
    let mut a5 = app.agent("a5").await;

    let mut v1 = app.visitor().await;
    v1.start("account", "cannot log in").await;
    let c1 = v1.expect_assigned().await;
    a1.expect_chat().await;
    at(&app, 30);
    a1.say(&c1, "let me look").await;
    v1.expect_message().await;
    at(&app, 60);
    v1.say_acked("thanks").await;
    a1.expect_message().await;
    at(&app, 80);
    a1.say(&c1, "reset it now").await;
    v1.expect_message().await;
    at(&app, 120);
    a1.close(&c1, true).await;
    csat(&mut v1, &c1, 5).await;

    at(&app, 200);
    let mut v2 = app.visitor().await;
    v2.start("account", "where is my withdrawal").await;
    let c2 = v2.expect_assigned().await;
    a1.expect_chat().await;
    at(&app, 350);
    expect_breach(&mut a1).await;
    a1.say(&c2, "checking").await;
    v2.expect_message().await;
    at(&app, 360);
    a1.client
        .send(json!({"type": "transfer", "conversation_id": c2.id, "team": "supervisors"}))
        .await;
    // a1 sees the transfer notes it wrote, then `transferred`.
    loop {
        match a1.client.next_frame().await {
            ServerFrame::Transferred { .. } => break,
            ServerFrame::Message(_) | ServerFrame::AgentState { .. } => continue,
            other => panic!("expected transferred, got {other:?}"),
        }
    }
    let (moved, _) = a5.expect_chat().await;
    assert_eq!(moved.id, c2.id);
    at(&app, 400);
    a5.close(&c2, true).await;
    csat(&mut v2, &c2, 2).await;

    at(&app, 500);
    let mut v3 = app.visitor().await;
    v3.start("security", "strange login").await;
    let c3 = v3.expect_assigned().await;
    a5.expect_chat().await;
    at(&app, 510);
    a5.say(&c3, "securing it").await;
    v3.expect_message().await;
    at(&app, 600);
    a5.close(&c3, false).await;

    at(&app, 700);
    let article = reqwest::Client::new()
        .post(app.http_url("/v1/kb/articles"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"title": "Reset your password", "body": "Open settings.", "lang": "en"}))
        .send()
        .await
        .unwrap();
    assert_eq!(article.status(), 201, "{:?}", article.text().await);
    let article: Value = article.json().await.unwrap_or_default();
    let _ = article;
    let list = app.get_json("/v1/kb/articles").await;
    let id = list["articles"][0]["id"].as_str().unwrap().to_string();
    let deflected = reqwest::Client::new()
        .post(app.http_url(&format!("/v1/kb/articles/{id}/deflections")))
        .json(&json!({"category": "account"}))
        .send()
        .await
        .unwrap();
    assert_eq!(deflected.status(), 204);

    at(&app, 800);
    v1.start("account", "it happened again").await;
    let back = v1.expect_assigned().await;
    assert_eq!((back.id, back.reopened), (c1.id, 1));
    a1.expect_chat().await;
    at(&app, 820);
    a1.say(&c1, "fixed for good").await;
    v1.expect_message().await;
    at(&app, 900);
    a1.close(&c1, true).await;
    app
}

fn group<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("no group {key} in {report}"))
}

#[tokio::test]
async fn a_scripted_day_gives_the_hand_computed_figures() {
    let app = scripted_day().await;
    let by_agent = app
        .get_json("/v1/reports?from=2026-11-30&to=2026-11-30&group_by=agent")
        .await;
    assert_eq!(by_agent["timezone"], "UTC");

    // a1 ends with conversation 1 only (2 went to a5). Replies ended waits of 30 s (0→30),
    // 20 s (60→80) and, after the reopen, 20 s (800→820): 70 s over 3 replies = 23,333 ms.
    // Resolved at 900 s from its creation; reopened, so not a first-contact resolution.
    let a1 = group(&by_agent, "a1");
    assert_eq!(a1["conversations"], 1);
    assert_eq!(a1["closed"], 1);
    assert_eq!(a1["resolved"], 1);
    assert_eq!(a1["avg_first_response_ms"], 30_000);
    assert_eq!(a1["responses"], 3);
    assert_eq!(a1["avg_response_ms"], 23_333);
    assert_eq!(a1["avg_resolution_ms"], 900_000);
    assert_eq!(a1["first_contact_resolutions"], 0);
    assert_eq!(a1["first_contact_resolution_rate"], 0.0);
    assert_eq!(a1["csat_average"], 5.0);
    assert_eq!(
        (a1["sla_met"].clone(), a1["sla_missed"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(a1["reopened"], 1);
    assert_eq!(a1["deflections"], Value::Null, "no agent in a deflection");

    // a5: conversation 2 (first reply by a1 after 150 s: missed; resolved 200 s after
    // creation; transferred) and 3 (first reply 10 s: met; not resolved).
    let a5 = group(&by_agent, "a5");
    assert_eq!(a5["conversations"], 2);
    assert_eq!(a5["resolved"], 1);
    assert_eq!(a5["avg_first_response_ms"], 80_000); // (150 + 10) / 2
    assert_eq!(a5["avg_response_ms"], 80_000); // (150 + 10) s over 2 replies
    assert_eq!(a5["avg_resolution_ms"], 200_000);
    assert_eq!(a5["first_contact_resolution_rate"], 0.0);
    assert_eq!(a5["csat_answers"], 1);
    assert_eq!(a5["csat_average"], 2.0);
    assert_eq!(a5["sla_met"], 1);
    assert_eq!(a5["sla_missed"], 1);
    assert_eq!(a5["sla_attainment"], 0.5);
    assert_eq!(a5["transfers"], 1);

    let total = &by_agent["total"];
    assert_eq!(total["conversations"], 3);
    assert_eq!(total["avg_first_response_ms"], 63_333); // (30 + 150 + 10) / 3
    assert_eq!(total["avg_response_ms"], 46_000); // (70 + 150 + 10) s over 5 replies
    assert_eq!(total["avg_resolution_ms"], 550_000); // (900 + 200) / 2
    assert_eq!(total["csat_average"], 3.5);
    assert_eq!(total["sla_attainment"].as_f64().unwrap(), 2.0 / 3.0);
    assert_eq!(total["deflections"], 1);

    let by_category = app
        .get_json("/v1/reports?from=2026-11-30&to=2026-11-30&group_by=category")
        .await;
    let account = group(&by_category, "account");
    assert_eq!(account["conversations"], 2);
    assert_eq!(account["deflections"], 1);
    let security = group(&by_category, "security");
    assert_eq!(security["conversations"], 1);
    assert_eq!(security["deflections"], 0);

    let by_team = app
        .get_json("/v1/reports?from=2026-11-30&to=2026-11-30&group_by=team")
        .await;
    assert_eq!(group(&by_team, "supervisors")["conversations"], 2);
    assert_eq!(group(&by_team, "front")["conversations"], 1);

    let by_day = app
        .get_json("/v1/reports?from=2026-11-30&to=2026-11-30&group_by=day")
        .await;
    assert_eq!(group(&by_day, "2026-11-30")["conversations"], 3);
    // The day before holds nothing.
    let before = app
        .get_json("/v1/reports?from=2026-11-29&to=2026-11-29&group_by=day")
        .await;
    assert_eq!(before["total"]["conversations"], 0);
}

#[tokio::test]
async fn the_csv_has_one_row_per_conversation_with_tags_and_follow_ups() {
    let app = scripted_day().await;
    let rows = app
        .get_json("/v1/reports/conversations?from=2026-11-30&to=2026-11-30")
        .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let first = rows[0]["conversation_id"].as_str().unwrap().to_string();
    // Tag the first conversation as a complaint and set a follow-up.
    let tagged = reqwest::Client::new()
        .put(app.http_url(&format!("/v1/conversations/{first}/tags")))
        .bearer_auth(agent_token("a1"))
        .json(&json!({"tags": ["Complaint", "refund", "complaint"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(tagged.status(), 200);
    let tagged: Value = tagged.json().await.unwrap();
    assert_eq!(tagged["tags"], json!(["complaint", "refund"]));
    let due = T0 + 86_400 * S;
    let follow = reqwest::Client::new()
        .put(app.http_url(&format!("/v1/conversations/{first}/follow-up")))
        .bearer_auth(agent_token("a1"))
        .json(&json!({"due_at": due, "note": "call back about the refund"}))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    // Not due yet; due once the clock passes it.
    assert_eq!(app.get_json("/v1/follow-ups").await, json!([]));
    app.clock.set(due + 1);
    let due_now = app.get_json("/v1/follow-ups").await;
    assert_eq!(due_now[0]["conversation"]["id"], first);
    assert_eq!(due_now[0]["follow_up"]["set_by"], "a1");
    assert_eq!(
        app.get_json("/v1/conversations?tag=complaint").await["conversations"][0]["id"],
        first
    );

    let csv = app
        .get(
            "/v1/reports/conversations.csv?from=2026-11-30&to=2026-11-30",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let mut reader = csv_reader(&text);
    let header = reader.next().unwrap();
    assert_eq!(header[0], "conversation_id");
    let lines: Vec<Vec<String>> = reader.collect();
    assert_eq!(lines.len(), 3);
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let row = lines.iter().find(|l| l[0] == first).unwrap();
    assert_eq!(row[column("tags")], "complaint;refund");
    assert_eq!(row[column("csat_score")], "5");
    assert_eq!(row[column("reopened")], "1");
    assert_eq!(row[column("first_contact_resolution")], "false");
    assert_eq!(row[column("created_at")], "2026-11-30T09:00:00.000+00:00");
    assert!(row[column("follow_up_at")].starts_with("2026-12-01T09:00:00"));
    // Bad input is named.
    let bad = app
        .get("/v1/reports?from=yesterday", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(bad.status(), 400);
    let bad = app
        .get("/v1/reports?group_by=planet", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(app.get("/v1/reports", None).await.status(), 401);
}

#[tokio::test]
async fn tags_and_follow_ups_are_checked_and_need_a_conversation() {
    let app = spawn_app().await;
    let put = |path: String, body: Value| {
        let app_url = app.http_url(&path);
        async move {
            reqwest::Client::new()
                .put(app_url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let missing = parley::domain::ConversationId::new();
    let r = put(
        format!("/v1/conversations/{missing}/tags"),
        json!({"tags": ["x"]}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let mut agent = app.agent("a1").await;
    let mut v = app.visitor().await;
    v.start("other", "hello").await;
    let chat = v.expect_assigned().await;
    agent.expect_chat().await;
    for bad in [json!({"tags": ["has space"]}), json!({"tags": ["a;b"]})] {
        let r = put(format!("/v1/conversations/{}/tags", chat.id), bad).await;
        assert_eq!(r.status(), 400);
    }
    let r = put(
        format!("/v1/conversations/{}/tags", chat.id),
        json!({"tags": ["投诉"]}),
    )
    .await;
    assert_eq!(r.status(), 200, "tags in any script");
    let r = put(
        format!("/v1/conversations/{}/follow-up", chat.id),
        json!({"due_at": 1, "note": "x".repeat(501)}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let cleared = reqwest::Client::new()
        .delete(app.http_url(&format!("/v1/conversations/{}/follow-up", chat.id)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 200);
}

/// Splits CSV text into records (quoted fields included) with the same crate Parley writes with.
fn csv_reader(text: &str) -> impl Iterator<Item = Vec<String>> + '_ {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .into_records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
}
