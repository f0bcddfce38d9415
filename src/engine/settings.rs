//! What the engines need from the configuration: one [`EngineSettings`] for both, built in one
//! place ([`EngineSettings::from_config`]), plus the few Redis-only fields in
//! [`super::redis::RedisSettings`].
//!
//! Both engines read the same desk, routing and replay settings, so a value means the same thing
//! on one node and on several (docs/architecture.md lists what each engine does with them).

use std::collections::HashMap;
use std::time::Duration;

use crate::config::Config;
use crate::desk::teams::Directory;
use crate::desk::DeskSettings;
use crate::domain::AgentId;

/// The settings every engine reads, whichever topology.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub categories: Vec<String>,
    pub agent_grace: Duration,
    pub visitor_grace: Duration,
    /// Messages per conversation kept for resume (in memory on one node, the stream's length on
    /// Redis); older ones are served by the store.
    pub replay_window: usize,
    pub default_capacity: u32,
    /// Names and capacities of configured agents, to restore assignments after a restart and to
    /// name agents to the other side.
    pub agents: HashMap<AgentId, (String, u32)>,
    /// `transcripts.max_pending`: past it new messages are refused (`busy`).
    pub max_pending: usize,
    /// The most bytes of messages one `history` page carries (at least one message): twice
    /// `limits.frame_max_bytes`, so that a page, with its newest message whatever its size,
    /// stays within what a socket buffers for one write (4 KiB + 4 × `frame_max_bytes`,
    /// `http::sockets`). A larger page would fail the write and drop the socket.
    pub history_max_bytes: usize,
    /// The most messages an agent taking a conversation over is sent with its `assigned` (the
    /// newest; older ones by `history`): half of `limits.outbound_queue`, so that a takeover
    /// never fills the agent's outbound queue by itself and closes it as too slow (4009).
    pub takeover_max: usize,
    /// Teams, where categories go, business hours, first-response targets.
    pub directory: Directory,
    pub desk: DeskSettings,
}

impl EngineSettings {
    /// How many sequence numbers each open conversation passes over after a crash: more than
    /// the messages that can have been delivered and not yet stored when the process died,
    /// which `max_pending` bounds (every message reserves its room before it is sequenced).
    pub fn seq_skip_after_crash(&self) -> u64 {
        self.max_pending as u64 + 1
    }

    /// The engine settings of `config`, with the agents' names and capacities as the
    /// authenticator knows them.
    pub fn from_config(config: &Config, agents: HashMap<AgentId, (String, u32)>) -> Self {
        Self {
            categories: config.routing.categories.clone(),
            agent_grace: config.routing.agent_grace,
            visitor_grace: config.routing.visitor_grace,
            replay_window: config.transcripts.replay_window,
            default_capacity: config.routing.default_capacity,
            agents,
            max_pending: config.transcripts.max_pending,
            history_max_bytes: 2 * config.limits.frame_max_bytes,
            takeover_max: (config.limits.outbound_queue / 2).max(1),
            directory: Directory::from_config(config),
            desk: DeskSettings::from_config(&config.desk),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_follow_the_configuration() {
        let mut config = Config::default();
        config.transcripts.max_pending = 7;
        config.desk.reopen_window = Duration::from_secs(3 * 24 * 3600);
        let s = EngineSettings::from_config(&config, HashMap::new());
        assert_eq!(s.max_pending, 7);
        assert_eq!(s.desk.reopen_window, Duration::from_secs(3 * 24 * 3600));
        assert_eq!(s.categories, config.routing.categories);
    }
}
