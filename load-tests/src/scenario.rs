//! Scenarios: small TOML files that say who connects, how fast, and what they do.
//!
//! A scenario describes behaviour only; where it runs (`--url`, `--target`) and how it is split
//! over processes (`--shard`) are flags, so the same file drives Parley, the bare relay and the
//! Socket.IO peer. Every struct denies unknown fields: a typo stops the run with the key's name.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Node URLs (`ws://host:port`, no path). `--url` replaces them. Several nodes: clients are
    /// spread over them as `placement` says.
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub placement: Placement,
    /// Source addresses 127.0.0.1 .. 127.0.0.N: each gives about 28,000 ephemeral ports.
    #[serde(default = "defaults::source_addresses")]
    pub source_addresses: u8,
    /// The steady window, after every client has arrived and `settle` has passed. Throughput is
    /// measured over it.
    #[serde(with = "humantime_serde", default = "defaults::duration")]
    pub duration: Duration,
    /// Pause between "everyone connected" and the steady window (lets RSS settle before the
    /// idle-memory reading).
    #[serde(with = "humantime_serde", default = "defaults::settle")]
    pub settle: Duration,
    /// Bound on each connect (TCP + upgrade + hello/welcome) and on the arrival phase.
    #[serde(with = "humantime_serde", default = "defaults::connect_timeout")]
    pub connect_timeout: Duration,
    /// Bound on the closing phase (replies in flight, `close`/`closed`, socket close).
    #[serde(with = "humantime_serde", default = "defaults::drain_timeout")]
    pub drain_timeout: Duration,
    #[serde(default)]
    pub agents: Agents,
    pub visitors: Visitors,
    /// Every client drops its socket at once and resumes.
    #[serde(default)]
    pub reconnect: Option<Reconnect>,
    /// Read server RSS and kernel socket memory before and after everyone connected.
    #[serde(default)]
    pub measure_idle_memory: bool,
    /// Check routing at the end of the steady window: every visitor assigned or queued exactly
    /// once, and the spread of agents' loads.
    #[serde(default)]
    pub check_routing: bool,
    /// Server settings the run needs; `parley-load parley-config` writes them into parley.toml.
    #[serde(default)]
    pub server: ServerSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Client i goes to node i mod N.
    #[default]
    RoundRobin,
    /// Agents on the first node, visitors on the others (cross-node delivery); one node: same as
    /// round robin.
    Split,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agents {
    pub count: usize,
    /// Chats at once (Parley's routing enforces it; the references pair without limits).
    pub capacity: u32,
    /// Agents per second coming online; 0 = all at once.
    pub arrival_rate: f64,
    /// Pause before answering each visitor message.
    #[serde(with = "humantime_serde")]
    pub reply_think: Duration,
    /// Agent ids are `<id_prefix><n>` (n from 1), tokens `token-<id>`.
    pub id_prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Visitors {
    pub count: usize,
    /// Visitors per second arriving; 0 = all at once.
    pub arrival_rate: f64,
    /// Start a chat after `welcome`; false: connect and stay idle.
    pub chat: bool,
    /// Picked at random per chat.
    pub categories: Vec<String>,
    /// Messages per chat after `start`; absent = keep sending until the run ends; 0 = none.
    pub messages: Option<u32>,
    /// Time between two messages of one visitor.
    #[serde(with = "humantime_serde")]
    pub think: Duration,
    /// Send the next message only after the agent answered the previous one (closed loop:
    /// measures capacity); false: send every `think` whatever happens (open loop: fixed load).
    pub wait_for_reply: bool,
    /// Chats per visitor, one after the other; 0 = until the run ends.
    pub chats: u32,
    /// Who closes a chat that has sent all its messages.
    pub close_by: CloseBy,
    /// Message text length in bytes (padding after the timestamp).
    pub text_bytes: usize,
    /// Hold every chat until all visitors have connected, then start them together: a
    /// saturating scenario then does not starve late arrivals of the server.
    pub start_together: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseBy {
    #[default]
    Visitor,
    /// The agent closes after answering the chat's last message.
    Agent,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    /// When, into the steady window, every socket is dropped (TCP close, no close frame).
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Reconnects are spread at random over this; 0 = all at once.
    #[serde(with = "humantime_serde", default)]
    pub spread: Duration,
}

/// What the server needs for this scenario beyond its defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Parley's `limits.max_connections`.
    pub max_connections: usize,
    /// The target must support resume (visitor `last_seq`, agent `resume`): only Parley does.
    pub needs_resume: bool,
}

mod defaults {
    use std::time::Duration;
    pub fn source_addresses() -> u8 {
        4
    }
    pub fn duration() -> Duration {
        Duration::from_secs(10)
    }
    pub fn settle() -> Duration {
        Duration::from_secs(1)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(15)
    }
}

impl Default for Agents {
    fn default() -> Self {
        Self {
            count: 0,
            capacity: 4,
            arrival_rate: 0.0,
            reply_think: Duration::ZERO,
            id_prefix: "load-".into(),
        }
    }
}

impl Default for Visitors {
    fn default() -> Self {
        Self {
            count: 0,
            arrival_rate: 0.0,
            chat: true,
            categories: vec!["account".into()],
            messages: None,
            think: Duration::from_secs(1),
            wait_for_reply: false,
            chats: 1,
            close_by: CloseBy::Visitor,
            text_bytes: 64,
            start_together: false,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_connections: 19_500,
            needs_resume: false,
        }
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML for a scenario, or has values out of range.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        let scenario: Scenario = toml::from_str(&text)
            .with_context(|| format!("invalid scenario {}", path.display()))?;
        scenario
            .validate()
            .with_context(|| format!("invalid scenario {}", path.display()))?;
        Ok(scenario)
    }

    /// # Errors
    /// A message naming the setting at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.source_addresses >= 1 && self.source_addresses <= 250,
            "source_addresses must be between 1 and 250"
        );
        anyhow::ensure!(
            !self.visitors.chat || !self.visitors.categories.is_empty(),
            "visitors.categories needs at least one category"
        );
        anyhow::ensure!(
            !self.visitors.chat || self.agents.count > 0 || self.visitors.count == 0,
            "visitors.chat needs agents.count > 0"
        );
        anyhow::ensure!(
            self.visitors.text_bytes >= 32 && self.visitors.text_bytes <= 4000,
            "visitors.text_bytes must be between 32 and 4000"
        );
        anyhow::ensure!(
            self.agents.capacity >= 1,
            "agents.capacity must be at least 1"
        );
        for rate in [self.agents.arrival_rate, self.visitors.arrival_rate] {
            anyhow::ensure!(rate >= 0.0 && rate.is_finite(), "arrival_rate must be >= 0");
        }
        if let Some(r) = &self.reconnect {
            anyhow::ensure!(
                r.after < self.duration,
                "reconnect.after must fall inside the steady window (duration)"
            );
        }
        Ok(())
    }

    /// Agent `n` (from 1): its id and token.
    pub fn agent_identity(&self, n: usize) -> (String, String) {
        let id = format!("{}{n}", self.agents.id_prefix);
        let token = format!("token-{id}");
        (id, token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap();
                seen += 1;
            }
        }
        assert!(seen >= 5, "scenarios found: {seen}");
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err =
            toml::from_str::<Scenario>("name = \"x\"\n[visitors]\ncount = 1\nthnik = \"1s\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("thnik"), "{err}");
    }
}
