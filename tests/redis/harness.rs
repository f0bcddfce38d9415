//! The test harness: `redis-server` processes and Parley nodes that share them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use parley::config::Config;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::helpers::{agent_token, test_config, Agent, Client, Visitor, FRAME_TIMEOUT};

/// `redis-server` on a free port in a temp dir, with no persistence (a restart comes back empty,
/// the harshest case).
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The path of `redis-server`, or `None` (the test is then skipped).
fn redis_binary() -> Option<PathBuf> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A missing server program fails the test, so a green run never hides tests that did not run.
/// `PARLEY_SKIP_MISSING_SERVICES=1` turns that into a skip (with a message), for a quick local
/// run on a machine without them; `scripts/test` and CI never set it.
fn missing<T>(what: &str) -> Option<T> {
    if std::env::var_os("PARLEY_SKIP_MISSING_SERVICES").is_some_and(|v| v == "1") {
        eprintln!("{what} not installed; skipping (PARLEY_SKIP_MISSING_SERVICES=1)");
        None
    } else {
        panic!("{what} is needed by this test and is not installed; .ci/run installs it");
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts a server, or returns `None` when redis-server is not installed.
    pub async fn start() -> Option<Self> {
        if redis_binary().is_none() {
            return missing("redis-server (apt-get install redis-server)");
        }
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.spawn().await;
        Some(server)
    }

    async fn spawn(&mut self) {
        self.spawn_with(&[]).await;
    }

    async fn spawn_with(&mut self, extra: &[&str]) {
        let child = Command::new(redis_binary().expect("redis-server"))
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.path().to_str().unwrap(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let url = self.url();
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            if self.ping(&url).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self, url: &str) -> bool {
        let Ok(client) = redis::Client::open(url) else {
            return false;
        };
        let attempt = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), attempt).await,
            Ok(Ok(_))
        )
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection for assertions on the shared state.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill {signal}");
        }
    }

    /// SIGKILL: the server is gone at once, and with it everything it held.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server stops answering but keeps its connections open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Starts again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped server ignores SIGKILL until continued? No: SIGKILL works, but resume
            // anyway so nothing is left stopped.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// One Parley node on its own runtime.
pub struct Node {
    pub addr: SocketAddr,
    #[allow(dead_code)]
    pub config: Config,
    shutdown: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

/// The test configuration for a node of the shared desk.
pub fn node_config(redis: &RedisServer, dir: &std::path::Path) -> Config {
    let mut c = test_config(dir.join("data"));
    c.redis.url = Some(redis.url());
    c.redis.presence_ttl = Duration::from_secs(2);
    c.limits.outbound_queue = 8192;
    c.rate_limits.flood_strikes = 100_000;
    c
}

static TRACING: std::sync::Once = std::sync::Once::new();

/// `TEST_LOG=1` shows the nodes' logs.
fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,parley=debug".into()),
                )
                .init();
        }
    });
}

impl Node {
    pub async fn start(redis: &RedisServer) -> Node {
        Self::start_with(redis, |_| {}).await
    }

    pub async fn start_with(redis: &RedisServer, customise: impl FnOnce(&mut Config)) -> Node {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = node_config(redis, dir.path());
        customise(&mut config);
        Self::start_config(config, dir).await
    }

    /// A node of a desk on a Redis Cluster (seeded with its first server).
    pub async fn start_on_cluster(cluster: &RedisCluster) -> Node {
        Self::start_with(&cluster.servers[0], |c| c.redis.cluster = true).await
    }

    async fn start_config(config: Config, dir: tempfile::TempDir) -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        {
            let config = config.clone();
            let shutdown = shutdown.clone();
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                if let Err(err) = parley::server::serve(config, listener, shutdown).await {
                    eprintln!("node stopped with an error: {err}");
                }
            });
        }
        let node = Node {
            addr,
            config,
            shutdown,
            runtime: Some(runtime),
            _dir: dir,
        };
        node.wait_ready().await;
        node
    }

    /// Waits until `/readyz` says ready (Redis reachable).
    pub async fn wait_ready(&self) {
        self.eventually("the node to be ready", || async { self.ready().await })
            .await;
    }

    pub async fn ready(&self) -> bool {
        match reqwest::get(format!("http://{}/readyz", self.addr)).await {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    }

    /// SIGKILL of the node: its runtime stops with every task; sockets just drop.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    pub async fn connect(&self, path: &str) -> Client {
        let (ws, _) = tokio::time::timeout(
            FRAME_TIMEOUT,
            tokio_tungstenite::connect_async(format!("ws://{}{}", self.addr, path)),
        )
        .await
        .expect("connect in time")
        .expect("websocket upgrade");
        Client { ws }
    }

    pub async fn visitor(&self) -> Visitor {
        self.visitor_hello(json!({"type": "hello", "name": "Test Visitor"}))
            .await
    }

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

    pub async fn reconnect_visitor(&self, id: &str, token: &str, last_seq: Option<u64>) -> Visitor {
        let mut hello = json!({"type": "hello", "visitor_id": id, "token": token});
        if let Some(seq) = last_seq {
            hello["last_seq"] = json!(seq);
        }
        self.visitor_hello(hello).await
    }

    pub async fn agent(&self, name: &str) -> Agent {
        let path = format!("/v1/agent?token={}", agent_token(name));
        let mut client = self.connect(&path).await;
        client.send(json!({"type": "hello"})).await;
        let welcome = client.expect_welcome().await;
        Agent { client, welcome }
    }

    pub async fn eventually<F, Fut>(&self, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        eventually(what, FRAME_TIMEOUT, check).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.kill();
    }
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

/// A throwaway PostgreSQL: `initdb` in a temp dir and `pg_ctl start` on a free port, so every
/// test run gets a fresh database. Run as the `postgres` user when the tests run as root
/// (PostgreSQL refuses root).
pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn pg_bin() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    candidates.reverse();
    candidates.push(PathBuf::from("/usr/local/bin"));
    candidates.push(PathBuf::from("/usr/bin"));
    candidates
        .into_iter()
        .find(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgServer {
    /// Starts a server, or returns `None` when PostgreSQL is not installed.
    pub async fn start() -> Option<Self> {
        let Some(bin) = pg_bin() else {
            return missing("PostgreSQL's initdb and pg_ctl (apt-get install postgresql)");
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Self {
            port: free_port(),
            dir,
            bin,
        };
        if is_root() {
            let status = Command::new("chown")
                .args([
                    "-R",
                    "postgres:postgres",
                    server.dir.path().to_str().unwrap(),
                ])
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let data = server.dir.path().join("data");
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            server.port,
            server.dir.path().display()
        );
        server.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                server.dir.path().join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Some(server)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let output = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        }
        .expect("run a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let program = self.bin.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
    }
}

/// A Redis Cluster of three masters (no replicas), created with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts one, or returns `None` when redis-server or redis-cli is not installed.
    pub async fn start() -> Option<Self> {
        if redis_binary().is_none() || !std::path::Path::new("/usr/bin/redis-cli").exists() {
            return missing(
                "redis-server and redis-cli (apt-get install redis-server redis-tools)",
            );
        }
        let mut servers = Vec::new();
        for _ in 0..3 {
            let mut server = RedisServer {
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir"),
                child: None,
            };
            server
                .spawn_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
                .await;
            servers.push(server);
        }
        let addresses: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            output.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        for server in &servers {
            let url = server.url();
            eventually("the cluster to be ok", FRAME_TIMEOUT, || {
                let url = url.clone();
                async move {
                    let Ok(client) = redis::Client::open(url) else {
                        return false;
                    };
                    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                        return false;
                    };
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                }
            })
            .await;
        }
        Some(Self { servers })
    }
}
