//! The test harness: `redis-server` processes and Parley nodes that share them.
//!
//! - [`RedisServer`], [`RedisCluster`], [`PgServer`]: real servers on free ports, in temp dirs.
//! - [`Node`]: a Parley node in this process, on its own runtime, so a test can stop all of its
//!   tasks at once; [`ProcessNode`]: the `parley` binary, for a real `kill -9`.
//! - [`Gateway`]: what a test does with either kind of node (sockets, readiness, metrics).
//! - [`Proxy`]: a TCP proxy in front of Redis that can make a node's pub/sub connection go
//!   silent without closing it.

use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub use crate::helpers::{eventually, Gateway};
use crate::helpers::{test_config, FRAME_TIMEOUT};
pub use crate::process::ProcessNode;

/// `redis-server` on a free port in a temp dir, with no persistence (a restart comes back empty,
/// the harshest case).
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Options added to the command line, kept for restarts.
    options: Vec<String>,
}

/// A program on `PATH` (or in the usual system directories).
fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The path of `redis-server`, or `None` (the test then fails, or is skipped on request).
fn redis_binary() -> Option<PathBuf> {
    program("redis-server")
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
            options: Vec::new(),
        };
        server.spawn().await;
        Some(server)
    }

    /// A server that writes every command to its append-only file before answering, so that a
    /// restart (even after SIGKILL) comes back with its data: keys whose TTL ran out meanwhile
    /// are gone, the rest is there.
    pub async fn start_persistent() -> Option<Self> {
        if redis_binary().is_none() {
            return missing("redis-server (apt-get install redis-server)");
        }
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            options: ["--appendonly", "yes", "--appendfsync", "always"]
                .map(String::from)
                .to_vec(),
        };
        server.spawn().await;
        Some(server)
    }

    async fn spawn(&mut self) {
        let options = self.options.clone();
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        self.spawn_with(&options).await;
    }

    /// Later options win over earlier ones, so `extra` overrides the defaults.
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

    /// Checks the routing scripts' indexes (`free:`, `staff:`, `q:` per target, and
    /// `queued_targets`) against the data they are derived from, as the scripts' doc says:
    /// free = accepting with load below capacity, staff = accepting, q = the queue split by
    /// target with the same scores. Reads everything in one script, so it sees one moment even
    /// while nodes route. Panics with both sides on any difference.
    pub async fn assert_routing_indexes_agree(&self) {
        use std::collections::{BTreeMap, BTreeSet, HashMap};
        const SNAPSHOT: &str = r#"
local p, out = 'parley:{r}:', {}
local function add(name, items)
  local row = {name}
  for _, v in ipairs(items) do table.insert(row, v) end
  table.insert(out, row)
end
add('ring', redis.call('ZRANGE', p .. 'ring', 0, -1, 'WITHSCORES'))
add('queue', redis.call('ZRANGE', p .. 'queue', 0, -1, 'WITHSCORES'))
add('accepting', redis.call('SMEMBERS', p .. 'accepting'))
add('queued_targets', redis.call('SMEMBERS', p .. 'queued_targets'))
for _, h in ipairs({'load', 'cap', 'teams', 'target'}) do add(h, redis.call('HGETALL', p .. h)) end
for _, k in ipairs(redis.call('KEYS', p .. 'free:*')) do add(k, redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')) end
for _, k in ipairs(redis.call('KEYS', p .. 'q:*')) do add(k, redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')) end
for _, k in ipairs(redis.call('KEYS', p .. 'staff:*')) do add(k, redis.call('SMEMBERS', k)) end
return out
"#;
        let rows: Vec<Vec<String>> = redis::Script::new(SNAPSHOT)
            .invoke_async(&mut self.conn().await)
            .await
            .unwrap();
        let rows: HashMap<String, Vec<String>> = rows
            .into_iter()
            .map(|mut r| {
                let name = r.remove(0);
                (name.trim_start_matches("parley:{r}:").to_string(), r)
            })
            .collect();
        let list = |name: &str| rows.get(name).cloned().unwrap_or_default();
        let pairs = |name: &str| -> BTreeMap<String, String> {
            list(name)
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect()
        };
        let key_of = |team: &str| {
            if team.is_empty() {
                "any".to_string()
            } else {
                format!("t:{team}")
            }
        };
        let (accepting, load, cap, teams, targets) = (
            list("accepting"),
            pairs("load"),
            pairs("cap"),
            pairs("teams"),
            pairs("target"),
        );
        let number = |m: &BTreeMap<String, String>, a: &str| -> u64 {
            m.get(a).map_or(0, |v| v.parse().unwrap())
        };

        type Scored = BTreeMap<String, BTreeMap<String, String>>;
        let (mut free, mut staff): (Scored, BTreeMap<String, BTreeSet<String>>) =
            Default::default();
        for (agent, position) in pairs("ring") {
            if !accepting.contains(&agent) {
                continue;
            }
            let mut targets = vec![String::new()];
            if let Some(ts) = teams.get(&agent) {
                targets.extend(ts.split(',').filter(|t| !t.is_empty()).map(String::from));
            }
            for t in targets {
                staff.entry(key_of(&t)).or_default().insert(agent.clone());
                if number(&load, &agent) < number(&cap, &agent) {
                    free.entry(key_of(&t))
                        .or_default()
                        .insert(agent.clone(), position.clone());
                }
            }
        }
        let mut q: Scored = BTreeMap::new();
        let mut queued_targets = BTreeSet::new();
        for (conv, score) in pairs("queue") {
            let t = targets.get(&conv).cloned().unwrap_or_default();
            q.entry(key_of(&t)).or_default().insert(conv, score);
            queued_targets.insert(t);
        }

        let held = |kind: &str| -> Scored {
            rows.iter()
                .filter_map(|(k, v)| {
                    let target = k.strip_prefix(kind)?;
                    let members = v.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
                    Some((target.to_string(), members))
                })
                .collect()
        };
        assert_eq!(held("free:"), free, "free agents per target");
        assert_eq!(held("q:"), q, "queue per target");
        let held_staff: BTreeMap<String, BTreeSet<String>> = rows
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.strip_prefix("staff:")?.to_string(),
                    v.iter().cloned().collect(),
                ))
            })
            .collect();
        assert_eq!(held_staff, staff, "agents on duty per target");
        let listed: BTreeSet<String> = list("queued_targets").into_iter().collect();
        assert_eq!(listed, queued_targets, "targets with someone waiting");
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

    /// Starts again on the same port: empty, unless started persistent.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // SIGKILL works on a stopped process too; continue it anyway, so that nothing is
            // ever left stopped if the kill below fails.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// Readiness and liveness, for nodes whose Redis may be gone.
impl Gateway {
    /// Waits until `/readyz` says ready (with Redis: Redis reachable).
    pub async fn wait_ready(&self) {
        self.eventually("the node to be ready", || async { self.ready().await })
            .await;
    }

    pub async fn ready(&self) -> bool {
        match reqwest::get(self.http_url("/readyz")).await {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    }

    /// Whether the process answers HTTP at all (liveness).
    pub async fn alive(&self) -> bool {
        match reqwest::get(self.http_url("/healthz")).await {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    }
}

/// One Parley node on its own runtime.
pub struct Node {
    gateway: Gateway,
    #[allow(dead_code)]
    pub config: Config,
    shutdown: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Deref for Node {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.gateway
    }
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
    count_node_panics();
}

/// The name of every thread of an in-process node's runtime: how a panic is traced to a node.
const NODE_THREAD: &str = "parley-node";
static NODE_PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_HOOK: std::sync::Once = std::sync::Once::new();

/// Counts panics on nodes' threads. A panic in a spawned task does not reach the test (Tokio
/// catches it), so without this a node could lose a task to a panic and the test still pass.
fn count_node_panics() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(NODE_THREAD))
            {
                NODE_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Fails if any node of this test binary panicked so far (the panic is printed above).
pub fn assert_no_node_panicked() {
    assert_eq!(
        NODE_PANICS.load(Ordering::SeqCst),
        0,
        "a node panicked; see the panic message above"
    );
}

impl Node {
    pub async fn start(redis: &RedisServer) -> Node {
        Self::start_with(redis, |_| {}).await
    }

    pub async fn start_with(redis: &RedisServer, customise: impl FnOnce(&mut Config)) -> Node {
        Self::start_at(redis, parley::clock::Clock::system(), customise).await
    }

    /// A node whose desk reads `clock`: nodes given clones of one [`parley::clock::Clock::manual`]
    /// share a time the test moves.
    pub async fn start_at(
        redis: &RedisServer,
        clock: parley::clock::Clock,
        customise: impl FnOnce(&mut Config),
    ) -> Node {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = node_config(redis, dir.path());
        customise(&mut config);
        Self::start_config(config, dir, clock).await
    }

    /// A node of a desk on a Redis Cluster (seeded with its first server).
    pub async fn start_on_cluster(
        cluster: &RedisCluster,
        customise: impl FnOnce(&mut Config),
    ) -> Node {
        Self::start_with(&cluster.servers[0], |c| {
            c.redis.cluster = true;
            customise(c);
        })
        .await
    }

    async fn start_config(
        config: Config,
        dir: tempfile::TempDir,
        clock: parley::clock::Clock,
    ) -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(NODE_THREAD)
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
                if let Err(err) =
                    parley::server::serve_with_clock(config, listener, shutdown, clock).await
                {
                    eprintln!("node stopped with an error: {err}");
                }
            });
        }
        let node = Node {
            gateway: Gateway { addr },
            config,
            shutdown,
            runtime: Some(runtime),
            _dir: dir,
        };
        node.wait_ready().await;
        node
    }

    /// Every task of the node stops at once, as on SIGKILL: nothing says goodbye, sockets just
    /// drop. (See [`ProcessNode::kill9`] for a real `kill -9` of a real process.)
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.kill();
    }
}

impl ProcessNode {
    /// Starts the binary with the same configuration an in-process node gets.
    pub async fn start_with(redis: &RedisServer, customise: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = node_config(redis, dir.path());
        customise(&mut config);
        ProcessNode::start(config, dir).await
    }
}

/// A TCP proxy in front of a Redis server. Connections through it work normally until
/// [`Proxy::silence_subscribers`]: from then on, every connection that has subscribed passes
/// nothing in either direction, but stays open, which is how a pub/sub connection can die
/// without an error (a stuck middlebox, a replica detaching).
pub struct Proxy {
    pub port: u16,
    connections: Arc<Mutex<Vec<Arc<ProxiedConnection>>>>,
    stop: CancellationToken,
}

struct ProxiedConnection {
    subscribed: AtomicBool,
    silenced: AtomicBool,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<Arc<ProxiedConnection>>>> = Arc::default();
        let stop = CancellationToken::new();
        let (list, stopped) = (connections.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let state = Arc::new(ProxiedConnection {
                    subscribed: AtomicBool::new(false),
                    silenced: AtomicBool::new(false),
                });
                list.lock().unwrap().push(state.clone());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(
                    client_read,
                    server_write,
                    state.clone(),
                    true,
                    stopped.clone(),
                ));
                tokio::spawn(pump(
                    server_read,
                    client_write,
                    state,
                    false,
                    stopped.clone(),
                ));
            }
        });
        Proxy {
            port,
            connections,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Silences every connection that has subscribed so far; returns how many.
    pub fn silence_subscribers(&self) -> usize {
        let list = self.connections.lock().unwrap();
        let mut n = 0;
        for c in list.iter().filter(|c| c.subscribed.load(Ordering::SeqCst)) {
            c.silenced.store(true, Ordering::SeqCst);
            n += 1;
        }
        n
    }

    /// Connections that subscribed and are not silenced: live subscriptions through the proxy.
    pub fn live_subscribers(&self) -> usize {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.subscribed.load(Ordering::SeqCst) && !c.silenced.load(Ordering::SeqCst))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copies one direction of a proxied connection; once silenced, reads and drops.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<ProxiedConnection>,
    client_to_server: bool,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        if client_to_server
            && String::from_utf8_lossy(&buf[..n])
                .to_ascii_uppercase()
                .contains("SUBSCRIBE")
        {
            state.subscribed.store(true, Ordering::SeqCst);
        }
        if state.silenced.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
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
        if redis_binary().is_none() || program("redis-cli").is_none() {
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
                options: Vec::new(),
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
        let output = Command::new(program("redis-cli").expect("redis-cli"))
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
