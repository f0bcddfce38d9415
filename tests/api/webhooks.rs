//! Webhooks: a real receiver (axum on 127.0.0.1:0) records every request and answers as the test
//! scripts it; the real Parley emits events from real WebSocket traffic. Every wait is on the
//! receiver's recorded requests or on /metrics, with a deadline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use parley::config::{Config, WebhookConfig};
use parley::protocol::ServerFrame;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Notify;

use crate::helpers::*;

const SECRET: &str = "test-webhook-secret-0123456789";

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Ok,
    Status(u16),
    /// A status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Never answers: the request can only time out.
    Hang,
}

#[derive(Debug, Clone)]
struct Request {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
    json: Value,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn kind(&self) -> &str {
        self.json["type"].as_str().unwrap()
    }

    fn data(&self) -> &Value {
        &self.json["data"]
    }

    /// Verifies `Parley-Signature` exactly as docs/desk.md tells receivers to.
    fn assert_signed(&self) {
        let header = self.header("parley-signature");
        let mut t = None;
        let mut v1 = Vec::new();
        for part in header.split(',') {
            match part.split_once('=') {
                Some(("t", value)) => t = value.parse::<u64>().ok(),
                Some(("v1", value)) => v1.push(value.to_string()),
                _ => {}
            }
        }
        let t = t.unwrap_or_else(|| panic!("no t in {header}"));
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&self.body);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert!(v1.contains(&expected), "bad signature {header}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(t) <= 300, "t={t} is outside the replay window");
    }
}

struct ReceiverState {
    requests: Mutex<Vec<Request>>,
    /// Replies to the first requests, in order; `then` answers the rest.
    script: Mutex<VecDeque<Reply>>,
    then: Reply,
    arrived: Notify,
}

/// An HTTP endpoint that records what Parley sends.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = serde_json::from_slice(&body).expect("a JSON body");
    state.requests.lock().unwrap().push(Request {
        at: Instant::now(),
        headers,
        body,
        json,
    });
    state.arrived.notify_waiters();
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(state.then);
    match reply {
        Reply::Ok => StatusCode::NO_CONTENT.into_response(),
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::RetryAfter(code, seconds) => (
            StatusCode::from_u16(code).unwrap(),
            [("retry-after", seconds.to_string())],
        )
            .into_response(),
        Reply::Hang => std::future::pending().await,
    }
}

impl Receiver {
    async fn start(script: &[Reply], then: Reply) -> Self {
        let state = Arc::new(ReceiverState {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(script.iter().copied().collect()),
            then,
            arrived: Notify::new(),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    /// This receiver as a `[[webhooks]]` entry; no `events` means all of them.
    fn endpoint(&self, events: &[&str]) -> WebhookConfig {
        let events = if events.is_empty() {
            parley::desk::webhooks::EventType::ALL.to_vec()
        } else {
            events
                .iter()
                .map(|e| parley::desk::webhooks::EventType::parse(e).expect("an event type"))
                .collect()
        };
        WebhookConfig {
            url: self.url.clone(),
            secret: SECRET.to_string(),
            events,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits until the recorded requests satisfy `done`; returns them.
    async fn wait_until(&self, what: &str, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let arrived = self.state.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "timed out waiting for {what}; received {:?}",
                    requests.iter().map(Request::kind).collect::<Vec<_>>()
                );
            }
        }
    }

    async fn wait_for(&self, n: usize) -> Vec<Request> {
        self.wait_until(&format!("{n} requests"), |r| r.len() >= n)
            .await
    }
}

/// Short waits, so retries happen within a test.
fn fast(c: &mut Config) {
    c.webhook_delivery.backoff_base = Duration::from_millis(20);
    c.webhook_delivery.backoff_cap = Duration::from_millis(200);
    c.webhook_delivery.timeout = Duration::from_secs(5);
}

async fn metric(app: &TestApp, name: &str, label: &str) -> f64 {
    app.metric(name, label).await
}

async fn wait_metric(app: &TestApp, name: &str, label: &str, value: f64) {
    app.eventually(&format!("{name}{{{label}}} == {value}"), || async {
        metric(app, name, label).await == value
    })
    .await;
}

/// Every event emitted so far has finished (delivered or otherwise).
async fn wait_idle(app: &TestApp) {
    wait_metric(app, "parley_webhook_queue_depth", "", 0.0).await;
}

fn of_kind<'a>(requests: &'a [Request], kind: &str) -> Vec<&'a Request> {
    requests.iter().filter(|r| r.kind() == kind).collect()
}

#[tokio::test]
async fn every_event_of_a_conversation_arrives_once_signed_with_its_payload() {
    let hook = Receiver::start(&[], Reply::Ok).await;
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhooks = vec![hook.endpoint(&[])];
    })
    .await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("account", "I cannot log in").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    agent.say(&chat, "Let me look").await;
    visitor.expect_message().await;
    visitor.say_with_cid("dup-1", "still stuck").await;
    assert_eq!(visitor.client.expect_ack("dup-1").await, (3, false));
    // A resent cid is acknowledged again but is not a new message.
    visitor.say_with_cid("dup-1", "still stuck").await;
    assert_eq!(visitor.client.expect_ack("dup-1").await, (3, true));
    agent.expect_message().await;
    agent.close(&chat, true).await;

    hook.wait_until("conversation.closed", |r| {
        !of_kind(r, "conversation.closed").is_empty()
    })
    .await;
    wait_idle(&app).await;
    let requests = hook.requests();
    let kinds: Vec<&str> = requests.iter().map(Request::kind).collect();
    assert_eq!(requests.len(), 6, "{kinds:?}");

    let mut ids = Vec::new();
    for r in &requests {
        r.assert_signed();
        assert_eq!(r.header("parley-event"), r.kind());
        assert_eq!(r.header("parley-delivery"), r.json["id"].as_str().unwrap());
        assert_eq!(r.header("parley-attempt"), "1");
        assert_eq!(r.header("content-type"), "application/json");
        assert!(r.header("user-agent").starts_with("Parley/"));
        let id = uuid::Uuid::parse_str(r.json["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        ids.push(id);
        assert!(r.json["created_at"].as_u64().unwrap() > 1_700_000_000_000);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "one id per event");

    let created = of_kind(&requests, "conversation.created");
    assert_eq!(created.len(), 1);
    let c = &created[0].data()["conversation"];
    assert_eq!(c["id"], chat.id.to_string());
    assert_eq!(c["category"], "account");
    assert_eq!(c["visitor"]["id"], visitor.id);
    assert_eq!(c["visitor"]["name"], "Test Visitor");

    let assigned = of_kind(&requests, "conversation.assigned");
    assert_eq!(assigned.len(), 1);
    let c = &assigned[0].data()["conversation"];
    assert_eq!(c["id"], chat.id.to_string());
    assert_eq!(c["state"], "assigned");
    assert_eq!(c["agent"], json!({"id": "a1", "name": "Agent 1"}));

    let mut messages: Vec<&Value> = of_kind(&requests, "message.created")
        .iter()
        .map(|r| &r.data()["message"])
        .collect();
    messages.sort_by_key(|m| m["seq"].as_u64());
    let summary: Vec<(u64, &str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["sender"]["role"].as_str().unwrap(),
                m["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "visitor", "I cannot log in"),
            (2, "agent", "Let me look"),
            (3, "visitor", "still stuck"),
        ]
    );
    assert!(messages
        .iter()
        .all(|m| m["conversation_id"] == chat.id.to_string()));
    assert_eq!(messages[2]["cid"], "dup-1");

    let closed = of_kind(&requests, "conversation.closed");
    assert_eq!(closed.len(), 1);
    let d = closed[0].data();
    assert_eq!(
        (&d["by"], &d["resolved"], &d["reason"]),
        (&json!("agent"), &json!(true), &json!("agent_closed"))
    );
    assert_eq!(d["conversation"]["id"], chat.id.to_string());
    assert_eq!(d["conversation"]["state"], "closed");
    assert_eq!(d["conversation"]["agent"]["id"], "a1");
    assert_eq!(d["conversation"]["last_seq"], 3);
    assert_eq!(
        metric(
            &app,
            "parley_webhook_deliveries_total",
            "outcome=\"delivered\""
        )
        .await,
        6.0
    );
}

#[tokio::test]
async fn a_visitor_closing_is_reported_by_the_visitor_without_a_verdict() {
    let hook = Receiver::start(&[], Reply::Ok).await;
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhooks = vec![hook.endpoint(&["conversation.closed"])];
    })
    .await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "never mind").await;
    visitor.client.send(json!({"type": "close"})).await;
    let closed = visitor.client.expect_closed().await;
    let ServerFrame::Closed {
        conversation_id, ..
    } = closed
    else {
        unreachable!()
    };
    let requests = hook.wait_for(1).await;
    requests[0].assert_signed();
    let d = requests[0].data();
    assert_eq!(d["conversation"]["id"], conversation_id.to_string());
    assert_eq!(d["by"], "visitor");
    assert_eq!(d["resolved"], Value::Null);
    assert_eq!(d["reason"], "visitor_closed");
    assert!(d["conversation"].get("agent").is_none());
}

#[tokio::test]
async fn an_assignment_from_the_queue_is_reported() {
    let hook = Receiver::start(&[], Reply::Ok).await;
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhooks = vec![hook.endpoint(&["conversation.assigned"])];
    })
    .await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "anyone there?").await;
    let (position, _, _) = visitor.client.expect_queued().await;
    assert_eq!(position, 1);
    let mut agent = app.agent("a2").await;
    let (chat, _) = agent.expect_chat().await;
    let requests = hook.wait_for(1).await;
    wait_idle(&app).await;
    assert_eq!(hook.requests().len(), 1);
    let c = &requests[0].data()["conversation"];
    assert_eq!(c["id"], chat.id.to_string());
    assert_eq!(c["agent"]["id"], "a2");
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_three_attempts_with_one_event_id_and_growing_gaps() {
    let hook = Receiver::start(&[Reply::Status(500), Reply::Status(503)], Reply::Ok).await;
    let app = spawn_app_with(|c| {
        c.webhooks = vec![hook.endpoint(&["conversation.created"])];
        c.webhook_delivery.backoff_base = Duration::from_millis(150);
        c.webhook_delivery.backoff_cap = Duration::from_secs(10);
        c.webhook_delivery.jitter = false;
    })
    .await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    hook.wait_for(3).await;
    wait_metric(
        &app,
        "parley_webhook_deliveries_total",
        "outcome=\"delivered\"",
        1.0,
    )
    .await;
    let requests = hook.requests();
    assert_eq!(requests.len(), 3);
    let attempts: Vec<&str> = requests
        .iter()
        .map(|r| r.header("parley-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    for r in &requests {
        r.assert_signed();
        assert_eq!(
            r.header("parley-delivery"),
            requests[0].header("parley-delivery")
        );
        assert_eq!(r.body, requests[0].body, "the same bytes on every attempt");
    }
    let first_gap = requests[1].at - requests[0].at;
    let second_gap = requests[2].at - requests[1].at;
    // Without jitter the waits are exactly the ceilings: base, then twice base.
    assert!(first_gap >= Duration::from_millis(150), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(300), "{second_gap:?}");
    assert!(second_gap > first_gap, "{first_gap:?} then {second_gap:?}");
    assert_eq!(
        metric(&app, "parley_webhook_attempts_total", "result=\"5xx\"").await,
        2.0
    );
}

#[tokio::test]
async fn a_receiver_that_always_fails_gets_max_attempts_then_the_event_is_given_up() {
    let hook = Receiver::start(&[], Reply::Status(500)).await;
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhooks = vec![hook.endpoint(&["conversation.created"])];
        c.webhook_delivery.max_attempts = 4;
    })
    .await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    wait_metric(
        &app,
        "parley_webhook_deliveries_total",
        "outcome=\"given_up\"",
        1.0,
    )
    .await;
    let requests = hook.requests();
    assert_eq!(requests.len(), 4);
    assert!(requests
        .iter()
        .all(|r| r.header("parley-delivery") == requests[0].header("parley-delivery")));
    assert_eq!(
        metric(
            &app,
            "parley_webhook_deliveries_total",
            "outcome=\"delivered\""
        )
        .await,
        0.0
    );
    assert_eq!(metric(&app, "parley_webhook_queue_depth", "").await, 0.0);
}

#[tokio::test]
async fn gone_and_other_client_errors_are_not_retried() {
    let gone = Receiver::start(&[], Reply::Status(410)).await;
    let bad = Receiver::start(&[], Reply::Status(400)).await;
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhooks = vec![
            gone.endpoint(&["conversation.created"]),
            bad.endpoint(&["conversation.created"]),
        ];
    })
    .await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    wait_metric(
        &app,
        "parley_webhook_deliveries_total",
        "outcome=\"rejected\"",
        2.0,
    )
    .await;
    assert_eq!(gone.requests().len(), 1);
    assert_eq!(bad.requests().len(), 1);
    assert_eq!(metric(&app, "parley_webhook_queue_depth", "").await, 0.0);
    assert_eq!(
        metric(&app, "parley_webhook_attempts_total", "result=\"4xx\"").await,
        2.0
    );
}

#[tokio::test]
async fn too_many_requests_is_retried_after_the_receivers_retry_after() {
    let hook = Receiver::start(&[Reply::RetryAfter(429, 1)], Reply::Ok).await;
    let app = spawn_app_with(|c| {
        c.webhooks = vec![hook.endpoint(&["conversation.created"])];
        c.webhook_delivery.backoff_base = Duration::from_millis(10);
        c.webhook_delivery.backoff_cap = Duration::from_secs(5);
        c.webhook_delivery.jitter = false;
    })
    .await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    let requests = hook.wait_for(2).await;
    let gap = requests[1].at - requests[0].at;
    // The backoff alone would have waited 10ms.
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
    wait_metric(
        &app,
        "parley_webhook_deliveries_total",
        "outcome=\"delivered\"",
        1.0,
    )
    .await;
    assert_eq!(hook.requests().len(), 2);
}

#[tokio::test]
async fn a_slow_receiver_does_not_slow_the_chat() {
    let hook = Receiver::start(&[], Reply::Hang).await;
    let timeout = Duration::from_secs(3);
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhooks = vec![hook.endpoint(&[])];
        c.webhook_delivery.timeout = timeout;
        c.webhook_delivery.concurrency = 1;
    })
    .await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    // A delivery is now stuck in the receiver, and every event after it waits its turn.
    hook.wait_for(1).await;
    let started = Instant::now();
    for i in 0..20 {
        visitor.say_acked(&format!("v{i}")).await;
        agent.expect_message().await;
        agent.say(&chat, &format!("a{i}")).await;
        visitor.expect_message().await;
    }
    let chat_took = started.elapsed();
    assert!(
        chat_took < timeout,
        "40 messages took {chat_took:?}: the chat waited for a webhook"
    );
    assert!(metric(&app, "parley_webhook_queue_depth", "").await >= 40.0);
    // And the deliveries are indeed timing out meanwhile.
    app.eventually("a webhook attempt timed out", || async {
        metric(&app, "parley_webhook_attempts_total", "result=\"timeout\"").await >= 1.0
    })
    .await;
}

#[tokio::test]
async fn a_full_queue_drops_new_events_and_counts_them() {
    let hook = Receiver::start(&[], Reply::Hang).await;
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhooks = vec![hook.endpoint(&["message.created"])];
        c.webhook_delivery.timeout = Duration::from_secs(60);
        c.webhook_delivery.queue_size = 2;
        c.webhook_delivery.concurrency = 1;
    })
    .await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "one").await;
    for text in ["two", "three", "four", "five"] {
        visitor.say_acked(text).await;
    }
    // Emitting is synchronous with the message: by its ack, the event was queued or dropped.
    assert_eq!(
        metric(
            &app,
            "parley_webhook_deliveries_total",
            "outcome=\"dropped\""
        )
        .await,
        3.0
    );
    assert_eq!(metric(&app, "parley_webhook_queue_depth", "").await, 2.0);
    let requests = hook.wait_for(1).await;
    assert_eq!(requests[0].data()["message"]["text"], "one");
}

#[tokio::test]
async fn subscriptions_filter_by_event_type() {
    let messages = Receiver::start(&[], Reply::Ok).await;
    let lifecycle = Receiver::start(&[], Reply::Ok).await;
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhooks = vec![
            messages.endpoint(&["message.created"]),
            lifecycle.endpoint(&["conversation.created", "conversation.closed"]),
        ];
    })
    .await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    agent.say(&chat, "hi").await;
    agent.close(&chat, false).await;
    lifecycle
        .wait_until("conversation.closed", |r| {
            !of_kind(r, "conversation.closed").is_empty()
        })
        .await;
    messages.wait_for(2).await;
    wait_idle(&app).await;
    let mut got: Vec<String> = messages
        .requests()
        .iter()
        .map(|r| r.kind().to_string())
        .collect();
    assert_eq!(got, ["message.created", "message.created"]);
    got = lifecycle
        .requests()
        .iter()
        .map(|r| r.kind().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["conversation.closed", "conversation.created"]);
}

#[tokio::test]
async fn a_delivery_waiting_to_retry_gets_a_last_chance_at_shutdown() {
    let hook = Receiver::start(&[Reply::Status(500)], Reply::Ok).await;
    let mut app = spawn_app_with(|c| {
        c.webhooks = vec![hook.endpoint(&["conversation.created"])];
        // The retry would be an hour away.
        c.webhook_delivery.backoff_base = Duration::from_secs(3600);
        c.webhook_delivery.backoff_cap = Duration::from_secs(3600);
        c.webhook_delivery.max_age = Duration::from_secs(7200);
        c.webhook_delivery.jitter = false;
    })
    .await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    hook.wait_for(1).await;
    wait_metric(&app, "parley_webhook_attempts_total", "result=\"5xx\"", 1.0).await;
    let started = Instant::now();
    app.stop().await.expect("clean shutdown");
    assert!(started.elapsed() < app.config.shutdown.drain_timeout);
    let requests = hook.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("parley-attempt"), "2");
    assert_eq!(
        requests[1].header("parley-delivery"),
        requests[0].header("parley-delivery")
    );
    assert_eq!(visitor.client.expect_close().await.0, 1012);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_hung_receiver_past_the_drain_deadline() {
    let hook = Receiver::start(&[], Reply::Hang).await;
    let mut app = spawn_app_with(|c| {
        c.webhooks = vec![hook.endpoint(&["conversation.created"])];
        c.webhook_delivery.timeout = Duration::from_secs(60);
        c.shutdown.drain_timeout = Duration::from_secs(1);
    })
    .await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    hook.wait_for(1).await;
    let started = Instant::now();
    app.stop().await.expect("webhooks do not fail the drain");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}

#[tokio::test]
async fn a_transfer_and_a_survey_answer_are_reported() {
    let hook = Receiver::start(&[], Reply::Ok).await;
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhooks = vec![hook.endpoint(&["conversation.transferred", "csat.received"])];
    })
    .await;
    let mut a1 = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "please move me").await;
    let chat = visitor.expect_assigned().await;
    a1.expect_chat().await;
    let mut a2 = app.agent("a2").await;
    a1.client
        .send(json!({"type": "transfer", "conversation_id": chat.id, "agent": "a2"}))
        .await;
    let (moved, _) = a2.expect_chat().await;
    assert_eq!(moved.id, chat.id);
    a2.close(&moved, true).await;
    loop {
        if let ServerFrame::CsatRequest { .. } = visitor.client.next_frame().await {
            break;
        }
    }
    visitor
        .client
        .send(json!({"type": "csat", "conversation_id": chat.id, "score": 5, "comment": "great"}))
        .await;
    let requests = hook.wait_for(2).await;
    wait_idle(&app).await;
    assert_eq!(hook.requests().len(), 2, "each event once");
    for r in &requests {
        r.assert_signed();
    }
    let transferred = of_kind(&requests, "conversation.transferred");
    let d = transferred[0].data();
    assert_eq!(d["conversation"]["id"], chat.id.to_string());
    assert_eq!(d["conversation"]["agent"]["id"], "a2");
    assert_eq!(d["conversation"]["transfers"], 1);
    assert_eq!(d["from"]["id"], "a1");
    let csat = of_kind(&requests, "csat.received");
    let d = csat[0].data();
    assert_eq!(d["conversation_id"], chat.id.to_string());
    assert_eq!(d["score"], 5);
    assert_eq!(d["comment"], "great");
}
