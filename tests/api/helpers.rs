//! Test helpers: a real Parley on port 0, and clients that speak the real protocol.
//!
//! `TEST_LOG=1 cargo test` shows the server's logs. Every wait is on an event with a deadline
//! ([`FRAME_TIMEOUT`]); nothing sleeps to synchronise.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use parley::clock::Clock;
use parley::config::{AgentConfig, Config};
use parley::protocol::{
    AgentStatus, ConversationView, ErrorCode, ErrorFrame, MessageView, ServerFrame, Welcome,
};
use parley::server::ServeError;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// Long enough for a loaded CI machine, short enough that a hang fails the test quickly.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,parley=debug".into()),
                )
                .with_test_writer()
                .init();
        }
    });
}

/// The token of test agent `name` (configured as its SHA-256).
pub fn agent_token(name: &str) -> String {
    format!("token-{name}")
}

pub const ADMIN_TOKEN: &str = "admin-secret-token";

/// A configuration for tests: agents a1..a6 with capacity 3, generous rate limits, a fresh data
/// directory, and grace periods long enough not to expire unless a test shortens them.
pub fn test_config(data_dir: PathBuf) -> Config {
    let mut c = Config {
        data_dir,
        ..Config::default()
    };
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.auth.demo = Some(false);
    c.auth.admin_token_sha256 = vec![parley::config::sha256_hex(ADMIN_TOKEN)];
    c.agents = (1..=6)
        .map(|i| AgentConfig {
            id: format!("a{i}"),
            name: format!("Agent {i}"),
            token_sha256: parley::config::sha256_hex(&agent_token(&format!("a{i}"))),
            capacity: None,
            teams: Vec::new(),
        })
        .collect();
    c.routing.agent_grace = Duration::from_secs(60);
    c.routing.visitor_grace = Duration::from_secs(60);
    c.rate_limits.visitor_messages_per_second = 1000;
    c.rate_limits.visitor_message_burst = 1000;
    c.rate_limits.visitor_conversations_per_hour = 1000;
    c.rate_limits.agent_messages_per_second = 1000;
    c.rate_limits.agent_message_burst = 1000;
    c.rate_limits.frames_per_second = 1000;
    c.rate_limits.frame_burst = 1000;
    c.rate_limits.ip_connections_per_minute = 10_000;
    c.rate_limits.kb_requests_per_minute = 10_000;
    c.transcripts.flush_interval = Duration::from_millis(100);
    c.shutdown.drain_timeout = Duration::from_secs(10);
    c
}

pub struct TestApp {
    /// Its address, and what a test does with it (`app.visitor()`, `app.get(...)`).
    gateway: Gateway,
    pub config: Config,
    /// The clock the desk reads: the system's, or a manual one from [`spawn_app_at`].
    pub clock: Clock,
    shutdown: CancellationToken,
    server: Option<JoinHandle<Result<(), ServeError>>>,
    /// Kept so the data directory outlives restarts; deleted when the app is dropped.
    dir: std::sync::Arc<tempfile::TempDir>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customise: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_at(Clock::system(), customise).await
}

/// A server whose desk reads `clock`: a test that must control time passes
/// [`Clock::manual`] and moves it (SLA deadlines, report days), never sleeping.
pub async fn spawn_app_at(clock: Clock, customise: impl FnOnce(&mut Config)) -> TestApp {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut config = test_config(dir.path().join("data"));
    customise(&mut config);
    start(config, dir, clock).await
}

async fn start(config: Config, dir: std::sync::Arc<tempfile::TempDir>, clock: Clock) -> TestApp {
    init_tracing();
    let listener = TcpListener::bind(config.listen).await.expect("bind port 0");
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(parley::server::serve_with_clock(
        config.clone(),
        listener,
        shutdown.clone(),
        clock.clone(),
    ));
    TestApp {
        gateway: Gateway { addr },
        config,
        clock,
        shutdown,
        server: Some(server),
        dir,
    }
}

impl Deref for TestApp {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.gateway
    }
}

impl TestApp {
    /// Graceful shutdown: what SIGTERM does.
    pub async fn stop(&mut self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        let server = self.server.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("shutdown finished in time")
            .expect("server task did not panic")
    }

    /// Stops gracefully and starts again on the same data directory (a new port).
    pub async fn restart(mut self) -> TestApp {
        self.stop().await.expect("clean shutdown");
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().unwrap();
        start(config, self.dir.clone(), self.clock.clone()).await
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }
}

/// What a test does with a running node, whichever kind (this process, another runtime, the
/// `parley` binary): open sockets that speak the protocol, call the HTTP API, read metrics.
/// Only the address is needed, so it is cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct Gateway {
    pub addr: SocketAddr,
}

impl Gateway {
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Agent `agent` online, then a new visitor who starts a conversation in `category` that
    /// the agent gets; both have seen the assignment and the first message.
    pub async fn chat(
        &self,
        agent: &str,
        category: &str,
        text: &str,
    ) -> (Agent, Visitor, ConversationView) {
        chat_between(self, agent, self, category, text).await
    }

    /// A visitor with a fresh anonymous identity, after `welcome`.
    pub async fn visitor(&self) -> Visitor {
        self.visitor_hello(json!({"type": "hello", "name": "Test Visitor"}))
            .await
    }

    /// A visitor that sends `hello` and gets `welcome`.
    pub async fn visitor_hello(&self, hello: Value) -> Visitor {
        let mut client = self.connect("/v1/visitor").await;
        client.send(hello).await;
        let welcome = client.expect_welcome().await;
        let session = welcome.visitor.clone().expect("visitor session in welcome");
        Visitor {
            client,
            id: session.id.to_string(),
            token: session.token,
            welcome,
        }
    }

    /// The same visitor on a new socket, resuming after `last_seq`.
    pub async fn reconnect_visitor(&self, id: &str, token: &str, last_seq: Option<u64>) -> Visitor {
        let mut hello = json!({"type": "hello", "visitor_id": id, "token": token});
        if let Some(seq) = last_seq {
            hello["last_seq"] = json!(seq);
        }
        self.visitor_hello(hello).await
    }

    /// Agent `name` (a1..a6), online, after `welcome`.
    pub async fn agent(&self, name: &str) -> Agent {
        self.agent_hello(name, json!({"type": "hello"})).await
    }

    /// Agent `name` coming back with what it has: (conversation id, last seq) pairs.
    pub async fn agent_resuming(&self, name: &str, resume: &[(String, u64)]) -> Agent {
        let resume: Vec<Value> = resume
            .iter()
            .map(|(id, seq)| json!({"conversation_id": id, "last_seq": seq}))
            .collect();
        self.agent_hello(name, json!({"type": "hello", "resume": resume}))
            .await
    }

    pub async fn agent_hello(&self, name: &str, hello: Value) -> Agent {
        let path = format!("/v1/agent?token={}", agent_token(name));
        let mut client = self.connect(&path).await;
        client.send(hello).await;
        let welcome = client.expect_welcome().await;
        Agent { client, welcome }
    }

    pub async fn connect(&self, path: &str) -> Client {
        let (ws, _) = tokio::time::timeout(
            FRAME_TIMEOUT,
            tokio_tungstenite::connect_async(self.ws_url(path)),
        )
        .await
        .expect("connect in time")
        .expect("websocket upgrade");
        Client::new(ws)
    }

    /// The HTTP status of a refused upgrade.
    pub async fn upgrade_status(
        &self,
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> u16 {
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                response.status().as_u16()
            }
            Err(other) => panic!("unexpected upgrade error: {other}"),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = reqwest::Client::new().get(self.http_url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("http request")
    }

    /// Polls the REST API until `visitor`'s latest conversation is in `state`; returns it.
    /// A deadline, not a sleep, bounds it: the state change is the event waited for.
    pub async fn conversation_of_visitor_in_state(&self, visitor: &str, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let list = self
                .get_json(&format!("/v1/conversations?visitor={visitor}&limit=1"))
                .await;
            if let Some(c) = list["conversations"].get(0) {
                if c["state"] == state {
                    return c.clone();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no conversation of {visitor} in state {state} in time: {list}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path, Some(ADMIN_TOKEN)).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("json body")
    }

    /// The sum of a metric's samples whose labels contain `label` (e.g. `role="visitor"`).
    pub async fn metric(&self, name: &str, label: &str) -> f64 {
        let text = self.get("/metrics", None).await.text().await.unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until `check` holds, polling an observable condition (not a sleep-then-assert).
    pub async fn eventually<F, Fut>(&self, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        eventually(what, FRAME_TIMEOUT, check).await
    }
}

/// Agent `agent` online on `agent_node`, then a visitor on `visitor_node` who starts a
/// conversation in `category` that the agent gets; both have seen the assignment and the
/// first message.
pub async fn chat_between(
    agent_node: &Gateway,
    agent: &str,
    visitor_node: &Gateway,
    category: &str,
    text: &str,
) -> (Agent, Visitor, ConversationView) {
    let mut agent = agent_node.agent(agent).await;
    let mut visitor = visitor_node.visitor().await;
    visitor.start(category, text).await;
    let chat = visitor.expect_assigned().await;
    let (seen, _) = agent.expect_chat().await;
    assert_eq!(seen.id, chat.id, "the chat went to another agent");
    (agent, visitor, chat)
}

/// Polls an observable condition until it holds (not a sleep-then-assert).
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A raw protocol client.
pub struct Client {
    pub ws: Ws,
    /// Frames that arrived while [`Client::expect_ack`] waited, in order, read before the
    /// socket's next ones: an `ack` waits for the store, so frames sent after it may come
    /// first.
    held: std::collections::VecDeque<ServerFrame>,
}

/// What a test is waiting for, for the panic message.
fn kind(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome(_) => "welcome",
        ServerFrame::Queued { .. } => "queued",
        ServerFrame::Assigned { .. } => "assigned",
        ServerFrame::Message(_) => "message",
        ServerFrame::Ack { .. } => "ack",
        ServerFrame::Typing { .. } => "typing",
        ServerFrame::Read { .. } => "read",
        ServerFrame::Closed { .. } => "closed",
        ServerFrame::History { .. } => "history",
        ServerFrame::AgentState { .. } => "agent_state",
        ServerFrame::Transferred { .. } => "transferred",
        ServerFrame::Sla { .. } => "sla",
        ServerFrame::CsatRequest { .. } => "csat_request",
        ServerFrame::Error(_) => "error",
    }
}

impl Client {
    pub fn new(ws: Ws) -> Self {
        Self {
            ws,
            held: std::collections::VecDeque::new(),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    /// The next frame of any kind, or a panic after [`FRAME_TIMEOUT`].
    pub async fn next_frame(&mut self) -> ServerFrame {
        match self.held.pop_front() {
            Some(frame) => frame,
            None => self.read_frame().await,
        }
    }

    /// The socket's next frame, past any held ones.
    async fn read_frame(&mut self) -> ServerFrame {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .expect("socket readable");
            match message {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server sent an unparsable frame {t}: {e}"))
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(c) => panic!("socket closed while waiting for a frame: {c:?}"),
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// The next frame that is not an `agent_state` refresh (those come on a timer).
    pub async fn next_frame_skipping_state(&mut self) -> ServerFrame {
        loop {
            match self.next_frame().await {
                ServerFrame::AgentState { .. } => continue,
                other => return other,
            }
        }
    }

    /// The first frame `pick` accepts. Frames that arrive on their own schedule (`agent_state`,
    /// queue updates, typing and read marks) are skipped; anything else is a failure, so tests
    /// notice unexpected traffic.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&ServerFrame) -> Option<T>,
    ) -> T {
        loop {
            let frame = self.next_frame().await;
            if let Some(t) = pick(&frame) {
                return t;
            }
            match frame {
                ServerFrame::AgentState { .. }
                | ServerFrame::Queued { .. }
                | ServerFrame::Typing { .. }
                | ServerFrame::Read { .. } => continue,
                other => panic!("expected {what}, got {} {other:?}", kind(&other)),
            }
        }
    }

    pub async fn expect_welcome(&mut self) -> Welcome {
        self.expect("welcome", |f| match f {
            ServerFrame::Welcome(w) => Some(w.clone()),
            _ => None,
        })
        .await
    }

    pub async fn expect_error(&mut self) -> ErrorFrame {
        self.expect("error", |f| match f {
            ServerFrame::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await
    }

    pub async fn expect_error_code(&mut self, code: ErrorCode) -> ErrorFrame {
        let e = self.expect_error().await;
        assert_eq!(e.code, code, "error frame {e:?}");
        e
    }

    pub async fn expect_message(&mut self) -> MessageView {
        self.expect("message", |f| match f {
            ServerFrame::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// The `seq` the server gave the message with this `cid`, and whether it was a duplicate.
    /// The `ack` of `cid`. It is sent once the message is durable, so frames sent after it (the
    /// other side's messages, `assigned`) may arrive first: they are held, in order, for what
    /// the test reads next. An error about `cid` fails at once.
    pub async fn expect_ack(&mut self, cid: &str) -> (u64, bool) {
        let is_ack = |f: &ServerFrame| match f {
            ServerFrame::Ack {
                cid: c,
                seq,
                duplicate,
                ..
            } if c.as_str() == cid => Some((seq.0, *duplicate)),
            _ => None,
        };
        if let Some(i) = self.held.iter().position(|f| is_ack(f).is_some()) {
            let frame = self.held.remove(i).expect("held frame");
            return is_ack(&frame).expect("an ack");
        }
        loop {
            let frame = self.read_frame().await;
            if let Some(ack) = is_ack(&frame) {
                return ack;
            }
            if let ServerFrame::Error(e) = &frame {
                if e.cid.as_ref().is_some_and(|c| c.as_str() == cid) {
                    panic!("expected ack of {cid}, got error {e:?}");
                }
            }
            self.held.push_back(frame);
        }
    }

    pub async fn expect_assigned(&mut self) -> ConversationView {
        self.expect("assigned", |f| match f {
            ServerFrame::Assigned { conversation } => Some(conversation.clone()),
            _ => None,
        })
        .await
    }

    /// The next `queued` frame: (position, estimated wait, reason).
    pub async fn expect_queued(&mut self) -> (u32, u64, parley::protocol::QueueReason) {
        loop {
            match self.next_frame().await {
                ServerFrame::Queued {
                    position,
                    estimated_wait_ms,
                    reason,
                    ..
                } => return (position, estimated_wait_ms, reason),
                ServerFrame::AgentState { .. }
                | ServerFrame::Typing { .. }
                | ServerFrame::Read { .. } => {}
                other => panic!("expected queued, got {other:?}"),
            }
        }
    }

    pub async fn expect_closed(&mut self) -> ServerFrame {
        self.expect("closed", |f| {
            matches!(f, ServerFrame::Closed { .. }).then(|| f.clone())
        })
        .await
    }

    /// Reads until the server closes the socket; returns the close code. Frames before the
    /// close are returned too, for tests that check what was delivered first.
    pub async fn expect_close(&mut self) -> (u16, Vec<ServerFrame>) {
        let mut frames = Vec::new();
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("close in time");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), frames),
                Some(Ok(Message::Close(None))) => return (1005, frames),
                Some(Ok(Message::Text(t))) => {
                    frames.push(serde_json::from_str(t.as_str()).unwrap())
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before a close frame: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }
}

pub struct Visitor {
    pub client: Client,
    pub id: String,
    pub token: String,
    pub welcome: Welcome,
}

impl Visitor {
    /// Starts a conversation; returns the seq of the first message.
    pub async fn start(&mut self, category: &str, text: &str) -> u64 {
        let cid = format!("start-{}", uuid::Uuid::new_v4().simple());
        self.client
            .send(json!({"type": "start", "category": category, "text": text, "cid": cid}))
            .await;
        self.client.expect_ack(&cid).await.0
    }

    /// Sends a message with a fresh `cid`; returns the `cid`.
    pub async fn say(&mut self, text: &str) -> String {
        let cid = uuid::Uuid::new_v4().simple().to_string();
        self.say_with_cid(&cid, text).await;
        cid
    }

    pub async fn say_with_cid(&mut self, cid: &str, text: &str) {
        self.client
            .send(json!({"type": "message", "cid": cid, "text": text}))
            .await;
    }

    /// Sends and waits for the ack; returns the seq.
    pub async fn say_acked(&mut self, text: &str) -> u64 {
        let cid = self.say(text).await;
        self.client.expect_ack(&cid).await.0
    }

    pub async fn expect_assigned(&mut self) -> ConversationView {
        self.client.expect_assigned().await
    }

    pub async fn expect_message(&mut self) -> MessageView {
        self.client.expect_message().await
    }
}

pub struct Agent {
    pub client: Client,
    pub welcome: Welcome,
}

impl Agent {
    /// Waits for a new chat and the history sent with it (all of it, or its newest messages
    /// when `recovered` is false); returns the conversation and those messages.
    pub async fn expect_chat(&mut self) -> (ConversationView, Vec<MessageView>) {
        let conversation = self.client.expect_assigned().await;
        let mut history: Vec<MessageView> = Vec::new();
        while history.last().map_or(0, |m| m.seq.0) < conversation.last_seq.0 {
            history.push(self.client.expect_message().await);
        }
        (conversation, history)
    }

    pub async fn say(&mut self, conversation: &ConversationView, text: &str) -> u64 {
        let cid = uuid::Uuid::new_v4().simple().to_string();
        self.client
            .send(json!({"type": "message", "conversation_id": conversation.id, "cid": cid, "text": text}))
            .await;
        self.client.expect_ack(&cid).await.0
    }

    pub async fn set_status(&mut self, status: AgentStatus) {
        self.client
            .send(json!({"type": "status", "status": status}))
            .await;
    }

    pub async fn close(&mut self, conversation: &ConversationView, resolved: bool) {
        self.client
            .send(
                json!({"type": "close", "conversation_id": conversation.id, "resolved": resolved}),
            )
            .await;
        self.client.expect_closed().await;
    }

    pub async fn expect_message(&mut self) -> MessageView {
        self.client.expect_message().await
    }
}

/// Holds SQLite's write lock on `db` from another connection, as another process would: the
/// real fault of a stalled store. Roll back (or drop the connection) to release it.
pub async fn hold_write_lock(db: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut blocker)
        .await
        .unwrap();
    blocker
}
