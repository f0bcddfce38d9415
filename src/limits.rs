//! Rate limits: per visitor, per agent, per IP and per socket, all GCRA via `governor`.
//!
//! A frame over a limit is refused with `error{code: "rate_limited", retry_after_ms}` and is
//! neither stored nor relayed; the socket stays open. Every refusal (and every malformed frame)
//! is also a *strike*; a socket that collects `flood_strikes` strikes within `flood_window` is
//! closed with 1008, because a client that ignores `retry_after_ms` is not going to start.
//!
//! Keyed state grows with the number of keys, so [`RateLimits::retain_recent`] runs every minute
//! to forget keys whose limit is back to full.
//!
//! With several nodes ([`RateLimits::with_shared`]), the per-user budgets (visitor messages,
//! visitor conversations, agent messages) live in Redis: one GCRA cell per verified identity and
//! limit, updated by a Lua script on Redis' clock, so a user with sockets on two nodes has one
//! budget, and visitors behind one NAT still have one each. When Redis does not answer within
//! [`SHARED_TIMEOUT`], the node falls back to its own local budget for that user (at worst one
//! budget per node during an outage, never none). Per-IP and per-socket limits stay per node:
//! they protect the node itself.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config;
use crate::domain::{AgentId, VisitorId};

/// How long a shared-budget check may take before the local budget decides instead.
pub const SHARED_TIMEOUT: Duration = Duration::from_millis(500);

/// One GCRA cell's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Cell {
    /// Milliseconds between requests at the sustained rate.
    pub emission_ms: f64,
    pub burst: u32,
}

impl Cell {
    /// `per_second` requests a second, `burst` at once.
    pub fn per_second(per_second: u32, burst: u32) -> Self {
        Self {
            emission_ms: 1000.0 / f64::from(per_second.max(1)),
            burst: burst.max(1),
        }
    }

    /// `per_hour` requests an hour, all of them at once if unused (as `Quota::per_hour`).
    pub fn per_hour(per_hour: u32) -> Self {
        Self {
            emission_ms: 3_600_000.0 / f64::from(per_hour.max(1)),
            burst: per_hour.max(1),
        }
    }
}

/// Per-user budgets kept in Redis, shared by every node.
pub struct SharedBudget {
    pub redis: crate::engine::redis::conn::Conn,
    pub keys: crate::engine::redis::keys::Keys,
    pub visitor_messages: Cell,
    pub visitor_conversations: Cell,
    pub agent_messages: Cell,
}

impl SharedBudget {
    /// The cells of `settings`, in Redis.
    pub fn new(
        redis: crate::engine::redis::conn::Conn,
        keys: crate::engine::redis::keys::Keys,
        s: &config::RateLimits,
    ) -> Self {
        Self {
            redis,
            keys,
            visitor_messages: Cell::per_second(
                s.visitor_messages_per_second,
                s.visitor_message_burst,
            ),
            visitor_conversations: Cell::per_hour(s.visitor_conversations_per_hour),
            agent_messages: Cell::per_second(s.agent_messages_per_second, s.agent_message_burst),
        }
    }

    /// Takes one from the cell at `key`. `None` when Redis did not answer in time: the caller
    /// decides locally instead.
    async fn take(&self, key: String, cell: Cell) -> Option<Result<(), Limited>> {
        let mut redis = self.redis.clone();
        let mut invocation = crate::engine::redis::GCRA.prepare_invoke();
        invocation.key(key).arg(cell.emission_ms).arg(cell.burst);
        let check = invocation.invoke_async::<(i64, i64)>(&mut redis);
        match tokio::time::timeout(SHARED_TIMEOUT, check).await {
            Ok(Ok((1, _))) => Some(Ok(())),
            Ok(Ok((_, wait_ms))) => Some(Err(Limited {
                retry_after: Duration::from_millis(wait_ms.max(1) as u64),
            })),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "shared rate limit unavailable; using the local one");
                None
            }
            Err(_) => {
                tracing::debug!("shared rate limit timed out; using the local one");
                None
            }
        }
    }
}

type Keyed<K, C> =
    RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A refusal, with how long until the same request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// Milliseconds, rounded up so that a client retrying after exactly this long passes.
    pub fn retry_after_ms(&self) -> u64 {
        let ms = self.retry_after.as_millis();
        let rounded = if self.retry_after.subsec_nanos() % 1_000_000 == 0 {
            ms
        } else {
            ms + 1
        };
        u64::try_from(rounded).unwrap_or(u64::MAX).max(1)
    }
}

/// Which limit refused something: the `limit` label of `parley_rate_limited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    VisitorMessages,
    VisitorConversations,
    AgentMessages,
    IpConnections,
    SocketFrames,
    /// The public knowledge-base endpoints (search, deflections), per client address.
    KbRequests,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::VisitorMessages => "visitor_messages",
            Limit::VisitorConversations => "visitor_conversations",
            Limit::AgentMessages => "agent_messages",
            Limit::IpConnections => "ip_connections",
            Limit::SocketFrames => "socket_frames",
            Limit::KbRequests => "kb_requests",
        }
    }
}

/// The process-wide limits; one per server.
pub struct RateLimits<C: Clock = DefaultClock> {
    clock: C,
    visitor_messages: Keyed<VisitorId, C>,
    visitor_conversations: Keyed<VisitorId, C>,
    agent_messages: Keyed<AgentId, C>,
    ip_connections: Keyed<IpAddr, C>,
    /// The public knowledge-base endpoints: anyone may call them, so each address has a budget.
    kb_requests: Keyed<IpAddr, C>,
    /// Per-socket quotas, instantiated for each socket by [`RateLimits::socket_guard`].
    frame_quota: Quota,
    /// Set when several nodes share Redis: visitor message budgets live there.
    shared: Option<SharedBudget>,
    strike_quota: Quota,
}

fn nz(n: u32) -> NonZeroU32 {
    // Config validation refuses zero; clamp anyway rather than panic on a logic slip.
    NonZeroU32::new(n.max(1)).expect("non-zero")
}

impl RateLimits<DefaultClock> {
    pub fn new(settings: &config::RateLimits) -> Self {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    pub fn with_clock(s: &config::RateLimits, clock: C) -> Self {
        let visitor_messages = Quota::per_second(nz(s.visitor_messages_per_second))
            .allow_burst(nz(s.visitor_message_burst));
        let agent_messages = Quota::per_second(nz(s.agent_messages_per_second))
            .allow_burst(nz(s.agent_message_burst));
        let frame_quota = Quota::per_second(nz(s.frames_per_second)).allow_burst(nz(s.frame_burst));
        let strikes = nz(s.flood_strikes);
        let strike_quota = Quota::with_period(s.flood_window / strikes.get())
            .unwrap_or_else(|| Quota::per_second(strikes))
            .allow_burst(strikes);
        Self {
            visitor_messages: RateLimiter::dashmap_with_clock(visitor_messages, clock.clone()),
            visitor_conversations: RateLimiter::dashmap_with_clock(
                Quota::per_hour(nz(s.visitor_conversations_per_hour)),
                clock.clone(),
            ),
            agent_messages: RateLimiter::dashmap_with_clock(agent_messages, clock.clone()),
            ip_connections: RateLimiter::dashmap_with_clock(
                Quota::per_minute(nz(s.ip_connections_per_minute)),
                clock.clone(),
            ),
            kb_requests: RateLimiter::dashmap_with_clock(
                Quota::per_minute(nz(s.kb_requests_per_minute)),
                clock.clone(),
            ),
            frame_quota,
            strike_quota,
            shared: None,
            clock,
        }
    }

    /// Keeps the per-user budgets in Redis, shared with the other nodes.
    pub fn with_shared(mut self, shared: SharedBudget) -> Self {
        self.shared = Some(shared);
        self
    }

    fn check<K: Hash + Eq + Clone>(&self, limiter: &Keyed<K, C>, key: &K) -> Result<(), Limited> {
        limiter.check_key(key).map_err(|not_until| Limited {
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// # Errors
    /// [`Limited`] when the visitor sends faster than its message quota (across all nodes when
    /// the budget is shared).
    pub async fn visitor_message(&self, visitor: &VisitorId) -> Result<(), Limited> {
        if let Some(shared) = &self.shared {
            let key = shared.keys.rate(visitor);
            if let Some(decided) = shared.take(key, shared.visitor_messages).await {
                return decided;
            }
        }
        self.check(&self.visitor_messages, visitor)
    }

    /// # Errors
    /// [`Limited`] when the visitor opened too many conversations this hour (across all nodes
    /// when the budget is shared).
    pub async fn visitor_conversation(&self, visitor: &VisitorId) -> Result<(), Limited> {
        if let Some(shared) = &self.shared {
            let key = shared.keys.visitor_conversation_rate(visitor);
            if let Some(decided) = shared.take(key, shared.visitor_conversations).await {
                return decided;
            }
        }
        self.check(&self.visitor_conversations, visitor)
    }

    /// # Errors
    /// [`Limited`] when the agent sends faster than its message quota (across all nodes when
    /// the budget is shared).
    pub async fn agent_message(&self, agent: &AgentId) -> Result<(), Limited> {
        if let Some(shared) = &self.shared {
            let key = shared.keys.agent_rate(agent);
            if let Some(decided) = shared.take(key, shared.agent_messages).await {
                return decided;
            }
        }
        self.check(&self.agent_messages, agent)
    }

    /// # Errors
    /// [`Limited`] when this address opened too many connections this minute.
    pub fn ip_connection(&self, ip: IpAddr) -> Result<(), Limited> {
        self.check(&self.ip_connections, &ip)
    }

    /// # Errors
    /// [`Limited`] when this address called the public knowledge-base endpoints too often this
    /// minute.
    pub fn kb_request(&self, ip: IpAddr) -> Result<(), Limited> {
        self.check(&self.kb_requests, &ip)
    }

    /// Fresh per-socket limits: all frames, and the strike count that detects a flood.
    pub fn socket_guard(&self) -> SocketGuard<C> {
        SocketGuard {
            clock: self.clock.clone(),
            frames: RateLimiter::direct_with_clock(self.frame_quota, self.clock.clone()),
            strikes: RateLimiter::direct_with_clock(self.strike_quota, self.clock.clone()),
        }
    }

    /// Forgets keys whose quota is full again, so memory tracks active users only.
    pub fn retain_recent(&self) {
        self.visitor_messages.retain_recent();
        self.visitor_conversations.retain_recent();
        self.agent_messages.retain_recent();
        self.ip_connections.retain_recent();
        self.kb_requests.retain_recent();
    }
}

/// Limits of one socket. Small: two GCRA cells.
pub struct SocketGuard<C: Clock = DefaultClock> {
    clock: C,
    frames: Direct<C>,
    strikes: Direct<C>,
}

impl<C: Clock> SocketGuard<C> {
    /// # Errors
    /// [`Limited`] when this socket sends frames faster than its quota.
    pub fn frame(&self) -> Result<(), Limited> {
        self.frames.check().map_err(|not_until| Limited {
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// Records a refused or malformed frame. Returns true when the socket is flooding and must
    /// be closed with 1008.
    pub fn strike(&self) -> bool {
        self.strikes.check().is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn settings() -> config::RateLimits {
        config::RateLimits {
            visitor_messages_per_second: 1,
            visitor_message_burst: 3,
            visitor_conversations_per_hour: 2,
            ip_connections_per_minute: 2,
            agent_messages_per_second: 5,
            agent_message_burst: 5,
            frames_per_second: 10,
            frame_burst: 10,
            flood_strikes: 4,
            flood_window: Duration::from_secs(8),
            kb_requests_per_minute: 3,
        }
    }

    #[tokio::test]
    async fn visitor_messages_allow_the_burst_then_refill_at_the_rate() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings(), clock.clone());
        let v = VisitorId::parse("v1").unwrap();
        for _ in 0..3 {
            assert!(limits.visitor_message(&v).await.is_ok());
        }
        let refused = limits.visitor_message(&v).await.unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert_eq!(refused.retry_after_ms(), 1000);
        clock.advance(Duration::from_secs(1));
        assert!(limits.visitor_message(&v).await.is_ok());
        assert!(limits.visitor_message(&v).await.is_err());
        // Another visitor has its own budget.
        assert!(limits
            .visitor_message(&VisitorId::parse("v2").unwrap())
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn conversations_per_hour() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings(), clock.clone());
        let v = VisitorId::parse("v1").unwrap();
        assert!(limits.visitor_conversation(&v).await.is_ok());
        assert!(limits.visitor_conversation(&v).await.is_ok());
        let refused = limits.visitor_conversation(&v).await.unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(1800));
        clock.advance(Duration::from_secs(1800));
        assert!(limits.visitor_conversation(&v).await.is_ok());
    }

    #[test]
    fn shared_cells_match_the_local_quotas() {
        let cell = Cell::per_hour(2);
        assert_eq!((cell.emission_ms, cell.burst), (1_800_000.0, 2));
        let cell = Cell::per_second(1, 10);
        assert_eq!((cell.emission_ms, cell.burst), (1000.0, 10));
    }

    #[test]
    fn a_socket_is_flooding_after_its_strikes_within_the_window() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings(), clock.clone());
        let guard = limits.socket_guard();
        for _ in 0..4 {
            assert!(!guard.strike());
        }
        assert!(guard.strike());
        // Strikes decay: one every window/strikes = 2 s.
        clock.advance(Duration::from_secs(2));
        assert!(!guard.strike());
    }

    #[test]
    fn ip_connections_per_minute() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings(), clock);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(limits.ip_connection(ip).is_ok());
        assert!(limits.ip_connection(ip).is_ok());
        assert_eq!(
            limits.ip_connection(ip).unwrap_err().retry_after,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn kb_requests_per_minute_per_address() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings(), clock.clone());
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..3 {
            assert!(limits.kb_request(ip).is_ok());
        }
        assert_eq!(
            limits.kb_request(ip).unwrap_err().retry_after,
            Duration::from_secs(20)
        );
        assert!(limits.kb_request("127.0.0.10".parse().unwrap()).is_ok());
        clock.advance(Duration::from_secs(20));
        assert!(limits.kb_request(ip).is_ok());
    }
}
