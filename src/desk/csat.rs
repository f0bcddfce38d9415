//! Satisfaction surveys: the visitor's answer, checked against the store.
//!
//! The engines send the survey (`csat_request`) and note when in the conversation's snapshot;
//! the answer may come much later, after a restart or on another node, so it is checked against
//! the stored conversation rather than anything in memory: it must be the visitor's own, the
//! survey must have been sent within `desk.csat_window`, and only the first answer counts (the
//! store's primary key decides, so two answers racing on two nodes still give one).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::desk::webhooks::{WebhookEvent, Webhooks};
use crate::domain::{ConversationId, VisitorId};
use crate::metrics::{Metrics, ScoreLabel};
use crate::transcript::{CsatAnswer, PersistHandle, StoreError, TranscriptStore};

/// The longest comment kept, in characters.
pub const COMMENT_MAX_CHARS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SurveyError {
    #[error("the score must be 1 to 5")]
    InvalidScore,
    /// Not this visitor's conversation, no survey sent, too late, or answered already: one
    /// answer for all, so a visitor cannot probe other conversations.
    #[error("no survey to answer for this conversation")]
    Unavailable,
    #[error("the transcript store is unavailable; retry shortly")]
    Store(#[from] StoreError),
}

/// Answers surveys; one per server.
pub struct Surveys {
    pub store: Arc<dyn TranscriptStore>,
    pub persist: PersistHandle,
    pub clock: Clock,
    pub window: Duration,
    pub metrics: Arc<Metrics>,
    /// `csat.received` goes out from here, whichever engine runs.
    pub webhooks: Webhooks,
}

impl Surveys {
    /// Records `visitor`'s answer for conversation `id`.
    ///
    /// # Errors
    /// [`SurveyError`] saying why the answer was not taken.
    pub async fn answer(
        &self,
        visitor: &VisitorId,
        id: ConversationId,
        score: u8,
        comment: Option<String>,
    ) -> Result<CsatAnswer, SurveyError> {
        if !(1..=5).contains(&score) {
            return Err(SurveyError::InvalidScore);
        }
        // The survey's sending may still be in the persister's buffer.
        self.persist.flush().await?;
        let record = self
            .store
            .conversation(id)
            .await?
            .filter(|r| &r.visitor_id == visitor)
            .ok_or(SurveyError::Unavailable)?;
        let now = self.clock.now_millis();
        let sent = record
            .desk
            .csat_requested_at
            .ok_or(SurveyError::Unavailable)?;
        if now.saturating_sub(sent) > self.window.as_millis() as u64 {
            return Err(SurveyError::Unavailable);
        }
        let comment = comment
            .map(|c| c.trim().chars().take(COMMENT_MAX_CHARS).collect::<String>())
            .filter(|c| !c.is_empty());
        let answer = CsatAnswer {
            score,
            comment,
            created_at: now,
        };
        if !self.store.record_csat(id, &answer).await? {
            return Err(SurveyError::Unavailable);
        }
        self.metrics
            .desk
            .csat_answers
            .get_or_create(&ScoreLabel { score })
            .inc();
        self.webhooks.emit(WebhookEvent::csat_received(
            id,
            score,
            answer.comment.as_deref(),
        ));
        tracing::info!(conversation = %id, score, "survey answered");
        Ok(answer)
    }
}
