//! First-response service levels: each conversation's clock, as a pure function of time.
//!
//! The clock starts when a conversation is created and stops at the first agent reply (a
//! private note is not a reply). Before the deadline the conversation is `pending`, then
//! `warning` once `warning_percent` of the target has passed, then `breached`. After the reply
//! it is `met` or `missed` for good. The engines check open conversations every
//! `desk.sla_check_interval` and tell agents about each move to `warning` or `breached`.

use serde::{Deserialize, Serialize};

use crate::domain::UnixMillis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaState {
    /// No reply yet, well within the target.
    Pending,
    /// No reply yet, and most of the target has passed.
    Warning,
    /// No reply, and the target has passed.
    Breached,
    /// Replied within the target.
    Met,
    /// Replied after the target.
    Missed,
}

impl SlaState {
    pub fn as_str(self) -> &'static str {
        match self {
            SlaState::Pending => "pending",
            SlaState::Warning => "warning",
            SlaState::Breached => "breached",
            SlaState::Met => "met",
            SlaState::Missed => "missed",
        }
    }

    /// Whether the first response is still awaited.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            SlaState::Pending | SlaState::Warning | SlaState::Breached
        )
    }
}

/// One conversation's first-response clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstResponseClock {
    pub created_at: UnixMillis,
    pub due_at: UnixMillis,
    pub first_response_at: Option<UnixMillis>,
}

impl FirstResponseClock {
    pub fn new(created_at: UnixMillis, target_ms: u64) -> Self {
        Self {
            created_at,
            due_at: created_at.saturating_add(target_ms),
            first_response_at: None,
        }
    }

    /// When `warning_percent` (1..=99) of the target has passed.
    pub fn warn_at(&self, warning_percent: u32) -> UnixMillis {
        let target = self.due_at.saturating_sub(self.created_at);
        self.created_at + target * u64::from(warning_percent.min(100)) / 100
    }

    pub fn state(&self, now: UnixMillis, warning_percent: u32) -> SlaState {
        match self.first_response_at {
            Some(at) if at <= self.due_at => SlaState::Met,
            Some(_) => SlaState::Missed,
            // Strictly after: a reply at the deadline itself is in time (`Met`), so the clock
            // cannot call that same instant a breach.
            None if now > self.due_at => SlaState::Breached,
            None if now >= self.warn_at(warning_percent) => SlaState::Warning,
            None => SlaState::Pending,
        }
    }

    /// Milliseconds from creation to the first reply, once there is one.
    pub fn first_response_ms(&self) -> Option<u64> {
        self.first_response_at
            .map(|at| at.saturating_sub(self.created_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_through_its_states() {
        let mut c = FirstResponseClock::new(1_000, 100_000);
        assert_eq!(c.due_at, 101_000);
        assert_eq!(c.warn_at(75), 76_000);
        assert_eq!(c.state(75_999, 75), SlaState::Pending);
        assert_eq!(c.state(76_000, 75), SlaState::Warning);
        assert_eq!(
            c.state(101_000, 75),
            SlaState::Warning,
            "the deadline itself is in time"
        );
        assert_eq!(c.state(101_001, 75), SlaState::Breached);
        c.first_response_at = Some(101_000);
        assert_eq!(
            c.state(500_000, 75),
            SlaState::Met,
            "a reply at the deadline is in time"
        );
        assert_eq!(c.first_response_ms(), Some(100_000));
        c.first_response_at = Some(101_001);
        assert_eq!(c.state(101_001, 75), SlaState::Missed);
        assert!(!SlaState::Missed.is_open());
        assert!(SlaState::Breached.is_open());
    }
}
