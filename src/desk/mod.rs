//! The support-desk features beside the gateway: what a support team runs on top of the chats.
//! The gateway's core (sockets, transcripts) does not depend on them; the engines and the HTTP
//! API call into them at the moments they care about.
//!
//! - [`teams`]: teams, which categories route to them, and service-level targets (a team's
//!   business hours are a configuration type, [`crate::config::Hours`]).
//! - [`sla`]: first-response clocks, warnings and breaches, as pure functions of time.
//! - [`policy`]: the desk's rules both engines apply (breach action, queue and offline reasons,
//!   reopening, response figures, who hears a clock, the queue estimate), as plain functions.
//! - [`csat`]: satisfaction surveys, answered against the store.
//! - [`reports`]: per-conversation report rows and their aggregates, as JSON and CSV.
//! - [`webhooks`]: signed HTTP callbacks for desk events, so a team can connect its CRM or
//!   ticketing system.
//! - [`kb`]: the knowledge base: articles, full-text search in English and Chinese (tantivy, in
//!   RAM, rebuilt from the store), and deflection counting ("this article solved my question").
//! - [`analyzer`]: how article and query text become search terms (words, CJK bigrams).
//! - [`canned`]: canned replies with `/shortcut`s and `{{placeholders}}`.
//! - [`store`]: the [`store::ContentStore`] trait and its SQLite implementation;
//!   [`postgres`]: the PostgreSQL one, for several nodes.
//!
//! [`Desk`] bundles the cheap content handles that the HTTP API and the sockets share;
//! [`DeskSettings`] is what the engines need from `[desk]`.

pub mod analyzer;
pub mod canned;
pub mod csat;
pub mod kb;
pub mod policy;
pub mod postgres;
pub mod reports;
pub mod sla;
pub mod store;
pub mod teams;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{BreachAction, CsatMode};
use crate::metrics::Metrics;
use crate::transcript::StoreError;

pub use canned::{CannedReplies, Placeholders, Shortcut};
pub use kb::{KnowledgeBase, SearchHit};
pub use store::{Article, ArticleId, CannedReply, ContentStore, DeflectionCount};

/// The desk's content handles, cloned into every request.
#[derive(Clone)]
pub struct Desk {
    pub kb: KnowledgeBase,
    pub canned: CannedReplies,
}

impl Desk {
    /// Opens both over `store`, building the knowledge-base index from it. Start
    /// [`KnowledgeBase::keep_fresh`] when other nodes share the store.
    ///
    /// # Errors
    /// As [`KnowledgeBase::open`].
    pub async fn open(
        store: Arc<dyn ContentStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, DeskError> {
        Ok(Self {
            kb: KnowledgeBase::open(store.clone(), metrics).await?,
            canned: CannedReplies::new(store),
        })
    }
}

/// Why a desk operation failed. `Invalid` and `Full` texts are about the caller's input and
/// are shown to it; the others are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// The input breaks a rule; the text names the field and the rule.
    #[error("{0}")]
    Invalid(String),
    /// A bound on how many things may exist was reached; the text says which.
    #[error("{0}")]
    Full(String),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Checks a text field's length in characters (`min..=max`) and its characters: never NUL
/// (PostgreSQL cannot store it), and control characters only where `multiline` allows line
/// breaks and tabs.
///
/// # Errors
/// [`DeskError::Invalid`] naming `field`.
pub(crate) fn check_text(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    multiline: bool,
) -> Result<(), DeskError> {
    let len = value.chars().count();
    if len < min || len > max {
        let bound = if min == 0 {
            format!("at most {max}")
        } else {
            format!("{min} to {max}")
        };
        return Err(DeskError::Invalid(format!(
            "`{field}` must be {bound} characters, got {len}"
        )));
    }
    let allowed = |c: char| !c.is_control() || (multiline && matches!(c, '\n' | '\r' | '\t'));
    if !value.chars().all(allowed) {
        return Err(DeskError::Invalid(format!(
            "`{field}` contains control characters"
        )));
    }
    Ok(())
}

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
