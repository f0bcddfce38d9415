//! The support-desk features beside the gateway: what a support team runs on top of the chats.
//! The gateway's core (sockets, transcripts) does not depend on them; the engines call into them
//! at the moments they care about.
//!
//! - [`csat`]: satisfaction surveys, answered against the store.
//! - [`hours`]: a team's weekly business hours in its time zone.
//! - [`teams`]: teams, which categories route to them, and service-level targets.
//! - [`sla`]: first-response clocks, warnings and breaches, as pure functions of time.
//! - [`webhooks`]: signed HTTP callbacks for desk events, so a team can connect its CRM or
//!   ticketing system.
pub mod csat;
pub mod hours;
pub mod sla;
pub mod teams;
pub mod webhooks;

use std::time::Duration;

use crate::config::{BreachAction, CsatMode};

/// What the engines need from `[desk]`.
#[derive(Debug, Clone)]
pub struct DeskSettings {
    pub sla_warning_percent: u32,
    pub sla_breach_action: BreachAction,
    pub sla_check_interval: Duration,
    pub reopen_window: Duration,
    pub csat: CsatMode,
}

impl DeskSettings {
    pub fn from_config(desk: &crate::config::Desk) -> Self {
        Self {
            sla_warning_percent: desk.sla_warning_percent,
            sla_breach_action: desk.sla_breach_action,
            sla_check_interval: desk.sla_check_interval,
            reopen_window: desk.reopen_window,
            csat: desk.csat,
        }
    }
}

impl Default for DeskSettings {
    fn default() -> Self {
        Self::from_config(&crate::config::Desk::default())
    }
}
