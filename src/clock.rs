//! The wall clock the desk reads: message times, SLA deadlines, report days.
//!
//! Production uses the system clock. Tests that must control time (an SLA breaching after two
//! minutes, a scripted day of conversations for the reports) start the server with a
//! [`Clock::manual`] and move it forward; nothing sleeps for real. Timers that only bound how
//! long something waits (grace periods, timeouts) stay on tokio's clock: they are about the
//! connection, not about the record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{now_millis, UnixMillis};

/// A cheap handle to the system clock or to a clock a test moves by hand.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: milliseconds since the epoch, set by the test.
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands still at `start` until [`Clock::advance`] or [`Clock::set`] moves it.
    pub fn manual(start: UnixMillis) -> Self {
        Self {
            manual: Some(Arc::new(AtomicU64::new(start))),
        }
    }

    pub fn now_millis(&self) -> UnixMillis {
        match &self.manual {
            Some(ms) => ms.load(Ordering::SeqCst),
            None => now_millis(),
        }
    }

    /// Moves a manual clock forward; the system clock cannot be moved, so this panics on it
    /// (a test bug, not a runtime condition).
    pub fn advance(&self, by: Duration) {
        let ms = self.manual.as_ref().expect("only a manual clock moves");
        ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets a manual clock; see [`Clock::advance`].
    pub fn set(&self, to: UnixMillis) {
        let ms = self.manual.as_ref().expect("only a manual clock moves");
        ms.store(to, Ordering::SeqCst);
    }

    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = Clock::manual(1_000);
        let copy = clock.clone();
        assert_eq!(clock.now_millis(), 1_000);
        copy.advance(Duration::from_secs(2));
        assert_eq!(clock.now_millis(), 3_000, "clones share the time");
        clock.set(10);
        assert_eq!(copy.now_millis(), 10);
    }

    #[test]
    fn the_system_clock_follows_the_wall() {
        let before = now_millis();
        let read = Clock::system().now_millis();
        assert!(read >= before && read <= now_millis());
    }
}
