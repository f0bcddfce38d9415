//! Settings: embedded defaults, then `PARLEY_*` environment variables, then a TOML file, then
//! command-line flags, each overriding the one before (flags win).
//!
//! Every struct denies unknown fields, so a typo in `parley.toml` stops start-up with the key's
//! name instead of being ignored. [`Config::validate`] then checks values and names the setting
//! at fault by its TOML path. `docs/configuration.md` documents every setting.
//!
//! Configuration is a leaf of the crate: other modules import these types, never the reverse.
//! Settings with a grammar of their own (business [`Hours`], webhook [`EventType`]s) are types
//! that parse themselves while the file is read (`serde(try_from)`), so checking a
//! configuration needs nothing but this module and its submodules.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod hours;
pub mod webhooks;

pub use hours::{Hours, HoursConfig, HoursError};
pub use webhooks::{EventType, UnknownEvent, WebhookConfig, WebhookDelivery};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "parley.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Where the SQLite transcript file and the visitor token key live.
    pub data_dir: PathBuf,
    /// Store URL; `None` means the SQLite file `<data_dir>/parley.db`.
    pub database: Option<String>,
    pub log_format: LogFormat,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub routing: Routing,
    pub transcripts: Transcripts,
    pub shutdown: Shutdown,
    pub kb: Kb,
    pub auth: Auth,
    /// Shared state for several nodes; without `redis.url` everything stays in this process.
    pub redis: Redis,
    /// The agents who may sign in (TOML: `[[agents]]`).
    pub agents: Vec<AgentConfig>,
    /// Groups of agents that categories route to (TOML: `[[teams]]`). None: every agent takes
    /// every category.
    pub teams: Vec<TeamConfig>,
    /// Per-category settings (TOML: `[categories.security]`); a category not listed here uses
    /// the `[desk]` defaults and any agent.
    pub categories: BTreeMap<String, CategoryConfig>,
    /// Service levels, escalation, reopening and satisfaction surveys.
    pub desk: Desk,
    /// Endpoints that receive signed desk events (TOML: `[[webhooks]]`).
    pub webhooks: Vec<WebhookConfig>,
    /// Timeouts, retries and bounds shared by every webhook endpoint.
    pub webhook_delivery: WebhookDelivery,
}

/// `[[teams]]`: a group of agents, e.g. front line, technical support, supervisors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub id: String,
    pub name: String,
    /// When the team answers; absent: always. Outside these hours the widget says so and
    /// takes an offline message.
    #[serde(default)]
    pub hours: Option<Hours>,
}

/// `[categories.<name>]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// The team this category routes to; absent: any agent.
    #[serde(default)]
    pub team: Option<String>,
    /// Time from creation to the first agent reply; absent: `desk.first_response_target`.
    #[serde(default, with = "humantime_serde")]
    pub first_response_target: Option<Duration>,
    /// What visitors see in the widget's topic picker; absent: the built-in label of a default
    /// category ([`DEFAULT_CATEGORY_LABELS`]), else the name with spaces for `_`.
    #[serde(default)]
    pub label: Option<String>,
    /// The label per language tag (TOML: `labels = { en = "…", zh-CN = "…" }`); a page in one
    /// of these languages shows it instead of `label`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The compact name the agent console and the ops dashboard show, where space is short;
    /// absent: the label.
    #[serde(default)]
    pub short_label: Option<String>,
}

/// Labels of the five default categories, so that a configuration that names none keeps the
/// words the pages always showed: (name, English label, Simplified Chinese label, short label).
/// They apply to a category whose table sets neither `label` nor `labels`.
pub const DEFAULT_CATEGORY_LABELS: [(&str, &str, &str, &str); 5] = [
    (
        "security",
        "Security or lost access",
        "安全问题或无法登录",
        "Security",
    ),
    ("account", "My account", "账户问题", "Account"),
    (
        "transaction",
        "Transactions and payments",
        "交易与转账",
        "Transactions",
    ),
    ("feature_question", "How do I…?", "功能咨询", "How-to"),
    ("other", "Something else", "其他问题", "Other"),
];

/// What happens to a conversation that breached its first-response target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreachAction {
    /// Flag it to agents and count it; nothing moves.
    None,
    /// Transfer it to `desk.escalation_team`.
    Escalate,
    /// Take it from an agent who has not answered and put it at the head of the queue.
    Requeue,
}

/// Whether visitors are asked to rate a conversation when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CsatMode {
    /// Every conversation an agent closes.
    Auto,
    /// Only when an agent sends the survey (`csat_request`).
    Manual,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Desk {
    /// First-response target of categories that do not set their own.
    #[serde(with = "humantime_serde")]
    pub first_response_target: Duration,
    /// Agents are warned when this share of the target has passed with no reply (1 to 99).
    pub sla_warning_percent: u32,
    pub sla_breach_action: BreachAction,
    /// The team `escalate` and `sla_breach_action = "escalate"` transfer to.
    pub escalation_team: Option<String>,
    /// How often open conversations are checked against their targets.
    #[serde(with = "humantime_serde")]
    pub sla_check_interval: Duration,
    /// A visitor starting again within this long after a close reopens the same conversation.
    #[serde(with = "humantime_serde")]
    pub reopen_window: Duration,
    pub csat: CsatMode,
    /// How long a satisfaction survey can be answered.
    #[serde(with = "humantime_serde")]
    pub csat_window: Duration,
    /// The time zone report days are counted in (IANA name).
    pub timezone: String,
}

impl Default for Desk {
    fn default() -> Self {
        Self {
            first_response_target: Duration::from_secs(5 * 60),
            sla_warning_percent: 75,
            sla_breach_action: BreachAction::None,
            escalation_team: None,
            sla_check_interval: Duration::from_secs(1),
            reopen_window: Duration::from_secs(24 * 3600),
            csat: CsatMode::Auto,
            csat_window: Duration::from_secs(7 * 24 * 3600),
            timezone: "UTC".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections; past it new ones get HTTP 503. Below the 20,000 open-file limit.
    pub max_connections: usize,
    /// WebSocket frame and message cap in bytes; past it the socket is closed with 1009.
    pub frame_max_bytes: usize,
    /// Message text cap in characters; past it `text_too_long`, the socket stays open.
    pub text_max_chars: usize,
    /// Frames queued per socket; when full the socket is closed with 4009 (the client resumes).
    pub outbound_queue: usize,
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long a client may take to send its HTTP request headers (slowloris).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub visitor_messages_per_second: u32,
    pub visitor_message_burst: u32,
    pub visitor_conversations_per_hour: u32,
    pub ip_connections_per_minute: u32,
    pub agent_messages_per_second: u32,
    pub agent_message_burst: u32,
    /// Every inbound frame on one socket, typing included.
    pub frames_per_second: u32,
    pub frame_burst: u32,
    /// Refused frames within `flood_window` before the socket is closed with 1008.
    pub flood_strikes: u32,
    #[serde(with = "humantime_serde")]
    pub flood_window: Duration,
    /// Calls to the public knowledge-base endpoints (search, deflections) per client address.
    pub kb_requests_per_minute: u32,
}

/// `[kb]`: the knowledge base.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kb {
    /// How often a node checks whether the stored articles changed (another node wrote) and
    /// rebuilds its search index if so: the most a node's search lags behind another's write.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for Kb {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// Chats an agent holds at once unless its own `capacity` says otherwise.
    pub default_capacity: u32,
    /// How long a disconnected agent keeps its chats.
    #[serde(with = "humantime_serde")]
    pub agent_grace: Duration,
    /// How long a disconnected visitor's conversation stays open.
    #[serde(with = "humantime_serde")]
    pub visitor_grace: Duration,
    /// Request categories, highest priority first.
    pub categories: Vec<String>,
    pub default_category: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transcripts {
    /// Messages written per store transaction at most; a full batch is written at once. Large
    /// by default: under load a commit costs about the same for 256 messages as for 4,096
    /// (docs/benchmarks.md), and a quiet node writes every `flush_interval` anyway.
    pub batch_size: usize,
    /// A partial batch is written at most this long after its first message when no `ack`
    /// waits for it (an ack starts a write at once: a group commit).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Messages waiting for the store; past it new messages are refused with `unavailable`.
    pub max_pending: usize,
    /// Once an `ack` waits for the store, its batch is written at the latest this long later
    /// (a group commit). Longer: fewer, larger transactions and later acks. Delivery to the
    /// other side does not wait for it.
    #[serde(with = "humantime_serde")]
    pub group_commit_wait: Duration,
    /// Messages per open conversation kept in memory for resume. A resume replays at most
    /// half of `limits.outbound_queue` (128 by default), so a longer window only serves
    /// `history` pages and resent `cid`s from memory.
    pub replay_window: usize,
    /// How long a store write waits for a lock held elsewhere before failing (then retried).
    #[serde(with = "humantime_serde")]
    pub store_busy_timeout: Duration,
    /// SQLite: sync the write-ahead log to disk at every commit, so that an acknowledged
    /// message also survives an OS crash or a power loss, not only a process crash; every
    /// commit then waits for the disk. PostgreSQL follows its own `synchronous_commit`.
    pub fsync: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// Time to close sockets and flush transcripts on SIGTERM before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

/// `[redis]`: with `url` set, presence, routing, the queue, visitor message limits and delivery
/// move to Redis so that several nodes serve one desk (see docs/architecture.md, "Many nodes").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). `None`: single node.
    pub url: Option<String>,
    /// `url` is one node of a Redis Cluster (the others are discovered). Off: a single server,
    /// or an endpoint that presents one (Sentinel-managed, most managed offerings).
    pub cluster: bool,
    /// A node that stops refreshing its presence for this long is dead: its agents go offline
    /// and their chats go back to the front of the queue.
    #[serde(with = "humantime_serde")]
    pub presence_ttl: Duration,
    /// Prefix of every key and channel, so that several desks can share one Redis.
    pub key_prefix: String,
}

impl Redis {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|s| url.starts_with(s));
            if !scheme_ok || redis::Client::open(url.as_str()).is_err() {
                return Err(invalid(
                    "redis.url",
                    "must be a Redis URL such as redis://127.0.0.1:6379",
                ));
            }
        }
        if self.presence_ttl < Duration::from_secs(1) {
            return Err(invalid("redis.presence_ttl", "must be at least 1s"));
        }
        let prefix_ok = (1..=32).contains(&self.key_prefix.len())
            && self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !prefix_ok {
            return Err(invalid(
                "redis.key_prefix",
                "must be 1 to 32 characters of a-z, A-Z, 0-9, _, - and .",
            ));
        }
        Ok(())
    }
}

/// By hand, so the identity secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("admin_token_sha256", &self.admin_token_sha256)
            .field(
                "visitor_identity_secret",
                &self.visitor_identity_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("require_verified_visitors", &self.require_verified_visitors)
            .field("allowed_origins", &self.allowed_origins)
            .field("demo", &self.demo)
            .finish()
    }
}

impl Default for Redis {
    fn default() -> Self {
        Self {
            url: None,
            cluster: false,
            presence_ttl: Duration::from_secs(10),
            key_prefix: "parley".to_string(),
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Hex SHA-256 of admin tokens (REST API).
    pub admin_token_sha256: Vec<String>,
    /// The host site's shared secret for signed visitor ids (HMAC-SHA256).
    pub visitor_identity_secret: Option<String>,
    /// Refuse visitors without a valid signature.
    pub require_verified_visitors: bool,
    /// Exact `scheme://host[:port]` origins allowed on `/v1/visitor` and `/v1/agent`; empty
    /// allows any. Parley's own pages pass regardless (see `Authenticator::origin_allowed`).
    pub allowed_origins: Vec<String>,
    /// Demo agent and admin with token `demo`. Unset: on only when nothing else is configured
    /// and Parley listens on a loopback address.
    pub demo: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the agent's token (`parley hash-token`).
    pub token_sha256: String,
    /// Overrides `routing.default_capacity` for this agent.
    #[serde(default)]
    pub capacity: Option<u32>,
    /// Ids of the `[[teams]]` this agent belongs to.
    #[serde(default)]
    pub teams: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database: None,
            log_format: LogFormat::Text,
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            routing: Routing::default(),
            transcripts: Transcripts::default(),
            shutdown: Shutdown::default(),
            kb: Kb::default(),
            auth: Auth::default(),
            redis: Redis::default(),
            agents: Vec::new(),
            teams: Vec::new(),
            categories: BTreeMap::new(),
            desk: Desk::default(),
            webhooks: Vec::new(),
            webhook_delivery: WebhookDelivery::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 18_000,
            frame_max_bytes: 16 * 1024,
            text_max_chars: 4_000,
            outbound_queue: 256,
            hello_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            visitor_messages_per_second: 2,
            visitor_message_burst: 10,
            visitor_conversations_per_hour: 10,
            ip_connections_per_minute: 120,
            agent_messages_per_second: 10,
            agent_message_burst: 40,
            frames_per_second: 20,
            frame_burst: 40,
            flood_strikes: 20,
            flood_window: Duration::from_secs(10),
            kb_requests_per_minute: 60,
        }
    }
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            default_capacity: 3,
            agent_grace: Duration::from_secs(30),
            visitor_grace: Duration::from_secs(120),
            categories: [
                "security",
                "account",
                "transaction",
                "feature_question",
                "other",
            ]
            .map(String::from)
            .to_vec(),
            default_category: "other".to_string(),
        }
    }
}

impl Default for Transcripts {
    fn default() -> Self {
        Self {
            batch_size: 4096,
            flush_interval: Duration::from_secs(1),
            max_pending: 100_000,
            group_commit_wait: Duration::from_millis(5),
            replay_window: 128,
            store_busy_timeout: Duration::from_secs(5),
            fsync: false,
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// A setting that stopped start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("invalid configuration: {0}")]
    Load(String),
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Loads the configuration: defaults < `PARLEY_*` environment < TOML file < `flags`.
///
/// `flags` is any figment provider (the command line gives `ServeArgs::as_overrides`), so this
/// module needs nothing from the command line's.
///
/// # Errors
/// A named [`ConfigError`] for a missing file, an unknown key, a value of the wrong type or a
/// value out of range.
pub fn load(file: Option<&Path>, flags: impl Provider) -> Result<Config, ConfigError> {
    let file = match file {
        Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.to_path_buf())),
        Some(path) => Some(path.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    };
    let mut figment = Figment::from(Serialized::defaults(Config::default())).merge(environment());
    if let Some(path) = file {
        figment = figment.merge(Toml::file_exact(path));
    }
    from_figment(figment.merge(flags))
}

/// `PARLEY_LIMITS__FRAME_MAX_BYTES=8192` sets `limits.frame_max_bytes`. `PARLEY_CONFIG` names
/// the file and is not a setting.
fn environment() -> Env {
    Env::prefixed("PARLEY_")
        .ignore(&["CONFIG"])
        .split("__")
        .lowercase(true)
}

/// Extracts and validates. Separate from [`load`] so tests can supply their own providers.
///
/// # Errors
/// As [`load`].
pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
    let config: Config = figment.extract().map_err(|e| {
        let messages: Vec<String> = e.into_iter().map(|e| describe(&e)).collect();
        ConfigError::Load(messages.join("; "))
    })?;
    config.validate()?;
    Ok(config)
}

/// One error of figment's, with its key written as the TOML path the documentation and
/// [`ConfigError::Invalid`] use (`webhooks[0].events[1]`, where figment says `webhooks.0.events.1`),
/// and where the value came from (the file, or the environment).
fn describe(e: &figment::Error) -> String {
    let mut line = e.kind.to_string();
    if !e.path.is_empty() {
        line.push_str(&format!(" for key `{}`", toml_path(&e.path)));
    }
    if let Some(md) = &e.metadata {
        match &md.source {
            Some(source) => line.push_str(&format!(" in {source} {}", md.name)),
            None => line.push_str(&format!(" in {}", md.name)),
        }
    }
    line
}

/// `["teams", "0", "hours"]` as `teams[0].hours`.
fn toml_path(keys: &[String]) -> String {
    let mut path = String::new();
    for key in keys {
        if key.parse::<usize>().is_ok() {
            path.push_str(&format!("[{key}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
        }
    }
    path
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("must be between {min} and {max} (got {value})"),
        ));
    }
    Ok(())
}

fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// `scheme://host[:port]`, nothing after: what browsers send as `Origin`.
fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '*', ' '])
}

impl Config {
    /// Checks every value; the error names the first bad setting.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        check_range("limits.max_connections", l.max_connections, 1, 1_000_000)?;
        check_range(
            "limits.frame_max_bytes",
            l.frame_max_bytes,
            1024,
            1024 * 1024,
        )?;
        check_range(
            "limits.text_max_chars",
            l.text_max_chars,
            1,
            l.frame_max_bytes,
        )?;
        check_range("limits.outbound_queue", l.outbound_queue, 1, 65_536)?;
        for (key, d) in [
            ("limits.hello_timeout", l.hello_timeout),
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.ping_interval", l.ping_interval),
            ("limits.header_read_timeout", l.header_read_timeout),
            ("rate_limits.flood_window", self.rate_limits.flood_window),
            (
                "transcripts.flush_interval",
                self.transcripts.flush_interval,
            ),
            ("shutdown.drain_timeout", self.shutdown.drain_timeout),
            ("kb.refresh_interval", self.kb.refresh_interval),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        if self.transcripts.group_commit_wait > Duration::from_secs(1) {
            return Err(invalid(
                "transcripts.group_commit_wait",
                "must be at most 1s: every ack waits for it",
            ));
        }
        if l.ping_interval >= l.idle_timeout {
            return Err(invalid(
                "limits.ping_interval",
                format!(
                    "must be shorter than limits.idle_timeout ({}), or idle clients are closed before they are pinged",
                    humantime::format_duration(l.idle_timeout)
                ),
            ));
        }
        let r = &self.rate_limits;
        for (key, v) in [
            (
                "rate_limits.visitor_messages_per_second",
                r.visitor_messages_per_second,
            ),
            ("rate_limits.visitor_message_burst", r.visitor_message_burst),
            (
                "rate_limits.visitor_conversations_per_hour",
                r.visitor_conversations_per_hour,
            ),
            (
                "rate_limits.ip_connections_per_minute",
                r.ip_connections_per_minute,
            ),
            (
                "rate_limits.agent_messages_per_second",
                r.agent_messages_per_second,
            ),
            ("rate_limits.agent_message_burst", r.agent_message_burst),
            ("rate_limits.frames_per_second", r.frames_per_second),
            ("rate_limits.frame_burst", r.frame_burst),
            ("rate_limits.flood_strikes", r.flood_strikes),
            (
                "rate_limits.kb_requests_per_minute",
                r.kb_requests_per_minute,
            ),
            ("routing.default_capacity", self.routing.default_capacity),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let cats = &self.routing.categories;
        if cats.is_empty() {
            return Err(invalid("routing.categories", "needs at least one category"));
        }
        for (i, c) in cats.iter().enumerate() {
            let ok = (1..=32).contains(&c.len())
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
            if !ok {
                return Err(invalid(
                    "routing.categories",
                    format!("{c:?} must be 1 to 32 characters of a-z, 0-9 and _"),
                ));
            }
            if cats[..i].contains(c) {
                return Err(invalid(
                    "routing.categories",
                    format!("{c:?} is listed twice"),
                ));
            }
        }
        if !cats.contains(&self.routing.default_category) {
            return Err(invalid(
                "routing.default_category",
                format!(
                    "{:?} is not in routing.categories",
                    self.routing.default_category
                ),
            ));
        }
        let t = &self.transcripts;
        check_range("transcripts.batch_size", t.batch_size, 1, 100_000)?;
        check_range(
            "transcripts.max_pending",
            t.max_pending,
            t.batch_size,
            100_000_000,
        )?;
        check_range("transcripts.replay_window", t.replay_window, 1, 100_000)?;
        self.redis.validate()?;
        for (i, h) in self.auth.admin_token_sha256.iter().enumerate() {
            if !is_sha256_hex(h) {
                return Err(invalid(
                    &format!("auth.admin_token_sha256[{i}]"),
                    "must be 64 hex characters (make one with `parley hash-token`)",
                ));
            }
        }
        if let Some(secret) = &self.auth.visitor_identity_secret {
            if secret.len() < 16 {
                return Err(invalid(
                    "auth.visitor_identity_secret",
                    "must be at least 16 bytes",
                ));
            }
        } else if self.auth.require_verified_visitors {
            return Err(invalid(
                "auth.require_verified_visitors",
                "needs auth.visitor_identity_secret to check signatures with",
            ));
        }
        for origin in &self.auth.allowed_origins {
            if !is_origin(origin) {
                return Err(invalid(
                    "auth.allowed_origins",
                    format!("{origin:?} must be scheme://host[:port], with no path, wildcard or trailing slash"),
                ));
            }
        }
        for (i, a) in self.agents.iter().enumerate() {
            let key = |field: &str| format!("agents[{i}].{field}");
            if !is_id(&a.id) {
                return Err(invalid(
                    &key("id"),
                    format!(
                        "{:?} must be 1 to 64 characters of letters, digits and - _ . : @",
                        a.id
                    ),
                ));
            }
            if self.agents[..i].iter().any(|b| b.id == a.id) {
                return Err(invalid(&key("id"), format!("{:?} is listed twice", a.id)));
            }
            if !is_sha256_hex(&a.token_sha256) {
                return Err(invalid(
                    &key("token_sha256"),
                    "must be 64 hex characters (make one with `parley hash-token`)",
                ));
            }
            if a.capacity == Some(0) {
                return Err(invalid(&key("capacity"), "must be at least 1"));
            }
            for team in &a.teams {
                if !self.teams.iter().any(|t| &t.id == team) {
                    return Err(invalid(
                        &key("teams"),
                        format!("{team:?} is not a [[teams]] id"),
                    ));
                }
            }
        }
        self.validate_desk()
    }

    fn validate_desk(&self) -> Result<(), ConfigError> {
        let team_known = |id: &str| self.teams.iter().any(|t| t.id == id);
        for (i, t) in self.teams.iter().enumerate() {
            let key = |field: &str| format!("teams[{i}].{field}");
            let id_ok = (1..=32).contains(&t.id.len())
                && t.id.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')
                });
            if !id_ok {
                return Err(invalid(
                    &key("id"),
                    format!("{:?} must be 1 to 32 characters of a-z, 0-9, _ and -", t.id),
                ));
            }
            if self.teams[..i].iter().any(|u| u.id == t.id) {
                return Err(invalid(&key("id"), format!("{:?} is listed twice", t.id)));
            }
            if t.name.trim().is_empty() || t.name.chars().count() > 64 {
                return Err(invalid(&key("name"), "must be 1 to 64 characters"));
            }
        }
        for (name, c) in &self.categories {
            let key = |field: &str| format!("categories.{name}.{field}");
            if !self.routing.categories.contains(name) {
                return Err(invalid(
                    &format!("categories.{name}"),
                    format!("{name:?} is not in routing.categories"),
                ));
            }
            if let Some(team) = &c.team {
                if !team_known(team) {
                    return Err(invalid(
                        &key("team"),
                        format!("{team:?} is not a [[teams]] id"),
                    ));
                }
            }
            if c.first_response_target.is_some_and(|d| d.is_zero()) {
                return Err(invalid(
                    &key("first_response_target"),
                    "must be longer than zero",
                ));
            }
        }
        let d = &self.desk;
        check_range("desk.sla_warning_percent", d.sla_warning_percent, 1, 99)?;
        for (key, v) in [
            ("desk.first_response_target", d.first_response_target),
            ("desk.sla_check_interval", d.sla_check_interval),
            ("desk.csat_window", d.csat_window),
        ] {
            if v.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        if let Some(team) = &d.escalation_team {
            if !team_known(team) {
                return Err(invalid(
                    "desk.escalation_team",
                    format!("{team:?} is not a [[teams]] id"),
                ));
            }
        } else if d.sla_breach_action == BreachAction::Escalate {
            return Err(invalid(
                "desk.sla_breach_action",
                "\"escalate\" needs desk.escalation_team",
            ));
        }
        if jiff::tz::TimeZone::get(&d.timezone).is_err() {
            return Err(invalid(
                "desk.timezone",
                format!("{:?} is not a known IANA time zone", d.timezone),
            ));
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            w.validate(i)?;
        }
        self.webhook_delivery.validate()?;
        Ok(())
    }

    /// The store URL: `database`, or the SQLite file in `data_dir`.
    pub fn database_url(&self) -> String {
        self.database.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("parley.db").display()
            )
        })
    }

    /// Whether the demo agent and admin (token `demo`) are on.
    pub fn demo_enabled(&self) -> bool {
        self.auth.demo.unwrap_or_else(|| {
            self.agents.is_empty()
                && self.auth.admin_token_sha256.is_empty()
                && self.listen.ip().is_loopback()
        })
    }
}

/// Hex SHA-256 of a token, as `token_sha256` and `admin_token_sha256` expect.
pub fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn with_toml(toml: &str) -> Result<Config, ConfigError> {
        from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)),
        )
    }

    #[test]
    fn debug_output_hides_the_identity_secret() {
        let mut c = Config::default();
        c.auth.visitor_identity_secret = Some("very-secret-value-1234".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret-value-1234"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn the_defaults_are_valid() {
        Config::default().validate().unwrap();
        assert!(Config::default().demo_enabled());
    }

    #[test]
    fn toml_sets_nested_values_and_durations() {
        let c = with_toml(
            "[limits]\nframe_max_bytes = 8192\nhello_timeout = \"250ms\"\n[[agents]]\nid = \"alice\"\nname = \"Alice\"\ntoken_sha256 = \"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"\n",
        )
        .unwrap();
        assert_eq!(c.limits.frame_max_bytes, 8192);
        assert_eq!(c.limits.hello_timeout, Duration::from_millis(250));
        assert_eq!(c.agents[0].id, "alice");
        assert!(!c.demo_enabled());
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = with_toml("[limits]\nframe_max_byte = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("frame_max_byte"), "{err}");
    }

    #[test]
    fn a_bad_value_is_named() {
        let err = with_toml("[limits]\nframe_max_bytes = 12\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.frame_max_bytes"), "{err}");
        let err = with_toml("[limits]\nframe_max_bytes = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("frame_max_bytes"), "{err}");
        let err = with_toml("[routing]\ndefault_category = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("routing.default_category"), "{err}");
        let err = with_toml("[auth]\nallowed_origins = [\"https://example.com/\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.allowed_origins"), "{err}");
    }

    #[test]
    fn origins_are_kept_exactly() {
        let c = with_toml(
            "[auth]\nallowed_origins = [\"https://example.com\", \"http://localhost:3000\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.auth.allowed_origins,
            vec!["https://example.com", "http://localhost:3000"]
        );
    }

    #[test]
    fn the_redis_section_is_read_and_checked() {
        let file = Toml::string(
            "[redis]\nurl = \"redis://10.0.0.5:6379/0\"\npresence_ttl = \"5s\"\ncluster = true\n",
        );
        let c = from_figment(Figment::from(Serialized::defaults(Config::default())).merge(file))
            .unwrap();
        assert_eq!(c.redis.url.as_deref(), Some("redis://10.0.0.5:6379/0"));
        assert_eq!(c.redis.presence_ttl, Duration::from_secs(5));
        assert!(c.redis.cluster);
        let bad = Toml::string("[redis]\nurl = \"redis://x\"\npresence_ttl = \"0s\"\n");
        let err = from_figment(Figment::from(Serialized::defaults(Config::default())).merge(bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.presence_ttl"), "{err}");
        assert_eq!(
            Config::default().redis.url,
            None,
            "a single node unless told otherwise"
        );
    }

    #[test]
    fn webhooks_are_read_with_all_events_by_default() {
        let c = with_toml(
            "[[webhooks]]\nurl = \"https://crm.example.com/hook?token=x\"\nsecret = \"0123456789abcdef\"\n[[webhooks]]\nurl = \"http://127.0.0.1:9000/\"\nsecret = \"0123456789abcdef\"\nevents = [\"message.created\"]\n[webhook_delivery]\nbackoff_base = \"20ms\"\nbackoff_cap = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(c.webhooks[0].events.len(), 6, "all events when absent");
        assert_eq!(c.webhooks[1].events, [EventType::MessageCreated]);
        assert_eq!(c.webhook_delivery.backoff_base, Duration::from_millis(20));
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("0123456789abcdef") && !printed.contains("token=x"),
            "{printed}"
        );
    }

    #[test]
    fn business_hours_parse_themselves_while_the_file_is_read() {
        let team = "[[teams]]\nid = \"support\"\nname = \"Support\"\n[teams.hours]\ntimezone = \"Asia/Shanghai\"\n";
        let c = with_toml(&format!(
            "{team}days = [\"mon\", \"fri\"]\nopen = \"09:00\"\nclose = \"18:00\"\n"
        ))
        .unwrap();
        let hours = c.teams[0].hours.as_ref().expect("parsed");
        // Monday 2026-11-30 10:00 in Shanghai is 02:00 UTC; 18:00 local is closed.
        assert!(hours.is_open(1_796_004_000_000));
        assert!(!hours.is_open(1_796_032_800_000));
        // Printed back as written, so layering and the documentation test see the same keys.
        let printed = serde_json::to_value(&c.teams[0]).unwrap();
        assert_eq!(printed["hours"]["days"], serde_json::json!(["mon", "fri"]));
        assert_eq!(printed["hours"]["close"], "18:00");
        for (fields, named) in [
            (
                "days = [\"monday\"]\nopen = \"09:00\"\nclose = \"18:00\"\n",
                "days",
            ),
            (
                "days = [\"mon\"]\nopen = \"9am\"\nclose = \"18:00\"\n",
                "open",
            ),
            (
                "days = [\"mon\"]\nopen = \"19:00\"\nclose = \"18:00\"\n",
                "close",
            ),
        ] {
            let err = with_toml(&format!("{team}{fields}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`teams[0].hours`") && err.contains(named),
                "{fields}: {err}"
            );
        }
    }

    #[test]
    fn bad_webhook_settings_are_named() {
        let ok_secret = "secret = \"0123456789abcdef\"\n";
        for (toml, key) in [
            (
                format!("[[webhooks]]\nurl = \"ftp://x\"\n{ok_secret}"),
                "webhooks[0].url",
            ),
            (
                format!("[[webhooks]]\nurl = \"not a url\"\n{ok_secret}"),
                "webhooks[0].url",
            ),
            (
                "[[webhooks]]\nurl = \"https://x\"\nsecret = \"short\"\n".to_string(),
                "webhooks[0].secret",
            ),
            (
                format!("[[webhooks]]\nurl = \"https://x\"\n{ok_secret}events = [\"message.deleted\"]\n"),
                "webhooks[0].events",
            ),
            (
                format!("[[webhooks]]\nurl = \"https://x\"\n{ok_secret}events = []\n"),
                "webhooks[0].events",
            ),
            (
                "[webhook_delivery]\nbackoff_base = \"10s\"\nbackoff_cap = \"1s\"\n".to_string(),
                "webhook_delivery.backoff_cap",
            ),
            (
                "[webhook_delivery]\nmax_attempts = 0\n".to_string(),
                "webhook_delivery.max_attempts",
            ),
            (
                "[webhook_delivery]\nqueue_size = 0\n".to_string(),
                "webhook_delivery.queue_size",
            ),
            (
                "[webhook_delivery]\ntimeout = \"0s\"\n".to_string(),
                "webhook_delivery.timeout",
            ),
        ] {
            let err = with_toml(&toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let err = with_toml("[[webhooks]]\nurl = \"https://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("secret"), "a secret is required: {err}");
    }
}
